/* test_kernels.c - every optimised kernel variant against the reference kernels, on random shapes that
 * include odd and tiny sizes, row sub-ranges, leading dimensions wider than the rows, every transpose case,
 * beta in {0, 0.5, 1} (beta 0 over NaN-filled outputs), and sparse densities 0, 0.001, 0.05, 0.5 and 1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "testutil.h"

static const int64_t SIZES[] = {1, 2, 3, 7, 8, 17, 33, 64, 100, 257};
static const double DENSITIES[] = {0.0, 0.001, 0.05, 0.5, 1.0};
enum { N_SIZES = sizeof SIZES / sizeof SIZES[0], N_DENS = sizeof DENSITIES / sizeof DENSITIES[0] };

static int64_t pick(tu_rng *r) { return SIZES[tu_int(r, N_SIZES)]; }

typedef struct csr {
    int32_t M, K, nnz;
    int32_t *rowptr, *col, *colptr, *row, *perm;
    float *val;
} csr;

static csr make_csr(tu_rng *r, int32_t M, int32_t K, double density) {
    csr s = {M, K, 0, NULL, NULL, NULL, NULL, NULL, NULL};
    uint8_t *mask = malloc((size_t)M * (size_t)K);
    tu_mask(r, mask, (int64_t)M * K, density);
    s.rowptr = calloc((size_t)M + 1, sizeof(int32_t));
    s.colptr = calloc((size_t)K + 1, sizeof(int32_t));
    for (int64_t i = 0; i < (int64_t)M * K; i++) s.nnz += mask[i];
    s.col = malloc(((size_t)s.nnz + 1) * sizeof(int32_t));
    s.row = malloc(((size_t)s.nnz + 1) * sizeof(int32_t));
    s.perm = malloc(((size_t)s.nnz + 1) * sizeof(int32_t));
    s.val = malloc(((size_t)s.nnz + 1) * sizeof(float));
    int32_t e = 0;
    for (int32_t m = 0; m < M; m++) {
        s.rowptr[m] = e;
        for (int32_t k = 0; k < K; k++)
            if (mask[(int64_t)m * K + k]) {
                s.col[e] = k;
                s.val[e] = tu_uniform(r, -1.0f, 1.0f);
                s.colptr[k + 1]++;
                e++;
            }
    }
    s.rowptr[M] = e;
    for (int32_t k = 0; k < K; k++) s.colptr[k + 1] += s.colptr[k];
    int32_t *fill = malloc(((size_t)K + 1) * sizeof(int32_t));
    memcpy(fill, s.colptr, ((size_t)K + 1) * sizeof(int32_t));
    for (int32_t m = 0; m < M; m++)
        for (int32_t q = s.rowptr[m]; q < s.rowptr[m + 1]; q++) {
            const int32_t slot = fill[s.col[q]]++;
            s.row[slot] = m;
            s.perm[slot] = q;
        }
    free(fill);
    free(mask);
    return s;
}

static void free_csr(csr *s) {
    free(s->rowptr);
    free(s->col);
    free(s->colptr);
    free(s->row);
    free(s->perm);
    free(s->val);
}

static float *randbuf(tu_rng *r, int64_t n) {
    float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    tu_fill(r, x, n, -1.0f, 1.0f);
    return x;
}

static void test_gemm(const pf_kernels *k, tu_rng *r, int trials) {
    for (int t = 0; t < trials; t++) {
        const int ta = t & 1, tb = (t >> 1) & 1;
        const int64_t M = pick(r), N = pick(r), K = pick(r);
        const int64_t lda = (ta ? M : K) + tu_int(r, 3), ldb = (tb ? K : N) + tu_int(r, 3), ldc = N + tu_int(r, 3);
        const float betas[] = {0.0f, 0.5f, 1.0f};
        const float beta = betas[tu_int(r, 3)], alpha = t % 5 == 0 ? 0.75f : 1.0f;
        float *A = randbuf(r, (ta ? K : M) * lda), *B = randbuf(r, (tb ? N : K) * ldb);
        float *C0 = randbuf(r, M * ldc), *C1 = malloc((size_t)(M * ldc) * sizeof(float));
        if (beta == 0.0f)
            for (int64_t i = 0; i < M * ldc; i++) C0[i] = NAN;
        memcpy(C1, C0, (size_t)(M * ldc) * sizeof(float));
        const int64_t m0 = M > 2 ? tu_int(r, (int32_t)(M / 2)) : 0, m1 = M - (M > 3 ? tu_int(r, 2) : 0);
        pf_gemm_ref(ta, tb, m0, m1, N, K, alpha, A, lda, B, ldb, beta, C0, ldc);
        k->gemm(ta, tb, m0, m1, N, K, alpha, A, lda, B, ldb, beta, C1, ldc);
        for (int64_t m = m0; m < m1; m++) {
            const double e = tu_err(C1 + m * ldc, C0 + m * ldc, N, 1e-5 * (double)K, 1e-4);
            CHECK(e <= 1.0, "%s gemm ta=%d tb=%d M=%lld N=%lld K=%lld beta=%g row %lld: error %g", k->name, ta, tb,
                  (long long)M, (long long)N, (long long)K, (double)beta, (long long)m, e);
        }
        /* rows outside the range are untouched (compare bit patterns: they may hold NaN) */
        for (int64_t m = 0; m < M; m++)
            if (m < m0 || m >= m1)
                CHECK(memcmp(C0 + m * ldc, C1 + m * ldc, (size_t)N * sizeof(float)) == 0,
                      "%s gemm wrote outside rows [%lld, %lld)", k->name, (long long)m0, (long long)m1);
        free(A);
        free(B);
        free(C0);
        free(C1);
    }
}

static void test_sparse(const pf_kernels *k, tu_rng *r, int trials) {
    for (int t = 0; t < trials; t++) {
        const double density = DENSITIES[t % N_DENS];
        const int32_t M = (int32_t)pick(r), K = (int32_t)pick(r);
        const int64_t N = t % 7 == 0 ? 3920 : pick(r);
        csr s = make_csr(r, M, K, density);
        float *B = randbuf(r, (int64_t)K * N), *D = randbuf(r, (int64_t)M * N);
        float *C0 = randbuf(r, (int64_t)M * N), *C1 = randbuf(r, (int64_t)M * N);
        float *T0 = randbuf(r, (int64_t)K * N), *T1 = randbuf(r, (int64_t)K * N);
        float *S0 = randbuf(r, s.nnz), *S1 = randbuf(r, s.nnz);
        const int32_t m0 = M > 2 ? tu_int(r, M / 2) : 0, k0 = K > 2 ? tu_int(r, K / 2) : 0;
        pf_spmm_ref(m0, M, N, s.rowptr, s.col, s.val, B, N, C0, N);
        k->spmm(m0, M, N, s.rowptr, s.col, s.val, B, N, C1, N);
        double e = tu_err(C1 + (int64_t)m0 * N, C0 + (int64_t)m0 * N, (M - m0) * N, 1e-5 * K, 1e-4);
        CHECK(e <= 1.0, "%s spmm M=%d K=%d N=%lld density %g: error %g", k->name, M, K, (long long)N, density, e);
        pf_spmm_t_ref(k0, K, N, s.colptr, s.row, s.perm, s.val, D, N, T0, N);
        k->spmm_t(k0, K, N, s.colptr, s.row, s.perm, s.val, D, N, T1, N);
        e = tu_err(T1 + (int64_t)k0 * N, T0 + (int64_t)k0 * N, (K - k0) * N, 1e-5 * M, 1e-4);
        CHECK(e <= 1.0, "%s spmm_t M=%d K=%d N=%lld density %g: error %g", k->name, M, K, (long long)N, density, e);
        pf_sddmm_ref(m0, M, N, s.rowptr, s.col, D, N, B, N, S0);
        k->sddmm(m0, M, N, s.rowptr, s.col, D, N, B, N, S1);
        const int32_t e0 = s.rowptr[m0];
        e = tu_err(S1 + e0, S0 + e0, s.nnz - e0, 1e-5 * (double)N, 1e-4);
        CHECK(e <= 1.0, "%s sddmm M=%d K=%d N=%lld density %g: error %g", k->name, M, K, (long long)N, density, e);
        free(B);
        free(D);
        free(C0);
        free(C1);
        free(T0);
        free(T1);
        free(S0);
        free(S1);
        free_csr(&s);
    }
}

static void test_im2col(const pf_kernels *k, tu_rng *r, int trials) {
    for (int t = 0; t < trials; t++) {
        const int32_t C = 1 + tu_int(r, 4), H = 1 + tu_int(r, 12), W = 1 + tu_int(r, 12);
        const int32_t kh = 1 + tu_int(r, 5), kw = 1 + tu_int(r, 5), sh = 1 + tu_int(r, 3), sw = 1 + tu_int(r, 3);
        const int32_t ph = tu_int(r, kh), pw = tu_int(r, kw);
        if (H + 2 * ph < kh || W + 2 * pw < kw) continue;
        const int32_t OH = (H + 2 * ph - kh) / sh + 1, OW = (W + 2 * pw - kw) / sw + 1;
        const int64_t Kc = (int64_t)C * kh * kw, P = (int64_t)OH * OW, ld = P + tu_int(r, 5);
        float *x = randbuf(r, (int64_t)C * H * W), *c0 = randbuf(r, Kc * ld), *c1 = malloc((size_t)(Kc * ld) * 4);
        memcpy(c1, c0, (size_t)(Kc * ld) * sizeof(float));
        pf_im2col_ref(x, C, H, W, kh, kw, sh, sw, ph, pw, c0, ld);
        k->im2col(x, C, H, W, kh, kw, sh, sw, ph, pw, c1, ld);
        CHECK(memcmp(c0, c1, (size_t)(Kc * ld) * sizeof(float)) == 0, "%s im2col C=%d H=%d W=%d k=%dx%d s=%dx%d p=%dx%d",
              k->name, C, H, W, kh, kw, sh, sw, ph, pw);
        float *d0 = randbuf(r, (int64_t)C * H * W), *d1 = malloc((size_t)C * H * W * 4);
        memcpy(d1, d0, (size_t)C * H * W * sizeof(float));
        pf_col2im_ref(c0, ld, C, H, W, kh, kw, sh, sw, ph, pw, d0);
        k->col2im(c0, ld, C, H, W, kh, kw, sh, sw, ph, pw, d1);
        const double e = tu_err(d1, d0, (int64_t)C * H * W, 1e-5, 1e-5);
        CHECK(e <= 1.0, "%s col2im C=%d H=%d W=%d k=%dx%d s=%dx%d p=%dx%d: error %g", k->name, C, H, W, kh, kw, sh, sw,
              ph, pw, e);
        free(x);
        free(c0);
        free(c1);
        free(d0);
        free(d1);
    }
}

int main(void) {
    int count = 0;
    const pf_kernels *const *variants = pf_kernel_variants(&count);
    CHECK(count >= 2 && variants[0] == &pf_kernels_ref, "the reference must come first, then >= 1 variant");
    CHECK(pf_kernels_best() != &pf_kernels_ref, "the library must not run the reference kernels");
    for (int v = 1; v < count; v++) {
        tu_rng r = {(uint64_t)(1234 + v)};
        const int before = tu_failures;
        test_gemm(variants[v], &r, 160);
        test_sparse(variants[v], &r, 120);
        test_im2col(variants[v], &r, 300);
        printf("kernels %-8s gemm, spmm, spmm_t, sddmm, im2col, col2im vs reference: %s\n", variants[v]->name,
               tu_failures == before ? "ok" : "FAILED");
    }
    printf("%d failures\n", tu_failures);
    return tu_failures ? 1 : 0;
}
