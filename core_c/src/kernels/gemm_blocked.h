/*
 * gemm_blocked.h - the cache-blocked, packed GEMM driver shared by gemm_generic.c and gemm_neon.c; each file
 * supplies only its register-tiled micro-kernel. Included by those two files only (every function is static).
 *
 * Loops (BLIS order): K in blocks of GB_KC; rows of C in blocks of GB_MC whose op(A) block is packed into
 * MR-row panels (GB_MC x GB_KC floats, L2-resident); columns of C in NR-wide micro-panels of op(B), packed
 * one at a time (GB_KC x NR floats, L1-resident) and swept over every A panel of the block. Packing handles
 * the four transpose cases, so the micro-kernel always streams two contiguous panels. Edge panels are padded
 * with zeros; the micro-kernel then writes only the valid mr x nr corner.
 *
 * Kernels never allocate: the packing buffers live on the stack (about 90 KiB with the sizes below).
 * beta is applied while the first K block is stored (beta == 0 overwrites without reading C).
 *
 * Before including, define GB_MR, GB_NR and a micro-kernel
 *   static void gb_ukernel(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int mr, int nr,
 *                          float alpha, float beta, int first);
 * computing acc = sum_k a[k*MR + i] * b[k*NR + j] and storing, for i < mr, j < nr:
 *   first: c = alpha*acc + (beta == 0 ? 0 : beta*c);  otherwise c += alpha*acc.
 */
#ifndef PRUNEFL_GEMM_BLOCKED_H
#define PRUNEFL_GEMM_BLOCKED_H

#include <assert.h>
#include <string.h>

#include "kernels.h"

enum { GB_KC = 256, GB_MC = 72 }; /* 72 = 12 panels of 6 rows = 9 panels of 8 rows */

/* op(A)[m0 + i, k0 + k] for i < mc, k < kc into MR-row panels: panel p holds a[k*MR + i]. */
static void gb_pack_a(int trans_a, const float *A, int64_t lda, int64_t m0, int64_t mc, int64_t k0, int64_t kc,
                      float *restrict out) {
    for (int64_t p = 0; p < mc; p += GB_MR) {
        const int64_t mr = mc - p < GB_MR ? mc - p : GB_MR;
        float *restrict o = out + p * kc;
        if (trans_a) { /* A is K x M: the MR values of one k are contiguous */
            for (int64_t k = 0; k < kc; k++) {
                const float *a = A + (k0 + k) * lda + m0 + p;
                int64_t i = 0;
                for (; i < mr; i++) o[k * GB_MR + i] = a[i];
                for (; i < GB_MR; i++) o[k * GB_MR + i] = 0.0f;
            }
        } else {
            for (int64_t i = 0; i < mr; i++) {
                const float *a = A + (m0 + p + i) * lda + k0;
                for (int64_t k = 0; k < kc; k++) o[k * GB_MR + i] = a[k];
            }
            for (int64_t i = mr; i < GB_MR; i++)
                for (int64_t k = 0; k < kc; k++) o[k * GB_MR + i] = 0.0f;
        }
    }
}

/* op(B)[k0 + k, n0 + j] for k < kc, j < nr into one NR-wide panel b[k*NR + j]. */
static void gb_pack_b(int trans_b, const float *B, int64_t ldb, int64_t k0, int64_t kc, int64_t n0, int64_t nr,
                      float *restrict out) {
    if (!trans_b) { /* B is K x N: rows of the panel are contiguous */
        if (nr == GB_NR) {
            for (int64_t k = 0; k < kc; k++) memcpy(out + k * GB_NR, B + (k0 + k) * ldb + n0, GB_NR * sizeof(float));
        } else {
            for (int64_t k = 0; k < kc; k++) {
                const float *b = B + (k0 + k) * ldb + n0;
                int64_t j = 0;
                for (; j < nr; j++) out[k * GB_NR + j] = b[j];
                for (; j < GB_NR; j++) out[k * GB_NR + j] = 0.0f;
            }
        }
    } else { /* B is N x K: column j of the panel is a contiguous row of B */
        for (int64_t j = 0; j < nr; j++) {
            const float *b = B + (n0 + j) * ldb + k0;
            for (int64_t k = 0; k < kc; k++) out[k * GB_NR + j] = b[k];
        }
        for (int64_t j = nr; j < GB_NR; j++)
            for (int64_t k = 0; k < kc; k++) out[k * GB_NR + j] = 0.0f;
    }
}

static void gb_scale_rows(int64_t m0, int64_t m1, int64_t N, float beta, float *C, int64_t ldc) {
    for (int64_t m = m0; m < m1; m++) {
        float *c = C + m * ldc;
        if (beta == 0.0f)
            memset(c, 0, (size_t)N * sizeof(float));
        else if (beta != 1.0f)
            for (int64_t n = 0; n < N; n++) c[n] *= beta;
    }
}

static void gb_gemm(int trans_a, int trans_b, int64_t m0, int64_t m1, int64_t N, int64_t K, float alpha,
                    const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    assert(m0 <= m1 && N >= 0 && K >= 0);
    if (m1 <= m0 || N <= 0) return;
    if (K == 0 || alpha == 0.0f) {
        gb_scale_rows(m0, m1, N, beta, C, ldc);
        return;
    }
    float apack[GB_MC * GB_KC] __attribute__((aligned(64)));
    float bpack[GB_KC * GB_NR] __attribute__((aligned(64)));
    for (int64_t k0 = 0; k0 < K; k0 += GB_KC) {
        const int64_t kc = K - k0 < GB_KC ? K - k0 : GB_KC;
        const int first = k0 == 0;
        for (int64_t mb = m0; mb < m1; mb += GB_MC) {
            const int64_t mc = m1 - mb < GB_MC ? m1 - mb : GB_MC;
            gb_pack_a(trans_a, A, lda, mb, mc, k0, kc, apack);
            for (int64_t n0 = 0; n0 < N; n0 += GB_NR) {
                const int64_t nr = N - n0 < GB_NR ? N - n0 : GB_NR;
                gb_pack_b(trans_b, B, ldb, k0, kc, n0, nr, bpack);
                for (int64_t p = 0; p < mc; p += GB_MR) {
                    const int64_t mr = mc - p < GB_MR ? mc - p : GB_MR;
                    gb_ukernel(kc, apack + p * kc, bpack, C + (mb + p) * ldc + n0, ldc, (int)mr, (int)nr, alpha,
                               beta, first);
                }
            }
        }
    }
}

#endif /* PRUNEFL_GEMM_BLOCKED_H */
