/* spmm_generic.c - the sparse kernels in portable C, vectorised along N with GCC/Clang vector extensions
 * (AVX/AVX2 under -march=native, SSE2 otherwise).
 *
 * The products read one row of the dense operand per nonzero, so the dense operand's traffic dominates.
 * N is cut into column tiles so that a tile of the dense operand (rows x TILE) stays in the L2 cache while
 * all rows of W pass over it: each dense row chunk then comes from memory about once, not once per nonzero. */
#include <assert.h>
#include <string.h>

#include "kernels.h"

typedef float v8 __attribute__((vector_size(32)));

static inline v8 ld8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void st8(float *p, v8 v) { memcpy(p, &v, sizeof v); }
static inline v8 splat8(float x) { return (v8){x, x, x, x, x, x, x, x}; }
static inline float hsum8(v8 v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

/* Columns per tile: 1 KiB of every dense row, so an 800-row operand tile (Conv-2's conv2) is 800 KiB. */
enum { TILE = 256 };

// c[0:n] = sum_q v[q] * b_rows[q][0:n], over the q = e0..e1 nonzeros; 4 nonzeros at a time
static void axpy_rows(float *restrict c, int64_t n, int32_t e0, int32_t e1, const int32_t *col, const int32_t *perm,
                      const float *val, const float *B, int64_t ldb, int64_t n0, int overwrite) {
    if (overwrite) memset(c, 0, (size_t)n * sizeof(float));
    int32_t e = e0;
    for (; e + 4 <= e1; e += 4) {
        const float w0 = val[perm ? perm[e] : e], w1 = val[perm ? perm[e + 1] : e + 1];
        const float w2 = val[perm ? perm[e + 2] : e + 2], w3 = val[perm ? perm[e + 3] : e + 3];
        const float *b0 = B + (int64_t)col[e] * ldb + n0, *b1 = B + (int64_t)col[e + 1] * ldb + n0;
        const float *b2 = B + (int64_t)col[e + 2] * ldb + n0, *b3 = B + (int64_t)col[e + 3] * ldb + n0;
        const v8 v0 = splat8(w0), v1 = splat8(w1), v2 = splat8(w2), v3 = splat8(w3);
        int64_t j = 0;
        for (; j + 8 <= n; j += 8)
            st8(c + j, ld8(c + j) + v0 * ld8(b0 + j) + v1 * ld8(b1 + j) + v2 * ld8(b2 + j) + v3 * ld8(b3 + j));
        for (; j < n; j++) c[j] += w0 * b0[j] + w1 * b1[j] + w2 * b2[j] + w3 * b3[j];
    }
    for (; e < e1; e++) {
        const float w0 = val[perm ? perm[e] : e];
        const float *b0 = B + (int64_t)col[e] * ldb + n0;
        const v8 v0 = splat8(w0);
        int64_t j = 0;
        for (; j + 8 <= n; j += 8) st8(c + j, ld8(c + j) + v0 * ld8(b0 + j));
        for (; j < n; j++) c[j] += w0 * b0[j];
    }
}

void pf_spmm_generic(int32_t m0, int32_t m1, int64_t N, const int32_t *rowptr, const int32_t *col, const float *val,
                     const float *B, int64_t ldb, float *C, int64_t ldc) {
    assert(m0 <= m1 && N >= 0);
    const int64_t tile = TILE;
    for (int64_t n0 = 0; n0 < N; n0 += tile) {
        const int64_t n = N - n0 < tile ? N - n0 : tile;
        for (int32_t m = m0; m < m1; m++)
            axpy_rows(C + (int64_t)m * ldc + n0, n, rowptr[m], rowptr[m + 1], col, NULL, val, B, ldb, n0, 1);
    }
}

void pf_spmm_t_generic(int32_t k0, int32_t k1, int64_t N, const int32_t *colptr, const int32_t *row,
                       const int32_t *perm, const float *val, const float *D, int64_t ldd, float *C, int64_t ldc) {
    assert(k0 <= k1 && N >= 0);
    const int64_t tile = TILE;
    for (int64_t n0 = 0; n0 < N; n0 += tile) {
        const int64_t n = N - n0 < tile ? N - n0 : tile;
        for (int32_t k = k0; k < k1; k++)
            axpy_rows(C + (int64_t)k * ldc + n0, n, colptr[k], colptr[k + 1], row, perm, val, D, ldd, n0, 1);
    }
}

// sum_j a[j] * b[j] with 4 vector accumulators
static inline float dot(const float *a, const float *b, int64_t n) {
    v8 s0 = splat8(0.0f), s1 = s0, s2 = s0, s3 = s0;
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        s0 += ld8(a + j) * ld8(b + j);
        s1 += ld8(a + j + 8) * ld8(b + j + 8);
        s2 += ld8(a + j + 16) * ld8(b + j + 16);
        s3 += ld8(a + j + 24) * ld8(b + j + 24);
    }
    for (; j + 8 <= n; j += 8) s0 += ld8(a + j) * ld8(b + j);
    float s = hsum8((s0 + s1) + (s2 + s3));
    for (; j < n; j++) s += a[j] * b[j];
    return s;
}

void pf_sddmm_generic(int32_t m0, int32_t m1, int64_t N, const int32_t *rowptr, const int32_t *col, const float *A,
                      int64_t lda, const float *B, int64_t ldb, float *out) {
    assert(m0 <= m1 && N >= 0);
    const int64_t tile = TILE;
    for (int64_t n0 = 0; n0 < N; n0 += tile) {
        const int64_t n = N - n0 < tile ? N - n0 : tile;
        for (int32_t m = m0; m < m1; m++) {
            const float *a = A + (int64_t)m * lda + n0;
            for (int32_t e = rowptr[m]; e < rowptr[m + 1]; e++) {
                const float d = dot(a, B + (int64_t)col[e] * ldb + n0, n);
                out[e] = n0 == 0 ? d : out[e] + d;
            }
        }
    }
    if (N == 0)
        for (int32_t e = rowptr[m0]; e < rowptr[m1]; e++) out[e] = 0.0f;
}
