/* Pooling gradients, float32 (lowering/kernels.py avgpool_bw, maxpool_bw; opcodes
 * avgpool_bw_f32, maxpool_bw_f32).
 *
 * Layouts NHWC, row-major: g (n, ho, wo, c), gx and x (n, h, w, c), y (n, ho, wo, c).
 * Output position (oy, ox) reads padded input (oy * sh + i, ox * sw + j) at tap (i, j).
 * Order (bit-exact with the reference): gx starts at +0.0f and each input element adds,
 * over the taps (i, j) in row-major order, its share of the one output that reads it
 * through that tap; shares landing in the padding are dropped.
 *   avgpool: the share is d = bit ? g * M : +0.0f (the requant_bw of the output; M scalar,
 *            per channel or per output position, jt_eltwise_bw_f32.h), every tap.
 *   maxpool: g goes to the first tap in row-major order whose x equals y (padding never
 *            equals: it stands below every int8); every other tap adds +0.0f.
 */
#ifndef JT_POOL_BW_F32_H
#define JT_POOL_BW_F32_H

#include <stdint.h>

#include "jaxtiny.h"

/* Verified: kh, kw, strides >= 1, pads >= 0, padded sizes fit int32,
 * ho = floor((h + top + bottom - kh) / sh) + 1 >= 1 (likewise wo). */
typedef struct {
  uint32_t n, h, w, c;  /* gx / x */
  uint32_t ho, wo;      /* g / y */
  uint32_t kh, kw;
  int32_t stride_h, stride_w, pad_top, pad_left;
  uint32_t m_mode;      /* avgpool: jt_m_mode of m */
} jt_pool_bw_f32_params;

/* g, mask (bits of g), m; gx must not overlap g. */
jt_status jt_avgpool_bw_f32(const float *g, const uint8_t *mask, const float *m, float *gx,
                            const jt_pool_bw_f32_params *p);

/* gx must not overlap g. */
jt_status jt_maxpool_bw_f32(const float *g, const int8_t *x, const int8_t *y, float *gx,
                            const jt_pool_bw_f32_params *p);

#endif
