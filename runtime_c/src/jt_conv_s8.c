/* int8 convolution and dense kernels and their ops conv2d_s8, dense_s8 (jt_conv_s8.h). */
#include "jt_conv_s8.h"

#include "jt_eltwise_s8.h"
#include "jt_internal.h"
#include "jt_simd.h"

/* --- kernels ------------------------------------------------------------------------------ */

static int32_t dot_s8(const int8_t *x, int32_t x_zero, const int8_t *w, uint32_t len) {
  int32_t acc = 0;
  uint32_t c = 0;
#if JT_DSP
  /* four lanes a load: (x - x_zero) and w widened to 16-bit pairs, two products per SMLAD */
  const int32_t off = jt_neg_pair(x_zero);
  for (; c + 4 <= len; c += 4) {
    const int32_t xv = jt_ld_s8x4(x + c), wv = jt_ld_s8x4(w + c);
    acc = __smlad(__sxtab16(off, xv), __sxtb16(wv), acc);
    acc = __smlad(__sxtab16(off, jt_ror8(xv)), __sxtb16(jt_ror8(wv)), acc);
  }
#endif
  for (; c < len; c++) acc += ((int32_t)x[c] - x_zero) * (int32_t)w[c];
  return acc;
}

static int8_t requant(int32_t acc, int32_t bias, float m, const jt_conv_s8_params *p) {
  return jt_requantize_s8(jt_sat_add_i32(acc, bias), m, p->y_zero, p->lo, p->hi);
}

/* A 1x1 conv row without padding, groups 1 and a plain weight: output pixel ox reads the
 * pixel at x + ox * step. The DSP build computes two pixels by two channels at a time, so
 * that each load of x or w feeds two SMLADs. */
static void pointwise_row(const int8_t *x, uint32_t step, uint32_t wo, const int8_t *w,
                          uint32_t ci, uint32_t o_count, const int32_t *bias, const float *m,
                          const jt_conv_s8_params *p, int8_t *y) {
  const int32_t z = p->x_zero;
  uint32_t ox = 0;
#if JT_DSP
  const int32_t off = jt_neg_pair(z);
  const uint32_t c4 = ci & ~3u;
  for (; ox + 2 <= wo; ox += 2) {
    const int8_t *xa = x + ox * step, *xb = xa + step;
    int8_t *ya = y + ox * o_count, *yb = ya + o_count;
    uint32_t o = 0;
    for (; o + 2 <= o_count; o += 2) {
      const int8_t *wa = w + o * ci, *wb = wa + ci;
      int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (uint32_t c = 0; c < c4; c += 4) {
        const int32_t va = jt_ld_s8x4(xa + c), vb = jt_ld_s8x4(xb + c);
        const int32_t a02 = __sxtab16(off, va), a13 = __sxtab16(off, jt_ror8(va));
        const int32_t b02 = __sxtab16(off, vb), b13 = __sxtab16(off, jt_ror8(vb));
        const int32_t ua = jt_ld_s8x4(wa + c), ub = jt_ld_s8x4(wb + c);
        const int32_t p02 = __sxtb16(ua), p13 = __sxtb16(jt_ror8(ua));
        const int32_t q02 = __sxtb16(ub), q13 = __sxtb16(jt_ror8(ub));
        s0 = __smlad(a13, p13, __smlad(a02, p02, s0));
        s1 = __smlad(a13, q13, __smlad(a02, q02, s1));
        s2 = __smlad(b13, p13, __smlad(b02, p02, s2));
        s3 = __smlad(b13, q13, __smlad(b02, q02, s3));
      }
      for (uint32_t c = c4; c < ci; c++) {
        const int32_t u = (int32_t)xa[c] - z, v = (int32_t)xb[c] - z;
        s0 += u * wa[c];
        s1 += u * wb[c];
        s2 += v * wa[c];
        s3 += v * wb[c];
      }
      ya[o] = requant(s0, bias[o], m[o], p);
      ya[o + 1] = requant(s1, bias[o + 1], m[o + 1], p);
      yb[o] = requant(s2, bias[o], m[o], p);
      yb[o + 1] = requant(s3, bias[o + 1], m[o + 1], p);
    }
    for (; o < o_count; o++) {
      ya[o] = requant(dot_s8(xa, z, w + o * ci, ci), bias[o], m[o], p);
      yb[o] = requant(dot_s8(xb, z, w + o * ci, ci), bias[o], m[o], p);
    }
  }
#endif
  for (; ox < wo; ox++) {
    const int8_t *xp = x + ox * step;
    for (uint32_t o = 0; o < o_count; o++)
      y[ox * o_count + o] = requant(dot_s8(xp, z, w + o * ci, ci), bias[o], m[o], p);
  }
}

/* S of depthwise channels [o, o + 4) (one filter per channel, weights (O, kh, kw, 1)) at
 * taps [i0,i1) x [j0,j1) of the window at (ys, xs): the channels lie side by side in x,
 * so the DSP build loads the four with one word and multiplies 16-bit lanes. */
static void depthwise_4(const int8_t *x, const jt_dims4 *xd, int64_t ys, int64_t xs, uint32_t i0,
                        uint32_t i1, uint32_t j0, uint32_t j1, const int8_t *w, uint32_t kh,
                        uint32_t kw, uint32_t o, int32_t z, int32_t s[4]) {
  const uint32_t c = xd->c, k = kh * kw;
  int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#if JT_DSP
  const int32_t off = jt_neg_pair(z);
#endif
  for (uint32_t i = i0; i < i1; i++) {
    const uint32_t iy = (uint32_t)(ys + (int64_t)i), ix = (uint32_t)(xs + (int64_t)j0);
    const int8_t *xr = x + (iy * xd->w + ix) * c + o;
    const int8_t *wr = w + (o * kh + i) * kw + j0;
    for (uint32_t j = j0; j < j1; j++, xr += c, wr++) {
#if JT_DSP
      const int32_t v = jt_ld_s8x4(xr);
      const int32_t x02 = __sxtab16(off, v), x13 = __sxtab16(off, jt_ror8(v));
      a0 = __smlabb(x02, wr[0], a0);
      a1 = __smlabb(x13, wr[k], a1);
      a2 = __smlatb(x02, wr[2 * k], a2);
      a3 = __smlatb(x13, wr[3 * k], a3);
#else
      a0 += ((int32_t)xr[0] - z) * wr[0];
      a1 += ((int32_t)xr[1] - z) * wr[k];
      a2 += ((int32_t)xr[2] - z) * wr[2 * k];
      a3 += ((int32_t)xr[3] - z) * wr[3 * k];
#endif
    }
  }
  s[0] = a0;
  s[1] = a1;
  s[2] = a2;
  s[3] = a3;
}

/* The dot product with a row merged along its own axis: element c comes from ws[p] when
 * sel[p] == c, else from w[c] (one walk over the ascending list). */
static int32_t dot_merged_s8(const int8_t *x, int32_t x_zero, const int8_t *w, const int8_t *ws,
                             const int32_t *sel, uint32_t n_sel, uint32_t len) {
  int32_t acc = 0;
  uint32_t p = 0;
  for (uint32_t c = 0; c < len; c++) {
    int32_t wv;
    if (p < n_sel && (uint32_t)sel[p] == c) wv = ws[p++];
    else wv = w[c];
    acc += ((int32_t)x[c] - x_zero) * wv;
  }
  return acc;
}

/* S of output channel o at taps [i0,i1) x [j0,j1) of a merged weight. */
static int32_t merged_taps(const int8_t *x, const jt_dims4 *xd, int64_t ys, int64_t xs,
                           uint32_t i0, uint32_t i1, uint32_t j0, uint32_t j1, uint32_t cin0,
                           const jt_weight_s8 *w, const jt_dims4 *wd, uint32_t o,
                           int32_t x_zero) {
  const uint32_t kh = wd->h, kw = wd->w, ci = wd->c, ns = w->n_sel;
  const int32_t p0 = w->axis == 0 ? jt_sel_find(w->sel, ns, o) : -1;
  int32_t acc = 0;
  for (uint32_t i = i0; i < i1; i++) {
    const uint32_t iy = (uint32_t)(ys + (int64_t)i);
    const int32_t p1 = w->axis == 1 ? jt_sel_find(w->sel, ns, i) : -1;
    for (uint32_t j = j0; j < j1; j++) {
      const uint32_t ix = (uint32_t)(xs + (int64_t)j);
      const int8_t *xr = x + (iy * xd->w + ix) * xd->c + cin0;
      const int8_t *full = w->w + ((o * kh + i) * kw + j) * ci;
      const int32_t p2 = w->axis == 2 ? jt_sel_find(w->sel, ns, j) : -1;
      if (w->axis == 3) {
        const int8_t *part = w->w_sel + ((o * kh + i) * kw + j) * ns;
        acc += dot_merged_s8(xr, x_zero, full, part, w->sel, ns, ci);
      } else if (p0 >= 0) {
        acc += dot_s8(xr, x_zero, w->w_sel + (((uint32_t)p0 * kh + i) * kw + j) * ci, ci);
      } else if (p1 >= 0) {
        acc += dot_s8(xr, x_zero, w->w_sel + ((o * ns + (uint32_t)p1) * kw + j) * ci, ci);
      } else if (p2 >= 0) {
        acc += dot_s8(xr, x_zero, w->w_sel + ((o * kh + i) * ns + (uint32_t)p2) * ci, ci);
      } else {
        acc += dot_s8(xr, x_zero, full, ci);
      }
    }
  }
  return acc;
}

jt_status jt_conv2d_s8_row(const int8_t *x, const jt_dims4 *x_dims, const jt_weight_s8 *w,
                           const jt_dims4 *w_dims, const int32_t *bias, const float *m,
                           const jt_conv_s8_params *p, uint32_t oy, uint32_t wo,
                           int8_t *y_row) {
  const uint32_t o_count = w_dims->n, kh = w_dims->h, kw = w_dims->w, ci = w_dims->c;
  if (o_count == 0) return JT_OK;
  const uint32_t og = o_count / (uint32_t)p->groups;  /* output channels per group */
  const int64_t ys = (int64_t)oy * p->stride_h - p->pad_top;
  uint32_t i0, i1;
  jt_tap_range(ys, kh, x_dims->h, &i0, &i1);
  const int plain = w->w_sel == NULL;
  if (plain && kh == 1 && kw == 1 && p->groups == 1 && p->pad_top == 0 && p->pad_left == 0 &&
      p->pad_bottom == 0 && p->pad_right == 0) {
    pointwise_row(x + (uint32_t)ys * x_dims->w * x_dims->c, (uint32_t)p->stride_w * x_dims->c,
                  wo, w->w, ci, o_count, bias, m, p, y_row);
    return JT_OK;
  }
  const int depthwise = plain && ci == 1 && og == 1;  /* one filter per input channel */
  for (uint32_t ox = 0; ox < wo; ox++) {
    const int64_t xs = (int64_t)ox * p->stride_w - p->pad_left;
    uint32_t j0, j1;
    jt_tap_range(xs, kw, x_dims->w, &j0, &j1);
    int8_t *yo = y_row + ox * o_count;
    uint32_t o = 0;
    for (; depthwise && o + 4 <= o_count; o += 4) {
      int32_t acc[4];
      depthwise_4(x, x_dims, ys, xs, i0, i1, j0, j1, w->w, kh, kw, o, p->x_zero, acc);
      for (uint32_t q = 0; q < 4; q++) yo[o + q] = requant(acc[q], bias[o + q], m[o + q], p);
    }
    for (; o < o_count; o++) {
      const uint32_t cin0 = (o / og) * ci;  /* first input channel of o's group */
      int32_t acc = 0;
      if (w->w_sel != NULL) {
        acc = merged_taps(x, x_dims, ys, xs, i0, i1, j0, j1, cin0, w, w_dims, o, p->x_zero);
      } else if (p->groups == 1 && j1 > j0) {
        /* all channels of a pixel: taps j0..j1 of a row are one run in x and in w */
        const uint32_t run = (j1 - j0) * ci, ix = (uint32_t)(xs + (int64_t)j0);
        for (uint32_t i = i0; i < i1; i++) {
          const uint32_t iy = (uint32_t)(ys + (int64_t)i);
          acc += dot_s8(x + (iy * x_dims->w + ix) * ci, p->x_zero,
                        w->w + ((o * kh + i) * kw + j0) * ci, run);
        }
      } else {
        for (uint32_t i = i0; i < i1; i++) {
          const uint32_t iy = (uint32_t)(ys + (int64_t)i);
          const int8_t *xrow = x + (iy * x_dims->w) * x_dims->c + cin0;
          const int8_t *wrow = w->w + (o * kh + i) * kw * ci;
          for (uint32_t j = j0; j < j1; j++) {
            const uint32_t ix = (uint32_t)(xs + (int64_t)j);
            acc += dot_s8(xrow + ix * x_dims->c, p->x_zero, wrow + j * ci, ci);
          }
        }
      }
      yo[o] = requant(acc, bias[o], m[o], p);
    }
  }
  return JT_OK;
}

jt_status jt_conv2d_s8(const int8_t *x, const jt_dims4 *x_dims, const jt_weight_s8 *w,
                       const jt_dims4 *w_dims, const int32_t *bias, const float *m,
                       const jt_conv_s8_params *p, int8_t *y, const jt_dims4 *y_dims) {
  const uint32_t image = x_dims->h * x_dims->w * x_dims->c;
  const uint32_t row = y_dims->w * y_dims->c;
  for (uint32_t n = 0; n < y_dims->n; n++) {
    for (uint32_t oy = 0; oy < y_dims->h; oy++) {
      jt_conv2d_s8_row(x + n * image, x_dims, w, w_dims, bias, m, p, oy, y_dims->w,
                       y + (n * y_dims->h + oy) * row);
    }
  }
  return JT_OK;
}

jt_status jt_dense_s8(const int8_t *x, uint32_t n, uint32_t k, const jt_weight_s8 *w,
                      uint32_t o, const int32_t *bias, const float *m,
                      const jt_dense_s8_params *p, int8_t *y) {
  for (uint32_t b = 0; b < n; b++) {
    const int8_t *xr = x + b * k;
    for (uint32_t oc = 0; oc < o; oc++) {
      const int8_t *wr = w->w + oc * k;
      int32_t acc;
      if (w->w_sel == NULL) {
        acc = dot_s8(xr, p->x_zero, wr, k);
      } else if (w->axis == 1) {
        acc = dot_merged_s8(xr, p->x_zero, wr, w->w_sel + oc * w->n_sel, w->sel, w->n_sel, k);
      } else {
        const int32_t at = jt_sel_find(w->sel, w->n_sel, oc);
        acc = dot_s8(xr, p->x_zero, at >= 0 ? w->w_sel + (uint32_t)at * k : wr, k);
      }
      y[b * o + oc] =
          jt_requantize_s8(jt_sat_add_i32(acc, bias[oc]), m[oc], p->y_zero, p->lo, p->hi);
    }
  }
  return JT_OK;
}

void jt_dims4_of(const jt_runtime *rt, int32_t id, jt_dims4 *d) {
  d->n = jt_dim(rt, id, 0);
  d->h = jt_dim(rt, id, 1);
  d->w = jt_dim(rt, id, 2);
  d->c = jt_dim(rt, id, 3);
}

/* The operands both ops share besides the weight: x and y int8 of this rank, bias int32
 * (O,) and multipliers (O,) (their lengths are checked by the caller). */
static jt_status io_check(const jt_runtime *rt, const jt_op *op, uint32_t rank) {
  jt_status s;
  if ((s = jt_want(rt, op->in[0], JT_DTYPE_I8, rank)) != JT_OK) return s;
  if ((s = jt_want(rt, op->in[2], JT_DTYPE_I32, 1)) != JT_OK) return s;
  if ((s = jt_want_multiplier(rt, op->in[3], 1)) != JT_OK) return s;
  return jt_want(rt, op->out[0], JT_DTYPE_I8, rank);
}

/* --- conv2d_s8: x w b m w_sel? sel? -> y | strides@0 padding@2 groups@6 x_zero@7 y_zero@8
 *     lo@9 hi@10 sel_axis?@11 ---------------------------------------------------------------- */

static void conv_params(const jt_op *op, jt_conv_s8_params *p) {
  const int32_t *a = op->attr;
  p->stride_h = a[0];
  p->stride_w = a[1];
  p->pad_top = a[2];
  p->pad_bottom = a[3];
  p->pad_left = a[4];
  p->pad_right = a[5];
  p->groups = a[6];
  p->x_zero = a[7];
  p->y_zero = a[8];
  p->lo = a[9];
  p->hi = a[10];
}

jt_status jt_op_conv2d_s8(jt_runtime *rt, const jt_op *op) {
  jt_conv_s8_params p;
  jt_weight_s8 w;
  jt_dims4 xd, wd, yd;
  conv_params(op, &p);
  jt_weight_operands_fill(rt, op, 1, 4, 11, 4, &w);
  jt_dims4_of(rt, op->in[0], &xd);
  jt_dims4_of(rt, op->in[1], &wd);
  jt_dims4_of(rt, op->out[0], &yd);
  return jt_conv2d_s8((const int8_t *)jt_data(rt, op->in[0]), &xd, &w, &wd,
                      (const int32_t *)jt_data(rt, op->in[2]), (const float *)jt_data(rt, op->in[3]),
                      &p, (int8_t *)jt_data(rt, op->out[0]), &yd);
}

jt_status jt_check_conv2d_s8(const jt_runtime *rt, const jt_op *op) {
  const int32_t x = op->in[0], b = op->in[2], m = op->in[3], y = op->out[0];
  jt_weight_s8 w;
  jt_status s = jt_weight_operands(rt, op, 1, 4, 4, 11, 4, &w);
  if (s != JT_OK || (s = io_check(rt, op, 4)) != JT_OK) return s;
  jt_conv_s8_params p;
  jt_dims4 xd, wd, yd;
  conv_params(op, &p);
  jt_dims4_of(rt, x, &xd);
  jt_dims4_of(rt, op->in[1], &wd);
  jt_dims4_of(rt, y, &yd);
  if (!jt_is_i8(p.x_zero) || !jt_requant_ok(p.y_zero, p.lo, p.hi) || p.groups < 1)
    return JT_E_ATTR;
  const uint32_t g = (uint32_t)p.groups;
  if ((uint64_t)wd.c * g != xd.c || wd.n % g != 0) return JT_E_SHAPE;
  if (jt_dim(rt, b, 0) != wd.n || jt_dim(rt, m, 0) != wd.n) return JT_E_SHAPE;
  if (!jt_reduction_ok(wd.h, wd.w, wd.c)) return JT_E_SHAPE;
  uint32_t ho, wo;
  if ((s = jt_want_window(xd.h, wd.h, p.stride_h, p.pad_top, p.pad_bottom, &ho)) != JT_OK) return s;
  if ((s = jt_want_window(xd.w, wd.w, p.stride_w, p.pad_left, p.pad_right, &wo)) != JT_OK) return s;
  if (yd.n != xd.n || yd.h != ho || yd.w != wo || yd.c != wd.n) return JT_E_SHAPE;
  return JT_OK;
}

/* --- dense_s8: x w b m w_sel? sel? -> y | x_zero@0 y_zero@1 lo@2 hi@3 sel_axis?@4 --------- */

jt_status jt_op_dense_s8(jt_runtime *rt, const jt_op *op) {
  const int32_t *a = op->attr;
  const jt_dense_s8_params p = {a[0], a[1], a[2], a[3]};
  jt_weight_s8 w;
  jt_weight_operands_fill(rt, op, 1, 4, 4, 2, &w);
  const int32_t x = op->in[0];
  return jt_dense_s8((const int8_t *)jt_data(rt, x), jt_dim(rt, x, 0), jt_dim(rt, x, 1), &w,
                     jt_dim(rt, op->in[1], 0), (const int32_t *)jt_data(rt, op->in[2]),
                     (const float *)jt_data(rt, op->in[3]), &p,
                     (int8_t *)jt_data(rt, op->out[0]));
}

jt_status jt_check_dense_s8(const jt_runtime *rt, const jt_op *op) {
  const int32_t x = op->in[0], w = op->in[1], b = op->in[2], m = op->in[3], y = op->out[0];
  jt_weight_s8 wt;
  jt_status s = jt_weight_operands(rt, op, 1, 4, 4, 4, 2, &wt);
  if (s != JT_OK || (s = io_check(rt, op, 2)) != JT_OK) return s;
  const int32_t *a = op->attr;
  if (!jt_is_i8(a[0]) || !jt_requant_ok(a[1], a[2], a[3])) return JT_E_ATTR;
  const uint32_t o = jt_dim(rt, w, 0), k = jt_dim(rt, w, 1);
  if (jt_dim(rt, x, 1) != k || jt_dim(rt, b, 0) != o || jt_dim(rt, m, 0) != o) return JT_E_SHAPE;
  if (!jt_reduction_ok(1, 1, k)) return JT_E_SHAPE;
  if (jt_dim(rt, y, 0) != jt_dim(rt, x, 0) || jt_dim(rt, y, 1) != o) return JT_E_SHAPE;
  return JT_OK;
}
