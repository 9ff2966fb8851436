/* spmm_neon.c - the sparse kernels with NEON intrinsics (aarch64): the same tiling as spmm_generic.c, with
 * four nonzeros fused per pass (vfmaq_f32 into one output vector) and four accumulators in the SDDMM dot. */
#include <arm_neon.h>
#include <assert.h>
#include <string.h>

#include "kernels.h"

enum { TILE = 256 }; /* columns per tile: see spmm_generic.c */

// c[0:n] = sum over nonzeros q in [e0, e1) of val[q] * B[col[q], n0 : n0+n]  (perm: CSC view)
static void axpy_rows(float *restrict c, int64_t n, int32_t e0, int32_t e1, const int32_t *col, const int32_t *perm,
                      const float *val, const float *B, int64_t ldb, int64_t n0) {
    memset(c, 0, (size_t)n * sizeof(float));
    int32_t e = e0;
    for (; e + 4 <= e1; e += 4) {
        const float w0 = val[perm ? perm[e] : e], w1 = val[perm ? perm[e + 1] : e + 1];
        const float w2 = val[perm ? perm[e + 2] : e + 2], w3 = val[perm ? perm[e + 3] : e + 3];
        const float *b0 = B + (int64_t)col[e] * ldb + n0, *b1 = B + (int64_t)col[e + 1] * ldb + n0;
        const float *b2 = B + (int64_t)col[e + 2] * ldb + n0, *b3 = B + (int64_t)col[e + 3] * ldb + n0;
        int64_t j = 0;
        for (; j + 4 <= n; j += 4) {
            float32x4_t acc = vld1q_f32(c + j);
            acc = vfmaq_n_f32(acc, vld1q_f32(b0 + j), w0);
            acc = vfmaq_n_f32(acc, vld1q_f32(b1 + j), w1);
            acc = vfmaq_n_f32(acc, vld1q_f32(b2 + j), w2);
            acc = vfmaq_n_f32(acc, vld1q_f32(b3 + j), w3);
            vst1q_f32(c + j, acc);
        }
        for (; j < n; j++) c[j] += w0 * b0[j] + w1 * b1[j] + w2 * b2[j] + w3 * b3[j];
    }
    for (; e < e1; e++) {
        const float w0 = val[perm ? perm[e] : e];
        const float *b0 = B + (int64_t)col[e] * ldb + n0;
        int64_t j = 0;
        for (; j + 4 <= n; j += 4) vst1q_f32(c + j, vfmaq_n_f32(vld1q_f32(c + j), vld1q_f32(b0 + j), w0));
        for (; j < n; j++) c[j] += w0 * b0[j];
    }
}

void pf_spmm_neon(int32_t m0, int32_t m1, int64_t N, const int32_t *rowptr, const int32_t *col, const float *val,
                  const float *B, int64_t ldb, float *C, int64_t ldc) {
    assert(m0 <= m1 && N >= 0);
    for (int64_t n0 = 0; n0 < N; n0 += TILE) {
        const int64_t n = N - n0 < TILE ? N - n0 : TILE;
        for (int32_t m = m0; m < m1; m++)
            axpy_rows(C + (int64_t)m * ldc + n0, n, rowptr[m], rowptr[m + 1], col, NULL, val, B, ldb, n0);
    }
}

void pf_spmm_t_neon(int32_t k0, int32_t k1, int64_t N, const int32_t *colptr, const int32_t *row, const int32_t *perm,
                    const float *val, const float *D, int64_t ldd, float *C, int64_t ldc) {
    assert(k0 <= k1 && N >= 0);
    for (int64_t n0 = 0; n0 < N; n0 += TILE) {
        const int64_t n = N - n0 < TILE ? N - n0 : TILE;
        for (int32_t k = k0; k < k1; k++)
            axpy_rows(C + (int64_t)k * ldc + n0, n, colptr[k], colptr[k + 1], row, perm, val, D, ldd, n0);
    }
}

static inline float dot(const float *a, const float *b, int64_t n) {
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + j), vld1q_f32(b + j));
        s1 = vfmaq_f32(s1, vld1q_f32(a + j + 4), vld1q_f32(b + j + 4));
        s2 = vfmaq_f32(s2, vld1q_f32(a + j + 8), vld1q_f32(b + j + 8));
        s3 = vfmaq_f32(s3, vld1q_f32(a + j + 12), vld1q_f32(b + j + 12));
    }
    for (; j + 4 <= n; j += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + j), vld1q_f32(b + j));
    float s = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
    for (; j < n; j++) s += a[j] * b[j];
    return s;
}

void pf_sddmm_neon(int32_t m0, int32_t m1, int64_t N, const int32_t *rowptr, const int32_t *col, const float *A,
                   int64_t lda, const float *B, int64_t ldb, float *out) {
    assert(m0 <= m1 && N >= 0);
    for (int32_t e = rowptr[m0]; e < rowptr[m1]; e++) out[e] = 0.0f;
    for (int64_t n0 = 0; n0 < N; n0 += TILE) {
        const int64_t n = N - n0 < TILE ? N - n0 : TILE;
        for (int32_t m = m0; m < m1; m++) {
            const float *a = A + (int64_t)m * lda + n0;
            for (int32_t e = rowptr[m]; e < rowptr[m + 1]; e++) out[e] += dot(a, B + (int64_t)col[e] * ldb + n0, n);
        }
    }
}
