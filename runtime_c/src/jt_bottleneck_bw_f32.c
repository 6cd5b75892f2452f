/* Backward of an inverted bottleneck, one expanded channel at a time: kernel, adapter,
 * check (see jt_bottleneck_bw_f32.h). */
#include "jt_bottleneck_bw_f32.h"

#include "jt_eltwise_bw_f32.h"
#include "jt_internal.h"
#include "jt_update.h"
#include "jt_vec_f32.h"

/* ((t0 + t1) + t2) + ...: kernels._running_sum, from the first term */
static float running_sum(const float *t, uint32_t n) {
  float s;
  uint32_t q;
  if (n == 0u) return 0.0f;
  s = t[0];
  for (q = 1; q < n; q++) s += t[q];
  return s;
}

/* The float32 loops below keep the reference's order of every sum; CHUNK floats of a
 * weight row or column are converted once and reused across the positions. */
#define CHUNK 32u

/* sum[i] = ((ge[0] * xf[x[i]] + ge[1] * xf[x[stride + i]]) + ...) for i < n, a running
 * sum from the first position's term (+0.0f without positions); eight sums at a time
 * stay in registers across the positions. */
static void grad_sums(const int8_t *x, uint32_t stride, const float *ge, uint32_t ne,
                      const float *xf, uint32_t n, float *sum) {
  uint32_t i = 0, e;
  if (ne == 0u) {
    for (; i < n; i++) sum[i] = 0.0f;
    return;
  }
  for (; i + 8 <= n; i += 8) {
    const int8_t *xr = x + i;
    const float g0 = ge[0];
    float s0 = g0 * xf[xr[0]], s1 = g0 * xf[xr[1]], s2 = g0 * xf[xr[2]], s3 = g0 * xf[xr[3]];
    float s4 = g0 * xf[xr[4]], s5 = g0 * xf[xr[5]], s6 = g0 * xf[xr[6]], s7 = g0 * xf[xr[7]];
    for (e = 1; e < ne; e++) {
      const float g = ge[e];
      xr += stride;
      s0 += g * xf[xr[0]];
      s1 += g * xf[xr[1]];
      s2 += g * xf[xr[2]];
      s3 += g * xf[xr[3]];
      s4 += g * xf[xr[4]];
      s5 += g * xf[xr[5]];
      s6 += g * xf[xr[6]];
      s7 += g * xf[xr[7]];
    }
    sum[i] = s0;
    sum[i + 1] = s1;
    sum[i + 2] = s2;
    sum[i + 3] = s3;
    sum[i + 4] = s4;
    sum[i + 5] = s5;
    sum[i + 6] = s6;
    sum[i + 7] = s7;
  }
  for (; i < n; i++) {
    float s = ge[0] * xf[x[i]];
    for (e = 1; e < ne; e++) s += ge[e] * xf[x[e * stride + i]];
    sum[i] = s;
  }
}

/* grad_sums for two channels' planes ge0 and ge1 at once: each table lookup of x serves
 * both (four sums of each at a time in registers). */
static void grad_sums2(const int8_t *x, uint32_t stride, const float *ge0, const float *ge1,
                       uint32_t ne, const float *xf, uint32_t n, float *sum0, float *sum1) {
  uint32_t i = 0, e;
  if (ne == 0u) {
    for (; i < n; i++) sum0[i] = sum1[i] = 0.0f;
    return;
  }
  for (; i + 4 <= n; i += 4) {
    const int8_t *xr = x + i;
    float v0 = xf[xr[0]], v1 = xf[xr[1]], v2 = xf[xr[2]], v3 = xf[xr[3]];
    float t0 = ge0[0] * v0, t1 = ge0[0] * v1, t2 = ge0[0] * v2, t3 = ge0[0] * v3;
    float u0 = ge1[0] * v0, u1 = ge1[0] * v1, u2 = ge1[0] * v2, u3 = ge1[0] * v3;
    for (e = 1; e < ne; e++) {
      const float g = ge0[e], h = ge1[e];
      xr += stride;
      v0 = xf[xr[0]];
      v1 = xf[xr[1]];
      v2 = xf[xr[2]];
      v3 = xf[xr[3]];
      t0 += g * v0;
      u0 += h * v0;
      t1 += g * v1;
      u1 += h * v1;
      t2 += g * v2;
      u2 += h * v2;
      t3 += g * v3;
      u3 += h * v3;
    }
    sum0[i] = t0;
    sum0[i + 1] = t1;
    sum0[i + 2] = t2;
    sum0[i + 3] = t3;
    sum1[i] = u0;
    sum1[i + 1] = u1;
    sum1[i + 2] = u2;
    sum1[i + 3] = u3;
  }
  if (i < n) {
    grad_sums(x + i, stride, ge0, ne, xf, n - i, sum0 + i);
    grad_sums(x + i, stride, ge1, ne, xf, n - i, sum1 + i);
  }
}

uint32_t jt_bottleneck_bw_f32_get_buffer_size(const jt_bottleneck_bw_f32_params *p) {
  return (p->ho * p->wo + p->he * p->we) * (p->pairs ? 2u : 1u) * (uint32_t)sizeof(float);
}

/* gd (the project's input gradient) of channels c and, when two, c + 1 (1x1
 * conv2d_bw_input: +0.0f, then output channels ascending), a weight column chunk at a
 * time; two channels share each load of g. */
static void project_grad(const jt_bottleneck_bw_f32_params *p, uint32_t c, int two, float *gd0,
                         float *gd1) {
  const uint32_t nd = p->ho * p->wo, C = p->c;
  uint32_t q, o;
  for (q = 0; q < nd; q++) gd0[q] = 0.0f;
  if (two)
    for (q = 0; q < nd; q++) gd1[q] = 0.0f;
  for (uint32_t o0 = 0; o0 < p->o; o0 += CHUNK) {
    const uint32_t n = p->o - o0 < CHUNK ? p->o - o0 : CHUNK;
    float col0[CHUNK], col1[CHUNK];
    for (o = 0; o < n; o++) col0[o] = (float)p->w3[(o0 + o) * C + c];
    if (two) {
      for (o = 0; o < n; o++) col1[o] = (float)p->w3[(o0 + o) * C + c + 1];
      jt_dot_rows2_from_f32(gd0, gd1, p->g + o0, p->o, col0, col1, n, nd);
    } else {
      jt_dot_rows_from_f32(gd0, p->g + o0, p->o, col0, n, nd);
    }
  }
}

/* Channel c from its gd plane: the depthwise requantization's mask and multiplier, its
 * bias gradient, the depthwise input gradient into ge, the expand's mask, multiplier and
 * bias gradient. */
static void channel_grads(const jt_bottleneck_bw_f32_params *p, const jt_weight_s8 *w2,
                          const jt_conv_bw_f32_params *dw, uint32_t c, float *gd, float *ge) {
  const uint32_t nd = p->ho * p->wo, ne = p->he * p->we, C = p->c;
  const float md = p->m_d[p->m_d_per_channel ? c : 0u];
  const float me = p->m_e[p->m_e_per_channel ? c : 0u];
  uint32_t q, e;
  for (q = 0; q < nd; q++) gd[q] = jt_mask_bit(p->mask_d, q * C + c) ? gd[q] * md : 0.0f;
  p->gb_d[c] = running_sum(gd, nd);
  jt_depthwise_bw_plane_f32(gd, w2, c, ge, 1, dw);
  for (e = 0; e < ne; e++) ge[e] = jt_mask_bit(p->mask_e, e * C + c) ? ge[e] * me : 0.0f;
  p->gb_e[c] = running_sum(ge, ne);
}

/* The expand weight's rows c and, when two, c + 1: conv2d_bw_weight of a 1x1 conv, one
 * running sum over the positions per element, from the first term, handed to on_grad a
 * chunk of each row at a time. */
static void expand_weight_grad(const jt_bottleneck_bw_f32_params *p, uint32_t c, int two,
                               const float *ge0, const float *ge1, const float *xf) {
  const uint32_t ne = p->he * p->we;
  for (uint32_t k0 = 0; k0 < p->kx; k0 += CHUNK) {
    const uint32_t n = p->kx - k0 < CHUNK ? p->kx - k0 : CHUNK;
    float sum0[CHUNK], sum1[CHUNK];
    if (two) {
      grad_sums2(p->x + k0, p->kx, ge0, ge1, ne, xf, n, sum0, sum1);
    } else {
      grad_sums(p->x + k0, p->kx, ge0, ne, xf, n, sum0);
    }
    for (uint32_t kk = 0; kk < n; kk++) p->on_grad(p->on_grad_ctx, c * p->kx + k0 + kk, sum0[kk]);
    for (uint32_t kk = 0; two && kk < n; kk++)
      p->on_grad(p->on_grad_ctx, (c + 1) * p->kx + k0 + kk, sum1[kk]);
  }
}

jt_status jt_bottleneck_bw_f32(const jt_bottleneck_bw_f32_params *p) {
  const uint32_t nd = p->ho * p->wo, ne = p->he * p->we, C = p->c;
  /* scratch: the gd planes, then the ge planes (two of each when channels pair) */
  float *gd0 = p->scratch, *gd1 = gd0 + nd, *ge0 = gd0 + (p->pairs ? 2u : 1u) * nd;
  float *ge1 = ge0 + ne;
  /* the depthwise layer: its weight is not merged, its geometry one (he, we) plane */
  const jt_weight_s8 w2 = {.w = p->w2};
  const jt_conv_bw_f32_params dw = {.h = p->he, .w = p->we, .ho = p->ho, .wo = p->wo,
                                    .kh = p->kh, .kw = p->kw, .stride_h = p->stride_h,
                                    .stride_w = p->stride_w, .pad_top = p->pad_top,
                                    .pad_left = p->pad_left};
  uint32_t c, e;
  /* f32(x) - f32(x_zero) by x + 128: the expand weight gradient's factors, converted once */
  float xf[256];
  for (e = 0; e < 256u; e++) xf[e] = (float)((int32_t)e - 128) - (float)p->x_zero;
  if (p->gx != NULL)
    for (e = 0; e < ne * p->k; e++) p->gx[e] = 0.0f;
  for (c = 0; c < C; c += p->pairs ? 2u : 1u) {
    /* every sum keeps the order of the channel-at-a-time reference: a pair only shares
     * loads between the two channels' independent sums */
    const int two = p->pairs && c + 1 < C;
    project_grad(p, c, two, gd0, gd1);
    channel_grads(p, &w2, &dw, c, gd0, ge0);
    if (two) channel_grads(p, &w2, &dw, c + 1, gd1, ge1);
    /* the block input's gradient sums the channels ascending; it reads rows c (and c + 1)
     * of w1 before their updates below */
    if (p->gx != NULL) {
      for (uint32_t k0 = 0; k0 < p->k; k0 += CHUNK) {
        const uint32_t n = p->k - k0 < CHUNK ? p->k - k0 : CHUNK;
        float wrow0[CHUNK], wrow1[CHUNK];
        jt_weight_s8_run_f32(&p->w1, c * p->k + k0, n, wrow0);
        if (two) {
          jt_weight_s8_run_f32(&p->w1, (c + 1) * p->k + k0, n, wrow1);
          jt_axpy2_rows_f32(p->gx + k0, p->k, ge0, ge1, ne, wrow0, wrow1, n);
        } else {
          jt_axpy_rows_f32(p->gx + k0, p->k, ge0, 1, ne, wrow0, n);
        }
      }
    }
    if (p->x != NULL && p->on_grad != NULL) expand_weight_grad(p, c, two, ge0, ge1, xf + 128);
  }
  return JT_OK;
}

/* --- adapter and check ----------------------------------------------------------------------
 * g w3 mask_d m_d w2 mask_e m_e w1 w1_sel? sel? x? inv? state* step?
 *   -> scratch gb_d gb_e gx? w1? state*
 * attrs: d_strides@0 d_padding@2 gx@6 sel_axis?@7 pid?@9 x_zero?@11 */

enum { IN_G, IN_W3, IN_MASK_D, IN_M_D, IN_W2, IN_MASK_E, IN_M_E, IN_W1, IN_W1_SEL, IN_SEL };

static void apply_update(void *ctx, uint32_t index, float grad) {
  jt_update_apply((const jt_update_ctx *)ctx, index, grad);
}

/* Where the optional operands are (after the generic checks' arity). */
typedef struct {
  int sel, gx, pid;
  uint32_t upd;      /* first update input: x, then inv, state..., step */
  uint32_t n_slots;
} layout;

/* Presence slots 0 or 1 (gx, sel_axis, pid), and x_zero present exactly when pid is. */
static int presence_ok(const int32_t *a) {
  return (a[6] == 0 || a[6] == 1) && (a[7] == 0 || a[7] == 1) && (a[9] == 0 || a[9] == 1) &&
         a[11] == a[9];
}

static int get_layout(const jt_op *op, layout *l) {
  const int32_t *a = op->attr;
  if (!presence_ok(a)) return 0;
  l->gx = a[6];
  l->sel = a[7];
  l->pid = a[9];
  l->upd = l->sel ? 10u : 8u;
  l->n_slots = 0;
  if (l->pid) {
    if (op->n_in < l->upd + 3u) return 0;
    l->n_slots = op->n_in - l->upd - 3u;
  } else if (op->n_in != l->upd) {
    return 0;
  }
  return op->n_out == 3u + (uint32_t)l->gx + (l->pid ? 1u + l->n_slots : 0u);
}

jt_status jt_op_bottleneck_bw_f32(jt_runtime *rt, const jt_op *op) {
  const int32_t *a = op->attr;
  jt_bottleneck_bw_f32_params p;
  jt_update_ctx ctx;
  layout l;
  (void)get_layout(op, &l);  /* verified */
  jt_weight_fill(rt, op->in[IN_W1], l.sel, l.sel ? op->in[IN_W1_SEL] : -1,
                    l.sel ? op->in[IN_SEL] : -1, a[8], 4, &p.w1);
  p.g = (const float *)jt_data(rt, op->in[IN_G]);
  p.w3 = (const int8_t *)jt_data(rt, op->in[IN_W3]);
  p.mask_d = (const uint8_t *)jt_data(rt, op->in[IN_MASK_D]);
  p.m_d = (const float *)jt_data(rt, op->in[IN_M_D]);
  p.w2 = (const int8_t *)jt_data(rt, op->in[IN_W2]);
  p.mask_e = (const uint8_t *)jt_data(rt, op->in[IN_MASK_E]);
  p.m_e = (const float *)jt_data(rt, op->in[IN_M_E]);
  p.scratch = (float *)jt_data(rt, op->out[0]);
  p.gb_d = (float *)jt_data(rt, op->out[1]);
  p.gb_e = (float *)jt_data(rt, op->out[2]);
  p.gx = l.gx ? (float *)jt_data(rt, op->out[3]) : NULL;
  p.o = jt_dim(rt, op->in[IN_G], 3);
  p.c = jt_dim(rt, op->in[IN_W2], 0);
  p.k = p.w1.dims[3];
  p.ho = jt_dim(rt, op->in[IN_G], 1);
  p.wo = jt_dim(rt, op->in[IN_G], 2);
  p.he = jt_dim(rt, op->in[IN_MASK_E], 1);
  p.we = jt_dim(rt, op->in[IN_MASK_E], 2);
  p.kh = jt_dim(rt, op->in[IN_W2], 1);
  p.kw = jt_dim(rt, op->in[IN_W2], 2);
  p.stride_h = a[0];
  p.stride_w = a[1];
  p.pad_top = a[2];
  p.pad_left = a[4];
  p.m_d_per_channel = jt_numel(rt, op->in[IN_M_D]) != 1u;
  p.m_e_per_channel = jt_numel(rt, op->in[IN_M_E]) != 1u;
  p.pairs = jt_numel(rt, op->out[0]) != p.ho * p.wo + p.he * p.we;
  p.x = NULL;
  p.on_grad = NULL;
  p.on_grad_ctx = NULL;
  p.kx = 0;
  p.x_zero = 0;
  if (l.pid) {
    const int32_t x = op->in[l.upd], param = op->in[l.sel ? IN_W1_SEL : IN_W1];
    jt_update_begin(&ctx, rt, a[10], param, op->in[l.upd + 1u], &op->in[l.upd + 2u],
                    l.n_slots, op->in[op->n_in - 1u]);
    p.x = (const int8_t *)jt_data(rt, x);
    p.kx = jt_dim(rt, x, 3);
    p.x_zero = a[12];
    p.on_grad = apply_update;
    p.on_grad_ctx = &ctx;
  }
  return jt_bottleneck_bw_f32(&p);
}

/* A tensor of this dtype and exact shape (rank 4 or less). */
static jt_status want4(const jt_runtime *rt, int32_t id, uint32_t dtype, uint32_t rank,
                       uint32_t d0, uint32_t d1, uint32_t d2, uint32_t d3) {
  const uint32_t d[4] = {d0, d1, d2, d3};
  uint32_t k;
  jt_status s = jt_want(rt, id, dtype, rank);
  if (s != JT_OK) return s;
  for (k = 0; k < rank; k++)
    if (jt_dim(rt, id, k) != d[k]) return JT_E_SHAPE;
  return JT_OK;
}

static jt_status multiplier(const jt_runtime *rt, int32_t m, uint32_t c) {
  /* the reference reshapes m to (-1,): one value, or one per channel */
  if (jt_t(rt, m)->dtype != JT_DTYPE_F32) return JT_E_DTYPE;
  if (jt_numel(rt, m) != 1u && jt_numel(rt, m) != c) return JT_E_SHAPE;
  return jt_finite_if_const(rt, m) ? JT_OK : JT_E_ATTR;
}

jt_status jt_check_bottleneck_bw_f32(const jt_runtime *rt, const jt_op *op) {
  const int32_t *a = op->attr;
  const int32_t g = op->in[IN_G], w3 = op->in[IN_W3], w2 = op->in[IN_W2];
  const int32_t mask_e = op->in[IN_MASK_E];
  jt_weight_s8 w1;
  jt_status s;
  layout l;
  uint32_t o, c, k, ho, wo, he, we, dh, dw, q, r, n_plain;
  if (!presence_ok(a)) return JT_E_ATTR;
  if (!get_layout(op, &l)) return JT_E_OPERANDS;
  if ((s = jt_want(rt, g, JT_DTYPE_F32, 4)) != JT_OK) return s;
  if ((s = jt_want(rt, w2, JT_DTYPE_I8, 4)) != JT_OK) return s;
  if ((s = jt_want(rt, mask_e, JT_DTYPE_BIT, 4)) != JT_OK) return s;
  o = jt_dim(rt, g, 3);
  ho = jt_dim(rt, g, 1);
  wo = jt_dim(rt, g, 2);
  c = jt_dim(rt, w2, 0);
  he = jt_dim(rt, mask_e, 1);
  we = jt_dim(rt, mask_e, 2);
  if (jt_dim(rt, g, 0) != 1u || jt_dim(rt, w2, 3) != 1u) return JT_E_SHAPE;
  if ((s = want4(rt, w3, JT_DTYPE_I8, 4, o, 1, 1, c)) != JT_OK) return s;
  if ((s = want4(rt, op->in[IN_MASK_D], JT_DTYPE_BIT, 4, 1, ho, wo, c)) != JT_OK) return s;
  if ((s = want4(rt, mask_e, JT_DTYPE_BIT, 4, 1, he, we, c)) != JT_OK) return s;
  if ((s = multiplier(rt, op->in[IN_M_D], c)) != JT_OK) return s;
  if ((s = multiplier(rt, op->in[IN_M_E], c)) != JT_OK) return s;
  if ((s = jt_weight_bind(rt, op->in[IN_W1], l.sel, l.sel ? op->in[IN_W1_SEL] : -1,
                             l.sel ? op->in[IN_SEL] : -1, a[8], 4, &w1)) != JT_OK)
    return s;
  k = w1.dims[3];
  if (w1.dims[0] != c || w1.dims[1] != 1u || w1.dims[2] != 1u) return JT_E_SHAPE;
  /* the depthwise conv maps the expanded (he, we) onto the depthwise output (ho, wo) */
  if ((s = jt_want_window(he, jt_dim(rt, w2, 1), a[0], a[2], a[3], &dh)) != JT_OK) return s;
  if ((s = jt_want_window(we, jt_dim(rt, w2, 2), a[1], a[4], a[5], &dw)) != JT_OK) return s;
  if (dh != ho || dw != wo) return JT_E_SHAPE;
  if (jt_t(rt, op->out[0])->dtype != JT_DTYPE_F32) return JT_E_DTYPE;
  /* scratch: one channel's two planes, or two channels' (the kernel then pairs them) */
  const uint64_t planes = (uint64_t)ho * wo + (uint64_t)he * we;
  if ((uint64_t)jt_numel(rt, op->out[0]) != planes &&
      (uint64_t)jt_numel(rt, op->out[0]) != 2u * planes)
    return JT_E_SHAPE;
  if ((s = want4(rt, op->out[1], JT_DTYPE_F32, 1, c, 0, 0, 0)) != JT_OK) return s;
  if ((s = want4(rt, op->out[2], JT_DTYPE_F32, 1, c, 0, 0, 0)) != JT_OK) return s;
  if (l.gx && (s = want4(rt, op->out[3], JT_DTYPE_F32, 4, 1, he, we, k)) != JT_OK) return s;
  /* scratch, gb_d, gb_e and gx take no input's bytes */
  n_plain = 3u + (uint32_t)l.gx;
  for (q = 0; q < n_plain; q++) {
    for (r = 0; r < op->n_in; r++)
      if (jt_same_buffer(rt, op->out[q], op->in[r])) return JT_E_SHAPE;
    for (r = 0; r < q; r++)
      if (jt_same_buffer(rt, op->out[q], op->out[r])) return JT_E_SHAPE;
  }
  if (l.pid) {
    const int32_t param = op->in[l.sel ? IN_W1_SEL : IN_W1], x = op->in[l.upd];
    const int32_t inv = op->in[l.upd + 1u], step = op->in[op->n_in - 1u];
    uint32_t kx;
    if (a[10] < 0 || !jt_is_i8(a[12])) return JT_E_ATTR;
    /* row c of the parameter is row c of w1: the selection must be of input channels */
    if (l.sel && w1.axis != 3u) return JT_E_ATTR;
    if (jt_t(rt, param)->dtype != JT_DTYPE_I8 || jt_storage(rt, param) != JT_STATE)
      return JT_E_DTYPE;
    kx = jt_dim(rt, param, 3);
    if ((s = want4(rt, x, JT_DTYPE_I8, 4, 1, he, we, kx)) != JT_OK) return s;
    if (jt_t(rt, inv)->dtype != JT_DTYPE_F32) return JT_E_DTYPE;
    if (jt_numel(rt, inv) != c) return JT_E_SHAPE;
    if (jt_t(rt, step)->dtype != JT_DTYPE_I32) return JT_E_DTYPE;
    if (jt_numel(rt, step) != 1u) return JT_E_SHAPE;
    if (l.n_slots != jt_update_slots(rt)) return JT_E_OPERANDS;
    /* the parameter and its optimizer state are updated in place: outputs = inputs */
    if (!jt_same_buffer(rt, op->out[n_plain], param)) return JT_E_OPERANDS;
    for (q = 0; q < l.n_slots; q++) {
      const int32_t slot = op->in[l.upd + 2u + q];
      if (jt_t(rt, slot)->dtype != JT_DTYPE_F32 || jt_storage(rt, slot) != JT_STATE)
        return JT_E_DTYPE;
      if (!jt_same_shape(rt, slot, param)) return JT_E_SHAPE;
      if (!jt_same_buffer(rt, op->out[n_plain + 1u + q], slot)) return JT_E_OPERANDS;
    }
  }
  return JT_OK;
}
