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
 * A weight may be "merged" (a sparsely trained layer): the frozen full weight w with the
 * entries at channels sel[k] of axis `axis` replaced by w_sel[..., k, ...]
 * (kernels.merge_channels). jt_weight_s8 describes either kind; no merged copy is made.
 */
#ifndef JT_CONV_BW_F32_H
#define JT_CONV_BW_F32_H

#include <stdint.h>

#include "jaxtiny.h"

/* An int8 weight of rank <= 4, possibly merged. */
typedef struct {
  const int8_t *w;      /* the full (frozen) weight, dims[0..rank) */
  const int8_t *w_sel;  /* NULL: w is the weight; else the trained part, dims with
                           dims[axis] replaced by n_sel */
  const int32_t *sel;   /* n_sel channel indices along axis, in [0, dims[axis]), ascending */
  uint32_t n_sel;
  uint32_t axis;        /* in [0, rank) */
  uint32_t rank;
  uint32_t dims[4];
} jt_weight_s8;

/* The weight's element at flat row-major index `flat` (of the merged shape). */
int8_t jt_weight_s8_at(const jt_weight_s8 *w, uint32_t flat);

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

/* --- shared by the backward families' checks (runtime side, after generic checks) ---- */
/* An operand of this dtype and rank: JT_OK, else JT_E_DTYPE or JT_E_SHAPE. */
jt_status jt_bw_want(const jt_runtime *rt, int32_t id, uint32_t dtype, uint32_t rank);
/* *out describes the weight operand w_id of rank <= 4, merged with w_sel_id / sel_id along
 * sel_axis (numpy style, may be negative) when has_sel. No checks (the adapters' part). */
void jt_bw_weight_fill(const jt_runtime *rt, int32_t w_id, int has_sel, int32_t w_sel_id,
                       int32_t sel_id, int32_t sel_axis, uint32_t rank, jt_weight_s8 *out);
/* The same after checking it: int8 weights of this rank, w_sel shaped like w but for
 * n_sel along the axis, sel a const int32 list of n_sel channels in range, strictly
 * ascending, the axis in [-rank, rank). */
jt_status jt_bw_weight_bind(const jt_runtime *rt, int32_t w_id, int has_sel, int32_t w_sel_id,
                            int32_t sel_id, int32_t sel_axis, uint32_t rank,
                            jt_weight_s8 *out);
/* A window op's parameters: JT_E_ATTR unless k >= 1, stride >= 1, pads >= 0 and size padded
 * fits int32; JT_E_SHAPE when the window does not fit; else JT_OK and *out the output
 * length floor((size + pad0 + pad1 - k) / stride) + 1 >= 1. */
jt_status jt_bw_window(uint32_t size, int64_t k, int64_t stride, int64_t pad0, int64_t pad1,
                       uint32_t *out);
/* A float32 tensor that is constant holds only finite values (the reference refuses
 * non-finite multipliers); other storage cannot be checked at init and passes. */
int jt_bw_finite_if_const(const jt_runtime *rt, int32_t id);
/* Two operands whose bytes are the same buffer (one aliases the other). */
int jt_bw_same_buffer(const jt_runtime *rt, int32_t a, int32_t b);

#endif
