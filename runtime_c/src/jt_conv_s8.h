/* int8 convolution (ordinary, grouped, depthwise with channel multiplier) and dense
 * (lowering/kernels.py conv2d / conv2d_acc, dense / dense_acc; opcodes conv2d_s8, dense_s8).
 *
 * Layouts: x NHWC (conv) or (N, K) (dense); conv weights OHWI with I = C_in / groups,
 * dense weights (O, K); bias int32 (O,); multipliers float32 (O,); y NHWC / (N, O). All
 * row-major int8 unless said otherwise.
 *
 * Arithmetic (bit-exact with the reference):
 *   S = sum over taps (i, j) and c < I of (x[n, y*sh + i - top, x*sw + j - left, g*I + c]
 *       - x_zero) * w[o, i, j, c], g = o / (O / groups), padded positions contributing 0;
 *   acc = sat_add_int32(S, b[o]); y = requantize(acc, m[o], y_zero, lo, hi).
 * S is formed in int32: the checks bound the reduction length kh * kw * I by
 * JT_MAX_REDUCTION_S8 (65793), so |S| <= 65793 * 255 * 128 < 2**31 and no partial sum can
 * overflow. Ranges assumed (verified at init): x_zero, y_zero, lo <= hi int8; strides >= 1;
 * pads >= 0 with h + top + bottom and w + left + right <= INT32_MAX; the output dims are
 * the reference's; m finite.
 *
 * Weights may be merged (a sparsely trained layer): jt_weight_s8.h; these kernels read
 * only its fields w .. axis (the dims come as w_dims).
 */
#ifndef JT_CONV_S8_H
#define JT_CONV_S8_H

#include <stdint.h>

#include "jaxtiny.h"
#include "jt_weight_s8.h"

typedef struct {
  uint32_t n, h, w, c;
} jt_dims4;

typedef struct {
  int32_t stride_h, stride_w;
  int32_t pad_top, pad_bottom, pad_left, pad_right;
  int32_t groups;  /* >= 1; C_in = I * groups; O % groups == 0 */
  int32_t x_zero, y_zero, lo, hi;
} jt_conv_s8_params;

/* y (y_dims: n, ho, wo, O) = conv2d(x (x_dims), w (w_dims: O, kh, kw, I)). y must not
 * overlap x. */
jt_status jt_conv2d_s8(const int8_t *x, const jt_dims4 *x_dims, const jt_weight_s8 *w,
                       const jt_dims4 *w_dims, const int32_t *bias, const float *m,
                       const jt_conv_s8_params *p, int8_t *y, const jt_dims4 *y_dims);

/* One output row oy (wo positions x O channels, written to y_row) of the conv of ONE image
 * x (x_dims->n is ignored). The bottleneck kernel builds its band from it. */
jt_status jt_conv2d_s8_row(const int8_t *x, const jt_dims4 *x_dims, const jt_weight_s8 *w,
                           const jt_dims4 *w_dims, const int32_t *bias, const float *m,
                           const jt_conv_s8_params *p, uint32_t oy, uint32_t wo,
                           int8_t *y_row);

typedef struct {
  int32_t x_zero, y_zero, lo, hi;
} jt_dense_s8_params;

/* y (n, o) = dense(x (n, k), w (o, k)); y must not overlap x. */
jt_status jt_dense_s8(const int8_t *x, uint32_t n, uint32_t k, const jt_weight_s8 *w,
                      uint32_t o, const int32_t *bias, const float *m,
                      const jt_dense_s8_params *p, int8_t *y);

/* --- shared with the int8 pool family (taps) and the adapters of pool and bottleneck -- */

/* Taps [*t0, *t1) of a window of k starting at padded-free coordinate `start` that land
 * inside [0, size): the others read padding, which contributes 0 (or never wins). */
static inline void jt_tap_range(int64_t start, uint32_t k, uint32_t size, uint32_t *t0,
                                uint32_t *t1) {
  const int64_t lo = start < 0 ? -start : 0;
  int64_t hi = (int64_t)size - start;
  if (hi > (int64_t)k) hi = k;
  if (lo >= hi) {
    *t0 = *t1 = 0;
    return;
  }
  *t0 = (uint32_t)lo;
  *t1 = (uint32_t)hi;
}

/* The dims of a rank-4 tensor (the adapters' and checks' view of NHWC / OHWI). */
void jt_dims4_of(const jt_runtime *rt, int32_t id, jt_dims4 *d);

#endif
