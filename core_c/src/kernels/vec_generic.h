/* vec_generic.h - the GCC/Clang vector-extension types and unaligned loads/stores that the portable kernels
 * (gemm_generic.c, spmm_generic.c) are written on: 8 floats (one AVX register under -march=native, a pair of
 * SSE or NEON registers elsewhere) and 4 floats. Every function is static inline. */
#ifndef PRUNEFL_VEC_GENERIC_H
#define PRUNEFL_VEC_GENERIC_H

#include <string.h>

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

/* a*b + c: one fused multiply-add where the target has one (x86 FMA3), else a rounded product and a rounded
 * sum, in vectors and scalars alike, so that a file written on these rounds every lane and tail the same way
 * whatever the compiler's contraction choices (compile such files with -ffp-contract=off). */
#if defined(__FMA__) && defined(__AVX__)
#include <immintrin.h>
static inline v8 fma8(v8 a, v8 b, v8 c) { return (v8)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c); }
static inline v4 fma4(v4 a, v4 b, v4 c) { return (v4)_mm_fmadd_ps((__m128)a, (__m128)b, (__m128)c); }
static inline float fmas(float a, float b, float c) {
    return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
}
#else
static inline v8 fma8(v8 a, v8 b, v8 c) { return a * b + c; }
static inline v4 fma4(v4 a, v4 b, v4 c) { return a * b + c; }
static inline float fmas(float a, float b, float c) { return a * b + c; }
#endif

#endif /* PRUNEFL_VEC_GENERIC_H */
