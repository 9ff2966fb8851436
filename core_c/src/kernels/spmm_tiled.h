/*
 * spmm_tiled.h - the tiled drivers of the sparse kernels, shared by spmm_generic.c and spmm_neon.c; each file
 * supplies only its row kernels (as GEMM's drivers share gemm_blocked.h). Included by those two files only
 * (every function is static).
 *
 * Loops: output rows r outer (a direct convolution's output height; 1 for a linear layer), then N in tiles
 * (SP_TILE columns for a linear layer, so that the dense operand's tile, K rows x SP_TILE, stays in L2 while
 * every sparse row passes over it; a convolution's output row, OW x batch, is short and stays whole), then
 * the sparse rows of the range.
 *
 * Before including, define the two row kernels:
 *   static inline void sp_row_product(float *restrict c, int64_t n, int32_t e0, int32_t e1,
 *                                     const int32_t *restrict idx, const int32_t *restrict perm,
 *                                     const float *restrict val, const float *Bm, int64_t ldb);
 * c[0:n] = sum_{e in [e0, e1)} val[perm ? perm[e] : e] * Bm[idx[e]*ldb + 0:n], written once; the same
 * operations in the same order for every column, so a column's result does not depend on its position;
 *   static inline void sp_row_dots(float *restrict out, int accumulate, int64_t n, int32_t e0, int32_t e1,
 *                                  const int32_t *restrict idx, const float *restrict a, const float *Bm,
 *                                  int64_t ldb);
 * out[e] (+)= dot(a[0:n], Bm[idx[e]*ldb + 0:n]) for e in [e0, e1);
 *   static inline void sp_row_grad(float *restrict out, float *restrict D, int64_t ldd, int64_t n, int32_t e0,
 *                                  int32_t e1, const int32_t *restrict idx, const float *restrict val,
 *                                  const float *restrict a, const float *restrict Bm, int64_t ldb);
 * out[e] = dot(a[0:n], Bm[idx[e]*ldb + 0:n]) and D[idx[e]*ldd + 0:n] += val[e] * a[0:n] for e in [e0, e1).
 */
#ifndef PRUNEFL_SPMM_TILED_H
#define PRUNEFL_SPMM_TILED_H

#include <assert.h>
#include <stddef.h>

#include "kernels.h"

/* Columns per tile: 512 B of every dense row (SpMM), 1 KiB (SDDMM). */
enum { SP_TILE = 128, SP_DTILE = 256 };

static void sp_spmm(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
                    const int32_t *perm, const float *val, const float *B, int64_t ldb, int64_t rstep, float *C,
                    int64_t ldc) {
    assert(m0 <= m1 && rows >= 0 && N >= 0);
    const int64_t tile = rows > 1 && N > 0 ? N : SP_TILE;
    for (int32_t r = 0; r < rows; r++)
        for (int64_t n0 = 0; n0 < N; n0 += tile) {
            const int64_t n = N - n0 < tile ? N - n0 : tile;
            const float *Bt = B + (int64_t)r * rstep + n0;
            for (int32_t m = m0; m < m1; m++)
                sp_row_product(C + ((int64_t)m * rows + r) * ldc + n0, n, ptr[m], ptr[m + 1], idx, perm, val, Bt,
                               ldb);
        }
}

static void sp_sddmm(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
                     const float *A, int64_t lda, const float *B, int64_t ldb, int64_t rstep, float *out) {
    assert(m0 <= m1 && rows >= 0 && N >= 0);
    if (N == 0 || rows == 0) {
        for (int32_t e = ptr[m0]; e < ptr[m1]; e++) out[e] = 0.0f;
        return;
    }
    const int64_t tile = rows > 1 ? N : SP_DTILE;
    for (int32_t r = 0; r < rows; r++)
        for (int64_t n0 = 0; n0 < N; n0 += tile) {
            const int64_t n = N - n0 < tile ? N - n0 : tile;
            const float *Bt = B + (int64_t)r * rstep + n0;
            for (int32_t m = m0; m < m1; m++)
                sp_row_dots(out, r > 0 || n0 > 0, n, ptr[m], ptr[m + 1], idx, A + ((int64_t)m * rows + r) * lda + n0,
                            Bt, ldb);
        }
}

/* The fused linear backward: one pass over the kept weights of each sparse row (a linear layer's batch is short:
 * the row of A stays in L1, the rows of B and D in L2). */
static void sp_spgrad(int32_t m0, int32_t m1, int64_t N, const int32_t *ptr, const int32_t *idx, const float *val,
                      const float *A, int64_t lda, const float *B, int64_t ldb, float *out, float *D, int64_t ldd) {
    assert(m0 <= m1 && N >= 0);
    for (int32_t m = m0; m < m1; m++)
        sp_row_grad(out, D, ldd, N, ptr[m], ptr[m + 1], idx, val, A + (int64_t)m * lda, B, ldb);
}

#endif /* PRUNEFL_SPMM_TILED_H */
