/* test_grad.c - backprop against finite differences, through the public API, for every layer kind (linear,
 * conv2d with stride/padding/rectangular kernels, max-pool with padding, ReLU, flatten, softmax
 * cross-entropy), in the dense and the sparse path, at kept weights, biases and the input; and the
 * importance sums (dense gradient at pruned weights) against the gradient of the same network unmasked.
 * Each case runs twice on the same net, input and points: importance on (convs through im2col) and off (sparse
 * stride-1 convs direct on batch-innermost planes, sparse linear layers through the fused backward). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prunefl/prunefl.h"
#include "testutil.h"

enum { B = 3 };

typedef struct netdef {
    const char *name;
    pf_layer_spec layers[8];
    int32_t n, c, h, w;
} netdef;

#define LIN(o, b) {PF_LAYER_LINEAR, o, 0, 0, 0, 0, 0, 0, b}
#define CONV(o, kh, kw, sh, sw, ph, pw, b) {PF_LAYER_CONV2D, o, kh, kw, sh, sw, ph, pw, b}
#define POOL(kh, kw, sh, sw, ph, pw) {PF_LAYER_MAXPOOL2D, 0, kh, kw, sh, sw, ph, pw, 0}
#define RELU {PF_LAYER_RELU, 0, 0, 0, 0, 0, 0, 0, 0}
#define FLAT {PF_LAYER_FLATTEN, 0, 0, 0, 0, 0, 0, 0, 0}

static const netdef NETS[] = {
    {"mlp", {FLAT, LIN(5, 1), RELU, LIN(4, 0)}, 4, 2, 3, 2},
    {"conv-pool", {CONV(3, 3, 3, 1, 1, 1, 1, 1), RELU, POOL(2, 2, 2, 2, 0, 0), FLAT, LIN(4, 1)}, 5, 2, 6, 6},
    {"conv-stride",
     {CONV(4, 3, 2, 2, 1, 0, 1, 1), POOL(3, 3, 1, 1, 1, 1), CONV(2, 1, 1, 1, 1, 0, 0, 0), RELU, FLAT, LIN(3, 1)},
     6, 3, 7, 5},
    /* stride 1, rectangular kernels, padding up to kernel-1 on one axis and none on the other: the direct path */
    {"conv-direct", {CONV(3, 3, 2, 1, 1, 2, 1, 1), RELU, CONV(2, 2, 3, 1, 1, 0, 2, 1), FLAT, LIN(3, 1)}, 5, 2, 5, 4},
};

static float loss_of(pf_net *net, const float *x, const int32_t *y) {
    float loss = 0.0f;
    CHECK(pf_net_forward(net, x, y, B, NULL, &loss, NULL) == PF_OK, "forward: %s", pf_net_last_error(net));
    return loss;
}

/* Central differences of the loss along v[i] at steps eps and eps/2, written back through set(). Where they
 * disagree the loss is not smooth there (a max-pool or ReLU switch inside the step): such points are counted
 * as kinks and skipped, and a test fails if more than 5% of its points are kinks. */
typedef void (*setter)(pf_net *net, int32_t p, float *v, int64_t n);
static void set_param_cb(pf_net *net, int32_t p, float *v, int64_t n) { pf_net_set_param(net, p, v, n); }
static void set_none(pf_net *net, int32_t p, float *v, int64_t n) { (void)net, (void)p, (void)v, (void)n; }
static int kinks, points;

static int fd_check(pf_net *net, const float *x, const int32_t *y, float *v, int64_t i, int32_t p, int64_t n,
                    setter set, float analytic, double *num_out) {
    double num[2];
    for (int h = 0; h < 2; h++) {
        const float eps = h ? 1e-3f : 2e-3f, keep = v[i];
        v[i] = keep + eps;
        set(net, p, v, n);
        const double lp = loss_of(net, x, y);
        v[i] = keep - eps;
        set(net, p, v, n);
        const double lm = loss_of(net, x, y);
        v[i] = keep;
        set(net, p, v, n);
        num[h] = (lp - lm) / (2.0 * eps);
    }
    *num_out = num[1];
    points++;
    const double tol0 = 2e-3 + 2e-2 * fabs(num[0]), tol1 = 4e-3 + 2e-2 * fabs(num[1]);
    if (fabs(num[0] - num[1]) > tol0) {
        kinks++;
        return 1;
    }
    return fabs(num[1] - analytic) <= tol1 || fabs(num[0] - analytic) <= tol0;
}

/* importance on: every conv layer runs im2col (the dense gradient sums need it); off: sparse stride-1 convs run
 * directly on batch-innermost planes and sparse linear layers their fused backward */
static void check_net(const netdef *d, double density, float threshold, int importance, tu_rng *r) {
    pf_net *net = NULL;
    char err[256];
    CHECK(pf_net_create(d->layers, d->n, d->c, d->h, d->w, &net, err, sizeof err) == PF_OK, "%s: %s", d->name, err);
    if (!net) return;
    int64_t in_size, out_size;
    pf_net_io_sizes(net, &in_size, &out_size);
    tu_randomize_net(r, net, 0.8f, density, threshold);
    int32_t np;
    pf_net_num_params(net, &np);
    float *x = malloc((size_t)(B * in_size) * sizeof(float));
    tu_fill(r, x, B * in_size, -1.0f, 1.0f);
    int32_t y[B];
    for (int i = 0; i < B; i++) y[i] = tu_int(r, (int32_t)out_size);
    CHECK(pf_net_set_input_grad(net, 1) == PF_OK, "input grad");
    CHECK(pf_net_set_importance(net, importance) == PF_OK, "importance");
    float loss;
    CHECK(pf_net_forward_backward(net, x, y, B, &loss, NULL) == PF_OK, "fb: %s", pf_net_last_error(net));
    /* parameters */
    for (int32_t p = 0; p < np; p++) {
        pf_param_info pi;
        pf_net_param_info(net, p, &pi);
        float *v = malloc((size_t)pi.size * sizeof(float)), *g = malloc((size_t)pi.size * sizeof(float));
        uint8_t *m = malloc((size_t)pi.size);
        pf_net_get_param(net, p, v, pi.size);
        pf_net_get_grad(net, p, g, pi.size);
        if (pi.is_weight)
            pf_net_get_mask(net, p, m, pi.size);
        else
            memset(m, 1, (size_t)pi.size);
        for (int64_t i = 0; i < pi.size; i++) {
            if (!m[i]) {
                CHECK(g[i] == 0.0f, "%s param %d: gradient %g at pruned index %lld", d->name, p, (double)g[i],
                      (long long)i);
                continue;
            }
            double num;
            CHECK(fd_check(net, x, y, v, i, p, pi.size, set_param_cb, g[i], &num), "%s (density %g, %s, importance %d) "
                  "param %d[%lld]: backprop %g, finite difference %g", d->name, density,
                  threshold > 0 ? "sparse" : "dense", importance, p, (long long)i, (double)g[i], num);
        }
        free(v);
        free(g);
        free(m);
    }
    /* input */
    float *gx = malloc((size_t)(B * in_size) * sizeof(float));
    CHECK(pf_net_forward_backward(net, x, y, B, &loss, NULL) == PF_OK, "fb");
    CHECK(pf_net_get_input_grad(net, gx, B * in_size) == PF_OK, "input grad: %s", pf_net_last_error(net));
    for (int64_t i = 0; i < B * in_size; i++) {
        double num;
        CHECK(fd_check(net, x, y, x, i, 0, 0, set_none, gx[i], &num),
              "%s (importance %d) input[%lld]: backprop %g, finite difference %g", d->name, importance, (long long)i,
              (double)gx[i], num);
    }
    if (!importance) {
        free(gx);
        free(x);
        pf_net_destroy(net);
        return;
    }
    /* importance: two forward_backward calls were summed; an unmasked copy with the same (zeroed) weights
     * gives the dense gradient at every position */
    pf_net *full = NULL;
    pf_net_create(d->layers, d->n, d->c, d->h, d->w, &full, NULL, 0);
    for (int32_t p = 0; p < np; p++) {
        pf_param_info pi;
        pf_net_param_info(net, p, &pi);
        float *v = malloc((size_t)pi.size * sizeof(float));
        pf_net_get_param(net, p, v, pi.size); /* zero at pruned */
        pf_net_set_param(full, p, v, pi.size);
        free(v);
    }
    pf_net_forward_backward(full, x, y, B, NULL, NULL);
    for (int32_t p = 0; p < np; p++) {
        pf_param_info pi;
        pf_net_param_info(net, p, &pi);
        float *s = malloc((size_t)pi.size * sizeof(float)), *g = malloc((size_t)pi.size * sizeof(float));
        CHECK(pf_net_get_grad_sum(net, p, s, pi.size) == PF_OK, "grad sum");
        pf_net_get_grad(full, p, g, pi.size);
        for (int64_t i = 0; i < pi.size; i++) g[i] *= 2.0f;
        const double e = tu_err(s, g, pi.size, 1e-6, 1e-4);
        CHECK(e <= 1.0, "%s (density %g, %s) param %d: importance sum differs from the dense gradient (%g)", d->name,
              density, threshold > 0 ? "sparse" : "dense", p, e);
        free(s);
        free(g);
    }
    pf_net_destroy(full);
    free(gx);
    free(x);
    pf_net_destroy(net);
}

int main(void) {
    tu_rng r = {42};
    const double densities[] = {1.0, 0.6, 0.2};
    for (size_t d = 0; d < sizeof NETS / sizeof NETS[0]; d++)
        for (size_t k = 0; k < sizeof densities / sizeof densities[0]; k++)
            for (int sparse = 0; sparse < 2; sparse++) {
                tu_rng same = r; /* the same net, input and points with importance off: only the path differs */
                check_net(&NETS[d], densities[k], sparse ? 1.0f : 0.0f, 1, &r);
                check_net(&NETS[d], densities[k], sparse ? 1.0f : 0.0f, 0, &same);
            }
    printf("finite differences: %d points, %d kinks skipped\n", points, kinks);
    CHECK(kinks * 20 <= points, "too many non-smooth points: %d of %d", kinks, points);
    printf("%d failures\n", tu_failures);
    return tu_failures ? 1 : 0;
}
