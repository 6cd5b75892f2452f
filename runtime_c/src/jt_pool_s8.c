/* int8 average and max pooling kernels and their ops (jt_pool_s8.h). */
#include "jt_pool_s8.h"

#include "jt_eltwise_s8.h"
#include "jt_internal.h"

jt_status jt_avgpool_s8(const int8_t *x, const jt_dims4 *x_dims, const float *m,
                        const jt_pool_s8_params *p, int8_t *y, const jt_dims4 *y_dims) {
  const uint32_t h = x_dims->h, w = x_dims->w, c = x_dims->c, ho = y_dims->h, wo = y_dims->w;
  for (uint32_t n = 0; n < y_dims->n; n++) {
    const int8_t *xn = x + n * h * w * c;
    for (uint32_t oy = 0; oy < ho; oy++) {
      const int64_t ys = (int64_t)oy * p->stride_h - p->pad_top;
      uint32_t i0, i1;
      jt_tap_range(ys, (uint32_t)p->window_h, h, &i0, &i1);
      for (uint32_t ox = 0; ox < wo; ox++) {
        const int64_t xs = (int64_t)ox * p->stride_w - p->pad_left;
        uint32_t j0, j1;
        jt_tap_range(xs, (uint32_t)p->window_w, w, &j0, &j1);
        const float mult = p->m_per_position ? m[oy * wo + ox] : m[0];
        int8_t *yo = y + ((n * ho + oy) * wo + ox) * c;
        for (uint32_t ch = 0; ch < c; ch++) {
          int32_t acc = 0;  /* |acc| <= kh * kw * 255 <= INT32_MAX (checked) */
          for (uint32_t i = i0; i < i1; i++) {
            const int8_t *xr = xn + ((uint32_t)(ys + (int64_t)i) * w) * c + ch;
            for (uint32_t j = j0; j < j1; j++)
              acc += (int32_t)xr[(uint32_t)(xs + (int64_t)j) * c] - p->x_zero;
          }
          yo[ch] = jt_requantize_s8(acc, mult, p->y_zero, p->lo, p->hi);
        }
      }
    }
  }
  return JT_OK;
}

jt_status jt_maxpool_s8(const int8_t *x, const jt_dims4 *x_dims, const jt_pool_s8_params *p,
                        int8_t *y, const jt_dims4 *y_dims) {
  const uint32_t h = x_dims->h, w = x_dims->w, c = x_dims->c, ho = y_dims->h, wo = y_dims->w;
  for (uint32_t n = 0; n < y_dims->n; n++) {
    const int8_t *xn = x + n * h * w * c;
    for (uint32_t oy = 0; oy < ho; oy++) {
      const int64_t ys = (int64_t)oy * p->stride_h - p->pad_top;
      uint32_t i0, i1;
      jt_tap_range(ys, (uint32_t)p->window_h, h, &i0, &i1);
      for (uint32_t ox = 0; ox < wo; ox++) {
        const int64_t xs = (int64_t)ox * p->stride_w - p->pad_left;
        uint32_t j0, j1;
        jt_tap_range(xs, (uint32_t)p->window_w, w, &j0, &j1);
        int8_t *yo = y + ((n * ho + oy) * wo + ox) * c;
        for (uint32_t ch = 0; ch < c; ch++) {
          int8_t best = -128;  /* the padding's value: taps in the padding can be skipped */
          for (uint32_t i = i0; i < i1; i++) {
            const int8_t *xr = xn + ((uint32_t)(ys + (int64_t)i) * w) * c + ch;
            for (uint32_t j = j0; j < j1; j++) {
              const int8_t v = xr[(uint32_t)(xs + (int64_t)j) * c];
              if (v > best) best = v;
            }
          }
          yo[ch] = best;
        }
      }
    }
  }
  return JT_OK;
}

/* --- ops ------------------------------------------------------------------------------------ */

/* window@0 strides@2 padding@4 (top, bottom, left, right), then avgpool's x_zero@8 y_zero@9
 * lo@10 hi@11. */
static void pool_params(const jt_op *op, int avg, jt_pool_s8_params *p) {
  const int32_t *a = op->attr;
  p->window_h = a[0];
  p->window_w = a[1];
  p->stride_h = a[2];
  p->stride_w = a[3];
  p->pad_top = a[4];
  p->pad_bottom = a[5];
  p->pad_left = a[6];
  p->pad_right = a[7];
  p->x_zero = avg ? a[8] : 0;
  p->y_zero = avg ? a[9] : 0;
  p->lo = avg ? a[10] : -128;
  p->hi = avg ? a[11] : 127;
  p->m_per_position = 0;
}

/* x, y int8 NHWC, y (n, ho, wo, c) from the window attributes. */
static jt_status pool_check(const jt_runtime *rt, int32_t x, int32_t y,
                            const jt_pool_s8_params *p, uint32_t *ho, uint32_t *wo) {
  jt_status s = jt_want(rt, x, JT_DTYPE_I8, 4);
  if (s != JT_OK || (s = jt_want(rt, y, JT_DTYPE_I8, 4)) != JT_OK) return s;
  if (p->window_h < 1 || p->window_w < 1) return JT_E_ATTR;
  jt_dims4 xd, yd;
  jt_dims4_of(rt, x, &xd);
  jt_dims4_of(rt, y, &yd);
  s = jt_want_window(xd.h, (uint32_t)p->window_h, p->stride_h, p->pad_top, p->pad_bottom, ho);
  if (s != JT_OK) return s;
  s = jt_want_window(xd.w, (uint32_t)p->window_w, p->stride_w, p->pad_left, p->pad_right, wo);
  if (s != JT_OK) return s;
  if (yd.n != xd.n || yd.h != *ho || yd.w != *wo || yd.c != xd.c) return JT_E_SHAPE;
  return JT_OK;
}

/* avgpool_s8: x m -> y | window@0 strides@2 padding@4 x_zero@8 y_zero@9 lo@10 hi@11 */
jt_status jt_op_avgpool_s8(jt_runtime *rt, const jt_op *op) {
  jt_pool_s8_params p;
  jt_dims4 xd, yd;
  pool_params(op, 1, &p);
  p.m_per_position = jt_rank(rt, op->in[1]) == 2;
  jt_dims4_of(rt, op->in[0], &xd);
  jt_dims4_of(rt, op->out[0], &yd);
  return jt_avgpool_s8((const int8_t *)jt_data(rt, op->in[0]), &xd,
                       (const float *)jt_data(rt, op->in[1]), &p,
                       (int8_t *)jt_data(rt, op->out[0]), &yd);
}

jt_status jt_check_avgpool_s8(const jt_runtime *rt, const jt_op *op) {
  jt_pool_s8_params p;
  pool_params(op, 1, &p);
  uint32_t ho, wo;
  jt_status s = pool_check(rt, op->in[0], op->out[0], &p, &ho, &wo);
  if (s != JT_OK) return s;
  if (!jt_is_i8(p.x_zero) || !jt_requant_ok(p.y_zero, p.lo, p.hi)) return JT_E_ATTR;
  /* |acc| <= kh * kw * 255 must fit int32 (the reference raises otherwise) */
  if ((int64_t)p.window_h * p.window_w > INT32_MAX / 255) return JT_E_ATTR;
  /* m: a scalar, or exactly (ho, wo) */
  const int32_t m = op->in[1];
  const uint32_t rank = jt_rank(rt, m);
  if (rank != 0 && rank != 2) return jt_t(rt, m)->dtype != JT_DTYPE_F32 ? JT_E_DTYPE : JT_E_SHAPE;
  if ((s = jt_want_multiplier(rt, m, rank)) != JT_OK) return s;
  if (rank == 2 && (jt_dim(rt, m, 0) != ho || jt_dim(rt, m, 1) != wo)) return JT_E_SHAPE;
  return JT_OK;
}

/* maxpool_s8: x -> y | window@0 strides@2 padding@4 */
jt_status jt_op_maxpool_s8(jt_runtime *rt, const jt_op *op) {
  jt_pool_s8_params p;
  jt_dims4 xd, yd;
  pool_params(op, 0, &p);
  jt_dims4_of(rt, op->in[0], &xd);
  jt_dims4_of(rt, op->out[0], &yd);
  return jt_maxpool_s8((const int8_t *)jt_data(rt, op->in[0]), &xd, &p,
                       (int8_t *)jt_data(rt, op->out[0]), &yd);
}

jt_status jt_check_maxpool_s8(const jt_runtime *rt, const jt_op *op) {
  jt_pool_s8_params p;
  pool_params(op, 0, &p);
  uint32_t ho, wo;
  return pool_check(rt, op->in[0], op->out[0], &p, &ho, &wo);
}
