/* gemm_neon.c - dense GEMM with NEON intrinsics (aarch64), for builds without a BLAS. The loop structure is
 * that of gemm_generic.c (no packing: kernels never allocate): op(B) = B runs 4 rows of C x 4-wide vectors
 * with vfmaq_n_f32; op(B) = B^T runs dot products with four accumulators. */
#include <arm_neon.h>
#include <assert.h>
#include <string.h>

#include "kernels.h"

enum { NT = 256, KT = 256 };

static inline float a_at(int trans_a, const float *A, int64_t lda, int64_t m, int64_t k) {
    return trans_a ? A[k * lda + m] : A[m * lda + k];
}

static void scale_rows(int64_t m0, int64_t m1, int64_t N, float beta, float *C, int64_t ldc) {
    for (int64_t m = m0; m < m1; m++) {
        float *c = C + m * ldc;
        if (beta == 0.0f)
            memset(c, 0, (size_t)N * sizeof(float));
        else if (beta != 1.0f)
            for (int64_t n = 0; n < N; n++) c[n] *= beta;
    }
}

static void gemm_axpy(int trans_a, int64_t m0, int64_t m1, int64_t N, int64_t K, float alpha, const float *A,
                      int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc) {
    for (int64_t n0 = 0; n0 < N; n0 += NT) {
        const int64_t n = N - n0 < NT ? N - n0 : NT;
        int64_t m = m0;
        for (; m + 4 <= m1; m += 4) {
            float *c0 = C + m * ldc + n0, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;
            for (int64_t k = 0; k < K; k++) {
                const float *b = B + k * ldb + n0;
                const float a0 = alpha * a_at(trans_a, A, lda, m, k), a1 = alpha * a_at(trans_a, A, lda, m + 1, k);
                const float a2 = alpha * a_at(trans_a, A, lda, m + 2, k), a3 = alpha * a_at(trans_a, A, lda, m + 3, k);
                int64_t j = 0;
                for (; j + 4 <= n; j += 4) {
                    const float32x4_t bv = vld1q_f32(b + j);
                    vst1q_f32(c0 + j, vfmaq_n_f32(vld1q_f32(c0 + j), bv, a0));
                    vst1q_f32(c1 + j, vfmaq_n_f32(vld1q_f32(c1 + j), bv, a1));
                    vst1q_f32(c2 + j, vfmaq_n_f32(vld1q_f32(c2 + j), bv, a2));
                    vst1q_f32(c3 + j, vfmaq_n_f32(vld1q_f32(c3 + j), bv, a3));
                }
                for (; j < n; j++) {
                    c0[j] += a0 * b[j];
                    c1[j] += a1 * b[j];
                    c2[j] += a2 * b[j];
                    c3[j] += a3 * b[j];
                }
            }
        }
        for (; m < m1; m++) {
            float *c = C + m * ldc + n0;
            for (int64_t k = 0; k < K; k++) {
                const float *b = B + k * ldb + n0;
                const float a = alpha * a_at(trans_a, A, lda, m, k);
                int64_t j = 0;
                for (; j + 4 <= n; j += 4) vst1q_f32(c + j, vfmaq_n_f32(vld1q_f32(c + j), vld1q_f32(b + j), a));
                for (; j < n; j++) c[j] += a * b[j];
            }
        }
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

static void gemm_dot(int trans_a, int64_t m0, int64_t m1, int64_t N, int64_t K, float alpha, const float *A,
                     int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc) {
    float buf[KT];
    for (int64_t m = m0; m < m1; m++)
        for (int64_t k0 = 0; k0 < K; k0 += KT) {
            const int64_t kn = K - k0 < KT ? K - k0 : KT;
            const float *a = A + m * lda + k0;
            if (trans_a) {
                for (int64_t k = 0; k < kn; k++) buf[k] = A[(k0 + k) * lda + m];
                a = buf;
            }
            float *c = C + m * ldc;
            for (int64_t n = 0; n < N; n++) c[n] += alpha * dot(a, B + n * ldb + k0, kn);
        }
}

void pf_gemm_neon(int trans_a, int trans_b, int64_t m0, int64_t m1, int64_t N, int64_t K, float alpha, const float *A,
                  int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    assert(m0 <= m1 && N >= 0 && K >= 0);
    scale_rows(m0, m1, N, beta, C, ldc);
    if (K == 0 || alpha == 0.0f) return;
    if (!trans_b)
        gemm_axpy(trans_a, m0, m1, N, K, alpha, A, lda, B, ldb, C, ldc);
    else
        gemm_dot(trans_a, m0, m1, N, K, alpha, A, lda, B, ldb, C, ldc);
}
