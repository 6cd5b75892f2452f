/* Element-wise int8 kernels and their ops: requant_s8, add_s8, concat_s8, copy, mask_s8,
 * gather_channels_s8 (see jt_eltwise_s8.h). */
#include "jt_eltwise_s8.h"

#include "jt_internal.h"

/* --- kernels ------------------------------------------------------------------------------ */

/* The loops below read the parameters into locals first: a store through an int8 pointer
 * may alias anything, so fields read in the loop would be reloaded after every store. */

jt_status jt_requant_s8(const int8_t *x, uint32_t n, const jt_requant_params *p, int8_t *y) {
  const jt_rq q = jt_rq_make(p->y_zero, p->lo, p->hi);
  const int32_t z = p->x_zero;
  const float m = p->m;
  for (uint32_t i = 0; i < n; i++) {
    /* read before write: y may be x */
    y[i] = jt_rq_apply((int32_t)x[i] - z, m, &q);
  }
  return JT_OK;
}

jt_status jt_add_s8(const int8_t *a, const int8_t *b, uint32_t n, const jt_add_params *p,
                    int8_t *y) {
  const jt_rq q = jt_rq_make(p->y_zero, p->lo, p->hi);
  const int32_t za = p->a_zero, ma = p->a_mult, zb = p->b_zero, mb = p->b_mult;
  const float m = p->m;
  /* |terms| <= 255 * |mult| and the check bounds 255 * (|a_mult| + |b_mult|) by INT32_MAX,
   * so this int32 arithmetic is exact (the reference's int64 sum then fits int32) */
#define ADD_ACC(i) (((int32_t)a[i] - za) * ma + ((int32_t)b[i] - zb) * mb)
  uint32_t i = 0;
#if JT_DSP && defined(__ARM_FP)
  int32_t l[3];
  jt_rq_lanes(&q, l);
  for (; i + 4 <= n; i += 4)  /* all read before the store: y may be a or b */
    jt_rq_four(ADD_ACC(i), ADD_ACC(i + 1), ADD_ACC(i + 2), ADD_ACC(i + 3), m, m, m, m, l, y + i);
#endif
  for (; i < n; i++) y[i] = jt_rq_apply(ADD_ACC(i), m, &q);
#undef ADD_ACC
  return JT_OK;
}

jt_status jt_concat_s8_part(const int8_t *x, uint32_t outer, uint32_t size, uint32_t inner,
                            int32_t x_zero, float m, int32_t y_zero, int8_t *y,
                            uint32_t total, uint32_t offset) {
  const uint32_t block = size * inner;  /* <= x's element count: fits */
  for (uint32_t o = 0; o < outer; o++) {
    const int8_t *src = x + o * block;
    int8_t *dst = y + (o * total + offset) * inner;
    for (uint32_t i = 0; i < block; i++)
      dst[i] = jt_requantize_s8((int32_t)src[i] - x_zero, m, y_zero, -128, 127);
  }
  return JT_OK;
}

jt_status jt_copy_bytes(const void *x, uint32_t nbytes, void *y) {
  if (nbytes > 0 && x != y) memmove(y, x, nbytes);
  return JT_OK;
}

#if JT_DSP
/* Bit k of the result (k < 4): lo1 <= byte k of v <= hi1, each of lo1 and hi1 holding its
 * bound in all four bytes: two SSUB8 compares, their GE flags turned into byte masks by
 * SEL, then one bit a byte gathered by a multiply. */
static inline uint32_t in_range4(int32_t v, uint32_t lo1, uint32_t hi1) {
  uint32_t t, m;
  __asm__("ssub8 %0, %2, %3\n\t"
          "sel %1, %4, %5\n\t"
          "ssub8 %0, %6, %2\n\t"
          "sel %1, %1, %5"
          : "=&r"(t), "=&r"(m)
          : "r"(v), "r"(lo1), "r"(0xFFFFFFFFu), "r"(0u), "r"(hi1)
          : "cc");
  return ((m & 0x01010101u) * 0x01020408u) >> 24;
}
#endif

jt_status jt_mask_s8(const int8_t *y, uint32_t n, int32_t lo, int32_t hi, uint8_t *mask) {
  uint32_t i = 0, byte = 0;
#if JT_DSP
  if (hi - lo >= 2) {  /* lo + 1 and hi - 1 are then int8; else no element is inside */
    const uint32_t lo1 = (uint32_t)(uint8_t)(lo + 1) * 0x01010101u;
    const uint32_t hi1 = (uint32_t)(uint8_t)(hi - 1) * 0x01010101u;
    for (; i + 8 <= n; i += 8)
      mask[byte++] = (uint8_t)(in_range4(jt_ld_s8x4(y + i), lo1, hi1) |
                               in_range4(jt_ld_s8x4(y + i + 4), lo1, hi1) << 4);
  }
#endif
  while (i < n) {
    uint32_t bits = 0;
    for (uint32_t k = 0; k < 8u && i < n; k++, i++) {
      if (y[i] > lo && y[i] < hi) bits |= 1u << k;
    }
    mask[byte++] = (uint8_t)bits;
  }
  return JT_OK;
}

jt_status jt_gather_channels_s8(const int8_t *x, uint32_t rows, uint32_t c,
                                const int32_t *sel, uint32_t n_sel, int8_t *y) {
  for (uint32_t r = 0; r < rows; r++) {
    const int8_t *src = x + r * c;
    int8_t *dst = y + r * n_sel;
    for (uint32_t k = 0; k < n_sel; k++) dst[k] = src[(uint32_t)sel[k]];
  }
  return JT_OK;
}

static int is_dtype(const jt_runtime *rt, int32_t id, uint32_t dtype) {
  return jt_t(rt, id)->dtype == dtype;
}

/* --- requant_s8: x -> y | x_zero@0 y_zero@1 lo@2 hi@3 m:f32@4 ------------------------------- */

static void requant_params(const jt_op *op, jt_requant_params *p) {
  p->x_zero = op->attr[0];
  p->y_zero = op->attr[1];
  p->lo = op->attr[2];
  p->hi = op->attr[3];
  p->m = jt_attr_f32(op, 4);
}

jt_status jt_op_requant_s8(jt_runtime *rt, const jt_op *op) {
  jt_requant_params p;
  requant_params(op, &p);
  return jt_requant_s8((const int8_t *)jt_data(rt, op->in[0]), jt_numel(rt, op->out[0]), &p,
                       (int8_t *)jt_data(rt, op->out[0]));
}

/* Elementwise, so it may run in place (planner IN_PLACE); the output has x's shape. */
jt_status jt_check_requant_s8(const jt_runtime *rt, const jt_op *op) {
  const int32_t x = op->in[0], y = op->out[0];
  if (!is_dtype(rt, x, JT_DTYPE_I8) || !is_dtype(rt, y, JT_DTYPE_I8)) return JT_E_DTYPE;
  if (!jt_same_shape(rt, x, y)) return JT_E_SHAPE;
  jt_requant_params p;
  requant_params(op, &p);
  if (!jt_is_i8(p.x_zero) || !jt_requant_ok(p.y_zero, p.lo, p.hi) || !jt_isfinitef(p.m))
    return JT_E_ATTR;
  return JT_OK;
}

/* --- add_s8: a b -> y | a_zero@0 b_zero@1 y_zero@2 a_mult@3 b_mult@4 lo@5 hi@6 m:f32@7 ---- */

static void add_params(const jt_op *op, jt_add_params *p) {
  p->a_zero = op->attr[0];
  p->b_zero = op->attr[1];
  p->y_zero = op->attr[2];
  p->a_mult = op->attr[3];
  p->b_mult = op->attr[4];
  p->lo = op->attr[5];
  p->hi = op->attr[6];
  p->m = jt_attr_f32(op, 7);
}

jt_status jt_op_add_s8(jt_runtime *rt, const jt_op *op) {
  jt_add_params p;
  add_params(op, &p);
  return jt_add_s8((const int8_t *)jt_data(rt, op->in[0]), (const int8_t *)jt_data(rt, op->in[1]),
                   jt_numel(rt, op->out[0]), &p, (int8_t *)jt_data(rt, op->out[0]));
}

static int64_t abs64(int32_t v) { return v < 0 ? -(int64_t)v : (int64_t)v; }

jt_status jt_check_add_s8(const jt_runtime *rt, const jt_op *op) {
  const int32_t a = op->in[0], b = op->in[1], y = op->out[0];
  if (!is_dtype(rt, a, JT_DTYPE_I8) || !is_dtype(rt, b, JT_DTYPE_I8) ||
      !is_dtype(rt, y, JT_DTYPE_I8))
    return JT_E_DTYPE;
  if (!jt_same_shape(rt, a, b) || !jt_same_shape(rt, a, y)) return JT_E_SHAPE;
  jt_add_params p;
  add_params(op, &p);
  if (!jt_is_i8(p.a_zero) || !jt_is_i8(p.b_zero) ||
      !jt_requant_ok(p.y_zero, p.lo, p.hi) || !jt_isfinitef(p.m))
    return JT_E_ATTR;
  /* |acc| <= 255 * (|a_mult| + |b_mult|): keep it inside int32 so that no sum can overflow
   * (the reference raises when one leaves int32) */
  if (255 * (abs64(p.a_mult) + abs64(p.b_mult)) > INT32_MAX) return JT_E_ATTR;
  return JT_OK;
}

/* --- concat_s8: xs* -> y | axis@0 y_zero@1 zeros:i32[]@2 mults:f32[] ------------------------ */

jt_status jt_op_concat_s8(jt_runtime *rt, const jt_op *op) {
  const int32_t y = op->out[0];
  const jt_tensor_rec *ty = jt_t(rt, y);
  const uint32_t axis = (uint32_t)op->attr[0], n = op->n_in;
  const int32_t *zeros = op->attr + 3, *mults = op->attr + 4 + n;
  uint32_t outer = 1, inner = 1, offset = 0;
  for (uint32_t k = 0; k < axis; k++) outer *= ty->dims[k];
  for (uint32_t k = axis + 1; k < ty->rank; k++) inner *= ty->dims[k];
  int8_t *out = (int8_t *)jt_data(rt, y);
  for (uint32_t i = 0; i < n; i++) {
    const uint32_t size = jt_dim(rt, op->in[i], axis);
    jt_concat_s8_part((const int8_t *)jt_data(rt, op->in[i]), outer, size, inner, zeros[i],
                      jt_f32_bits(mults[i]), op->attr[1], out, ty->dims[axis], offset);
    offset += size;
  }
  return JT_OK;
}

jt_status jt_check_concat_s8(const jt_runtime *rt, const jt_op *op) {
  const int32_t y = op->out[0];
  const uint32_t n = op->n_in;
  if (n == 0) return JT_E_OPERANDS;  /* the reference needs at least one input */
  /* zeros: count n at slot 2, values at 3..; mults: count n at slot 3 + n, then values */
  if ((uint64_t)op->n_attr < 4u + 2u * (uint64_t)n || op->attr[2] != (int32_t)n || op->attr[3 + n] != (int32_t)n)
    return JT_E_ATTR;
  if (!is_dtype(rt, y, JT_DTYPE_I8)) return JT_E_DTYPE;
  const jt_tensor_rec *ty = jt_t(rt, y);
  const int32_t axis = op->attr[0];
  if (axis < 1 || (uint32_t)axis >= ty->rank) return JT_E_ATTR;  /* a non-batch axis */
  if (!jt_is_i8(op->attr[1])) return JT_E_ATTR;
  uint64_t total = 0;
  for (uint32_t i = 0; i < n; i++) {
    const int32_t x = op->in[i];
    if (!is_dtype(rt, x, JT_DTYPE_I8)) return JT_E_DTYPE;
    const jt_tensor_rec *tx = jt_t(rt, x);
    if (tx->rank != ty->rank) return JT_E_SHAPE;
    for (uint32_t k = 0; k < ty->rank; k++)
      if (k != (uint32_t)axis && tx->dims[k] != ty->dims[k]) return JT_E_SHAPE;
    total += tx->dims[axis];
    if (!jt_is_i8(op->attr[3 + i]) || !jt_isfinitef(jt_f32_bits(op->attr[4 + n + i])))
      return JT_E_ATTR;
  }
  if (total != ty->dims[axis]) return JT_E_SHAPE;
  return JT_OK;
}

/* --- copy: x -> y ------------------------------------------------------------------------- */

jt_status jt_op_copy(jt_runtime *rt, const jt_op *op) {
  return jt_copy_bytes(jt_data(rt, op->in[0]), jt_t(rt, op->out[0])->nbytes,
                       jt_data(rt, op->out[0]));
}

/* Same dtype and element count, any shapes (a reshape). Not packed masks: the executor
 * reshapes a copy's values element by element, which packed bits do not allow. */
jt_status jt_check_copy(const jt_runtime *rt, const jt_op *op) {
  const int32_t x = op->in[0], y = op->out[0];
  const uint32_t dt = jt_t(rt, x)->dtype;
  if (dt != jt_t(rt, y)->dtype || dt == JT_DTYPE_BIT) return JT_E_DTYPE;
  if (jt_numel(rt, x) != jt_numel(rt, y)) return JT_E_SHAPE;
  return JT_OK;
}

/* --- mask_s8: y -> mask | lo@0 hi@1 ------------------------------------------------------- */

jt_status jt_op_mask_s8(jt_runtime *rt, const jt_op *op) {
  return jt_mask_s8((const int8_t *)jt_data(rt, op->in[0]), jt_numel(rt, op->in[0]),
                    op->attr[0], op->attr[1], (uint8_t *)jt_data(rt, op->out[0]));
}

jt_status jt_check_mask_s8(const jt_runtime *rt, const jt_op *op) {
  const int32_t y = op->in[0], mask = op->out[0];
  if (!is_dtype(rt, y, JT_DTYPE_I8) || !is_dtype(rt, mask, JT_DTYPE_BIT)) return JT_E_DTYPE;
  if (!jt_same_shape(rt, y, mask)) return JT_E_SHAPE;
  const int32_t lo = op->attr[0], hi = op->attr[1];
  if (!jt_clamp_ok(lo, hi)) return JT_E_ATTR;
  return JT_OK;
}

/* --- gather_channels_s8: x sel -> y ------------------------------------------------------- */

jt_status jt_op_gather_channels_s8(jt_runtime *rt, const jt_op *op) {
  const int32_t x = op->in[0], sel = op->in[1];
  const jt_tensor_rec *tx = jt_t(rt, x);
  uint32_t rows = 1;
  for (uint32_t k = 0; k + 1 < tx->rank; k++) rows *= tx->dims[k];
  return jt_gather_channels_s8((const int8_t *)jt_data(rt, x), rows, tx->dims[tx->rank - 1],
                               (const int32_t *)jt_data(rt, sel), jt_dim(rt, sel, 0),
                               (int8_t *)jt_data(rt, op->out[0]));
}

jt_status jt_check_gather_channels_s8(const jt_runtime *rt, const jt_op *op) {
  const int32_t x = op->in[0], sel = op->in[1], y = op->out[0];
  if (!is_dtype(rt, x, JT_DTYPE_I8) || !is_dtype(rt, y, JT_DTYPE_I8)) return JT_E_DTYPE;
  jt_status s = jt_want(rt, sel, JT_DTYPE_I32, 1);
  if (s != JT_OK) return s;
  if (jt_storage(rt, sel) != JT_CONST) return JT_E_DTYPE;
  const jt_tensor_rec *tx = jt_t(rt, x), *ty = jt_t(rt, y);
  if (tx->rank < 1 || ty->rank != tx->rank) return JT_E_SHAPE;
  const uint32_t last = tx->rank - 1;
  for (uint32_t k = 0; k < last; k++)
    if (tx->dims[k] != ty->dims[k]) return JT_E_SHAPE;
  if (ty->dims[last] != jt_dim(rt, sel, 0)) return JT_E_SHAPE;
  if (!jt_channels_ok(rt, sel, tx->dims[last])) return JT_E_ATTR;
  return JT_OK;
}
