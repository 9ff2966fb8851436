/* test_api.c - every error path of the public API returns its code and a message, changes nothing, and never
 * crashes; and results do not depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prunefl/prunefl.h"
#include "testutil.h"

#define LIN(o, b) {PF_LAYER_LINEAR, o, 0, 0, 0, 0, 0, 0, b}
#define CONV(o, k, s, p, b) {PF_LAYER_CONV2D, o, k, k, s, s, p, p, b}
#define POOL(k, p) {PF_LAYER_MAXPOOL2D, 0, k, k, k, k, p, p, 0}
#define RELU {PF_LAYER_RELU, 0, 0, 0, 0, 0, 0, 0, 0}
#define FLAT {PF_LAYER_FLATTEN, 0, 0, 0, 0, 0, 0, 0, 0}

static const pf_layer_spec GOOD[] = {CONV(3, 3, 1, 1, 1), RELU, POOL(2, 0), FLAT, LIN(4, 1)};
enum { NG = 5, B = 4, IN = 2 * 6 * 6 };

static int has(const char *msg, const char *needle) { return msg && strstr(msg, needle) != NULL; }

static void creation_errors(void) {
    char err[256];
    pf_net *net = (pf_net *)0x1;
    CHECK(pf_net_create(GOOD, NG, 2, 6, 6, NULL, err, sizeof err) == PF_ERR_NULL, "NULL out");
    CHECK(pf_net_create(NULL, 1, 2, 6, 6, &net, err, sizeof err) == PF_ERR_NULL && net == NULL, "NULL layers");
    CHECK(pf_net_create(GOOD, 0, 2, 6, 6, &net, err, sizeof err) == PF_ERR_ARG, "no layers");
    CHECK(pf_net_create(GOOD, NG, 0, 6, 6, &net, err, sizeof err) == PF_ERR_SHAPE, "zero input");
    const pf_layer_spec no_flatten[] = {CONV(3, 3, 1, 1, 1), LIN(4, 1)};
    CHECK(pf_net_create(no_flatten, 2, 2, 6, 6, &net, err, sizeof err) == PF_ERR_SHAPE && has(err, "flatten") &&
              has(err, "layer 1"),
          "linear after conv: %s", err);
    const pf_layer_spec big_kernel[] = {CONV(3, 9, 1, 0, 1)};
    CHECK(pf_net_create(big_kernel, 1, 2, 6, 6, &net, err, sizeof err) == PF_ERR_SHAPE && has(err, "larger"),
          "kernel larger than input: %s", err);
    const pf_layer_spec bad_kind[] = {{99, 0, 0, 0, 0, 0, 0, 0, 0}};
    CHECK(pf_net_create(bad_kind, 1, 2, 6, 6, &net, err, sizeof err) == PF_ERR_SHAPE && has(err, "unknown"),
          "unknown kind: %s", err);
    const pf_layer_spec bad_pool[] = {POOL(2, 2)};
    CHECK(pf_net_create(bad_pool, 1, 2, 6, 6, &net, err, sizeof err) == PF_ERR_SHAPE, "pool padding > kernel/2");
    const pf_layer_spec neg_stride[] = {CONV(3, 3, -1, 0, 1)};
    CHECK(pf_net_create(neg_stride, 1, 2, 6, 6, &net, err, sizeof err) == PF_ERR_SHAPE, "negative stride");
    CHECK(pf_net_create(neg_stride, 1, 2, 6, 6, &net, NULL, 0) == PF_ERR_SHAPE, "NULL errbuf is allowed");
    const pf_layer_spec zero_out[] = {FLAT, LIN(0, 1)};
    CHECK(pf_net_create(zero_out, 2, 2, 6, 6, &net, err, sizeof err) == PF_ERR_SHAPE, "zero out_features");
    const pf_layer_spec huge[] = {FLAT, LIN(1 << 30, 0)};
    CHECK(pf_net_create(huge, 2, 8, 1, 1, &net, err, sizeof err) == PF_ERR_SHAPE && has(err, "2^31"),
          "a weight over 2^31 values: %s", err);
}

static void null_handle(void) {
    float f[4];
    int32_t i32;
    int64_t i64;
    uint8_t u8[4];
    const pf_sgd_config cfg = {0.1f, 0.0f, 0.0f};
    pf_layer_info li;
    pf_param_info pi;
    pf_net_destroy(NULL);
    CHECK(pf_net_last_error(NULL) != NULL, "last_error(NULL)");
    CHECK(pf_net_set_threads(NULL, 2) == PF_ERR_NULL, "threads");
    CHECK(pf_net_num_layers(NULL, &i32) == PF_ERR_NULL, "num_layers");
    CHECK(pf_net_layer_info(NULL, 0, &li) == PF_ERR_NULL, "layer_info");
    CHECK(pf_net_num_params(NULL, &i32) == PF_ERR_NULL, "num_params");
    CHECK(pf_net_param_info(NULL, 0, &pi) == PF_ERR_NULL, "param_info");
    CHECK(pf_net_io_sizes(NULL, &i64, &i64) == PF_ERR_NULL, "io_sizes");
    CHECK(pf_net_get_param(NULL, 0, f, 4) == PF_ERR_NULL, "get_param");
    CHECK(pf_net_set_param(NULL, 0, f, 4) == PF_ERR_NULL, "set_param");
    CHECK(pf_net_get_mask(NULL, 0, u8, 4) == PF_ERR_NULL, "get_mask");
    CHECK(pf_net_set_mask(NULL, 0, u8, 4) == PF_ERR_NULL, "set_mask");
    CHECK(pf_net_set_sparse_threshold(NULL, 0, 0.5f) == PF_ERR_NULL, "threshold");
    CHECK(pf_net_reset_momentum(NULL) == PF_ERR_NULL, "reset_momentum");
    CHECK(pf_net_forward(NULL, f, NULL, 1, NULL, NULL, NULL) == PF_ERR_NULL, "forward");
    CHECK(pf_net_forward_backward(NULL, f, &i32, 1, NULL, NULL) == PF_ERR_NULL, "forward_backward");
    CHECK(pf_net_sgd_step(NULL, &cfg) == PF_ERR_NULL, "sgd_step");
    CHECK(pf_net_train_step(NULL, f, &i32, 1, &cfg, NULL, NULL) == PF_ERR_NULL, "train_step");
    CHECK(pf_net_get_grad(NULL, 0, f, 4) == PF_ERR_NULL, "get_grad");
    CHECK(pf_net_set_input_grad(NULL, 1) == PF_ERR_NULL, "set_input_grad");
    CHECK(pf_net_get_input_grad(NULL, f, 4) == PF_ERR_NULL, "get_input_grad");
    CHECK(pf_net_set_importance(NULL, 1) == PF_ERR_NULL, "set_importance");
    CHECK(pf_net_get_grad_sum(NULL, 0, f, 4) == PF_ERR_NULL, "get_grad_sum");
    CHECK(pf_net_reset_grad_sums(NULL) == PF_ERR_NULL, "reset_grad_sums");
    CHECK(strcmp(pf_status_string(PF_ERR_SHAPE), "shape or size mismatch") == 0, "status string");
    CHECK(pf_build_info() != NULL && strlen(pf_build_info()) > 0, "build info");
}

static pf_net *good_net(tu_rng *r) {
    pf_net *net = NULL;
    pf_net_create(GOOD, NG, 2, 6, 6, &net, NULL, 0);
    int32_t np;
    pf_net_num_params(net, &np);
    for (int32_t p = 0; p < np; p++) {
        pf_param_info pi;
        pf_net_param_info(net, p, &pi);
        float *v = malloc((size_t)pi.size * sizeof(float));
        tu_fill(r, v, pi.size, -0.5f, 0.5f);
        pf_net_set_param(net, p, v, pi.size);
        free(v);
    }
    return net;
}

static void call_errors(void) {
    tu_rng r = {1};
    pf_net *net = good_net(&r);
    float x[B * IN], w[54], w2[54];
    int32_t y[B] = {0, 1, 2, 3};
    uint8_t m[54];
    tu_fill(&r, x, B * IN, -1.0f, 1.0f);
    /* parameters: sizes, indices, non-finite values leave the weights unchanged */
    CHECK(pf_net_get_param(net, 0, w, 53) == PF_ERR_SHAPE && has(pf_net_last_error(net), "54"), "wrong n: %s",
          pf_net_last_error(net));
    CHECK(pf_net_get_param(net, 9, w, 54) == PF_ERR_ARG, "bad index");
    CHECK(pf_net_get_param(net, -1, w, 54) == PF_ERR_ARG, "negative index");
    CHECK(pf_net_get_param(net, 0, NULL, 54) == PF_ERR_NULL, "NULL buffer");
    pf_net_get_param(net, 0, w, 54);
    memcpy(w2, w, sizeof w);
    w2[5] = NAN;
    CHECK(pf_net_set_param(net, 0, w2, 54) == PF_ERR_ARG && has(pf_net_last_error(net), "non-finite"), "NaN weight");
    w2[5] = INFINITY;
    CHECK(pf_net_set_param(net, 0, w2, 54) == PF_ERR_ARG, "Inf weight");
    pf_net_get_param(net, 0, w2, 54);
    CHECK(memcmp(w, w2, sizeof w) == 0, "a rejected set_param changed the weights");
    /* masks */
    memset(m, 1, sizeof m);
    CHECK(pf_net_set_mask(net, 0, m, 50) == PF_ERR_SHAPE, "mask of the wrong size");
    m[3] = 2;
    CHECK(pf_net_set_mask(net, 0, m, 54) == PF_ERR_ARG && has(pf_net_last_error(net), "0 or 1"), "mask byte 2");
    CHECK(pf_net_set_mask(net, 1, m, 3) == PF_ERR_ARG && has(pf_net_last_error(net), "bias"), "mask of a bias");
    CHECK(pf_net_get_mask(net, 1, m, 3) == PF_ERR_ARG, "get mask of a bias");
    /* configuration */
    CHECK(pf_net_set_threads(net, 0) == PF_ERR_ARG, "0 threads");
    CHECK(pf_net_set_sparse_threshold(net, 0, 1.5f) == PF_ERR_ARG, "threshold > 1");
    CHECK(pf_net_set_sparse_threshold(net, 0, NAN) == PF_ERR_ARG, "NaN threshold");
    CHECK(pf_net_set_sparse_threshold(net, 1, 0.5f) == PF_ERR_ARG, "threshold of a ReLU");
    CHECK(pf_net_set_sparse_threshold(net, 7, 0.5f) == PF_ERR_ARG, "threshold of a missing layer");
    /* state */
    const pf_sgd_config ok = {0.1f, 0.5f, 0.001f};
    CHECK(pf_net_sgd_step(net, &ok) == PF_ERR_STATE, "sgd before backward");
    CHECK(pf_net_get_grad(net, 0, w, 54) == PF_ERR_STATE, "grad before backward");
    CHECK(pf_net_get_input_grad(net, x, B * IN) == PF_ERR_STATE, "input grad while off");
    CHECK(pf_net_get_grad_sum(net, 0, w, 54) == PF_ERR_STATE, "grad sum while off");
    /* batches */
    int32_t bad[B] = {0, 1, 4, 3};
    CHECK(pf_net_forward_backward(net, x, bad, B, NULL, NULL) == PF_ERR_ARG && has(pf_net_last_error(net), "label 4"),
          "label out of range: %s", pf_net_last_error(net));
    bad[2] = -1;
    CHECK(pf_net_forward(net, x, bad, B, NULL, NULL, NULL) == PF_ERR_ARG, "negative label");
    CHECK(pf_net_forward_backward(net, x, y, 0, NULL, NULL) == PF_ERR_ARG, "batch 0");
    CHECK(pf_net_forward_backward(net, NULL, y, B, NULL, NULL) == PF_ERR_NULL, "x NULL");
    CHECK(pf_net_forward_backward(net, x, NULL, B, NULL, NULL) == PF_ERR_NULL, "labels NULL");
    /* hyper-parameters: rejected before anything changes */
    const pf_sgd_config bad_cfg[] = {{NAN, 0, 0}, {0, 0, 0}, {-0.1f, 0, 0}, {INFINITY, 0, 0}, {0.1f, -0.1f, 0},
                                     {0.1f, 1.0f, 0}, {0.1f, NAN, 0}, {0.1f, 0, -1e-3f}, {0.1f, 0, INFINITY}};
    for (size_t k = 0; k < sizeof bad_cfg / sizeof bad_cfg[0]; k++) {
        CHECK(pf_net_train_step(net, x, y, B, &bad_cfg[k], NULL, NULL) == PF_ERR_ARG, "bad SGD config %zu", k);
        pf_net_get_param(net, 0, w2, 54);
        CHECK(memcmp(w, w2, sizeof w) == 0, "a rejected train_step changed the weights (config %zu)", k);
    }
    CHECK(pf_net_train_step(net, x, y, B, NULL, NULL, NULL) == PF_ERR_NULL, "NULL config");
    CHECK(pf_net_train_step(net, x, y, B, &ok, NULL, NULL) == PF_OK, "a good step after errors: %s",
          pf_net_last_error(net));
    CHECK(pf_net_last_error(net)[0] == '\0', "success clears the message");
    CHECK(pf_net_get_input_grad(net, x, B * IN) == PF_ERR_STATE, "input grad still off");
    pf_net_set_input_grad(net, 1);
    pf_net_forward_backward(net, x, y, B, NULL, NULL);
    float gx[B * IN];
    CHECK(pf_net_get_input_grad(net, gx, B * IN - 1) == PF_ERR_SHAPE, "input grad of the wrong size");
    CHECK(pf_net_get_input_grad(net, gx, B * IN) == PF_OK, "input grad");
    /* the batch may grow and shrink */
    float xl[3 * B * IN];
    int32_t yl[3 * B];
    tu_fill(&r, xl, 3 * B * IN, -1.0f, 1.0f);
    for (int i = 0; i < 3 * B; i++) yl[i] = i % 4;
    CHECK(pf_net_train_step(net, xl, yl, 3 * B, &ok, NULL, NULL) == PF_OK, "bigger batch");
    CHECK(pf_net_train_step(net, xl, yl, 1, &ok, NULL, NULL) == PF_OK, "batch of one");
    pf_net_destroy(net);
}

/* The same steps with 1, 2 and 4 threads, dense and sparse, give the same weights (within rounding). */
static void thread_counts(void) {
    float *ref[4] = {NULL};
    for (int sparse = 0; sparse < 2; sparse++)
        for (int t = 1; t <= 4; t *= 2) {
            tu_rng r = {77};
            pf_net *net = good_net(&r);
            pf_net_set_threads(net, t);
            uint8_t m[54];
            tu_mask(&r, m, 54, 0.5);
            pf_net_set_mask(net, 0, m, 54);
            pf_net_set_sparse_threshold(net, 0, sparse ? 1.0f : 0.0f);
            pf_net_set_sparse_threshold(net, 4, sparse ? 1.0f : 0.0f);
            float x[B * IN];
            int32_t y[B] = {3, 2, 1, 0};
            const pf_sgd_config cfg = {0.1f, 0.9f, 0.0f};
            for (int s = 0; s < 5; s++) {
                tu_fill(&r, x, B * IN, -1.0f, 1.0f);
                pf_net_train_step(net, x, y, B, &cfg, NULL, NULL);
            }
            float *w = malloc(54 * sizeof(float));
            pf_net_get_param(net, 0, w, 54);
            if (t == 1) {
                ref[sparse] = w;
            } else {
                CHECK(tu_err(w, ref[sparse], 54, 1e-5, 1e-4) <= 1.0, "%d threads (%s) differ from 1 thread", t,
                      sparse ? "sparse" : "dense");
                free(w);
            }
            pf_net_destroy(net);
        }
    free(ref[0]);
    free(ref[1]);
}

/* Layers big enough that the sparse products split over threads (the fused linear backward with per-thread dX^T,
 * the direct convolution by output channels and by input channels), with a batch that grows and shrinks: 1, 2 and
 * 3 threads give the same weights and input gradients (within rounding). */
static void thread_counts_large(void) {
    enum { C = 3, H = 10, BL = 20, INL = C * H * H, NP = 6 };
    const pf_layer_spec layers[] = {CONV(12, 5, 1, 2, 1), RELU, POOL(2, 0), FLAT, LIN(300, 1), RELU, LIN(7, 1)};
    const int32_t batches[] = {BL, 7, BL};
    float *ref[NP + 1] = {NULL};
    for (int t = 1; t <= 3; t++) {
        tu_rng r = {4242};
        pf_net *net = NULL;
        CHECK(pf_net_create(layers, 7, C, H, H, &net, NULL, 0) == PF_OK, "large net");
        if (!net) return;
        CHECK(pf_net_set_threads(net, t) == PF_OK, "threads");
        CHECK(pf_net_set_input_grad(net, 1) == PF_OK, "input grad");
        tu_randomize_net(&r, net, 0.3f, 0.3, 1.0f);
        static float x[BL * INL];
        int32_t y[BL];
        for (int b = 0; b < BL; b++) y[b] = b % 7;
        const pf_sgd_config cfg = {0.05f, 0.9f, 0.0f};
        for (int s = 0; s < 3; s++) {
            tu_fill(&r, x, BL * INL, -1.0f, 1.0f);
            CHECK(pf_net_train_step(net, x, y, batches[s], &cfg, NULL, NULL) == PF_OK, "step: %s",
                  pf_net_last_error(net));
        }
        pf_layer_info li;
        pf_net_layer_info(net, 4, &li);
        CHECK(li.is_sparse == 1, "the linear layer runs sparse");
        for (int p = 0; p <= NP; p++) {
            pf_param_info pi;
            int64_t n = (int64_t)BL * INL;
            if (p < NP) {
                pf_net_param_info(net, p, &pi);
                n = pi.size;
            }
            float *v = malloc((size_t)n * sizeof(float));
            if (p < NP)
                pf_net_get_param(net, p, v, n);
            else
                CHECK(pf_net_get_input_grad(net, v, n) == PF_OK, "input grad: %s", pf_net_last_error(net));
            if (t == 1) {
                ref[p] = v;
            } else {
                CHECK(tu_err(v, ref[p], n, 1e-5, 1e-4) <= 1.0, "%d threads: %s %d differs from 1 thread", t,
                      p < NP ? "parameter" : "input gradient", p);
                free(v);
            }
        }
        pf_net_destroy(net);
    }
    for (int p = 0; p <= NP; p++) free(ref[p]);
}

/* A mask drawn at density d keeps round(d x size) weights; a threshold of d takes it sparse, though the float d
 * times the size falls short of that count (0.1f x 15 = 1.50000002 < 2 kept). */
static void threshold_rounding(void) {
    const pf_layer_spec layers[] = {FLAT, LIN(5, 0)};
    pf_net *net = NULL;
    CHECK(pf_net_create(layers, 2, 3, 1, 1, &net, NULL, 0) == PF_OK, "net of 15 weights");
    if (!net) return;
    uint8_t m[15] = {0};
    m[3] = m[11] = 1;
    CHECK(pf_net_set_mask(net, 0, m, 15) == PF_OK, "mask");
    CHECK(pf_net_set_sparse_threshold(net, 1, 0.1f) == PF_OK, "threshold");
    pf_layer_info li;
    pf_net_layer_info(net, 1, &li);
    CHECK(li.is_sparse == 1, "2 of 15 kept at threshold 0.1 runs dense");
    m[7] = 1; /* 3 kept: more than round(1.5) */
    CHECK(pf_net_set_mask(net, 0, m, 15) == PF_OK, "mask");
    pf_net_layer_info(net, 1, &li);
    CHECK(li.is_sparse == 0, "3 of 15 kept at threshold 0.1 runs sparse");
    pf_net_destroy(net);
}

int main(void) {
    creation_errors();
    threshold_rounding();
    null_handle();
    call_errors();
    thread_counts();
    thread_counts_large();
    printf("%d failures\n", tu_failures);
    return tu_failures ? 1 : 0;
}
