/* Merged int8 weights: element lookup and binding to an op's operands (jt_weight_s8.h). */
#include "jt_weight_s8.h"

int32_t jt_sel_find(const int32_t *sel, uint32_t n, uint32_t v) {
  uint32_t lo = 0, hi = n;
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo) / 2u;
    if ((uint32_t)sel[mid] < v) lo = mid + 1u;
    else hi = mid;
  }
  return (lo < n && (uint32_t)sel[lo] == v) ? (int32_t)lo : -1;
}

int8_t jt_weight_s8_at(const jt_weight_s8 *w, uint32_t flat) {
  if (w->w_sel == NULL) return w->w[flat];
  uint32_t inner = 1;
  for (uint32_t k = w->axis + 1; k < w->rank; k++) inner *= w->dims[k];
  const uint32_t a = (flat / inner) % w->dims[w->axis];
  const uint32_t outer = flat / inner / w->dims[w->axis];
  const int32_t at = jt_sel_find(w->sel, w->n_sel, a);
  if (at < 0) return w->w[flat];
  return w->w_sel[(outer * w->n_sel + (uint32_t)at) * inner + flat % inner];
}

void jt_weight_s8_run_f32(const jt_weight_s8 *w, uint32_t flat, uint32_t n, float *out) {
  uint32_t i;
  if (w->w_sel == NULL) {
    for (i = 0; i < n; i++) out[i] = (float)w->w[flat + i];
    return;
  }
  const uint32_t inner = w->dims[w->rank - 1], j0 = flat % inner, row = flat / inner;
  if (w->axis + 1 != w->rank || j0 + n > inner) {
    for (i = 0; i < n; i++) out[i] = (float)jt_weight_s8_at(w, flat + i);
    return;
  }
  /* a run inside one row merged along it: the row's trained elements replace theirs */
  for (i = 0; i < n; i++) out[i] = (float)w->w[flat + i];
  for (uint32_t k = 0; k < w->n_sel; k++) {
    const uint32_t j = (uint32_t)w->sel[k];
    if (j >= j0 && j < j0 + n) out[j - j0] = (float)w->w_sel[row * w->n_sel + k];
  }
}

/* sel_axis in [-rank, rank) as an axis in [0, rank). */
static uint32_t axis_of(int32_t sel_axis, uint32_t rank) {
  return (uint32_t)(sel_axis < 0 ? sel_axis + (int32_t)rank : sel_axis);
}

void jt_weight_fill(const jt_runtime *rt, int32_t w_id, int has_sel, int32_t w_sel_id,
                    int32_t sel_id, int32_t sel_axis, uint32_t rank, jt_weight_s8 *out) {
  out->w = (const int8_t *)jt_data(rt, w_id);
  out->w_sel = NULL;
  out->sel = NULL;
  out->n_sel = 0;
  out->axis = 0;
  out->rank = rank;
  for (uint32_t k = 0; k < 4u; k++) out->dims[k] = k < rank ? jt_dim(rt, w_id, k) : 1u;
  if (!has_sel) return;
  out->w_sel = (const int8_t *)jt_data(rt, w_sel_id);
  out->sel = (const int32_t *)jt_data(rt, sel_id);
  out->n_sel = jt_dim(rt, sel_id, 0);
  out->axis = axis_of(sel_axis, rank);
}

jt_status jt_weight_bind(const jt_runtime *rt, int32_t w_id, int has_sel, int32_t w_sel_id,
                         int32_t sel_id, int32_t sel_axis, uint32_t rank, jt_weight_s8 *out) {
  jt_status s;
  if (rank > 4u) return JT_E_SHAPE;
  if ((s = jt_want(rt, w_id, JT_DTYPE_I8, rank)) != JT_OK) return s;
  if (has_sel) {
    if ((s = jt_want(rt, w_sel_id, JT_DTYPE_I8, rank)) != JT_OK) return s;
    if ((s = jt_want(rt, sel_id, JT_DTYPE_I32, 1)) != JT_OK) return s;
    if (jt_storage(rt, sel_id) != JT_CONST) return JT_E_DTYPE;
    if (sel_axis < -(int32_t)rank || sel_axis >= (int32_t)rank) return JT_E_ATTR;
    const uint32_t axis = axis_of(sel_axis, rank);
    for (uint32_t k = 0; k < rank; k++) {
      const uint32_t want = k == axis ? jt_dim(rt, sel_id, 0) : jt_dim(rt, w_id, k);
      if (jt_dim(rt, w_sel_id, k) != want) return JT_E_SHAPE;
    }
    if (!jt_channels_ok(rt, sel_id, jt_dim(rt, w_id, axis))) return JT_E_ATTR;
  }
  jt_weight_fill(rt, w_id, has_sel, w_sel_id, sel_id, sel_axis, rank, out);
  return JT_OK;
}

jt_status jt_weight_operands(const jt_runtime *rt, const jt_op *op, uint32_t w_index,
                             uint32_t sel_index, uint32_t n_plain, uint32_t slot,
                             uint32_t rank, jt_weight_s8 *out) {
  const int32_t present = op->attr[slot];
  if (present != 0 && present != 1) return JT_E_ATTR;
  if (op->n_in != (present ? n_plain + 2u : n_plain)) return JT_E_OPERANDS;
  return jt_weight_bind(rt, op->in[w_index], present, present ? op->in[sel_index] : -1,
                        present ? op->in[sel_index + 1u] : -1, op->attr[slot + 1u], rank, out);
}

void jt_weight_operands_fill(const jt_runtime *rt, const jt_op *op, uint32_t w_index,
                             uint32_t sel_index, uint32_t slot, uint32_t rank,
                             jt_weight_s8 *out) {
  const int present = op->attr[slot] != 0;
  jt_weight_fill(rt, op->in[w_index], present, present ? op->in[sel_index] : -1,
                 present ? op->in[sel_index + 1u] : -1, op->attr[slot + 1u], rank, out);
}
