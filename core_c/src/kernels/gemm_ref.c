/* gemm_ref.c - reference dense GEMM: the definition in kernels.h, one multiply-add at a time. */
#include <assert.h>

#include "kernels.h"

void pf_gemm_ref(int trans_a, int trans_b, int64_t m0, int64_t m1, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    assert(m0 <= m1 && N >= 0 && K >= 0);
    for (int64_t m = m0; m < m1; m++) {
        for (int64_t n = 0; n < N; n++) {
            double acc = 0.0;
            for (int64_t k = 0; k < K; k++) {
                const float a = trans_a ? A[k * lda + m] : A[m * lda + k];
                const float b = trans_b ? B[n * ldb + k] : B[k * ldb + n];
                acc += (double)a * (double)b;
            }
            const float prev = (beta == 0.0f) ? 0.0f : beta * C[m * ldc + n];
            C[m * ldc + n] = alpha * (float)acc + prev;
        }
    }
}
