/* test_kernels.c - every optimised kernel variant (pf_kernel_variants) against the reference kernels.
 *
 * GEMM: all four transpose cases x beta in {0, 0.5, 1} (beta 0 over NaN-filled C) x alpha in {1, 0.75, 0},
 * on shapes drawn from odd and tiny sizes plus sizes that cross the packed driver's block edges (K > 256,
 * rows > 72), K = 0, row sub-ranges m0 > 0, and leading dimensions wider than the rows. Sparse: densities 0,
 * 0.001, 0.05, 0.5 and 1, forced empty rows, N from 0 to past the column tiles, sub-ranges, wide leading
 * dimensions. im2col/col2im: random strides, paddings and kernel sizes, bit-exact. Everything outside the
 * rows and columns an op may write is checked bit for bit (it may hold NaN).
 *
 * The reference accumulates in double, the variants in float: errors are scaled by the summation length.
 * Self-contained (its own xorshift PRNG) and seeded, so every run tests the same cases. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

/* ---- PRNG and helpers ------------------------------------------------------------------------------ */

typedef struct {
    uint64_t s;
} xrng;

static uint64_t xnext(xrng *r) { /* xorshift64* */
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}
static int32_t xint(xrng *r, int32_t n) { return n <= 1 ? 0 : (int32_t)((xnext(r) >> 11) % (uint64_t)n); }
static double xunit(xrng *r) { return (double)(xnext(r) >> 11) * (1.0 / 9007199254740992.0); }
static float xval(xrng *r) { return (float)(2.0 * xunit(r) - 1.0); }

static int failures = 0;
static long checks = 0;

#define EXPECT(cond, ...)                                                                                      \
    do {                                                                                                       \
        checks++;                                                                                              \
        if (!(cond)) {                                                                                         \
            if (++failures <= 30) {                                                                            \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                           \
                fprintf(stderr, __VA_ARGS__);                                                                  \
                fprintf(stderr, "\n");                                                                         \
            }                                                                                                  \
        }                                                                                                      \
    } while (0)

static float *falloc(int64_t n) {
    float *x = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    if (!x) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return x;
}
static float *frand(xrng *r, int64_t n) {
    float *x = falloc(n);
    for (int64_t i = 0; i < n; i++) x[i] = xval(r);
    return x;
}
static float *fnan(int64_t n) {
    float *x = falloc(n);
    for (int64_t i = 0; i < n; i++) x[i] = NAN;
    return x;
}
static float *fcopy(const float *x, int64_t n) {
    float *y = falloc(n);
    memcpy(y, x, (size_t)(n > 0 ? n : 0) * sizeof(float));
    return y;
}

/* worst |got - want| / (atol + rtol |want|) over a strided block; NaN on either side is infinite */
static double block_err(const float *got, const float *want, int64_t rows, int64_t cols, int64_t ld, double atol) {
    double worst = 0.0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            const double g = got[i * ld + j], w = want[i * ld + j];
            if (isnan(g) || isnan(w)) return INFINITY;
            const double e = fabs(g - w) / (atol + 1e-4 * fabs(w));
            if (e > worst) worst = e;
        }
    return worst;
}

/* bits outside [r0, r1) x [0, cols) of a rows x ld buffer are unchanged */
static int untouched(const float *got, const float *orig, int64_t rows, int64_t ld, int64_t r0, int64_t r1,
                     int64_t cols) {
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < ld; j++)
            if ((i < r0 || i >= r1 || j >= cols) && memcmp(got + i * ld + j, orig + i * ld + j, sizeof(float)) != 0)
                return 0;
    return 1;
}

static double tol(int64_t len) { return 2e-6 * (double)(len > 0 ? len : 1) + 1e-6; }

typedef struct {
    const char *op;
    long cases;
    int failed;
} tally;

/* ---- GEMM ----------------------------------------------------------------------------------------- */

static const int64_t GSIZES[] = {1, 2, 3, 5, 7, 8, 16, 17, 33, 64, 73, 100, 257};
enum { N_GSIZES = sizeof GSIZES / sizeof GSIZES[0] };

static void gemm_case(const pf_kernels *kv, xrng *r, int ta, int tb, float alpha, float beta, int64_t M, int64_t N,
                      int64_t K, tally *t) {
    const int64_t lda = (ta ? M : K) + xint(r, 3), ldb = (tb ? K : N) + xint(r, 3), ldc = N + xint(r, 4);
    const int64_t arows = ta ? K : M, brows = tb ? N : K;
    float *A = frand(r, arows * lda), *B = frand(r, brows * ldb);
    float *C0 = beta == 0.0f ? fnan(M * ldc) : frand(r, M * ldc);
    float *orig = fcopy(C0, M * ldc), *C1 = fcopy(C0, M * ldc);
    const int64_t m0 = M > 2 ? xint(r, (int32_t)(M / 2) + 1) : 0, m1 = M - (M > 3 ? xint(r, 3) : 0);
    pf_gemm_ref(ta, tb, m0, m1, N, K, alpha, A, lda, B, ldb, beta, C0, ldc);
    kv->gemm(ta, tb, m0, m1, N, K, alpha, A, lda, B, ldb, beta, C1, ldc);
    const double e = block_err(C1 + m0 * ldc, C0 + m0 * ldc, m1 - m0, N, ldc, tol(K));
    const int ok = e <= 1.0, same = untouched(C1, orig, M, ldc, m0, m1, N);
    EXPECT(ok, "%s gemm ta=%d tb=%d M=%lld N=%lld K=%lld rows [%lld,%lld) alpha=%g beta=%g: error %g", kv->name, ta,
           tb, (long long)M, (long long)N, (long long)K, (long long)m0, (long long)m1, (double)alpha, (double)beta, e);
    EXPECT(same, "%s gemm ta=%d tb=%d M=%lld N=%lld K=%lld wrote outside rows [%lld,%lld) x columns [0,%lld)",
           kv->name, ta, tb, (long long)M, (long long)N, (long long)K, (long long)m0, (long long)m1, (long long)N);
    t->cases++;
    t->failed |= !ok || !same;
    free(A);
    free(B);
    free(C0);
    free(C1);
    free(orig);
}

static void test_gemm(const pf_kernels *kv, xrng *r, tally *t) {
    static const float betas[] = {0.0f, 0.5f, 1.0f}, alphas[] = {1.0f, 0.75f};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int bi = 0; bi < 3; bi++) {
                for (int rep = 0; rep < 10; rep++) {
                    int64_t M = GSIZES[xint(r, N_GSIZES)], N = GSIZES[xint(r, N_GSIZES)],
                            K = GSIZES[xint(r, N_GSIZES)];
                    if (M * N * K > 400000) K = GSIZES[xint(r, 6)]; /* keep the double-precision reference quick */
                    gemm_case(kv, r, ta, tb, alphas[rep & 1], betas[bi], M, N, K, t);
                }
                /* block edges: K over the 256-deep block, rows over the 72-row block, both tile remainders */
                gemm_case(kv, r, ta, tb, 1.0f, betas[bi], 75, 19, 300, t);
                gemm_case(kv, r, ta, tb, 1.0f, betas[bi], 150, 33, 17, t);
                gemm_case(kv, r, ta, tb, 1.0f, betas[bi], 20, 40, 513, t);
                gemm_case(kv, r, ta, tb, 0.0f, betas[bi], 9, 13, 11, t); /* alpha 0: C = beta C */
                gemm_case(kv, r, ta, tb, 1.0f, betas[bi], 7, 9, 0, t);   /* K 0: C = beta C */
                gemm_case(kv, r, ta, tb, 1.0f, betas[bi], 1, 1, 1, t);
            }
}

/* ---- sparse --------------------------------------------------------------------------------------- */

typedef struct {
    int32_t M, K, nnz;
    int32_t *rowptr, *col, *colptr, *row, *perm;
    float *val;
} csr;

static void *xalloc(size_t n) {
    void *p = calloc(n > 16 ? n : 16, 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* Random CSR with each weight kept with probability density; every `empty`-th row (if > 0) forced empty. */
static csr make_csr(xrng *r, int32_t M, int32_t K, double density, int empty) {
    csr s = {M, K, 0, NULL, NULL, NULL, NULL, NULL, NULL};
    const int64_t cap = (int64_t)M * K;
    s.rowptr = xalloc(((size_t)M + 1) * sizeof(int32_t));
    s.colptr = xalloc(((size_t)K + 1) * sizeof(int32_t));
    s.col = xalloc((size_t)cap * sizeof(int32_t));
    s.val = xalloc((size_t)cap * sizeof(float));
    for (int32_t m = 0; m < M; m++) {
        s.rowptr[m] = s.nnz;
        if (empty > 0 && m % empty == 0) continue;
        for (int32_t k = 0; k < K; k++)
            if (density >= 1.0 || xunit(r) < density) {
                s.col[s.nnz] = k;
                s.val[s.nnz] = xval(r);
                s.colptr[k + 1]++;
                s.nnz++;
            }
    }
    s.rowptr[M] = s.nnz;
    for (int32_t k = 0; k < K; k++) s.colptr[k + 1] += s.colptr[k];
    s.row = xalloc((size_t)s.nnz * sizeof(int32_t));
    s.perm = xalloc((size_t)s.nnz * sizeof(int32_t));
    int32_t *fill = xalloc(((size_t)K + 1) * sizeof(int32_t));
    memcpy(fill, s.colptr, ((size_t)K + 1) * sizeof(int32_t));
    for (int32_t m = 0; m < M; m++)
        for (int32_t q = s.rowptr[m]; q < s.rowptr[m + 1]; q++) {
            const int32_t slot = fill[s.col[q]]++;
            s.row[slot] = m;
            s.perm[slot] = q;
        }
    free(fill);
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

static const int32_t SSIZES[] = {1, 2, 3, 7, 17, 33, 64, 100};
static const int64_t NSIZES[] = {0, 1, 3, 4, 7, 16, 20, 33, 129, 300, 1000};
static const double DENSITIES[] = {0.0, 0.001, 0.05, 0.5, 1.0};
enum {
    N_SSIZES = sizeof SSIZES / sizeof SSIZES[0],
    N_NSIZES = sizeof NSIZES / sizeof NSIZES[0],
    N_DENS = sizeof DENSITIES / sizeof DENSITIES[0]
};

static void sparse_case(const pf_kernels *kv, xrng *r, int32_t M, int32_t K, int64_t N, double density, int empty,
                        tally t[3]) {
    csr s = make_csr(r, M, K, density, empty);
    const int64_t ldb = N + xint(r, 3), ldd = N + xint(r, 3), ldc = N + xint(r, 3), ldt = N + xint(r, 3);
    float *B = frand(r, (int64_t)K * ldb), *D = frand(r, (int64_t)M * ldd);
    const int32_t m0 = xint(r, M / 2 + 1), m1 = M - (M > 1 ? xint(r, 2) : 0);
    const int32_t k0 = xint(r, K / 2 + 1), k1 = K - (K > 1 ? xint(r, 2) : 0);
    char what[160];
    snprintf(what, sizeof what, "M=%d K=%d N=%lld density %g nnz %d", M, K, (long long)N, density, s.nnz);

    /* spmm: C (M x N) = W B over rows [m0, m1) */
    float *C0 = fnan((int64_t)M * ldc), *C1 = fnan((int64_t)M * ldc), *orig = fnan((int64_t)M * ldc);
    pf_spmm_ref(m0, m1, 1, N, s.rowptr, s.col, NULL, s.val, B, ldb, 0, C0, ldc);
    kv->spmm(m0, m1, 1, N, s.rowptr, s.col, NULL, s.val, B, ldb, 0, C1, ldc);
    double e = block_err(C1 + (int64_t)m0 * ldc, C0 + (int64_t)m0 * ldc, m1 - m0, N, ldc, tol(K));
    int same = untouched(C1, orig, M, ldc, m0, m1, N);
    EXPECT(e <= 1.0 && same, "%s spmm %s rows [%d,%d): error %g, outside untouched %d", kv->name, what, m0, m1, e,
           same);
    t[0].cases++;
    t[0].failed |= !(e <= 1.0 && same);

    /* spmm_t: T (K x N) = W^T D over rows [k0, k1), through the CSC view */
    float *T0 = fnan((int64_t)K * ldt), *T1 = fnan((int64_t)K * ldt), *torig = fnan((int64_t)K * ldt);
    pf_spmm_ref(k0, k1, 1, N, s.colptr, s.row, s.perm, s.val, D, ldd, 0, T0, ldt);
    kv->spmm(k0, k1, 1, N, s.colptr, s.row, s.perm, s.val, D, ldd, 0, T1, ldt);
    e = block_err(T1 + (int64_t)k0 * ldt, T0 + (int64_t)k0 * ldt, k1 - k0, N, ldt, tol(M));
    same = untouched(T1, torig, K, ldt, k0, k1, N);
    EXPECT(e <= 1.0 && same, "%s spmm_t %s rows [%d,%d): error %g, outside untouched %d", kv->name, what, k0, k1, e,
           same);
    t[1].cases++;
    t[1].failed |= !(e <= 1.0 && same);

    /* sddmm: out[e] = D[m, :] . B[col[e], :] at the kept positions of rows [m0, m1) */
    float *S0 = fnan(s.nnz), *S1 = fnan(s.nnz), *sorig = fnan(s.nnz);
    pf_sddmm_ref(m0, m1, 1, N, s.rowptr, s.col, D, ldd, B, ldb, 0, S0);
    kv->sddmm(m0, m1, 1, N, s.rowptr, s.col, D, ldd, B, ldb, 0, S1);
    const int32_t e0 = s.rowptr[m0], e1 = s.rowptr[m1];
    e = block_err(S1 + e0, S0 + e0, 1, e1 - e0, 0, tol(N));
    same = memcmp(S1, sorig, (size_t)e0 * sizeof(float)) == 0 &&
           memcmp(S1 + e1, sorig + e1, (size_t)(s.nnz - e1) * sizeof(float)) == 0;
    EXPECT(e <= 1.0 && same, "%s sddmm %s rows [%d,%d): error %g, outside untouched %d", kv->name, what, m0, m1, e,
           same);
    t[2].cases++;
    t[2].failed |= !(e <= 1.0 && same);

    free(B);
    free(D);
    free(C0);
    free(C1);
    free(orig);
    free(T0);
    free(T1);
    free(torig);
    free(S0);
    free(S1);
    free(sorig);
    free_csr(&s);
}

/* The fused linear backward: dW at the kept weights (overwritten) and dX^T (accumulated onto what D holds), over
 * sparse rows [m0, m1); rows of D outside the kept columns and the dW entries outside the range stay untouched. */
static void spgrad_case(const pf_kernels *kv, xrng *r, int32_t M, int32_t K, int64_t N, double density, int empty,
                        tally *t) {
    csr s = make_csr(r, M, K, density, empty);
    const int64_t lda = N + xint(r, 3), ldb = N + xint(r, 3), ldd = N + xint(r, 3);
    float *A = frand(r, (int64_t)M * lda), *B = frand(r, (int64_t)K * ldb);
    float *D0 = frand(r, (int64_t)K * ldd), *D1 = fcopy(D0, (int64_t)K * ldd), *dorig = fcopy(D0, (int64_t)K * ldd);
    float *S0 = fnan(s.nnz), *S1 = fnan(s.nnz), *sorig = fnan(s.nnz);
    const int32_t m0 = xint(r, M / 2 + 1), m1 = M - (M > 1 ? xint(r, 2) : 0);
    pf_spgrad_ref(m0, m1, N, s.rowptr, s.col, s.val, A, lda, B, ldb, S0, D0, ldd);
    kv->spgrad(m0, m1, N, s.rowptr, s.col, s.val, A, lda, B, ldb, S1, D1, ldd);
    const int32_t e0 = s.rowptr[m0], e1 = s.rowptr[m1];
    const double es = block_err(S1 + e0, S0 + e0, 1, e1 - e0, 0, tol(N));
    const double ed = block_err(D1, D0, K, N, ldd, tol(M));
    const int same = memcmp(S1, sorig, (size_t)e0 * sizeof(float)) == 0 &&
                     memcmp(S1 + e1, sorig + e1, (size_t)(s.nnz - e1) * sizeof(float)) == 0 &&
                     untouched(D1, dorig, K, ldd, 0, K, N);
    EXPECT(es <= 1.0 && ed <= 1.0 && same,
           "%s spgrad M=%d K=%d N=%lld density %g nnz %d rows [%d,%d): dW error %g, dX error %g, outside untouched %d",
           kv->name, M, K, (long long)N, density, s.nnz, m0, m1, es, ed, same);
    t->cases++;
    t->failed |= !(es <= 1.0 && ed <= 1.0 && same);
    free(A);
    free(B);
    free(D0);
    free(D1);
    free(dorig);
    free(S0);
    free(S1);
    free(sorig);
    free_csr(&s);
}

static void test_spgrad(const pf_kernels *kv, xrng *r, tally *t) {
    for (int di = 0; di < N_DENS; di++)
        for (int rep = 0; rep < 24; rep++) {
            const int32_t M = SSIZES[xint(r, N_SSIZES)], K = SSIZES[xint(r, N_SSIZES)];
            int64_t N = NSIZES[xint(r, N_NSIZES)];
            if ((int64_t)M * K * N > 2000000) N = 20;
            spgrad_case(kv, r, M, K, N, DENSITIES[di], rep % 4 == 3 ? 3 : 0, t);
        }
    spgrad_case(kv, r, 200, 300, 24, 0.1, 0, t); /* fc1 in miniature: a padded batch of 20 */
    spgrad_case(kv, r, 64, 90, 20, 1.0, 7, t);
    spgrad_case(kv, r, 9, 40, 13, 0.001, 0, t);
}

static void test_sparse(const pf_kernels *kv, xrng *r, tally t[3]) {
    for (int di = 0; di < N_DENS; di++)
        for (int rep = 0; rep < 24; rep++) {
            const int32_t M = SSIZES[xint(r, N_SSIZES)], K = SSIZES[xint(r, N_SSIZES)];
            int64_t N = NSIZES[xint(r, N_NSIZES)];
            if ((int64_t)M * K * N > 2000000) N = 20;
            sparse_case(kv, r, M, K, N, DENSITIES[di], rep % 4 == 3 ? 3 : 0, t);
        }
    /* the layer shapes in miniature: a linear layer's batch of 20, a conv layer's long rows */
    sparse_case(kv, r, 200, 300, 20, 0.1, 0, t);
    sparse_case(kv, r, 16, 75, 3920, 0.1, 5, t);
    sparse_case(kv, r, 0, 5, 20, 0.5, 0, t); /* no rows at all */
    sparse_case(kv, r, 5, 0, 20, 0.5, 0, t); /* no columns at all */
}

/* The direct convolution's form: `rows` output rows per sparse row, offsets idx[e] in units of ldb (a batch of
 * samples) into planes whose rows are rstep apart, runs of N = OW*batch that overlap from one offset to the next.
 * Built as the layers build it: a C x kh x kw kernel over a padded H x W plane, batch innermost; plus the
 * transposed product (CSC, perm) over the flipped kernel. */
static void conv_case(const pf_kernels *kv, xrng *r, int32_t M, int32_t C, int32_t kh, int32_t kw, int32_t OH,
                      int32_t OW, int32_t batch, double density, tally t[3]) {
    const int32_t hp = OH + kh - 1, wp = OW + kw - 1, K = C * kh * kw;
    csr s = make_csr(r, M, K, density, M > 3 ? 4 : 0);
    int32_t *coff = xalloc((size_t)s.nnz * sizeof(int32_t)), *toff = xalloc((size_t)s.nnz * sizeof(int32_t));
    for (int32_t e = 0; e < s.nnz; e++) {
        const int32_t k = s.col[e], c = k / (kh * kw), i = k % (kh * kw) / kw, j = k % kw;
        coff[e] = (c * hp + i) * wp + j;
    }
    /* the transposed product reads an (M, OH + 2(kh-1), OW + 2(kw-1)) plane: its own offsets, over the CSC view */
    const int32_t qh = OH + 2 * (kh - 1), qw = OW + 2 * (kw - 1);
    for (int32_t q = 0; q < s.nnz; q++) {
        const int32_t k = s.col[s.perm[q]], i = k % (kh * kw) / kw, j = k % kw;
        toff[q] = (s.row[q] * qh + kh - 1 - i) * qw + kw - 1 - j;
    }
    const int64_t N = (int64_t)OW * batch, rstep = (int64_t)wp * batch;
    const int64_t nx = (int64_t)C * hp * wp * batch, ny = (int64_t)M * OH * N, nq = (int64_t)M * qh * qw * batch;
    float *X = frand(r, nx), *Q = frand(r, nq), *A = frand(r, ny);
    char what[160];
    snprintf(what, sizeof what, "conv M=%d C=%d k=%dx%d out %dx%d batch %d density %g nnz %d", M, C, kh, kw, OH, OW,
             batch, density, s.nnz);
    const int32_t m0 = xint(r, M / 2 + 1), m1 = M - (M > 1 ? xint(r, 2) : 0);
    float *C0 = fnan(ny), *C1 = fnan(ny), *orig = fnan(ny);
    pf_spmm_ref(m0, m1, OH, N, s.rowptr, coff, NULL, s.val, X, batch, rstep, C0, N);
    kv->spmm(m0, m1, OH, N, s.rowptr, coff, NULL, s.val, X, batch, rstep, C1, N);
    double e = block_err(C1 + (int64_t)m0 * OH * N, C0 + (int64_t)m0 * OH * N, (int64_t)(m1 - m0) * OH, N, N, tol(K));
    int same = untouched(C1, orig, (int64_t)M * OH, N, (int64_t)m0 * OH, (int64_t)m1 * OH, N);
    EXPECT(e <= 1.0 && same, "%s spmm %s rows [%d,%d): error %g, outside untouched %d", kv->name, what, m0, m1, e,
           same);
    t[0].cases++;
    t[0].failed |= !(e <= 1.0 && same);

    /* the transposed product over channels: chptr[c] = colptr[c*kh*kw]; H = OH + kh - 1 rows of W*batch */
    int32_t *chptr = xalloc(((size_t)C + 1) * sizeof(int32_t));
    for (int32_t c = 0; c <= C; c++) chptr[c] = s.colptr[c * kh * kw];
    const int32_t H = OH + kh - 1, W = OW + kw - 1;
    const int64_t NT = (int64_t)W * batch, nt = (int64_t)C * H * NT;
    float *T0 = fnan(nt), *T1 = fnan(nt);
    pf_spmm_ref(0, C, H, NT, chptr, toff, s.perm, s.val, Q, batch, (int64_t)qw * batch, T0, NT);
    kv->spmm(0, C, H, NT, chptr, toff, s.perm, s.val, Q, batch, (int64_t)qw * batch, T1, NT);
    e = block_err(T1, T0, (int64_t)C * H, NT, NT, tol(M * kh * kw));
    EXPECT(e <= 1.0, "%s spmm (transposed) %s: error %g", kv->name, what, e);
    t[1].cases++;
    t[1].failed |= !(e <= 1.0);

    float *S0 = fnan(s.nnz), *S1 = fnan(s.nnz), *sorig = fnan(s.nnz);
    pf_sddmm_ref(m0, m1, OH, N, s.rowptr, coff, A, N, X, batch, rstep, S0);
    kv->sddmm(m0, m1, OH, N, s.rowptr, coff, A, N, X, batch, rstep, S1);
    const int32_t e0 = s.rowptr[m0], e1 = s.rowptr[m1];
    e = block_err(S1 + e0, S0 + e0, 1, e1 - e0, 0, tol(N * OH));
    same = memcmp(S1, sorig, (size_t)e0 * sizeof(float)) == 0 &&
           memcmp(S1 + e1, sorig + e1, (size_t)(s.nnz - e1) * sizeof(float)) == 0;
    EXPECT(e <= 1.0 && same, "%s sddmm %s rows [%d,%d): error %g, outside untouched %d", kv->name, what, m0, m1, e,
           same);
    t[2].cases++;
    t[2].failed |= !(e <= 1.0 && same);
    free(coff);
    free(toff);
    free(chptr);
    free(X);
    free(Q);
    free(A);
    free(C0);
    free(C1);
    free(orig);
    free(T0);
    free(T1);
    free(S0);
    free(S1);
    free(sorig);
    free_csr(&s);
}

static void test_conv(const pf_kernels *kv, xrng *r, tally t[3]) {
    static const int32_t batches[] = {1, 3, 4, 7, 20};
    for (int di = 0; di < N_DENS; di++)
        for (int rep = 0; rep < 8; rep++) {
            const int32_t M = 1 + xint(r, 9), C = 1 + xint(r, 4), kh = 1 + xint(r, 5), kw = 1 + xint(r, 5);
            const int32_t OH = 1 + xint(r, 9), OW = 1 + xint(r, 9), batch = batches[xint(r, 5)];
            conv_case(kv, r, M, C, kh, kw, OH, OW, batch, DENSITIES[di], t);
        }
    /* Conv-2's layers in miniature: 5x5 kernels, 14x14 and 28x28 outputs, a batch of 20 */
    conv_case(kv, r, 6, 4, 5, 5, 14, 14, 20, 0.1, t);
    conv_case(kv, r, 4, 1, 5, 5, 28, 28, 20, 0.1, t);
    conv_case(kv, r, 3, 2, 5, 5, 14, 14, 5, 1.0, t);
}

/* A column's result must not depend on where it sits (strip width, tile, tail): with every column of the dense
 * operand equal, every output column must be bit-identical. Otherwise a sample's logits change with its place in
 * the batch, and exact ties (a max-pool window over a constant channel) break differently from PyTorch. */
static void position_case(const pf_kernels *kv, xrng *r, int32_t M, int32_t K, int64_t N, double density) {
    csr s = make_csr(r, M, K, density, 0);
    float *B = falloc((int64_t)K * N), *D = falloc((int64_t)M * N);
    float *C = falloc((int64_t)M * N), *T = falloc((int64_t)K * N);
    for (int32_t k = 0; k < K; k++) {
        const float v = xval(r);
        for (int64_t n = 0; n < N; n++) B[(int64_t)k * N + n] = v;
    }
    for (int32_t m = 0; m < M; m++) {
        const float v = xval(r);
        for (int64_t n = 0; n < N; n++) D[(int64_t)m * N + n] = v;
    }
    kv->spmm(0, M, 1, N, s.rowptr, s.col, NULL, s.val, B, N, 0, C, N);
    kv->spmm(0, K, 1, N, s.colptr, s.row, s.perm, s.val, D, N, 0, T, N);
    float *G = falloc(s.nnz), *DX = falloc((int64_t)K * N); /* the fused backward's dX^T: D plays dY^T */
    kv->spgrad(0, M, N, s.rowptr, s.col, s.val, D, N, B, N, G, DX, N);
    int same_c = 1, same_t = 1;
    for (int32_t m = 0; m < M; m++)
        for (int64_t n = 1; n < N; n++) same_c &= C[(int64_t)m * N + n] == C[(int64_t)m * N];
    for (int32_t k = 0; k < K; k++)
        for (int64_t n = 1; n < N; n++) same_t &= T[(int64_t)k * N + n] == T[(int64_t)k * N];
    int same_g = 1;
    for (int32_t k = 0; k < K; k++)
        for (int64_t n = 1; n < N; n++) same_g &= DX[(int64_t)k * N + n] == DX[(int64_t)k * N];
    EXPECT(same_g, "%s spgrad M=%d K=%d N=%lld: equal columns in, unequal columns out", kv->name, M, K, (long long)N);
    EXPECT(same_c, "%s spmm M=%d K=%d N=%lld: equal columns in, unequal columns out", kv->name, M, K, (long long)N);
    EXPECT(same_t, "%s spmm_t M=%d K=%d N=%lld: equal columns in, unequal columns out", kv->name, M, K,
           (long long)N);
    free(B);
    free(D);
    free(C);
    free(T);
    free(G);
    free(DX);
    free_csr(&s);
}

static void test_position_invariance(const pf_kernels *kv, xrng *r, tally t[2]) {
    static const int64_t widths[] = {1, 5, 20, 24, 45, 129, 300, 3920};
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++) {
        const int before = failures;
        position_case(kv, r, 19, 37, widths[i], 0.3);
        position_case(kv, r, 8, 200, widths[i], 1.0);
        t[0].cases += 2;
        t[1].cases += 2;
        t[0].failed |= failures != before;
        t[1].failed |= failures != before;
    }
}

/* ---- im2col / col2im ------------------------------------------------------------------------------- */

static void test_im2col(const pf_kernels *kv, xrng *r, tally t[2], int trials) {
    for (int i = 0; i < trials; i++) {
        const int32_t C = 1 + xint(r, 4), H = 1 + xint(r, 12), W = 1 + xint(r, 12);
        const int32_t kh = 1 + xint(r, 5), kw = 1 + xint(r, 5);
        const int32_t sh = i % 2 ? 1 : 1 + xint(r, 3), sw = i % 2 ? 1 : 1 + xint(r, 3); /* half stride 1 */
        const int32_t ph = xint(r, kh), pw = xint(r, kw);
        if (H + 2 * ph < kh || W + 2 * pw < kw) continue;
        const int32_t OH = (H + 2 * ph - kh) / sh + 1, OW = (W + 2 * pw - kw) / sw + 1;
        const int64_t Kc = (int64_t)C * kh * kw, P = (int64_t)OH * OW, ld = P + xint(r, 5);
        char what[128];
        snprintf(what, sizeof what, "C=%d H=%d W=%d k=%dx%d s=%dx%d p=%dx%d ld=%lld", C, H, W, kh, kw, sh, sw, ph, pw,
                 (long long)ld);
        float *x = frand(r, (int64_t)C * H * W), *c0 = fnan(Kc * ld), *c1 = fnan(Kc * ld);
        pf_im2col_ref(x, C, H, W, kh, kw, sh, sw, ph, pw, c0, ld);
        kv->im2col(x, C, H, W, kh, kw, sh, sw, ph, pw, c1, ld);
        const int ok = memcmp(c0, c1, (size_t)(Kc * ld) * sizeof(float)) == 0;
        EXPECT(ok, "%s im2col %s: not bit-identical (or wrote past the row)", kv->name, what);
        t[0].cases++;
        t[0].failed |= !ok;

        float *cols = frand(r, Kc * ld), *d0 = frand(r, (int64_t)C * H * W);
        float *d1 = fcopy(d0, (int64_t)C * H * W);
        pf_col2im_ref(cols, ld, C, H, W, kh, kw, sh, sw, ph, pw, d0);
        kv->col2im(cols, ld, C, H, W, kh, kw, sh, sw, ph, pw, d1);
        const double e = block_err(d1, d0, 1, (int64_t)C * H * W, 0, 1e-5);
        EXPECT(e <= 1.0, "%s col2im %s: error %g", kv->name, what, e);
        t[1].cases++;
        t[1].failed |= !(e <= 1.0);
        free(x);
        free(c0);
        free(c1);
        free(cols);
        free(d0);
        free(d1);
    }
}

int main(void) {
    int count = 0;
    const pf_kernels *const *variants = pf_kernel_variants(&count);
    EXPECT(count >= 2 && variants[0] == &pf_kernels_ref, "the reference must come first, then >= 1 variant");
    EXPECT(pf_kernels_best() != &pf_kernels_ref, "the library must not run the reference kernels");
#if defined(PF_HAVE_NEON)
    EXPECT(strcmp(pf_kernels_best()->name, "neon") == 0, "aarch64 builds must run the NEON kernels");
#endif
    for (int v = 1; v < count; v++) {
        const pf_kernels *kv = variants[v];
        xrng r = {0x9E3779B97F4A7C15ull ^ (uint64_t)v};
        tally t[7] = {{"gemm", 0, 0},   {"spmm", 0, 0},   {"spmm_t", 0, 0}, {"sddmm", 0, 0},
                      {"im2col", 0, 0}, {"col2im", 0, 0}, {"spgrad", 0, 0}};
        test_gemm(kv, &r, &t[0]);
        test_sparse(kv, &r, &t[1]);
        test_conv(kv, &r, &t[1]);
        test_spgrad(kv, &r, &t[6]);
        test_position_invariance(kv, &r, &t[1]);
        test_im2col(kv, &r, &t[4], 300);
        for (int i = 0; i < 7; i++)
            printf("kernels %-8s %-7s %4ld cases vs reference: %s\n", kv->name, t[i].op, t[i].cases,
                   t[i].failed ? "FAILED" : "ok");
    }
    printf("%ld checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
