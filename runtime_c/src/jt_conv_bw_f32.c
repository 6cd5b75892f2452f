/* Input gradients of convolutions and dense layers, float32: kernels, adapters, checks
 * (see jt_conv_bw_f32.h for layouts and the summation order). */
#include "jt_conv_bw_f32.h"

#include "jt_internal.h"
#include "jt_vec_f32.h"

/* --- conv2d_bw_input -------------------------------------------------------------------- */

/* Weights converted at once along the input channels (a stack buffer of floats). */
#define CHUNK 32u

/* The outputs o in [0, n_out) whose input position o * stride + off lies in [0, n_in),
 * as [*lo, *hi) (empty when equal): one tap's reach, so that no loop tests positions.
 * off = tap - pad >= -INT32_MAX and n_in - 1 - off <= INT32_MAX (the verifier's bounds),
 * so 32-bit unsigned divisions suffice (one instruction on the M4/M7). */
static void out_span(int64_t off, int32_t stride, uint32_t n_in, uint32_t n_out, uint32_t *lo,
                     uint32_t *hi) {
  const uint32_t s = (uint32_t)stride;
  const int64_t last = (int64_t)n_in - 1 - off;
  uint32_t a = off >= 0 ? 0u : (uint32_t)(-off) / s + ((uint32_t)(-off) % s != 0u);
  uint32_t b = last < 0 ? 0u : (uint32_t)last / s + 1u;
  if (b > n_out) b = n_out;
  if (a > b) a = b;
  *lo = a;
  *hi = b;
}

jt_status jt_conv2d_bw_input_f32(const float *g, const jt_weight_s8 *w, float *gx,
                                 const jt_conv_bw_f32_params *p) {
  const uint32_t og = p->o / p->groups, ci = p->c / p->groups;
  const uint32_t total = p->n * p->h * p->w * p->c;
  uint32_t e, i, j, oc, cc, n, y, x, y0, y1, x0, x1;
  /* gx starts at +0.0f as the reference's np.zeros; then each element gets its terms in
   * tap order, then output-channel order: for a fixed tap and output channel, an input
   * element is reached from at most one output position, so the loops inside those two
   * keep every element's own order. Groups of 4 or more input channels run along them
   * (a weight run converted once, then an axpy per position); fewer, along the row. */
  for (e = 0; e < total; e++) gx[e] = 0.0f;
  for (i = 0; i < p->kh; i++) {
    out_span((int64_t)i - p->pad_top, p->stride_h, p->h, p->ho, &y0, &y1);
    for (j = 0; j < p->kw; j++) {
      out_span((int64_t)j - p->pad_left, p->stride_w, p->w, p->wo, &x0, &x1);
      if (x0 == x1) continue;
      const uint32_t px0 = (uint32_t)((int64_t)x0 * p->stride_w + j - p->pad_left);
      const uint32_t step = (uint32_t)p->stride_w * p->c;
      for (oc = 0; oc < p->o; oc++) {
        const uint32_t c0 = (oc / og) * ci, w0 = ((oc * p->kh + i) * p->kw + j) * ci;
        for (uint32_t k0 = 0; ci >= 4u && k0 < ci; k0 += CHUNK) {
          const uint32_t len = ci - k0 < CHUNK ? ci - k0 : CHUNK;
          float wf[CHUNK];
          jt_weight_s8_run_f32(w, w0 + k0, len, wf);
          for (n = 0; n < p->n; n++) {
            for (y = y0; y < y1; y++) {
              const uint32_t py = (uint32_t)((int64_t)y * p->stride_h + i - p->pad_top);
              jt_axpy_rows_f32(gx + ((n * p->h + py) * p->w + px0) * p->c + c0 + k0, step,
                               g + ((n * p->ho + y) * p->wo + x0) * p->o + oc, p->o, x1 - x0,
                               wf, len);
            }
          }
        }
        for (cc = 0; ci < 4u && cc < ci; cc++) {
          const float wv = (float)jt_weight_s8_at(w, w0 + cc);
          for (n = 0; n < p->n; n++) {
            for (y = y0; y < y1; y++) {
              const uint32_t py = (uint32_t)((int64_t)y * p->stride_h + i - p->pad_top);
              const float *gr = g + ((n * p->ho + y) * p->wo + x0) * p->o + oc;
              float *d = gx + ((n * p->h + py) * p->w + px0) * p->c + c0 + cc;
              for (x = x0; x < x1; x++, gr += p->o, d += step) *d += *gr * wv;
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
  const uint32_t step = (uint32_t)p->stride_w * stride;  /* gx elements between outputs */
  const uint32_t row_step = (uint32_t)p->stride_h * p->w * stride;
  uint32_t e, i, j, y, x, y0, y1, x0, x1;
  for (e = 0; e < p->h * p->w; e++) gx[e * stride] = 0.0f;
  for (i = 0; i < p->kh; i++) {
    out_span((int64_t)i - p->pad_top, p->stride_h, p->h, p->ho, &y0, &y1);
    if (y0 == y1) continue;
    const uint32_t py0 = (uint32_t)((int64_t)y0 * p->stride_h + i - p->pad_top);
    for (j = 0; j < p->kw; j++) {
      out_span((int64_t)j - p->pad_left, p->stride_w, p->w, p->wo, &x0, &x1);
      if (x0 == x1) continue;
      const uint32_t k = (ch * p->kh + i) * p->kw + j;
      /* plain weights read directly: a call per tap and channel costs 0.3 M a MCUNet step */
      const float wv = (float)(w->w_sel == NULL ? w->w[k] : jt_weight_s8_at(w, k));
      const uint32_t px0 = (uint32_t)((int64_t)x0 * p->stride_w + j - p->pad_left), n = x1 - x0;
      const float *gr = g + y0 * p->wo + x0;
      float *d = gx + (py0 * p->w + px0) * stride;
      for (y = y0; y < y1; y++, gr += p->wo, d += row_step) {
        if (step == 1u) {
          jt_axpy_f32(d, wv, gr, n);
        } else {
          for (x = 0; x < n; x++) d[x * step] += gr[x] * wv;
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
