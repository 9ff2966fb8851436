/* sparse.c - the two states of a prunable weight (dense, or CSR of the kept weights with a CSC view) and the
 * moves between them. Every move allocates the new state first, so NOMEM leaves the weight unchanged. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct csr_state {
    int32_t *rowptr, *col, *colptr, *row, *perm;
    float *val, *gval, *vmom;
    int32_t *coff, *toff, *chptr;
} csr_state;

static void csr_free(csr_state *s) {
    free(s->rowptr);
    free(s->col);
    free(s->colptr);
    free(s->row);
    free(s->perm);
    free(s->val);
    free(s->gval);
    free(s->vmom);
    free(s->coff);
    free(s->toff);
    free(s->chptr);
    memset(s, 0, sizeof *s);
}

/* The direct convolution's offsets of every kept weight (c, i, j) of output channel m (see pf_conv_geom):
 * into the padded input plane, coff = (c*hp + i)*wp + j, and into the padded output gradient for the
 * transposed product, toff = (m*qh + kh-1-i)*qw + kw-1-j; chptr[c] = the first CSC entry of channel c. */
static pf_status conv_offsets(const pf_weight *wt, csr_state *s) {
    const pf_conv_geom *g = &wt->conv;
    if (!g->ok) return PF_OK;
    const int32_t kk = g->kh * g->kw, nnz = s->rowptr[wt->M];
    const size_t n_alloc = (size_t)(nnz > 0 ? nnz : 1);
    s->coff = malloc(n_alloc * sizeof(int32_t));
    s->toff = malloc(n_alloc * sizeof(int32_t));
    s->chptr = malloc(((size_t)g->c + 1) * sizeof(int32_t));
    if (!s->coff || !s->toff || !s->chptr) {
        csr_free(s);
        return PF_ERR_NOMEM;
    }
    for (int32_t e = 0; e < nnz; e++) {
        const int32_t k = s->col[e], c = k / kk, i = k % kk / g->kw, j = k % g->kw;
        s->coff[e] = (c * g->hp + i) * g->wp + j;
    }
    for (int32_t q = 0; q < nnz; q++) {
        const int32_t k = s->col[s->perm[q]], i = k % kk / g->kw, j = k % g->kw;
        s->toff[q] = (s->row[q] * g->qh + g->kh - 1 - i) * g->qw + g->kw - 1 - j;
    }
    for (int32_t c = 0; c <= g->c; c++) s->chptr[c] = s->colptr[c * kk];
    return PF_OK;
}

/* Builds CSR (and, for a layer that uses it, the CSC view) of `mask` with the values and momentum wt holds now at the
 * positions kept before and after (dense or CSR state; a newly kept position starts at zero with zero momentum).
 * No dense temporary: from a CSR state each row is merged with the old row (both ascending in column). */
static pf_status csr_build(const pf_weight *wt, const uint8_t *mask, csr_state *s) {
    const int32_t M = wt->M, K = wt->K;
    int64_t nnz = 0;
    for (int64_t i = 0; i < wt->size; i++) nnz += mask[i] != 0;
    const size_t n_alloc = (size_t)(nnz > 0 ? nnz : 1);
    memset(s, 0, sizeof *s);
    s->rowptr = malloc(((size_t)M + 1) * sizeof(int32_t));
    s->col = malloc(n_alloc * sizeof(int32_t));
    s->val = malloc(n_alloc * sizeof(float));
    s->gval = calloc(n_alloc, sizeof(float));
    s->vmom = calloc(n_alloc, sizeof(float));
    int okay = s->rowptr && s->col && s->val && s->gval && s->vmom;
    if (okay && wt->csc) {
        s->colptr = calloc((size_t)K + 1, sizeof(int32_t));
        s->row = malloc(n_alloc * sizeof(int32_t));
        s->perm = malloc(n_alloc * sizeof(int32_t));
        okay = s->colptr && s->row && s->perm;
    }
    if (!okay) {
        csr_free(s);
        return PF_ERR_NOMEM;
    }
    const int mom = wt->mom_live;
    int32_t e = 0;
    for (int32_t m = 0; m < M; m++) {
        s->rowptr[m] = e;
        const int64_t base = (int64_t)m * K;
        const uint8_t *mrow = mask + base, *was = wt->mask + base;
        int32_t q = wt->sparse ? wt->rowptr[m] : 0;
        const int32_t q_end = wt->sparse ? wt->rowptr[m + 1] : 0;
        for (int32_t k = 0; k < K; k++) {
            if (!mrow[k]) continue;
            float v = 0.0f, mv = 0.0f;
            if (wt->sparse) {
                while (q < q_end && wt->col[q] < k) q++;
                if (q < q_end && wt->col[q] == k) {
                    v = wt->val[q];
                    if (mom) mv = wt->vmom[q];
                }
            } else if (was[k]) {
                v = wt->w[base + k];
                if (mom && wt->mom) mv = wt->mom[base + k];
            }
            s->col[e] = k;
            s->val[e] = v;
            s->vmom[e] = mv;
            if (s->colptr) s->colptr[k + 1]++;
            e++;
        }
    }
    s->rowptr[M] = e;
    if (!wt->csc) return PF_OK;
    for (int32_t k = 0; k < K; k++) s->colptr[k + 1] += s->colptr[k];
    /* counting sort of the CSR entries by column: rows come out ascending within each column */
    int32_t *fill = malloc(((size_t)K + 1) * sizeof(int32_t));
    if (!fill) {
        csr_free(s);
        return PF_ERR_NOMEM;
    }
    memcpy(fill, s->colptr, ((size_t)K + 1) * sizeof(int32_t));
    for (int32_t m = 0; m < M; m++)
        for (int32_t q = s->rowptr[m]; q < s->rowptr[m + 1]; q++) {
            const int32_t slot = fill[s->col[q]]++;
            s->row[slot] = m;
            s->perm[slot] = q;
        }
    free(fill);
    return conv_offsets(wt, s);
}

/* dense (size) = the CSR values vals placed at their positions, zero elsewhere */
static void scatter(const pf_weight *wt, const float *vals, float *dense) {
    memset(dense, 0, (size_t)wt->size * sizeof(float));
    for (int32_t m = 0; m < wt->M; m++)
        for (int32_t e = wt->rowptr[m]; e < wt->rowptr[m + 1]; e++) dense[(int64_t)m * wt->K + wt->col[e]] = vals[e];
}

/* dense = a dense-state buffer (NULL reads as zeros) or the matching CSR values */
static void read_state(const pf_weight *wt, const float *dense_buf, const float *vals, float *dense) {
    if (wt->sparse)
        scatter(wt, vals, dense);
    else if (dense_buf)
        memcpy(dense, dense_buf, (size_t)wt->size * sizeof(float));
    else
        memset(dense, 0, (size_t)wt->size * sizeof(float));
}

void pf_weight_read(const pf_weight *wt, float *dense) { read_state(wt, wt->w, wt->val, dense); }

void pf_weight_read_grad(const pf_weight *wt, float *dense) { read_state(wt, wt->gw, wt->gval, dense); }

void pf_weight_write(pf_weight *wt, const float *dense) {
    if (!wt->sparse) {
        for (int64_t i = 0; i < wt->size; i++) wt->w[i] = wt->mask[i] ? dense[i] : 0.0f;
        return;
    }
    for (int32_t m = 0; m < wt->M; m++)
        for (int32_t e = wt->rowptr[m]; e < wt->rowptr[m + 1]; e++) wt->val[e] = dense[(int64_t)m * wt->K + wt->col[e]];
}

static void dense_free(pf_weight *wt) {
    free(wt->w);
    free(wt->gw);
    free(wt->mom);
    wt->w = wt->gw = wt->mom = NULL;
}

static void adopt_csr(pf_weight *wt, csr_state *s) {
    wt->rowptr = s->rowptr;
    wt->col = s->col;
    wt->colptr = s->colptr;
    wt->row = s->row;
    wt->perm = s->perm;
    wt->val = s->val;
    wt->gval = s->gval;
    wt->vmom = s->vmom;
    wt->coff = s->coff;
    wt->toff = s->toff;
    wt->chptr = s->chptr;
}

static void current_csr(const pf_weight *wt, csr_state *s) {
    s->rowptr = wt->rowptr;
    s->col = wt->col;
    s->colptr = wt->colptr;
    s->row = wt->row;
    s->perm = wt->perm;
    s->val = wt->val;
    s->gval = wt->gval;
    s->vmom = wt->vmom;
    s->coff = wt->coff;
    s->toff = wt->toff;
    s->chptr = wt->chptr;
}

pf_status pf_weight_rebuild(pf_weight *wt, const uint8_t *new_mask, int want_sparse) {
    /* pruned positions and newly kept ones end at zero with zero momentum; no dense temporary of the weight */
    if (want_sparse) {
        csr_state s;
        pf_status st = csr_build(wt, new_mask, &s);
        if (st != PF_OK) return st;
        csr_state old;
        current_csr(wt, &old);
        csr_free(&old);
        dense_free(wt);
        adopt_csr(wt, &s);
        wt->sparse = 1;
        wt->nnz = wt->rowptr[wt->M];
    } else if (!wt->sparse) { /* dense to dense: in place */
        int64_t nnz = 0;
        for (int64_t i = 0; i < wt->size; i++) {
            const int keep = new_mask[i] != 0;
            nnz += keep;
            if (!keep || !wt->mask[i]) {
                wt->w[i] = 0.0f;
                if (wt->mom) wt->mom[i] = 0.0f;
            }
        }
        if (wt->gw) memset(wt->gw, 0, (size_t)wt->size * sizeof(float));
        wt->nnz = nnz;
    } else { /* sparse to dense: the new dense buffers, filled from the CSR state where still kept */
        float *w = calloc((size_t)wt->size, sizeof(float));
        float *md = wt->mom_live ? calloc((size_t)wt->size, sizeof(float)) : NULL;
        float *gw = calloc((size_t)wt->size, sizeof(float));
        if (!w || !gw || (wt->mom_live && !md)) {
            free(w);
            free(md);
            free(gw);
            return PF_ERR_NOMEM;
        }
        int64_t nnz = 0;
        for (int32_t m = 0; m < wt->M; m++)
            for (int32_t e = wt->rowptr[m]; e < wt->rowptr[m + 1]; e++) {
                const int64_t i = (int64_t)m * wt->K + wt->col[e];
                if (!new_mask[i]) continue;
                w[i] = wt->val[e];
                if (md) md[i] = wt->vmom[e];
            }
        for (int64_t i = 0; i < wt->size; i++) nnz += new_mask[i] != 0;
        csr_state old;
        current_csr(wt, &old);
        csr_free(&old);
        wt->rowptr = wt->col = wt->colptr = wt->row = wt->perm = NULL;
        wt->val = wt->gval = wt->vmom = NULL;
        wt->coff = wt->toff = wt->chptr = NULL;
        free(wt->w);
        free(wt->mom);
        free(wt->gw);
        wt->w = w;
        wt->mom = md;
        wt->gw = gw;
        wt->sparse = 0;
        wt->nnz = nnz;
    }
    if (new_mask != wt->mask) memcpy(wt->mask, new_mask, (size_t)wt->size);
    return PF_OK;
}

pf_status pf_weight_to_dense(pf_weight *wt) { return wt->sparse ? pf_weight_rebuild(wt, wt->mask, 0) : PF_OK; }

pf_status pf_weight_to_sparse(pf_weight *wt) { return wt->sparse ? PF_OK : pf_weight_rebuild(wt, wt->mask, 1); }

void pf_weight_free(pf_weight *wt) {
    csr_state old;
    current_csr(wt, &old);
    csr_free(&old);
    dense_free(wt);
    free(wt->mask);
    free(wt->gsum);
    wt->mask = NULL;
    wt->gsum = NULL;
}
