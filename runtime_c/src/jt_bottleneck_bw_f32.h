/* Backward of an inverted bottleneck (1x1 expand -> depthwise -> 1x1 project), one
 * expanded channel at a time, float32 (lowering/kernels.py bottleneck_bw, executor
 * _bottleneck_bw; opcode bottleneck_bw_f32). Neither the depthwise output's nor the
 * expanded tensor's gradient exists in full: two one-channel planes in scratch.
 *
 * Layouts (batch 1, NHWC / OHWI, row-major):
 *   g       float32 (1, ho, wo, o)   the gradient at the project's int32 accumulator
 *   w3      int8 (o, 1, 1, c)        project weight
 *   mask_d  bits of (1, ho, wo, c)   depthwise output strictly inside its clamp
 *   m_d     float32, 1 or c values   depthwise requantization multiplier
 *   w2      int8 (c, kh, kw, 1)      depthwise weight (strides, padding below)
 *   mask_e  bits of (1, he, we, c)   expand output inside its clamp
 *   m_e     float32, 1 or c values
 *   w1      int8 (c, 1, 1, k)        expand weight, possibly merged (jt_weight_s8)
 *   scratch float32 ho * wo + he * we: the channel's gd plane, then its ge plane; or
 *           twice that (pairs): two gd planes, then two ge planes, channels two at a time
 *   gb_d, gb_e float32 (c,)          bias gradients
 *   gx      float32 (1, he, we, k) or NULL: the block input's gradient (overwritten)
 *   x       int8 (1, he, we, kx) or NULL: the expand layer's (saved) input, for the
 *           expand weight gradient; on_grad(ctx, c * kx + j, grad) receives element j of
 *           row c's gradient once, after channel c's planes and before any later
 *           channel's (the update op applies it in place; elements are independent)
 *
 * For each channel c ascending (every sum bit-exact with the reference):
 *   gd[q]  = bit_d(q, c) ? (0.0f + sum_o g[q, o] * w3[o, c], o ascending) * m_d[c] : +0.0f
 *   gb_d[c] = ((gd[0] + gd[1]) + ...)                    (running sum from the first term)
 *   ge[e]  = 0.0f + sum over taps (i, j) row-major of gd[y, x] * w2[c, i, j] for the output
 *            (y, x) reading e through that tap; then bit_e(e, c) ? ge * m_e[c] : +0.0f
 *   gb_e[c] = ((ge[0] + ge[1]) + ...)
 *   gx[e, j] += ge[e] * w1[c, j]                         (gx starts at +0.0f)
 *   grad[j] = ((ge[0] * x0[j] + ge[1] * x1[j]) + ...), xq[j] = f32(x[q, j]) - f32(x_zero)
 */
#ifndef JT_BOTTLENECK_BW_F32_H
#define JT_BOTTLENECK_BW_F32_H

#include <stdint.h>

#include "jaxtiny.h"
#include "jt_conv_bw_f32.h"

typedef void (*jt_grad_fn)(void *ctx, uint32_t index, float grad);

typedef struct {
  const float *g;
  const int8_t *w3;
  const uint8_t *mask_d;
  const float *m_d;
  const int8_t *w2;
  const uint8_t *mask_e;
  const float *m_e;
  jt_weight_s8 w1;
  float *scratch;
  float *gb_d, *gb_e;
  float *gx;              /* NULL: no input gradient */
  const int8_t *x;        /* NULL: no expand weight gradient */
  jt_grad_fn on_grad;
  void *on_grad_ctx;
  uint32_t o, c, k, kx;
  uint32_t ho, wo, he, we, kh, kw;
  int32_t stride_h, stride_w, pad_top, pad_left;
  int32_t x_zero;
  uint32_t m_d_per_channel, m_e_per_channel;  /* 1: c values, 0: one */
  uint32_t pairs;         /* 1: scratch holds two channels' planes */
} jt_bottleneck_bw_f32_params;

jt_status jt_bottleneck_bw_f32(const jt_bottleneck_bw_f32_params *p);
/* Bytes of scratch: (ho * wo + he * we) floats, twice that with pairs. */
uint32_t jt_bottleneck_bw_f32_get_buffer_size(const jt_bottleneck_bw_f32_params *p);

#endif
