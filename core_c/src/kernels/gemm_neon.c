/* gemm_neon.c - dense GEMM for aarch64: the packed, cache-blocked driver of gemm_blocked.h with an 8 x 8
 * register tile in NEON intrinsics (16 accumulators; each k step loads 8 values of op(A) and 8 of op(B) and
 * issues 16 lane-indexed FMAs). Used when the build has no BLAS. */
#include <arm_neon.h>
#include <string.h>

#include "kernels.h"

#define GB_MR 8
#define GB_NR 8

#include "gemm_tail.h"

static inline void store_row(float *c, float32x4_t r0, float32x4_t r1, float beta, int first) {
    if (!first) {
        r0 = vaddq_f32(vld1q_f32(c), r0);
        r1 = vaddq_f32(vld1q_f32(c + 4), r1);
    } else if (beta != 0.0f) {
        r0 = vfmaq_n_f32(r0, vld1q_f32(c), beta);
        r1 = vfmaq_n_f32(r1, vld1q_f32(c + 4), beta);
    }
    vst1q_f32(c, r0);
    vst1q_f32(c + 4, r1);
}

static void gb_ukernel(int64_t kc, const float *restrict a, const float *restrict b, float *restrict c, int64_t ldc,
                       int mr, int nr, float alpha, float beta, int first) {
    float32x4_t c00 = vdupq_n_f32(0.0f), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    float32x4_t c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    for (int64_t k = 0; k < kc; k++) {
        const float32x4_t b0 = vld1q_f32(b + 8 * k), b1 = vld1q_f32(b + 8 * k + 4);
        const float32x4_t a0 = vld1q_f32(a + 8 * k), a1 = vld1q_f32(a + 8 * k + 4);
        c00 = vfmaq_laneq_f32(c00, b0, a0, 0);
        c01 = vfmaq_laneq_f32(c01, b1, a0, 0);
        c10 = vfmaq_laneq_f32(c10, b0, a0, 1);
        c11 = vfmaq_laneq_f32(c11, b1, a0, 1);
        c20 = vfmaq_laneq_f32(c20, b0, a0, 2);
        c21 = vfmaq_laneq_f32(c21, b1, a0, 2);
        c30 = vfmaq_laneq_f32(c30, b0, a0, 3);
        c31 = vfmaq_laneq_f32(c31, b1, a0, 3);
        c40 = vfmaq_laneq_f32(c40, b0, a1, 0);
        c41 = vfmaq_laneq_f32(c41, b1, a1, 0);
        c50 = vfmaq_laneq_f32(c50, b0, a1, 1);
        c51 = vfmaq_laneq_f32(c51, b1, a1, 1);
        c60 = vfmaq_laneq_f32(c60, b0, a1, 2);
        c61 = vfmaq_laneq_f32(c61, b1, a1, 2);
        c70 = vfmaq_laneq_f32(c70, b0, a1, 3);
        c71 = vfmaq_laneq_f32(c71, b1, a1, 3);
    }
    const float32x4_t acc[GB_MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                                       {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
    if (mr == GB_MR && nr == GB_NR) {
        for (int i = 0; i < GB_MR; i++)
            store_row(c + i * ldc, vmulq_n_f32(acc[i][0], alpha), vmulq_n_f32(acc[i][1], alpha), beta, first);
        return;
    }
    float t[GB_MR][GB_NR];
    for (int i = 0; i < GB_MR; i++) {
        vst1q_f32(t[i], acc[i][0]);
        vst1q_f32(t[i] + 4, acc[i][1]);
    }
    gb_store_tail(t, mr, nr, alpha, beta, first, c, ldc);
}

#include "gemm_blocked.h"

void pf_gemm_neon(int trans_a, int trans_b, int64_t m0, int64_t m1, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    gb_gemm(trans_a, trans_b, m0, m1, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
