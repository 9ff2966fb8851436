/* spmm_neon.c - the row kernels of the sparse products for aarch64 in NEON intrinsics; the tiled drivers are
 * spmm_tiled.h's.
 *
 * SpMM keeps a strip of an output row in registers (32 columns, 16 accumulators in two sets; a remainder of
 * 4 to 28 columns in one more strip, then a scalar tail) while every nonzero of the row streams its dense row
 * through: with the batch innermost each kept weight is one broadcast FMA over contiguous vectors. The two
 * accumulator sets take alternate nonzeros, so the FMA latency of in-order and small out-of-order cores is
 * hidden; the output is written once, never read. Every strip width (and the scalar tail, through fmaf) sums
 * in the same order, so a column's result does not depend on its position in the batch.
 *
 * SDDMM computes 4 nonzeros of a row at once: one load of the dense row of A serves four dot products, and a
 * pairwise-add tree reduces the four accumulators into one vector of four results. */
#include <arm_neon.h>
#include <assert.h>
#include <math.h>
#include <stddef.h>

#include "kernels.h"

#define W_(e) val[perm ? perm[e] : (e)]
#define ROW_(e) (Bm + (int64_t)idx[e] * ldb)

/* c[0:4*nv] for nv in 1..8 (a constant once inlined: the accumulators live in registers) */
static inline __attribute__((always_inline)) void strip4(float *restrict c, int nv, int32_t e0, int32_t e1,
                                                         const int32_t *restrict idx, const int32_t *restrict perm,
                                                         const float *restrict val, const float *Bm, int64_t ldb) {
    float32x4_t a[8], b[8];
    for (int q = 0; q < nv; q++) a[q] = b[q] = vdupq_n_f32(0.0f);
    int32_t e = e0;
    for (; e + 2 <= e1; e += 2) {
        const float w = W_(e), u = W_(e + 1);
        const float *p = ROW_(e), *s = ROW_(e + 1);
        for (int q = 0; q < nv; q++) {
            a[q] = vfmaq_n_f32(a[q], vld1q_f32(p + 4 * q), w);
            b[q] = vfmaq_n_f32(b[q], vld1q_f32(s + 4 * q), u);
        }
    }
    if (e < e1) {
        const float w = W_(e);
        const float *p = ROW_(e);
        for (int q = 0; q < nv; q++) a[q] = vfmaq_n_f32(a[q], vld1q_f32(p + 4 * q), w);
    }
    for (int q = 0; q < nv; q++) vst1q_f32(c + 4 * q, vaddq_f32(a[q], b[q]));
}

static inline void sp_row_product(float *restrict c, int64_t n, int32_t e0, int32_t e1, const int32_t *restrict idx,
                                  const int32_t *restrict perm, const float *restrict val, const float *Bm,
                                  int64_t ldb) {
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) strip4(c + j, 8, e0, e1, idx, perm, val, Bm + j, ldb);
    const int rest = (int)((n - j) / 4); /* the remainder in one pass over the nonzeros */
    switch (rest) {
    case 7: strip4(c + j, 7, e0, e1, idx, perm, val, Bm + j, ldb); break;
    case 6: strip4(c + j, 6, e0, e1, idx, perm, val, Bm + j, ldb); break;
    case 5: strip4(c + j, 5, e0, e1, idx, perm, val, Bm + j, ldb); break;
    case 4: strip4(c + j, 4, e0, e1, idx, perm, val, Bm + j, ldb); break;
    case 3: strip4(c + j, 3, e0, e1, idx, perm, val, Bm + j, ldb); break;
    case 2: strip4(c + j, 2, e0, e1, idx, perm, val, Bm + j, ldb); break;
    case 1: strip4(c + j, 1, e0, e1, idx, perm, val, Bm + j, ldb); break;
    default: break;
    }
    j += 4 * rest;
    for (; j < n; j++) {
        float s0 = 0.0f, s1 = 0.0f;
        int32_t e = e0;
        for (; e + 2 <= e1; e += 2) {
            s0 = fmaf(W_(e), ROW_(e)[j], s0);
            s1 = fmaf(W_(e + 1), ROW_(e + 1)[j], s1);
        }
        if (e < e1) s0 = fmaf(W_(e), ROW_(e)[j], s0);
        c[j] = s0 + s1;
    }
}

#undef W_
#undef ROW_

/* {sum(x0), sum(x1), sum(x2), sum(x3)} */
static inline float32x4_t hsum4x4(float32x4_t x0, float32x4_t x1, float32x4_t x2, float32x4_t x3) {
    return vpaddq_f32(vpaddq_f32(x0, x1), vpaddq_f32(x2, x3));
}

/* out[e] (+)= dot(a[0:n], Bm[idx[e] * ldb + 0:n]) for e in [e0, e1) */
static inline void sp_row_dots(float *restrict out, int accumulate, int64_t n, int32_t e0, int32_t e1,
                            const int32_t *restrict idx, const float *restrict a, const float *Bm, int64_t ldb) {
    int32_t e = e0;
    for (; e + 4 <= e1; e += 4) {
        const float *p0 = Bm + (int64_t)idx[e] * ldb, *p1 = Bm + (int64_t)idx[e + 1] * ldb;
        const float *p2 = Bm + (int64_t)idx[e + 2] * ldb, *p3 = Bm + (int64_t)idx[e + 3] * ldb;
        float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0, t0 = s0, t1 = s0, t2 = s0, t3 = s0;
        int64_t j = 0;
        for (; j + 8 <= n; j += 8) {
            const float32x4_t x = vld1q_f32(a + j), y = vld1q_f32(a + j + 4);
            s0 = vfmaq_f32(s0, x, vld1q_f32(p0 + j));
            s1 = vfmaq_f32(s1, x, vld1q_f32(p1 + j));
            s2 = vfmaq_f32(s2, x, vld1q_f32(p2 + j));
            s3 = vfmaq_f32(s3, x, vld1q_f32(p3 + j));
            t0 = vfmaq_f32(t0, y, vld1q_f32(p0 + j + 4));
            t1 = vfmaq_f32(t1, y, vld1q_f32(p1 + j + 4));
            t2 = vfmaq_f32(t2, y, vld1q_f32(p2 + j + 4));
            t3 = vfmaq_f32(t3, y, vld1q_f32(p3 + j + 4));
        }
        for (; j + 4 <= n; j += 4) {
            const float32x4_t x = vld1q_f32(a + j);
            s0 = vfmaq_f32(s0, x, vld1q_f32(p0 + j));
            s1 = vfmaq_f32(s1, x, vld1q_f32(p1 + j));
            s2 = vfmaq_f32(s2, x, vld1q_f32(p2 + j));
            s3 = vfmaq_f32(s3, x, vld1q_f32(p3 + j));
        }
        float32x4_t r = hsum4x4(vaddq_f32(s0, t0), vaddq_f32(s1, t1), vaddq_f32(s2, t2), vaddq_f32(s3, t3));
        if (j < n) {
            float r0 = 0.0f, r1 = 0.0f, r2 = 0.0f, r3 = 0.0f;
            for (; j < n; j++) {
                r0 += a[j] * p0[j];
                r1 += a[j] * p1[j];
                r2 += a[j] * p2[j];
                r3 += a[j] * p3[j];
            }
            const float tail[4] = {r0, r1, r2, r3};
            r = vaddq_f32(r, vld1q_f32(tail));
        }
        if (accumulate) r = vaddq_f32(r, vld1q_f32(out + e));
        vst1q_f32(out + e, r);
    }
    for (; e < e1; e++) {
        const float *p = Bm + (int64_t)idx[e] * ldb;
        float32x4_t s = vdupq_n_f32(0.0f), t = s;
        int64_t j = 0;
        for (; j + 8 <= n; j += 8) {
            s = vfmaq_f32(s, vld1q_f32(a + j), vld1q_f32(p + j));
            t = vfmaq_f32(t, vld1q_f32(a + j + 4), vld1q_f32(p + j + 4));
        }
        for (; j + 4 <= n; j += 4) s = vfmaq_f32(s, vld1q_f32(a + j), vld1q_f32(p + j));
        float d = vaddvq_f32(vaddq_f32(s, t));
        for (; j < n; j++) d += a[j] * p[j];
        out[e] = accumulate ? out[e] + d : d;
    }
}

/* one 4-column step of a kept weight in the fused backward: its dot product, and its share of dX^T */
static inline float32x4_t grad4(float32x4_t x, const float *p, float *d, float w, float32x4_t s) {
    vst1q_f32(d, vfmaq_n_f32(vld1q_f32(d), x, w));
    return vfmaq_f32(s, x, vld1q_f32(p));
}

/* out[e] = dot(a[0:n], Bm[idx[e]*ldb + 0:n]) and D[idx[e]*ldd + 0:n] += val[e] * a[0:n] for e in [e0, e1):
 * four kept weights at a time share every load of a and one pairwise-add tree */
static inline void sp_row_grad(float *restrict out, float *restrict D, int64_t ldd, int64_t n, int32_t e0, int32_t e1,
                               const int32_t *restrict idx, const float *restrict val, const float *restrict a,
                               const float *restrict Bm, int64_t ldb) {
    int32_t e = e0;
    for (; e + 4 <= e1; e += 4) {
        const float *p0 = Bm + (int64_t)idx[e] * ldb, *p1 = Bm + (int64_t)idx[e + 1] * ldb;
        const float *p2 = Bm + (int64_t)idx[e + 2] * ldb, *p3 = Bm + (int64_t)idx[e + 3] * ldb;
        float *d0 = D + (int64_t)idx[e] * ldd, *d1 = D + (int64_t)idx[e + 1] * ldd;
        float *d2 = D + (int64_t)idx[e + 2] * ldd, *d3 = D + (int64_t)idx[e + 3] * ldd;
        const float w0 = val[e], w1 = val[e + 1], w2 = val[e + 2], w3 = val[e + 3];
        float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
        int64_t j = 0;
        for (; j + 4 <= n; j += 4) {
            const float32x4_t x = vld1q_f32(a + j);
            s0 = grad4(x, p0 + j, d0 + j, w0, s0);
            s1 = grad4(x, p1 + j, d1 + j, w1, s1);
            s2 = grad4(x, p2 + j, d2 + j, w2, s2);
            s3 = grad4(x, p3 + j, d3 + j, w3, s3);
        }
        float32x4_t r = hsum4x4(s0, s1, s2, s3);
        if (j < n) {
            float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            for (; j < n; j++) {
                t[0] += a[j] * p0[j];
                t[1] += a[j] * p1[j];
                t[2] += a[j] * p2[j];
                t[3] += a[j] * p3[j];
                d0[j] = fmaf(a[j], w0, d0[j]);
                d1[j] = fmaf(a[j], w1, d1[j]);
                d2[j] = fmaf(a[j], w2, d2[j]);
                d3[j] = fmaf(a[j], w3, d3[j]);
            }
            r = vaddq_f32(r, vld1q_f32(t));
        }
        vst1q_f32(out + e, r);
    }
    for (; e < e1; e++) {
        const float *p = Bm + (int64_t)idx[e] * ldb;
        float *d = D + (int64_t)idx[e] * ldd;
        float32x4_t s = vdupq_n_f32(0.0f);
        int64_t j = 0;
        for (; j + 4 <= n; j += 4) s = grad4(vld1q_f32(a + j), p + j, d + j, val[e], s);
        float r = vaddvq_f32(s);
        for (; j < n; j++) {
            r += a[j] * p[j];
            d[j] = fmaf(a[j], val[e], d[j]);
        }
        out[e] = r;
    }
}

#include "spmm_tiled.h"

void pf_spmm_neon(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
                  const int32_t *perm, const float *val, const float *B, int64_t ldb, int64_t rstep, float *C,
                  int64_t ldc) {
    sp_spmm(m0, m1, rows, N, ptr, idx, perm, val, B, ldb, rstep, C, ldc);
}

void pf_sddmm_neon(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
                   const float *A, int64_t lda, const float *B, int64_t ldb, int64_t rstep, float *out) {
    sp_sddmm(m0, m1, rows, N, ptr, idx, A, lda, B, ldb, rstep, out);
}

void pf_spgrad_neon(int32_t m0, int32_t m1, int64_t N, const int32_t *ptr, const int32_t *idx, const float *val,
                    const float *A, int64_t lda, const float *B, int64_t ldb, float *out, float *D, int64_t ldd) {
    sp_spgrad(m0, m1, N, ptr, idx, val, A, lda, B, ldb, out, D, ldd);
}
