/* im2col_ref.c - reference im2col and its adjoint col2im, straight from the definition: one walk over every
 * (channel, kernel offset, output position), which copies x into cols (im2col) or adds cols back into x (col2im). */
#include <assert.h>
#include <stddef.h>

#include "kernels.h"

/* im2col: x -> cols_out (dx and cols_in NULL); col2im: cols_in added into dx (x and cols_out NULL) */
static void walk(const float *x, float *dx, int32_t C, int32_t H, int32_t W, int32_t kh, int32_t kw, int32_t sh,
                 int32_t sw, int32_t ph, int32_t pw, const float *cols_in, float *cols_out, int64_t ldc) {
    const int32_t OH = (H + 2 * ph - kh) / sh + 1, OW = (W + 2 * pw - kw) / sw + 1;
    assert(OH > 0 && OW > 0);
    for (int32_t c = 0; c < C; c++)
        for (int32_t i = 0; i < kh; i++)
            for (int32_t j = 0; j < kw; j++) {
                const int64_t k = ((int64_t)c * kh + i) * kw + j;
                for (int32_t oh = 0; oh < OH; oh++)
                    for (int32_t ow = 0; ow < OW; ow++) {
                        const int32_t h = oh * sh - ph + i, w = ow * sw - pw + j;
                        const int inside = h >= 0 && h < H && w >= 0 && w < W;
                        const int64_t at = k * ldc + (int64_t)oh * OW + ow, xi = ((int64_t)c * H + h) * W + w;
                        if (cols_out)
                            cols_out[at] = inside ? x[xi] : 0.0f;
                        else if (inside)
                            dx[xi] += cols_in[at];
                    }
            }
}

void pf_im2col_ref(const float *x, int32_t C, int32_t H, int32_t W, int32_t kh, int32_t kw, int32_t sh,
                   int32_t sw, int32_t ph, int32_t pw, float *cols, int64_t ldc) {
    walk(x, NULL, C, H, W, kh, kw, sh, sw, ph, pw, NULL, cols, ldc);
}

void pf_col2im_ref(const float *cols, int64_t ldc, int32_t C, int32_t H, int32_t W, int32_t kh, int32_t kw,
                   int32_t sh, int32_t sw, int32_t ph, int32_t pw, float *dx) {
    walk(NULL, dx, C, H, W, kh, kw, sh, sw, ph, pw, cols, NULL, ldc);
}
