/* Pooling gradients, float32: kernels, adapters, checks (see jt_pool_bw_f32.h). */
#include "jt_pool_bw_f32.h"

#include "jt_eltwise_bw_f32.h"
#include "jt_internal.h"

static void zero(float *d, uint32_t n) {
  uint32_t k;
  for (k = 0; k < n; k++) d[k] = 0.0f;
}

/* The input row / column a tap reads for output index o, or -1 in the padding. */
static inline int32_t at(uint32_t o, int32_t stride, uint32_t tap, int32_t pad, uint32_t size) {
  const int32_t v = (int32_t)(o * (uint32_t)stride + tap) - pad;
  return v >= 0 && (uint32_t)v < size ? v : -1;
}

jt_status jt_avgpool_bw_f32(const float *g, const uint8_t *mask, const float *m, float *gx,
                            const jt_pool_bw_f32_params *p) {
  const uint32_t c = p->c;
  uint32_t i, j, n, oy, ox, k;
  zero(gx, p->n * p->h * p->w * c);
  /* taps outermost: an input element is read by one output per tap, so its sum runs in
   * tap order as the reference's loop over taps */
  for (i = 0; i < p->kh; i++) {
    for (j = 0; j < p->kw; j++) {
      for (n = 0; n < p->n; n++) {
        for (oy = 0; oy < p->ho; oy++) {
          const int32_t iy = at(oy, p->stride_h, i, p->pad_top, p->h);
          if (iy < 0) continue;
          for (ox = 0; ox < p->wo; ox++) {
            const int32_t ix = at(ox, p->stride_w, j, p->pad_left, p->w);
            const uint32_t pos = oy * p->wo + ox, e0 = ((n * p->ho + oy) * p->wo + ox) * c;
            float *d;
            if (ix < 0) continue;
            d = gx + ((n * p->h + (uint32_t)iy) * p->w + (uint32_t)ix) * c;
            for (k = 0; k < c; k++) {
              const uint32_t e = e0 + k;
              const float mv = p->m_mode == JT_M_CHANNEL ? m[k]
                               : p->m_mode == JT_M_POSITION ? m[pos] : m[0];
              const float share = jt_mask_bit(mask, e) ? g[e] * mv : 0.0f;
              d[k] += share;
            }
          }
        }
      }
    }
  }
  return JT_OK;
}

/* Whether tap (i, j) is the first in row-major order whose input equals v for output
 * (oy, ox) of image n, channel k (taps in the padding never equal). */
static int first_max(const int8_t *x, const jt_pool_bw_f32_params *p, uint32_t n, uint32_t oy,
                     uint32_t ox, uint32_t k, uint32_t i, uint32_t j, int8_t v) {
  uint32_t a, b;
  for (a = 0; a <= i; a++) {
    const int32_t iy = at(oy, p->stride_h, a, p->pad_top, p->h);
    const uint32_t end = a == i ? j : p->kw;
    if (iy < 0) continue;
    for (b = 0; b < end; b++) {
      const int32_t ix = at(ox, p->stride_w, b, p->pad_left, p->w);
      if (ix >= 0 && x[((n * p->h + (uint32_t)iy) * p->w + (uint32_t)ix) * p->c + k] == v)
        return 0;  /* an earlier tap already took this output's gradient */
    }
  }
  return 1;
}

jt_status jt_maxpool_bw_f32(const float *g, const int8_t *x, const int8_t *y, float *gx,
                            const jt_pool_bw_f32_params *p) {
  const uint32_t c = p->c;
  uint32_t i, j, n, oy, ox, k;
  zero(gx, p->n * p->h * p->w * c);
  /* taps outermost for the reference's per-element order; "taken" is recomputed by
   * looking back over the earlier taps only where this tap equals the max (no scratch) */
  for (i = 0; i < p->kh; i++) {
    for (j = 0; j < p->kw; j++) {
      for (n = 0; n < p->n; n++) {
        for (oy = 0; oy < p->ho; oy++) {
          const int32_t iy = at(oy, p->stride_h, i, p->pad_top, p->h);
          if (iy < 0) continue;
          for (ox = 0; ox < p->wo; ox++) {
            const int32_t ix = at(ox, p->stride_w, j, p->pad_left, p->w);
            const uint32_t e0 = ((n * p->ho + oy) * p->wo + ox) * c;
            const uint32_t d0 = ((n * p->h + (uint32_t)iy) * p->w + (uint32_t)ix) * c;
            if (ix < 0) continue;
            for (k = 0; k < c; k++) {
              const int hit = x[d0 + k] == y[e0 + k] &&
                              first_max(x, p, n, oy, ox, k, i, j, y[e0 + k]);
              gx[d0 + k] += hit ? g[e0 + k] : 0.0f;  /* where(hit, g, 0) */
            }
          }
        }
      }
    }
  }
  return JT_OK;
}

/* --- adapters and checks -------------------------------------------------------------------
 * avgpool_bw_f32: g mask m -> gx | window@0 strides@2 padding@4 in_shape@8
 * maxpool_bw_f32: g x y -> gx    | window@0 strides@2 padding@4 */

static void pool_params(const jt_runtime *rt, const jt_op *op, int32_t in_like,
                        jt_pool_bw_f32_params *p) {
  const int32_t *a = op->attr;
  const int32_t g = op->in[0];
  p->n = jt_dim(rt, in_like, 0);
  p->h = jt_dim(rt, in_like, 1);
  p->w = jt_dim(rt, in_like, 2);
  p->c = jt_dim(rt, in_like, 3);
  p->ho = jt_dim(rt, g, 1);
  p->wo = jt_dim(rt, g, 2);
  p->kh = (uint32_t)a[0];
  p->kw = (uint32_t)a[1];
  p->stride_h = a[2];
  p->stride_w = a[3];
  p->pad_top = a[4];
  p->pad_left = a[6];
  p->m_mode = JT_M_SCALAR;
}

/* Window, strides and padding in range; (ho, wo) of an input (h, w). */
static jt_status pool_geometry(const jt_op *op, uint32_t h, uint32_t w, uint32_t *ho,
                               uint32_t *wo) {
  const int32_t *a = op->attr;
  if (a[0] < 1 || a[1] < 1) return JT_E_ATTR;  /* a window is an attribute here */
  jt_status s = jt_want_window(h, a[0], a[2], a[4], a[5], ho);
  return s != JT_OK ? s : jt_want_window(w, a[1], a[3], a[6], a[7], wo);
}

jt_status jt_op_avgpool_bw_f32(jt_runtime *rt, const jt_op *op) {
  jt_pool_bw_f32_params p;
  const int32_t m = op->in[2];
  pool_params(rt, op, op->out[0], &p);
  (void)jt_m_mode_of(rt, m, op->in[0], &p.m_mode);  /* verified: it broadcasts */
  return jt_avgpool_bw_f32((const float *)jt_data(rt, op->in[0]),
                           (const uint8_t *)jt_data(rt, op->in[1]), (const float *)jt_data(rt, m),
                           (float *)jt_data(rt, op->out[0]), &p);
}

jt_status jt_check_avgpool_bw_f32(const jt_runtime *rt, const jt_op *op) {
  const int32_t *a = op->attr;
  const int32_t g = op->in[0], mask = op->in[1], m = op->in[2], gx = op->out[0];
  jt_status s;
  uint32_t ho, wo, mode;
  if ((s = jt_want(rt, g, JT_DTYPE_F32, 4)) != JT_OK) return s;
  if ((s = jt_want(rt, gx, JT_DTYPE_F32, 4)) != JT_OK) return s;
  if (jt_t(rt, mask)->dtype != JT_DTYPE_BIT) return JT_E_DTYPE;
  if (!jt_same_shape(rt, g, mask)) return JT_E_SHAPE;
  if ((s = jt_want_m_mode(rt, m, g, &mode)) != JT_OK) return s;
  /* the reference takes the input shape from gx; in_shape must say the same */
  if ((int64_t)a[8] != jt_dim(rt, gx, 1) || (int64_t)a[9] != jt_dim(rt, gx, 2) ||
      (int64_t)a[10] != jt_dim(rt, gx, 3))
    return JT_E_ATTR;
  if ((s = pool_geometry(op, jt_dim(rt, gx, 1), jt_dim(rt, gx, 2), &ho, &wo)) != JT_OK)
    return s;
  if (jt_dim(rt, g, 0) != jt_dim(rt, gx, 0) || jt_dim(rt, g, 1) != ho ||
      jt_dim(rt, g, 2) != wo || jt_dim(rt, g, 3) != jt_dim(rt, gx, 3))
    return JT_E_SHAPE;
  if (jt_same_buffer(rt, gx, g) || jt_same_buffer(rt, gx, m)) return JT_E_SHAPE;
  return JT_OK;
}

jt_status jt_op_maxpool_bw_f32(jt_runtime *rt, const jt_op *op) {
  jt_pool_bw_f32_params p;
  pool_params(rt, op, op->in[1], &p);
  return jt_maxpool_bw_f32((const float *)jt_data(rt, op->in[0]),
                           (const int8_t *)jt_data(rt, op->in[1]),
                           (const int8_t *)jt_data(rt, op->in[2]),
                           (float *)jt_data(rt, op->out[0]), &p);
}

jt_status jt_check_maxpool_bw_f32(const jt_runtime *rt, const jt_op *op) {
  const int32_t g = op->in[0], x = op->in[1], y = op->in[2], gx = op->out[0];
  jt_status s;
  uint32_t ho, wo;
  if ((s = jt_want(rt, g, JT_DTYPE_F32, 4)) != JT_OK) return s;
  if ((s = jt_want(rt, x, JT_DTYPE_I8, 4)) != JT_OK) return s;
  if ((s = jt_want(rt, y, JT_DTYPE_I8, 4)) != JT_OK) return s;
  if ((s = jt_want(rt, gx, JT_DTYPE_F32, 4)) != JT_OK) return s;
  if ((s = pool_geometry(op, jt_dim(rt, x, 1), jt_dim(rt, x, 2), &ho, &wo)) != JT_OK) return s;
  if (jt_dim(rt, y, 0) != jt_dim(rt, x, 0) || jt_dim(rt, y, 1) != ho ||
      jt_dim(rt, y, 2) != wo || jt_dim(rt, y, 3) != jt_dim(rt, x, 3) ||
      !jt_same_shape(rt, g, y) || !jt_same_shape(rt, gx, x))
    return JT_E_SHAPE;
  if (jt_same_buffer(rt, gx, g)) return JT_E_SHAPE;
  return JT_OK;
}
