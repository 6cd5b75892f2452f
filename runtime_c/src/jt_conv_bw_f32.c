/* Input gradients of convolutions and dense layers, float32: kernels, adapters, checks
 * (see jt_conv_bw_f32.h for layouts and the summation order). */
#include "jt_conv_bw_f32.h"

#include "jt_internal.h"

/* --- conv2d_bw_input -------------------------------------------------------------------- */

jt_status jt_conv2d_bw_input_f32(const float *g, const jt_weight_s8 *w, float *gx,
                                 const jt_conv_bw_f32_params *p) {
  const uint32_t og = p->o / p->groups, ci = p->c / p->groups;
  const uint32_t total = p->n * p->h * p->w * p->c;
  uint32_t e, i, j, oc, cc, n, y, x;
  /* gx starts at +0.0f as the reference's np.zeros; then each element gets its terms in
   * tap order, then output-channel order: for a fixed tap and output channel, an input
   * element is reached from at most one output position, so looping over the positions
   * innermost keeps every element's own order and reads each weight once. */
  for (e = 0; e < total; e++) gx[e] = 0.0f;
  for (i = 0; i < p->kh; i++) {
    for (j = 0; j < p->kw; j++) {
      for (oc = 0; oc < p->o; oc++) {
        const uint32_t c0 = (oc / og) * ci;
        for (cc = 0; cc < ci; cc++) {
          const float wv = (float)jt_weight_s8_at(w, ((oc * p->kh + i) * p->kw + j) * ci + cc);
          for (n = 0; n < p->n; n++) {
            for (y = 0; y < p->ho; y++) {
              const int32_t py = (int32_t)(y * (uint32_t)p->stride_h + i) - p->pad_top;
              const float *grow;
              float *gxrow;
              if (py < 0 || (uint32_t)py >= p->h) continue;
              grow = g + ((n * p->ho + y) * p->wo) * p->o + oc;
              gxrow = gx + ((n * p->h + (uint32_t)py) * p->w) * p->c + c0 + cc;
              for (x = 0; x < p->wo; x++) {
                const int32_t px = (int32_t)(x * (uint32_t)p->stride_w + j) - p->pad_left;
                if (px < 0 || (uint32_t)px >= p->w) continue;
                gxrow[(uint32_t)px * p->c] += grow[x * p->o] * wv;
              }
            }
          }
        }
      }
    }
  }
  return JT_OK;
}

uint32_t jt_conv2d_bw_input_f32_dw_in_place_get_buffer_size(const jt_conv_bw_f32_params *p) {
  return p->ho * p->wo * (uint32_t)sizeof(float);
}

void jt_depthwise_bw_plane_f32(const float *g, const jt_weight_s8 *w, uint32_t ch, float *gx,
                               uint32_t stride, const jt_conv_bw_f32_params *p) {
  uint32_t e, i, j, y, x;
  for (e = 0; e < p->h * p->w; e++) gx[e * stride] = 0.0f;
  for (i = 0; i < p->kh; i++) {
    for (j = 0; j < p->kw; j++) {
      const float wv = (float)jt_weight_s8_at(w, (ch * p->kh + i) * p->kw + j);
      for (y = 0; y < p->ho; y++) {
        const int32_t py = (int32_t)(y * (uint32_t)p->stride_h + i) - p->pad_top;
        if (py < 0 || (uint32_t)py >= p->h) continue;
        for (x = 0; x < p->wo; x++) {
          const int32_t px = (int32_t)(x * (uint32_t)p->stride_w + j) - p->pad_left;
          if (px < 0 || (uint32_t)px >= p->w) continue;
          gx[((uint32_t)py * p->w + (uint32_t)px) * stride] += g[y * p->wo + x] * wv;
        }
      }
    }
  }
}

jt_status jt_conv2d_bw_input_f32_dw_in_place(float *g_gx, const jt_weight_s8 *w,
                                             float *scratch, const jt_conv_bw_f32_params *p) {
  const uint32_t c = p->c, plane = p->ho * p->wo;
  uint32_t n, ch, e;
  for (n = 0; n < p->n; n++) {
    float *img = g_gx + n * p->h * p->w * c;
    for (ch = 0; ch < c; ch++) {
      /* channel ch of g moves to scratch; then channel ch of gx (same bytes) is rebuilt
       * from it: gx's channel ch depends on g's channel ch only (one filter each) */
      for (e = 0; e < plane; e++) scratch[e] = img[e * c + ch];
      jt_depthwise_bw_plane_f32(scratch, w, ch, img + ch, c, p);
    }
  }
  return JT_OK;
}

/* --- dense_bw_input ---------------------------------------------------------------------- */

jt_status jt_dense_bw_input_f32(const float *g, const jt_weight_s8 *w, float *gx,
                                const jt_dense_bw_f32_params *p) {
  uint32_t n, o, k;
  /* _running_sum over o: the first term starts each sum (an all -0.0f sum stays -0.0f) */
  if (p->o == 0) {
    for (k = 0; k < p->n * p->k; k++) gx[k] = 0.0f;
    return JT_OK;
  }
  for (o = 0; o < p->o; o++) {
    for (k = 0; k < p->k; k++) {
      const float wv = (float)jt_weight_s8_at(w, o * p->k + k);
      for (n = 0; n < p->n; n++) {
        const float t = g[n * p->o + o] * wv;
        float *d = gx + n * p->k + k;
        *d = o == 0 ? t : *d + t;
      }
    }
  }
  return JT_OK;
}

/* --- conv2d_bw_input_f32: g w w_sel? sel? -> gx scratch? ---------------------------------
 * attrs: strides@0 padding@2 (top, bottom, left, right) groups@6 in_shape@7 sel_axis?@10 */

static void conv_params(const jt_runtime *rt, const jt_op *op, jt_conv_bw_f32_params *p) {
  const int32_t g = op->in[0], gx = op->out[0], w = op->in[1];
  p->n = jt_dim(rt, gx, 0);
  p->h = jt_dim(rt, gx, 1);
  p->w = jt_dim(rt, gx, 2);
  p->c = jt_dim(rt, gx, 3);
  p->ho = jt_dim(rt, g, 1);
  p->wo = jt_dim(rt, g, 2);
  p->o = jt_dim(rt, g, 3);
  p->kh = jt_dim(rt, w, 1);
  p->kw = jt_dim(rt, w, 2);
  p->groups = (uint32_t)op->attr[6];
  p->stride_h = op->attr[0];
  p->stride_w = op->attr[1];
  p->pad_top = op->attr[2];
  p->pad_left = op->attr[4];
}

jt_status jt_op_conv2d_bw_input_f32(jt_runtime *rt, const jt_op *op) {
  jt_conv_bw_f32_params p;
  jt_weight_s8 w;
  conv_params(rt, op, &p);
  jt_weight_operands_fill(rt, op, 1, 2, 10, 4, &w);
  if (op->n_out == 2u)
    return jt_conv2d_bw_input_f32_dw_in_place((float *)jt_data(rt, op->out[0]), &w,
                                              (float *)jt_data(rt, op->out[1]), &p);
  return jt_conv2d_bw_input_f32((const float *)jt_data(rt, op->in[0]), &w,
                                (float *)jt_data(rt, op->out[0]), &p);
}

jt_status jt_check_conv2d_bw_input_f32(const jt_runtime *rt, const jt_op *op) {
  const int32_t *a = op->attr;
  const int32_t g = op->in[0], gx = op->out[0];
  jt_weight_s8 w;
  jt_status s;
  uint32_t ho, wo, n, h, wd, c, o, groups;
  if ((s = jt_weight_operands(rt, op, 1, 2, 2, 10, 4, &w)) != JT_OK) return s;
  if ((s = jt_want(rt, g, JT_DTYPE_F32, 4)) != JT_OK) return s;
  if ((s = jt_want(rt, gx, JT_DTYPE_F32, 4)) != JT_OK) return s;
  n = jt_dim(rt, gx, 0);
  h = jt_dim(rt, gx, 1);
  wd = jt_dim(rt, gx, 2);
  c = jt_dim(rt, gx, 3);
  o = jt_dim(rt, g, 3);
  if (a[6] < 1) return JT_E_ATTR;
  groups = (uint32_t)a[6];
  /* the reference takes the input shape from gx; in_shape must say the same */
  if ((int64_t)a[7] != h || (int64_t)a[8] != wd || (int64_t)a[9] != c) return JT_E_ATTR;
  if (jt_dim(rt, g, 0) != n || w.dims[0] != o || o % groups != 0u ||
      (uint64_t)w.dims[3] * groups != c)
    return JT_E_SHAPE;
  if ((s = jt_want_window(h, w.dims[1], a[0], a[2], a[3], &ho)) != JT_OK) return s;
  if ((s = jt_want_window(wd, w.dims[2], a[1], a[4], a[5], &wo)) != JT_OK) return s;
  if (jt_dim(rt, g, 1) != ho || jt_dim(rt, g, 2) != wo) return JT_E_SHAPE;
  if (op->n_out == 2u) {
    /* in place, channel by channel: depthwise with gx shaped like g, scratch one plane */
    const int32_t sc = op->out[1];
    if (jt_t(rt, sc)->dtype != JT_DTYPE_F32) return JT_E_DTYPE;
    if (groups != c || o != c || !jt_same_shape(rt, g, gx) ||
        (uint64_t)jt_numel(rt, sc) != (uint64_t)h * wd)
      return JT_E_SHAPE;
    if (jt_same_buffer(rt, sc, g) || jt_same_buffer(rt, sc, gx)) return JT_E_SHAPE;
  } else if (jt_same_buffer(rt, gx, g)) {
    return JT_E_SHAPE;  /* only the channel-by-channel variant may run in place */
  }
  return JT_OK;
}

/* --- dense_bw_input_f32: g w w_sel? sel? -> gx | sel_axis?@0 ----------------------------- */

jt_status jt_op_dense_bw_input_f32(jt_runtime *rt, const jt_op *op) {
  jt_dense_bw_f32_params p;
  jt_weight_s8 w;
  jt_weight_operands_fill(rt, op, 1, 2, 0, 2, &w);
  p.n = jt_dim(rt, op->in[0], 0);
  p.o = jt_dim(rt, op->in[0], 1);
  p.k = jt_dim(rt, op->out[0], 1);
  return jt_dense_bw_input_f32((const float *)jt_data(rt, op->in[0]), &w,
                               (float *)jt_data(rt, op->out[0]), &p);
}

jt_status jt_check_dense_bw_input_f32(const jt_runtime *rt, const jt_op *op) {
  const int32_t g = op->in[0], gx = op->out[0];
  jt_weight_s8 w;
  jt_status s;
  if ((s = jt_weight_operands(rt, op, 1, 2, 2, 0, 2, &w)) != JT_OK) return s;
  if ((s = jt_want(rt, g, JT_DTYPE_F32, 2)) != JT_OK) return s;
  if ((s = jt_want(rt, gx, JT_DTYPE_F32, 2)) != JT_OK) return s;
  if (jt_dim(rt, g, 1) != w.dims[0] || jt_dim(rt, gx, 0) != jt_dim(rt, g, 0) ||
      jt_dim(rt, gx, 1) != w.dims[1])
    return JT_E_SHAPE;
  if (jt_same_buffer(rt, gx, g)) return JT_E_SHAPE;
  return JT_OK;
}
