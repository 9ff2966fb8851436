/* im2col_generic.c - im2col and col2im by output rows: the valid span of each output row is found once,
 * padding is filled with zeros, and stride 1 becomes a plain copy. */
#include <assert.h>
#include <string.h>

#include "kernels.h"

/* The output columns [lo, hi) of a row whose input column ow*sw - pw + j falls inside [0, W). */
static void valid_span(int32_t OW, int32_t W, int32_t sw, int32_t pw, int32_t j, int32_t *lo, int32_t *hi) {
    int32_t a = 0, b = OW;
    while (a < OW && a * sw - pw + j < 0) a++;
    while (b > a && (b - 1) * sw - pw + j >= W) b--;
    *lo = a;
    *hi = b;
}

void pf_im2col_generic(const float *x, int32_t C, int32_t H, int32_t W, int32_t kh, int32_t kw, int32_t sh,
                       int32_t sw, int32_t ph, int32_t pw, float *cols, int64_t ldc) {
    const int32_t OH = (H + 2 * ph - kh) / sh + 1, OW = (W + 2 * pw - kw) / sw + 1;
    assert(OH > 0 && OW > 0);
    for (int32_t c = 0; c < C; c++)
        for (int32_t i = 0; i < kh; i++)
            for (int32_t j = 0; j < kw; j++) {
                float *dst = cols + (((int64_t)c * kh + i) * kw + j) * ldc;
                int32_t lo, hi;
                valid_span(OW, W, sw, pw, j, &lo, &hi);
                for (int32_t oh = 0; oh < OH; oh++) {
                    float *d = dst + (int64_t)oh * OW;
                    const int32_t h = oh * sh - ph + i;
                    if (h < 0 || h >= H || lo >= hi) {
                        memset(d, 0, (size_t)OW * sizeof(float));
                        continue;
                    }
                    const float *src = x + ((int64_t)c * H + h) * W;
                    if (lo > 0) memset(d, 0, (size_t)lo * sizeof(float));
                    if (sw == 1)
                        memcpy(d + lo, src + lo - pw + j, (size_t)(hi - lo) * sizeof(float));
                    else
                        for (int32_t ow = lo; ow < hi; ow++) d[ow] = src[ow * sw - pw + j];
                    if (hi < OW) memset(d + hi, 0, (size_t)(OW - hi) * sizeof(float));
                }
            }
}

void pf_col2im_generic(const float *cols, int64_t ldc, int32_t C, int32_t H, int32_t W, int32_t kh, int32_t kw,
                       int32_t sh, int32_t sw, int32_t ph, int32_t pw, float *dx) {
    const int32_t OH = (H + 2 * ph - kh) / sh + 1, OW = (W + 2 * pw - kw) / sw + 1;
    assert(OH > 0 && OW > 0);
    for (int32_t c = 0; c < C; c++)
        for (int32_t i = 0; i < kh; i++)
            for (int32_t j = 0; j < kw; j++) {
                const float *srcrow = cols + (((int64_t)c * kh + i) * kw + j) * ldc;
                int32_t lo, hi;
                valid_span(OW, W, sw, pw, j, &lo, &hi);
                for (int32_t oh = 0; oh < OH; oh++) {
                    const int32_t h = oh * sh - ph + i;
                    if (h < 0 || h >= H) continue;
                    const float *s = srcrow + (int64_t)oh * OW;
                    float *d = dx + ((int64_t)c * H + h) * W;
                    for (int32_t ow = lo; ow < hi; ow++) d[ow * sw - pw + j] += s[ow];
                }
            }
}
