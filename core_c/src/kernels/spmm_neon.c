/* spmm_neon.c - the sparse kernels for aarch64 in NEON intrinsics: the vector operations and row kernels that
 * spmm_tiled.h's strips and drivers are built on.
 *
 * SpMM strips of 32 columns (eight 4-float vectors in each of two accumulator sets, 16 registers); a remainder
 * of 4 to 28 columns in one more strip, then a scalar tail through fmaf, the strips' rounding.
 * SDDMM and the fused backward take 4 nonzeros of a row at once: one load of the dense row of A serves four
 * dot products, and a pairwise-add tree reduces the four accumulators into one vector of four results. */
#include <arm_neon.h>
#include <assert.h>
#include <math.h>
#include <stddef.h>

#include "kernels.h"

/* the vector operations of spmm_tiled.h's strips: 4 floats, up to 8 vectors a strip (16 accumulators) */
typedef float32x4_t sp_vec;
enum { SP_VL = 4, SP_MAXV = 8 };
static inline float32x4_t sp_zero(void) { return vdupq_n_f32(0.0f); }
static inline float32x4_t sp_load(const float *p) { return vld1q_f32(p); }
static inline void sp_store(float *p, float32x4_t v) { vst1q_f32(p, v); }
static inline float32x4_t sp_fma(float32x4_t acc, float32x4_t x, float w) { return vfmaq_n_f32(acc, x, w); }
static inline float32x4_t sp_add(float32x4_t x, float32x4_t y) { return vaddq_f32(x, y); }

/* columns [j, n) of sp_row_product, fewer than 4: scalar, through fmaf (the strips' rounding) */
static inline void sp_row_tail(float *restrict c, int64_t j, int64_t n, int32_t e0, int32_t e1,
                               const int32_t *restrict idx, const int32_t *restrict perm, const float *restrict val,
                               const float *Bm, int64_t ldb) {
    for (; j < n; j++) {
        float s0 = 0.0f, s1 = 0.0f;
        int32_t e = e0;
        for (; e + 2 <= e1; e += 2) {
            s0 = fmaf(val[perm ? perm[e] : e], Bm[(int64_t)idx[e] * ldb + j], s0);
            s1 = fmaf(val[perm ? perm[e + 1] : e + 1], Bm[(int64_t)idx[e + 1] * ldb + j], s1);
        }
        if (e < e1) s0 = fmaf(val[perm ? perm[e] : e], Bm[(int64_t)idx[e] * ldb + j], s0);
        c[j] = s0 + s1;
    }
}


static inline float sp_hsum(float32x4_t x) { return vaddvq_f32(x); }
static inline float32x4_t sp_fmav(float32x4_t acc, float32x4_t x, float32x4_t y) { return vfmaq_f32(acc, x, y); }
static inline float sp_fmas(float acc, float x, float y) { return fmaf(x, y, acc); }

/* {sum(x0), sum(x1), sum(x2), sum(x3)} */
static inline float32x4_t hsum4x4(float32x4_t x0, float32x4_t x1, float32x4_t x2, float32x4_t x3) {
    return vpaddq_f32(vpaddq_f32(x0, x1), vpaddq_f32(x2, x3));
}

/* Four kept weights of a row at once (spmm_tiled.h's SDDMM and fused backward), over n, a multiple of 4: every
 * load of a serves four dot products, and a pairwise-add tree reduces the four accumulators. */
enum { SP_GROUP = 4 };

/* r[q] = dot(a[0:n], p[q][0:n]); two accumulator sets over 8 columns hide the FMA latency */
static inline void sp_group_dots(float *restrict r, const float *const *p, const float *restrict a, int64_t n) {
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0, t0 = s0, t1 = s0, t2 = s0, t3 = s0;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const float32x4_t x = vld1q_f32(a + j), y = vld1q_f32(a + j + 4);
        s0 = vfmaq_f32(s0, x, vld1q_f32(p[0] + j));
        s1 = vfmaq_f32(s1, x, vld1q_f32(p[1] + j));
        s2 = vfmaq_f32(s2, x, vld1q_f32(p[2] + j));
        s3 = vfmaq_f32(s3, x, vld1q_f32(p[3] + j));
        t0 = vfmaq_f32(t0, y, vld1q_f32(p[0] + j + 4));
        t1 = vfmaq_f32(t1, y, vld1q_f32(p[1] + j + 4));
        t2 = vfmaq_f32(t2, y, vld1q_f32(p[2] + j + 4));
        t3 = vfmaq_f32(t3, y, vld1q_f32(p[3] + j + 4));
    }
    if (j < n) {
        const float32x4_t x = vld1q_f32(a + j);
        s0 = vfmaq_f32(s0, x, vld1q_f32(p[0] + j));
        s1 = vfmaq_f32(s1, x, vld1q_f32(p[1] + j));
        s2 = vfmaq_f32(s2, x, vld1q_f32(p[2] + j));
        s3 = vfmaq_f32(s3, x, vld1q_f32(p[3] + j));
    }
    vst1q_f32(r, hsum4x4(vaddq_f32(s0, t0), vaddq_f32(s1, t1), vaddq_f32(s2, t2), vaddq_f32(s3, t3)));
}

/* one 4-column step of a kept weight in the fused backward: its dot product, and its share of dX^T */
static inline float32x4_t grad4(float32x4_t x, const float *p, float *d, float w, float32x4_t s) {
    vst1q_f32(d, vfmaq_n_f32(vld1q_f32(d), x, w));
    return vfmaq_f32(s, x, vld1q_f32(p));
}

/* r[q] = dot(a[0:n], p[q][0:n]) and d[q][0:n] += w[q] * a[0:n] */
static inline void sp_group_grad(float *restrict r, const float *const *p, float *const *d, const float *w,
                                 const float *restrict a, int64_t n) {
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t j = 0; j < n; j += 4) {
        const float32x4_t x = vld1q_f32(a + j);
        s0 = grad4(x, p[0] + j, d[0] + j, w[0], s0);
        s1 = grad4(x, p[1] + j, d[1] + j, w[1], s1);
        s2 = grad4(x, p[2] + j, d[2] + j, w[2], s2);
        s3 = grad4(x, p[3] + j, d[3] + j, w[3], s3);
    }
    vst1q_f32(r, hsum4x4(s0, s1, s2, s3));
}

#define SP_NAME(op) pf_##op##_neon
#include "spmm_tiled.h"
