/* sgd.c - masked SGD with momentum and weight decay. Only kept weights move: in dense mode the pruned
 * positions are skipped (they stay exactly zero, their momentum too); in sparse mode the CSR values are the
 * kept weights, so the update is one flat loop over them. Biases are never pruned. */
#include <stdlib.h>

#include "internal.h"

// v = momentum*v + (g + wd*w); w -= lr*v   (momentum 0: w -= lr*(g + wd*w), no buffer)
static void sgd_flat(float *w, const float *g, float *v, const uint8_t *mask, int64_t n, const pf_sgd_config *c) {
    const float lr = c->lr, mu = c->momentum, wd = c->weight_decay;
    if (v) {
        for (int64_t i = 0; i < n; i++) {
            if (mask && !mask[i]) continue;
            const float step = mu * v[i] + g[i] + wd * w[i];
            v[i] = step;
            w[i] -= lr * step;
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            if (mask && !mask[i]) continue;
            w[i] -= lr * (g[i] + wd * w[i]);
        }
    }
}

/* Momentum buffers are allocated on first use; NOMEM here degrades to plain SGD for that step is not
 * acceptable, so the caller pre-allocates through pf_sgd_prepare. */
pf_status pf_sgd_prepare(pf_net *net, const pf_sgd_config *cfg) {
    if (cfg->momentum == 0.0f) return PF_OK;
    for (int32_t i = 0; i < net->n_layers; i++) {
        pf_layer *L = &net->layers[i];
        if (L->weight_param < 0) continue;
        pf_weight *wt = &L->wt;
        if (!wt->sparse && !wt->mom) {
            wt->mom = calloc((size_t)wt->size, sizeof(float));
            if (!wt->mom) return PF_ERR_NOMEM;
        }
        if (L->b && !L->bmom) {
            L->bmom = calloc((size_t)L->out_c, sizeof(float));
            if (!L->bmom) return PF_ERR_NOMEM;
        }
    }
    return PF_OK;
}

void pf_sgd_apply(pf_net *net, const pf_sgd_config *cfg) {
    const int use_mom = cfg->momentum != 0.0f;
    for (int32_t i = 0; i < net->n_layers; i++) {
        pf_layer *L = &net->layers[i];
        if (L->weight_param < 0) continue;
        pf_weight *wt = &L->wt;
        if (!wt->sparse)
            sgd_flat(wt->w, wt->gw, use_mom ? wt->mom : NULL, wt->nnz < wt->size ? wt->mask : NULL, wt->size, cfg);
        else
            sgd_flat(wt->val, wt->gval, use_mom ? wt->vmom : NULL, NULL, wt->nnz, cfg);
        if (use_mom) wt->mom_live = 1;
        if (L->b) sgd_flat(L->b, L->gb, use_mom ? L->bmom : NULL, NULL, L->out_c, cfg);
    }
}
