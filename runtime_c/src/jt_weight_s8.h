/* An int8 weight that may be "merged" (a sparsely trained layer, kernels.merge_channels):
 * the frozen full weight w with its entries at index sel[k] of axis `axis` replaced by
 * w_sel[..., k, ...] (w_sel has w's dims with dims[axis] = n_sel). No merged copy is made:
 * the kernels read each element from w or w_sel. One type for the forward and the backward
 * kernels; two access patterns over it:
 *   a whole row along the innermost axis: the full row's dot product plus a correction
 *   over the list (jt_conv_s8.c);
 *   any other element finds its channel by binary search (jt_sel_find), once per row in
 *   the forward kernels, per element in jt_weight_s8_at (the backward ones).
 */
#ifndef JT_WEIGHT_S8_H
#define JT_WEIGHT_S8_H

#include <stdint.h>

#include "jt_internal.h"

/* Layout shared with ctypes callers (tests). The forward kernels (jt_conv2d_s8,
 * jt_dense_s8) read w .. axis only, taking the dims as their own argument; rank and dims
 * serve jt_weight_s8_at. */
typedef struct {
  const int8_t *w;      /* the full (frozen) weight, dims[0..rank) */
  const int8_t *w_sel;  /* NULL: w is the whole weight; else the trained part */
  const int32_t *sel;   /* n_sel indices along axis, in [0, dims[axis]), strictly ascending */
  uint32_t n_sel;
  uint32_t axis;        /* in [0, rank): conv 0..3 of OHWI, dense 0..1 of (O, K) */
  uint32_t rank;        /* <= 4 */
  uint32_t dims[4];     /* w's dims, 1 past rank */
} jt_weight_s8;

/* Position of v in the strictly ascending list sel[0..n), or -1. */
int32_t jt_sel_find(const int32_t *sel, uint32_t n, uint32_t v);

/* The weight's element at flat row-major index `flat` (of w's shape). */
int8_t jt_weight_s8_at(const jt_weight_s8 *w, uint32_t flat);

/* out[i] = (float)element flat + i, i < n: a run of the backward kernels' weights as
 * floats (straight from w when it is not merged). */
void jt_weight_s8_run_f32(const jt_weight_s8 *w, uint32_t flat, uint32_t n, float *out);

/* --- binding an op's weight operands (runtime side) ---------------------------------------
 * Weight w_id of rank <= 4, merged with w_sel_id / sel_id along sel_axis (numpy style, may
 * be negative) when has_sel. */

/* *out describes it; no checks (the adapters' part, on verified operands). */
void jt_weight_fill(const jt_runtime *rt, int32_t w_id, int has_sel, int32_t w_sel_id,
                    int32_t sel_id, int32_t sel_axis, uint32_t rank, jt_weight_s8 *out);
/* The check, then the fill: int8 weights of this rank, w_sel shaped like w but for n_sel
 * along the axis, sel a constant int32 list of n_sel channels in range and strictly
 * ascending, the axis in [-rank, rank). JT_E_DTYPE, JT_E_SHAPE or JT_E_ATTR otherwise. */
jt_status jt_weight_bind(const jt_runtime *rt, int32_t w_id, int has_sel, int32_t w_sel_id,
                         int32_t sel_id, int32_t sel_axis, uint32_t rank, jt_weight_s8 *out);

/* The weight operands of an op: input w_index is the weight; inputs sel_index and
 * sel_index + 1 are w_sel and sel, present exactly when attribute slot `slot` is 1 (the
 * op then has n_plain + 2 inputs, else n_plain), merged along the axis in slot + 1.
 * JT_E_ATTR for a presence slot not 0 or 1, JT_E_OPERANDS for another input count, then
 * jt_weight_bind's refusals. */
jt_status jt_weight_operands(const jt_runtime *rt, const jt_op *op, uint32_t w_index,
                             uint32_t sel_index, uint32_t n_plain, uint32_t slot,
                             uint32_t rank, jt_weight_s8 *out);
/* The adapters' part (verified operands): jt_weight_fill of the same operands. */
void jt_weight_operands_fill(const jt_runtime *rt, const jt_op *op, uint32_t w_index,
                             uint32_t sel_index, uint32_t slot, uint32_t rank,
                             jt_weight_s8 *out);

#endif
