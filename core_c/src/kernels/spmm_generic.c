/* spmm_generic.c - the sparse kernels in portable C, vectorised along N with GCC/Clang vector extensions (AVX2
 * under -march=native, SSE2 or NEON registers in pairs elsewhere): the vector operations and row kernels that
 * spmm_tiled.h's strips and drivers are built on.
 *
 * SpMM strips of 32 columns (four 8-float vectors in each of two accumulator sets); a remainder of 24, 16 or 8
 * in one more strip, then 4 and scalar tails with the same operations in the same order.
 * SDDMM and the fused backward take eight nonzeros of a row at once: one load of the dense row of A serves
 * eight products, and one tree of pairwise sums reduces the eight accumulators. */
/* built with -ffp-contract=off (CMakeLists.txt): every a*b+c is vec_generic.h's fma8/fma4/fmas, one fused
 * operation on x86 with FMA3 and a rounded product then a rounded sum elsewhere, in every strip and tail alike,
 * whatever the compiler's inlining and vectorisation choices. */

#include <assert.h>
#include <stddef.h>
#include <string.h>

#include "kernels.h"
#include "vec_generic.h"

/* the vector operations of spmm_tiled.h's strips: 8 floats, up to 4 vectors a strip (8 accumulators) */
typedef v8 sp_vec;
enum { SP_VL = 8, SP_MAXV = 4 };
static inline v8 sp_zero(void) { return splat8(0.0f); }
static inline v8 sp_load(const float *p) { return ld8(p); }
static inline void sp_store(float *p, v8 v) { st8(p, v); }
static inline v8 sp_fma(v8 acc, v8 x, float w) { return fma8(splat8(w), x, acc); }
static inline v8 sp_add(v8 x, v8 y) { return x + y; }

#define W_(e) val[perm ? perm[e] : (e)]
#define ROW_(e) (Bm + (int64_t)idx[e] * ldb)

/* columns [j, n) of sp_row_product, fewer than 8: by 4, then one at a time in lane 0 of a vector (the same
 * operations, in the same order, as a strip) */
static inline void sp_row_tail(float *restrict c, int64_t j, int64_t n, int32_t e0, int32_t e1,
                               const int32_t *restrict idx, const int32_t *restrict perm, const float *restrict val,
                               const float *Bm, int64_t ldb) {
    for (; j + 4 <= n; j += 4) {
        v4 a0 = splat4(0.0f), b0 = a0;
        int32_t e = e0;
        for (; e + 2 <= e1; e += 2) {
            a0 = fma4(splat4(W_(e)), ld4(ROW_(e) + j), a0);
            b0 = fma4(splat4(W_(e + 1)), ld4(ROW_(e + 1) + j), b0);
        }
        if (e < e1) a0 = fma4(splat4(W_(e)), ld4(ROW_(e) + j), a0);
        st4(c + j, a0 + b0);
    }
    for (; j < n; j++) {
        v4 a0 = splat4(0.0f), b0 = a0;
        int32_t e = e0;
        for (; e + 2 <= e1; e += 2) {
            a0 = fma4(splat4(W_(e)), (v4){ROW_(e)[j], 0.0f, 0.0f, 0.0f}, a0);
            b0 = fma4(splat4(W_(e + 1)), (v4){ROW_(e + 1)[j], 0.0f, 0.0f, 0.0f}, b0);
        }
        if (e < e1) a0 = fma4(splat4(W_(e)), (v4){ROW_(e)[j], 0.0f, 0.0f, 0.0f}, a0);
        c[j] = (a0 + b0)[0];
    }
}

#undef W_
#undef ROW_

static inline v4 fold8(v8 x) { return (v4){x[0] + x[4], x[1] + x[5], x[2] + x[6], x[3] + x[7]}; }
static inline float sp_hsum(v8 x) {
    const v4 y = fold8(x);
    return (y[0] + y[2]) + (y[1] + y[3]);
}
static inline v8 sp_fmav(v8 acc, v8 x, v8 y) { return fma8(x, y, acc); }
static inline float sp_fmas(float acc, float x, float y) { return fmas(x, y, acc); }

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

/* Eight kept weights of a row at once (spmm_tiled.h's SDDMM and fused backward), over n, a multiple of 8:
 * every load of a serves eight products, and one reduction tree gives the eight sums. */
enum { SP_GROUP = 8 };

/* r[q] = dot(a[0:n], p[q][0:n]) */
static inline void sp_group_dots(float *restrict r, const float *const *p, const float *restrict a, int64_t n) {
    v8 s0 = splat8(0.0f), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    for (int64_t j = 0; j < n; j += 8) {
        const v8 x = ld8(a + j);
        s0 = fma8(x, ld8(p[0] + j), s0);
        s1 = fma8(x, ld8(p[1] + j), s1);
        s2 = fma8(x, ld8(p[2] + j), s2);
        s3 = fma8(x, ld8(p[3] + j), s3);
        s4 = fma8(x, ld8(p[4] + j), s4);
        s5 = fma8(x, ld8(p[5] + j), s5);
        s6 = fma8(x, ld8(p[6] + j), s6);
        s7 = fma8(x, ld8(p[7] + j), s7);
    }
    st8(r, hsum8x8(s0, s1, s2, s3, s4, s5, s6, s7));
}

/* one 8-column step of a kept weight in the fused backward: its dot product, and its share of dX^T */
static inline void grad8(v8 x, const float *p, float *d, float w, v8 *s) {
    *s = fma8(x, ld8(p), *s);
    st8(d, fma8(splat8(w), x, ld8(d)));
}

/* r[q] = dot(a[0:n], p[q][0:n]) and d[q][0:n] += w[q] * a[0:n] */
static inline void sp_group_grad(float *restrict r, const float *const *p, float *const *d, const float *w,
                                 const float *restrict a, int64_t n) {
    v8 s0 = splat8(0.0f), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    for (int64_t j = 0; j < n; j += 8) {
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
    st8(r, hsum8x8(s0, s1, s2, s3, s4, s5, s6, s7));
}

#define SP_NAME(op) pf_##op##_generic
#include "spmm_tiled.h"
