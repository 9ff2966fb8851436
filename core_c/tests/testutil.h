/* testutil.h - a seeded PRNG, random sparse matrices and check macros for the C tests. */
#ifndef PRUNEFL_TESTUTIL_H
#define PRUNEFL_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>

#include "prunefl/prunefl.h"

typedef struct tu_rng {
    uint64_t s;
} tu_rng;

uint64_t tu_next(tu_rng *r);
float tu_uniform(tu_rng *r, float lo, float hi); /* [lo, hi) */
int32_t tu_int(tu_rng *r, int32_t n);           /* [0, n) */
void tu_fill(tu_rng *r, float *x, int64_t n, float lo, float hi);
/* Random mask of M x K with about density*M*K ones (exactly 0 for density 0, all for 1). */
void tu_mask(tu_rng *r, uint8_t *mask, int64_t n, double density);
/* Every parameter of net uniform in [-scale, scale); every weight masked with about `density` kept and its layer's
 * sparse threshold set to `threshold`; each call CHECKed. */
void tu_randomize_net(tu_rng *r, pf_net *net, float scale, double density, float threshold);
/* max |a-b| / (atol + rtol*|b|) over n values: <= 1 passes */
double tu_err(const float *a, const float *b, int64_t n, double atol, double rtol);

extern int tu_failures;
#define CHECK(cond, ...)                                                                                       \
    do {                                                                                                       \
        if (!(cond)) {                                                                                         \
            tu_failures++;                                                                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                               \
            fprintf(stderr, __VA_ARGS__);                                                                      \
            fprintf(stderr, "\n");                                                                             \
        }                                                                                                      \
    } while (0)

#endif
