/* Element-wise backward kernels, float32 (lowering/kernels.py requant_bw, add_bw,
 * concat_bw; opcodes requant_bw_f32, add_bw_f32, concat_bw_f32).
 *
 * Masks are 1 bit per element of the gradient, little-endian bit order (element e is bit
 * e % 8 of byte e / 8), set where the forward output was strictly inside its clamp. Where a
 * bit is clear the gradient is exactly +0.0f (np.where(inside, prod, 0)); where it is set,
 * one float32 multiply g * M. No sums: every output element is one or two multiplies.
 */
#ifndef JT_ELTWISE_BW_F32_H
#define JT_ELTWISE_BW_F32_H

#include <stdint.h>

#include "jaxtiny.h"

/* Bit e of a mask (the layout above). */
static inline uint32_t jt_mask_bit(const uint8_t *mask, uint32_t e) {
  return (uint32_t)(mask[e >> 3] >> (e & 7u)) & 1u;
}

/* How a multiplier M broadcasts over a gradient of `size` elements. */
typedef enum {
  JT_M_SCALAR = 0,    /* M[0] */
  JT_M_CHANNEL = 1,   /* M[e % channels]: one per channel (last axis) */
  JT_M_POSITION = 2,  /* M[(e / channels) % positions]: one per (h, w) of an NHWC tensor */
} jt_m_mode;

typedef struct {
  uint32_t size;       /* elements of g (and of g_acc) */
  uint32_t channels;   /* last axis length (JT_M_CHANNEL, JT_M_POSITION) */
  uint32_t positions;  /* h * w (JT_M_POSITION) */
  uint32_t m_mode;     /* jt_m_mode */
} jt_requant_bw_f32_params;

/* g_acc[e] = bit e ? g[e] * M(e) : +0.0f. g_acc may be g (in place). */
jt_status jt_requant_bw_f32(const float *g, const uint8_t *mask, const float *m, float *g_acc,
                            const jt_requant_bw_f32_params *p);

typedef struct {
  uint32_t size;
  float m;                 /* the requantization multiplier (finite) */
  int32_t a_mult, b_mult;  /* the integer input multipliers, applied as float32 */
} jt_add_bw_f32_params;

/* d = bit e ? g[e] * m : +0.0f; ga[e] = d * f32(a_mult), gb[e] = d * f32(b_mult).
 * ga may be g (in place); gb overlaps neither. */
jt_status jt_add_bw_f32(const float *g, const uint8_t *mask, float *ga, float *gb,
                        const jt_add_bw_f32_params *p);

/* One input's part of a concat gradient: g viewed as (outer, total, inner), the part is
 * (outer, size, inner) starting at `start` along the middle axis. identity: a copy;
 * else bit ? g * m : +0.0f with the bit of g's own flat index. */
typedef struct {
  uint32_t outer, total, inner, start, size;
  float m;
  uint32_t identity;
} jt_concat_bw_f32_params;

jt_status jt_concat_bw_f32(const float *g, const uint8_t *mask, float *gx,
                           const jt_concat_bw_f32_params *p);

#endif
