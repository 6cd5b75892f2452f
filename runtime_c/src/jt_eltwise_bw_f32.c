/* Element-wise backward kernels, float32: kernels, adapters, checks
 * (see jt_eltwise_bw_f32.h). */
#include "jt_eltwise_bw_f32.h"

#include "jt_internal.h"

/* --- kernels ----------------------------------------------------------------------------- */

jt_status jt_requant_bw_f32(const float *g, const uint8_t *mask, const float *m, float *g_acc,
                            const jt_requant_bw_f32_params *p) {
  uint32_t e;
  for (e = 0; e < p->size; e++) {
    float mv;
    if (p->m_mode == JT_M_CHANNEL) mv = m[e % p->channels];
    else if (p->m_mode == JT_M_POSITION) mv = m[(e / p->channels) % p->positions];
    else mv = m[0];
    /* read g[e] before writing g_acc[e]: the op may run in place */
    g_acc[e] = jt_mask_bit(mask, e) ? g[e] * mv : 0.0f;
  }
  return JT_OK;
}

jt_status jt_add_bw_f32(const float *g, const uint8_t *mask, float *ga, float *gb,
                        const jt_add_bw_f32_params *p) {
  /* np.float32(int): round to nearest, as C's int -> float conversion on every target */
  const float fa = (float)p->a_mult, fb = (float)p->b_mult;
  uint32_t e;
  for (e = 0; e < p->size; e++) {
    const float d = jt_mask_bit(mask, e) ? g[e] * p->m : 0.0f;
    ga[e] = d * fa;  /* ga may alias g: g[e] is read already */
    gb[e] = d * fb;
  }
  return JT_OK;
}

jt_status jt_concat_bw_f32(const float *g, const uint8_t *mask, float *gx,
                           const jt_concat_bw_f32_params *p) {
  uint32_t u, a, k;
  for (u = 0; u < p->outer; u++) {
    for (a = 0; a < p->size; a++) {
      const uint32_t src = (u * p->total + p->start + a) * p->inner;
      float *dst = gx + (u * p->size + a) * p->inner;
      for (k = 0; k < p->inner; k++)
        dst[k] = p->identity ? g[src + k] : jt_mask_bit(mask, src + k) ? g[src + k] * p->m : 0.0f;
    }
  }
  return JT_OK;
}

/* --- requant_bw_f32: g mask m -> g_acc ---------------------------------------------------- */

static void requant_params(const jt_runtime *rt, int32_t g, uint32_t mode,
                           jt_requant_bw_f32_params *p) {
  const uint32_t r = jt_rank(rt, g);
  p->size = jt_numel(rt, g);
  p->channels = r ? jt_dim(rt, g, r - 1u) : 1u;
  p->positions = r == 4u ? jt_dim(rt, g, 1) * jt_dim(rt, g, 2) : 1u;
  p->m_mode = mode;
}

jt_status jt_op_requant_bw_f32(jt_runtime *rt, const jt_op *op) {
  jt_requant_bw_f32_params p;
  uint32_t mode;
  (void)jt_m_mode_of(rt, op->in[2], op->in[0], &mode);  /* verified: it broadcasts */
  requant_params(rt, op->in[0], mode, &p);
  return jt_requant_bw_f32((const float *)jt_data(rt, op->in[0]),
                           (const uint8_t *)jt_data(rt, op->in[1]),
                           (const float *)jt_data(rt, op->in[2]),
                           (float *)jt_data(rt, op->out[0]), &p);
}

jt_status jt_check_requant_bw_f32(const jt_runtime *rt, const jt_op *op) {
  const int32_t g = op->in[0], mask = op->in[1], m = op->in[2], out = op->out[0];
  jt_status s;
  uint32_t mode;
  if (jt_t(rt, g)->dtype != JT_DTYPE_F32 || jt_t(rt, mask)->dtype != JT_DTYPE_BIT ||
      jt_t(rt, out)->dtype != JT_DTYPE_F32)
    return JT_E_DTYPE;
  if (!jt_same_shape(rt, g, mask) || !jt_same_shape(rt, g, out)) return JT_E_SHAPE;
  if ((s = jt_want_m_mode(rt, m, g, &mode)) != JT_OK) return s;
  /* in place over g is fine (element-wise); over the multiplier it is not */
  if (jt_same_buffer(rt, out, m)) return JT_E_SHAPE;
  return JT_OK;
}

/* --- add_bw_f32: g mask -> ga gb | a_mult@0 b_mult@1 m:f32@2 ------------------------------ */

jt_status jt_op_add_bw_f32(jt_runtime *rt, const jt_op *op) {
  jt_add_bw_f32_params p;
  p.size = jt_numel(rt, op->in[0]);
  p.m = jt_attr_f32(op, 2);
  p.a_mult = op->attr[0];
  p.b_mult = op->attr[1];
  return jt_add_bw_f32((const float *)jt_data(rt, op->in[0]),
                       (const uint8_t *)jt_data(rt, op->in[1]),
                       (float *)jt_data(rt, op->out[0]), (float *)jt_data(rt, op->out[1]), &p);
}

jt_status jt_check_add_bw_f32(const jt_runtime *rt, const jt_op *op) {
  const int32_t g = op->in[0], mask = op->in[1], ga = op->out[0], gb = op->out[1];
  if (jt_t(rt, g)->dtype != JT_DTYPE_F32 || jt_t(rt, mask)->dtype != JT_DTYPE_BIT ||
      jt_t(rt, ga)->dtype != JT_DTYPE_F32 || jt_t(rt, gb)->dtype != JT_DTYPE_F32)
    return JT_E_DTYPE;
  if (!jt_same_shape(rt, g, mask) || !jt_same_shape(rt, g, ga) || !jt_same_shape(rt, g, gb))
    return JT_E_SHAPE;
  if (!jt_isfinitef(jt_attr_f32(op, 2))) return JT_E_ATTR;  /* the reference refuses it */
  /* ga may take g's bytes; gb neither g's nor ga's */
  if (jt_same_buffer(rt, gb, g) || jt_same_buffer(rt, gb, ga)) return JT_E_SHAPE;
  return JT_OK;
}

/* --- concat_bw_f32: g mask -> gxs* | axis@0 sizes:i32[]@1 mults:f32[] identity:bool[] -----
 * slots: axis, n, sizes[n], n, mults[n], n, identity[n] */

jt_status jt_op_concat_bw_f32(jt_runtime *rt, const jt_op *op) {
  const int32_t g = op->in[0];
  const uint32_t axis = (uint32_t)op->attr[0], n = op->n_out, r = jt_rank(rt, g);
  const float *gd = (const float *)jt_data(rt, g);
  const uint8_t *mask = (const uint8_t *)jt_data(rt, op->in[1]);
  jt_concat_bw_f32_params p;
  uint32_t k, start = 0;
  p.outer = 1;
  p.inner = 1;
  for (k = 0; k < axis; k++) p.outer *= jt_dim(rt, g, k);
  for (k = axis + 1u; k < r; k++) p.inner *= jt_dim(rt, g, k);
  p.total = jt_dim(rt, g, axis);
  for (k = 0; k < n; k++) {
    p.start = start;
    p.size = (uint32_t)op->attr[2u + k];
    p.m = jt_attr_f32(op, 3u + n + k);
    p.identity = (uint32_t)op->attr[4u + 2u * n + k];
    jt_concat_bw_f32(gd, mask, (float *)jt_data(rt, op->out[k]), &p);
    start += p.size;
  }
  return JT_OK;
}

jt_status jt_check_concat_bw_f32(const jt_runtime *rt, const jt_op *op) {
  const int32_t *a = op->attr;
  const int32_t g = op->in[0], mask = op->in[1];
  const uint32_t n = op->n_out, r = jt_rank(rt, g);
  uint64_t sum = 0;
  uint32_t k, d;
  if (op->n_attr != 4u + 3u * n || a[1] != (int32_t)n || a[2u + n] != (int32_t)n ||
      a[3u + 2u * n] != (int32_t)n)
    return JT_E_ATTR;  /* one size, multiplier and identity flag per output */
  if (jt_t(rt, g)->dtype != JT_DTYPE_F32 || jt_t(rt, mask)->dtype != JT_DTYPE_BIT)
    return JT_E_DTYPE;
  if (!jt_same_shape(rt, g, mask)) return JT_E_SHAPE;
  if (a[0] < 1 || (uint32_t)a[0] >= r) return JT_E_ATTR;  /* a non-batch axis */
  for (k = 0; k < n; k++) {
    const int32_t out = op->out[k], size = a[2u + k], same = a[4u + 2u * n + k];
    if (size < 0 || (same != 0 && same != 1)) return JT_E_ATTR;
    if (!same && !jt_isfinitef(jt_attr_f32(op, 3u + n + k))) return JT_E_ATTR;
    if (jt_t(rt, out)->dtype != JT_DTYPE_F32) return JT_E_DTYPE;
    if (jt_rank(rt, out) != r) return JT_E_SHAPE;
    for (d = 0; d < r; d++) {
      const uint32_t want = d == (uint32_t)a[0] ? (uint32_t)size : jt_dim(rt, g, d);
      if (jt_dim(rt, out, d) != want) return JT_E_SHAPE;
    }
    if (jt_same_buffer(rt, out, g)) return JT_E_SHAPE;
    sum += (uint64_t)size;
  }
  if (sum != jt_dim(rt, g, (uint32_t)a[0])) return JT_E_SHAPE;
  return JT_OK;
}
