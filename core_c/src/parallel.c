/* parallel.c - drivers that split a kernel's rows over the network's thread pool. Sparse products are split
 * by nonzeros so that every thread gets a similar amount of work. */
#include <string.h>

#include "internal.h"

#ifndef PF_HAVE_BLAS
/* ---- dense GEMM --------------------------------------------------------------------------------------- */
typedef struct gemm_job {
    const pf_kernels *k;
    int ta, tb;
    int64_t M, N, K;
    float alpha, beta;
    const float *A, *B;
    float *C;
    int64_t lda, ldb, ldc;
} gemm_job;

static void gemm_task(void *ctx, int i, int n) {
    const gemm_job *j = ctx;
    /* rows in multiples of 8 so micro-kernel panels stay whole */
    const int64_t chunk = ((j->M + n - 1) / n + 7) / 8 * 8;
    const int64_t m0 = (int64_t)i * chunk, m1 = m0 + chunk < j->M ? m0 + chunk : j->M;
    if (m0 >= m1) return;
    j->k->gemm(j->ta, j->tb, m0, m1, j->N, j->K, j->alpha, j->A, j->lda, j->B, j->ldb, j->beta, j->C, j->ldc);
}

#endif

void pf_par_gemm(pf_net *net, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                 int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
#ifdef PF_HAVE_BLAS
    pf_blas_set_threads(pf_pool_size(net->pool));
    pf_gemm_blas(trans_a, trans_b, 0, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    gemm_job j = {net->kern, trans_a, trans_b, M, N, K, alpha, beta, A, B, C, lda, ldb, ldc};
    const int threads = pf_pool_size(net->pool);
    const int tasks = M * N * (K > 0 ? K : 1) < 32768 ? 1 : (M >= 8 * threads ? threads : (int)((M + 7) / 8));
    pf_pool_run(net->pool, tasks > 0 ? tasks : 1, gemm_task, &j);
#endif
}

/* ---- sparse products --------------------------------------------------------------------------------- */
typedef struct sparse_job {
    const pf_net *net;
    const pf_sparse_op *op;
    const float *val, *A, *B;
    float *C;
    int sddmm;
} sparse_job;

/* First row r of ptr[0..rows] with ptr[r] >= target. */
static int32_t split_rows(const int32_t *ptr, int32_t rows, int64_t target) {
    int32_t lo = 0, hi = rows;
    while (lo < hi) {
        const int32_t mid = lo + (hi - lo) / 2;
        if (ptr[mid] < target)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void sparse_task(void *ctx, int i, int n) {
    const sparse_job *j = ctx;
    const pf_sparse_op *op = j->op;
    const pf_kernels *k = j->net->kern;
    const int32_t *ptr = op->ptr, rows = op->n_rows;
    const int64_t nnz = ptr[rows];
    /* split by nonzeros, plus a share of rows so that empty rows (which must still be written) spread too */
    int32_t r0 = split_rows(ptr, rows, nnz * i / n), r1 = split_rows(ptr, rows, nnz * (i + 1) / n);
    if (nnz == 0) {
        r0 = (int32_t)((int64_t)rows * i / n);
        r1 = (int32_t)((int64_t)rows * (i + 1) / n);
    }
    if (i == n - 1) r1 = rows;
    if (i == 0) r0 = 0;
    if (r0 >= r1) return;
    if (j->sddmm)
        k->sddmm(r0, r1, op->rows, op->N, ptr, op->idx, j->A, op->N, j->B, op->ldb, op->rstep, j->C);
    else
        k->spmm(r0, r1, op->rows, op->N, ptr, op->idx, op->perm, j->val, j->B, op->ldb, op->rstep, j->C, op->N);
}

static int sparse_tasks(const pf_net *net, const pf_sparse_op *op) {
    const int threads = pf_pool_size(net->pool);
    return ((int64_t)op->ptr[op->n_rows] + op->n_rows) * op->rows * op->N < 65536 ? 1 : threads;
}

void pf_par_spmm(pf_net *net, const pf_sparse_op *op, const float *val, const float *B, float *C) {
    sparse_job j = {net, op, val, NULL, B, C, 0};
    pf_pool_run(net->pool, sparse_tasks(net, op), sparse_task, &j);
}

void pf_par_sddmm(pf_net *net, const pf_sparse_op *op, const float *A, const float *B, float *out) {
    sparse_job j = {net, op, NULL, A, B, out, 1};
    pf_pool_run(net->pool, sparse_tasks(net, op), sparse_task, &j);
}

/* ---- the fused linear backward ----------------------------------------------------------------------- */
typedef struct spgrad_job {
    const pf_net *net;
    const pf_weight *wt;
    int64_t N;
    const float *A, *B;
    float *out, *D;
    int tasks;
} spgrad_job;

static void spgrad_task(void *ctx, int i, int n) {
    const spgrad_job *j = ctx;
    const pf_weight *wt = j->wt;
    const int64_t nnz = wt->rowptr[wt->M], size = (int64_t)wt->K * j->N;
    int32_t r0 = split_rows(wt->rowptr, wt->M, nnz * i / n), r1 = split_rows(wt->rowptr, wt->M, nnz * (i + 1) / n);
    if (i == n - 1) r1 = wt->M;
    if (i == 0) r0 = 0;
    float *D = i == 0 ? j->D : j->net->spgrad_ws + (int64_t)(i - 1) * size;
    memset(D, 0, (size_t)size * sizeof(float));
    if (r0 < r1)
        j->net->kern->spgrad(r0, r1, j->N, wt->rowptr, wt->col, wt->val, j->A, j->N, j->B, j->N, j->out, D, j->N);
}

/* D += the other tasks' slices, split by rows of D */
static void spgrad_reduce(void *ctx, int i, int n) {
    const spgrad_job *j = ctx;
    const int64_t size = (int64_t)j->wt->K * j->N;
    const int64_t q0 = (int64_t)j->wt->K * i / n * j->N, q1 = (int64_t)j->wt->K * (i + 1) / n * j->N;
    for (int t = 1; t < j->tasks; t++) {
        const float *src = j->net->spgrad_ws + (int64_t)(t - 1) * size;
        for (int64_t q = q0; q < q1; q++) j->D[q] += src[q];
    }
}

void pf_par_spgrad(pf_net *net, const pf_weight *wt, int64_t N, const float *A, const float *B, float *out, float *D) {
    const int threads = pf_pool_size(net->pool);
    const int tasks = (wt->nnz + wt->M) * N < 65536 || !net->spgrad_ws ? 1 : threads;
    spgrad_job j = {net, wt, N, A, B, out, D, tasks};
    pf_pool_run(net->pool, tasks, spgrad_task, &j);
    if (tasks > 1) pf_pool_run(net->pool, threads, spgrad_reduce, &j);
}

/* ---- im2col / col2im over samples ---------------------------------------------------------------------- */
typedef struct conv_job {
    const pf_net *net;
    const pf_layer *L;
    int32_t batch;
    const float *src;
    float *dst;
    int dir; /* 0 im2col, 1 col2im */
} conv_job;

static void conv_task(void *ctx, int i, int n) {
    const conv_job *j = ctx;
    const pf_layer *L = j->L;
    const pf_layer_spec *s = &L->spec;
    const int64_t P = (int64_t)L->out_h * L->out_w, ld = P * j->batch;
    const int32_t b0 = (int32_t)((int64_t)j->batch * i / n), b1 = (int32_t)((int64_t)j->batch * (i + 1) / n);
    for (int32_t b = b0; b < b1; b++) {
        if (j->dir == 0) {
            j->net->kern->im2col(j->src + b * L->in_size, L->in_c, L->in_h, L->in_w, s->kernel_h, s->kernel_w,
                                 s->stride_h, s->stride_w, s->pad_h, s->pad_w, j->dst + b * P, ld);
        } else {
            float *dx = j->dst + b * L->in_size;
            memset(dx, 0, (size_t)L->in_size * sizeof(float));
            j->net->kern->col2im(j->src + b * P, ld, L->in_c, L->in_h, L->in_w, s->kernel_h, s->kernel_w, s->stride_h,
                                 s->stride_w, s->pad_h, s->pad_w, dx);
        }
    }
}

void pf_par_im2col(pf_net *net, const pf_layer *L, int32_t batch, const float *x, float *cols) {
    conv_job j = {net, L, batch, x, cols, 0};
    const int t = pf_pool_size(net->pool);
    pf_pool_run(net->pool, batch < t ? batch : t, conv_task, &j);
}

void pf_par_col2im(pf_net *net, const pf_layer *L, int32_t batch, const float *cols, float *dx) {
    conv_job j = {net, L, batch, cols, dx, 1};
    const int t = pf_pool_size(net->pool);
    pf_pool_run(net->pool, batch < t ? batch : t, conv_task, &j);
}

/* ---- transposes for the linear layers' (features x batch) layout ------------------------------------------- */
void pf_transpose_pad(const float *src, int64_t rows, int64_t cols, float *dst, int64_t ld) {
    enum { T = 32 };
    for (int64_t r0 = 0; r0 < rows; r0 += T)
        for (int64_t c0 = 0; c0 < cols; c0 += T) {
            const int64_t r1 = r0 + T < rows ? r0 + T : rows, c1 = c0 + T < cols ? c0 + T : cols;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++) dst[c * ld + r] = src[r * cols + c];
        }
    if (ld > rows)
        for (int64_t c = 0; c < cols; c++) memset(dst + c * ld + rows, 0, (size_t)(ld - rows) * sizeof(float));
}

void pf_untranspose(const float *src, int64_t ld, int64_t rows, int64_t cols, float *dst) {
    enum { T = 32 };
    for (int64_t r0 = 0; r0 < rows; r0 += T)
        for (int64_t c0 = 0; c0 < cols; c0 += T) {
            const int64_t r1 = r0 + T < rows ? r0 + T : rows, c1 = c0 + T < cols ? c0 + T : cols;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++) dst[r * cols + c] = src[c * ld + r];
        }
}
