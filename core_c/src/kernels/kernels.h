/*
 * kernels.h - the internal kernel interface of the training core (not public).
 *
 * Every op has a plain reference implementation (`*_ref.c`, the algorithmic definition and the oracle of
 * the tests), an optimised portable-C variant (`*_generic.c`) and, on aarch64, a NEON variant
 * (`*_neon.c`). Kernels are single-threaded: they work on a row range so that the caller splits rows over
 * worker threads (see core_c/src/parallel.c). Kernels never allocate, never fail: arguments are validated
 * at the public API; preconditions here are asserts.
 *
 * All matrices are row-major with explicit leading dimensions (elements between rows).
 * Sparse matrices are CSR over the kept weights of a weight matrix W (M x K):
 *   rowptr[M+1], col[nnz] (column index of each kept weight), val[nnz].
 * Their transpose is described by CSC index arrays over the same values:
 *   colptr[K+1], row[nnz] (row of each entry), perm[nnz] (position of the entry in the CSR arrays).
 * Index type is int32_t: a weight tensor has fewer than 2^31 elements (checked at pf_net_create).
 */
#ifndef PRUNEFL_KERNELS_H
#define PRUNEFL_KERNELS_H

#include <stdint.h>

/* Dense GEMM, rows [m0, m1) of C:
 *   C[m, n] = alpha * sum_k op(A)[m, k] * op(B)[k, n] + beta * C[m, n],  0 <= n < N
 * op(A) is A (M x K, lda >= K) or, when trans_a, A^T where A is K x M (lda >= M).
 * op(B) is B (K x N, ldb >= N) or, when trans_b, B^T where B is N x K (ldb >= K).
 * beta == 0 overwrites C (C may hold garbage, even NaN). */
typedef void (*pf_gemm_fn)(int trans_a, int trans_b, int64_t m0, int64_t m1, int64_t N, int64_t K, float alpha,
                           const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                           int64_t ldc);

/* SpMM over a compressed sparse matrix, sparse rows [m0, m1), each expanded into `rows` output rows
 * (rows = 1 for a linear layer, the output height for a direct convolution), overwritten:
 *   C[(m*rows + r)*ldc + n] = sum_{e = ptr[m]}^{ptr[m+1]-1} val[perm ? perm[e] : e] * B[r*rstep + idx[e]*ldb + n]
 * for 0 <= r < rows, 0 <= n < N. An empty sparse row writes zeros.
 *  - W X (linear forward): ptr = rowptr, idx = col, perm = NULL, rows = 1, B is K x N.
 *  - W^T D (linear input gradient): the CSC view, ptr = colptr, idx = row, perm = perm, rows = 1.
 *  - direct convolution (stride 1), batch innermost: idx = the kept weight's offset into a padded input
 *    plane in units of ldb = batch, rstep = one padded input row (see layers.c). */
typedef void (*pf_spmm_fn)(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
                           const int32_t *perm, const float *val, const float *B, int64_t ldb, int64_t rstep,
                           float *C, int64_t ldc);

/* SDDMM (sampled dense-dense product) at the kept positions of sparse rows [m0, m1), overwritten:
 *   out[e] = sum_{r < rows} sum_{n < N} A[(m*rows + r)*lda + n] * B[r*rstep + idx[e]*ldb + n]
 * for ptr[m] <= e < ptr[m+1]. Linear: rows = 1, A = dY^T (M x N), B = X^T (K x N): dW = dY X^T at kept
 * weights only. Direct convolution: the same offsets as pf_spmm_fn, A = dY (M, OH, OW*batch). */
typedef void (*pf_sddmm_fn)(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
                            const float *A, int64_t lda, const float *B, int64_t ldb, int64_t rstep, float *out);

/* The fused backward of a sparse linear layer (SparseProp): every kept weight is visited once and gives both
 * gradients. For m0 <= m < m1 and ptr[m] <= e < ptr[m+1]:
 *   out[e] = sum_{n < N} A[m*lda + n] * B[idx[e]*ldb + n]     (dW at the kept weight, overwritten)
 *   D[idx[e]*ldd + n] += val[e] * A[m*lda + n]                 (dX^T, accumulated: zero it first)
 * A = dY^T (M x N), B = X^T (K x N), D = dX^T (K x N); no CSC view is needed. Rows of D are shared by every
 * sparse row, so threads need one D each. */
typedef void (*pf_spgrad_fn)(int32_t m0, int32_t m1, int64_t N, const int32_t *ptr, const int32_t *idx,
                             const float *val, const float *A, int64_t lda, const float *B, int64_t ldb, float *out,
                             float *D, int64_t ldd);

/* im2col of one sample x (C, H, W) into columns cols[k * ldc + p], k = (c*kh + i)*kw + j, p = oh*OW + ow,
 * zero where the window reads padding. OH = (H + 2*ph - kh)/sh + 1, OW likewise. */
typedef void (*pf_im2col_fn)(const float *x, int32_t C, int32_t H, int32_t W, int32_t kh, int32_t kw, int32_t sh,
                             int32_t sw, int32_t ph, int32_t pw, float *cols, int64_t ldc);
/* The adjoint of im2col: dx[c, h, w] += every column entry that im2col read from (c, h, w).
 * dx is accumulated into (zero it first). */
typedef void (*pf_col2im_fn)(const float *cols, int64_t ldc, int32_t C, int32_t H, int32_t W, int32_t kh,
                             int32_t kw, int32_t sh, int32_t sw, int32_t ph, int32_t pw, float *dx);

/* One implementation of every op. */
typedef struct pf_kernels {
    const char *name; /* "ref", "generic", "neon" */
    pf_gemm_fn gemm;
    pf_spmm_fn spmm;
    pf_sddmm_fn sddmm;
    pf_spgrad_fn spgrad;
    pf_im2col_fn im2col;
    pf_col2im_fn col2im;
} pf_kernels;

/* The reference kernels (the files kernels/<op>_ref.c). */
extern const pf_kernels pf_kernels_ref;
/* All variants compiled into this build, reference first; tests compare each with the reference. */
const pf_kernels *const *pf_kernel_variants(int *count);
/* The variant the library uses: NEON on aarch64, generic elsewhere (kernels/config.c). */
const pf_kernels *pf_kernels_best(void);

/* Per-op reference functions (also used as fallbacks by optimised variants for awkward shapes). */
void pf_gemm_ref(int trans_a, int trans_b, int64_t m0, int64_t m1, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void pf_spmm_ref(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
                 const int32_t *perm, const float *val, const float *B, int64_t ldb, int64_t rstep, float *C,
                 int64_t ldc);
void pf_sddmm_ref(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
                  const float *A, int64_t lda, const float *B, int64_t ldb, int64_t rstep, float *out);
void pf_spgrad_ref(int32_t m0, int32_t m1, int64_t N, const int32_t *ptr, const int32_t *idx, const float *val,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float *out, float *D, int64_t ldd);
void pf_im2col_ref(const float *x, int32_t C, int32_t H, int32_t W, int32_t kh, int32_t kw, int32_t sh,
                   int32_t sw, int32_t ph, int32_t pw, float *cols, int64_t ldc);
void pf_col2im_ref(const float *cols, int64_t ldc, int32_t C, int32_t H, int32_t W, int32_t kh, int32_t kw,
                   int32_t sh, int32_t sw, int32_t ph, int32_t pw, float *dx);

/* Optimised portable C (kernels/<op>_generic.c). */
void pf_gemm_generic(int trans_a, int trans_b, int64_t m0, int64_t m1, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void pf_spmm_generic(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
                     const int32_t *perm, const float *val, const float *B, int64_t ldb, int64_t rstep, float *C,
                     int64_t ldc);
void pf_sddmm_generic(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
                      const float *A, int64_t lda, const float *B, int64_t ldb, int64_t rstep, float *out);
void pf_spgrad_generic(int32_t m0, int32_t m1, int64_t N, const int32_t *ptr, const int32_t *idx, const float *val,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float *out, float *D, int64_t ldd);
void pf_im2col_generic(const float *x, int32_t C, int32_t H, int32_t W, int32_t kh, int32_t kw, int32_t sh,
                       int32_t sw, int32_t ph, int32_t pw, float *cols, int64_t ldc);
void pf_col2im_generic(const float *cols, int64_t ldc, int32_t C, int32_t H, int32_t W, int32_t kh, int32_t kw,
                       int32_t sh, int32_t sw, int32_t ph, int32_t pw, float *dx);

#ifdef PF_HAVE_NEON
/* NEON intrinsics for aarch64 (kernels/<op>_neon.c); im2col/col2im use the generic ones. */
void pf_gemm_neon(int trans_a, int trans_b, int64_t m0, int64_t m1, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void pf_spmm_neon(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
                  const int32_t *perm, const float *val, const float *B, int64_t ldb, int64_t rstep, float *C,
                  int64_t ldc);
void pf_sddmm_neon(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
                   const float *A, int64_t lda, const float *B, int64_t ldb, int64_t rstep, float *out);
void pf_spgrad_neon(int32_t m0, int32_t m1, int64_t N, const int32_t *ptr, const int32_t *idx, const float *val,
                    const float *A, int64_t lda, const float *B, int64_t ldb, float *out, float *D, int64_t ldd);
#endif

#ifdef PF_HAVE_BLAS
/* CBLAS-backed GEMM (kernels/gemm_blas.c), same contract as pf_gemm_fn. The BLAS threads itself: the
 * parallel driver calls it once over all rows from the caller's thread, after pf_blas_set_threads. */
void pf_gemm_blas(int trans_a, int trans_b, int64_t m0, int64_t m1, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void pf_blas_set_threads(int n_threads);
#endif

#endif /* PRUNEFL_KERNELS_H */
