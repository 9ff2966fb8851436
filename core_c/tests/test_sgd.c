/* test_sgd.c - masked SGD: a pruned weight never revives (momentum and weight decay on, many steps, dense
 * and sparse paths, across mask changes); momentum at pruned positions stays zero; switching a layer between
 * dense and sparse keeps its weights and momentum (the next steps match a run that never switched); SGD
 * equals the formula v = mu*v + g + wd*w, w -= lr*v. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prunefl/prunefl.h"
#include "testutil.h"

#define LIN(o, b) {PF_LAYER_LINEAR, o, 0, 0, 0, 0, 0, 0, b}
#define CONV(o, k, p, b) {PF_LAYER_CONV2D, o, k, k, 1, 1, p, p, b}
#define POOL(k) {PF_LAYER_MAXPOOL2D, 0, k, k, k, k, 0, 0, 0}
#define RELU {PF_LAYER_RELU, 0, 0, 0, 0, 0, 0, 0, 0}
#define FLAT {PF_LAYER_FLATTEN, 0, 0, 0, 0, 0, 0, 0, 0}

static const pf_layer_spec LAYERS[] = {CONV(4, 3, 1, 1), RELU, POOL(2), FLAT, LIN(16, 1), RELU, LIN(5, 1)};
enum { NL = sizeof LAYERS / sizeof LAYERS[0], B = 8, C = 2, H = 6, W = 6 };
static const int32_t PRUNABLE[] = {0, 4, 6};

static pf_net *make(tu_rng *r, double density, float threshold) {
    pf_net *net = NULL;
    CHECK(pf_net_create(LAYERS, NL, C, H, W, &net, NULL, 0) == PF_OK, "create");
    if (net) tu_randomize_net(r, net, 0.5f, density, threshold);
    return net;
}

static void check_pruned_zero(pf_net *net, const char *when) {
    int32_t np;
    pf_net_num_params(net, &np);
    for (int32_t p = 0; p < np; p++) {
        pf_param_info pi;
        pf_net_param_info(net, p, &pi);
        if (!pi.is_weight) continue;
        float *v = malloc((size_t)pi.size * sizeof(float));
        uint8_t *m = malloc((size_t)pi.size);
        pf_net_get_param(net, p, v, pi.size);
        pf_net_get_mask(net, p, m, pi.size);
        int64_t bad = 0;
        for (int64_t i = 0; i < pi.size; i++) {
            bad += !m[i] && v[i] != 0.0f;
        }
        CHECK(bad == 0, "%s: parameter %d has %lld pruned weights that are not zero", when, p, (long long)bad);
        free(v);
        free(m);
    }
}

static void never_revives(float threshold) {
    tu_rng r = {7};
    pf_net *net = make(&r, 0.3, threshold);
    float x[B * C * H * W];
    int32_t y[B];
    const pf_sgd_config cfg = {0.05f, 0.9f, 0.01f};
    for (int round = 0; round < 4; round++) {
        for (int s = 0; s < 25; s++) {
            tu_fill(&r, x, B * C * H * W, -1.0f, 1.0f);
            for (int i = 0; i < B; i++) y[i] = tu_int(&r, 5);
            CHECK(pf_net_train_step(net, x, y, B, &cfg, NULL, NULL) == PF_OK, "step: %s", pf_net_last_error(net));
        }
        check_pruned_zero(net, threshold > 0 ? "sparse" : "dense");
        /* a new mask: some weights pruned, some regrown; regrown ones start at zero with zero momentum */
        for (size_t k = 0; k < sizeof PRUNABLE / sizeof PRUNABLE[0]; k++) {
            pf_layer_info li;
            pf_net_layer_info(net, PRUNABLE[k], &li);
            pf_param_info pi;
            pf_net_param_info(net, li.weight_param, &pi);
            uint8_t *m = malloc((size_t)pi.size);
            uint8_t *old = malloc((size_t)pi.size);
            pf_net_get_mask(net, li.weight_param, old, pi.size);
            tu_mask(&r, m, pi.size, 0.3);
            CHECK(pf_net_set_mask(net, li.weight_param, m, pi.size) == PF_OK, "set_mask");
            float *v = malloc((size_t)pi.size * sizeof(float));
            pf_net_get_param(net, li.weight_param, v, pi.size);
            for (int64_t i = 0; i < pi.size; i++)
                if (m[i] && !old[i]) CHECK(v[i] == 0.0f, "a regrown weight must start at zero");
            free(v);
            free(m);
            free(old);
        }
        check_pruned_zero(net, "after a mask change");
    }
    pf_net_destroy(net);
}

/* After a mask change, a regrown weight has zero momentum: its next update equals that of a fresh network
 * (no momentum at all) holding the same weights and masks. */
static void regrown_momentum_zero(float threshold) {
    tu_rng r = {21}, data = {3};
    pf_net *a = make(&r, 0.5, threshold);
    float x[B * C * H * W];
    int32_t y[B];
    const pf_sgd_config cfg = {0.05f, 0.9f, 0.0f};
    for (int s = 0; s < 10; s++) {
        tu_fill(&data, x, B * C * H * W, -1.0f, 1.0f);
        for (int i = 0; i < B; i++) y[i] = tu_int(&data, 5);
        pf_net_train_step(a, x, y, B, &cfg, NULL, NULL);
    }
    const int32_t wp = 2; /* the weight of layer 4 */
    pf_param_info pi;
    pf_net_param_info(a, wp, &pi);
    uint8_t *old = malloc((size_t)pi.size), *m = malloc((size_t)pi.size);
    pf_net_get_mask(a, wp, old, pi.size);
    /* prune a third of the trained weights (they had momentum), then regrow them */
    for (int64_t i = 0; i < pi.size; i++) m[i] = old[i] && i % 3 != 0;
    pf_net_set_mask(a, wp, m, pi.size);
    pf_net_set_mask(a, wp, old, pi.size);
    pf_net *b = NULL;
    pf_net_create(LAYERS, NL, C, H, W, &b, NULL, 0);
    int32_t np;
    pf_net_num_params(a, &np);
    for (int32_t p = 0; p < np; p++) {
        pf_param_info q;
        pf_net_param_info(a, p, &q);
        float *v = malloc((size_t)q.size * sizeof(float));
        if (q.is_weight) {
            uint8_t *mm = malloc((size_t)q.size);
            pf_net_get_mask(a, p, mm, q.size);
            pf_net_set_mask(b, p, mm, q.size);
            pf_net_set_sparse_threshold(b, q.layer, threshold);
            free(mm);
        }
        pf_net_get_param(a, p, v, q.size);
        pf_net_set_param(b, p, v, q.size);
        free(v);
    }
    pf_net_train_step(a, x, y, B, &cfg, NULL, NULL);
    pf_net_train_step(b, x, y, B, &cfg, NULL, NULL);
    float *va = malloc((size_t)pi.size * sizeof(float)), *vb = malloc((size_t)pi.size * sizeof(float));
    pf_net_get_param(a, wp, va, pi.size);
    pf_net_get_param(b, wp, vb, pi.size);
    int64_t bad = 0;
    for (int64_t i = 0; i < pi.size; i++)
        if (old[i] && !m[i]) bad += fabsf(va[i] - vb[i]) > 1e-6f;
    CHECK(bad == 0, "%s: %lld regrown weights carried old momentum", threshold > 0 ? "sparse" : "dense", (long long)bad);
    free(va);
    free(vb);
    free(old);
    free(m);
    pf_net_destroy(a);
    pf_net_destroy(b);
}

/* A network that switches dense<->sparse mid-training follows the same trajectory as one that does not. */
static void switch_keeps_state(void) {
    tu_rng r1 = {11}, r2 = {11};
    pf_net *a = make(&r1, 0.4, 0.0f), *b = make(&r2, 0.4, 0.0f);
    tu_rng data = {99};
    const pf_sgd_config cfg = {0.05f, 0.9f, 0.001f};
    float x[B * C * H * W];
    int32_t y[B];
    for (int s = 0; s < 30; s++) {
        if (s == 10 || s == 20)
            for (size_t k = 0; k < sizeof PRUNABLE / sizeof PRUNABLE[0]; k++)
                pf_net_set_sparse_threshold(b, PRUNABLE[k], s == 10 ? 1.0f : 0.0f);
        if (s == 15) {
            pf_layer_info li;
            pf_net_layer_info(b, 4, &li);
            CHECK(li.is_sparse == 1, "layer 4 should run sparse after the threshold change");
        }
        tu_fill(&data, x, B * C * H * W, -1.0f, 1.0f);
        for (int i = 0; i < B; i++) y[i] = tu_int(&data, 5);
        pf_net_train_step(a, x, y, B, &cfg, NULL, NULL);
        pf_net_train_step(b, x, y, B, &cfg, NULL, NULL);
    }
    int32_t np;
    pf_net_num_params(a, &np);
    for (int32_t p = 0; p < np; p++) {
        pf_param_info pi;
        pf_net_param_info(a, p, &pi);
        float *va = malloc((size_t)pi.size * sizeof(float)), *vb = malloc((size_t)pi.size * sizeof(float));
        pf_net_get_param(a, p, va, pi.size);
        pf_net_get_param(b, p, vb, pi.size);
        const double e = tu_err(vb, va, pi.size, 1e-5, 1e-4);
        CHECK(e <= 1.0, "param %d: a dense<->sparse switch changed the trajectory (error %g)", p, e);
        free(va);
        free(vb);
    }
    pf_net_destroy(a);
    pf_net_destroy(b);
}

/* One step against the formula, momentum and weight decay on, at kept weights only. */
static void matches_formula(float threshold) {
    tu_rng r = {5};
    pf_net *net = make(&r, 0.5, threshold);
    float x[B * C * H * W];
    int32_t y[B];
    tu_fill(&r, x, B * C * H * W, -1.0f, 1.0f);
    for (int i = 0; i < B; i++) y[i] = tu_int(&r, 5);
    const pf_sgd_config cfg = {0.1f, 0.5f, 0.01f};
    int32_t np;
    pf_net_num_params(net, &np);
    float *w0[16], *g0[16], *g1[16];
    /* step 1 */
    pf_net_forward_backward(net, x, y, B, NULL, NULL);
    for (int32_t p = 0; p < np; p++) {
        pf_param_info pi;
        pf_net_param_info(net, p, &pi);
        w0[p] = malloc((size_t)pi.size * sizeof(float));
        g0[p] = malloc((size_t)pi.size * sizeof(float));
        g1[p] = malloc((size_t)pi.size * sizeof(float));
        pf_net_get_param(net, p, w0[p], pi.size);
        pf_net_get_grad(net, p, g0[p], pi.size);
    }
    CHECK(pf_net_sgd_step(net, &cfg) == PF_OK, "sgd");
    CHECK(pf_net_sgd_step(net, &cfg) == PF_ERR_STATE, "a second sgd_step without new gradients must fail");
    /* step 2 uses the momentum of step 1 */
    pf_net_forward_backward(net, x, y, B, NULL, NULL);
    for (int32_t p = 0; p < np; p++) {
        pf_param_info pi;
        pf_net_param_info(net, p, &pi);
        pf_net_get_grad(net, p, g1[p], pi.size);
    }
    pf_net_sgd_step(net, &cfg);
    for (int32_t p = 0; p < np; p++) {
        pf_param_info pi;
        pf_net_param_info(net, p, &pi);
        float *want = malloc((size_t)pi.size * sizeof(float)), *got = malloc((size_t)pi.size * sizeof(float));
        for (int64_t i = 0; i < pi.size; i++) {
            const float w = w0[p][i];
            if (pi.is_weight && w == 0.0f && g0[p][i] == 0.0f) {
                want[i] = 0.0f; /* pruned (or an exact zero that stays so: both give 0 here) */
                continue;
            }
            const float v1 = g0[p][i] + cfg.weight_decay * w;
            const float w1 = w - cfg.lr * v1;
            const float v2 = cfg.momentum * v1 + g1[p][i] + cfg.weight_decay * w1;
            want[i] = w1 - cfg.lr * v2;
        }
        pf_net_get_param(net, p, got, pi.size);
        const double e = tu_err(got, want, pi.size, 1e-6, 1e-5);
        CHECK(e <= 1.0, "param %d (%s): SGD differs from the formula (error %g)", p, threshold > 0 ? "sparse" : "dense",
              e);
        free(want);
        free(got);
        free(w0[p]);
        free(g0[p]);
        free(g1[p]);
    }
    pf_net_destroy(net);
}

int main(void) {
    never_revives(0.0f);
    never_revives(1.0f);
    regrown_momentum_zero(0.0f);
    regrown_momentum_zero(1.0f);
    switch_keeps_state();
    matches_formula(0.0f);
    matches_formula(1.0f);
    printf("%d failures\n", tu_failures);
    return tu_failures ? 1 : 0;
}
