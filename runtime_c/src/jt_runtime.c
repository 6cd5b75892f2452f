/* Load and verify a blob once (docs/blob.md), then run its op lists without checks. */
#include "jt_internal.h"
#include "jt_math.h"

/* Header layout (docs/blob.md, lowering/blob.py HEADER_FIELDS). */
enum {
  H_MAGIC = 0, H_SENTINEL = 4, H_VERSION = 8, H_HEADER_SIZE = 12, H_BLOB_SIZE = 16, H_CRC = 20,
  H_SECTIONS = 24, H_COUNTS = 80, H_ARENA = 100, H_STATE = 104, H_IO = 108, H_OPTIMIZER = 124,
  H_SCHEDULE = 128, H_STEPS = 132, H_FLOATS = 136, H_ROUNDING = 184, H_SEED = 188, H_NAME = 192,
  H_QUANT = 196, HEADER_SIZE = 212
};
enum { S_TENSORS, S_TRAIN, S_INFER, S_OPERANDS, S_ATTRS, S_STRINGS, S_CONSTS, N_SECTIONS };
#define BLOB_VERSION 2u
#define SENTINEL 0x01020304u
#define TENSOR_BYTES 44u
#define OP_BYTES 24u
static const uint32_t record_bytes[5] = {TENSOR_BYTES, OP_BYTES, OP_BYTES, 4u, 4u};
static const uint8_t item_bytes[6] = {1, 4, 4, 0, 1, 4}; /* i8 i32 f32 bit bool u32 */

static uint32_t rd32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

static double rd64f(const uint8_t *p) {
  double v;
  memcpy(&v, p, 8);
  return v;
}

static jt_status fail(jt_runtime *rt, jt_status s, uint32_t where, uint32_t index) {
  rt->error_where = where;
  rt->error_index = (int32_t)index;
  return s;
}

uint32_t jt_numel(const jt_runtime *rt, int32_t id) {
  const jt_tensor_rec *t = jt_t(rt, id);
  uint32_t n = 1;
  for (uint32_t k = 0; k < t->rank; k++) n *= t->dims[k];
  return n;
}

void *jt_data(const jt_runtime *rt, int32_t id) {
  id = jt_base(rt, id);
  const jt_tensor_rec *t = jt_t(rt, id);
  switch (t->storage) {
    case JT_CONST: return (void *)(uintptr_t)(rt->consts + t->location);
    case JT_STATE: return rt->state + t->location;
    case JT_ARENA: return rt->arena + t->location;
    default: break;
  }
  if (id == rt->io_input) return (void *)(uintptr_t)rt->in_input;
  if (id == rt->io_label) return (void *)(uintptr_t)&rt->in_label;
  if (id == rt->io_loss) return (void *)(uintptr_t)&rt->out_loss;
  return rt->out_logits;
}

uint32_t jt_storage(const jt_runtime *rt, int32_t id) { return jt_t(rt, jt_base(rt, id))->storage; }

/* --- header and sections ------------------------------------------------------------------ */

static uint32_t blob_crc(const uint8_t *b, uint32_t len) {
  static const uint8_t zero[4] = {0, 0, 0, 0};
  uint32_t c = jt_crc32(0, b, H_CRC);
  c = jt_crc32(c, zero, 4);
  return jt_crc32(c, b + H_CRC + 4, len - H_CRC - 4u);
}

uint32_t jt_arena_size(const void *blob, size_t blob_len) {
  const uint8_t *b = (const uint8_t *)blob;
  if (b == NULL || blob_len < HEADER_SIZE || memcmp(b, "JTB1", 4) != 0) return 0;
  /* The verifier keeps two u32 per tensor in the arena while it checks the plan. */
  uint32_t arena = rd32(b + H_ARENA), n = rd32(b + H_COUNTS);
  uint64_t scratch = 8ull * n;
  if (scratch > JT_MAX_BUFFER_BYTES || arena > JT_MAX_BUFFER_BYTES) return 0;
  return arena > scratch ? arena : (uint32_t)scratch;
}

uint32_t jt_state_size(const void *blob, size_t blob_len) {
  const uint8_t *b = (const uint8_t *)blob;
  if (b == NULL || blob_len < HEADER_SIZE || memcmp(b, "JTB1", 4) != 0) return 0;
  /* no caller should allocate what jt_init refuses anyway */
  return rd32(b + H_STATE) > JT_MAX_BUFFER_BYTES ? 0 : rd32(b + H_STATE);
}

static jt_status check_header(jt_runtime *rt, const uint8_t *b, size_t len) {
  if (len < 4 || memcmp(b, "JTB1", 4) != 0) return fail(rt, JT_E_MAGIC, JT_WHERE_HEADER, H_MAGIC);
  if (len < HEADER_SIZE) return fail(rt, JT_E_TRUNCATED, JT_WHERE_HEADER, H_BLOB_SIZE);
  if (rd32(b + H_SENTINEL) != SENTINEL)
    return fail(rt, JT_E_BYTE_ORDER, JT_WHERE_HEADER, H_SENTINEL);
  if (rd32(b + H_VERSION) != BLOB_VERSION)
    return fail(rt, JT_E_VERSION, JT_WHERE_HEADER, H_VERSION);
  if (rd32(b + H_HEADER_SIZE) != HEADER_SIZE)
    return fail(rt, JT_E_VERSION, JT_WHERE_HEADER, H_HEADER_SIZE);
  if (len > 0xffffffffu || rd32(b + H_BLOB_SIZE) != len)
    return fail(rt, JT_E_TRUNCATED, JT_WHERE_HEADER, H_BLOB_SIZE);
  rt->blob_crc = rd32(b + H_CRC);
  if (blob_crc(b, (uint32_t)len) != rt->blob_crc) return fail(rt, JT_E_CRC, JT_WHERE_HEADER, H_CRC);
  return JT_OK;
}

static jt_status check_sections(jt_runtime *rt, const uint8_t *b, uint32_t len) {
  uint32_t off[N_SECTIONS], size[N_SECTIONS];
  for (uint32_t s = 0; s < N_SECTIONS; s++) {
    off[s] = rd32(b + H_SECTIONS + 8 * s);
    size[s] = rd32(b + H_SECTIONS + 8 * s + 4);
    if (off[s] % JT_ALIGN || size[s] % JT_ALIGN || off[s] < HEADER_SIZE ||
        (uint64_t)off[s] + size[s] > len)
      return fail(rt, JT_E_SECTION, JT_WHERE_SECTION, s);
    if (s < 5 && (uint64_t)rd32(b + H_COUNTS + 4 * s) * record_bytes[s] != size[s])
      return fail(rt, JT_E_SECTION, JT_WHERE_SECTION, s);
  }
  for (uint32_t s = 0; s < N_SECTIONS; s++)
    for (uint32_t t = s + 1; t < N_SECTIONS; t++)
      if (off[s] < off[t] + size[t] && off[t] < off[s] + size[s] && size[s] && size[t])
        return fail(rt, JT_E_SECTION, JT_WHERE_SECTION, t);
  rt->tensors = b + off[S_TENSORS];
  rt->train_ops = b + off[S_TRAIN];
  rt->infer_ops = b + off[S_INFER];
  rt->operands = (const int32_t *)(const void *)(b + off[S_OPERANDS]);
  rt->attrs = (const int32_t *)(const void *)(b + off[S_ATTRS]);
  rt->strings = b + off[S_STRINGS];
  rt->strings_len = size[S_STRINGS];
  rt->consts = b + off[S_CONSTS];
  rt->consts_len = size[S_CONSTS];
  rt->n_tensors = rd32(b + H_COUNTS);
  rt->n_train_ops = rd32(b + H_COUNTS + 4);
  rt->n_infer_ops = rd32(b + H_COUNTS + 8);
  rt->n_operands = rd32(b + H_COUNTS + 12);
  rt->n_attrs = rd32(b + H_COUNTS + 16);
  return JT_OK;
}

/* A NUL-terminated UTF-8 string at `off` in the string table (as Python decodes it). */
static int string_ok(const jt_runtime *rt, uint32_t off) {
  const uint8_t *s = rt->strings;
  uint32_t n = rt->strings_len, i = off;
  while (i < n && s[i] != 0) {
    uint8_t c = s[i];
    uint32_t more, cp;
    if (c < 0x80) { i++; continue; }
    if (c >= 0xc2 && c <= 0xdf) { more = 1; cp = c & 0x1fu; }
    else if (c >= 0xe0 && c <= 0xef) { more = 2; cp = c & 0x0fu; }
    else if (c >= 0xf0 && c <= 0xf4) { more = 3; cp = c & 0x07u; }
    else return 0;
    if (i + more >= n) return 0;
    for (uint32_t k = 1; k <= more; k++) {
      if ((s[i + k] & 0xc0u) != 0x80u) return 0;
      cp = (cp << 6) | (s[i + k] & 0x3fu);
    }
    if ((more == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (more == 3 && (cp < 0x10000 || cp > 0x10ffff)))
      return 0;
    i += more + 1;
  }
  return i < n;
}

static uint32_t buffer_size(uint32_t nbytes) {
  return ((nbytes ? nbytes : 1u) + JT_ALIGN - 1u) / JT_ALIGN * JT_ALIGN;
}

/* --- tensors ------------------------------------------------------------------------------ */

static jt_status check_tensor(jt_runtime *rt, uint32_t i) {
  const jt_tensor_rec *t = jt_t(rt, (int32_t)i);
  if (t->dtype > JT_DTYPE_U32 || t->storage > JT_ARENA || t->rank > JT_MAX_RANK || t->reserved)
    return fail(rt, JT_E_TENSOR, JT_WHERE_TENSOR, i);
  /* The bound counts zero dims as 1 (lowering/blob.py MAX_ELEMENTS): an empty tensor with a
   * huge dim would still make shape arithmetic (and numpy) overflow. */
  uint64_t elements = 1, bound = 1;
  for (uint32_t k = 0; k < JT_MAX_RANK; k++) {
    if (k >= t->rank) {
      if (t->dims[k]) return fail(rt, JT_E_TENSOR, JT_WHERE_TENSOR, i);
      continue;
    }
    bound *= t->dims[k] ? t->dims[k] : 1u;
    if (bound > 0x7fffffffu) return fail(rt, JT_E_TENSOR, JT_WHERE_TENSOR, i);
    elements *= t->dims[k];
  }
  uint64_t want = t->dtype == JT_DTYPE_BIT ? (elements + 7) / 8 : elements * item_bytes[t->dtype];
  if (want != t->nbytes) return fail(rt, JT_E_TENSOR, JT_WHERE_TENSOR, i);
  if (t->alias < -1 || t->alias >= (int64_t)rt->n_tensors || t->alias == (int32_t)i)
    return fail(rt, JT_E_ALIAS, JT_WHERE_TENSOR, i);
  if (t->alias >= 0 && (t->storage == JT_CONST || t->storage == JT_STATE || t->location != -1))
    return fail(rt, JT_E_ALIAS, JT_WHERE_TENSOR, i);
  uint64_t loc = (uint64_t)(int64_t)t->location;
  switch (t->storage) {
    case JT_CONST:
    case JT_STATE: {
      uint32_t end = t->storage == JT_STATE ? rt->state_bytes : rt->consts_len;
      if (t->location < 0 || loc % JT_ALIGN || loc + t->nbytes > end)
        return fail(rt, JT_E_TENSOR, JT_WHERE_TENSOR, i);
      if (t->dtype == JT_DTYPE_BOOL) {
        for (uint32_t k = 0; k < t->nbytes; k++)
          if (rt->consts[loc + k] > 1) return fail(rt, JT_E_TENSOR, JT_WHERE_TENSOR, i);
      }
      break;
    }
    case JT_IO:
      if (t->location != -1) return fail(rt, JT_E_TENSOR, JT_WHERE_TENSOR, i);
      break;
    default:
      if (t->location != -1 &&
          (t->location < 0 || loc % JT_ALIGN || loc + buffer_size(t->nbytes) > rt->arena_bytes))
        return fail(rt, JT_E_TENSOR, JT_WHERE_TENSOR, i);
  }
  if (!string_ok(rt, t->name)) return fail(rt, JT_E_TENSOR, JT_WHERE_TENSOR, i);
  return JT_OK;
}

/* Aliases: a short acyclic chain, every link of one dtype and size, ending at an io or
 * arena tensor of the alias's own storage class. */
static jt_status check_alias(jt_runtime *rt, uint32_t i) {
  const jt_tensor_rec *a = jt_t(rt, (int32_t)i);
  if (a->alias < 0) return JT_OK;
  const jt_tensor_rec *b = a;
  for (uint32_t depth = 0; b->alias >= 0; depth++) {
    const jt_tensor_rec *next = jt_t(rt, b->alias);
    if (depth >= JT_MAX_ALIAS_DEPTH || next->dtype != b->dtype || next->nbytes != b->nbytes)
      return fail(rt, JT_E_ALIAS, JT_WHERE_TENSOR, i);
    b = next;
  }
  if (b->storage != a->storage) return fail(rt, JT_E_ALIAS, JT_WHERE_TENSOR, i);
  return JT_OK;
}

static jt_status check_tensors(jt_runtime *rt) {
  jt_status s;
  uint32_t extent = 0;
  for (uint32_t i = 0; i < rt->n_tensors; i++) {
    if ((s = check_tensor(rt, i)) != JT_OK) return s;
    const jt_tensor_rec *t = jt_t(rt, (int32_t)i);
    if (t->storage == JT_ARENA && t->location >= 0) {
      uint32_t end = (uint32_t)t->location + buffer_size(t->nbytes);
      if (end > extent) extent = end;
    }
  }
  /* The plan's arena is exactly as large as its buffers reach: no unbounded request. */
  if (extent != rt->arena_bytes) return fail(rt, JT_E_PLAN, JT_WHERE_HEADER, H_ARENA);
  for (uint32_t i = 0; i < rt->n_tensors; i++)
    if ((s = check_alias(rt, i)) != JT_OK) return s;
  /* State tensors are written at run time: no two share a byte of the state image. */
  for (uint32_t i = 0; i < rt->n_tensors; i++) {
    const jt_tensor_rec *a = jt_t(rt, (int32_t)i);
    if (a->storage != JT_STATE || a->nbytes == 0) continue;
    for (uint32_t j = i + 1; j < rt->n_tensors; j++) {
      const jt_tensor_rec *b = jt_t(rt, (int32_t)j);
      if (b->storage != JT_STATE || b->nbytes == 0) continue;
      if ((uint32_t)a->location < (uint32_t)b->location + b->nbytes &&
          (uint32_t)b->location < (uint32_t)a->location + a->nbytes)
        return fail(rt, JT_E_TENSOR, JT_WHERE_TENSOR, j);
    }
  }
  return JT_OK;
}

static jt_status check_io(jt_runtime *rt, const uint8_t *b) {
  static const uint8_t dtypes[4] = {JT_DTYPE_I8, JT_DTYPE_I32, JT_DTYPE_F32, JT_DTYPE_I8};
  int32_t ids[4];
  for (uint32_t k = 0; k < 4; k++) {
    ids[k] = (int32_t)rd32(b + H_IO + 4 * k);
    if (ids[k] < 0 || (uint32_t)ids[k] >= rt->n_tensors)
      return fail(rt, JT_E_IO, JT_WHERE_HEADER, H_IO + 4 * k);
    const jt_tensor_rec *t = jt_t(rt, ids[k]);
    /* the caller's buffers are bounded like the arena (the host allocates them) */
    if (t->storage != JT_IO || t->alias >= 0 || t->dtype != dtypes[k] ||
        t->nbytes > JT_MAX_BUFFER_BYTES)
      return fail(rt, JT_E_IO, JT_WHERE_HEADER, H_IO + 4 * k);
    for (uint32_t j = 0; j < k; j++)
      if (ids[j] == ids[k]) return fail(rt, JT_E_IO, JT_WHERE_HEADER, H_IO + 4 * k);
  }
  rt->io_input = ids[0];
  rt->io_label = ids[1];
  rt->io_loss = ids[2];
  rt->io_logits = ids[3];
  const jt_tensor_rec *in = jt_t(rt, ids[0]), *out = jt_t(rt, ids[3]);
  /* batch 1: the input and the logits lead with an axis of 1 */
  if (in->rank < 1 || in->dims[0] != 1 || out->rank < 1 || out->dims[0] != 1 ||
      out->dims[out->rank - 1] < 1 || jt_numel(rt, ids[1]) != 1 || jt_numel(rt, ids[2]) != 1)
    return fail(rt, JT_E_IO, JT_WHERE_HEADER, H_IO);
  /* Every io tensor is one of the four or a view of one. */
  for (uint32_t i = 0; i < rt->n_tensors; i++) {
    if (jt_t(rt, (int32_t)i)->storage != JT_IO) continue;
    int32_t base = jt_base(rt, (int32_t)i);
    if (base != ids[0] && base != ids[1] && base != ids[2] && base != ids[3])
      return fail(rt, JT_E_IO, JT_WHERE_TENSOR, i);
  }
  return JT_OK;
}

static jt_status check_optimizer(jt_runtime *rt, const uint8_t *b) {
  rt->optimizer = rd32(b + H_OPTIMIZER);
  rt->schedule = rd32(b + H_SCHEDULE);
  rt->steps = rd32(b + H_STEPS);
  rt->rounding = rd32(b + H_ROUNDING);
  rt->seed = rd32(b + H_SEED);
  if (rt->optimizer > 1) return fail(rt, JT_E_HEADER, JT_WHERE_HEADER, H_OPTIMIZER);
  if (rt->schedule > 1 || (rt->schedule == 1 && rt->steps == 0))
    return fail(rt, JT_E_HEADER, JT_WHERE_HEADER, H_SCHEDULE);
  if (rt->rounding > 1) return fail(rt, JT_E_HEADER, JT_WHERE_HEADER, H_ROUNDING);
  double f[6];
  for (uint32_t k = 0; k < 6; k++) {
    f[k] = rd64f(b + H_FLOATS + 8 * k);
    /* finite and inside float32's range, so the conversions below are defined */
    if (!(f[k] >= -3.0e38 && f[k] <= 3.0e38))
      return fail(rt, JT_E_HEADER, JT_WHERE_HEADER, H_FLOATS + 8 * k);
  }
  rt->lr = (float)f[0];
  rt->final_lr = (float)f[1];
  /* float64 first, as the executor and the JAX step form the cosine's amplitude */
  rt->amplitude = (float)(0.5 * (f[0] - f[1]));
  rt->momentum = (float)f[2];
  /* the executor keeps a momentum slot when the float64 is not zero, this runtime when the
   * float32 is not: refuse a momentum on which they would disagree */
  if (f[2] != 0.0 && rt->momentum == 0.0f)
    return fail(rt, JT_E_HEADER, JT_WHERE_HEADER, H_FLOATS + 16);
  rt->b1 = (float)f[3];
  rt->b2 = (float)f[4];
  rt->eps = (float)f[5];
  if (!string_ok(rt, rd32(b + H_NAME))) return fail(rt, JT_E_HEADER, JT_WHERE_HEADER, H_NAME);
  return JT_OK;
}

/* The io quantization (input 1/scale and zero, output scale and zero): finite positive
 * float32 scales and int8 zeros, so jt_quantize_input's products and casts are defined. */
static jt_status check_quant(jt_runtime *rt, const uint8_t *b) {
  for (uint32_t k = 0; k < 2; k++) {
    const uint32_t at = H_QUANT + 8 * k;
    float scale = jt_ffrom(rd32(b + at));
    int32_t zero = (int32_t)rd32(b + at + 4);
    if (!jt_isfinitef(scale) || !(scale > 0.0f)) return fail(rt, JT_E_HEADER, JT_WHERE_HEADER, at);
    if (!jt_is_i8(zero)) return fail(rt, JT_E_HEADER, JT_WHERE_HEADER, at + 4);
    if (k == 0) {
      rt->in_inv_scale = scale;
      rt->in_zero = zero;
    } else {
      rt->out_scale = scale;
      rt->out_zero = zero;
    }
  }
  return JT_OK;
}

/* --- ops ---------------------------------------------------------------------------------- */

static void op_view(const jt_runtime *rt, const uint8_t *list, uint32_t i, jt_op *op) {
  const jt_op_rec *r = (const jt_op_rec *)(const void *)(list + i * OP_BYTES);
  op->opcode = r->opcode;
  op->in = rt->operands + r->operand_start;
  op->out = op->in + r->inputs;
  op->n_in = r->inputs;
  op->n_out = r->operand_count - r->inputs;
  op->attr = rt->attrs + r->attr_start;
  op->n_attr = r->attr_count;
  op->index = (int32_t)i;
}

/* Attribute slots against the generated schema (the decoding of lowering/blob.py). */
static int attrs_ok(const jt_op_rule *rule, const jt_op *op) {
  uint32_t pos = 0, n = op->n_attr;
  const int32_t *a = op->attr;
  for (uint32_t e = 0; e < rule->n_attrs; e++) {
    const jt_attr_rule *r = &rule->attrs[e];
    uint32_t count = 1;
    int present = 1;
    if (r->optional) {
      if (pos >= n || (a[pos] != 0 && a[pos] != 1)) return 0;
      present = a[pos++];
    } else if (r->kind >= JT_ATTR_ARRAY) {
      if (pos >= n) return 0;
      int32_t c = a[pos++];
      if (c == -1 && r->kind == JT_ATTR_OPT_ARRAY) continue;
      if (c < 0) return 0;
      count = (uint32_t)c;
    }
    if ((uint64_t)count * r->slots > n - pos) return 0;
    for (uint32_t v = 0; v < count * r->slots; v++, pos++) {
      int32_t x = a[pos];
      if (!present) {
        if (x != 0) return 0; /* an absent value's slots are zeros */
        continue;
      }
      switch (r->kind) {
        case JT_ATTR_ENUM: if (x < 0 || x >= r->enum_size) return 0; break;
        case JT_ATTR_BOOL:
        case JT_ATTR_BOOL_ARRAY: if (x != 0 && x != 1) return 0; break;
        case JT_ATTR_F32:
        case JT_ATTR_F32_ARRAY: if (!jt_isfinitef(jt_f32_bits(x))) return 0; break;
        default: break;
      }
    }
  }
  return pos == n;
}

/* Ops whose kernels write the output while they still read the inputs (windows, gathers,
 * scatters): the reference computes the whole result first, so an output sharing an
 * input's bytes (a view of it, or the same tensor) would give another result. The in-place
 * ops (lowering/planner.py IN_PLACE), the updates and the element-wise ops are not here. */
static int must_not_alias(uint32_t opcode) {
  switch (opcode) {
    case JT_OP_CONV2D_S8: case JT_OP_DENSE_S8: case JT_OP_AVGPOOL_S8: case JT_OP_MAXPOOL_S8:
    case JT_OP_GATHER_CHANNELS_S8: case JT_OP_BOTTLENECK_S8: case JT_OP_CONCAT_S8:
    case JT_OP_SCATTER_ADD_LAST: return 1;
    default: return 0;
  }
}

static int outputs_disjoint(const jt_runtime *rt, const jt_op *op) {
  for (uint32_t k = 0; k < op->n_out; k++) {
    const int32_t b = jt_base(rt, op->out[k]);
    for (uint32_t j = 0; j < op->n_in + k; j++)  /* the inputs, then the outputs before k */
      if (jt_base(rt, op->in[j]) == b) return 0;
  }
  return 1;
}

static jt_status check_op(jt_runtime *rt, const uint8_t *list, uint32_t i, uint32_t where) {
  const jt_op_rec *r = (const jt_op_rec *)(const void *)(list + i * OP_BYTES);
  if (r->opcode > JT_LAST_OPCODE || !jt_rules[r->opcode].known ||
      jt_check_table[r->opcode] == NULL)  /* not in this build (JT_OPS_USED) */
    return fail(rt, JT_E_OPCODE, where, i);
  const jt_op_rule *rule = &jt_rules[r->opcode];
  if ((uint64_t)r->operand_start + r->operand_count > rt->n_operands ||
      r->inputs > r->operand_count)
    return fail(rt, JT_E_OPERANDS, where, i);
  if ((uint64_t)r->attr_start + r->attr_count > rt->n_attrs) return fail(rt, JT_E_ATTR, where, i);
  jt_op op;
  op_view(rt, list, i, &op);
  if (op.n_in < rule->in_min || (rule->in_max != JT_ANY && op.n_in > rule->in_max) ||
      op.n_out < rule->out_min || (rule->out_max != JT_ANY && op.n_out > rule->out_max))
    return fail(rt, JT_E_OPERANDS, where, i);
  for (uint32_t k = 0; k < op.n_in + op.n_out; k++) {
    int32_t t = op.in[k];
    if (t < 0 || (uint32_t)t >= rt->n_tensors) return fail(rt, JT_E_OPERANDS, where, i);
    int32_t base = jt_base(rt, t);
    int is_out = k >= op.n_in;
    /* train ops never see the logits buffer, inference never the label or the loss */
    if (where == JT_WHERE_TRAIN_OP ? base == rt->io_logits
                                   : (base == rt->io_label || base == rt->io_loss))
      return fail(rt, JT_E_OPERANDS, where, i);
    /* no op writes a constant or the caller's input, nor an io buffer through a view (the
     * executor keeps io buffers by tensor: a write to a view would not reach it) */
    if (is_out && (jt_t(rt, base)->storage == JT_CONST || base == rt->io_input ||
                   base == rt->io_label || (jt_t(rt, base)->storage == JT_IO && base != t)))
      return fail(rt, JT_E_OPERANDS, where, i);
  }
  if (!attrs_ok(rule, &op)) return fail(rt, JT_E_ATTR, where, i);
  jt_status s = jt_check_table[r->opcode](rt, &op);
  if (s == JT_OK && must_not_alias(op.opcode) && !outputs_disjoint(rt, &op)) s = JT_E_OPERANDS;
  return s == JT_OK ? JT_OK : fail(rt, s, where, i);
}

/* The memory plan of one op list: every arena tensor it uses is written before it is read
 * and has an offset, and no two buffers live at the same time share a byte. first/last:
 * per tensor scratch (in the arena, which is free during init). */
static jt_status check_plan(jt_runtime *rt, const uint8_t *list, uint32_t n_ops, uint32_t where,
                            uint32_t *first, uint32_t *last) {
  const uint32_t unused = 0xffffffffu;
  for (uint32_t t = 0; t < rt->n_tensors; t++) first[t] = last[t] = unused;
  for (uint32_t i = 0; i < n_ops; i++) {
    jt_op op;
    op_view(rt, list, i, &op);
    for (uint32_t k = 0; k < op.n_in + op.n_out; k++) {
      uint32_t b = (uint32_t)jt_base(rt, op.in[k]);
      if (jt_t(rt, (int32_t)b)->storage != JT_ARENA) continue;
      if (k < op.n_in && first[b] == unused) return fail(rt, JT_E_PLAN, where, i);
      if (first[b] == unused) {
        if (jt_t(rt, (int32_t)b)->location < 0) return fail(rt, JT_E_PLAN, where, i);
        first[b] = i;
      }
      last[b] = i;
    }
  }
  for (uint32_t a = 0; a < rt->n_tensors; a++) {
    if (first[a] == unused) continue;
    const jt_tensor_rec *x = jt_t(rt, (int32_t)a);
    uint32_t xa = (uint32_t)x->location, xe = xa + buffer_size(x->nbytes);
    for (uint32_t c = a + 1; c < rt->n_tensors; c++) {
      if (first[c] == unused || first[a] > last[c] || first[c] > last[a]) continue;
      const jt_tensor_rec *y = jt_t(rt, (int32_t)c);
      uint32_t ya = (uint32_t)y->location, ye = ya + buffer_size(y->nbytes);
      if (xa < ye && ya < xe) return fail(rt, JT_E_PLAN, where, first[a] > first[c] ? first[a] : first[c]);
    }
  }
  return JT_OK;
}

/* Non-finite safety: the train ops write the loss before any op writes the state, so a
 * step whose loss is not finite stops before it changes anything that persists. */
static jt_status check_loss_first(jt_runtime *rt) {
  int loss_written = 0;
  for (uint32_t i = 0; i < rt->n_train_ops; i++) {
    jt_op op;
    op_view(rt, rt->train_ops, i, &op);
    int writes_loss = 0;
    /* the step stops after the op that writes the loss: that op writes no state either */
    for (uint32_t k = 0; k < op.n_out; k++) {
      int32_t b = jt_base(rt, op.out[k]);
      if (jt_t(rt, b)->storage == JT_STATE && !loss_written)
        return fail(rt, JT_E_PLAN, JT_WHERE_TRAIN_OP, i);
      if (b == rt->io_loss) writes_loss = 1;
    }
    if (writes_loss) loss_written = 1;
  }
  if (!loss_written) return fail(rt, JT_E_IO, JT_WHERE_HEADER, H_IO + 8);
  /* inference writes the logits */
  for (uint32_t i = 0; i < rt->n_infer_ops; i++) {
    jt_op op;
    op_view(rt, rt->infer_ops, i, &op);
    for (uint32_t k = 0; k < op.n_out; k++)
      if (jt_base(rt, op.out[k]) == rt->io_logits) return JT_OK;
  }
  return fail(rt, JT_E_IO, JT_WHERE_HEADER, H_IO + 12);
}

static int32_t find_step_tensor(const jt_runtime *rt) {
  for (uint32_t i = 0; i < rt->n_tensors; i++) {
    const jt_tensor_rec *t = jt_t(rt, (int32_t)i);
    if (t->storage == JT_STATE && t->dtype == JT_DTYPE_I32 && t->rank == 0 &&
        strcmp((const char *)rt->strings + t->name, "step") == 0)
      return (int32_t)i;
  }
  return -1;
}

jt_status jt_init(jt_runtime *rt, const void *blob, size_t blob_len, void *arena,
                  size_t arena_len, void *state, size_t state_len) {
  if (rt == NULL) return JT_E_NULL;
  memset(rt, 0, sizeof *rt);
  rt->error_index = -1;
  if (blob == NULL || arena == NULL || state == NULL) return fail(rt, JT_E_NULL, JT_WHERE_NONE, 0);
  if ((uintptr_t)blob % JT_ALIGN || (uintptr_t)arena % JT_ALIGN || (uintptr_t)state % JT_ALIGN)
    return fail(rt, JT_E_ALIGN, JT_WHERE_NONE, 0);
  const uint8_t *b = (const uint8_t *)blob;
  jt_status s;
  if ((s = check_header(rt, b, blob_len)) != JT_OK) return s;
  if ((s = check_sections(rt, b, (uint32_t)blob_len)) != JT_OK) return s;
  rt->arena_bytes = rd32(b + H_ARENA);
  rt->state_bytes = rd32(b + H_STATE);
  if (rt->arena_bytes > JT_MAX_BUFFER_BYTES) return fail(rt, JT_E_HEADER, JT_WHERE_HEADER, H_ARENA);
  if (rt->state_bytes % JT_ALIGN || rt->state_bytes > rt->consts_len ||
      rt->state_bytes > JT_MAX_BUFFER_BYTES)
    return fail(rt, JT_E_HEADER, JT_WHERE_HEADER, H_STATE);
  if (arena_len < jt_arena_size(blob, blob_len) || jt_arena_size(blob, blob_len) == 0)
    return fail(rt, JT_E_ARENA_SIZE, JT_WHERE_NONE, 0);
  if (state_len < rt->state_bytes) return fail(rt, JT_E_STATE_SIZE, JT_WHERE_NONE, 0);
  rt->blob = b;
  rt->blob_len = (uint32_t)blob_len;
  rt->arena = (uint8_t *)arena;
  rt->arena_len = (uint32_t)arena_len;
  rt->state = (uint8_t *)state;
  rt->state_len = (uint32_t)state_len;
  if ((s = check_tensors(rt)) != JT_OK) return s;
  if ((s = check_io(rt, b)) != JT_OK) return s;
  if ((s = check_optimizer(rt, b)) != JT_OK) return s;
  if ((s = check_quant(rt, b)) != JT_OK) return s;
  for (uint32_t i = 0; i < rt->n_train_ops; i++)
    if ((s = check_op(rt, rt->train_ops, i, JT_WHERE_TRAIN_OP)) != JT_OK) return s;
  for (uint32_t i = 0; i < rt->n_infer_ops; i++)
    if ((s = check_op(rt, rt->infer_ops, i, JT_WHERE_INFER_OP)) != JT_OK) return s;
  uint32_t *first = (uint32_t *)arena, *last = first + rt->n_tensors;
  if ((s = check_plan(rt, rt->train_ops, rt->n_train_ops, JT_WHERE_TRAIN_OP, first, last)) != JT_OK)
    return s;
  if ((s = check_plan(rt, rt->infer_ops, rt->n_infer_ops, JT_WHERE_INFER_OP, first, last)) != JT_OK)
    return s;
  if ((s = check_loss_first(rt)) != JT_OK) return s;
  rt->step_tensor = find_step_tensor(rt);
  memcpy(rt->state, rt->consts, rt->state_bytes);
  rt->ready = 1;
  return JT_OK;
}

/* --- running ------------------------------------------------------------------------------ */

uint32_t jt_input_size(const jt_runtime *rt) {
  return rt != NULL && rt->ready ? jt_numel(rt, rt->io_input) : 0;
}

uint32_t jt_output_size(const jt_runtime *rt) {
  return rt != NULL && rt->ready ? jt_numel(rt, rt->io_logits) : 0;
}

uint32_t jt_input_shape(const jt_runtime *rt, uint32_t dims[JT_MAX_RANK]) {
  if (rt == NULL || dims == NULL || !rt->ready) return 0;
  const jt_tensor_rec *t = jt_t(rt, rt->io_input);
  for (uint32_t k = 0; k < t->rank; k++) dims[k] = t->dims[k];
  return t->rank;
}

jt_status jt_quantize_input(const jt_runtime *rt, const float *x, int8_t *x8) {
  if (rt == NULL || x == NULL || x8 == NULL) return JT_E_NULL;
  if (!rt->ready) return JT_E_NOT_READY;
  const uint32_t n = jt_numel(rt, rt->io_input);
  for (uint32_t i = 0; i < n; i++)
    if (!jt_isfinitef(x[i])) return JT_E_INPUT; /* nothing written */
  const float zero = (float)rt->in_zero;
  for (uint32_t i = 0; i < n; i++) {
    /* the float32 operations of lowering IoQuant.quantize_input, clamped before the cast */
    float q = jt_rintf(x[i] * rt->in_inv_scale) + zero;
    x8[i] = (int8_t)(q < -128.0f ? -128.0f : q > 127.0f ? 127.0f : q);
  }
  return JT_OK;
}

jt_status jt_dequantize_output(const jt_runtime *rt, const int8_t *y8, float *y) {
  if (rt == NULL || y8 == NULL || y == NULL) return JT_E_NULL;
  if (!rt->ready) return JT_E_NOT_READY;
  const uint32_t n = jt_numel(rt, rt->io_logits);
  for (uint32_t i = 0; i < n; i++) y[i] = rt->out_scale * (float)(y8[i] - rt->out_zero);
  return JT_OK;
}

uint32_t jt_error_where(const jt_runtime *rt) { return rt != NULL ? rt->error_where : 0; }
int32_t jt_error_index(const jt_runtime *rt) { return rt != NULL ? rt->error_index : -1; }
size_t jt_runtime_size(void) { return sizeof(jt_runtime); }

uint32_t jt_step_count(const jt_runtime *rt) {
  if (rt == NULL || !rt->ready || rt->step_tensor < 0) return 0;
  int32_t step;
  memcpy(&step, jt_data(rt, rt->step_tensor), 4);
  return (uint32_t)step;
}

/* A port may observe every op (a profiler: ports/cortex-m, PROFILE=1) by defining
 * JT_OP_HOOK as a function void f(uint32_t index, int end), called before and after the op
 * of that index in its list. */
#ifdef JT_OP_HOOK
void JT_OP_HOOK(uint32_t index, int end);
#define OP_HOOK(index, end) JT_OP_HOOK(index, end)
#else
#define OP_HOOK(index, end) ((void)0)
#endif

static jt_status run(jt_runtime *rt, const uint8_t *list, uint32_t n_ops, int check_loss) {
  for (uint32_t i = 0; i < n_ops; i++) {
    jt_op op;
    op_view(rt, list, i, &op);
    OP_HOOK(i, 0);
    jt_status s = jt_op_table[op.opcode](rt, &op);
    OP_HOOK(i, 1);
    if (s != JT_OK) return s;
    for (uint32_t k = 0; check_loss && k < op.n_out; k++) {
      if (jt_base(rt, op.out[k]) != rt->io_loss) continue;
      if (!jt_isfinitef(rt->out_loss)) return JT_E_NONFINITE;
      check_loss = 0;
    }
  }
  return JT_OK;
}

jt_status jt_train_step(jt_runtime *rt, const int8_t *input, int32_t label, float *loss) {
  if (rt == NULL || input == NULL || loss == NULL) return JT_E_NULL;
  if (!rt->ready) return JT_E_NOT_READY;
  const jt_tensor_rec *logits = jt_t(rt, rt->io_logits);
  if (label < 0 || (uint32_t)label >= logits->dims[logits->rank - 1]) return JT_E_LABEL;
  rt->in_input = input;
  rt->in_label = label;
  rt->out_logits = NULL;
  jt_status s = run(rt, rt->train_ops, rt->n_train_ops, 1);
  *loss = rt->out_loss;
  rt->in_input = NULL;
  return s;
}

jt_status jt_infer(jt_runtime *rt, const int8_t *input, int8_t *logits) {
  if (rt == NULL || input == NULL || logits == NULL) return JT_E_NULL;
  if (!rt->ready) return JT_E_NOT_READY;
  rt->in_input = input;
  rt->out_logits = logits;
  jt_status s = run(rt, rt->infer_ops, rt->n_infer_ops, 0);
  rt->in_input = NULL;
  rt->out_logits = NULL;
  return s;
}
