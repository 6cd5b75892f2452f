/* The helpers every family's op checks share (declared in jt_internal.h): one copy each,
 * so that one rule is refused with one status wherever it applies. Init-time only. */
#include "jt_eltwise_bw_f32.h"
#include "jt_internal.h"

int jt_is(const jt_runtime *rt, int32_t id, uint32_t dtype, uint32_t rank) {
  const jt_tensor_rec *t = jt_t(rt, id);
  return t->dtype == dtype && t->rank == rank;
}

jt_status jt_want(const jt_runtime *rt, int32_t id, uint32_t dtype, uint32_t rank) {
  const jt_tensor_rec *t = jt_t(rt, id);
  if (t->dtype != dtype) return JT_E_DTYPE;
  return t->rank == rank ? JT_OK : JT_E_SHAPE;
}

int jt_same_shape(const jt_runtime *rt, int32_t a, int32_t b) {
  const jt_tensor_rec *x = jt_t(rt, a), *y = jt_t(rt, b);
  if (x->rank != y->rank) return 0;
  for (uint32_t k = 0; k < x->rank; k++)
    if (x->dims[k] != y->dims[k]) return 0;
  return 1;
}

int jt_same_buffer(const jt_runtime *rt, int32_t a, int32_t b) {
  return jt_base(rt, a) == jt_base(rt, b);
}

/* --- channel lists ------------------------------------------------------------------------ */

int jt_ascending_below(const int32_t *v, uint32_t n, uint32_t bound) {
  for (uint32_t i = 0; i < n; i++)
    if (v[i] < 0 || (uint32_t)v[i] >= bound || (i > 0 && v[i] <= v[i - 1])) return 0;
  return 1;
}

int jt_channels_ok(const jt_runtime *rt, int32_t id, uint32_t bound) {
  if (!jt_is(rt, id, JT_DTYPE_I32, 1) || jt_storage(rt, id) != JT_CONST) return 0;
  return jt_ascending_below((const int32_t *)jt_data(rt, id), jt_dim(rt, id, 0), bound);
}

/* --- multipliers -------------------------------------------------------------------------- */

int jt_all_finite(const jt_runtime *rt, int32_t id) {
  const float *m = (const float *)jt_data(rt, id);  /* constants are 4-aligned */
  const uint32_t n = jt_numel(rt, id);
  for (uint32_t i = 0; i < n; i++)
    if (!jt_isfinitef(m[i])) return 0;
  return 1;
}

int jt_finite_if_const(const jt_runtime *rt, int32_t id) {
  return jt_storage(rt, id) != JT_CONST || jt_all_finite(rt, id);
}

jt_status jt_want_multiplier(const jt_runtime *rt, int32_t id, uint32_t rank) {
  const jt_status s = jt_want(rt, id, JT_DTYPE_F32, rank);
  if (s != JT_OK) return s;
  if (jt_storage(rt, id) != JT_CONST) return JT_E_DTYPE;
  return jt_all_finite(rt, id) ? JT_OK : JT_E_ATTR;
}

int jt_m_mode_of(const jt_runtime *rt, int32_t m, int32_t g, uint32_t *mode) {
  const uint32_t mr = jt_rank(rt, m), gr = jt_rank(rt, g);
  if (mr == 0u) {
    *mode = JT_M_SCALAR;
  } else if (mr == 1u && gr >= 1u && jt_dim(rt, m, 0) == jt_dim(rt, g, gr - 1u)) {
    *mode = JT_M_CHANNEL;
  } else if (mr == 2u && gr == 4u && jt_dim(rt, m, 0) == jt_dim(rt, g, 1) &&
             jt_dim(rt, m, 1) == jt_dim(rt, g, 2)) {
    *mode = JT_M_POSITION;
  } else {
    return 0;
  }
  return 1;
}

jt_status jt_want_m_mode(const jt_runtime *rt, int32_t m, int32_t g, uint32_t *mode) {
  if (jt_t(rt, m)->dtype != JT_DTYPE_F32) return JT_E_DTYPE;
  if (!jt_m_mode_of(rt, m, g, mode)) return JT_E_SHAPE;
  return jt_finite_if_const(rt, m) ? JT_OK : JT_E_ATTR;
}

/* --- window geometry ---------------------------------------------------------------------- */

int64_t jt_out_size(uint32_t size, int32_t k, int32_t stride, int32_t pad0, int32_t pad1) {
  if (k < 1 || stride < 1 || pad0 < 0 || pad1 < 0) return -1;
  const int64_t span = (int64_t)size + pad0 + pad1 - k;
  return span < 0 ? -1 : span / stride + 1;
}

jt_status jt_want_window(uint32_t size, int64_t k, int32_t stride, int32_t pad0, int32_t pad1,
                         uint32_t *out) {
  const int64_t padded = (int64_t)size + pad0 + pad1;  /* each term < 2**32: exact */
  /* A pad may hold a whole window (a conv's explicit padding may), never more than the
   * input and a window: so a reader padding the input allocates at most a few times it. */
  if (stride < 1 || pad0 < 0 || pad1 < 0 || padded > INT32_MAX || pad0 > size + k ||
      pad1 > size + k)
    return JT_E_ATTR;
  if (k < 1 || padded < k) return JT_E_SHAPE;
  /* k <= padded <= INT32_MAX here, so jt_out_size's int32 k is k itself */
  *out = (uint32_t)jt_out_size(size, (int32_t)k, stride, pad0, pad1);
  return JT_OK;
}

/* --- int8 dot products -------------------------------------------------------------------- */

int jt_reduction_ok(uint32_t kh, uint32_t kw, uint32_t len) {
  if (kh > JT_MAX_REDUCTION_S8 || kw > JT_MAX_REDUCTION_S8) return 0;
  const uint64_t taps = (uint64_t)kh * kw;  /* < 2**33 */
  if (taps > JT_MAX_REDUCTION_S8) return 0;
  return taps * (len > 0 ? len : 1u) <= JT_MAX_REDUCTION_S8;  /* < 2**49: no overflow */
}
