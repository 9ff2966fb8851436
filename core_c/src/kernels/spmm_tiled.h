/*
 * spmm_tiled.h - the tiled drivers of the sparse kernels, shared by spmm_generic.c and spmm_neon.c; each file
 * supplies only its row kernels (as GEMM's drivers share gemm_blocked.h). Included by those two files only,
 * once each: it defines the variant's public kernels (kernels.h) under the names SP_NAME gives.
 *
 * Loops: output rows r outer (a direct convolution's output height; 1 for a linear layer), then N in tiles
 * (SP_TILE columns for a linear layer, so that the dense operand's tile, K rows x SP_TILE, stays in L2 while
 * every sparse row passes over it; a convolution's output row, OW x batch, is short and stays whole), then
 * the sparse rows of the range.
 *
 * SpMM rows (sp_row_product, here): c[0:n] = sum_{e in [e0, e1)} val[perm ? perm[e] : e] * Bm[idx[e]*ldb + 0:n]
 * in strips of up to SP_MAXV vectors held in registers while every nonzero of the row streams its dense row
 * through (with the batch innermost, one broadcast FMA per kept weight and vector); two accumulator sets take
 * alternate nonzeros, so the FMA latency is hidden, and the output is written once, never read. A remainder
 * narrower than a full strip is one more strip, in one pass over the nonzeros. Every strip width and the
 * ISA's tail sum in the same order (even nonzeros, odd nonzeros, then the two), so a column's result does not
 * depend on where it sits: a sample gets the same bits wherever it is in the batch.
 *
 * Before including, define SP_NAME(op), the public name of an op in this variant (pf_##op##_neon); the vector
 * type sp_vec of SP_VL floats, SP_MAXV (<= 8) vectors a strip, and sp_zero, sp_load, sp_store, sp_add and
 * sp_fma(acc, x, w) = acc + w*x; and the row kernels:
 *   static inline void sp_row_tail(float *restrict c, int64_t j, int64_t n, int32_t e0, int32_t e1,
 *                                  const int32_t *restrict idx, const int32_t *restrict perm,
 *                                  const float *restrict val, const float *Bm, int64_t ldb);
 * columns [j, n) of an SpMM row, fewer than SP_VL, with the strips' operations;
 * and SP_GROUP, the kept weights of a row the ISA's SDDMM and fused backward take at once, over n columns, a
 * multiple of SP_VL (this file adds the tails):
 *   static inline void sp_group_dots(float *restrict r, const float *const *p, const float *restrict a,
 *                                    int64_t n);                    r[q] = dot(a[0:n], p[q][0:n]);
 *   static inline void sp_group_grad(float *restrict r, const float *const *p, float *const *d,
 *                                    const float *w, const float *restrict a, int64_t n);
 * the same and d[q][0:n] += w[q] * a[0:n]; with sp_hsum (the sum of a vector), sp_fmav(acc, x, y) = acc + x*y
 * on vectors and sp_fmas on floats, with the rounding of sp_fma.
 */
#ifndef PRUNEFL_SPMM_TILED_H
#define PRUNEFL_SPMM_TILED_H

#include <assert.h>
#include <stddef.h>

#include "kernels.h"

/* Columns per tile: 512 B of every dense row (SpMM), 1 KiB (SDDMM). */
enum { SP_TILE = 128, SP_DTILE = 256 };

/* c[0:SP_VL*nv] (nv a constant once inlined: the accumulators live in registers) */
static inline __attribute__((always_inline)) void sp_strip(float *restrict c, int nv, int32_t e0, int32_t e1,
                                                           const int32_t *restrict idx, const int32_t *restrict perm,
                                                           const float *restrict val, const float *Bm, int64_t ldb) {
    sp_vec a[8], b[8];
    for (int q = 0; q < nv; q++) a[q] = b[q] = sp_zero();
    int32_t e = e0;
    for (; e + 2 <= e1; e += 2) {
        const float w = val[perm ? perm[e] : e], u = val[perm ? perm[e + 1] : e + 1];
        const float *p = Bm + (int64_t)idx[e] * ldb, *s = Bm + (int64_t)idx[e + 1] * ldb;
        for (int q = 0; q < nv; q++) {
            a[q] = sp_fma(a[q], sp_load(p + SP_VL * q), w);
            b[q] = sp_fma(b[q], sp_load(s + SP_VL * q), u);
        }
    }
    if (e < e1) {
        const float w = val[perm ? perm[e] : e], *p = Bm + (int64_t)idx[e] * ldb;
        for (int q = 0; q < nv; q++) a[q] = sp_fma(a[q], sp_load(p + SP_VL * q), w);
    }
    for (int q = 0; q < nv; q++) sp_store(c + SP_VL * q, sp_add(a[q], b[q]));
}

static inline __attribute__((always_inline)) void sp_row_strips(float *restrict c, int64_t n, int32_t e0, int32_t e1,
                                                                const int32_t *restrict idx,
                                                                const int32_t *restrict perm,
                                                                const float *restrict val, const float *Bm,
                                                                int64_t ldb) {
    int64_t j = 0;
    for (; j + SP_VL * SP_MAXV <= n; j += SP_VL * SP_MAXV)
        sp_strip(c + j, SP_MAXV, e0, e1, idx, perm, val, Bm + j, ldb);
    const int rest = (int)((n - j) / SP_VL); /* < SP_MAXV vectors */
    switch (rest) {
    case 7: sp_strip(c + j, 7, e0, e1, idx, perm, val, Bm + j, ldb); break;
    case 6: sp_strip(c + j, 6, e0, e1, idx, perm, val, Bm + j, ldb); break;
    case 5: sp_strip(c + j, 5, e0, e1, idx, perm, val, Bm + j, ldb); break;
    case 4: sp_strip(c + j, 4, e0, e1, idx, perm, val, Bm + j, ldb); break;
    case 3: sp_strip(c + j, 3, e0, e1, idx, perm, val, Bm + j, ldb); break;
    case 2: sp_strip(c + j, 2, e0, e1, idx, perm, val, Bm + j, ldb); break;
    case 1: sp_strip(c + j, 1, e0, e1, idx, perm, val, Bm + j, ldb); break;
    default: break;
    }
    j += (int64_t)rest * SP_VL;
    if (j < n) sp_row_tail(c, j, n, e0, e1, idx, perm, val, Bm, ldb);
}

/* the product without a perm (W X) and with one (W^T D through the CSC view) compiled apart: no test of perm
 * per nonzero */
static inline void sp_row_product(float *restrict c, int64_t n, int32_t e0, int32_t e1, const int32_t *restrict idx,
                                  const int32_t *restrict perm, const float *restrict val, const float *Bm,
                                  int64_t ldb) {
    if (perm)
        sp_row_strips(c, n, e0, e1, idx, perm, val, Bm, ldb);
    else
        sp_row_strips(c, n, e0, e1, idx, NULL, val, Bm, ldb);
}

/* dot(a[0:n], p[0:n]), in two accumulators */
static inline float sp_dot(const float *restrict a, const float *restrict p, int64_t n) {
    sp_vec s = sp_zero(), t = s;
    int64_t j = 0;
    for (; j + 2 * SP_VL <= n; j += 2 * SP_VL) {
        s = sp_fmav(s, sp_load(a + j), sp_load(p + j));
        t = sp_fmav(t, sp_load(a + j + SP_VL), sp_load(p + j + SP_VL));
    }
    for (; j + SP_VL <= n; j += SP_VL) s = sp_fmav(s, sp_load(a + j), sp_load(p + j));
    float d = sp_hsum(sp_add(s, t));
    for (; j < n; j++) d = sp_fmas(d, a[j], p[j]);
    return d;
}

static inline void sp_row_dots(float *restrict out, int accumulate, int64_t n, int32_t e0, int32_t e1,
                               const int32_t *restrict idx, const float *restrict a, const float *Bm, int64_t ldb) {
    const int64_t nv = n / SP_VL * SP_VL;
    int32_t e = e0;
    for (; e + SP_GROUP <= e1; e += SP_GROUP) {
        const float *p[SP_GROUP];
        float r[SP_GROUP];
        for (int q = 0; q < SP_GROUP; q++) p[q] = Bm + (int64_t)idx[e + q] * ldb;
        sp_group_dots(r, p, a, nv);
        for (int64_t j = nv; j < n; j++)
            for (int q = 0; q < SP_GROUP; q++) r[q] = sp_fmas(r[q], a[j], p[q][j]);
        for (int q = 0; q < SP_GROUP; q++) out[e + q] = accumulate ? out[e + q] + r[q] : r[q];
    }
    for (; e < e1; e++) {
        const float d = sp_dot(a, Bm + (int64_t)idx[e] * ldb, n);
        out[e] = accumulate ? out[e] + d : d;
    }
}

/* the fused backward of one kept weight w at row p of B and row d of D: returns dot(a, p), d += w*a */
static inline float sp_grad_one(float *restrict d, const float *restrict p, const float *restrict a, int64_t n,
                                float w) {
    sp_vec s = sp_zero();
    int64_t j = 0;
    for (; j + SP_VL <= n; j += SP_VL) {
        const sp_vec x = sp_load(a + j);
        s = sp_fmav(s, x, sp_load(p + j));
        sp_store(d + j, sp_fma(sp_load(d + j), x, w));
    }
    float r = sp_hsum(s);
    for (; j < n; j++) {
        r = sp_fmas(r, a[j], p[j]);
        d[j] = sp_fmas(d[j], a[j], w);
    }
    return r;
}

static inline void sp_row_grad(float *restrict out, float *restrict D, int64_t ldd, int64_t n, int32_t e0, int32_t e1,
                               const int32_t *restrict idx, const float *restrict val, const float *restrict a,
                               const float *restrict Bm, int64_t ldb) {
    const int64_t nv = n / SP_VL * SP_VL;
    int32_t e = e0;
    for (; e + SP_GROUP <= e1; e += SP_GROUP) {
        const float *p[SP_GROUP];
        float *d[SP_GROUP];
        for (int q = 0; q < SP_GROUP; q++) {
            p[q] = Bm + (int64_t)idx[e + q] * ldb;
            d[q] = D + (int64_t)idx[e + q] * ldd;
        }
        const float *w = val + e;
        sp_group_grad(out + e, p, d, w, a, nv);
        for (int64_t j = nv; j < n; j++)
            for (int q = 0; q < SP_GROUP; q++) {
                out[e + q] = sp_fmas(out[e + q], a[j], p[q][j]);
                d[q][j] = sp_fmas(d[q][j], a[j], w[q]);
            }
    }
    for (; e < e1; e++)
        out[e] = sp_grad_one(D + (int64_t)idx[e] * ldd, Bm + (int64_t)idx[e] * ldb, a, n, val[e]);
}

void SP_NAME(spmm)(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
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

void SP_NAME(sddmm)(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
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
void SP_NAME(spgrad)(int32_t m0, int32_t m1, int64_t N, const int32_t *ptr, const int32_t *idx, const float *val,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float *out, float *D, int64_t ldd) {
    assert(m0 <= m1 && N >= 0);
    for (int32_t m = m0; m < m1; m++)
        sp_row_grad(out, D, ldd, N, ptr[m], ptr[m + 1], idx, val, A + (int64_t)m * lda, B, ldb);
}

#endif /* PRUNEFL_SPMM_TILED_H */
