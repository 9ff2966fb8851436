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

#endif /* PRUNEFL_VEC_GENERIC_H */
