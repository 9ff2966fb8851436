/* testutil.c - see testutil.h */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>

int tu_failures = 0;

uint64_t tu_next(tu_rng *r) { /* splitmix64 */
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float tu_uniform(tu_rng *r, float lo, float hi) {
    return lo + (hi - lo) * (float)((double)(tu_next(r) >> 11) * (1.0 / 9007199254740992.0));
}

int32_t tu_int(tu_rng *r, int32_t n) { return (int32_t)(tu_next(r) % (uint64_t)n); }

void tu_fill(tu_rng *r, float *x, int64_t n, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) x[i] = tu_uniform(r, lo, hi);
}

void tu_mask(tu_rng *r, uint8_t *mask, int64_t n, double density) {
    for (int64_t i = 0; i < n; i++) mask[i] = density >= 1.0 ? 1 : (tu_uniform(r, 0.0f, 1.0f) < density);
}

void tu_randomize_net(tu_rng *r, pf_net *net, float scale, double density, float threshold) {
    int32_t np = 0;
    CHECK(pf_net_num_params(net, &np) == PF_OK, "num_params");
    for (int32_t p = 0; p < np; p++) {
        pf_param_info pi;
        CHECK(pf_net_param_info(net, p, &pi) == PF_OK, "param_info %d", p);
        float *v = malloc((size_t)pi.size * sizeof(float));
        tu_fill(r, v, pi.size, -scale, scale);
        if (pi.is_weight) {
            uint8_t *m = malloc((size_t)pi.size);
            tu_mask(r, m, pi.size, density);
            CHECK(pf_net_set_mask(net, p, m, pi.size) == PF_OK, "set_mask %d", p);
            free(m);
            CHECK(pf_net_set_sparse_threshold(net, pi.layer, threshold) == PF_OK, "threshold %d", pi.layer);
        }
        CHECK(pf_net_set_param(net, p, v, pi.size) == PF_OK, "set_param %d", p);
        free(v);
    }
}

double tu_err(const float *a, const float *b, int64_t n, double atol, double rtol) {
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        const double e = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
        if (e > worst) worst = e;
    }
    return worst;
}
