/* spmm_neon.c - the sparse kernels for aarch64 in NEON intrinsics.
 *
 * SpMM and its transpose keep a 16-column strip of an output row in registers while every nonzero of the
 * row streams its dense row through (two independent accumulator sets, so the FMA latency of in-order
 * and small out-of-order cores is hidden); the output is written once, never read. Narrower strips handle
 * N = 20 (a linear layer's batch) and the tails. Every strip width (and the scalar tail, through fmaf) sums in
 * the same order, so a column's result does not depend on its position in the batch. N is cut into tiles so the dense operand's tile stays in the
 * L2 cache while all rows of W pass over it.
 *
 * SDDMM computes 4 (or 8) nonzeros of a row at once: one load of the dense row of A serves four dot products,
 * and a pairwise-add tree reduces the four accumulators into one vector of four results. */
#include <arm_neon.h>
#include <assert.h>
#include <math.h>
#include <stddef.h>

#include "kernels.h"

enum { TILE = 128 };

/* c[0:n] = sum_{e in [e0, e1)} val[perm ? perm[e] : e] * Bm[idx[e] * ldb + 0:n]; Bm is already offset to the
 * tile. */
static inline void row_product(float *restrict c, int64_t n, int32_t e0, int32_t e1, const int32_t *restrict idx,
                               const int32_t *restrict perm, const float *restrict val, const float *Bm,
                               int64_t ldb) {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int32_t e = e0;
        for (; e + 2 <= e1; e += 2) {
            const float w0 = val[perm ? perm[e] : e], w1 = val[perm ? perm[e + 1] : e + 1];
            const float *p = Bm + (int64_t)idx[e] * ldb + j, *q = Bm + (int64_t)idx[e + 1] * ldb + j;
            a0 = vfmaq_n_f32(a0, vld1q_f32(p), w0);
            a1 = vfmaq_n_f32(a1, vld1q_f32(p + 4), w0);
            a2 = vfmaq_n_f32(a2, vld1q_f32(p + 8), w0);
            a3 = vfmaq_n_f32(a3, vld1q_f32(p + 12), w0);
            b0 = vfmaq_n_f32(b0, vld1q_f32(q), w1);
            b1 = vfmaq_n_f32(b1, vld1q_f32(q + 4), w1);
            b2 = vfmaq_n_f32(b2, vld1q_f32(q + 8), w1);
            b3 = vfmaq_n_f32(b3, vld1q_f32(q + 12), w1);
        }
        if (e < e1) {
            const float w0 = val[perm ? perm[e] : e];
            const float *p = Bm + (int64_t)idx[e] * ldb + j;
            a0 = vfmaq_n_f32(a0, vld1q_f32(p), w0);
            a1 = vfmaq_n_f32(a1, vld1q_f32(p + 4), w0);
            a2 = vfmaq_n_f32(a2, vld1q_f32(p + 8), w0);
            a3 = vfmaq_n_f32(a3, vld1q_f32(p + 12), w0);
        }
        vst1q_f32(c + j, vaddq_f32(a0, b0));
        vst1q_f32(c + j + 4, vaddq_f32(a1, b1));
        vst1q_f32(c + j + 8, vaddq_f32(a2, b2));
        vst1q_f32(c + j + 12, vaddq_f32(a3, b3));
    }
    for (; j + 4 <= n; j += 4) {
        float32x4_t a0 = vdupq_n_f32(0.0f), b0 = a0;
        int32_t e = e0;
        for (; e + 2 <= e1; e += 2) {
            a0 = vfmaq_n_f32(a0, vld1q_f32(Bm + (int64_t)idx[e] * ldb + j), val[perm ? perm[e] : e]);
            b0 = vfmaq_n_f32(b0, vld1q_f32(Bm + (int64_t)idx[e + 1] * ldb + j), val[perm ? perm[e + 1] : e + 1]);
        }
        if (e < e1) a0 = vfmaq_n_f32(a0, vld1q_f32(Bm + (int64_t)idx[e] * ldb + j), val[perm ? perm[e] : e]);
        vst1q_f32(c + j, vaddq_f32(a0, b0));
    }
    for (; j < n; j++) {
        float s0 = 0.0f, s1 = 0.0f;
        int32_t e = e0;
        for (; e + 2 <= e1; e += 2) {
            s0 = fmaf(val[perm ? perm[e] : e], Bm[(int64_t)idx[e] * ldb + j], s0);
            s1 = fmaf(val[perm ? perm[e + 1] : e + 1], Bm[(int64_t)idx[e + 1] * ldb + j], s1);
        }
        if (e < e1) s0 = fmaf(val[perm ? perm[e] : e], Bm[(int64_t)idx[e] * ldb + j], s0);
        c[j] = s0 + s1;
    }
}

void pf_spmm_neon(int32_t m0, int32_t m1, int64_t N, const int32_t *rowptr, const int32_t *col, const float *val,
                  const float *B, int64_t ldb, float *C, int64_t ldc) {
    assert(m0 <= m1 && N >= 0);
    for (int64_t n0 = 0; n0 < N; n0 += TILE) {
        const int64_t n = N - n0 < TILE ? N - n0 : TILE;
        for (int32_t m = m0; m < m1; m++)
            row_product(C + (int64_t)m * ldc + n0, n, rowptr[m], rowptr[m + 1], col, NULL, val, B + n0, ldb);
    }
}

void pf_spmm_t_neon(int32_t k0, int32_t k1, int64_t N, const int32_t *colptr, const int32_t *row,
                    const int32_t *perm, const float *val, const float *D, int64_t ldd, float *C, int64_t ldc) {
    assert(k0 <= k1 && N >= 0);
    for (int64_t n0 = 0; n0 < N; n0 += TILE) {
        const int64_t n = N - n0 < TILE ? N - n0 : TILE;
        for (int32_t k = k0; k < k1; k++)
            row_product(C + (int64_t)k * ldc + n0, n, colptr[k], colptr[k + 1], row, perm, val, D + n0, ldd);
    }
}

/* {sum(x0), sum(x1), sum(x2), sum(x3)} */
static inline float32x4_t hsum4x4(float32x4_t x0, float32x4_t x1, float32x4_t x2, float32x4_t x3) {
    return vpaddq_f32(vpaddq_f32(x0, x1), vpaddq_f32(x2, x3));
}

/* out[e] (+)= dot(a[0:n], Bm[idx[e] * ldb + 0:n]) for e in [e0, e1) */
static inline void row_dots(float *restrict out, int accumulate, int64_t n, int32_t e0, int32_t e1,
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

void pf_sddmm_neon(int32_t m0, int32_t m1, int64_t N, const int32_t *rowptr, const int32_t *col, const float *A,
                   int64_t lda, const float *B, int64_t ldb, float *out) {
    assert(m0 <= m1 && N >= 0);
    if (N == 0) {
        for (int32_t e = rowptr[m0]; e < rowptr[m1]; e++) out[e] = 0.0f;
        return;
    }
    /* a tile of 1 KiB of every B row: the tile of B stays in L2 while all rows of the range pass over it */
    enum { DTILE = 256 };
    for (int64_t n0 = 0; n0 < N; n0 += DTILE) {
        const int64_t n = N - n0 < DTILE ? N - n0 : DTILE;
        for (int32_t m = m0; m < m1; m++)
            row_dots(out, n0 > 0, n, rowptr[m], rowptr[m + 1], col, A + (int64_t)m * lda + n0, B + n0, ldb);
    }
}
