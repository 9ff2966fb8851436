/* gemm_tail.h - the store of a partial micro-tile (mr < GB_MR or nr < GB_NR rows/columns at a matrix edge) from
 * its accumulators spilled to t, shared by the per-ISA GEMM micro-kernels. Include after defining GB_MR, GB_NR. */
#ifndef PRUNEFL_GEMM_TAIL_H
#define PRUNEFL_GEMM_TAIL_H

#include <stdint.h>

/* c[i][j] = alpha*t[i][j] (+ c[i][j] unless first; first with beta != 0: beta*c[i][j] + alpha*t[i][j]) */
static inline void gb_store_tail(float t[GB_MR][GB_NR], int mr, int nr, float alpha, float beta, int first, float *c,
                                 int64_t ldc) {
    for (int i = 0; i < mr; i++) {
        float *ci = c + i * ldc;
        for (int j = 0; j < nr; j++) {
            const float r = alpha * t[i][j];
            ci[j] = !first ? ci[j] + r : beta == 0.0f ? r : beta * ci[j] + r;
        }
    }
}

#endif
