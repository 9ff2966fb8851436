/* test_kept.c - kept values in mask order and the in-place importance update, dense and sparse layers alike,
 * against the dense parameters and gradient sums (the reference). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prunefl/prunefl.h"
#include "testutil.h"

#define LIN(o, b) {PF_LAYER_LINEAR, o, 0, 0, 0, 0, 0, 0, b}
#define CONV(o, k, s, p, b) {PF_LAYER_CONV2D, o, k, k, s, s, p, p, b}
#define RELU {PF_LAYER_RELU, 0, 0, 0, 0, 0, 0, 0, 0}
#define FLAT {PF_LAYER_FLATTEN, 0, 0, 0, 0, 0, 0, 0, 0}

static const pf_layer_spec NET[] = {CONV(3, 3, 1, 1, 1), RELU, FLAT, LIN(5, 1)};
enum { NL = 4, B = 3, C = 2, H = 5, W = 5 };

static void kept_round_trip(float threshold, double density) {
    tu_rng r = {42};
    pf_net *net = NULL;
    char err[256];
    CHECK(pf_net_create(NET, NL, C, H, W, &net, err, sizeof err) == PF_OK, "create: %s", err);
    tu_randomize_net(&r, net, 0.5f, density, threshold);
    int32_t np = 0;
    pf_net_num_params(net, &np);
    for (int32_t p = 0; p < np; p++) {
        pf_param_info info;
        pf_net_param_info(net, p, &info);
        float *dense = malloc((size_t)info.size * sizeof(float));
        uint8_t *mask = malloc((size_t)info.size);
        pf_net_get_param(net, p, dense, info.size);
        if (info.is_weight)
            pf_net_get_mask(net, p, mask, info.size);
        else
            memset(mask, 1, (size_t)info.size);
        int64_t n = -1, want = 0;
        for (int64_t i = 0; i < info.size; i++) want += mask[i] != 0;
        CHECK(pf_net_num_kept(net, p, &n) == PF_OK && n == want, "param %d: %lld kept, want %lld", p, (long long)n,
              (long long)want);
        float *kept = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
        CHECK(pf_net_get_kept(net, p, kept, n) == PF_OK, "get_kept %d", p);
        int64_t j = 0, bad = 0;
        for (int64_t i = 0; i < info.size; i++)
            if (mask[i]) bad += kept[j++] != dense[i];
        CHECK(bad == 0, "param %d (threshold %g): %lld kept values differ from the dense ones", p, threshold,
              (long long)bad);
        for (int64_t k = 0; k < n; k++) kept[k] = (float)k * 0.25f - 1.0f;
        CHECK(pf_net_set_kept(net, p, kept, n) == PF_OK, "set_kept %d", p);
        pf_net_get_param(net, p, dense, info.size);
        j = 0, bad = 0;
        for (int64_t i = 0; i < info.size; i++) bad += mask[i] ? dense[i] != kept[j++] : dense[i] != 0.0f;
        CHECK(bad == 0, "param %d: set_kept then get_param: %lld positions differ", p, (long long)bad);
        CHECK(pf_net_set_kept(net, p, kept, n + 1) == PF_ERR_SHAPE, "wrong count must be refused");
        if (n > 0) {
            kept[0] = NAN;
            CHECK(pf_net_set_kept(net, p, kept, n) == PF_ERR_ARG, "NaN must be refused");
        }
        free(kept);
        free(mask);
        free(dense);
    }
    pf_net_destroy(net);
}

static void importance_in_place(float threshold, int kept_only) {
    tu_rng r = {7};
    pf_net *net = NULL;
    char err[256];
    CHECK(pf_net_create(NET, NL, C, H, W, &net, err, sizeof err) == PF_OK, "create: %s", err);
    tu_randomize_net(&r, net, 0.5f, 0.4, threshold);
    float x[B * C * H * W];
    int32_t y[B] = {0, 3, 4};
    tu_fill(&r, x, B * C * H * W, -1.0f, 1.0f);
    float z0 = 0.0f;
    CHECK(pf_net_add_sq_grad_sum(net, 0, &z0, 1, 1.0f, 0) == PF_ERR_STATE, "importance off must be refused");
    CHECK(pf_net_set_importance(net, 1) == PF_OK, "importance on");
    float loss = 0.0f;
    int32_t correct = 0;
    for (int s = 0; s < 2; s++)
        CHECK(pf_net_forward_backward(net, x, y, B, &loss, &correct) == PF_OK, "forward_backward: %s",
              pf_net_last_error(net));
    int32_t np = 0;
    pf_net_num_params(net, &np);
    for (int32_t p = 0; p < np; p++) {
        pf_param_info info;
        pf_net_param_info(net, p, &info);
        float *g = malloc((size_t)info.size * sizeof(float));
        float *z = malloc((size_t)info.size * sizeof(float));
        float *want = malloc((size_t)info.size * sizeof(float));
        uint8_t *mask = malloc((size_t)info.size);
        pf_net_get_grad_sum(net, p, g, info.size);
        if (info.is_weight)
            pf_net_get_mask(net, p, mask, info.size);
        else
            memset(mask, 1, (size_t)info.size);
        for (int64_t i = 0; i < info.size; i++) {
            z[i] = 0.5f;
            want[i] = (!kept_only || mask[i]) ? 0.5f + 6.0f * (g[i] * g[i]) : 0.5f;
        }
        CHECK(pf_net_add_sq_grad_sum(net, p, z, info.size, 6.0f, kept_only) == PF_OK, "add_sq %d", p);
        {
            /* the step gradient (zero at pruned positions) through pf_net_add_sq_grad, against pf_net_get_grad */
            float *gs = malloc((size_t)info.size * sizeof(float));
            float *zs = calloc((size_t)info.size, sizeof(float));
            float *ws = malloc((size_t)info.size * sizeof(float));
            pf_net_get_grad(net, p, gs, info.size);
            for (int64_t i = 0; i < info.size; i++) ws[i] = 2.0f * (gs[i] * gs[i]);
            CHECK(pf_net_add_sq_grad(net, p, zs, info.size, 2.0f) == PF_OK, "add_sq_grad %d", p);
            CHECK(tu_err(zs, ws, info.size, 1e-7, 1e-6) <= 1.0, "param %d: step importance differs", p);
            for (int64_t i = 0; i < info.size; i++)
                if (!mask[i]) CHECK(zs[i] == 0.0f, "param %d: step importance at pruned %lld", p, (long long)i);
            CHECK(pf_net_add_sq_grad(net, p, zs, info.size + 1, 1.0f) == PF_ERR_SHAPE, "wrong size refused");
            free(gs);
            free(zs);
            free(ws);
        }
        CHECK(tu_err(z, want, info.size, 1e-7, 1e-6) <= 1.0, "param %d (kept_only %d): z differs", p, kept_only);
        CHECK(pf_net_add_sq_grad_sum(net, p, z, info.size, -1.0f, 0) == PF_ERR_ARG, "negative scale refused");
        CHECK(pf_net_add_sq_grad_sum(net, p, z, info.size - 1, 1.0f, 0) == PF_ERR_SHAPE, "wrong size refused");
        free(g);
        free(z);
        free(want);
        free(mask);
    }
    pf_net_destroy(net);
}

int main(void) {
    for (int t = 0; t < 2; t++) { /* threshold 0: every layer dense; 1: every layer sparse */
        kept_round_trip((float)t, 0.3);
        kept_round_trip((float)t, 0.0);
        kept_round_trip((float)t, 1.0);
        importance_in_place((float)t, 0);
        importance_in_place((float)t, 1);
    }
    printf("%d failures\n", tu_failures);
    return tu_failures ? 1 : 0;
}
