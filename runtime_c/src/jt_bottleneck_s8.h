/* The banded inverted bottleneck of the frozen prefix (lowering/kernels.py bottleneck;
 * opcode bottleneck_s8): expand conv (groups 1, any kernel, strides, padding) -> depthwise
 * conv (C channels, multiplier 1) -> 1x1 project conv (stride 1, no padding), computed one
 * output row at a time so that neither the expanded tensor nor the depthwise output exists
 * in full. Batch 1; x (1, H, W, K), y (1, d_rows, d_cols, P), NHWC int8.
 *
 * Band (int8 scratch, jt_bottleneck_s8_get_buffer_size bytes):
 *   [0, kd * e_cols * C)        the expanded rows [first, stop) that output row r reads
 *                               (row first + i at offset i * e_cols * C), kd = depthwise kh;
 *   [kd * e_cols * C, + d_cols * C)  one depthwise output row.
 * For output row r, top = r * d_sh - d_pad_top, first = max(top, 0), stop = min(top + kd,
 * e_rows). Rows still in the band from the previous output row are moved down (memmove)
 * instead of recomputed; every element is the same exact int32 sum either way, and the
 * band's bytes end up exactly as the reference leaves them (it rewrites band[0, stop -
 * first) for every row and never touches the rest).
 *
 * Each layer's arithmetic is jt_conv2d_s8's; the depthwise layer reads x_zero = the
 * expand's y_zero and the project x_zero = the depthwise's y_zero (the op's attributes
 * guarantee it; the kernel uses each layer's own x_zero). Ranges assumed as in
 * jt_conv_s8.h, plus (checked at init) every output row's band non-empty.
 */
#ifndef JT_BOTTLENECK_S8_H
#define JT_BOTTLENECK_S8_H

#include <stdint.h>

#include "jaxtiny.h"
#include "jt_conv_s8.h"

/* One conv of the block: weight (OHWI, w_dims), bias, multipliers and geometry. */
typedef struct {
  const int8_t *w;
  const int32_t *b;
  const float *m;
  jt_dims4 w_dims;
  jt_conv_s8_params p;
} jt_conv_layer_s8;

/* Band bytes the kernel needs: kd * e_cols * C + d_cols * C (kernels.bottleneck_band_bytes);
 * UINT32_MAX when that does not fit 32 bits. */
uint32_t jt_bottleneck_s8_get_buffer_size(const jt_dims4 *x_dims, const jt_conv_layer_s8 *expand,
                                          const jt_conv_layer_s8 *depthwise);

/* y = project(depthwise(expand(x))); band: at least the size above, overlapping neither
 * x nor y. */
jt_status jt_bottleneck_s8(const int8_t *x, const jt_dims4 *x_dims,
                           const jt_conv_layer_s8 *expand, const jt_conv_layer_s8 *depthwise,
                           const jt_conv_layer_s8 *project, int8_t *y, const jt_dims4 *y_dims,
                           int8_t *band);

#endif
