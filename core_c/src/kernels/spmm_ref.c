/* spmm_ref.c - reference sparse kernels: CSR x dense, its transpose through the CSC view, and SDDMM. */
#include <assert.h>

#include "kernels.h"

void pf_spmm_ref(int32_t m0, int32_t m1, int64_t N, const int32_t *rowptr, const int32_t *col, const float *val,
                 const float *B, int64_t ldb, float *C, int64_t ldc) {
    assert(m0 <= m1 && N >= 0);
    for (int32_t m = m0; m < m1; m++) {
        for (int64_t n = 0; n < N; n++) {
            double acc = 0.0;
            for (int32_t e = rowptr[m]; e < rowptr[m + 1]; e++) acc += (double)val[e] * (double)B[col[e] * ldb + n];
            C[m * ldc + n] = (float)acc;
        }
    }
}

void pf_spmm_t_ref(int32_t k0, int32_t k1, int64_t N, const int32_t *colptr, const int32_t *row,
                   const int32_t *perm, const float *val, const float *D, int64_t ldd, float *C, int64_t ldc) {
    assert(k0 <= k1 && N >= 0);
    for (int32_t k = k0; k < k1; k++) {
        for (int64_t n = 0; n < N; n++) {
            double acc = 0.0;
            for (int32_t e = colptr[k]; e < colptr[k + 1]; e++)
                acc += (double)val[perm[e]] * (double)D[(int64_t)row[e] * ldd + n];
            C[k * ldc + n] = (float)acc;
        }
    }
}

void pf_sddmm_ref(int32_t m0, int32_t m1, int64_t N, const int32_t *rowptr, const int32_t *col, const float *A,
                  int64_t lda, const float *B, int64_t ldb, float *out) {
    assert(m0 <= m1 && N >= 0);
    for (int32_t m = m0; m < m1; m++) {
        for (int32_t e = rowptr[m]; e < rowptr[m + 1]; e++) {
            double acc = 0.0;
            for (int64_t n = 0; n < N; n++) acc += (double)A[m * lda + n] * (double)B[(int64_t)col[e] * ldb + n];
            out[e] = (float)acc;
        }
    }
}
