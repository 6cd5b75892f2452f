/* Names of the statuses, for logs and for the Python binding's error messages. */
#include "jaxtiny.h"

static const char *const jt_status_names[JT_STATUS_COUNT] = {
  [JT_OK] = "ok",
  [JT_E_NULL] = "a required pointer is NULL",
  [JT_E_ALIGN] = "a buffer is not 4-byte aligned",
  [JT_E_MAGIC] = "not a jaxtiny blob (bad magic)",
  [JT_E_BYTE_ORDER] = "wrong byte-order sentinel",
  [JT_E_VERSION] = "unsupported blob format version",
  [JT_E_TRUNCATED] = "blob truncated or with trailing bytes",
  [JT_E_CRC] = "blob CRC mismatch: the blob is corrupt",
  [JT_E_SECTION] = "a section is misaligned, outside the blob, overlapping or miscounted",
  [JT_E_TENSOR] = "a tensor record is malformed or lies outside its region",
  [JT_E_ALIAS] = "an alias is out of range, cyclic, too deep or of another dtype or size",
  [JT_E_OPCODE] = "unknown opcode",
  [JT_E_OPERANDS] = "operand count or tensor id out of range, or a forbidden operand",
  [JT_E_DTYPE] = "an operand has the wrong dtype or storage",
  [JT_E_SHAPE] = "operand shapes disagree with the op's rule",
  [JT_E_ATTR] = "attribute slots or values out of range",
  [JT_E_PLAN] = "memory plan: a tensor read before written, or live buffers overlap",
  [JT_E_IO] = "io tensors missing or of the wrong dtype or shape",
  [JT_E_HEADER] = "a header field is out of range",
  [JT_E_ARENA_SIZE] = "the arena buffer is too small",
  [JT_E_STATE_SIZE] = "the state buffer is too small",
  [JT_E_NOT_READY] = "the runtime is not initialized",
  [JT_E_LABEL] = "label out of range",
  [JT_E_NONFINITE] = "the loss is not finite: no update ran, the state is unchanged",
  [JT_E_IMAGE] = "state image malformed, truncated or corrupt",
  [JT_E_IMAGE_BLOB] = "state image saved by another blob",
  [JT_E_BUFFER] = "an output buffer is too small",
  [JT_E_NO_IMAGE] = "no valid state image in either slot",
  [JT_E_STORAGE] = "the storage callback failed",
  [JT_E_INPUT] = "an input value is NaN or infinite",
};

const char *jt_status_str(jt_status s) {
  return (unsigned)s < JT_STATUS_COUNT ? jt_status_names[s] : "unknown status";
}

const char *jt_where_str(uint32_t where) {
  static const char *const names[] = {"", "header", "section", "tensor", "train op",
                                      "infer op"};
  return where < sizeof names / sizeof names[0] ? names[where] : "";
}
