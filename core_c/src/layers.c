/* layers.c - forward/backward pairs of every layer kind, on float buffers of the whole batch.
 *
 * Activations are (B, C, H, W) row-major. A prunable layer computes the product Y(M x N) = W(M x K) X(K x N):
 *   linear: X = input^T (K = in features, N = B); conv2d: X = im2col of the batch (K = in_c*kh*kw, N = B*OH*OW).
 * Backward overwrites gradients (it does not accumulate across calls), except the importance sums. */
#include <math.h>
#include <string.h>

#include "internal.h"

/* ---- linear --------------------------------------------------------------------------------------------- */
// in (B, K), out (B, M)
static void linear_forward(pf_net *net, pf_layer *L, const float *in, int32_t B) {
    pf_weight *wt = &L->wt;
    const int64_t M = wt->M, K = wt->K;
    if (!wt->sparse) {
        pf_par_gemm(net, 0, 1, B, M, K, 1.0f, in, K, wt->w, K, 0.0f, L->out, M);
    } else {
        const int64_t Bp = pf_padded_batch(B);
        const pf_sparse_op op = {wt->M, 1, wt->rowptr, wt->col, NULL, Bp, Bp, 0};
        pf_transpose_pad(in, B, K, L->cols, Bp);         /* X^T (K, Bp) */
        pf_par_spmm(net, &op, wt->val, L->cols, L->tmp); /* Y^T (M, Bp) */
        pf_untranspose(L->tmp, Bp, B, M, L->out);
    }
    if (L->b)
        for (int32_t b = 0; b < B; b++) {
            float *o = L->out + (int64_t)b * M;
            for (int64_t m = 0; m < M; m++) o[m] += L->b[m];
        }
}

// dout (B, M) -> din (B, K) (if din), gradients of W and b
static void linear_backward(pf_net *net, pf_layer *L, const float *in, int32_t B, float *din) {
    pf_weight *wt = &L->wt;
    const int64_t M = wt->M, K = wt->K;
    if (L->b) {
        for (int64_t m = 0; m < M; m++) L->gb[m] = 0.0f;
        for (int32_t b = 0; b < B; b++) {
            const float *d = L->dout + (int64_t)b * M;
            for (int64_t m = 0; m < M; m++) L->gb[m] += d[m];
        }
    }
    if (!wt->sparse) {
        pf_par_gemm(net, 1, 0, M, K, B, 1.0f, L->dout, M, in, K, 0.0f, wt->gw, K); /* dW = dY^T X */
        if (wt->gsum)
            for (int64_t i = 0; i < wt->size; i++) wt->gsum[i] += wt->gw[i];
        if (wt->nnz < wt->size)
            for (int64_t i = 0; i < wt->size; i++) wt->gw[i] = wt->mask[i] ? wt->gw[i] : 0.0f;
        if (din) pf_par_gemm(net, 0, 0, B, K, M, 1.0f, L->dout, M, wt->w, K, 0.0f, din, K); /* dX = dY W */
    } else {
        /* L->cols holds X^T (K, Bp) from the forward pass; padding columns are zero */
        const int64_t Bp = pf_padded_batch(B);
        const pf_sparse_op op = {wt->M, 1, wt->rowptr, wt->col, NULL, Bp, Bp, 0};
        pf_transpose_pad(L->dout, B, M, L->tmp, Bp); /* dY^T (M, Bp) */
        if (wt->gsum) pf_par_gemm(net, 0, 1, M, K, Bp, 1.0f, L->tmp, Bp, L->cols, Bp, 1.0f, wt->gsum, K);
        if (!din) {
            pf_par_sddmm(net, &op, L->tmp, L->cols, wt->gval); /* dW at kept weights */
        } else {
            /* one pass over the kept weights: dW there and dX^T = W^T dY^T (K, Bp) */
            pf_par_spgrad(net, wt, Bp, L->tmp, L->cols, wt->gval, L->dtmp);
            pf_untranspose(L->dtmp, Bp, B, K, din);
        }
    }
    if (L->bsum)
        for (int64_t m = 0; m < M; m++) L->bsum[m] += L->gb[m];
}

/* ---- conv2d --------------------------------------------------------------------------------------------- */
/* Two paths. im2col (dense, strided, or with importance on): Y (M, B*P) = W cols with cols = im2col of the batch
 * (K, B*P), a GEMM or an SpMM. Direct (sparse, stride 1, see pf_conv_geom): the planes are laid out with the
 * batch innermost, X as (C, hp, wp, B) with zero borders, so that output row oh of channel m is
 *   Y[m, oh, :, :] = sum over kept (c, i, j) of w * X[c, oh + i, i.. : j + OW, :]
 * a sum of contiguous runs of OW*B floats, one broadcast FMA per kept weight and vector, and no im2col of the
 * batch. The input gradient is the same product with the flipped kernel over dY padded by kernel-1-pad,
 * (M, qh, qw, B), through the CSC view; the weight gradient the SDDMM of dY with the same runs of X. */
int pf_conv_direct(const pf_net *net, const pf_layer *L) {
    return L->spec.kind == PF_LAYER_CONV2D && L->wt.sparse && L->wt.conv.ok && !net->importance;
}

/* dst[w*B + b] = src[b*ld + w] for w < n, b < B (n values of each of B samples, batch innermost); returns the sum */
static double transpose_in(const float *restrict src, int64_t ld, int32_t B, int32_t n, float *restrict dst) {
    double sum = 0.0;
    for (int32_t b = 0; b < B; b++) {
        const float *s = src + (int64_t)b * ld;
        float *d = dst + b;
        float part = 0.0f;
        for (int32_t w = 0; w < n; w++) {
            d[(int64_t)w * B] = s[w];
            part += s[w];
        }
        sum += part;
    }
    return sum;
}

/* dst[b*ld + p] = src[p*B + b] + bias for p < P, b < B: back to one plane per sample, in blocks of 64 values so
 * that the B destination rows and the source block stay in L1 */
static void transpose_out(const float *restrict src, int32_t B, int64_t P, float bias, float *restrict dst,
                          int64_t ld) {
    enum { PB = 64 };
    for (int64_t p0 = 0; p0 < P; p0 += PB) {
        const int64_t p1 = p0 + PB < P ? p0 + PB : P;
        for (int32_t b = 0; b < B; b++) {
            float *d = dst + (int64_t)b * ld;
            for (int64_t p = p0; p < p1; p++) d[p] = src[p * B + b] + bias;
        }
    }
}

// in (B, C, H, W) -> out (B, M, OH, OW) through X (C, hp, wp, B) in cols and Y (M, OH, OW, B) in tmp
static void conv_forward_direct(pf_net *net, pf_layer *L, const float *in, int32_t B) {
    const pf_weight *wt = &L->wt;
    const pf_conv_geom *g = &wt->conv;
    const int32_t C = L->in_c, H = L->in_h, W = L->in_w, M = wt->M, ph = L->spec.pad_h, pw = L->spec.pad_w;
    const int64_t P = (int64_t)g->oh * g->ow;
    if (L->direct_batch != B) { /* the zero borders of the last batch size's layout */
        memset(L->cols, 0, (size_t)g->c * (size_t)g->hp * (size_t)g->wp * (size_t)B * sizeof(float));
        memset(L->dtmp, 0, (size_t)M * (size_t)g->qh * (size_t)g->qw * (size_t)B * sizeof(float));
        L->direct_batch = B;
    }
    for (int32_t c = 0; c < C; c++)
        for (int32_t h = 0; h < H; h++)
            transpose_in(in + ((int64_t)c * H + h) * W, (int64_t)C * H * W, B, W,
                         L->cols + ((int64_t)(c * g->hp + h + ph) * g->wp + pw) * B);
    const pf_sparse_op op = {M, g->oh, wt->rowptr, wt->coff, NULL, (int64_t)g->ow * B, B, (int64_t)g->wp * B};
    pf_par_spmm(net, &op, wt->val, L->cols, L->tmp);
    for (int32_t m = 0; m < M; m++)
        transpose_out(L->tmp + (int64_t)m * P * B, B, P, L->b ? L->b[m] : 0.0f, L->out + (int64_t)m * P,
                      (int64_t)M * P);
}

// dout (B, M, OH, OW) -> dY (M, OH, OW, B) in tmp and padded in dtmp; dW at kept weights; din (B, C, H, W)
static void conv_backward_direct(pf_net *net, pf_layer *L, int32_t B, float *din) {
    pf_weight *wt = &L->wt;
    const pf_conv_geom *g = &wt->conv;
    const int32_t C = L->in_c, H = L->in_h, W = L->in_w, M = wt->M;
    const int32_t OH = g->oh, OW = g->ow, th = g->kh - 1 - L->spec.pad_h, tw = g->kw - 1 - L->spec.pad_w;
    const int64_t P = (int64_t)OH * OW;
    for (int32_t m = 0; m < M; m++) {
        double gb = 0.0;
        float *dy = L->tmp + (int64_t)m * P * B;
        for (int32_t oh = 0; oh < OH; oh++) {
            const float *src = L->dout + (int64_t)m * P + (int64_t)oh * OW;
            float *row = dy + (int64_t)oh * OW * B;
            gb += transpose_in(src, (int64_t)M * P, B, OW, row);
            memcpy(L->dtmp + ((int64_t)(m * g->qh + oh + th) * g->qw + tw) * B, row,
                   (size_t)OW * (size_t)B * sizeof(float));
        }
        if (L->b) L->gb[m] = (float)gb;
    }
    const pf_sparse_op op = {M, OH, wt->rowptr, wt->coff, NULL, (int64_t)OW * B, B, (int64_t)g->wp * B};
    pf_par_sddmm(net, &op, L->tmp, L->cols, wt->gval);
    if (din) {
        const pf_sparse_op op_t = {C, H, wt->chptr, wt->toff, wt->perm, (int64_t)W * B, B, (int64_t)g->qw * B};
        pf_par_spmm(net, &op_t, wt->val, L->dtmp, L->aux);
        const int64_t plane = (int64_t)H * W;
        for (int32_t c = 0; c < C; c++)
            transpose_out(L->aux + (int64_t)c * plane * B, B, plane, 0.0f, din + (int64_t)c * plane,
                          (int64_t)C * plane);
    }
}

// in (B, C, H, W) -> out (B, M, OH, OW); cols (K, B*P), tmp (M, B*P)
static void conv_forward(pf_net *net, pf_layer *L, const float *in, int32_t B) {
    if (L->direct) {
        conv_forward_direct(net, L, in, B);
        return;
    }
    pf_weight *wt = &L->wt;
    const int64_t M = wt->M, K = wt->K, P = (int64_t)L->out_h * L->out_w, N = P * B;
    pf_par_im2col(net, L, B, in, L->cols);
    if (!wt->sparse) {
        pf_par_gemm(net, 0, 0, M, N, K, 1.0f, wt->w, K, L->cols, N, 0.0f, L->tmp, N);
    } else {
        const pf_sparse_op op = {wt->M, 1, wt->rowptr, wt->col, NULL, N, N, 0};
        pf_par_spmm(net, &op, wt->val, L->cols, L->tmp);
    }
    for (int32_t b = 0; b < B; b++)
        for (int64_t m = 0; m < M; m++) {
            const float bias = L->b ? L->b[m] : 0.0f;
            const float *src = L->tmp + m * N + (int64_t)b * P;
            float *dst = L->out + ((int64_t)b * M + m) * P;
            for (int64_t p = 0; p < P; p++) dst[p] = src[p] + bias;
        }
}

static void conv_backward(pf_net *net, pf_layer *L, int32_t B, float *din) {
    if (L->direct) {
        conv_backward_direct(net, L, B, din);
        if (L->bsum)
            for (int64_t m = 0; m < L->wt.M; m++) L->bsum[m] += L->gb[m];
        return;
    }
    pf_weight *wt = &L->wt;
    const int64_t M = wt->M, K = wt->K, P = (int64_t)L->out_h * L->out_w, N = P * B;
    /* dY as (M, B*P) into tmp, bias gradient on the way (a float sum per sample row: vectorisable) */
    for (int64_t m = 0; m < M; m++) {
        float gb = 0.0f;
        for (int32_t b = 0; b < B; b++) {
            const float *src = L->dout + ((int64_t)b * M + m) * P;
            float *dst = L->tmp + m * N + (int64_t)b * P;
            float row = 0.0f;
            for (int64_t p = 0; p < P; p++) {
                dst[p] = src[p];
                row += src[p];
            }
            gb += row;
        }
        if (L->b) L->gb[m] = gb;
    }
    if (!wt->sparse) {
        pf_par_gemm(net, 0, 1, M, K, N, 1.0f, L->tmp, N, L->cols, N, 0.0f, wt->gw, K); /* dW = dY cols^T */
        if (wt->gsum)
            for (int64_t i = 0; i < wt->size; i++) wt->gsum[i] += wt->gw[i];
        if (wt->nnz < wt->size)
            for (int64_t i = 0; i < wt->size; i++) wt->gw[i] = wt->mask[i] ? wt->gw[i] : 0.0f;
        if (din) pf_par_gemm(net, 1, 0, K, N, M, 1.0f, wt->w, K, L->tmp, N, 0.0f, L->dtmp, N); /* dcols = W^T dY */
    } else {
        const pf_sparse_op op = {wt->M, 1, wt->rowptr, wt->col, NULL, N, N, 0};
        const pf_sparse_op op_t = {wt->K, 1, wt->colptr, wt->row, wt->perm, N, N, 0};
        pf_par_sddmm(net, &op, L->tmp, L->cols, wt->gval);
        if (wt->gsum) pf_par_gemm(net, 0, 1, M, K, N, 1.0f, L->tmp, N, L->cols, N, 1.0f, wt->gsum, K);
        if (din) pf_par_spmm(net, &op_t, wt->val, L->tmp, L->dtmp);
    }
    if (din) pf_par_col2im(net, L, B, L->dtmp, din);
    if (L->bsum)
        for (int64_t m = 0; m < M; m++) L->bsum[m] += L->gb[m];
}

/* ---- max-pool ------------------------------------------------------------------------------------------- */
/* A NaN in a window wins (as in PyTorch): `!(v <= best)` is true for a larger v and for a NaN v, and once best
 * is NaN nothing replaces it because the NaN test comes first. */
static inline int takes_over(float v, float best) { return (best == best) & !(v <= best); }

/* best, where = v, at if v takes over, by bit selection: the compiler keeps the branches of a ?: on floats,
 * and on activations they are taken at random */
static inline void pick(float v, int32_t at, float *best, int32_t *where) {
    const uint32_t keep = (uint32_t)takes_over(v, *best) - 1u; /* all ones: keep best; zero: take v */
    uint32_t vb, bb;
    memcpy(&vb, &v, sizeof vb);
    memcpy(&bb, best, sizeof bb);
    const uint32_t r = (bb & keep) | (vb & ~keep);
    memcpy(best, &r, sizeof r);
    *where = (int32_t)(((uint32_t)*where & keep) | ((uint32_t)at & ~keep));
}

// in (B, C, H, W) -> out (B, C, OH, OW), argmax = flat index within the input plane
static void maxpool_forward(pf_layer *L, const float *in, int32_t B) {
    const pf_layer_spec *s = &L->spec;
    const int64_t planes = (int64_t)B * L->in_c;
    const int32_t kh = s->kernel_h, kw = s->kernel_w, sh = s->stride_h, sw = s->stride_w, W = L->in_w;
    const int unpadded = s->pad_h == 0 && s->pad_w == 0;
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *x = in + pl * L->in_h * W;
        float *y = L->out + pl * L->out_h * L->out_w;
        int32_t *arg = L->argmax + pl * L->out_h * L->out_w;
        for (int32_t oh = 0; oh < L->out_h; oh++)
            for (int32_t ow = 0; ow < L->out_w; ow++) {
                float best;
                int32_t where;
                if (unpadded && kh == 2 && kw == 2) { /* the common 2x2 window, unrolled, without branches */
                    const int32_t a = oh * sh * W + ow * sw, c = a + W;
                    where = a;
                    best = x[a];
                    pick(x[a + 1], a + 1, &best, &where);
                    pick(x[c], c, &best, &where);
                    pick(x[c + 1], c + 1, &best, &where);
                } else if (unpadded) { /* every window lies inside the input: no bounds tests */
                    where = oh * sh * W + ow * sw;
                    best = x[where];
                    for (int32_t i = 0; i < kh; i++)
                        for (int32_t j = 0; j < kw; j++) {
                            const int32_t at = (oh * sh + i) * W + ow * sw + j;
                            if (takes_over(x[at], best)) {
                                best = x[at];
                                where = at;
                            }
                        }
                } else {
                    best = -INFINITY;
                    where = -1;
                    for (int32_t i = 0; i < kh; i++) {
                        const int32_t h = oh * sh - s->pad_h + i;
                        if (h < 0 || h >= L->in_h) continue;
                        for (int32_t j = 0; j < kw; j++) {
                            const int32_t w = ow * sw - s->pad_w + j;
                            if (w < 0 || w >= W) continue;
                            if (where < 0 || takes_over(x[h * W + w], best)) {
                                best = x[h * W + w];
                                where = h * W + w;
                            }
                        }
                    }
                }
                y[oh * L->out_w + ow] = best;
                arg[oh * L->out_w + ow] = where;
            }
    }
}

static void maxpool_backward(pf_layer *L, int32_t B, float *din) {
    const int64_t planes = (int64_t)B * L->in_c, in_plane = (int64_t)L->in_h * L->in_w;
    const int64_t out_plane = (int64_t)L->out_h * L->out_w;
    memset(din, 0, (size_t)(planes * in_plane) * sizeof(float));
    for (int64_t pl = 0; pl < planes; pl++)
        for (int64_t o = 0; o < out_plane; o++) {
            const int32_t where = L->argmax[pl * out_plane + o];
            if (where >= 0) din[pl * in_plane + where] += L->dout[pl * out_plane + o];
        }
}

/* ---- ReLU (branch-free: the signs of activations are not predictable) ------------------------------------ */
static void relu_forward(const float *restrict in, int64_t n, float *restrict out) {
    for (int64_t k = 0; k < n; k++) out[k] = in[k] > 0.0f ? in[k] : 0.0f;
}

static void relu_backward(const float *restrict out, const float *restrict dout, int64_t n, float *restrict din) {
    for (int64_t k = 0; k < n; k++) din[k] = out[k] > 0.0f ? dout[k] : 0.0f;
}

/* ---- the network ---------------------------------------------------------------------------------------- */
pf_status pf_layers_forward(pf_net *net, const float *x, int32_t B) {
    const float *in = x;
    for (int32_t i = 0; i < net->n_layers; i++) {
        pf_layer *L = &net->layers[i];
        const int64_t n_out = (int64_t)B * L->out_size;
        switch (L->spec.kind) {
        case PF_LAYER_LINEAR:
            linear_forward(net, L, in, B);
            break;
        case PF_LAYER_CONV2D:
            conv_forward(net, L, in, B);
            break;
        case PF_LAYER_MAXPOOL2D:
            maxpool_forward(L, in, B);
            break;
        case PF_LAYER_RELU:
            relu_forward(in, n_out, L->out);
            break;
        case PF_LAYER_FLATTEN:
            memcpy(L->out, in, (size_t)n_out * sizeof(float));
            break;
        default:
            return PF_ERR_INTERNAL;
        }
        in = L->out;
    }
    return PF_OK;
}

/* Backward from the last layer's dout (set by the loss) down to the input. */
void pf_layers_backward(pf_net *net, const float *x, int32_t B) {
    for (int32_t i = net->n_layers - 1; i >= 0; i--) {
        pf_layer *L = &net->layers[i];
        const float *in = i > 0 ? net->layers[i - 1].out : x;
        /* the gradient w.r.t. this layer's input is needed only above the first layer with parameters */
        float *din = NULL;
        if (net->input_grad || i > net->first_param_layer) din = i > 0 ? net->layers[i - 1].dout : net->dinput;
        const int64_t n_out = (int64_t)B * L->out_size;
        switch (L->spec.kind) {
        case PF_LAYER_LINEAR:
            linear_backward(net, L, in, B, din);
            break;
        case PF_LAYER_CONV2D:
            conv_backward(net, L, B, din);
            break;
        case PF_LAYER_MAXPOOL2D:
            if (din) maxpool_backward(L, B, din);
            break;
        case PF_LAYER_RELU:
            if (din) relu_backward(L->out, L->dout, n_out, din);
            break;
        case PF_LAYER_FLATTEN:
            if (din) memcpy(din, L->dout, (size_t)n_out * sizeof(float));
            break;
        default:
            break;
        }
    }
}
