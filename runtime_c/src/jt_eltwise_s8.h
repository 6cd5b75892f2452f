/* Element-wise int8 kernels (lowering/kernels.py requantize, requant, add, concat; the
 * executor's copy, mask_s8 and gather_channels_s8), and the requantization step that
 * every int8 forward family ends with (docs/numerics.md, "The requantization step").
 *
 * Value ranges (guaranteed by the op checks, assumed by the kernels):
 *   zero points and clamp bounds are int8 values with lo <= hi;
 *   multipliers are finite float32;
 *   add: 255 * (|a_mult| + |b_mult|) <= INT32_MAX, so the integer sum never overflows.
 * Layouts are flat row-major; the kernels do not care about shapes except concat (outer /
 * axis / inner split) and gather (rows of c channels).
 */
#ifndef JT_ELTWISE_S8_H
#define JT_ELTWISE_S8_H

#include <stdint.h>

#include "jaxtiny.h"
#include "jt_math.h"
#include "jt_simd.h"

/* The clamp bounds of a requantization, lo - y_zero and hi - y_zero, as floats and ints:
 * made once per kernel call, so that each output element pays only for its own arithmetic. */
typedef struct {
  float lo, hi;
  int32_t ilo, ihi, y_zero;
} jt_rq;

static inline jt_rq jt_rq_make(int32_t y_zero, int32_t lo, int32_t hi) {
  const jt_rq q = {(float)(lo - y_zero), (float)(hi - y_zero), lo - y_zero, hi - y_zero, y_zero};
  return q;
}

/* y = clamp(rne(f32(acc) * m), lo - y_zero, hi - y_zero) + y_zero, kernels.requantize.
 * (float)acc rounds to nearest even like numpy's astype(float32); one float32 multiply.
 * Portable: clamping to the integer bounds before rounding gives the same value (rounding
 * is monotonic and keeps integers) and leaves |t| <= 255, where adding and subtracting
 * 1.5 * 2^23 rounds half to even (the float32 ulp there is 1); a NaN (impossible for a
 * finite m) would land on lo instead of reaching the conversion. Cortex-M with an FPU:
 * VCVTR rounds half to even (the FPSCR's reset mode) and saturates, so clamping the int
 * afterwards gives the same value, and t is never NaN (acc and m are finite). */
static inline JT_ALWAYS_INLINE int8_t jt_rq_apply(int32_t acc, float m, const jt_rq *q) {
#if JT_DSP && defined(__ARM_FP)
  int32_t r = jt_round_f32_i32((float)acc * m);
  r = r > q->ilo ? r : q->ilo;
  r = r < q->ihi ? r : q->ihi;
  return (int8_t)(r + q->y_zero);
#else
  const float big = 12582912.0f;
  float t = (float)acc * m;
  t = t > q->lo ? t : q->lo;
  t = t < q->hi ? t : q->hi;
  t = (t + big) - big;
  return (int8_t)((int32_t)t + q->y_zero);
#endif
}

#if JT_DSP && defined(__ARM_FP)
/* Requantization of two or four outputs at once (the kernels' output loops). */
/* jt_rq_apply() of two sums t0, t1 (their biases added), with multipliers m0, m1, as the
 * 16-bit lanes of a word: the two clamps run as one (jt_clamp2; clamp(r, ilo, ihi) +
 * y_zero = clamp(r + y_zero, lo, hi)), with l from jt_rq_lanes. */
static inline JT_ALWAYS_INLINE int32_t jt_rq_two(int32_t t0, float m0, int32_t t1,
                                                 float m1, const int32_t l[3]) {
  const int32_t r0 = jt_round_f32_i32((float)t0 * m0);
  const int32_t r1 = jt_round_f32_i32((float)t1 * m1);
  return jt_clamp2(r0, r1, l[0], l[1], l[2]);
}

/* y[0..4) = jt_rq_apply(tj, mj) for j < 4 through jt_rq_two, one word store: lanes
 * (0, 2) and (1, 3), their low bytes interleaved. */
static inline JT_ALWAYS_INLINE void jt_rq_four(int32_t t0, int32_t t1, int32_t t2,
                                               int32_t t3, float m0, float m1, float m2,
                                               float m3, const int32_t l[3], int8_t *y) {
  const uint32_t v02 = __uxtb16((uint32_t)jt_rq_two(t0, m0, t2, m2, l));
  const uint32_t v13 = __uxtb16((uint32_t)jt_rq_two(t1, m1, t3, m3, l));
  const uint32_t v = v02 | v13 << 8;
  memcpy(y, &v, sizeof v);
}

/* l = y_zero, lo and hi of q, each in both 16-bit lanes. */
static inline void jt_rq_lanes(const jt_rq *q, int32_t l[3]) {
  const int32_t v[3] = {q->y_zero, q->ilo + q->y_zero, q->ihi + q->y_zero};
  for (uint32_t i = 0; i < 3; i++) l[i] = (int32_t)(((uint32_t)v[i] & 0xFFFFu) * 0x10001u);
}
#endif

static inline int8_t jt_requantize_s8(int32_t acc, float m, int32_t y_zero, int32_t lo,
                                      int32_t hi) {
  const jt_rq q = jt_rq_make(y_zero, lo, hi);
  return jt_rq_apply(acc, m, &q);
}

/* sat32(a + b), kernels.sat_add_int32 (the DSP build's QADD saturates the same way). */
static inline JT_ALWAYS_INLINE int32_t jt_sat_add_i32(int32_t a, int32_t b) {
#if JT_DSP
  return __qadd(a, b);
#else
  const int64_t s = (int64_t)a + (int64_t)b;
  if (s > INT32_MAX) return INT32_MAX;
  if (s < INT32_MIN) return INT32_MIN;
  return (int32_t)s;
#endif
}

typedef struct {
  int32_t x_zero, y_zero, lo, hi;
  float m;
} jt_requant_params;

/* y[i] = requantize(x[i] - x_zero, m, y_zero, lo, hi), n elements; y may equal x. */
jt_status jt_requant_s8(const int8_t *x, uint32_t n, const jt_requant_params *p, int8_t *y);

typedef struct {
  int32_t a_zero, b_zero, y_zero, a_mult, b_mult, lo, hi;
  float m;
} jt_add_params;

/* y[i] = requantize((a[i] - a_zero) * a_mult + (b[i] - b_zero) * b_mult, m, y_zero, lo,
 * hi), n elements; y may equal a or b (each element is read before it is written). */
jt_status jt_add_s8(const int8_t *a, const int8_t *b, uint32_t n, const jt_add_params *p,
                    int8_t *y);

/* One input's part of a concatenation along an axis: y viewed as (outer, total, inner),
 * x as (outer, size, inner); y[o, offset + k, i] = requantize(x[o, k, i] - x_zero, m,
 * y_zero, -128, 127). The concat op runs it once per input (offset: the sum of the
 * earlier inputs' sizes). y must not overlap x. */
jt_status jt_concat_s8_part(const int8_t *x, uint32_t outer, uint32_t size, uint32_t inner,
                            int32_t x_zero, float m, int32_t y_zero, int8_t *y,
                            uint32_t total, uint32_t offset);

/* memmove of nbytes (the copy op: a reshape that cannot alias). */
jt_status jt_copy_bytes(const void *x, uint32_t nbytes, void *y);

/* mask bit i = lo < y[i] < hi, little-endian bit order within each byte, (n + 7) / 8
 * bytes; the unused high bits of the last byte are 0 (np.packbits). */
jt_status jt_mask_s8(const int8_t *y, uint32_t n, int32_t lo, int32_t hi, uint8_t *mask);

/* y[r, k] = x[r, sel[k]] for r < rows, k < n_sel; x has c channels per row, sel in [0, c).
 * y must not overlap x. */
jt_status jt_gather_channels_s8(const int8_t *x, uint32_t rows, uint32_t c,
                                const int32_t *sel, uint32_t n_sel, int8_t *y);

#endif
