/* spmm_generic.c - the row kernels of the sparse products in portable C, vectorised along N with GCC/Clang
 * vector extensions (AVX2 under -march=native, SSE2 or NEON registers in pairs elsewhere); the tiled drivers
 * are spmm_tiled.h's.
 *
 * SpMM keeps a strip of an output row in registers (32 columns; a remainder of 24, 16 or 8 in one more strip,
 * then 4 and scalar) while every nonzero of the row streams its dense row through: with the batch innermost
 * (a linear layer's 24 padded samples, a convolution's output row of OW x batch) each kept weight is one
 * broadcast FMA over contiguous vectors. Two accumulator sets take alternate nonzeros so the FMA latency is
 * hidden, and the output is written once, never read. Every strip width sums in the same order (even
 * nonzeros, odd nonzeros, then the two), so a column's result does not depend on where it sits: a sample gets
 * the same bits wherever it is in the batch, and exact ties (a max-pool window over a constant channel) stay
 * ties, as they do in PyTorch.
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

#define W_(e) val[perm ? perm[e] : (e)]
#define ROW_(e) (Bm + (int64_t)idx[e] * ldb)

/* c[0:8*nv] for nv in 1..4 (a constant once inlined: the accumulators live in registers) */
static inline __attribute__((always_inline)) void strip8(float *restrict c, int nv, int32_t e0, int32_t e1,
                                                         const int32_t *restrict idx, const int32_t *restrict perm,
                                                         const float *restrict val, const float *Bm, int64_t ldb) {
    v8 a[4], b[4];
    for (int q = 0; q < nv; q++) a[q] = b[q] = splat8(0.0f);
    int32_t e = e0;
    for (; e + 2 <= e1; e += 2) {
        const v8 w = splat8(W_(e)), u = splat8(W_(e + 1));
        const float *p = ROW_(e), *s = ROW_(e + 1);
        for (int q = 0; q < nv; q++) {
            a[q] += w * ld8(p + 8 * q);
            b[q] += u * ld8(s + 8 * q);
        }
    }
    if (e < e1) {
        const v8 w = splat8(W_(e));
        const float *p = ROW_(e);
        for (int q = 0; q < nv; q++) a[q] += w * ld8(p + 8 * q);
    }
    for (int q = 0; q < nv; q++) st8(c + 8 * q, a[q] + b[q]);
}

static inline void sp_row_product(float *restrict c, int64_t n, int32_t e0, int32_t e1, const int32_t *restrict idx,
                                  const int32_t *restrict perm, const float *restrict val, const float *Bm,
                                  int64_t ldb) {
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) strip8(c + j, 4, e0, e1, idx, perm, val, Bm + j, ldb);
    switch ((n - j) / 8) { /* the remainder in one pass over the nonzeros */
    case 3: strip8(c + j, 3, e0, e1, idx, perm, val, Bm + j, ldb); j += 24; break;
    case 2: strip8(c + j, 2, e0, e1, idx, perm, val, Bm + j, ldb); j += 16; break;
    case 1: strip8(c + j, 1, e0, e1, idx, perm, val, Bm + j, ldb); j += 8; break;
    default: break;
    }
    for (; j + 4 <= n; j += 4) {
        v4 a0 = splat4(0.0f), b0 = a0;
        int32_t e = e0;
        for (; e + 2 <= e1; e += 2) {
            a0 += splat4(W_(e)) * ld4(ROW_(e) + j);
            b0 += splat4(W_(e + 1)) * ld4(ROW_(e + 1) + j);
        }
        if (e < e1) a0 += splat4(W_(e)) * ld4(ROW_(e) + j);
        st4(c + j, a0 + b0);
    }
    for (; j < n; j++) { /* in lane 0 of a vector: the same operations, in the same order, as a strip */
        v4 a0 = splat4(0.0f), b0 = a0;
        int32_t e = e0;
        for (; e + 2 <= e1; e += 2) {
            a0 += splat4(W_(e)) * (v4){ROW_(e)[j], 0.0f, 0.0f, 0.0f};
            b0 += splat4(W_(e + 1)) * (v4){ROW_(e + 1)[j], 0.0f, 0.0f, 0.0f};
        }
        if (e < e1) a0 += splat4(W_(e)) * (v4){ROW_(e)[j], 0.0f, 0.0f, 0.0f};
        c[j] = (a0 + b0)[0];
    }
}

#undef W_
#undef ROW_

static inline v4 fold8(v8 x) { return (v4){x[0] + x[4], x[1] + x[5], x[2] + x[6], x[3] + x[7]}; }
static inline float hsum4(v4 x) { return (x[0] + x[2]) + (x[1] + x[3]); }

/* pairwise sums of x and y as AVX's hadd does them, in each half: {x0+x1, x2+x3, y0+y1, y2+y3, x4+x5, ...} */
static inline v8 hadd8(v8 x, v8 y) {
    return __builtin_shufflevector(x, y, 0, 2, 8, 10, 4, 6, 12, 14) +
           __builtin_shufflevector(x, y, 1, 3, 9, 11, 5, 7, 13, 15);
}

/* {sum(s0), ..., sum(s7)} in three levels of pairwise sums */
static inline v8 hsum8x8(v8 s0, v8 s1, v8 s2, v8 s3, v8 s4, v8 s5, v8 s6, v8 s7) {
    const v8 u0 = hadd8(hadd8(s0, s1), hadd8(s2, s3)), u1 = hadd8(hadd8(s4, s5), hadd8(s6, s7));
    return __builtin_shufflevector(u0, u1, 0, 1, 2, 3, 8, 9, 10, 11) +
           __builtin_shufflevector(u0, u1, 4, 5, 6, 7, 12, 13, 14, 15);
}

/* out[e] (+)= dot(a[0:n], Bm[idx[e] * ldb + 0:n]) for e in [e0, e1): eight nonzeros at a time share every
 * load of a (a linear layer's 24 samples, or a run of a convolution's output row) and one reduction tree */
static inline void sp_row_dots(float *restrict out, int accumulate, int64_t n, int32_t e0, int32_t e1,
                            const int32_t *restrict idx, const float *restrict a, const float *Bm, int64_t ldb) {
    int32_t e = e0;
    for (; e + 8 <= e1; e += 8) {
        const float *p0 = Bm + (int64_t)idx[e] * ldb, *p1 = Bm + (int64_t)idx[e + 1] * ldb;
        const float *p2 = Bm + (int64_t)idx[e + 2] * ldb, *p3 = Bm + (int64_t)idx[e + 3] * ldb;
        const float *p4 = Bm + (int64_t)idx[e + 4] * ldb, *p5 = Bm + (int64_t)idx[e + 5] * ldb;
        const float *p6 = Bm + (int64_t)idx[e + 6] * ldb, *p7 = Bm + (int64_t)idx[e + 7] * ldb;
        v8 s0 = splat8(0.0f), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
        int64_t j = 0;
        for (; j + 8 <= n; j += 8) {
            const v8 x = ld8(a + j);
            s0 += x * ld8(p0 + j);
            s1 += x * ld8(p1 + j);
            s2 += x * ld8(p2 + j);
            s3 += x * ld8(p3 + j);
            s4 += x * ld8(p4 + j);
            s5 += x * ld8(p5 + j);
            s6 += x * ld8(p6 + j);
            s7 += x * ld8(p7 + j);
        }
        v8 r = hsum8x8(s0, s1, s2, s3, s4, s5, s6, s7);
        if (j < n) {
            float t[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
            for (; j < n; j++) {
                t[0] += a[j] * p0[j];
                t[1] += a[j] * p1[j];
                t[2] += a[j] * p2[j];
                t[3] += a[j] * p3[j];
                t[4] += a[j] * p4[j];
                t[5] += a[j] * p5[j];
                t[6] += a[j] * p6[j];
                t[7] += a[j] * p7[j];
            }
            r += ld8(t);
        }
        if (accumulate) r += ld8(out + e);
        st8(out + e, r);
    }
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

/* one 8-column step of a kept weight in the fused backward: its dot product, and its share of dX^T */
static inline void grad8(v8 x, const float *p, float *d, float w, v8 *s) {
    *s += x * ld8(p);
    st8(d, ld8(d) + splat8(w) * x);
}

/* out[e] = dot(a[0:n], Bm[idx[e]*ldb + 0:n]) and D[idx[e]*ldd + 0:n] += val[e] * a[0:n] for e in [e0, e1):
 * eight kept weights at a time share every load of a and one reduction tree */
static inline void sp_row_grad(float *restrict out, float *restrict D, int64_t ldd, int64_t n, int32_t e0, int32_t e1,
                               const int32_t *restrict idx, const float *restrict val, const float *restrict a,
                               const float *restrict Bm, int64_t ldb) {
    int32_t e = e0;
    for (; e + 8 <= e1; e += 8) {
        const float *p[8];
        float *d[8];
        for (int q = 0; q < 8; q++) {
            p[q] = Bm + (int64_t)idx[e + q] * ldb;
            d[q] = D + (int64_t)idx[e + q] * ldd;
        }
        const float *w = val + e;
        v8 s0 = splat8(0.0f), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
        int64_t j = 0;
        for (; j + 8 <= n; j += 8) {
            const v8 x = ld8(a + j);
            grad8(x, p[0] + j, d[0] + j, w[0], &s0);
            grad8(x, p[1] + j, d[1] + j, w[1], &s1);
            grad8(x, p[2] + j, d[2] + j, w[2], &s2);
            grad8(x, p[3] + j, d[3] + j, w[3], &s3);
            grad8(x, p[4] + j, d[4] + j, w[4], &s4);
            grad8(x, p[5] + j, d[5] + j, w[5], &s5);
            grad8(x, p[6] + j, d[6] + j, w[6], &s6);
            grad8(x, p[7] + j, d[7] + j, w[7], &s7);
        }
        v8 r = hsum8x8(s0, s1, s2, s3, s4, s5, s6, s7);
        if (j < n) {
            float t[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
            for (; j < n; j++)
                for (int q = 0; q < 8; q++) {
                    t[q] += a[j] * p[q][j];
                    d[q][j] += w[q] * a[j];
                }
            r += ld8(t);
        }
        st8(out + e, r);
    }
    for (; e < e1; e++) {
        const float *p = Bm + (int64_t)idx[e] * ldb;
        float *d = D + (int64_t)idx[e] * ldd;
        v8 s = splat8(0.0f);
        int64_t j = 0;
        for (; j + 8 <= n; j += 8) grad8(ld8(a + j), p + j, d + j, val[e], &s);
        float r = hsum4(fold8(s));
        for (; j < n; j++) {
            r += a[j] * p[j];
            d[j] += val[e] * a[j];
        }
        out[e] = r;
    }
}

#include "spmm_tiled.h"

void pf_spmm_generic(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
                     const int32_t *perm, const float *val, const float *B, int64_t ldb, int64_t rstep, float *C,
                     int64_t ldc) {
    sp_spmm(m0, m1, rows, N, ptr, idx, perm, val, B, ldb, rstep, C, ldc);
}

void pf_sddmm_generic(int32_t m0, int32_t m1, int32_t rows, int64_t N, const int32_t *ptr, const int32_t *idx,
                      const float *A, int64_t lda, const float *B, int64_t ldb, int64_t rstep, float *out) {
    sp_sddmm(m0, m1, rows, N, ptr, idx, A, lda, B, ldb, rstep, out);
}

void pf_spgrad_generic(int32_t m0, int32_t m1, int64_t N, const int32_t *ptr, const int32_t *idx, const float *val,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float *out, float *D, int64_t ldd) {
    sp_spgrad(m0, m1, N, ptr, idx, val, A, lda, B, ldb, out, D, ldd);
}
