/* testutil.c - see testutil.h */
#include "testutil.h"

#include <math.h>

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

double tu_err(const float *a, const float *b, int64_t n, double atol, double rtol) {
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        const double e = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
        if (e > worst) worst = e;
    }
    return worst;
}
