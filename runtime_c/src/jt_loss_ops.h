/* The loss's small ops (opcodes cast .. scatter_add_last): elementwise float32 / int32 /
 * uint32 / bool arithmetic, reductions, broadcasts, iota and the label pick, as
 * lowering/executor.py defines them (its "small ops of the loss" section).
 *
 * Layouts: every tensor row-major, dims[0] slowest; rank <= JT_MAX_RANK. Storage per
 * dtype (jt_dtype_fn): i8 int8_t, i32 int32_t, f32 float, u32 uint32_t, bool one byte
 * (read: nonzero = true; written: 0 or 1). `bit` never appears here.
 *
 * Values (the executor's definitions, where numpy or C would be ill-defined):
 * - float math: jt_math.h (our own exp/log/...; pow is C99 powf's special cases);
 *   max/min propagate NaN and order -0 < +0; sign keeps +-0 and NaN.
 * - int32 / uint32 add, sub, mul, neg, abs: wrap around (two's complement);
 *   div truncates toward zero, x / 0 = -1 (all bits set, also for uint32),
 *   INT32_MIN / -1 = INT32_MIN; not / and / or on integers are bitwise.
 * - cast: float -> int truncates toward zero and saturates, NaN -> 0; int -> narrower or
 *   other-signed int wraps; any -> bool is != 0; bool -> any is 0 / 1; int -> float rounds
 *   to nearest even.
 * - reduce sum of float32: one running sum per output element over the reduced elements
 *   in row-major order, starting from the first term (an empty sum is +0); integer sums
 *   wrap; an empty max / min is -inf / +inf (INT32_MIN / INT32_MAX, 0 / UINT32_MAX).
 * - take_last out of range: NaN (f32), INT32_MIN (i32), UINT32_MAX (u32), -128 (i8),
 *   true (bool): JAX's fill values; scatter_add_last out of range: y = x.
 * Outputs never alias inputs (none of these ops is in the planner's IN_PLACE).
 */
#ifndef JT_LOSS_OPS_H
#define JT_LOSS_OPS_H

#include <stdint.h>

#include "jaxtiny.h"

/* Bytes of one element of a dtype (jt_dtype_fn), 0 for bit or an unknown one. */
uint32_t jt_dtype_size(uint32_t dtype);

/* y[i] = x[i] converted from x_dtype to y_dtype, i < n. */
jt_status jt_cast(const void *x, uint32_t x_dtype, void *y, uint32_t y_dtype, uint32_t n);

/* Elementwise jt_unary_fn. f32: every fn but not; is_finite writes bool bytes into y,
 * the others float32. i32 / u32: neg, abs, sign, not. bool: not. JT_E_ATTR otherwise. */
jt_status jt_unary_f32(const float *x, void *y, uint32_t n, uint32_t fn);
jt_status jt_unary_i32(const int32_t *x, int32_t *y, uint32_t n, uint32_t fn);
jt_status jt_unary_u32(const uint32_t *x, uint32_t *y, uint32_t n, uint32_t fn);
jt_status jt_unary_bool(const uint8_t *x, uint8_t *y, uint32_t n, uint32_t fn);

/* y[i] = fn(a[i * sa], b[i * sb]), i < n; sa, sb are 1, or 0 for a scalar operand.
 * Comparisons (lt .. ne) write bool bytes, the rest the operands' type.
 * f32: all but and / or. i32 / u32: all but pow. bool: comparisons, and, or. */
jt_status jt_binary_f32(const float *a, uint32_t sa, const float *b, uint32_t sb, void *y,
                        uint32_t n, uint32_t fn);
jt_status jt_binary_i32(const int32_t *a, uint32_t sa, const int32_t *b, uint32_t sb, void *y,
                        uint32_t n, uint32_t fn);
jt_status jt_binary_u32(const uint32_t *a, uint32_t sa, const uint32_t *b, uint32_t sb,
                        void *y, uint32_t n, uint32_t fn);
jt_status jt_binary_bool(const uint8_t *a, uint32_t sa, const uint8_t *b, uint32_t sb,
                         uint8_t *y, uint32_t n, uint32_t fn);

/* y[i] = pred[i * sp] ? b[i] : a[i] (sp 1, or 0 for a scalar pred), elements of
 * elem_size bytes (1 or 4). */
jt_status jt_select(const uint8_t *pred, uint32_t sp, const void *a, const void *b, void *y,
                    uint32_t n, uint32_t elem_size);

/* Reduce x (dims[rank]) over the axes whose bit is set in axes_mask (fn: jt_reduce_fn);
 * y holds the kept axes in order (row-major). dtype: JT_DTYPE_F32, _I32 or _U32. */
jt_status jt_reduce(const void *x, const uint32_t *dims, uint32_t rank, uint32_t axes_mask,
                    void *y, uint32_t dtype, uint32_t fn);

/* broadcast_in_dim: x (x_dims[x_rank]) axis i is y's axis map[i] (strictly increasing;
 * x_dims[i] is y_dims[map[i]] or 1); elements of elem_size bytes (1 or 4). */
jt_status jt_broadcast(const void *x, const uint32_t *x_dims, uint32_t x_rank,
                       const int32_t *map, void *y, const uint32_t *y_dims, uint32_t y_rank,
                       uint32_t elem_size);

/* y[..., j along axis, ...] = j; dtype JT_DTYPE_I32, _U32 or _F32. */
jt_status jt_iota(void *y, const uint32_t *dims, uint32_t rank, uint32_t axis, uint32_t dtype);

/* y[r] = x[r * last + idx] for r < rows, or the dtype's fill value when idx is outside
 * [0, last). Any dtype but bit. */
jt_status jt_take_last(const void *x, uint32_t rows, uint32_t last, int32_t idx, void *y,
                       uint32_t dtype);

/* y = x; y[r * last + idx] += v[r] when idx lies in [0, last). f32, i32 (wraps), u32. */
jt_status jt_scatter_add_last(const void *x, uint32_t rows, uint32_t last, int32_t idx,
                              const void *v, void *y, uint32_t dtype);

#endif
