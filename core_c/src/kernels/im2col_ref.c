/* im2col_ref.c - reference im2col and its adjoint col2im, straight from the definition. */
#include <assert.h>

#include "kernels.h"

void pf_im2col_ref(const float *x, int32_t C, int32_t H, int32_t W, int32_t kh, int32_t kw, int32_t sh,
                   int32_t sw, int32_t ph, int32_t pw, float *cols, int64_t ldc) {
    const int32_t OH = (H + 2 * ph - kh) / sh + 1, OW = (W + 2 * pw - kw) / sw + 1;
    assert(OH > 0 && OW > 0);
    for (int32_t c = 0; c < C; c++)
        for (int32_t i = 0; i < kh; i++)
            for (int32_t j = 0; j < kw; j++) {
                const int64_t k = ((int64_t)c * kh + i) * kw + j;
                for (int32_t oh = 0; oh < OH; oh++)
                    for (int32_t ow = 0; ow < OW; ow++) {
                        const int32_t h = oh * sh - ph + i, w = ow * sw - pw + j;
                        const float v = (h >= 0 && h < H && w >= 0 && w < W) ? x[((int64_t)c * H + h) * W + w] : 0.0f;
                        cols[k * ldc + (int64_t)oh * OW + ow] = v;
                    }
            }
}

void pf_col2im_ref(const float *cols, int64_t ldc, int32_t C, int32_t H, int32_t W, int32_t kh, int32_t kw,
                   int32_t sh, int32_t sw, int32_t ph, int32_t pw, float *dx) {
    const int32_t OH = (H + 2 * ph - kh) / sh + 1, OW = (W + 2 * pw - kw) / sw + 1;
    assert(OH > 0 && OW > 0);
    for (int32_t c = 0; c < C; c++)
        for (int32_t i = 0; i < kh; i++)
            for (int32_t j = 0; j < kw; j++) {
                const int64_t k = ((int64_t)c * kh + i) * kw + j;
                for (int32_t oh = 0; oh < OH; oh++)
                    for (int32_t ow = 0; ow < OW; ow++) {
                        const int32_t h = oh * sh - ph + i, w = ow * sw - pw + j;
                        if (h >= 0 && h < H && w >= 0 && w < W)
                            dx[((int64_t)c * H + h) * W + w] += cols[k * ldc + (int64_t)oh * OW + ow];
                    }
            }
}
