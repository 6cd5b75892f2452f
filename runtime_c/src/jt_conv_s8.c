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
    acc = __smlad(jt_sxtab16_ror8(off, xv), jt_sxtb16_ror8(wv), acc);
  }
#endif
  for (; c < len; c++) acc += ((int32_t)x[c] - x_zero) * (int32_t)w[c];
  return acc;
}

static inline JT_ALWAYS_INLINE int8_t requant(int32_t acc, int32_t bias, float m,
                                              const jt_rq *q) {
  return jt_rq_apply(jt_sat_add_i32(acc, bias), m, q);
}

/* The dot product with a row merged along its own (innermost) axis: element c is ws[k]
 * where sel[k] == c, else w[c]. Computed as the full row's dot product plus what the
 * trained elements change, sum over k of (x[sel[k]] - z) * (ws[k] - w[sel[k]]): exact in
 * int32 (both sums are bounded like the dot product), and the full row takes the fast
 * loop. */
static int32_t dot_merged_s8(const int8_t *x, int32_t z, const int8_t *w, const int8_t *ws,
                             const int32_t *sel, uint32_t n, uint32_t len) {
  int32_t acc = dot_s8(x, z, w, len);
  for (uint32_t k = 0; k < n; k++) {
    const uint32_t c = (uint32_t)sel[k];
    acc += ((int32_t)x[c] - z) * ((int32_t)ws[k] - (int32_t)w[c]);
  }
  return acc;
}

/* Output channel o of a 1x1 weight (O, 1, 1, ci): its full row, and the trained part
 * (NULL if none) when the weight is merged along the output (axis 0) or input (axis 3)
 * channels. */
static const int8_t *pw_row(const jt_weight_s8 *w, uint32_t o, uint32_t ci, const int8_t **part) {
  *part = NULL;
  if (w->w_sel == NULL) return w->w + o * ci;
  if (w->axis == 3) {
    *part = w->w_sel + o * w->n_sel;
    return w->w + o * ci;
  }
  const int32_t at = jt_sel_find(w->sel, w->n_sel, o);  /* axis 0 */
  return at >= 0 ? w->w_sel + (uint32_t)at * ci : w->w + o * ci;
}

static int32_t pw_dot(const int8_t *x, int32_t z, const jt_weight_s8 *w, const int8_t *row,
                      const int8_t *part, uint32_t ci) {
  return part == NULL ? dot_s8(x, z, row, ci)
                      : dot_merged_s8(x, z, row, part, w->sel, w->n_sel, ci);
}

#if JT_DSP
/* Channels the 2x2 pointwise kernel takes (its stack buffer: 4 bytes a channel); a wider
 * layer runs pixel by pixel. */
#define PW_MAX_CI 640u

/* (x - z) of two pixels a and b as 16-bit pairs, for each 4 channels the words (a0, a2),
 * (b0, b2), (a1, a3), (b1, b3): the order the 2x2 kernel multiplies them in. */
static void pw_expand(const int8_t *xa, const int8_t *xb, int32_t off, uint32_t c4,
                      int32_t *buf) {
  for (uint32_t c = 0; c < c4; c += 4, buf += 4) {
    const int32_t va = jt_ld_s8x4(xa + c), vb = jt_ld_s8x4(xb + c);
    buf[0] = __sxtab16(off, va);
    buf[1] = __sxtab16(off, vb);
    buf[2] = jt_sxtab16_ror8(off, va);
    buf[3] = jt_sxtab16_ror8(off, vb);
  }
}

/* s[0..4) = the dots of pixels (a, b) x rows (wa, wb) over the first c4 channels, from the
 * expanded pixels: each weight load feeds four SMLADs. */
static void pw_2x2(const int32_t *xp, const int8_t *wa, const int8_t *wb, uint32_t c4,
                   int32_t s[4]) {
  int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (uint32_t c = 0; c < c4; c += 4, xp += 4) {
    const int32_t ua = jt_ld_s8x4(wa + c), ub = jt_ld_s8x4(wb + c);
    const int32_t p02 = __sxtb16(ua), q02 = __sxtb16(ub);
    s0 = __smlad(xp[0], p02, s0);
    s2 = __smlad(xp[1], p02, s2);
    s1 = __smlad(xp[0], q02, s1);
    s3 = __smlad(xp[1], q02, s3);
    const int32_t p13 = jt_sxtb16_ror8(ua), q13 = jt_sxtb16_ror8(ub);
    s0 = __smlad(xp[2], p13, s0);
    s2 = __smlad(xp[3], p13, s2);
    s1 = __smlad(xp[2], q13, s1);
    s3 = __smlad(xp[3], q13, s3);
  }
  s[0] = s0;
  s[1] = s1;
  s[2] = s2;
  s[3] = s3;
}
#endif

/* A 1x1 conv row without padding and with groups 1 (the weight plain or merged along
 * axis 0 or 3): output pixel ox reads the pixel at x + ox * step. The DSP build takes two
 * pixels at a time, widened once into a stack buffer, by two output channels. */
static void pointwise_row(const int8_t *x, uint32_t step, uint32_t wo, const jt_weight_s8 *w,
                          uint32_t ci, uint32_t o_count, const int32_t *bias, const float *m,
                          const jt_conv_s8_params *p, int8_t *y) {
  const int32_t z = p->x_zero;
  const jt_rq q = jt_rq_make(p->y_zero, p->lo, p->hi);
  uint32_t ox = 0;
#if JT_DSP
  int32_t buf[PW_MAX_CI];
  const uint32_t c4 = ci & ~3u;
  for (; ci <= PW_MAX_CI && ox + 2 <= wo; ox += 2) {
    const int8_t *xa = x + ox * step, *xb = xa + step;
    int8_t *ya = y + ox * o_count, *yb = ya + o_count;
    pw_expand(xa, xb, jt_neg_pair(z), c4, buf);
    uint32_t o = 0;
    for (; o + 2 <= o_count; o += 2) {
      const int8_t *pa, *pb;
      const int8_t *wa = pw_row(w, o, ci, &pa), *wb = pw_row(w, o + 1, ci, &pb);
      int32_t s[4];
      pw_2x2(buf, wa, wb, c4, s);
      for (uint32_t c = c4; c < ci; c++) {
        const int32_t u = (int32_t)xa[c] - z, v = (int32_t)xb[c] - z;
        s[0] += u * wa[c];
        s[1] += u * wb[c];
        s[2] += v * wa[c];
        s[3] += v * wb[c];
      }
      if (pa != NULL) {  /* merged along the input channels: both rows are */
        for (uint32_t k = 0; k < w->n_sel; k++) {
          const uint32_t c = (uint32_t)w->sel[k];
          const int32_t u = (int32_t)xa[c] - z, v = (int32_t)xb[c] - z;
          const int32_t da = (int32_t)pa[k] - wa[c], db = (int32_t)pb[k] - wb[c];
          s[0] += u * da;
          s[1] += u * db;
          s[2] += v * da;
          s[3] += v * db;
        }
      }
      ya[o] = requant(s[0], bias[o], m[o], &q);
      ya[o + 1] = requant(s[1], bias[o + 1], m[o + 1], &q);
      yb[o] = requant(s[2], bias[o], m[o], &q);
      yb[o + 1] = requant(s[3], bias[o + 1], m[o + 1], &q);
    }
    for (; o < o_count; o++) {
      const int8_t *part, *row = pw_row(w, o, ci, &part);
      ya[o] = requant(pw_dot(xa, z, w, row, part, ci), bias[o], m[o], &q);
      yb[o] = requant(pw_dot(xb, z, w, row, part, ci), bias[o], m[o], &q);
    }
  }
#endif
  for (; ox < wo; ox++) {
    const int8_t *xp = x + ox * step;
    for (uint32_t o = 0; o < o_count; o++) {
      const int8_t *part, *row = pw_row(w, o, ci, &part);
      y[ox * o_count + o] = requant(pw_dot(xp, z, w, row, part, ci), bias[o], m[o], &q);
    }
  }
}

/* Taps of the depthwise fast path (its stack buffer in the DSP build: 4 bytes a tap). */
#define DW_MAX_TAPS 64u

/* Depthwise channels [0, n4) (one filter per channel, weights (O, kh, kw, 1); n4 a
 * multiple of 4) of one output row, four channels at a time: they lie side by side in x,
 * so the DSP build loads the four with one word, and their weights, gathered once per
 * row into one word a tap, with another; 16-bit lanes multiply pairwise (SMLAxy). */
static void depthwise_row(const int8_t *x, const jt_dims4 *xd, int64_t ys, uint32_t i0,
                          uint32_t i1, const int8_t *w, uint32_t kh, uint32_t kw,
                          const jt_conv_s8_params *p, uint32_t wo, uint32_t n4,
                          const int32_t *bias, const float *m, const jt_rq *q, int8_t *y) {
  const uint32_t c = xd->c, k = kh * kw;
  const int32_t z = p->x_zero;
#if JT_DSP
  int32_t wt[DW_MAX_TAPS];
  const int32_t off = jt_neg_pair(z);
#endif
  for (uint32_t o = 0; o < n4; o += 4) {
#if JT_DSP
    for (uint32_t t = 0; t < k; t++)
      wt[t] = (int32_t)((uint32_t)(uint8_t)w[o * k + t] |
                        (uint32_t)(uint8_t)w[(o + 1) * k + t] << 8 |
                        (uint32_t)(uint8_t)w[(o + 2) * k + t] << 16 |
                        (uint32_t)(uint8_t)w[(o + 3) * k + t] << 24);
#endif
    for (uint32_t ox = 0; ox < wo; ox++) {
      const int64_t xs = (int64_t)ox * p->stride_w - p->pad_left;
      uint32_t j0, j1;
      jt_tap_range(xs, kw, xd->w, &j0, &j1);
      int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (uint32_t i = i0; i < i1 && j1 > j0; i++) {
        const uint32_t iy = (uint32_t)(ys + (int64_t)i), ix = (uint32_t)(xs + (int64_t)j0);
        const int8_t *xr = x + (iy * xd->w + ix) * c + o;
#if JT_DSP
        const int32_t *wr = wt + i * kw + j0;
        for (uint32_t j = j0; j < j1; j++, xr += c, wr++) {
          const int32_t v = jt_ld_s8x4(xr), u = *wr;
          const int32_t x02 = __sxtab16(off, v), x13 = jt_sxtab16_ror8(off, v);
          const int32_t w02 = __sxtb16(u), w13 = jt_sxtb16_ror8(u);
          a0 = __smlabb(x02, w02, a0);
          a2 = __smlatt(x02, w02, a2);
          a1 = __smlabb(x13, w13, a1);
          a3 = __smlatt(x13, w13, a3);
        }
#else
        const int8_t *wr = w + (o * kh + i) * kw + j0;
        for (uint32_t j = j0; j < j1; j++, xr += c, wr++) {
          a0 += ((int32_t)xr[0] - z) * wr[0];
          a1 += ((int32_t)xr[1] - z) * wr[k];
          a2 += ((int32_t)xr[2] - z) * wr[2 * k];
          a3 += ((int32_t)xr[3] - z) * wr[3 * k];
        }
#endif
      }
      int8_t *yo = y + ox * c + o;
      yo[0] = requant(a0, bias[o], m[o], q);
      yo[1] = requant(a1, bias[o + 1], m[o + 1], q);
      yo[2] = requant(a2, bias[o + 2], m[o + 2], q);
      yo[3] = requant(a3, bias[o + 3], m[o + 3], q);
    }
  }
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
  const jt_rq q = jt_rq_make(p->y_zero, p->lo, p->hi);
  const int64_t ys = (int64_t)oy * p->stride_h - p->pad_top;
  uint32_t i0, i1;
  jt_tap_range(ys, kh, x_dims->h, &i0, &i1);
  const int plain = w->w_sel == NULL;
  if (kh == 1 && kw == 1 && p->groups == 1 && p->pad_top == 0 && p->pad_left == 0 &&
      p->pad_bottom == 0 && p->pad_right == 0 && (plain || w->axis == 0 || w->axis == 3)) {
    pointwise_row(x + (uint32_t)ys * x_dims->w * x_dims->c, (uint32_t)p->stride_w * x_dims->c,
                  wo, w, ci, o_count, bias, m, p, y_row);
    return JT_OK;
  }
  /* one filter per input channel: the fast path takes the channels in fours */
  const uint32_t n4 = plain && ci == 1 && og == 1 && kh * kw <= DW_MAX_TAPS ? o_count & ~3u : 0;
  if (n4 != 0)
    depthwise_row(x, x_dims, ys, i0, i1, w->w, kh, kw, p, wo, n4, bias, m, &q, y_row);
  for (uint32_t ox = 0; ox < wo; ox++) {
    const int64_t xs = (int64_t)ox * p->stride_w - p->pad_left;
    uint32_t j0, j1;
    jt_tap_range(xs, kw, x_dims->w, &j0, &j1);
    int8_t *yo = y_row + ox * o_count;
    uint32_t o = n4;
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
      yo[o] = requant(acc, bias[o], m[o], &q);
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
  const jt_rq q = jt_rq_make(p->y_zero, p->lo, p->hi);
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
      y[b * o + oc] = requant(acc, bias[oc], m[oc], &q);
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
