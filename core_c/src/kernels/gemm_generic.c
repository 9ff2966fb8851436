/* gemm_generic.c - dense GEMM in portable C for builds without a BLAS. No packing (kernels never allocate):
 * each transpose case gets the loop order whose inner loop runs over contiguous memory, vectorised with
 * GCC/Clang vector extensions, with C held in 4-row x 256-column tiles so that each row of op(B) loaded
 * from memory serves four rows of C. */
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

enum { NT = 256, KT = 256 };

static inline float a_at(int trans_a, const float *A, int64_t lda, int64_t m, int64_t k) {
    return trans_a ? A[k * lda + m] : A[m * lda + k];
}

/* C rows [m0, m1) = beta*C (beta == 0 overwrites), then the product is accumulated. */
static void scale_rows(int64_t m0, int64_t m1, int64_t N, float beta, float *C, int64_t ldc) {
    for (int64_t m = m0; m < m1; m++) {
        float *c = C + m * ldc;
        if (beta == 0.0f)
            memset(c, 0, (size_t)N * sizeof(float));
        else if (beta != 1.0f)
            for (int64_t n = 0; n < N; n++) c[n] *= beta;
    }
}

/* op(B) = B (K x N): C[m, :] += alpha * op(A)[m, k] * B[k, :], four rows of C at a time. */
static void gemm_axpy(int trans_a, int64_t m0, int64_t m1, int64_t N, int64_t K, float alpha, const float *A,
                      int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc) {
    for (int64_t n0 = 0; n0 < N; n0 += NT) {
        const int64_t n = N - n0 < NT ? N - n0 : NT;
        int64_t m = m0;
        for (; m + 4 <= m1; m += 4) {
            float *c0 = C + m * ldc + n0, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;
            for (int64_t k = 0; k < K; k++) {
                const float *b = B + k * ldb + n0;
                const float a0 = alpha * a_at(trans_a, A, lda, m, k), a1 = alpha * a_at(trans_a, A, lda, m + 1, k);
                const float a2 = alpha * a_at(trans_a, A, lda, m + 2, k), a3 = alpha * a_at(trans_a, A, lda, m + 3, k);
                const v8 v0 = splat8(a0), v1 = splat8(a1), v2 = splat8(a2), v3 = splat8(a3);
                int64_t j = 0;
                for (; j + 8 <= n; j += 8) {
                    const v8 bv = ld8(b + j);
                    st8(c0 + j, ld8(c0 + j) + v0 * bv);
                    st8(c1 + j, ld8(c1 + j) + v1 * bv);
                    st8(c2 + j, ld8(c2 + j) + v2 * bv);
                    st8(c3 + j, ld8(c3 + j) + v3 * bv);
                }
                for (; j < n; j++) {
                    c0[j] += a0 * b[j];
                    c1[j] += a1 * b[j];
                    c2[j] += a2 * b[j];
                    c3[j] += a3 * b[j];
                }
            }
        }
        for (; m < m1; m++) {
            float *c = C + m * ldc + n0;
            for (int64_t k = 0; k < K; k++) {
                const float *b = B + k * ldb + n0;
                const float a = alpha * a_at(trans_a, A, lda, m, k);
                const v8 v = splat8(a);
                int64_t j = 0;
                for (; j + 8 <= n; j += 8) st8(c + j, ld8(c + j) + v * ld8(b + j));
                for (; j < n; j++) c[j] += a * b[j];
            }
        }
    }
}

static inline float dot(const float *a, const float *b, int64_t n) {
    v8 s0 = splat8(0.0f), s1 = s0;
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        s0 += ld8(a + j) * ld8(b + j);
        s1 += ld8(a + j + 8) * ld8(b + j + 8);
    }
    for (; j + 8 <= n; j += 8) s0 += ld8(a + j) * ld8(b + j);
    float s = hsum8(s0 + s1);
    for (; j < n; j++) s += a[j] * b[j];
    return s;
}

/* op(B) = B^T (B is N x K): C[m, n] += alpha * dot(op(A)[m, :], B[n, :]); a transposed A row is gathered
 * into a stack buffer KT values at a time. */
static void gemm_dot(int trans_a, int64_t m0, int64_t m1, int64_t N, int64_t K, float alpha, const float *A,
                     int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc) {
    float buf[KT];
    for (int64_t m = m0; m < m1; m++) {
        for (int64_t k0 = 0; k0 < K; k0 += KT) {
            const int64_t kn = K - k0 < KT ? K - k0 : KT;
            const float *a = A + m * lda + k0;
            if (trans_a) {
                for (int64_t k = 0; k < kn; k++) buf[k] = A[(k0 + k) * lda + m];
                a = buf;
            }
            float *c = C + m * ldc;
            for (int64_t n = 0; n < N; n++) c[n] += alpha * dot(a, B + n * ldb + k0, kn);
        }
    }
}

void pf_gemm_generic(int trans_a, int trans_b, int64_t m0, int64_t m1, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    assert(m0 <= m1 && N >= 0 && K >= 0);
    scale_rows(m0, m1, N, beta, C, ldc);
    if (K == 0 || alpha == 0.0f) return;
    if (!trans_b)
        gemm_axpy(trans_a, m0, m1, N, K, alpha, A, lda, B, ldb, C, ldc);
    else
        gemm_dot(trans_a, m0, m1, N, K, alpha, A, lda, B, ldb, C, ldc);
}
