/* The banded inverted bottleneck kernel and its op bottleneck_s8 (jt_bottleneck_s8.h). */
#include "jt_bottleneck_s8.h"

#include "jt_eltwise_s8.h"
#include "jt_internal.h"

/* Output length of a window (jt_out_size), 0 when it does not fit. */
static uint32_t out_len(uint32_t size, uint32_t k, int32_t stride, int32_t p0, int32_t p1) {
  const int64_t n = k > (uint32_t)INT32_MAX ? -1 : jt_out_size(size, (int32_t)k, stride, p0, p1);
  return n < 0 ? 0u : (uint32_t)n;
}

/* a * b, capped far above 32 bits so that the caller's comparisons stay exact. */
static uint64_t mul_cap(uint64_t a, uint64_t b) {
  const uint64_t cap = (uint64_t)1 << 40;
  if (a != 0 && b > cap / a) return cap;
  return a * b;
}

static uint64_t band_bytes(const jt_dims4 *x_dims, const jt_conv_layer_s8 *e,
                           const jt_conv_layer_s8 *d) {
  const uint32_t e_cols = out_len(x_dims->w, e->w_dims.w, e->p.stride_w, e->p.pad_left,
                                  e->p.pad_right);
  const uint32_t d_cols = out_len(e_cols, d->w_dims.w, d->p.stride_w, d->p.pad_left,
                                  d->p.pad_right);
  const uint64_t c = e->w_dims.n;
  return mul_cap(mul_cap(d->w_dims.h, e_cols), c) + mul_cap(d_cols, c);
}

uint32_t jt_bottleneck_s8_get_buffer_size(const jt_dims4 *x_dims, const jt_conv_layer_s8 *expand,
                                          const jt_conv_layer_s8 *depthwise) {
  const uint64_t need = band_bytes(x_dims, expand, depthwise);
  return need > UINT32_MAX ? UINT32_MAX : (uint32_t)need;
}

jt_status jt_bottleneck_s8(const int8_t *x, const jt_dims4 *x_dims,
                           const jt_conv_layer_s8 *expand, const jt_conv_layer_s8 *depthwise,
                           const jt_conv_layer_s8 *project, int8_t *y, const jt_dims4 *y_dims,
                           int8_t *band) {
  const jt_conv_layer_s8 *e = expand, *d = depthwise, *pr = project;
  const uint32_t e_rows = out_len(x_dims->h, e->w_dims.h, e->p.stride_h, e->p.pad_top,
                                  e->p.pad_bottom);
  const uint32_t e_cols = out_len(x_dims->w, e->w_dims.w, e->p.stride_w, e->p.pad_left,
                                  e->p.pad_right);
  const uint32_t c = e->w_dims.n, kd = d->w_dims.h, d_cols = y_dims->w;
  const uint32_t row_bytes = e_cols * c;
  int8_t *d_row = band + kd * row_bytes;
  const jt_weight_s8 we = {.w = e->w}, wd = {.w = d->w}, wp = {.w = pr->w};  /* not merged */
  jt_conv_s8_params dp = d->p;
  dp.stride_h = 1;  /* the depthwise conv of the band yields one row */
  int64_t prev_first = 0, prev_stop = 0;
  for (uint32_t r = 0; r < y_dims->h; r++) {
    const int64_t top = (int64_t)r * d->p.stride_h - d->p.pad_top;
    const int64_t first = top > 0 ? top : 0;
    const int64_t stop = top + (int64_t)kd < (int64_t)e_rows ? top + (int64_t)kd : (int64_t)e_rows;
    /* the expanded rows [first, prev_stop) are in the band already (stop, first ascend) */
    int64_t have = first;
    if (first < prev_stop) {
      if (first > prev_first)
        memmove(band, band + (uint32_t)(first - prev_first) * row_bytes,
                (uint32_t)(prev_stop - first) * row_bytes);
      have = prev_stop;
    }
    for (int64_t er = have; er < stop; er++)
      jt_conv2d_s8_row(x, x_dims, &we, &e->w_dims, e->b, e->m, &e->p, (uint32_t)er, e_cols,
                       band + (uint32_t)(er - first) * row_bytes);
    prev_first = first;
    prev_stop = stop;
    /* the band holds rows [first, stop): the window's rows outside it are padding */
    const jt_dims4 bd = {1, (uint32_t)(stop - first), e_cols, c};
    dp.pad_top = (int32_t)(first - top);
    dp.pad_bottom = (int32_t)(top + (int64_t)kd - stop);
    jt_conv2d_s8_row(band, &bd, &wd, &d->w_dims, d->b, d->m, &dp, 0, d_cols, d_row);
    const jt_dims4 rd = {1, 1, d_cols, c};
    jt_conv2d_s8_row(d_row, &rd, &wp, &pr->w_dims, pr->b, pr->m, &pr->p, 0, d_cols,
                     y + r * d_cols * pr->w_dims.n);
  }
  return JT_OK;
}

/* --- bottleneck_s8: x w1 b1 m1 w2 b2 m2 w3 b3 m3 -> y band | e_strides@0 e_padding@2
 *     e_x_zero@6 e_y_zero@7 e_lo@8 e_hi@9 d_strides@10 d_padding@12 d_y_zero@16 d_lo@17
 *     d_hi@18 p_y_zero@19 p_lo@20 p_hi@21 ------------------------------------------------- */

/* The three layers from the op (tensor data only when rt's buffers are bound). */
static void layers(const jt_runtime *rt, const jt_op *op, int data, jt_conv_layer_s8 l[3]) {
  const int32_t *a = op->attr;
  for (uint32_t k = 0; k < 3; k++) {
    const int32_t *t = op->in + 1 + 3 * k;
    l[k].w = data ? (const int8_t *)jt_data(rt, t[0]) : NULL;
    l[k].b = data ? (const int32_t *)jt_data(rt, t[1]) : NULL;
    l[k].m = data ? (const float *)jt_data(rt, t[2]) : NULL;
    jt_dims4_of(rt, t[0], &l[k].w_dims);
  }
  const jt_conv_s8_params e = {a[0], a[1], a[2], a[3], a[4], a[5], 1, a[6], a[7], a[8], a[9]};
  const jt_conv_s8_params d = {a[10], a[11], a[12], a[13], a[14], a[15],
                               (int32_t)l[1].w_dims.n, a[7], a[16], a[17], a[18]};
  const jt_conv_s8_params p = {1, 1, 0, 0, 0, 0, 1, a[16], a[19], a[20], a[21]};
  l[0].p = e;
  l[1].p = d;
  l[2].p = p;
}

jt_status jt_op_bottleneck_s8(jt_runtime *rt, const jt_op *op) {
  jt_conv_layer_s8 l[3];
  jt_dims4 xd, yd;
  layers(rt, op, 1, l);
  jt_dims4_of(rt, op->in[0], &xd);
  jt_dims4_of(rt, op->out[0], &yd);
  return jt_bottleneck_s8((const int8_t *)jt_data(rt, op->in[0]), &xd, &l[0], &l[1], &l[2],
                          (int8_t *)jt_data(rt, op->out[0]), &yd,
                          (int8_t *)jt_data(rt, op->out[1]));
}

/* Weight (o, kh, kw, ci) int8, bias (o,) int32, multiplier (o,) const finite float32. */
static jt_status layer_check(const jt_runtime *rt, const int32_t *t) {
  jt_status s = jt_want(rt, t[0], JT_DTYPE_I8, 4);
  if (s != JT_OK || (s = jt_want(rt, t[1], JT_DTYPE_I32, 1)) != JT_OK ||
      (s = jt_want_multiplier(rt, t[2], 1)) != JT_OK)
    return s;
  const uint32_t o = jt_dim(rt, t[0], 0);
  if (jt_dim(rt, t[1], 0) != o || jt_dim(rt, t[2], 0) != o) return JT_E_SHAPE;
  if (!jt_reduction_ok(jt_dim(rt, t[0], 1), jt_dim(rt, t[0], 2), jt_dim(rt, t[0], 3)))
    return JT_E_SHAPE;
  return JT_OK;
}

jt_status jt_check_bottleneck_s8(const jt_runtime *rt, const jt_op *op) {
  const int32_t x = op->in[0], y = op->out[0], band = op->out[1];
  jt_status s;
  for (uint32_t k = 0; k < 3; k++)
    if ((s = layer_check(rt, op->in + 1 + 3 * k)) != JT_OK) return s;
  if ((s = jt_want(rt, x, JT_DTYPE_I8, 4)) != JT_OK) return s;
  if ((s = jt_want(rt, y, JT_DTYPE_I8, 4)) != JT_OK) return s;
  if ((s = jt_want(rt, band, JT_DTYPE_I8, 1)) != JT_OK) return s;
  jt_conv_layer_s8 l[3];
  jt_dims4 xd, yd;
  layers(rt, op, 0, l);
  jt_dims4_of(rt, x, &xd);
  jt_dims4_of(rt, y, &yd);
  const jt_conv_s8_params *e = &l[0].p, *d = &l[1].p, *p = &l[2].p;
  if (!jt_is_i8(e->x_zero) || !jt_requant_ok(e->y_zero, e->lo, e->hi) ||
      !jt_requant_ok(d->y_zero, d->lo, d->hi) || !jt_requant_ok(p->y_zero, p->lo, p->hi))
    return JT_E_ATTR;
  /* expand: groups 1 over x's channels; depthwise: one filter per expanded channel;
   * project: 1x1 over them. Batch 1. */
  const uint32_t c = l[0].w_dims.n, kd = l[1].w_dims.h;
  if (xd.n != 1 || l[0].w_dims.c != xd.c) return JT_E_SHAPE;
  if (l[1].w_dims.n != c || l[1].w_dims.c != 1) return JT_E_SHAPE;
  if (l[2].w_dims.h != 1 || l[2].w_dims.w != 1 || l[2].w_dims.c != c) return JT_E_SHAPE;
  uint32_t e_rows, e_cols, d_rows, d_cols;
  if ((s = jt_want_window(xd.h, l[0].w_dims.h, e->stride_h, e->pad_top, e->pad_bottom,
                        &e_rows)) != JT_OK ||
      (s = jt_want_window(xd.w, l[0].w_dims.w, e->stride_w, e->pad_left, e->pad_right,
                        &e_cols)) != JT_OK ||
      (s = jt_want_window(e_rows, kd, d->stride_h, d->pad_top, d->pad_bottom, &d_rows)) != JT_OK ||
      (s = jt_want_window(e_cols, l[1].w_dims.w, d->stride_w, d->pad_left, d->pad_right,
                        &d_cols)) != JT_OK)
    return s;
  if (yd.n != 1 || yd.h != d_rows || yd.w != d_cols || yd.c != l[2].w_dims.n) return JT_E_SHAPE;
  /* Every output row's band [first, stop) must be non-empty, and the input rows the
   * reference slices for it must be a real slice (kernels._rows: x[:, lo:hi] with lo <= hi,
   * hi >= 0), or the reference raises or reads other rows. first and stop ascend with the
   * row, so the first and the last rows are the extreme cases. */
  const int64_t top_last = (int64_t)(d_rows - 1) * d->stride_h - d->pad_top;
  if ((int64_t)kd <= d->pad_top || top_last >= (int64_t)e_rows) return JT_E_SHAPE;
  const int64_t stop0 = (int64_t)kd - d->pad_top < (int64_t)e_rows ? (int64_t)kd - d->pad_top
                                                                     : (int64_t)e_rows;
  const int64_t end0 = (stop0 - 1) * e->stride_h - e->pad_top + (int64_t)l[0].w_dims.h;
  const int64_t first_last = top_last > 0 ? top_last : 0;
  if (end0 < 0 || first_last * e->stride_h - e->pad_top > (int64_t)xd.h) return JT_E_SHAPE;
  if (jt_dim(rt, band, 0) < band_bytes(&xd, &l[0], &l[1])) return JT_E_SHAPE;
  return JT_OK;
}
