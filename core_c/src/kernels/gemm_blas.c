/* gemm_blas.c - the dense GEMM through a CBLAS (OpenBLAS when found). A row range [m0, m1) of C is the
 * product of the matching rows of op(A): for op(A) = A^T those rows are columns of A, an offset of m0. */
#include <cblas.h>

#include "kernels.h"

/* OpenBLAS's thread setter; weak so that any other CBLAS links too (then the BLAS picks its own threads). */
void openblas_set_num_threads(int num_threads) __attribute__((weak));

void pf_blas_set_threads(int n_threads) {
    if (openblas_set_num_threads) openblas_set_num_threads(n_threads);
}

void pf_gemm_blas(int trans_a, int trans_b, int64_t m0, int64_t m1, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (m1 <= m0 || N <= 0) return;
    const float *a = trans_a ? A + m0 : A + m0 * lda;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                (blasint)(m1 - m0), (blasint)N, (blasint)K, alpha, a, (blasint)lda, B, (blasint)ldb, beta,
                C + m0 * ldc, (blasint)ldc);
}
