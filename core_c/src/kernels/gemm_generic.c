/* gemm_generic.c - dense GEMM in portable C: the packed, cache-blocked driver of gemm_blocked.h with a 6 x 16
 * register tile written in GCC/Clang vector extensions (12 accumulators of 8 floats: AVX2/FMA registers under
 * -march=native, pairs of SSE/NEON registers elsewhere). Used when the build has no BLAS. */
/* built with -ffp-contract=fast (CMakeLists.txt): a*b+c may become one FMA, the same everywhere in the file */

#include <string.h>

#include "kernels.h"
#include "vec_generic.h"

#define GB_MR 6
#define GB_NR 16

#include "gemm_tail.h"

static void gb_ukernel(int64_t kc, const float *restrict a, const float *restrict b, float *restrict c, int64_t ldc,
                       int mr, int nr, float alpha, float beta, int first) {
    v8 c00 = splat8(0.0f), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    v8 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t k = 0; k < kc; k++) {
        const v8 b0 = ld8(b + k * GB_NR), b1 = ld8(b + k * GB_NR + 8);
        const float *ak = a + k * GB_MR;
        v8 av = splat8(ak[0]);
        c00 += av * b0;
        c01 += av * b1;
        av = splat8(ak[1]);
        c10 += av * b0;
        c11 += av * b1;
        av = splat8(ak[2]);
        c20 += av * b0;
        c21 += av * b1;
        av = splat8(ak[3]);
        c30 += av * b0;
        c31 += av * b1;
        av = splat8(ak[4]);
        c40 += av * b0;
        c41 += av * b1;
        av = splat8(ak[5]);
        c50 += av * b0;
        c51 += av * b1;
    }
    const v8 acc[GB_MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    const v8 va = splat8(alpha), vb = splat8(beta);
    if (mr == GB_MR && nr == GB_NR) {
        for (int i = 0; i < GB_MR; i++) {
            float *ci = c + i * ldc;
            for (int h = 0; h < 2; h++) {
                const v8 r = va * acc[i][h];
                if (!first)
                    st8(ci + 8 * h, ld8(ci + 8 * h) + r);
                else if (beta == 0.0f)
                    st8(ci + 8 * h, r);
                else
                    st8(ci + 8 * h, vb * ld8(ci + 8 * h) + r);
            }
        }
        return;
    }
    float t[GB_MR][GB_NR];
    memcpy(t, acc, sizeof t);
    gb_store_tail(t, mr, nr, alpha, beta, first, c, ldc);
}

#include "gemm_blocked.h"

void pf_gemm_generic(int trans_a, int trans_b, int64_t m0, int64_t m1, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    gb_gemm(trans_a, trans_b, m0, m1, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
