/*
 * prunefl.h - the one public header of the PruneFL-Edge training core.
 *
 * A small C11 library that trains a feed-forward network (linear, conv2d, max-pool, ReLU, flatten,
 * softmax cross-entropy) with masked SGD. Every weight tensor carries a mask; a layer runs its dense
 * kernels or its sparse (CSR) kernels according to its density and a per-layer switch-over density.
 *
 * Conventions
 *  - Opaque handle `pf_net`; every function returns a pf_status (0 = success, negative = failure).
 *    After a failure, pf_net_last_error() returns a human-readable message. The library never aborts,
 *    never prints, and holds no global mutable state: all state lives in the handle.
 *  - A handle is not thread-safe: one caller thread at a time (the library runs its own worker threads).
 *  - Tensors are float32, C-contiguous, NCHW for images. Labels are int32 class indices.
 *  - Parameter tensors are numbered 0..pf_net_num_params()-1 in layer order; a layer with parameters
 *    contributes its weight (prunable, masked) and then, if it has one, its bias (never pruned).
 *    Linear weight shape (out, in); conv2d weight shape (out_c, in_c, kh, kw): the PyTorch/ONNX layouts.
 *  - The network's loss is softmax cross-entropy on the last layer's output, averaged over the batch.
 *
 * This header is read by cffi's cdef (prunefl_edge/_native.py), which removes the preprocessor lines and
 * the PF_API export macro: keep declarations free of other macros.
 */
#ifndef PRUNEFL_PRUNEFL_H
#define PRUNEFL_PRUNEFL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define PF_API __declspec(dllexport)
#else
#define PF_API __attribute__((visibility("default")))
#endif

typedef enum pf_status {
    PF_OK = 0,
    PF_ERR_NULL = -1,     /* a required handle or pointer is NULL */
    PF_ERR_ARG = -2,      /* an argument is out of range: NaN, negative, unknown kind, bad index */
    PF_ERR_SHAPE = -3,    /* sizes do not match the network (buffer length, layer shapes) */
    PF_ERR_NOMEM = -4,    /* allocation failed; the network is unchanged */
    PF_ERR_STATE = -5,    /* the call needs an earlier call (e.g. gradients before any backward) */
    PF_ERR_INTERNAL = -6  /* a bug: please report */
} pf_status;

typedef enum pf_layer_kind {
    PF_LAYER_LINEAR = 1,    /* y = x W^T + b; input must be flat (C, 1, 1) */
    PF_LAYER_CONV2D = 2,    /* cross-correlation, NCHW, weight (out_c, in_c, kh, kw) */
    PF_LAYER_MAXPOOL2D = 3, /* max over kh x kw windows; padding counts as -inf */
    PF_LAYER_RELU = 4,
    PF_LAYER_FLATTEN = 5    /* (C, H, W) -> (C*H*W, 1, 1) */
} pf_layer_kind;

/* One layer of the network. Fields a kind does not use are ignored (set them to 0). */
typedef struct pf_layer_spec {
    int32_t kind;         /* pf_layer_kind */
    int32_t out_features; /* linear: output features; conv2d: output channels */
    int32_t kernel_h;     /* conv2d, maxpool2d */
    int32_t kernel_w;
    int32_t stride_h;     /* conv2d, maxpool2d; >= 1 */
    int32_t stride_w;
    int32_t pad_h;        /* conv2d, maxpool2d; >= 0 (maxpool: pad <= kernel/2) */
    int32_t pad_w;
    int32_t has_bias;     /* linear, conv2d: 1 = with bias */
} pf_layer_spec;

/* The network handle. */
typedef struct pf_net pf_net;

/* Describes one parameter tensor. */
typedef struct pf_param_info {
    int32_t layer;     /* index of the layer that owns it */
    int32_t is_weight; /* 1: weight (prunable, has a mask); 0: bias */
    int32_t ndim;      /* 2 (linear weight), 4 (conv weight) or 1 (bias) */
    int32_t shape[4];  /* unused trailing entries are 0 */
    int64_t size;      /* number of elements */
} pf_param_info;

/* Describes one layer as built (shapes per sample, after shape inference). */
typedef struct pf_layer_info {
    int32_t kind;
    int32_t in_shape[3];   /* C, H, W */
    int32_t out_shape[3];  /* C, H, W */
    int32_t weight_param;  /* parameter index of the weight, -1 if none */
    int32_t bias_param;    /* parameter index of the bias, -1 if none */
    int64_t kept;          /* kept (unmasked) weights; 0 if no weight */
    float density;         /* kept / weight size; 1 if no weight */
    float sparse_threshold;/* runs sparse when density <= this */
    int32_t is_sparse;     /* 1 if the layer currently runs its sparse kernels */
} pf_layer_info;

/* Masked SGD: v = momentum*v + (g + weight_decay*w); w -= lr*v, only at kept weights. */
typedef struct pf_sgd_config {
    float lr;           /* > 0, finite */
    float momentum;     /* in [0, 1) */
    float weight_decay; /* >= 0, finite */
} pf_sgd_config;

/* The build's kernel selection, for logs and benchmarks. */
PF_API const char *pf_build_info(void);
/* A static English name of a status code. */
PF_API const char *pf_status_string(pf_status status);

/*
 * Build a network for inputs of shape (in_c, in_h, in_w) per sample. Weights start at zero with all
 * masks full; set them with pf_net_set_param. On failure *out is NULL and, if errbuf is not NULL, a
 * message (NUL-terminated, truncated to errbuf_len) says which layer and why.
 */
PF_API pf_status pf_net_create(const pf_layer_spec *layers, int32_t n_layers, int32_t in_c, int32_t in_h,
                               int32_t in_w, pf_net **out, char *errbuf, size_t errbuf_len);
PF_API void pf_net_destroy(pf_net *net); /* NULL is a no-op */

/* The message of the last failed call on this handle ("" if none). Valid until the next call. */
PF_API const char *pf_net_last_error(const pf_net *net);

/* Worker threads for the kernels (>= 1; 1 = run on the caller's thread). */
PF_API pf_status pf_net_set_threads(pf_net *net, int32_t n_threads);

PF_API pf_status pf_net_num_layers(const pf_net *net, int32_t *out);
PF_API pf_status pf_net_layer_info(const pf_net *net, int32_t layer, pf_layer_info *out);
PF_API pf_status pf_net_num_params(const pf_net *net, int32_t *out);
PF_API pf_status pf_net_param_info(const pf_net *net, int32_t param, pf_param_info *out);
/* Flat size of one sample's input and output (number of classes). */
PF_API pf_status pf_net_io_sizes(const pf_net *net, int64_t *in_size, int64_t *out_size);

/* Copy a parameter out (n = its size). Weights read as zero at pruned positions. */
PF_API pf_status pf_net_get_param(pf_net *net, int32_t param, float *out, int64_t n);
/* Copy a parameter in. For a weight, values at pruned positions are ignored (they stay zero).
 * Non-finite values are rejected (PF_ERR_ARG) and nothing is changed. Momentum is not reset. */
PF_API pf_status pf_net_set_param(pf_net *net, int32_t param, const float *in, int64_t n);
/* Masks exist for weights only (is_weight = 1): bytes, 1 = kept, 0 = pruned. */
PF_API pf_status pf_net_get_mask(pf_net *net, int32_t param, uint8_t *out, int64_t n);
/* Set a weight's mask. Newly pruned weights become zero with zero momentum; newly kept weights start at
 * zero with zero momentum (set their values afterwards). Chooses the layer's dense/sparse path. */
PF_API pf_status pf_net_set_mask(pf_net *net, int32_t param, const uint8_t *in, int64_t n);
/* Density at or below which a layer runs sparse (in [0, 1]); per layer, from measurement. The comparison is in
 * weights, rounded: sparse when kept <= density x size + 1/2 (a mask drawn at that density qualifies). */
PF_API pf_status pf_net_set_sparse_threshold(pf_net *net, int32_t layer, float density);
/* Reset all momentum buffers to zero (e.g. at the start of a round). */
PF_API pf_status pf_net_reset_momentum(pf_net *net);

/*
 * Forward only. x: (batch, in_size); labels: (batch) or NULL. Writes the mean loss and the number of
 * correct top-1 predictions when labels is given (loss/n_correct may be NULL), and the logits
 * (batch, out_size) when logits is not NULL. Labels out of range are PF_ERR_ARG.
 */
PF_API pf_status pf_net_forward(pf_net *net, const float *x, const int32_t *labels, int32_t batch,
                                float *logits, float *loss, int32_t *n_correct);
/*
 * Forward and backward: gradients of the mean loss for every parameter (weights at kept positions
 * only; read them with pf_net_get_grad). If importance accumulation is on, the dense gradient of
 * every weight, pruned positions included, and of every bias is added to the gradient sums.
 */
PF_API pf_status pf_net_forward_backward(pf_net *net, const float *x, const int32_t *labels, int32_t batch,
                                         float *loss, int32_t *n_correct);
/* Apply masked SGD with the gradients of the last forward_backward. */
PF_API pf_status pf_net_sgd_step(pf_net *net, const pf_sgd_config *cfg);
/* forward_backward + sgd_step. */
PF_API pf_status pf_net_train_step(pf_net *net, const float *x, const int32_t *labels, int32_t batch,
                                   const pf_sgd_config *cfg, float *loss, int32_t *n_correct);

/* Gradient of the last forward_backward (dense layout, zero at pruned positions). */
PF_API pf_status pf_net_get_grad(pf_net *net, int32_t param, float *out, int64_t n);
/* When on, forward_backward also computes d(loss)/d(input), read with pf_net_get_input_grad. */
PF_API pf_status pf_net_set_input_grad(pf_net *net, int32_t enabled);
PF_API pf_status pf_net_get_input_grad(pf_net *net, float *out, int64_t n); /* n = batch * in_size */

/* Importance: when on, every forward_backward adds the full dense gradient of each parameter to its
 * gradient sum (the a_j = sum_k g_kj of PruneFL). Off by default: it costs a dense weight gradient. */
PF_API pf_status pf_net_set_importance(pf_net *net, int32_t enabled);
PF_API pf_status pf_net_get_grad_sum(pf_net *net, int32_t param, float *out, int64_t n);
PF_API pf_status pf_net_reset_grad_sums(pf_net *net);
/* z[i] += scale * sum[i]^2 over the parameter's gradient sum (PruneFL's z += n * a^2 without copying a); with
 * kept_only, only at kept positions (the reference's masked importance). n = the parameter's size. */
PF_API pf_status pf_net_add_sq_grad_sum(pf_net *net, int32_t param, float *z, int64_t n, float scale,
                                        int32_t kept_only);
/* z[i] += scale * g[i]^2 with g the parameter's gradient of the last forward_backward, zero at pruned positions (the
 * gradient of the masked weights: initial pruning's importance in the reference); no dense dW needed. */
PF_API pf_status pf_net_add_sq_grad(pf_net *net, int32_t param, float *z, int64_t n, float scale);

/* Kept values: a weight's values at its kept positions, in mask order (row-major), n = its kept count; a bias's
 * values (n = its size). What a task carries and a result returns, without a dense copy of the weight. */
PF_API pf_status pf_net_num_kept(pf_net *net, int32_t param, int64_t *out);
PF_API pf_status pf_net_get_kept(pf_net *net, int32_t param, float *out, int64_t n);
PF_API pf_status pf_net_set_kept(pf_net *net, int32_t param, const float *in, int64_t n);

#ifdef __cplusplus
}
#endif

#endif /* PRUNEFL_PRUNEFL_H */
