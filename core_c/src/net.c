/* net.c - the public API: building a network, validating every argument, parameters and masks, and the
 * training entry points. Validation lives here; layers.c, sparse.c and the kernels trust their inputs. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define PF_DEFAULT_SPARSE_THRESHOLD 0.3f /* until a measured value is set (prunefl-edge profile / bench) */

pf_status pf_fail(pf_net *net, pf_status st, const char *fmt, ...) {
    if (net) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(net->err, sizeof net->err, fmt, ap);
        va_end(ap);
    }
    return st;
}

static pf_status ok(pf_net *net) {
    net->err[0] = '\0';
    return PF_OK;
}

const char *pf_status_string(pf_status status) {
    switch (status) {
    case PF_OK: return "ok";
    case PF_ERR_NULL: return "null handle or pointer";
    case PF_ERR_ARG: return "invalid argument";
    case PF_ERR_SHAPE: return "shape or size mismatch";
    case PF_ERR_NOMEM: return "out of memory";
    case PF_ERR_STATE: return "invalid state for this call";
    case PF_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

#ifdef PF_HAVE_BLAS
#define PF_GEMM_NAME "blas"
#else
#define PF_GEMM_NAME "builtin"
#endif
#ifdef PF_HAVE_NEON
#define PF_ISA_NAME "aarch64-neon"
#else
#define PF_ISA_NAME "portable-c"
#endif

const char *pf_build_info(void) { return "prunefl core 0.1.0; isa " PF_ISA_NAME "; dense gemm " PF_GEMM_NAME; }

const char *pf_net_last_error(const pf_net *net) { return net ? net->err : "null network handle"; }

/* ---- creation ------------------------------------------------------------------------------------------- */
static const char *kind_name(int32_t kind) {
    switch (kind) {
    case PF_LAYER_LINEAR: return "linear";
    case PF_LAYER_CONV2D: return "conv2d";
    case PF_LAYER_MAXPOOL2D: return "maxpool2d";
    case PF_LAYER_RELU: return "relu";
    case PF_LAYER_FLATTEN: return "flatten";
    default: return "unknown";
    }
}

static void set_err(char *buf, size_t len, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void set_err(char *buf, size_t len, const char *fmt, ...) {
    if (!buf || len == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

static void free_layer_buffers(pf_layer *L) {
    free(L->out);
    free(L->dout);
    free(L->cols);
    free(L->tmp);
    free(L->dtmp);
    free(L->argmax);
    free(L->aux);
    L->out = L->dout = L->cols = L->tmp = L->dtmp = L->aux = NULL;
    L->argmax = NULL;
}

void pf_net_destroy(pf_net *net) {
    if (!net) return;
    for (int32_t i = 0; i < net->n_layers; i++) {
        pf_layer *L = &net->layers[i];
        free_layer_buffers(L);
        if (L->weight_param >= 0) pf_weight_free(&L->wt);
        free(L->b);
        free(L->gb);
        free(L->bmom);
        free(L->bsum);
    }
    free(net->layers);
    free(net->probs);
    free(net->dinput);
    free(net->spgrad_ws);
    pf_pool_destroy(net->pool);
    free(net);
}

/* Shape inference and validation of one layer; writes the output shape. */
static int infer_layer(const pf_layer_spec *s, int32_t i, pf_layer *L, char *errbuf, size_t errlen) {
    const char *kn = kind_name(s->kind);
    L->out_c = L->in_c;
    L->out_h = L->in_h;
    L->out_w = L->in_w;
    switch (s->kind) {
    case PF_LAYER_LINEAR:
        if (L->in_h != 1 || L->in_w != 1) {
            set_err(errbuf, errlen, "layer %d (%s): input (%d, %d, %d) is not flat; add a flatten layer before it",
                    i, kn, L->in_c, L->in_h, L->in_w);
            return 0;
        }
        if (s->out_features <= 0) {
            set_err(errbuf, errlen, "layer %d (%s): out_features must be positive, got %d", i, kn, s->out_features);
            return 0;
        }
        L->out_c = s->out_features;
        return 1;
    case PF_LAYER_CONV2D:
    case PF_LAYER_MAXPOOL2D: {
        if (s->kernel_h <= 0 || s->kernel_w <= 0 || s->stride_h <= 0 || s->stride_w <= 0 || s->pad_h < 0 ||
            s->pad_w < 0) {
            set_err(errbuf, errlen, "layer %d (%s): kernel and stride must be >= 1 and padding >= 0", i, kn);
            return 0;
        }
        if (s->kind == PF_LAYER_MAXPOOL2D && (s->pad_h > s->kernel_h / 2 || s->pad_w > s->kernel_w / 2)) {
            set_err(errbuf, errlen, "layer %d (%s): padding must be at most half the kernel", i, kn);
            return 0;
        }
        if (s->kind == PF_LAYER_CONV2D && s->out_features <= 0) {
            set_err(errbuf, errlen, "layer %d (%s): output channels must be positive, got %d", i, kn,
                    s->out_features);
            return 0;
        }
        const int64_t ph = (int64_t)L->in_h + 2 * (int64_t)s->pad_h, pw = (int64_t)L->in_w + 2 * (int64_t)s->pad_w;
        if (ph < s->kernel_h || pw < s->kernel_w) {
            set_err(errbuf, errlen, "layer %d (%s): kernel %dx%d larger than the padded input %lldx%lld", i, kn,
                    s->kernel_h, s->kernel_w, (long long)ph, (long long)pw);
            return 0;
        }
        L->out_h = (int32_t)((ph - s->kernel_h) / s->stride_h + 1);
        L->out_w = (int32_t)((pw - s->kernel_w) / s->stride_w + 1);
        if (s->kind == PF_LAYER_CONV2D) L->out_c = s->out_features;
        return 1;
    }
    case PF_LAYER_RELU:
        return 1;
    case PF_LAYER_FLATTEN:
        L->out_c = L->in_c * L->in_h * L->in_w;
        L->out_h = L->out_w = 1;
        return 1;
    default:
        set_err(errbuf, errlen, "layer %d: unknown layer kind %d", i, s->kind);
        return 0;
    }
}

/* A stride-1 conv layer whose padding is below its kernel runs sparse directly on batch-innermost planes. */
static void conv_geometry(pf_layer *L) {
    const pf_layer_spec *s = &L->spec;
    pf_conv_geom *g = &L->wt.conv;
    memset(g, 0, sizeof *g);
    if (s->stride_h != 1 || s->stride_w != 1 || s->pad_h > s->kernel_h - 1 || s->pad_w > s->kernel_w - 1) return;
    const int64_t hp = (int64_t)L->in_h + 2 * s->pad_h, wp = (int64_t)L->in_w + 2 * s->pad_w;
    const int64_t qh = (int64_t)L->in_h + s->kernel_h - 1, qw = (int64_t)L->in_w + s->kernel_w - 1;
    if ((int64_t)L->in_c * hp * wp >= INT32_MAX || (int64_t)L->out_c * qh * qw >= INT32_MAX) return;
    *g = (pf_conv_geom){1, L->in_c, s->kernel_h, s->kernel_w, (int32_t)hp, (int32_t)wp, L->out_h, L->out_w,
                        (int32_t)qh, (int32_t)qw};
}

pf_status pf_net_create(const pf_layer_spec *layers, int32_t n_layers, int32_t in_c, int32_t in_h, int32_t in_w,
                        pf_net **out, char *errbuf, size_t errbuf_len) {
    if (errbuf && errbuf_len) errbuf[0] = '\0';
    if (!out) {
        set_err(errbuf, errbuf_len, "out is NULL");
        return PF_ERR_NULL;
    }
    *out = NULL;
    if (!layers || n_layers <= 0) {
        set_err(errbuf, errbuf_len, "a network needs at least one layer (layers=%p, n_layers=%d)", (const void *)layers,
                n_layers);
        return layers ? PF_ERR_ARG : PF_ERR_NULL;
    }
    if (in_c <= 0 || in_h <= 0 || in_w <= 0) {
        set_err(errbuf, errbuf_len, "input shape (%d, %d, %d) must be positive", in_c, in_h, in_w);
        return PF_ERR_SHAPE;
    }
    pf_net *net = calloc(1, sizeof *net);
    if (!net || !(net->layers = calloc((size_t)n_layers, sizeof *net->layers))) {
        free(net);
        set_err(errbuf, errbuf_len, "out of memory");
        return PF_ERR_NOMEM;
    }
    net->n_layers = n_layers;
    net->in_c = in_c;
    net->in_h = in_h;
    net->in_w = in_w;
    net->in_size = (int64_t)in_c * in_h * in_w;
    net->first_param_layer = n_layers;
    pf_status st = PF_OK;
    int32_t c = in_c, h = in_h, w = in_w, n_params = 0;
    for (int32_t i = 0; i < n_layers; i++) {
        pf_layer *L = &net->layers[i];
        L->spec = layers[i];
        L->weight_param = L->bias_param = -1;
        L->in_c = c;
        L->in_h = h;
        L->in_w = w;
        if (!infer_layer(&layers[i], i, L, errbuf, errbuf_len)) {
            st = PF_ERR_SHAPE;
            goto fail;
        }
        L->in_size = (int64_t)c * h * w;
        L->out_size = (int64_t)L->out_c * L->out_h * L->out_w;
        if (L->out_size > INT32_MAX || L->in_size > INT32_MAX) {
            set_err(errbuf, errbuf_len, "layer %d (%s): activation of %lld values is too large", i,
                    kind_name(L->spec.kind), (long long)(L->out_size > L->in_size ? L->out_size : L->in_size));
            st = PF_ERR_SHAPE;
            goto fail;
        }
        if (L->spec.kind == PF_LAYER_LINEAR || L->spec.kind == PF_LAYER_CONV2D) {
            pf_weight *wt = &L->wt;
            wt->M = L->out_c;
            const int64_t K = L->spec.kind == PF_LAYER_LINEAR ? (int64_t)c
                                                              : (int64_t)c * L->spec.kernel_h * L->spec.kernel_w;
            wt->size = (int64_t)wt->M * K;
            if (K > INT32_MAX || wt->size >= INT32_MAX) {
                set_err(errbuf, errbuf_len, "layer %d (%s): weight of %lld values exceeds the 2^31 limit", i,
                        kind_name(L->spec.kind), (long long)wt->size);
                st = PF_ERR_SHAPE;
                goto fail;
            }
            wt->K = (int32_t)K;
            wt->nnz = wt->size;
            wt->threshold = PF_DEFAULT_SPARSE_THRESHOLD;
            wt->mask = malloc((size_t)wt->size);
            wt->w = calloc((size_t)wt->size, sizeof(float));
            wt->gw = calloc((size_t)wt->size, sizeof(float));
            if (!wt->mask || !wt->w || !wt->gw) {
                set_err(errbuf, errbuf_len, "layer %d: out of memory for a weight of %lld values", i,
                        (long long)wt->size);
                st = PF_ERR_NOMEM;
                goto fail;
            }
            memset(wt->mask, 1, (size_t)wt->size);
            if (L->spec.kind == PF_LAYER_CONV2D) {
                conv_geometry(L);
                wt->csc = 1;
            }
            L->weight_param = n_params++;
            if (L->spec.has_bias) {
                L->b = calloc((size_t)L->out_c, sizeof(float));
                L->gb = calloc((size_t)L->out_c, sizeof(float));
                if (!L->b || !L->gb) {
                    set_err(errbuf, errbuf_len, "out of memory");
                    st = PF_ERR_NOMEM;
                    goto fail;
                }
                L->bias_param = n_params++;
            }
            if (net->first_param_layer == n_layers) net->first_param_layer = i;
        }
        c = L->out_c;
        h = L->out_h;
        w = L->out_w;
    }
    net->n_params = n_params;
    net->out_size = (int64_t)c * h * w;
    net->kern = pf_kernels_best();
    net->pool = pf_pool_create(1);
    if (!net->pool) {
        set_err(errbuf, errbuf_len, "cannot create the thread pool");
        st = PF_ERR_NOMEM;
        goto fail;
    }
    *out = net;
    return PF_OK;
fail:
    pf_net_destroy(net);
    return st;
}

/* ---- configuration and introspection -------------------------------------------------------------------- */
#define CHECK_NET(net)                                                                                       \
    do {                                                                                                     \
        if (!(net)) return PF_ERR_NULL;                                                                      \
    } while (0)

pf_status pf_net_set_threads(pf_net *net, int32_t n_threads) {
    CHECK_NET(net);
    if (n_threads < 1 || n_threads > 256)
        return pf_fail(net, PF_ERR_ARG, "threads must be in [1, 256], got %d", n_threads);
    if (pf_pool_size(net->pool) == n_threads) return ok(net);
    pf_pool *p = pf_pool_create(n_threads);
    if (!p) return pf_fail(net, PF_ERR_NOMEM, "cannot start %d threads", n_threads);
    pf_pool_destroy(net->pool);
    net->pool = p;
    net->batch_cap = 0; /* the per-thread workspace follows the pool */
    return ok(net);
}

pf_status pf_net_num_layers(const pf_net *net, int32_t *out) {
    if (!net || !out) return PF_ERR_NULL;
    *out = net->n_layers;
    return PF_OK;
}

pf_status pf_net_num_params(const pf_net *net, int32_t *out) {
    if (!net || !out) return PF_ERR_NULL;
    *out = net->n_params;
    return PF_OK;
}

pf_status pf_net_io_sizes(const pf_net *net, int64_t *in_size, int64_t *out_size) {
    if (!net) return PF_ERR_NULL;
    if (in_size) *in_size = net->in_size;
    if (out_size) *out_size = net->out_size;
    return PF_OK;
}

pf_status pf_net_layer_info(const pf_net *net, int32_t layer, pf_layer_info *out) {
    if (!net || !out) return PF_ERR_NULL;
    if (layer < 0 || layer >= net->n_layers)
        return pf_fail((pf_net *)net, PF_ERR_ARG, "layer %d out of range [0, %d)", layer, net->n_layers);
    const pf_layer *L = &net->layers[layer];
    memset(out, 0, sizeof *out);
    out->kind = L->spec.kind;
    out->in_shape[0] = L->in_c;
    out->in_shape[1] = L->in_h;
    out->in_shape[2] = L->in_w;
    out->out_shape[0] = L->out_c;
    out->out_shape[1] = L->out_h;
    out->out_shape[2] = L->out_w;
    out->weight_param = L->weight_param;
    out->bias_param = L->bias_param;
    if (L->weight_param >= 0) {
        out->kept = L->wt.nnz;
        out->density = (float)((double)L->wt.nnz / (double)L->wt.size);
        out->sparse_threshold = L->wt.threshold;
        out->is_sparse = L->wt.sparse;
    } else {
        out->density = 1.0f;
    }
    return PF_OK;
}

/* The layer owning a parameter; NULL (and an error message) if the index is bad. */
static pf_layer *param_layer(pf_net *net, int32_t param, int *is_weight) {
    if (param >= 0)
        for (int32_t i = 0; i < net->n_layers; i++) {
            pf_layer *L = &net->layers[i];
            if (L->weight_param == param) {
                *is_weight = 1;
                return L;
            }
            if (L->bias_param == param) {
                *is_weight = 0;
                return L;
            }
        }
    pf_fail(net, PF_ERR_ARG, "parameter %d out of range [0, %d)", param, net->n_params);
    return NULL;
}

pf_status pf_net_param_info(const pf_net *net, int32_t param, pf_param_info *out) {
    if (!net || !out) return PF_ERR_NULL;
    int is_weight = 0;
    const pf_layer *L = param_layer((pf_net *)net, param, &is_weight);
    if (!L) return PF_ERR_ARG;
    memset(out, 0, sizeof *out);
    out->layer = (int32_t)(L - net->layers);
    out->is_weight = is_weight;
    if (!is_weight) {
        out->ndim = 1;
        out->shape[0] = L->out_c;
        out->size = L->out_c;
    } else if (L->spec.kind == PF_LAYER_LINEAR) {
        out->ndim = 2;
        out->shape[0] = L->wt.M;
        out->shape[1] = L->wt.K;
        out->size = L->wt.size;
    } else {
        out->ndim = 4;
        out->shape[0] = L->out_c;
        out->shape[1] = L->in_c;
        out->shape[2] = L->spec.kernel_h;
        out->shape[3] = L->spec.kernel_w;
        out->size = L->wt.size;
    }
    return PF_OK;
}

static pf_status check_n(pf_net *net, const char *what, int32_t param, int64_t n, int64_t want) {
    if (n != want)
        return pf_fail(net, PF_ERR_SHAPE, "%s of parameter %d: buffer holds %lld values, the parameter has %lld", what,
                       param, (long long)n, (long long)want);
    return PF_OK;
}

pf_status pf_net_get_param(pf_net *net, int32_t param, float *out, int64_t n) {
    CHECK_NET(net);
    if (!out) return pf_fail(net, PF_ERR_NULL, "get_param: output buffer is NULL");
    int is_weight = 0;
    pf_layer *L = param_layer(net, param, &is_weight);
    if (!L) return PF_ERR_ARG;
    const int64_t size = is_weight ? L->wt.size : L->out_c;
    if (check_n(net, "get_param", param, n, size)) return PF_ERR_SHAPE;
    if (is_weight)
        pf_weight_read(&L->wt, out);
    else
        memcpy(out, L->b, (size_t)size * sizeof(float));
    return ok(net);
}

pf_status pf_net_set_param(pf_net *net, int32_t param, const float *in, int64_t n) {
    CHECK_NET(net);
    if (!in) return pf_fail(net, PF_ERR_NULL, "set_param: input buffer is NULL");
    int is_weight = 0;
    pf_layer *L = param_layer(net, param, &is_weight);
    if (!L) return PF_ERR_ARG;
    const int64_t size = is_weight ? L->wt.size : L->out_c;
    if (check_n(net, "set_param", param, n, size)) return PF_ERR_SHAPE;
    for (int64_t i = 0; i < size; i++)
        if (!isfinite(in[i]))
            return pf_fail(net, PF_ERR_ARG, "set_param: parameter %d has a non-finite value at index %lld", param,
                           (long long)i);
    if (is_weight)
        pf_weight_write(&L->wt, in);
    else
        memcpy(L->b, in, (size_t)size * sizeof(float));
    return ok(net);
}

static pf_layer *weight_layer(pf_net *net, int32_t param, const char *what) {
    int is_weight = 0;
    pf_layer *L = param_layer(net, param, &is_weight);
    if (L && !is_weight) {
        pf_fail(net, PF_ERR_ARG, "%s: parameter %d is a bias; only weights have masks", what, param);
        return NULL;
    }
    return L;
}

pf_status pf_net_get_mask(pf_net *net, int32_t param, uint8_t *out, int64_t n) {
    CHECK_NET(net);
    if (!out) return pf_fail(net, PF_ERR_NULL, "get_mask: output buffer is NULL");
    pf_layer *L = weight_layer(net, param, "get_mask");
    if (!L) return PF_ERR_ARG;
    if (check_n(net, "get_mask", param, n, L->wt.size)) return PF_ERR_SHAPE;
    memcpy(out, L->wt.mask, (size_t)n);
    return ok(net);
}

/* After a layer changed state or importance was switched: a conv layer whose batch buffers belong to the other
 * path (im2col or direct) gets new ones at the next call (they are allocated there, not in the step). */
static void check_direct(pf_net *net) {
    for (int32_t i = 0; i < net->n_layers; i++) {
        const pf_layer *L = &net->layers[i];
        if (L->spec.kind == PF_LAYER_CONV2D && L->direct != pf_conv_direct(net, L)) net->batch_cap = 0;
    }
}

/* kept <= threshold x size, rounded to the nearest weight: a mask drawn at density d keeps round(d x size)
 * weights, and a threshold of d (a float, not exactly d) must take it sparse, as measured (bench_core's fc1 at
 * 0.1 keeps 642253 of 6422528 weights; 0.1f x 6422528 = 642252.8 ran it dense) */
static int wants_sparse(const pf_weight *wt, int64_t nnz) {
    return (double)nnz <= (double)wt->threshold * (double)wt->size + 0.5;
}

pf_status pf_net_set_mask(pf_net *net, int32_t param, const uint8_t *in, int64_t n) {
    CHECK_NET(net);
    if (!in) return pf_fail(net, PF_ERR_NULL, "set_mask: input buffer is NULL");
    pf_layer *L = weight_layer(net, param, "set_mask");
    if (!L) return PF_ERR_ARG;
    pf_weight *wt = &L->wt;
    if (check_n(net, "set_mask", param, n, wt->size)) return PF_ERR_SHAPE;
    int64_t nnz = 0;
    for (int64_t i = 0; i < n; i++) {
        if (in[i] > 1)
            return pf_fail(net, PF_ERR_ARG, "set_mask: parameter %d has mask byte %u at index %lld (use 0 or 1)", param,
                           (unsigned)in[i], (long long)i);
        nnz += in[i];
    }
    const pf_status st = pf_weight_rebuild(wt, in, wants_sparse(wt, nnz));
    if (st != PF_OK) return pf_fail(net, st, "set_mask: out of memory for parameter %d", param);
    net->have_grads = 0;
    check_direct(net);
    return ok(net);
}

pf_status pf_net_set_sparse_threshold(pf_net *net, int32_t layer, float density) {
    CHECK_NET(net);
    if (layer < 0 || layer >= net->n_layers)
        return pf_fail(net, PF_ERR_ARG, "layer %d out of range [0, %d)", layer, net->n_layers);
    if (!(density >= 0.0f && density <= 1.0f))
        return pf_fail(net, PF_ERR_ARG, "sparse threshold must be in [0, 1], got %g", (double)density);
    pf_layer *L = &net->layers[layer];
    if (L->weight_param < 0)
        return pf_fail(net, PF_ERR_ARG, "layer %d (%s) has no weight", layer, kind_name(L->spec.kind));
    const float old = L->wt.threshold;
    L->wt.threshold = density;
    const int want = wants_sparse(&L->wt, L->wt.nnz);
    if (want != L->wt.sparse) {
        const pf_status st = pf_weight_rebuild(&L->wt, L->wt.mask, want);
        if (st != PF_OK) {
            L->wt.threshold = old;
            return pf_fail(net, st, "out of memory switching layer %d", layer);
        }
        net->have_grads = 0;
        check_direct(net);
    }
    return ok(net);
}

pf_status pf_net_reset_momentum(pf_net *net) {
    CHECK_NET(net);
    for (int32_t i = 0; i < net->n_layers; i++) {
        pf_layer *L = &net->layers[i];
        if (L->weight_param < 0) continue;
        pf_weight *wt = &L->wt;
        if (wt->mom) memset(wt->mom, 0, (size_t)wt->size * sizeof(float));
        if (wt->vmom) memset(wt->vmom, 0, (size_t)(wt->nnz ? wt->nnz : 1) * sizeof(float));
        wt->mom_live = 0;
        if (L->bmom) memset(L->bmom, 0, (size_t)L->out_c * sizeof(float));
    }
    return ok(net);
}

/* ---- batch buffers ---------------------------------------------------------------------------------------- */
static pf_status ensure_batch(pf_net *net, int32_t B) {
    if (B <= net->batch_cap) return PF_OK;
    /* allocate everything new first, then swap: NOMEM leaves the old buffers */
    pf_layer *tmp = calloc((size_t)net->n_layers, sizeof *tmp);
    float *probs = malloc((size_t)B * (size_t)net->out_size * sizeof(float));
    float *dinput = malloc((size_t)B * (size_t)net->in_size * sizeof(float));
    /* the fused linear backward's dX^T of every thread but the first */
    size_t ws = 0;
    for (int32_t i = 0; i < net->n_layers; i++)
        if (net->layers[i].spec.kind == PF_LAYER_LINEAR) {
            const size_t n = (size_t)net->layers[i].wt.K * (size_t)pf_padded_batch(B);
            ws = n > ws ? n : ws;
        }
    ws *= (size_t)(pf_pool_size(net->pool) - 1);
    float *spgrad_ws = ws ? malloc(ws * sizeof(float)) : NULL;
    int okay = tmp && probs && dinput && (!ws || spgrad_ws);
    for (int32_t i = 0; okay && i < net->n_layers; i++) {
        const pf_layer *L = &net->layers[i];
        pf_layer *T = &tmp[i];
        const size_t n_out = (size_t)B * (size_t)L->out_size;
        T->out = malloc(n_out * sizeof(float));
        T->dout = malloc(n_out * sizeof(float));
        okay = T->out && T->dout;
        if (okay && L->spec.kind == PF_LAYER_CONV2D && pf_conv_direct(net, L)) {
            const pf_conv_geom *g = &L->wt.conv;
            const size_t P = (size_t)L->out_h * (size_t)L->out_w, in = (size_t)L->in_h * (size_t)L->in_w;
            T->direct = 1;
            T->cols = calloc((size_t)g->c * (size_t)g->hp * (size_t)g->wp * (size_t)B, sizeof(float));
            T->tmp = malloc((size_t)L->wt.M * P * (size_t)B * sizeof(float));
            T->dtmp = calloc((size_t)L->wt.M * (size_t)g->qh * (size_t)g->qw * (size_t)B, sizeof(float));
            T->aux = malloc((size_t)g->c * in * (size_t)B * sizeof(float));
            okay = T->cols && T->tmp && T->dtmp && T->aux;
        } else if (okay && L->spec.kind == PF_LAYER_CONV2D) {
            const size_t N = (size_t)B * (size_t)L->out_h * (size_t)L->out_w;
            T->cols = malloc((size_t)L->wt.K * N * sizeof(float));
            T->dtmp = malloc((size_t)L->wt.K * N * sizeof(float));
            T->tmp = malloc((size_t)L->wt.M * N * sizeof(float));
            okay = T->cols && T->dtmp && T->tmp;
        } else if (okay && L->spec.kind == PF_LAYER_LINEAR) {
            const size_t Bp = (size_t)pf_padded_batch(B);
            T->cols = malloc((size_t)L->wt.K * Bp * sizeof(float));
            T->dtmp = malloc((size_t)L->wt.K * Bp * sizeof(float));
            T->tmp = malloc((size_t)L->wt.M * Bp * sizeof(float));
            okay = T->cols && T->dtmp && T->tmp;
        } else if (okay && L->spec.kind == PF_LAYER_MAXPOOL2D) {
            T->argmax = malloc(n_out * sizeof(int32_t));
            okay = T->argmax != NULL;
        }
    }
    if (!okay) {
        for (int32_t i = 0; tmp && i < net->n_layers; i++) free_layer_buffers(&tmp[i]);
        free(tmp);
        free(probs);
        free(dinput);
        free(spgrad_ws);
        return pf_fail(net, PF_ERR_NOMEM, "out of memory for a batch of %d", B);
    }
    for (int32_t i = 0; i < net->n_layers; i++) {
        pf_layer *L = &net->layers[i];
        free_layer_buffers(L);
        L->out = tmp[i].out;
        L->dout = tmp[i].dout;
        L->cols = tmp[i].cols;
        L->tmp = tmp[i].tmp;
        L->dtmp = tmp[i].dtmp;
        L->argmax = tmp[i].argmax;
        L->aux = tmp[i].aux;
        L->direct = tmp[i].direct;
        L->direct_batch = 0;
    }
    free(tmp);
    free(net->probs);
    free(net->dinput);
    free(net->spgrad_ws);
    net->probs = probs;
    net->dinput = dinput;
    net->spgrad_ws = spgrad_ws;
    net->batch_cap = B;
    net->have_grads = 0;
    return PF_OK;
}

/* ---- training ---------------------------------------------------------------------------------------------- */
static pf_status check_batch(pf_net *net, const float *x, const int32_t *labels, int32_t batch, int need_labels) {
    if (!x) return pf_fail(net, PF_ERR_NULL, "input x is NULL");
    if (need_labels && !labels) return pf_fail(net, PF_ERR_NULL, "labels are NULL");
    if (batch <= 0) return pf_fail(net, PF_ERR_ARG, "batch must be >= 1, got %d", batch);
    if (labels)
        for (int32_t b = 0; b < batch; b++)
            if (labels[b] < 0 || labels[b] >= net->out_size)
                return pf_fail(net, PF_ERR_ARG, "label %d of sample %d is outside [0, %lld)", labels[b], b,
                               (long long)net->out_size);
    return ensure_batch(net, batch);
}

/* Softmax cross-entropy over the last layer's output: loss, correct count, and dlogits into the last dout. */
static void softmax_xent(pf_net *net, const int32_t *labels, int32_t B, float *loss, int32_t *n_correct, int grad) {
    pf_layer *last = &net->layers[net->n_layers - 1];
    const int64_t C = net->out_size;
    double total = 0.0;
    int32_t correct = 0;
    for (int32_t b = 0; b < B; b++) {
        const float *z = last->out + (int64_t)b * C;
        float *p = net->probs + (int64_t)b * C;
        float zmax = z[0];
        int64_t arg = 0;
        for (int64_t c = 1; c < C; c++)
            if (z[c] > zmax) {
                zmax = z[c];
                arg = c;
            }
        double sum = 0.0;
        for (int64_t c = 0; c < C; c++) {
            p[c] = expf(z[c] - zmax);
            sum += p[c];
        }
        const float inv = (float)(1.0 / sum);
        for (int64_t c = 0; c < C; c++) p[c] *= inv;
        if (labels) {
            total += -((double)z[labels[b]] - (double)zmax - log(sum));
            correct += arg == labels[b];
            if (grad) {
                float *d = last->dout + (int64_t)b * C;
                for (int64_t c = 0; c < C; c++) d[c] = p[c] / (float)B;
                d[labels[b]] -= 1.0f / (float)B;
            }
        }
    }
    if (loss) *loss = labels ? (float)(total / B) : 0.0f;
    if (n_correct) *n_correct = labels ? correct : 0;
}

pf_status pf_net_forward(pf_net *net, const float *x, const int32_t *labels, int32_t batch, float *logits, float *loss,
                         int32_t *n_correct) {
    CHECK_NET(net);
    pf_status st = check_batch(net, x, labels, batch, 0);
    if (st != PF_OK) return st;
    net->have_grads = 0; /* the activations of the last backward are overwritten */
    st = pf_layers_forward(net, x, batch);
    if (st != PF_OK) return pf_fail(net, st, "forward failed");
    softmax_xent(net, labels, batch, loss, n_correct, 0);
    if (logits)
        memcpy(logits, net->layers[net->n_layers - 1].out, (size_t)batch * (size_t)net->out_size * sizeof(float));
    return ok(net);
}

pf_status pf_net_forward_backward(pf_net *net, const float *x, const int32_t *labels, int32_t batch, float *loss,
                                  int32_t *n_correct) {
    CHECK_NET(net);
    pf_status st = check_batch(net, x, labels, batch, 1);
    if (st != PF_OK) return st;
    st = pf_layers_forward(net, x, batch);
    if (st != PF_OK) return pf_fail(net, st, "forward failed");
    softmax_xent(net, labels, batch, loss, n_correct, 1);
    pf_layers_backward(net, x, batch);
    net->have_grads = 1;
    net->last_batch = batch;
    return ok(net);
}

static pf_status check_sgd(pf_net *net, const pf_sgd_config *cfg) {
    if (!cfg) return pf_fail(net, PF_ERR_NULL, "SGD config is NULL");
    if (!(isfinite(cfg->lr) && cfg->lr > 0.0f))
        return pf_fail(net, PF_ERR_ARG, "learning rate must be finite and > 0, got %g", (double)cfg->lr);
    if (!(cfg->momentum >= 0.0f && cfg->momentum < 1.0f))
        return pf_fail(net, PF_ERR_ARG, "momentum must be in [0, 1), got %g", (double)cfg->momentum);
    if (!(isfinite(cfg->weight_decay) && cfg->weight_decay >= 0.0f))
        return pf_fail(net, PF_ERR_ARG, "weight decay must be finite and >= 0, got %g", (double)cfg->weight_decay);
    if (pf_sgd_prepare(net, cfg) != PF_OK) return pf_fail(net, PF_ERR_NOMEM, "out of memory for momentum buffers");
    return PF_OK;
}

pf_status pf_net_sgd_step(pf_net *net, const pf_sgd_config *cfg) {
    CHECK_NET(net);
    const pf_status st = check_sgd(net, cfg);
    if (st != PF_OK) return st;
    if (!net->have_grads) return pf_fail(net, PF_ERR_STATE, "sgd_step needs gradients: call forward_backward first");
    pf_sgd_apply(net, cfg);
    net->have_grads = 0; /* the weights changed: the gradients no longer belong to them */
    return ok(net);
}

pf_status pf_net_train_step(pf_net *net, const float *x, const int32_t *labels, int32_t batch,
                            const pf_sgd_config *cfg, float *loss, int32_t *n_correct) {
    CHECK_NET(net);
    pf_status st = check_sgd(net, cfg); /* before anything changes */
    if (st != PF_OK) return st;
    st = pf_net_forward_backward(net, x, labels, batch, loss, n_correct);
    if (st != PF_OK) return st;
    pf_sgd_apply(net, cfg);
    return ok(net);
}

pf_status pf_net_get_grad(pf_net *net, int32_t param, float *out, int64_t n) {
    CHECK_NET(net);
    if (!out) return pf_fail(net, PF_ERR_NULL, "get_grad: output buffer is NULL");
    int is_weight = 0;
    pf_layer *L = param_layer(net, param, &is_weight);
    if (!L) return PF_ERR_ARG;
    const int64_t size = is_weight ? L->wt.size : L->out_c;
    if (check_n(net, "get_grad", param, n, size)) return PF_ERR_SHAPE;
    if (!net->last_batch) return pf_fail(net, PF_ERR_STATE, "no gradients yet: call forward_backward first");
    if (is_weight)
        pf_weight_read_grad(&L->wt, out);
    else
        memcpy(out, L->gb, (size_t)size * sizeof(float));
    return ok(net);
}

pf_status pf_net_set_input_grad(pf_net *net, int32_t enabled) {
    CHECK_NET(net);
    net->input_grad = enabled != 0;
    net->last_batch = 0;
    return ok(net);
}

pf_status pf_net_get_input_grad(pf_net *net, float *out, int64_t n) {
    CHECK_NET(net);
    if (!out) return pf_fail(net, PF_ERR_NULL, "get_input_grad: output buffer is NULL");
    if (!net->input_grad || !net->last_batch)
        return pf_fail(net, PF_ERR_STATE, "no input gradient: call set_input_grad(1), then forward_backward");
    const int64_t want = (int64_t)net->last_batch * net->in_size;
    if (n != want)
        return pf_fail(net, PF_ERR_SHAPE, "get_input_grad: buffer holds %lld values, the last batch has %lld",
                       (long long)n, (long long)want);
    memcpy(out, net->dinput, (size_t)want * sizeof(float));
    return ok(net);
}

pf_status pf_net_set_importance(pf_net *net, int32_t enabled) {
    CHECK_NET(net);
    if (!enabled) {
        for (int32_t i = 0; i < net->n_layers; i++) {
            pf_layer *L = &net->layers[i];
            if (L->weight_param < 0) continue;
            free(L->wt.gsum);
            free(L->bsum);
            L->wt.gsum = NULL;
            L->bsum = NULL;
        }
        net->importance = 0;
        check_direct(net);
        return ok(net);
    }
    if (net->importance) return ok(net);
    for (int32_t i = 0; i < net->n_layers; i++) {
        pf_layer *L = &net->layers[i];
        if (L->weight_param < 0) continue;
        L->wt.gsum = calloc((size_t)L->wt.size, sizeof(float));
        if (L->b) L->bsum = calloc((size_t)L->out_c, sizeof(float));
        if (!L->wt.gsum || (L->b && !L->bsum)) {
            pf_net_set_importance(net, 0);
            return pf_fail(net, PF_ERR_NOMEM, "out of memory for importance sums");
        }
    }
    net->importance = 1;
    check_direct(net);
    return ok(net);
}

pf_status pf_net_get_grad_sum(pf_net *net, int32_t param, float *out, int64_t n) {
    CHECK_NET(net);
    if (!out) return pf_fail(net, PF_ERR_NULL, "get_grad_sum: output buffer is NULL");
    if (!net->importance) return pf_fail(net, PF_ERR_STATE, "importance is off: call set_importance(1) first");
    int is_weight = 0;
    pf_layer *L = param_layer(net, param, &is_weight);
    if (!L) return PF_ERR_ARG;
    const int64_t size = is_weight ? L->wt.size : L->out_c;
    if (check_n(net, "get_grad_sum", param, n, size)) return PF_ERR_SHAPE;
    memcpy(out, is_weight ? L->wt.gsum : L->bsum, (size_t)size * sizeof(float));
    return ok(net);
}

pf_status pf_net_reset_grad_sums(pf_net *net) {
    CHECK_NET(net);
    for (int32_t i = 0; i < net->n_layers; i++) {
        pf_layer *L = &net->layers[i];
        if (L->wt.gsum) memset(L->wt.gsum, 0, (size_t)L->wt.size * sizeof(float));
        if (L->bsum) memset(L->bsum, 0, (size_t)L->out_c * sizeof(float));
    }
    return ok(net);
}

/* ---- kept values and importance without dense copies ------------------------------------------------------ */
/* A weight's kept values travel in mask order (row-major flat positions with mask != 0): the CSR value order. */
static int64_t kept_count(const pf_weight *wt) {
    if (wt->sparse) return wt->rowptr[wt->M];
    int64_t n = 0;
    for (int64_t i = 0; i < wt->size; i++) n += wt->mask[i] != 0;
    return n;
}

pf_status pf_net_num_kept(pf_net *net, int32_t param, int64_t *out) {
    CHECK_NET(net);
    if (!out) return pf_fail(net, PF_ERR_NULL, "num_kept: output is NULL");
    int is_weight = 0;
    pf_layer *L = param_layer(net, param, &is_weight);
    if (!L) return PF_ERR_ARG;
    *out = is_weight ? kept_count(&L->wt) : L->out_c;
    return ok(net);
}

pf_status pf_net_get_kept(pf_net *net, int32_t param, float *out, int64_t n) {
    CHECK_NET(net);
    if (!out) return pf_fail(net, PF_ERR_NULL, "get_kept: output buffer is NULL");
    int is_weight = 0;
    pf_layer *L = param_layer(net, param, &is_weight);
    if (!L) return PF_ERR_ARG;
    if (!is_weight) return pf_net_get_param(net, param, out, n);
    const pf_weight *wt = &L->wt;
    if (check_n(net, "get_kept", param, n, kept_count(wt))) return PF_ERR_SHAPE;
    if (wt->sparse) {
        memcpy(out, wt->val, (size_t)n * sizeof(float));
    } else {
        int64_t j = 0;
        for (int64_t i = 0; i < wt->size; i++)
            if (wt->mask[i]) out[j++] = wt->w[i];
    }
    return ok(net);
}

pf_status pf_net_set_kept(pf_net *net, int32_t param, const float *in, int64_t n) {
    CHECK_NET(net);
    if (!in) return pf_fail(net, PF_ERR_NULL, "set_kept: input buffer is NULL");
    int is_weight = 0;
    pf_layer *L = param_layer(net, param, &is_weight);
    if (!L) return PF_ERR_ARG;
    if (!is_weight) return pf_net_set_param(net, param, in, n);
    pf_weight *wt = &L->wt;
    if (check_n(net, "set_kept", param, n, kept_count(wt))) return PF_ERR_SHAPE;
    for (int64_t j = 0; j < n; j++)
        if (!isfinite(in[j]))
            return pf_fail(net, PF_ERR_ARG, "set_kept: parameter %d has a non-finite value at kept index %lld", param,
                           (long long)j);
    if (wt->sparse) {
        memcpy(wt->val, in, (size_t)n * sizeof(float));
    } else {
        int64_t j = 0;
        for (int64_t i = 0; i < wt->size; i++) wt->w[i] = wt->mask[i] ? in[j++] : 0.0f;
    }
    return ok(net);
}

pf_status pf_net_add_sq_grad_sum(pf_net *net, int32_t param, float *z, int64_t n, float scale, int32_t kept_only) {
    CHECK_NET(net);
    if (!z) return pf_fail(net, PF_ERR_NULL, "add_sq_grad_sum: importance buffer is NULL");
    if (!net->importance) return pf_fail(net, PF_ERR_STATE, "importance is off: call set_importance(1) first");
    if (!isfinite(scale) || scale < 0.0f)
        return pf_fail(net, PF_ERR_ARG, "add_sq_grad_sum: scale must be finite and >= 0, got %g", (double)scale);
    int is_weight = 0;
    pf_layer *L = param_layer(net, param, &is_weight);
    if (!L) return PF_ERR_ARG;
    const int64_t size = is_weight ? L->wt.size : L->out_c;
    if (check_n(net, "add_sq_grad_sum", param, n, size)) return PF_ERR_SHAPE;
    const float *g = is_weight ? L->wt.gsum : L->bsum;
    const uint8_t *mask = is_weight && kept_only ? L->wt.mask : NULL;
    for (int64_t i = 0; i < size; i++) {
        const float a = g[i];
        if (!mask || mask[i]) z[i] += scale * (a * a);
    }
    return ok(net);
}

pf_status pf_net_add_sq_grad(pf_net *net, int32_t param, float *z, int64_t n, float scale) {
    CHECK_NET(net);
    if (!z) return pf_fail(net, PF_ERR_NULL, "add_sq_grad: importance buffer is NULL");
    if (!isfinite(scale) || scale < 0.0f)
        return pf_fail(net, PF_ERR_ARG, "add_sq_grad: scale must be finite and >= 0, got %g", (double)scale);
    int is_weight = 0;
    pf_layer *L = param_layer(net, param, &is_weight);
    if (!L) return PF_ERR_ARG;
    const int64_t size = is_weight ? L->wt.size : L->out_c;
    if (check_n(net, "add_sq_grad", param, n, size)) return PF_ERR_SHAPE;
    if (!is_weight) {
        for (int64_t i = 0; i < size; i++) z[i] += scale * (L->gb[i] * L->gb[i]);
        return ok(net);
    }
    const pf_weight *wt = &L->wt;
    if (wt->sparse) {
        for (int32_t m = 0; m < wt->M; m++)
            for (int32_t e = wt->rowptr[m]; e < wt->rowptr[m + 1]; e++)
                z[(int64_t)m * wt->K + wt->col[e]] += scale * (wt->gval[e] * wt->gval[e]);
    } else if (wt->gw) {
        for (int64_t i = 0; i < size; i++)
            if (wt->mask[i]) z[i] += scale * (wt->gw[i] * wt->gw[i]);
    }
    return ok(net);
}
