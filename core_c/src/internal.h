/* internal.h - the network's private state, shared by net.c (API), layers.c (forward/backward),
 * sparse.c (CSR management), sgd.c and parallel.c. Not installed. */
#ifndef PRUNEFL_INTERNAL_H
#define PRUNEFL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"
#include "prunefl/prunefl.h"
#include "threadpool.h"

#define PF_ERRMSG_LEN 256

/* A stride-1 convolution that can run directly on batch-innermost planes (no im2col): its input channels,
 * kernel, the padded input plane (hp x wp) and the output gradient padded by kernel-1-pad (qh x qw). */
typedef struct pf_conv_geom {
    int ok;
    int32_t c, kh, kw, hp, wp, oh, ow, qh, qw;
} pf_conv_geom;

/*
 * A prunable layer's weight is the matrix W (M x K): linear (out, in); conv2d (out_c, in_c*kh*kw).
 * Dense mode: w, gw (M*K) and mom (M*K, allocated on first use of momentum) hold the state.
 * Sparse mode: CSR over kept weights: rowptr (M+1), col, and val/gval/vmom (nnz) hold the state; the CSC
 * view (colptr (K+1), row, perm; conv layers only) serves the transposed product. The mask (M*K bytes) exists
 * in both modes.
 */
typedef struct pf_weight {
    int32_t M, K;
    int64_t size;    /* M*K */
    int64_t nnz;     /* kept weights */
    uint8_t *mask;   /* size */
    int sparse;      /* which state is live */
    int csc;         /* the sparse state includes the CSC view (conv layers; linear ones use the fused backward) */
    float threshold; /* sparse when density <= threshold */
    /* dense state */
    float *w, *gw, *mom;
    /* sparse state */
    int32_t *rowptr, *col, *colptr, *row, *perm;
    float *val, *gval, *vmom;
    /* direct sparse convolution (conv.ok, see pf_conv_geom): per kept weight its offset into a padded input
     * plane (coff, CSR order) and into a padded output-gradient plane (toff, CSC order); chptr (in_c + 1) the
     * CSC entries of each input channel */
    pf_conv_geom conv;
    int32_t *coff, *toff, *chptr;
    /* importance: dense gradient sum (size), allocated while importance is on */
    float *gsum;
    int mom_live; /* momentum holds non-zero values */
} pf_weight;

typedef struct pf_layer {
    pf_layer_spec spec;
    int32_t in_c, in_h, in_w, out_c, out_h, out_w;
    int64_t in_size, out_size; /* per sample */
    int32_t weight_param, bias_param;
    pf_weight wt; /* prunable layers only */
    float *b, *gb, *bmom, *bsum; /* bias (out_c), its gradient, momentum, importance sum */
    /* per-batch buffers (grown with the batch) */
    float *out;   /* (B, out_size) */
    float *dout;  /* (B, out_size): gradient w.r.t. out */
    float *cols;  /* conv: im2col (K, B*P); direct conv: X (C, hp, wp, B); linear sparse: X^T (K, Bp),
                   * Bp = pf_padded_batch(B) */
    float *tmp;   /* conv: (M, B*P) product; direct conv: Y, then dY (M, OH, OW, B); linear sparse: (M, Bp) */
    float *dtmp;  /* conv: (K, B*P) dcols; direct conv: dY padded (M, qh, qw, B); linear sparse: (K, Bp) */
    float *aux;   /* direct conv: dX (C, H, W, B) */
    int direct;   /* conv: the buffers are the direct path's (see pf_conv_direct) */
    int32_t direct_batch; /* direct conv: the batch whose layout the zero borders of cols and dtmp follow */
    int32_t *argmax; /* maxpool: (B, out_size) */
} pf_layer;

struct pf_net {
    int32_t n_layers;
    pf_layer *layers;
    int32_t n_params;
    int32_t in_c, in_h, in_w;
    int64_t in_size, out_size;
    int32_t batch_cap; /* buffers are allocated for this many samples */
    int32_t last_batch; /* batch of the last forward_backward, 0 if none */
    float *probs;      /* (batch_cap, out_size) softmax */
    float *dinput;     /* (batch_cap, in_size) when input_grad is on */
    float *spgrad_ws;  /* (threads - 1) x the largest linear K x Bp: the fused backward's per-thread dX^T */
    int32_t first_param_layer; /* lowest layer index with parameters (n_layers if none) */
    int input_grad;
    int importance;
    int have_grads;
    pf_pool *pool;
    const pf_kernels *kern;
    char err[PF_ERRMSG_LEN];
};

/* net.c */
pf_status pf_fail(pf_net *net, pf_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* sparse.c: switch a layer's live state; (re)build CSR/CSC from the mask. NOMEM leaves it unchanged. */
/* Replace the mask (new_mask may be wt->mask) and move to the dense (want_sparse 0) or sparse state. */
pf_status pf_weight_rebuild(pf_weight *wt, const uint8_t *new_mask, int want_sparse);
pf_status pf_weight_to_dense(pf_weight *wt);
pf_status pf_weight_to_sparse(pf_weight *wt);
/* Copy the current weights into dense (size) / from dense (kept positions only). */
void pf_weight_read(const pf_weight *wt, float *dense);
void pf_weight_write(pf_weight *wt, const float *dense);
void pf_weight_read_grad(const pf_weight *wt, float *dense);
void pf_weight_free(pf_weight *wt);

/* layers.c: whether a conv layer runs the direct sparse path (sparse, stride 1, importance off) */
int pf_conv_direct(const pf_net *net, const pf_layer *L);

/* parallel.c: drivers splitting kernel row ranges across the pool. */
void pf_par_gemm(pf_net *net, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                 int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* The sparse products of kernels.h over all sparse rows: W X (ptr = rowptr) or, with perm, W^T D (ptr = colptr
 * or chptr). n_rows sparse rows, each of `rows` output rows of N columns (ldc = N). */
typedef struct pf_sparse_op {
    int32_t n_rows, rows;
    const int32_t *ptr, *idx, *perm;
    int64_t N, ldb, rstep;
} pf_sparse_op;
void pf_par_spmm(pf_net *net, const pf_sparse_op *op, const float *val, const float *B, float *C);
void pf_par_sddmm(pf_net *net, const pf_sparse_op *op, const float *A, const float *B, float *out);
/* The fused linear backward over all rows of W (kernels.h pf_spgrad_fn): out = dW at kept weights, D (K x N) =
 * W^T A, overwritten. With more than one task every further task accumulates into its own slice of
 * net->spgrad_ws, summed into D at the end. */
void pf_par_spgrad(pf_net *net, const pf_weight *wt, int64_t N, const float *A, const float *B, float *out, float *D);
void pf_par_im2col(pf_net *net, const pf_layer *L, int32_t batch, const float *x, float *cols);
void pf_par_col2im(pf_net *net, const pf_layer *L, int32_t batch, const float *cols, float *dx);
/* dst (cols x ld) = src (rows x cols)^T, columns rows..ld-1 of dst zeroed (ld >= rows) */
void pf_transpose_pad(const float *src, int64_t rows, int64_t cols, float *dst, int64_t ld);
/* dst (rows x cols) = the first rows columns of src (cols x ld), transposed back */
void pf_untranspose(const float *src, int64_t ld, int64_t rows, int64_t cols, float *dst);
/* The batch rounded up to a multiple of 8: the column count of the linear layers' sparse buffers, so the
 * sparse kernels run whole vectors (the zero columns cost little and change no result). */
static inline int64_t pf_padded_batch(int64_t batch) { return (batch + 7) / 8 * 8; }

/* layers.c */
pf_status pf_layers_forward(pf_net *net, const float *x, int32_t batch);
void pf_layers_backward(pf_net *net, const float *x, int32_t batch);

/* sgd.c: prepare allocates momentum buffers (before anything changes), apply cannot fail. */
pf_status pf_sgd_prepare(pf_net *net, const pf_sgd_config *cfg);
void pf_sgd_apply(pf_net *net, const pf_sgd_config *cfg);

#endif /* PRUNEFL_INTERNAL_H */
