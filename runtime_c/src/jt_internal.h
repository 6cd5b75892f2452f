/* Internal interface of the runtime: the blob's records, tensor access for the op
 * adapters, and the adapter / check prototypes of every opcode. Not part of the API. */
#ifndef JT_INTERNAL_H
#define JT_INTERNAL_H

#include <string.h>

#include "jaxtiny.h"
#include "jt_math.h"
#include "jt_opcodes.h"
#include "jt_rules.h"

/* Storage classes of a tensor record (docs/blob.md). */
enum { JT_CONST = 0, JT_STATE = 1, JT_IO = 2, JT_ARENA = 3 };

/* A tensor record (44 bytes, docs/blob.md), read in place from the 4-aligned blob. */
typedef struct {
  uint8_t dtype, storage, rank, reserved;
  uint32_t dims[JT_MAX_RANK];
  int32_t alias;
  uint32_t nbytes;
  int32_t location;
  uint32_t name;
} jt_tensor_rec;

/* An op record (24 bytes). */
typedef struct {
  uint32_t opcode, operand_start, operand_count, inputs, attr_start, attr_count;
} jt_op_rec;

/* An op as the adapters see it: operand tensor ids and attribute slots, in the blob. */
typedef struct {
  uint32_t opcode;
  const int32_t *in;   /* n_in input tensor ids */
  const int32_t *out;  /* n_out output tensor ids */
  uint32_t n_in, n_out;
  const int32_t *attr; /* n_attr int32 slots, laid out as the generated header says */
  uint32_t n_attr;
  int32_t index;       /* position in its op list (for error reports) */
} jt_op;

typedef jt_status (*jt_op_fn)(jt_runtime *rt, const jt_op *op);
typedef jt_status (*jt_check_fn)(const jt_runtime *rt, const jt_op *op);

/* --- tensor access (valid after verification) ------------------------------------------ */

static inline const jt_tensor_rec *jt_t(const jt_runtime *rt, int32_t id) {
  return (const jt_tensor_rec *)(const void *)(rt->tensors + (uint32_t)id * 44u);
}

/* The tensor a chain of aliases ends at. */
static inline int32_t jt_base(const jt_runtime *rt, int32_t id) {
  while (jt_t(rt, id)->alias >= 0) id = jt_t(rt, id)->alias;
  return id;
}

/* The bytes of tensor `id` (aliases resolved): in the blob (const), the state buffer, the
 * arena, or the current call's io buffer. */
void *jt_data(const jt_runtime *rt, int32_t id);

static inline uint32_t jt_dim(const jt_runtime *rt, int32_t id, uint32_t k) {
  return jt_t(rt, id)->dims[k];
}

static inline uint32_t jt_rank(const jt_runtime *rt, int32_t id) { return jt_t(rt, id)->rank; }

/* Elements of a tensor (the verifier bounds the product: it fits in 32 bits). */
uint32_t jt_numel(const jt_runtime *rt, int32_t id);

/* An int32 attribute slot's bits as float32. */
static inline float jt_f32_bits(int32_t bits) { return jt_ffrom((uint32_t)bits); }

static inline float jt_attr_f32(const jt_op *op, uint32_t slot) {
  return jt_f32_bits(op->attr[slot]);
}

/* Storage class of the tensor a chain of aliases ends at. */
uint32_t jt_storage(const jt_runtime *rt, int32_t id);

/* --- helpers for the per-op checks (jt_check.c) -----------------------------------------
 * One copy each, shared by every family's jt_check_<name>. Status convention: JT_E_DTYPE
 * for a dtype or storage class, JT_E_SHAPE for a rank or dims, JT_E_ATTR for an attribute
 * value (or a constant's values), JT_E_OPERANDS for operand presence, count or wiring. */

/* Tensor `id` has this dtype (jt_dtype_fn) and rank. */
int jt_is(const jt_runtime *rt, int32_t id, uint32_t dtype, uint32_t rank);
/* The same as a status: JT_OK, else JT_E_DTYPE for the dtype, JT_E_SHAPE for the rank. */
jt_status jt_want(const jt_runtime *rt, int32_t id, uint32_t dtype, uint32_t rank);
/* Tensors a and b have the same shape. */
int jt_same_shape(const jt_runtime *rt, int32_t a, int32_t b);
/* Tensors a and b are the same bytes (one a view of the other, or both of one base): the
 * memory plan never overlaps distinct live buffers, so this is the only aliasing there is. */
int jt_same_buffer(const jt_runtime *rt, int32_t a, int32_t b);

/* An int8 value (a zero point, a clamp bound). */
static inline int jt_is_i8(int32_t v) { return v >= -128 && v <= 127; }
/* A clamp: int8 bounds with lo <= hi. */
static inline int jt_clamp_ok(int32_t lo, int32_t hi) {
  return jt_is_i8(lo) && jt_is_i8(hi) && lo <= hi;
}
/* A requantization's output: an int8 zero point and a clamp. */
static inline int jt_requant_ok(int32_t y_zero, int32_t lo, int32_t hi) {
  return jt_is_i8(y_zero) && jt_clamp_ok(lo, hi);
}

/* n int32 values in [0, bound), strictly ascending (a channel list, tensor or attribute). */
int jt_ascending_below(const int32_t *v, uint32_t n, uint32_t bound);
/* A constant int32 channel list (rank 1) whose values jt_ascending_below accepts. */
int jt_channels_ok(const jt_runtime *rt, int32_t id, uint32_t bound);

/* Every value of the constant float32 tensor `id` is finite (the reference refuses other
 * multipliers, and a NaN must never reach a float->int conversion). */
int jt_all_finite(const jt_runtime *rt, int32_t id);
/* A float32 tensor that is constant holds only finite values; other storage cannot be
 * checked at init and passes. */
int jt_finite_if_const(const jt_runtime *rt, int32_t id);
/* A forward multiplier: constant float32 of this rank, every value finite. JT_E_DTYPE
 * (dtype, or not constant), JT_E_SHAPE (rank) or JT_E_ATTR (a non-finite value). */
jt_status jt_want_multiplier(const jt_runtime *rt, int32_t id, uint32_t rank);
/* How backward multiplier m broadcasts over gradient g (jt_m_mode, jt_eltwise_bw_f32.h), as
 * the reference's _bw_multiplier accepts it: rank 0 a scalar; rank 1 of g's last-axis
 * length; rank 2 (h, w) of an NHWC g. 0 when it does not broadcast. The adapters call it on
 * verified operands. */
int jt_m_mode_of(const jt_runtime *rt, int32_t m, int32_t g, uint32_t *mode);
/* The same as a check: JT_E_DTYPE unless float32, JT_E_SHAPE when it does not broadcast,
 * JT_E_ATTR for a non-finite constant. */
jt_status jt_want_m_mode(const jt_runtime *rt, int32_t m, int32_t g, uint32_t *mode);

/* Output length of a window op, or -1 when the parameters are out of range (k, stride < 1,
 * a pad < 0) or the window does not fit: floor((size + pad0 + pad1 - k) / stride) + 1, all
 * in 64 bits. */
int64_t jt_out_size(uint32_t size, int32_t k, int32_t stride, int32_t pad0, int32_t pad1);
/* One axis of a window op, checked: JT_E_ATTR unless stride >= 1, pads >= 0 and
 * size + pad0 + pad1 <= INT32_MAX (so every padded coordinate a kernel forms fits int32);
 * JT_E_SHAPE unless k >= 1 and the window fits; else JT_OK and *out = jt_out_size >= 1.
 * k comes from a weight's dims or an attribute (callers check an attribute k >= 1 first:
 * an attribute out of range is JT_E_ATTR). */
jt_status jt_want_window(uint32_t size, int64_t k, int32_t stride, int32_t pad0, int32_t pad1,
                         uint32_t *out);

/* Largest reduction length kh * kw * I of an int8 dot product whose sum is exact in int32
 * for any int8 weight: INT32_MAX / (255 * 128). (The reference's bound uses 127, the weight
 * range the quantizer produces; a state weight is not guaranteed to avoid -128.) */
#define JT_MAX_REDUCTION_S8 65793u
/* kh * kw * max(len, 1) <= JT_MAX_REDUCTION_S8, without overflow. */
int jt_reduction_ok(uint32_t kh, uint32_t kw, uint32_t len);

/* --- the opcodes: one adapter (runs the op) and one check (its rule) each ---------------- */
#define JT_DECLARE_OP(name, NAME) \
  jt_status jt_op_##name(jt_runtime *rt, const jt_op *op); \
  jt_status jt_check_##name(const jt_runtime *rt, const jt_op *op);
JT_FOR_EACH_OP(JT_DECLARE_OP)
#undef JT_DECLARE_OP

/* Dispatch tables indexed by opcode (jt_dispatch.c); NULL for unused ids. */
extern const jt_op_fn jt_op_table[JT_LAST_OPCODE + 1];
extern const jt_check_fn jt_check_table[JT_LAST_OPCODE + 1];

#endif
