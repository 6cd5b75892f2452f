/* The fused weight / bias updates and the optimizer (see jt_update.h for the arithmetic).
 *
 * The gradient of one parameter element does not depend on the parameter or its optimizer
 * state, so each element's gradient is formed and applied at once: no scratch, and the
 * result is the reference's, which forms the whole gradient first. */
#include "jt_update.h"

#include "jt_eltwise_s8.h"
#include "jt_math.h"

/* --- schedule, hash, rounding ---------------------------------------------------------- */

float jt_learning_rate_f32(const jt_optim_params *prm, int32_t step) {
  float t, c;
  if (prm->schedule == 0u) return prm->lr;
  /* min(step / steps, 1) as np.minimum: a NaN would stay NaN (it cannot arise: steps >= 1
   * is verified at init; 0 is read as the end of the schedule rather than divided by). */
  t = prm->steps == 0u ? 1.0f : (float)step / (float)prm->steps;
  if (t > 1.0f) t = 1.0f;
  c = 1.0f + jt_cosf((float)3.14159265358979323846 * t);
  return prm->amplitude * c + prm->final_lr;
}

static uint32_t hash_base(uint32_t seed, uint32_t step, uint32_t pid) {
  return seed * 0x9E3779B1u + step * 0x85EBCA77u + pid * 0xC2B2AE3Du;
}

/* lowbias32 of base + index, top 24 bits scaled into [0, 1) (exact in float32). */
static float hash_finish(uint32_t h) {
  h ^= h >> 16;
  h *= 0x7FEB352Du;
  h ^= h >> 15;
  h *= 0x846CA68Bu;
  h ^= h >> 16;
  return (float)(h >> 8) * 0x1p-24f;
}

float jt_hash_uniform_f32(uint32_t seed, uint32_t step, uint32_t pid, uint32_t index) {
  return hash_finish(hash_base(seed, step, pid) + index);
}

uint32_t jt_update_slots(const jt_runtime *rt) {
  if (rt->optimizer == 1u) return 2u;  /* adam: m, v */
  return rt->momentum != 0.0f ? 1u : 0u;  /* sgd: m with momentum */
}

/* --- binding ----------------------------------------------------------------------------- */

/* The per-op constants: the schedule's rate, Adam's bias corrections, the hash base. */
static void prepare(jt_update_ctx *ctx) {
  const jt_optim_params *prm = &ctx->prm;
  ctx->lr = jt_learning_rate_f32(prm, ctx->step);
  ctx->one_minus_b1 = 1.0f - prm->b1;
  ctx->one_minus_b2 = 1.0f - prm->b2;
  ctx->corr1 = 1.0f;
  ctx->corr2 = 1.0f;
  if (prm->optimizer == 1u) {
    float k = (float)ctx->step + 1.0f;
    ctx->corr1 = 1.0f - jt_powf(prm->b1, k);
    ctx->corr2 = 1.0f - jt_powf(prm->b2, k);
  }
  /* uint32 wrapping, as numpy's uint32 arithmetic (pid >= 0 is verified). */
  ctx->hash_base = hash_base(prm->seed, (uint32_t)ctx->step, (uint32_t)ctx->pid);
}

void jt_update_bind(jt_update_ctx *ctx, const jt_optim_params *prm, void *p, uint32_t p_dtype,
                    const float *inv, float *const *slots, uint32_t n_slots, uint32_t row_size,
                    int32_t pid, int32_t step) {
  uint32_t k;
  ctx->rt = NULL;
  ctx->prm = *prm;
  ctx->p = p;
  ctx->p_dtype = p_dtype;
  ctx->inv = inv;
  ctx->n_slots = n_slots > 2u ? 2u : n_slots;
  ctx->slots[0] = NULL;
  ctx->slots[1] = NULL;
  for (k = 0; k < ctx->n_slots; k++) ctx->slots[k] = slots[k];
  ctx->row_size = row_size;
  ctx->pid = pid;
  ctx->step = step;
  prepare(ctx);
}

void jt_update_begin(jt_update_ctx *ctx, const jt_runtime *rt, int32_t pid, int32_t p_id,
                     int32_t inv_id, const int32_t *slot_ids, uint32_t n_slots,
                     int32_t step_id) {
  jt_optim_params prm;
  float *slots[2] = {NULL, NULL};
  uint32_t k, rows, numel;
  int32_t step;
  prm.optimizer = rt->optimizer;
  prm.schedule = rt->schedule;
  prm.steps = rt->steps;
  prm.rounding = rt->rounding;
  prm.seed = rt->seed;
  prm.lr = rt->lr;
  prm.final_lr = rt->final_lr;
  prm.amplitude = rt->amplitude;
  prm.momentum = rt->momentum;
  prm.b1 = rt->b1;
  prm.b2 = rt->b2;
  prm.eps = rt->eps;
  for (k = 0; k < n_slots && k < 2u; k++) slots[k] = (float *)jt_data(rt, slot_ids[k]);
  memcpy(&step, jt_data(rt, step_id), sizeof step);
  rows = jt_dim(rt, p_id, 0);
  numel = jt_numel(rt, p_id);
  jt_update_bind(ctx, &prm, jt_data(rt, p_id), jt_t(rt, p_id)->dtype,
                 (const float *)jt_data(rt, inv_id), slots, n_slots,
                 rows ? numel / rows : 0u, pid, step);
  ctx->rt = rt;
}

/* --- one element -------------------------------------------------------------------------- */

static float round_mode(const jt_update_ctx *ctx, float v, uint32_t index) {
  if (ctx->prm.rounding == 0u) return jt_rintf(v);
  return jt_floorf(v + hash_finish(ctx->hash_base + index));
}

/* The real step d of one element from its real gradient g (kernels.optimizer_step), and
 * its new slots m, v (those the optimizer keeps). */
static float optimizer_element(const jt_update_ctx *ctx, uint32_t index, float g, float *m,
                               float *v) {
  const jt_optim_params *prm = &ctx->prm;
  if (prm->optimizer == 1u) {
    float mhat, vhat;
    *m = prm->b1 * ctx->slots[0][index] + ctx->one_minus_b1 * g;
    *v = prm->b2 * ctx->slots[1][index] + (ctx->one_minus_b2 * g) * g;
    mhat = *m / ctx->corr1;
    vhat = *v / ctx->corr2;
    return (ctx->lr * mhat) / (jt_sqrtf(vhat) + prm->eps);
  }
  if (ctx->n_slots == 1u) {
    *m = prm->momentum * ctx->slots[0][index] + g;
    return ctx->lr * *m;
  }
  return ctx->lr * g;
}

void jt_update_apply(const jt_update_ctx *ctx, uint32_t index, float grad) {
  uint32_t row = ctx->row_size ? index / ctx->row_size : 0u;
  float inv = ctx->inv[row];
  float m = 0.0f, v = 0.0f;
  float d = optimizer_element(ctx, index, grad * inv, &m, &v);
  float delta = d * inv;
  /* No NaN or infinity ever reaches the stored state: such an element keeps its value. */
  if (!jt_isfinitef(delta)) return;
  if (ctx->n_slots >= 1u && !jt_isfinitef(m)) return;
  if (ctx->n_slots >= 2u && !jt_isfinitef(v)) return;
  if (ctx->n_slots >= 1u) ctx->slots[0][index] = m;
  if (ctx->n_slots >= 2u) ctx->slots[1][index] = v;
  if (ctx->p_dtype == JT_DTYPE_I8) {
    int8_t *p = (int8_t *)ctx->p;
    /* finite delta, |p| <= 128: p - delta and the rounding stay finite; clamp in float */
    float r = round_mode(ctx, (float)p[index] - delta, index);
    r = r < -127.0f ? -127.0f : (r > 127.0f ? 127.0f : r);
    p[index] = (int8_t)(int32_t)r;  /* finite and clamped: the cast is exact */
  } else {
    int32_t *p = (int32_t *)ctx->p;
    float s = round_mode(ctx, -delta, index);
    /* the step is bounded to +-2**30 before the integer cast, then added saturating */
    s = s < -1073741824.0f ? -1073741824.0f : (s > 1073741824.0f ? 1073741824.0f : s);
    p[index] = jt_sat_add_i32(p[index], (int32_t)s);  /* finite and clamped: exact cast */
  }
}

static jt_status update_array(void *p, uint32_t p_dtype, float *m, float *v,
                              const float *grad, const float *inv, uint32_t rows,
                              uint32_t row_size, uint32_t n_slots, int32_t pid, int32_t step,
                              const jt_optim_params *prm) {
  jt_update_ctx ctx;
  float *slots[2];
  uint32_t e, n;
  if (!p || !grad || !inv || !prm || n_slots > 2u || (n_slots >= 1u && !m) ||
      (n_slots >= 2u && !v))
    return JT_E_NULL;
  slots[0] = m;
  slots[1] = v;
  jt_update_bind(&ctx, prm, p, p_dtype, inv, slots, n_slots, row_size, pid, step);
  n = rows * row_size;
  for (e = 0; e < n; e++) jt_update_apply(&ctx, e, grad[e]);
  return JT_OK;
}

jt_status jt_update_s8(int8_t *p, float *m, float *v, const float *grad, const float *inv,
                       uint32_t rows, uint32_t row_size, uint32_t n_slots, int32_t pid,
                       int32_t step, const jt_optim_params *prm) {
  return update_array(p, JT_DTYPE_I8, m, v, grad, inv, rows, row_size, n_slots, pid, step,
                      prm);
}

jt_status jt_update_i32(int32_t *p, float *m, float *v, const float *grad, const float *inv,
                        uint32_t rows, uint32_t row_size, uint32_t n_slots, int32_t pid,
                        int32_t step, const jt_optim_params *prm) {
  return update_array(p, JT_DTYPE_I32, m, v, grad, inv, rows, row_size, n_slots, pid, step,
                      prm);
}

jt_status jt_optimizer_step_f32(const float *g, float *m, float *v, float *d, uint32_t n,
                                uint32_t n_slots, int32_t step, const jt_optim_params *prm) {
  jt_update_ctx ctx;
  float *slots[2];
  float one = 1.0f;
  uint32_t e;
  if (!g || !d || !prm || n_slots > 2u || (n_slots >= 1u && !m) || (n_slots >= 2u && !v))
    return JT_E_NULL;
  slots[0] = m;
  slots[1] = v;
  jt_update_bind(&ctx, prm, NULL, JT_DTYPE_I8, &one, slots, n_slots, 0u, 0, step);
  for (e = 0; e < n; e++) {
    float mn = 0.0f, vn = 0.0f;
    d[e] = optimizer_element(&ctx, e, g[e], &mn, &vn);
    if (n_slots >= 1u) m[e] = mn;
    if (n_slots >= 2u) v[e] = vn;
  }
  return JT_OK;
}

/* --- gradients ---------------------------------------------------------------------------- */

/* d w[r, i, j, ci0] of a convolution: one running float32 sum over the output positions
 * (n, y, x) in row-major order, from the first term. A tap in the padding reads x - z =
 * +0.0f (np.pad of the dequantized input): its term g * 0.0f is kept, so the sign of a
 * zero sum and a NaN or infinite g come out exactly as in the reference. */
static float conv_grad(const float *g, const int8_t *x, const jt_conv_bw_weight_params *q,
                       uint32_t r, uint32_t i, uint32_t j, uint32_t ci0) {
  uint32_t gch = q->g_channel ? (uint32_t)q->g_channel[r] : r;
  uint32_t ch = (r / q->og) * q->ci + ci0;
  float zero = (float)q->x_zero;
  float acc = 0.0f;
  int first = 1;
  uint32_t n, y, xo;
  for (n = 0; n < q->n; n++) {
    for (y = 0; y < q->ho; y++) {
      /* input row of this tap, in 64 bits: y * stride + i - pad */
      int64_t iy = (int64_t)y * q->stride_h + i - q->pad_top;
      int row_in = iy >= 0 && iy < (int64_t)q->h;
      for (xo = 0; xo < q->wo; xo++) {
        int64_t ix = (int64_t)xo * q->stride_w + j - q->pad_left;
        float gv = g[((n * q->ho + y) * q->wo + xo) * q->gc + gch];
        float xv = 0.0f;
        float term;
        if (row_in && ix >= 0 && ix < (int64_t)q->w) {
          uint32_t at = ((n * q->h + (uint32_t)iy) * q->w + (uint32_t)ix) * q->c + ch;
          xv = (float)x[at] - zero; /* exact: |x - z| <= 255 */
        }
        term = gv * xv;
        if (first) {
          acc = term;
          first = 0;
        } else {
          acc += term;
        }
      }
    }
  }
  return acc; /* no position: the empty sum +0.0f */
}

jt_status jt_conv2d_bw_weight_f32_row(const float *g, const int8_t *x,
                                      const jt_conv_bw_weight_params *prm, uint32_t r,
                                      float *row) {
  uint32_t i, j, c, at = 0;
  if (!g || !x || !prm || !row) return JT_E_NULL;
  if (r >= prm->o || prm->og == 0u) return JT_E_SHAPE;
  for (i = 0; i < prm->kh; i++)
    for (j = 0; j < prm->kw; j++)
      for (c = 0; c < prm->ci; c++) row[at++] = conv_grad(g, x, prm, r, i, j, c);
  return JT_OK;
}

/* d w[r, k] of a dense layer: running sum over the batch. */
static float dense_grad(const float *g, const int8_t *x, uint32_t n, uint32_t o, uint32_t k,
                        float zero, uint32_t r, uint32_t col) {
  float acc = 0.0f;
  uint32_t b;
  for (b = 0; b < n; b++) {
    float term = g[b * o + r] * ((float)x[b * k + col] - zero);
    acc = b == 0u ? term : acc + term;
  }
  return acc;
}

jt_status jt_dense_bw_weight_f32_row(const float *g, const int8_t *x, uint32_t n, uint32_t o,
                                     uint32_t k, int32_t x_zero, uint32_t r, float *row) {
  uint32_t col;
  if (!g || !x || !row) return JT_E_NULL;
  if (r >= o) return JT_E_SHAPE;
  for (col = 0; col < k; col++) row[col] = dense_grad(g, x, n, o, k, (float)x_zero, r, col);
  return JT_OK;
}

static float bias_grad(const float *g, uint32_t positions, uint32_t c, uint32_t ch) {
  float acc = 0.0f;
  uint32_t p;
  for (p = 0; p < positions; p++) acc = p == 0u ? g[ch] : acc + g[p * c + ch];
  return acc;
}

jt_status jt_bias_bw_f32(const float *g, uint32_t positions, uint32_t c, float *out) {
  uint32_t ch;
  if (!g || !out) return JT_E_NULL;
  for (ch = 0; ch < c; ch++) out[ch] = bias_grad(g, positions, c, ch);
  return JT_OK;
}

/* --- the ops ------------------------------------------------------------------------------ */

/* Attribute slots (jt_opcodes.h). */
enum {
  CONV_STRIDES = 0, CONV_PADDING = 2, CONV_GROUPS = 6, CONV_KERNEL = 7, CONV_X_ZERO = 9,
  CONV_PID = 10, CONV_KIND = 11, CONV_CHANNELS = 12,
  DENSE_X_ZERO = 0, DENSE_PID = 1, DENSE_KIND = 2, DENSE_CHANNELS = 3,
  BIAS_PID = 0, BIAS_KIND = 1
};

/* The update operands of an op whose parameter is input p_index: p, inv, the slots, the
 * step counter (last). */
static void begin_op(jt_update_ctx *ctx, const jt_runtime *rt, const jt_op *op,
                     uint32_t p_index, int32_t pid) {
  jt_update_begin(ctx, rt, pid, op->in[p_index], op->in[p_index + 1], op->in + p_index + 2,
                  op->n_in - p_index - 3u, op->in[op->n_in - 1u]);
}

/* The convolution geometry of a verified conv2d_update_s8 (see the check). */
static void conv_geometry(const jt_runtime *rt, const jt_op *op, jt_conv_bw_weight_params *q) {
  int32_t g_id = op->in[0], x_id = op->in[1], w_id = op->in[2];
  int32_t count = op->attr[CONV_CHANNELS];
  uint32_t groups = (uint32_t)op->attr[CONV_GROUPS];
  q->n = jt_dim(rt, x_id, 0);
  q->h = jt_dim(rt, x_id, 1);
  q->w = jt_dim(rt, x_id, 2);
  q->c = jt_dim(rt, x_id, 3);
  q->ho = jt_dim(rt, g_id, 1);
  q->wo = jt_dim(rt, g_id, 2);
  q->gc = jt_dim(rt, g_id, 3);
  q->o = jt_dim(rt, w_id, 0);
  q->kh = jt_dim(rt, w_id, 1);
  q->kw = jt_dim(rt, w_id, 2);
  q->ci = jt_dim(rt, w_id, 3);
  q->stride_h = (uint32_t)op->attr[CONV_STRIDES];
  q->stride_w = (uint32_t)op->attr[CONV_STRIDES + 1];
  q->pad_top = (uint32_t)op->attr[CONV_PADDING];
  q->pad_left = (uint32_t)op->attr[CONV_PADDING + 2];
  q->x_zero = op->attr[CONV_X_ZERO];
  q->g_channel = NULL;
  if (count >= 0 && groups > 1u) {
    /* depthwise channel subset: the selected channels of g, one group each */
    q->g_channel = op->attr + CONV_CHANNELS + 1;
    groups = (uint32_t)count;
  }
  q->og = q->o / groups;
}

jt_status jt_op_conv2d_update_s8(jt_runtime *rt, const jt_op *op) {
  jt_update_ctx ctx;
  jt_conv_bw_weight_params q;
  const float *g = (const float *)jt_data(rt, op->in[0]);
  const int8_t *x = (const int8_t *)jt_data(rt, op->in[1]);
  uint32_t r, i, j, c, at = 0;
  conv_geometry(rt, op, &q);
  begin_op(&ctx, rt, op, 2u, op->attr[CONV_PID]);
  for (r = 0; r < q.o; r++)
    for (i = 0; i < q.kh; i++)
      for (j = 0; j < q.kw; j++)
        for (c = 0; c < q.ci; c++) jt_update_apply(&ctx, at++, conv_grad(g, x, &q, r, i, j, c));
  return JT_OK;
}

jt_status jt_op_dense_update_s8(jt_runtime *rt, const jt_op *op) {
  jt_update_ctx ctx;
  const float *g = (const float *)jt_data(rt, op->in[0]);
  const int8_t *x = (const int8_t *)jt_data(rt, op->in[1]);
  uint32_t n = jt_dim(rt, op->in[1], 0), k = jt_dim(rt, op->in[1], 1);
  uint32_t o = jt_dim(rt, op->in[2], 0);
  float zero = (float)op->attr[DENSE_X_ZERO];
  uint32_t r, col, at = 0;
  begin_op(&ctx, rt, op, 2u, op->attr[DENSE_PID]);
  for (r = 0; r < o; r++)
    for (col = 0; col < k; col++)
      jt_update_apply(&ctx, at++, dense_grad(g, x, n, o, k, zero, r, col));
  return JT_OK;
}

jt_status jt_op_bias_update_i32(jt_runtime *rt, const jt_op *op) {
  jt_update_ctx ctx;
  const float *g = (const float *)jt_data(rt, op->in[0]);
  uint32_t c = jt_dim(rt, op->in[1], 0);
  uint32_t positions = c ? jt_numel(rt, op->in[0]) / c : 0u;
  uint32_t ch;
  begin_op(&ctx, rt, op, 1u, op->attr[BIAS_PID]);
  for (ch = 0; ch < c; ch++) jt_update_apply(&ctx, ch, bias_grad(g, positions, c, ch));
  return JT_OK;
}

/* --- the checks ----------------------------------------------------------------------------- */

/* The update operands of an op whose parameter is input p_index (dtype p_dtype, rank
 * p_rank; kind p_kind): p in state; outputs p then the slots, in place; inv f32 (O,);
 * slots f32 shaped like p, in state, as many as the optimizer keeps; step an int32 state
 * scalar; pid >= 0; no other input shares memory with what the op writes. */
static jt_status check_update(const jt_runtime *rt, const jt_op *op, uint32_t p_index,
                              uint32_t p_dtype, uint32_t p_rank, int32_t pid, int32_t kind,
                              int32_t p_kind) {
  int32_t p, inv, step;
  uint32_t n_slots, k, i;
  jt_status st;
  if (op->n_in < p_index + 3u) return JT_E_OPERANDS;
  p = op->in[p_index];
  inv = op->in[p_index + 1u];
  step = op->in[op->n_in - 1u];
  n_slots = op->n_in - p_index - 3u;
  if (op->n_out != 1u + n_slots || n_slots != jt_update_slots(rt)) return JT_E_OPERANDS;
  if (pid < 0 || kind != p_kind) return JT_E_ATTR;
  if ((st = jt_want(rt, p, p_dtype, p_rank)) != JT_OK) return st;
  if (jt_storage(rt, p) != JT_STATE) return JT_E_DTYPE;
  if ((st = jt_want(rt, inv, JT_DTYPE_F32, 1)) != JT_OK) return st;
  if (jt_dim(rt, inv, 0) != jt_dim(rt, p, 0)) return JT_E_SHAPE;
  if (jt_t(rt, step)->dtype != JT_DTYPE_I32 || jt_storage(rt, step) != JT_STATE)
    return JT_E_DTYPE;
  if (jt_numel(rt, step) != 1u) return JT_E_SHAPE;
  /* in place: output 0 is p, output 1 + k slot k */
  if (!jt_same_buffer(rt, op->out[0], p)) return JT_E_OPERANDS;
  if (!jt_same_shape(rt, op->out[0], p)) return JT_E_SHAPE;
  for (k = 0; k < n_slots; k++) {
    int32_t s = op->in[p_index + 2u + k];
    if ((st = jt_want(rt, s, JT_DTYPE_F32, p_rank)) != JT_OK) return st;
    if (jt_storage(rt, s) != JT_STATE) return JT_E_DTYPE;
    if (!jt_same_shape(rt, s, p)) return JT_E_SHAPE;
    if (!jt_same_buffer(rt, op->out[1u + k], s)) return JT_E_OPERANDS;
    if (!jt_same_shape(rt, op->out[1u + k], s)) return JT_E_SHAPE;
  }
  /* What the op writes (p, the slots) is disjoint from each other and from what it only
   * reads (gradient, saved input, inv, step): the element-wise in-place update would
   * otherwise read values it has already changed. */
  for (i = 0; i < op->n_in; i++) {
    int is_written_i = i == p_index || (i >= p_index + 2u && i < p_index + 2u + n_slots);
    for (k = 0; k < op->n_in; k++) {
      int is_written_k = k == p_index || (k >= p_index + 2u && k < p_index + 2u + n_slots);
      if (k == i || !(is_written_i || is_written_k)) continue;
      if (jt_same_buffer(rt, op->in[i], op->in[k])) return JT_E_SHAPE;
    }
  }
  return JT_OK;
}

/* An optional channel list attribute at `slot`: count -1 (none) or count values in
 * [0, bound) ascending strictly. Returns the count, or -2 when malformed. */
static int32_t channels_attr(const jt_op *op, uint32_t slot, uint32_t bound) {
  const int32_t count = op->attr[slot];
  if (count < -1) return -2;
  if (count > 0 && !jt_ascending_below(op->attr + slot + 1u, (uint32_t)count, bound)) return -2;
  return count;
}

jt_status jt_check_conv2d_update_s8(const jt_runtime *rt, const jt_op *op) {
  const int32_t *a = op->attr;
  int32_t g = op->in[0], x = op->in[1], w = op->in[2];
  int32_t sh = a[CONV_STRIDES], sw = a[CONV_STRIDES + 1], groups = a[CONV_GROUPS];
  int32_t pt = a[CONV_PADDING], pb = a[CONV_PADDING + 1], pl = a[CONV_PADDING + 2];
  int32_t pr = a[CONV_PADDING + 3];
  uint32_t n, c, o, kh, kw, gc, eff_groups, eff_o, ho, wo;
  int32_t count;
  jt_status s;
  if ((s = jt_want(rt, g, JT_DTYPE_F32, 4)) != JT_OK) return s;
  if ((s = jt_want(rt, x, JT_DTYPE_I8, 4)) != JT_OK) return s;
  s = check_update(rt, op, 2u, JT_DTYPE_I8, 4, a[CONV_PID], a[CONV_KIND], JT_KIND_WEIGHT);
  if (s != JT_OK) return s;
  if (sh < 1 || sw < 1 || pt < 0 || pb < 0 || pl < 0 || pr < 0 || groups < 1 ||
      !jt_is_i8(a[CONV_X_ZERO]))
    return JT_E_ATTR;
  n = jt_dim(rt, x, 0);
  c = jt_dim(rt, x, 3);
  gc = jt_dim(rt, g, 3);
  o = jt_dim(rt, w, 0);
  kh = jt_dim(rt, w, 1);
  kw = jt_dim(rt, w, 2);
  /* the reference takes the window from the weight's shape; the attribute must agree */
  if (kh < 1u || kw < 1u || (uint32_t)a[CONV_KERNEL] != kh || (uint32_t)a[CONV_KERNEL + 1] != kw)
    return JT_E_ATTR;
  if (jt_dim(rt, g, 0) != n) return JT_E_SHAPE;
  /* the window rules of every other window op */
  if ((s = jt_want_window(jt_dim(rt, x, 1), kh, sh, pt, pb, &ho)) != JT_OK ||
      (s = jt_want_window(jt_dim(rt, x, 2), kw, sw, pl, pr, &wo)) != JT_OK)
    return s;
  if (ho != jt_dim(rt, g, 1) || wo != jt_dim(rt, g, 2)) return JT_E_SHAPE;
  count = channels_attr(op, CONV_CHANNELS, groups > 1 ? gc : 0xFFFFFFFFu);
  if (count == -2) return JT_E_ATTR;
  if (count >= 0 && groups > 1) {
    /* depthwise channel subset: g's selected channels, one group each, over the saved
     * input channels (executor _conv_update) */
    if (count == 0) return JT_E_ATTR;
    eff_groups = (uint32_t)count;
    eff_o = (uint32_t)count;
  } else {
    /* whole, or the saved input channels of an ordinary conv (x holds just those) */
    if (count >= 0 && (uint32_t)count != c) return JT_E_SHAPE;
    eff_groups = (uint32_t)groups;
    eff_o = gc;
  }
  if (c % eff_groups != 0u || eff_o % eff_groups != 0u) return JT_E_SHAPE;
  if (o != eff_o || jt_dim(rt, w, 3) != c / eff_groups) return JT_E_SHAPE;
  return JT_OK;
}

jt_status jt_check_dense_update_s8(const jt_runtime *rt, const jt_op *op) {
  const int32_t *a = op->attr;
  int32_t g = op->in[0], x = op->in[1], w = op->in[2];
  int32_t count;
  jt_status s;
  if ((s = jt_want(rt, g, JT_DTYPE_F32, 2)) != JT_OK) return s;
  if ((s = jt_want(rt, x, JT_DTYPE_I8, 2)) != JT_OK) return s;
  s = check_update(rt, op, 2u, JT_DTYPE_I8, 2, a[DENSE_PID], a[DENSE_KIND], JT_KIND_WEIGHT);
  if (s != JT_OK) return s;
  if (!jt_is_i8(a[DENSE_X_ZERO])) return JT_E_ATTR;
  count = channels_attr(op, DENSE_CHANNELS, 0xFFFFFFFFu);
  if (count == -2) return JT_E_ATTR;
  /* with channels, x is the saved input restricted to them (the reference reads it whole) */
  if (count >= 0 && (uint32_t)count != jt_dim(rt, x, 1)) return JT_E_SHAPE;
  if (jt_dim(rt, g, 0) != jt_dim(rt, x, 0) || jt_dim(rt, g, 1) != jt_dim(rt, w, 0) ||
      jt_dim(rt, x, 1) != jt_dim(rt, w, 1))
    return JT_E_SHAPE;
  return JT_OK;
}

jt_status jt_check_bias_update_i32(const jt_runtime *rt, const jt_op *op) {
  const int32_t *a = op->attr;
  int32_t g = op->in[0], b = op->in[1];
  uint32_t r;
  jt_status s;
  if (jt_t(rt, g)->dtype != JT_DTYPE_F32) return JT_E_DTYPE;
  s = check_update(rt, op, 1u, JT_DTYPE_I32, 1, a[BIAS_PID], a[BIAS_KIND], JT_KIND_BIAS);
  if (s != JT_OK) return s;
  r = jt_rank(rt, g);
  if (r < 1u || jt_dim(rt, g, r - 1u) != jt_dim(rt, b, 0)) return JT_E_SHAPE;
  return JT_OK;
}
