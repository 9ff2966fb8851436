/* spmm_ref.c - reference sparse kernels: compressed-sparse x dense (W X, and W^T D through the CSC view's perm)
 * and SDDMM, both over `rows` output rows per sparse row (1 for a linear layer, the output height for a direct
 * convolution), and the fused backward of a linear layer (dW and dX^T per kept weight). The definitions of
 * kernels.h, written as plainly as possible, accumulating in double. */
#include <assert.h>

#include "kernels.h"

void pf_spmm_ref(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
                 const int32_t *perm, const float *val, const float *B, int64_t ldb, int64_t rstep, float *C,
                 int64_t ldc) {
    assert(m0 <= m1 && rows >= 0 && N >= 0);
    for (int32_t m = m0; m < m1; m++)
        for (int32_t r = 0; r < rows; r++)
            for (int64_t n = 0; n < N; n++) {
                double acc = 0.0;
                for (int32_t e = ptr[m]; e < ptr[m + 1]; e++) {
                    const float w = val[perm ? perm[e] : e];
                    acc += (double)w * (double)B[(int64_t)r * rstep + (int64_t)idx[e] * ldb + n];
                }
                C[((int64_t)m * rows + r) * ldc + n] = (float)acc;
            }
}

void pf_sddmm_ref(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
                  const float *A, int64_t lda, const float *B, int64_t ldb, int64_t rstep, float *out) {
    assert(m0 <= m1 && rows >= 0 && N >= 0);
    for (int32_t m = m0; m < m1; m++)
        for (int32_t e = ptr[m]; e < ptr[m + 1]; e++) {
            double acc = 0.0;
            for (int32_t r = 0; r < rows; r++)
                for (int64_t n = 0; n < N; n++)
                    acc += (double)A[((int64_t)m * rows + r) * lda + n] *
                           (double)B[(int64_t)r * rstep + (int64_t)idx[e] * ldb + n];
            out[e] = (float)acc;
        }
}

void pf_spgrad_ref(int32_t m0, int32_t m1, int64_t N, const int32_t *ptr, const int32_t *idx, const float *val,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float *out, float *D, int64_t ldd) {
    assert(m0 <= m1 && N >= 0);
    for (int32_t m = m0; m < m1; m++)
        for (int32_t e = ptr[m]; e < ptr[m + 1]; e++) {
            double acc = 0.0;
            for (int64_t n = 0; n < N; n++) {
                acc += (double)A[(int64_t)m * lda + n] * (double)B[(int64_t)idx[e] * ldb + n];
                D[(int64_t)idx[e] * ldd + n] += val[e] * A[(int64_t)m * lda + n];
            }
            out[e] = (float)acc;
        }
}
