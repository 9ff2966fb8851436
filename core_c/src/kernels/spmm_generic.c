/* spmm_generic.c - the sparse kernels in portable C, vectorised along N with GCC/Clang vector extensions
 * (AVX2 under -march=native, SSE2 or NEON registers in pairs elsewhere).
 *
 * SpMM and its transpose keep a strip of an output row in registers (32 columns, then 16, 8, 4, scalar) while
 * every nonzero of the row streams its dense row through; two accumulator sets take alternate nonzeros so
 * the FMA latency is hidden, and the output is written once, never read. Every strip width sums in the same
 * order (even nonzeros, odd nonzeros, then the two), so a column's result does not depend on where it sits:
 * a sample gets the same bits wherever it is in the batch, and exact ties (a max-pool window over a constant
 * channel) stay ties, as they do in PyTorch. N is cut into tiles so that the
 * dense operand's tile (rows x TILE) stays in L2 while all rows of W pass over it.
 *
 * SDDMM computes four nonzeros of a row at once, so one load of the dense row of A serves four products. */
/* built with -ffp-contract=off (CMakeLists.txt): a*b+c is a rounded product then a rounded sum, in every strip
 * and tail alike, whatever the compiler's inlining and vectorisation choices. */

#include <assert.h>
#include <stddef.h>
#include <string.h>

#include "kernels.h"

typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));

static inline v8 ld8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void st8(float *p, v8 v) { memcpy(p, &v, sizeof v); }
static inline v4 ld4(const float *p) {
    v4 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void st4(float *p, v4 v) { memcpy(p, &v, sizeof v); }
static inline v8 splat8(float x) { return (v8){x, x, x, x, x, x, x, x}; }
static inline v4 splat4(float x) { return (v4){x, x, x, x}; }

/* Columns per tile: 512 B of every dense row, so an 800-row operand tile (Conv-2's conv2) is 400 KiB. */
enum { TILE = 128 };

#define W_(e) val[perm ? perm[e] : (e)]
#define ROW_(e) (Bm + (int64_t)idx[e] * ldb + j)

/* c[0:n] = sum_{e in [e0, e1)} val[perm ? perm[e] : e] * Bm[idx[e] * ldb + 0:n] */
static inline void row_product(float *restrict c, int64_t n, int32_t e0, int32_t e1, const int32_t *restrict idx,
                               const int32_t *restrict perm, const float *restrict val, const float *Bm,
                               int64_t ldb) {
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        v8 a0 = splat8(0.0f), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int32_t e = e0;
        for (; e + 2 <= e1; e += 2) {
            const v8 w = splat8(W_(e)), u = splat8(W_(e + 1));
            const float *p = ROW_(e), *q = ROW_(e + 1);
            a0 += w * ld8(p);
            a1 += w * ld8(p + 8);
            a2 += w * ld8(p + 16);
            a3 += w * ld8(p + 24);
            b0 += u * ld8(q);
            b1 += u * ld8(q + 8);
            b2 += u * ld8(q + 16);
            b3 += u * ld8(q + 24);
        }
        if (e < e1) {
            const v8 w = splat8(W_(e));
            const float *p = ROW_(e);
            a0 += w * ld8(p);
            a1 += w * ld8(p + 8);
            a2 += w * ld8(p + 16);
            a3 += w * ld8(p + 24);
        }
        st8(c + j, a0 + b0);
        st8(c + j + 8, a1 + b1);
        st8(c + j + 16, a2 + b2);
        st8(c + j + 24, a3 + b3);
    }
    for (; j + 16 <= n; j += 16) {
        v8 a0 = splat8(0.0f), a1 = a0, b0 = a0, b1 = a0;
        int32_t e = e0;
        for (; e + 2 <= e1; e += 2) {
            const v8 w = splat8(W_(e)), u = splat8(W_(e + 1));
            const float *p = ROW_(e), *q = ROW_(e + 1);
            a0 += w * ld8(p);
            a1 += w * ld8(p + 8);
            b0 += u * ld8(q);
            b1 += u * ld8(q + 8);
        }
        if (e < e1) {
            const v8 w = splat8(W_(e));
            a0 += w * ld8(ROW_(e));
            a1 += w * ld8(ROW_(e) + 8);
        }
        st8(c + j, a0 + b0);
        st8(c + j + 8, a1 + b1);
    }
    for (; j + 8 <= n; j += 8) {
        v8 a0 = splat8(0.0f), b0 = a0;
        int32_t e = e0;
        for (; e + 2 <= e1; e += 2) {
            a0 += splat8(W_(e)) * ld8(ROW_(e));
            b0 += splat8(W_(e + 1)) * ld8(ROW_(e + 1));
        }
        if (e < e1) a0 += splat8(W_(e)) * ld8(ROW_(e));
        st8(c + j, a0 + b0);
    }
    for (; j + 4 <= n; j += 4) {
        v4 a0 = splat4(0.0f), b0 = a0;
        int32_t e = e0;
        for (; e + 2 <= e1; e += 2) {
            a0 += splat4(W_(e)) * ld4(ROW_(e));
            b0 += splat4(W_(e + 1)) * ld4(ROW_(e + 1));
        }
        if (e < e1) a0 += splat4(W_(e)) * ld4(ROW_(e));
        st4(c + j, a0 + b0);
    }
    for (; j < n; j++) { /* in lane 0 of a vector: the same operations, in the same order, as a strip */
        v4 a0 = splat4(0.0f), b0 = a0;
        int32_t e = e0;
        for (; e + 2 <= e1; e += 2) {
            a0 += splat4(W_(e)) * (v4){*ROW_(e), 0.0f, 0.0f, 0.0f};
            b0 += splat4(W_(e + 1)) * (v4){*ROW_(e + 1), 0.0f, 0.0f, 0.0f};
        }
        if (e < e1) a0 += splat4(W_(e)) * (v4){*ROW_(e), 0.0f, 0.0f, 0.0f};
        c[j] = (a0 + b0)[0];
    }
}

#undef W_
#undef ROW_

void pf_spmm_generic(int32_t m0, int32_t m1, int64_t N, const int32_t *rowptr, const int32_t *col, const float *val,
                     const float *B, int64_t ldb, float *C, int64_t ldc) {
    assert(m0 <= m1 && N >= 0);
    for (int64_t n0 = 0; n0 < N; n0 += TILE) {
        const int64_t n = N - n0 < TILE ? N - n0 : TILE;
        for (int32_t m = m0; m < m1; m++)
            row_product(C + (int64_t)m * ldc + n0, n, rowptr[m], rowptr[m + 1], col, NULL, val, B + n0, ldb);
    }
}

void pf_spmm_t_generic(int32_t k0, int32_t k1, int64_t N, const int32_t *colptr, const int32_t *row,
                       const int32_t *perm, const float *val, const float *D, int64_t ldd, float *C, int64_t ldc) {
    assert(k0 <= k1 && N >= 0);
    for (int64_t n0 = 0; n0 < N; n0 += TILE) {
        const int64_t n = N - n0 < TILE ? N - n0 : TILE;
        for (int32_t k = k0; k < k1; k++)
            row_product(C + (int64_t)k * ldc + n0, n, colptr[k], colptr[k + 1], row, perm, val, D + n0, ldd);
    }
}

static inline v4 fold8(v8 x) { return (v4){x[0] + x[4], x[1] + x[5], x[2] + x[6], x[3] + x[7]}; }
static inline float hsum4(v4 x) { return (x[0] + x[2]) + (x[1] + x[3]); }

/* out[e] (+)= dot(a[0:n], Bm[idx[e] * ldb + 0:n]) for e in [e0, e1) */
static inline void row_dots(float *restrict out, int accumulate, int64_t n, int32_t e0, int32_t e1,
                            const int32_t *restrict idx, const float *restrict a, const float *Bm, int64_t ldb) {
    int32_t e = e0;
    for (; e + 4 <= e1; e += 4) {
        const float *p0 = Bm + (int64_t)idx[e] * ldb, *p1 = Bm + (int64_t)idx[e + 1] * ldb;
        const float *p2 = Bm + (int64_t)idx[e + 2] * ldb, *p3 = Bm + (int64_t)idx[e + 3] * ldb;
        v8 s0 = splat8(0.0f), s1 = s0, s2 = s0, s3 = s0;
        int64_t j = 0;
        for (; j + 8 <= n; j += 8) {
            const v8 x = ld8(a + j);
            s0 += x * ld8(p0 + j);
            s1 += x * ld8(p1 + j);
            s2 += x * ld8(p2 + j);
            s3 += x * ld8(p3 + j);
        }
        v4 u0 = fold8(s0), u1 = fold8(s1), u2 = fold8(s2), u3 = fold8(s3);
        for (; j + 4 <= n; j += 4) {
            const v4 x = ld4(a + j);
            u0 += x * ld4(p0 + j);
            u1 += x * ld4(p1 + j);
            u2 += x * ld4(p2 + j);
            u3 += x * ld4(p3 + j);
        }
        float r0 = hsum4(u0), r1 = hsum4(u1), r2 = hsum4(u2), r3 = hsum4(u3);
        for (; j < n; j++) {
            r0 += a[j] * p0[j];
            r1 += a[j] * p1[j];
            r2 += a[j] * p2[j];
            r3 += a[j] * p3[j];
        }
        if (accumulate) {
            out[e] += r0;
            out[e + 1] += r1;
            out[e + 2] += r2;
            out[e + 3] += r3;
        } else {
            out[e] = r0;
            out[e + 1] = r1;
            out[e + 2] = r2;
            out[e + 3] = r3;
        }
    }
    for (; e < e1; e++) {
        const float *p = Bm + (int64_t)idx[e] * ldb;
        v8 s = splat8(0.0f), t = s;
        int64_t j = 0;
        for (; j + 16 <= n; j += 16) {
            s += ld8(a + j) * ld8(p + j);
            t += ld8(a + j + 8) * ld8(p + j + 8);
        }
        for (; j + 8 <= n; j += 8) s += ld8(a + j) * ld8(p + j);
        float d = hsum4(fold8(s + t));
        for (; j < n; j++) d += a[j] * p[j];
        out[e] = accumulate ? out[e] + d : d;
    }
}

void pf_sddmm_generic(int32_t m0, int32_t m1, int64_t N, const int32_t *rowptr, const int32_t *col, const float *A,
                      int64_t lda, const float *B, int64_t ldb, float *out) {
    assert(m0 <= m1 && N >= 0);
    if (N == 0) {
        for (int32_t e = rowptr[m0]; e < rowptr[m1]; e++) out[e] = 0.0f;
        return;
    }
    /* 1 KiB of every B row per tile: the tile of B stays in L2 while all rows of the range pass over it */
    enum { DTILE = 256 };
    for (int64_t n0 = 0; n0 < N; n0 += DTILE) {
        const int64_t n = N - n0 < DTILE ? N - n0 : DTILE;
        for (int32_t m = m0; m < m1; m++)
            row_dots(out, n0 > 0, n, rowptr[m], rowptr[m + 1], col, A + (int64_t)m * lda + n0, B + n0, ldb);
    }
}
