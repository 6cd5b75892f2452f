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

/* Whether the biases b[0..n) may start the sums of len products (x - z) * w (each at most
 * 255 * 128 in magnitude; len at most 640 here): no partial sum then leaves int32, so the
 * total is exact and equals jt_sat_add_i32(acc, b). */
static int bias_fold(const int32_t *b, uint32_t n, uint32_t len) {
  const int32_t lim = INT32_MAX - (int32_t)(255u * 128u * len);
  for (uint32_t o = 0; o < n; o++)
    if (b[o] > lim || b[o] < -lim) return 0;
  return 1;
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
static inline JT_ALWAYS_INLINE const int8_t *pw_row(const jt_weight_s8 *w, uint32_t o,
                                                    uint32_t ci, const int8_t **part) {
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

/* y = the outputs of one pixel x of ci channels through a 1x1 weight, channel by channel. */
static void pw_pixel(const int8_t *x, const jt_weight_s8 *w, uint32_t ci, uint32_t o_count,
                     const int32_t *bias, const float *m, int32_t z, const jt_rq *q,
                     int8_t *y) {
  for (uint32_t o = 0; o < o_count; o++) {
    const int8_t *part, *row = pw_row(w, o, ci, &part);
    y[o] = requant(pw_dot(x, z, w, row, part, ci), bias[o], m[o], q);
  }
}

#if JT_DSP
/* Channels the 2x2 pointwise kernel takes (its stack buffer: 4 bytes a channel); a wider
 * layer runs pixel by pixel. */
#define PW_MAX_CI 640u
/* Output channels a pixel pair sums before requantizing them in one tight loop. */
#define PW_CHUNK 64u
/* Bytes of the weight copy (pw_plain, pw_widen) a row call may make on the stack. */
#define PW_MAX_W 1536u

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

/* For pairs k: s[2k], s[2k + 1], s[PW_CHUNK + 2k], s[PW_CHUNK + 2k + 1] = b[2k], b[2k + 1],
 * b[2k], b[2k + 1] plus the dots of pixels a, b x rows (wa + k * step, wb + k * step) over
 * the first c4 channels, from the expanded pixels: each weight load feeds four SMLADs. Out
 * of line: its loop keeps all it needs in registers. */
static JT_NOINLINE void pw_2x2(const int32_t *xp, const int8_t *wa, const int8_t *wb,
                              uint32_t step, uint32_t c4, uint32_t pairs, const int32_t *b,
                              int32_t *s) {
  /* the rows run on from one pair to the next, skipping step - c4 bytes; the x buffer's
   * end stops the inner loop */
  const int32_t *xend = xp + c4;
  for (uint32_t k = 0; k < pairs; k++, s += 2, b += 2) {
    if (k > 0) {
      wa += step - c4;
      wb += step - c4;
    }
    const int32_t *xc = xp;
    int32_t s0 = b[0], s1 = b[1], s2 = s0, s3 = s1;
    for (; xc < xend; wa += 4, wb += 4) {
      const int32_t ua = jt_ld_s8x4(wa), ub = jt_ld_s8x4(wb);
      int32_t xa, xb;
      jt_ld2_inc(&xc, &xa, &xb);
      const int32_t p02 = __sxtb16(ua), q02 = __sxtb16(ub);
      s0 = __smlad(xa, p02, s0);
      s2 = __smlad(xb, p02, s2);
      s1 = __smlad(xa, q02, s1);
      s3 = __smlad(xb, q02, s3);
      jt_ld2_inc(&xc, &xa, &xb);
      const int32_t p13 = jt_sxtb16_ror8(ua), q13 = jt_sxtb16_ror8(ub);
      s0 = __smlad(xa, p13, s0);
      s2 = __smlad(xb, p13, s2);
      s1 = __smlad(xa, q13, s1);
      s3 = __smlad(xb, q13, s3);
    }
    s[0] = s0;
    s[1] = s1;
    s[PW_CHUNK] = s2;
    s[PW_CHUNK + 1] = s3;
  }
}

/* pw_2x2 on rows pre-widened by pw_widen (two words a 4 channels, c4 = ci): pair k's rows
 * start at we + k * c4 and ab words further. */
static JT_NOINLINE void pw_2x2w(const int32_t *xp, const int32_t *we, uint32_t ab, uint32_t c4,
                               uint32_t pairs, const int32_t *b, int32_t *s) {
  const int32_t *ra = we;
  for (int32_t *end = s + 2 * pairs; s < end; s += 2, b += 2, ra += c4 / 2) {
    const int32_t *rb = ra + ab, *xc = xp;
    int32_t s0 = b[0], s1 = b[1], s2 = s0, s3 = s1;
    for (const int32_t *stop = ra + c4 / 2; ra < stop;) {
      int32_t p02, p13, q02, q13, xa, xb;
      jt_ld2_inc(&ra, &p02, &p13);
      jt_ld2_inc(&xc, &xa, &xb);
      s0 = __smlad(xa, p02, s0);
      s2 = __smlad(xb, p02, s2);
      jt_ld2_inc(&rb, &q02, &q13);
      s1 = __smlad(xa, q02, s1);
      s3 = __smlad(xb, q02, s3);
      jt_ld2_inc(&xc, &xa, &xb);
      s0 = __smlad(xa, p13, s0);
      s2 = __smlad(xb, p13, s2);
      s1 = __smlad(xa, q13, s1);
      s3 = __smlad(xb, q13, s3);
    }
    s[0] = s0;
    s[1] = s1;
    s[PW_CHUNK] = s2;
    s[PW_CHUNK + 1] = s3;
  }
}

/* ya[i], yb[i] = the requantized sa[i], sb[i] (their biases added) for i < n (two pixels'
 * outputs of the same channels): one tight loop, each multiplier loaded once, q's fields
 * kept in registers. */
static void rq_pair(const int32_t *sa, const int32_t *sb, const float *m, const jt_rq *q,
                    uint32_t n, int8_t *ya, int8_t *yb) {
#if defined(__ARM_FP)
  int32_t l[3];
  jt_rq_lanes(q, l);
  uint32_t i = 0;
  for (; i + 4 <= n; i += 4) {  /* four channels of each pixel, a word store each */
    const float m0 = m[i], m1 = m[i + 1], m2 = m[i + 2], m3 = m[i + 3];
    jt_rq_four(sa[i], sa[i + 1], sa[i + 2], sa[i + 3], m0, m1, m2, m3, l, ya + i);
    jt_rq_four(sb[i], sb[i + 1], sb[i + 2], sb[i + 3], m0, m1, m2, m3, l, yb + i);
  }
  for (; i < n; i++) {
    const uint32_t v = (uint32_t)jt_rq_two(sa[i], m[i], sb[i], m[i], l);
    ya[i] = (int8_t)(uint8_t)v;
    yb[i] = (int8_t)(uint8_t)(v >> 16);
  }
#else
  const jt_rq r = *q;
  for (uint32_t i = 0; i < n; i++) {
    ya[i] = jt_rq_apply(sa[i], m[i], &r);
    yb[i] = jt_rq_apply(sb[i], m[i], &r);
  }
#endif
}

/* Zero biases: the start of sums that add their biases last. */
static const int32_t pw_zeros[PW_CHUNK];

/* Bit j: bias_fold() of the j-th PW_CHUNK of b[0..n) (j < 32; the rest 0): per chunk, so
 * that an odd huge bias keeps only its own chunk from starting its sums. */
static uint32_t bias_folds(const int32_t *b, uint32_t n, uint32_t len) {
  uint32_t f = 0;
  for (uint32_t j = 0; j < 32 && j * PW_CHUNK < n; j++) {
    const uint32_t c = n - j * PW_CHUNK < PW_CHUNK ? n - j * PW_CHUNK : PW_CHUNK;
    f |= (uint32_t)bias_fold(b + j * PW_CHUNK, c, len) << j;
  }
  return f;
}

/* ya, yb = the outputs of pixels xa, xb (ci channels each, ci <= PW_MAX_CI) by two output
 * channels at a time; buf holds the pair's expanded channels; we, unless NULL, w's rows
 * pre-widened; folds: bias_folds(bias, o_count, ci), the chunks whose fast calls' sums
 * start from the biases. */
static void pw_pair(const int8_t *xa, const int8_t *xb, const jt_weight_s8 *w,
                    const int32_t *we, uint32_t ci, uint32_t o_count, const int32_t *bias,
                    uint32_t folds, const float *m, int32_t z, const jt_rq *q, int32_t *buf,
                    int8_t *ya, int8_t *yb) {
  const uint32_t c4 = ci & ~3u;
  pw_expand(xa, xb, jt_neg_pair(z), c4, buf);
  int32_t sa[2 * PW_CHUNK], *sb = sa + PW_CHUNK;  /* pixel a's sums, then b's */
  for (uint32_t o0 = 0; o0 < o_count; o0 += PW_CHUNK) {
    const uint32_t n = o_count - o0 < PW_CHUNK ? o_count - o0 : PW_CHUNK;
    const uint32_t j = o0 / PW_CHUNK;
    const int fold = j < 32 && (folds >> j & 1u) != 0;
    const int32_t *bo = bias + o0, *bf = fold ? bo : pw_zeros;
    uint32_t k = 0, kf = 0;  /* sums [0, kf) start from bf */
    if (we != NULL) {
      pw_2x2w(buf, we + o0 * ci / 2, ci / 2, ci, n / 2, bf, sa);
      if (n % 2 != 0) {  /* the last row pairs with itself (its second sums unused) */
        const int32_t b1[2] = {bf[n - 1], 0};
        pw_2x2w(buf, we + (o0 + n - 1) * ci / 2, 0, ci, 1, b1, sa + n - 1);
      }
      k = kf = n;
    } else if (w->w_sel == NULL && c4 == ci) {  /* rows side by side, no tail: one call */
      const int8_t *wa = w->w + o0 * ci;
      k = kf = n & ~1u;
      pw_2x2(buf, wa, wa + ci, 2 * ci, c4, k / 2, bf, sa);
    }
    for (; k + 2 <= n; k += 2) {
      const int8_t *pa, *pb;
      const int8_t *wa = pw_row(w, o0 + k, ci, &pa), *wb = pw_row(w, o0 + k + 1, ci, &pb);
      int32_t *a = sa + k, *b = sb + k;
      pw_2x2(buf, wa, wb, 0, c4, 1, pw_zeros, a);
      for (uint32_t c = c4; c < ci; c++) {
        const int32_t u = (int32_t)xa[c] - z, v = (int32_t)xb[c] - z;
        a[0] += u * wa[c];
        a[1] += u * wb[c];
        b[0] += v * wa[c];
        b[1] += v * wb[c];
      }
      if (pa != NULL) {  /* merged along the input channels: both rows are */
        for (uint32_t t = 0; t < w->n_sel; t++) {
          const uint32_t c = (uint32_t)w->sel[t];
          const int32_t u = (int32_t)xa[c] - z, v = (int32_t)xb[c] - z;
          const int32_t da = (int32_t)pa[t] - wa[c], db = (int32_t)pb[t] - wb[c];
          a[0] += u * da;
          a[1] += u * db;
          b[0] += v * da;
          b[1] += v * db;
        }
      }
    }
    if (k < n) {
      const int8_t *part, *row = pw_row(w, o0 + k, ci, &part);
      sa[k] = pw_dot(xa, z, w, row, part, ci);
      sb[k] = pw_dot(xb, z, w, row, part, ci);
    }
    for (uint32_t i = fold ? kf : 0; i < n; i++) {  /* the biases not in the sums yet */
      sa[i] = jt_sat_add_i32(sa[i], bo[i]);
      sb[i] = jt_sat_add_i32(sb[i], bo[i]);
    }
    rq_pair(sa, sb, m + o0, q, n, ya + o0, yb + o0);
  }
}

/* The plain weight *wp of w's effective rows o0 .. o0 + n (of ci bytes, merged parts
 * applied) copied to d, each padded with zeros to len bytes: made once per row call (at
 * most PW_MAX_W bytes at a time) so that the 2x2 kernel takes whole rows, with no merge
 * correction or channel tail per pixel pair. */
static const jt_weight_s8 *pw_plain(const jt_weight_s8 *w, uint32_t o0, uint32_t n,
                                    uint32_t ci, uint32_t len, int8_t *d, jt_weight_s8 *wp) {
  wp->w = d;
  wp->w_sel = NULL;
  for (uint32_t o = o0; o < o0 + n; o++, d += len) {
    const int8_t *part, *row = pw_row(w, o, ci, &part);
    memcpy(d, row, ci);
    memset(d + ci, 0, len - ci);
    for (uint32_t t = 0; part != NULL && t < w->n_sel; t++) d[w->sel[t]] = part[t];
  }
  return wp;
}

/* w's effective rows o0 .. o0 + n (of ci bytes, merged parts applied) widened into d as
 * pw_2x2w reads them, each padded with zeros to len (a multiple of 4) channels: for each 4
 * channels the words (c0, c2), (c1, c3). */
static void pw_widen(const jt_weight_s8 *w, uint32_t o0, uint32_t n, uint32_t ci,
                     uint32_t len, int32_t *d) {
  for (uint32_t o = o0; o < o0 + n; o++, d += len / 2) {
    const int8_t *part, *row = pw_row(w, o, ci, &part);
    for (uint32_t c = 0; c < len; c += 4) {
      int32_t u;
      if (c + 4 <= ci) {
        u = jt_ld_s8x4(row + c);
      } else {  /* the last channels, then zeros */
        uint32_t v = 0;
        for (uint32_t j = 0; c + j < ci; j++) v |= (uint32_t)(uint8_t)row[c + j] << 8 * j;
        u = (int32_t)v;
      }
      d[c / 2] = __sxtb16(u);
      d[c / 2 + 1] = jt_sxtb16_ror8(u);
    }
    for (uint32_t t = 0; part != NULL && t < w->n_sel; t++) {
      const uint32_t c = (uint32_t)w->sel[t], sh = c & 2u ? 16u : 0u;
      uint32_t *e = (uint32_t *)d + c / 4 * 2 + (c & 1u);
      *e = (*e & ~(0xFFFFu << sh)) | (uint32_t)(uint16_t)(int16_t)part[t] << sh;
    }
  }
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
  int32_t buf[PW_MAX_CI], wbuf[PW_MAX_W / 4];
  /* a long row: a small weight widened once (over fewer pixels it does not pay); else a
   * merged one made plain, a block of output channels at a time, each over the whole row */
  const int widen = ci % 4 == 0 && wo >= 16 && o_count * ci * 2 <= PW_MAX_W;
  const int plainify = !widen && w->w_sel != NULL && PW_MAX_W / ci >= 2;
  const uint32_t nb = plainify ? (PW_MAX_W / ci) & ~1u : o_count;
  for (uint32_t o0 = 0; ci <= PW_MAX_CI && wo >= 2 && o0 < o_count; o0 += nb) {
    const uint32_t n = o_count - o0 < nb ? o_count - o0 : nb;
    jt_weight_s8 wp;
    const jt_weight_s8 *wq = plainify ? pw_plain(w, o0, n, ci, ci, (int8_t *)wbuf, &wp) : w;
    const uint32_t folds = bias_folds(bias + o0, n, ci);
    if (widen) pw_widen(w, o0, n, ci, ci, wbuf);
    for (ox = 0; ox + 2 <= wo; ox += 2) {
      int8_t *ya = y + ox * o_count + o0;
      pw_pair(x + ox * step, x + (ox + 1) * step, wq, widen ? wbuf : NULL, ci, n, bias + o0,
              folds, m + o0, z, &q, buf, ya, ya + o_count);
    }
  }
#endif
  for (; ox < wo; ox++)
    pw_pixel(x + ox * step, w, ci, o_count, bias, m, z, &q, y + ox * o_count);
}

#if JT_DSP
/* Patch length (kh * kw * ci) the im2col path takes: its stack buffers hold a pixel pair's
 * patches and their expansion, 6 bytes a patch byte, less than the pointwise buffer. */
#define IM_MAX_K 320u

/* The kh x kw x c patch of x whose top-left tap sits at (ys, xs), as one run of bytes in
 * the weight's (kh, kw, c) order; padded taps read z, so they contribute 0. */
static void im2col_patch(const int8_t *x, const jt_dims4 *xd, int64_t ys, int64_t xs,
                         uint32_t kh, uint32_t kw, int8_t z, int8_t *d) {
  const uint32_t c = xd->c, row = kw * c;
  uint32_t i0, i1, j0, j1;
  jt_tap_range(ys, kh, xd->h, &i0, &i1);
  jt_tap_range(xs, kw, xd->w, &j0, &j1);
  const uint32_t a = j0 * c, b = j1 * c;
  for (uint32_t i = 0; i < kh; i++, d += row) {
    if (i < i0 || i >= i1 || b == a) {
      memset(d, z, row);
      continue;
    }
    const uint32_t iy = (uint32_t)(ys + (int64_t)i), ix = (uint32_t)(xs + (int64_t)j0);
    const int8_t *xr = x + (iy * xd->w + ix) * c;
    if (a > 0) memset(d, z, a);
    jt_copy_short(d + a, xr, b - a);
    if (b < row) memset(d + b, z, row - b);
  }
}

/* A conv row with groups 1 and a weight plain, merged along axis 0 (whole rows of kh * kw
 * * ci) or, for a 1x1, along axis 3: each output pixel's patch, gathered into a stack
 * buffer, makes it a 1x1 conv of kh * kw * ci channels for the pointwise kernels. */
static void im2col_row(const int8_t *x, const jt_dims4 *xd, const jt_weight_s8 *w,
                       uint32_t kh, uint32_t kw, uint32_t o_count, const int32_t *bias,
                       const float *m, const jt_conv_s8_params *p, int64_t ys, uint32_t wo,
                       int8_t *y) {
  const uint32_t k = kh * kw * xd->c, k4 = (k + 3) & ~3u;
  const int32_t z = p->x_zero;
  const jt_rq q = jt_rq_make(p->y_zero, p->lo, p->hi);
  int32_t buf[IM_MAX_K], wbuf[PW_MAX_W / 4];
  int8_t patch[2 * IM_MAX_K];
  /* the weight padded with zeros up to k4 channels (the patches with z), when it fits:
   * widened for a long row, else, if merged or k is not a multiple of 4, made plain */
  const int widen = wo >= 16 && o_count * k4 * 2 <= PW_MAX_W;
  jt_weight_s8 wp;
  uint32_t len = k, wl = k;  /* the patches' stride, the row length of w */
  if (widen) {
    pw_widen(w, 0, o_count, k, k4, wbuf);
    len = k4;
  } else if ((w->w_sel != NULL || k4 != k) && o_count * k4 <= PW_MAX_W) {
    w = pw_plain(w, 0, o_count, k, k4, (int8_t *)wbuf, &wp);
    len = wl = k4;
  }
  const uint32_t folds = bias_folds(bias, o_count, len);
  memset(patch + k, z, len - k);
  memset(patch + len + k, z, len - k);
  for (uint32_t ox = 0; ox < wo; ox += 2) {
    const int64_t xs = (int64_t)ox * p->stride_w - p->pad_left;
    int8_t *yo = y + ox * o_count;
    im2col_patch(x, xd, ys, xs, kh, kw, (int8_t)z, patch);
    if (ox + 1 < wo) {
      im2col_patch(x, xd, ys, xs + p->stride_w, kh, kw, (int8_t)z, patch + len);
      pw_pair(patch, patch + len, w, widen ? wbuf : NULL, len, o_count, bias, folds, m, z, &q,
              buf, yo, yo + o_count);
    } else {
      pw_pixel(patch, w, wl, o_count, bias, m, z, &q, yo);
    }
  }
}
#endif

/* Taps of the depthwise fast path (its stack buffers in the DSP build: 12 bytes a tap). */
#define DW_MAX_TAPS 64u
/* Pixels of a depthwise row summed (4 channels each) before they are requantized. */
#define DW_CHUNK 32u

/* y[i * stride + l] = the requantized s[4 * i + l] (their biases added) for l < 4, i < n:
 * four channels of n pixels, their multipliers held in registers. */
static void rq_cols4(const int32_t *s, uint32_t n, uint32_t stride, const float *m,
                     const jt_rq *q, int8_t *y) {
  const float m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3];
#if JT_DSP && defined(__ARM_FP)
  int32_t l[3];
  jt_rq_lanes(q, l);
  for (uint32_t i = 0; i < n; i++, s += 4, y += stride)
    jt_rq_four(s[0], s[1], s[2], s[3], m0, m1, m2, m3, l, y);
#else
  const jt_rq r = *q;
  for (uint32_t i = 0; i < n; i++, s += 4, y += stride) {
    y[0] = jt_rq_apply(s[0], m0, &r);
    y[1] = jt_rq_apply(s[1], m1, &r);
    y[2] = jt_rq_apply(s[2], m2, &r);
    y[3] = jt_rq_apply(s[3], m3, &r);
  }
#endif
}

#if JT_DSP
/* s[4 * p + l] = a[l] + channel l's sum of pixel p < npix over taps t < n, of x at x0 + p *
 * xstep + xoff[t] and weights wt[2 * t + 0..1] (each tap's weights of channels (0, 2) and
 * (1, 3) as 16-bit pairs): a flat loop over the taps, out of line so that it keeps all it
 * needs in registers. a may be s (npix 1). */
static JT_NOINLINE void dw_taps(const int8_t *x0, uint32_t xstep, uint32_t npix,
                                const int32_t *xoff, const int32_t *wt, uint32_t n,
                                int32_t off, const int32_t *a, int32_t *s) {
  const int32_t *tend = xoff + n;
  for (uint32_t p = 0; p < npix; p++, s += 4) {
    if (p > 0) x0 += xstep;
    const int32_t *wp = wt;
    int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    for (const int32_t *t = xoff; t < tend; t++) {
      int32_t w02, w13;
      jt_ld2_inc(&wp, &w02, &w13);
      const int32_t v = jt_ld_s8x4(x0 + *t);
      const int32_t x02 = __sxtab16(off, v), x13 = jt_sxtab16_ror8(off, v);
      a0 = __smlabb(x02, w02, a0);
      a2 = __smlatt(x02, w02, a2);
      a1 = __smlabb(x13, w13, a1);
      a3 = __smlatt(x13, w13, a3);
    }
    s[0] = a0;
    s[1] = a1;
    s[2] = a2;
    s[3] = a3;
  }
}
#endif

/* Depthwise channels [0, n4) (one filter per channel, weights (O, kh, kw, 1); n4 a
 * multiple of 4) of one output row, four channels at a time: they lie side by side in x,
 * so the DSP build loads the four with one word, and their weights, gathered once per
 * row into two words a tap of 16-bit pairs, with one LDRD; 16-bit lanes multiply pairwise
 * (SMLAxy). A run of pixels with whole windows takes one flat loop over the taps per
 * pixel, a window cut by a side one too (the taps ordered column by column); the sums of
 * DW_CHUNK pixels are requantized together. */
static void depthwise_row(const int8_t *x, const jt_dims4 *xd, int64_t ys, uint32_t i0,
                          uint32_t i1, const int8_t *w, uint32_t kh, uint32_t kw,
                          const jt_conv_s8_params *p, uint32_t wo, uint32_t n4,
                          const int32_t *bias, const float *m, const jt_rq *q, int8_t *y) {
  const uint32_t c = xd->c, k = kh * kw, row = xd->w * c;
  const int32_t z = p->x_zero;
  int32_t s[4 * DW_CHUNK];
  const int32_t zero4[4] = {0, 0, 0, 0};
#if JT_DSP
  /* wt: the weights of 4 channels, xoff: the taps' offsets in x from tap (i0, 0), of the
   * nh rows in x, column by column: the columns a side leaves are one run of them */
  int32_t wt[2 * DW_MAX_TAPS], xoff[DW_MAX_TAPS];
  const int32_t off = jt_neg_pair(z);
  const uint32_t nh = i1 - i0;
  for (uint32_t j = 0; j < kw; j++)
    for (uint32_t i = 0; i < nh; i++) xoff[j * nh + i] = (int32_t)(i * row + j * c);
  /* pixels [oxa, oxb) have whole windows (no rows at all: none) */
  const int64_t sw = p->stride_w, last = (int64_t)xd->w + p->pad_left - (int64_t)kw;
  const uint32_t xstep = (uint32_t)p->stride_w * c;
  uint32_t oxa = (uint32_t)(((int64_t)p->pad_left + sw - 1) / sw), oxb = 0;
  if (i1 > i0 && last >= 0) oxb = (uint32_t)(last / sw + 1 < (int64_t)wo ? last / sw + 1 : wo);
  if (oxa > oxb) oxa = oxb;
#endif
  for (uint32_t o = 0; o < n4; o += 4) {
    /* the sums start from the biases, or from zeros and add them last */
    const int fold = bias_fold(bias + o, 4, k);
    const int32_t *b4 = fold ? bias + o : zero4;
#if JT_DSP
    int32_t *wu = wt;
    for (uint32_t j = 0; j < kw; j++)  /* channels (0, 2) and (1, 3) as 16-bit pairs */
      for (uint32_t i = i0; i < i1; i++, wu += 2) {
        const int8_t *wc = w + o * k + i * kw + j;
        wu[0] = (int32_t)((uint32_t)(uint16_t)wc[0] | (uint32_t)wc[2 * k] << 16);
        wu[1] = (int32_t)((uint32_t)(uint16_t)wc[k] | (uint32_t)wc[3 * k] << 16);
      }
#endif
    for (uint32_t ox0 = 0; ox0 < wo; ox0 += DW_CHUNK) {
      const uint32_t n = wo - ox0 < DW_CHUNK ? wo - ox0 : DW_CHUNK;
      for (uint32_t t = 0; t < n;) {
        const int64_t xs = (int64_t)(ox0 + t) * p->stride_w - p->pad_left;
        int32_t *a = s + 4 * t;
#if JT_DSP
        if (ox0 + t >= oxa && ox0 + t < oxb) {  /* whole windows: one call for the run */
          const uint32_t run = (oxb < ox0 + n ? oxb : ox0 + n) - (ox0 + t);
          const uint32_t iy = (uint32_t)(ys + (int64_t)i0);
          const int8_t *x0 = x + (iy * xd->w + (uint32_t)xs) * c + o;
          dw_taps(x0, xstep, run, xoff, wt, nh * kw, off, b4, a);
          t += run;
          continue;
        }
#endif
        uint32_t j0, j1;
        jt_tap_range(xs, kw, xd->w, &j0, &j1);
        memcpy(a, b4, 4 * sizeof *a);
        if (j1 > j0 && i1 > i0) {
          const uint32_t ix = (uint32_t)(xs + (int64_t)j0);
          const int8_t *x0 = x + ((uint32_t)(ys + (int64_t)i0) * xd->w + ix) * c + o;
#if JT_DSP
          /* columns [j0, j1) of the window: one run of taps, from the address of its tap
           * (i0, 0) (before x at its left edge, so an address, not a pointer into x) */
          dw_taps((const int8_t *)((uintptr_t)x0 - j0 * c), 0, 1, xoff + j0 * nh,
                  wt + 2 * j0 * nh, (j1 - j0) * nh, off, a, a);
#else
          for (uint32_t i = i0; i < i1; i++) {
            const int8_t *xr = x0 + (i - i0) * row, *wr = w + (o * kh + i) * kw + j0;
            for (uint32_t j = j0; j < j1; j++, xr += c, wr++) {
              a[0] += ((int32_t)xr[0] - z) * wr[0];
              a[1] += ((int32_t)xr[1] - z) * wr[k];
              a[2] += ((int32_t)xr[2] - z) * wr[2 * k];
              a[3] += ((int32_t)xr[3] - z) * wr[3 * k];
            }
          }
#endif
        }
        t++;
      }
      for (uint32_t i = 0; !fold && i < 4 * n; i++) s[i] = jt_sat_add_i32(s[i], bias[o + i % 4]);
      rq_cols4(s, n, c, m + o, q, y + ox0 * c + o);
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
#if JT_DSP
  if (p->groups == 1 && kh * kw * ci <= IM_MAX_K &&
      (plain || w->axis == 0 || (w->axis == 3 && kh * kw == 1))) {
    im2col_row(x, x_dims, w, kh, kw, o_count, bias, m, p, ys, wo, y_row);
    return JT_OK;
  }
#endif
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
  if (w_dims->h == 1 && w_dims->w == 1 && p->stride_h == 1 && p->stride_w == 1 &&
      p->pad_top == 0 && p->pad_bottom == 0 && p->pad_left == 0 && p->pad_right == 0) {
    /* a 1x1 conv of stride 1 without padding: each image one row of h * w pixels (the
     * kernels' per-row setup, such as a merged weight made plain, made once) */
    const jt_dims4 flat = {x_dims->n, 1, x_dims->h * x_dims->w, x_dims->c};
    for (uint32_t n = 0; n < y_dims->n; n++)
      jt_conv2d_s8_row(x + n * image, &flat, w, w_dims, bias, m, p, 0, flat.w,
                       y + n * y_dims->h * row);
    return JT_OK;
  }
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
