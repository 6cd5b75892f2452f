/* Input gradients of convolutions and dense layers, float32 (lowering/kernels.py
 * conv2d_bw_input, dense_bw_input; opcodes conv2d_bw_input_f32, dense_bw_input_f32).
 *
 * Layouts: g and gx NHWC (conv) or (N, K) (dense), float32, row-major; conv weights OHWI
 * int8 with I = C_in / groups, dense weights (O, K) int8. Gradients are in units of one
 * quantization step (the straight-through backward of docs/numerics.md).
 *
 * Summation order (bit-exact with the numpy reference, built with -ffp-contract=off):
 *   conv:  gx starts at +0.0f; each element adds g * w (a float32 product) over the taps
 *          (i, j) in row-major order, then over the output channels o of its group
 *          ascending; contributions landing in the padding are dropped.
 *   dense: gx[n, k] = ((t_0 + t_1) + t_2) + ..., t_o = g[n, o] * w[o, k], o ascending,
 *          starting from the first term (+0.0f when O = 0).
 *
 * Weights may be merged (a sparsely trained layer): jt_weight_s8.h.
 */
#ifndef JT_CONV_BW_F32_H
#define JT_CONV_BW_F32_H

#include <stdint.h>

#include "jaxtiny.h"
#include "jt_weight_s8.h"

/* Geometry of a convolution's input gradient. The verifier guarantees: kh, kw, strides
 * >= 1; pads >= 0; h + pad_top + pad_bottom and w + left + right fit int32;
 * ho = floor((h + top + bottom - kh) / sh) + 1 >= 1 (likewise wo); c = (c / groups) *
 * groups, o % groups == 0, weight dims (o, kh, kw, c / groups). */
typedef struct {
  uint32_t n, h, w, c;    /* gx: (n, h, w, c) */
  uint32_t ho, wo, o;     /* g: (n, ho, wo, o) */
  uint32_t kh, kw, groups;
  int32_t stride_h, stride_w, pad_top, pad_left;
} jt_conv_bw_f32_params;

/* gx = input gradient of a conv; g and gx must not overlap. */
jt_status jt_conv2d_bw_input_f32(const float *g, const jt_weight_s8 *w, float *gx,
                                 const jt_conv_bw_f32_params *p);

/* The same for a depthwise conv with o == c == groups and gx shaped like g (ho == h,
 * wo == w), computed in place in g_gx (g in, gx out), one channel at a time: channel c of
 * g is copied to scratch (jt_conv2d_bw_input_f32_dw_in_place_get_buffer_size bytes:
 * ho * wo floats, 4-aligned), then channel c of gx is written over it. */
jt_status jt_conv2d_bw_input_f32_dw_in_place(float *g_gx, const jt_weight_s8 *w,
                                             float *scratch, const jt_conv_bw_f32_params *p);
uint32_t jt_conv2d_bw_input_f32_dw_in_place_get_buffer_size(const jt_conv_bw_f32_params *p);

typedef struct {
  uint32_t n, o, k;  /* g: (n, o); w: (o, k); gx: (n, k) */
} jt_dense_bw_f32_params;

/* gx = g @ w in the order above; g and gx must not overlap. */
jt_status jt_dense_bw_input_f32(const float *g, const jt_weight_s8 *w, float *gx,
                                const jt_dense_bw_f32_params *p);

/* One channel of a depthwise conv's input gradient (one filter, channel ch of w): gx[e *
 * stride] for the p->h * p->w input positions e starts at +0.0f, then adds g[y * wo + x] *
 * w[ch, i, j] over the taps (i, j) in row-major order, each tap's outputs (y, x) in
 * row-major order; terms landing in the padding are dropped. g holds the channel's
 * p->ho * p->wo gradient values contiguously and must not overlap gx. (For a fixed tap an
 * input element is reached from at most one output, so each element's terms come in tap
 * order, as in the reference.) */
void jt_depthwise_bw_plane_f32(const float *g, const jt_weight_s8 *w, uint32_t ch, float *gx,
                               uint32_t stride, const jt_conv_bw_f32_params *p);

#endif
