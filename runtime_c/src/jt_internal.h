/* Internal interface of the runtime: the blob's records, tensor access for the op
 * adapters, and the adapter / check prototypes of every opcode. Not part of the API. */
#ifndef JT_INTERNAL_H
#define JT_INTERNAL_H

#include <string.h>

#include "jaxtiny.h"
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

static inline float jt_f32_bits(int32_t bits) {
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

static inline float jt_attr_f32(const jt_op *op, uint32_t slot) {
  return jt_f32_bits(op->attr[slot]);
}

/* --- helpers for the per-op checks ------------------------------------------------------ */

/* Tensor `id` has this dtype (jt_dtype_fn) and rank. */
int jt_is(const jt_runtime *rt, int32_t id, uint32_t dtype, uint32_t rank);
/* Tensors a and b have the same shape. */
int jt_same_shape(const jt_runtime *rt, int32_t a, int32_t b);
/* Storage class of the tensor a chain of aliases ends at. */
uint32_t jt_storage(const jt_runtime *rt, int32_t id);
/* The int32 values of a constant channel list all lie in [0, bound) and ascend strictly. */
int jt_channels_ok(const jt_runtime *rt, int32_t id, uint32_t bound);
/* Output length of a window op, or -1 when the window does not fit:
 * floor((size + pad0 + pad1 - k) / stride) + 1, all in 64 bits. */
int64_t jt_out_size(uint32_t size, int32_t k, int32_t stride, int32_t pad0, int32_t pad1);

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
