/* int8 pooling (lowering/kernels.py avgpool / avgpool_acc, maxpool; opcodes avgpool_s8,
 * maxpool_s8). x and y NHWC int8, row-major.
 *
 * avgpool: acc = sum over the window taps of (xpad - x_zero), padding contributing 0
 *   (|acc| <= kh * kw * 255, which the check keeps inside int32); y = requantize(acc, m,
 *   y_zero, lo, hi) with m one float32 scalar, or one per output position (m[oy * wo + ox],
 *   an (ho, wo) array) when m_per_position is set.
 * maxpool: y = max over the window of xpad, padding holding -128 (it never wins: a window
 *   wholly in the padding gives -128). No requantization.
 * Ranges assumed (verified at init): windows, strides >= 1; pads >= 0 with h + top + bottom
 * and w + left + right <= INT32_MAX; the output dims are the reference's; zero points and
 * lo <= hi int8; m finite.
 */
#ifndef JT_POOL_S8_H
#define JT_POOL_S8_H

#include <stdint.h>

#include "jaxtiny.h"
#include "jt_conv_s8.h"

typedef struct {
  int32_t window_h, window_w, stride_h, stride_w;
  int32_t pad_top, pad_bottom, pad_left, pad_right;
  int32_t x_zero, y_zero, lo, hi;  /* avgpool only */
  int32_t m_per_position;          /* avgpool only: 0 scalar m, 1 m of (ho, wo) */
} jt_pool_s8_params;

/* y (y_dims) = avgpool(x (x_dims)); y must not overlap x. */
jt_status jt_avgpool_s8(const int8_t *x, const jt_dims4 *x_dims, const float *m,
                        const jt_pool_s8_params *p, int8_t *y, const jt_dims4 *y_dims);

/* y (y_dims) = maxpool(x (x_dims)); y must not overlap x. */
jt_status jt_maxpool_s8(const int8_t *x, const jt_dims4 *x_dims, const jt_pool_s8_params *p,
                        int8_t *y, const jt_dims4 *y_dims);

#endif
