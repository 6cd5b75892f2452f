/* jaxtiny runtime: runs a lowered training step (a blob, docs/blob.md) on a microcontroller.
 *
 * C99, no malloc, no OS, no stdio. The caller owns every buffer:
 *   blob   the program, read in place (flash is fine); 4-byte aligned; never written.
 *   arena  scratch SRAM of a step, at least jt_arena_size(blob) bytes, 4-byte aligned.
 *   state  persistent SRAM (trained weights and biases, optimizer state, step counter), at
 *          least jt_state_size(blob) bytes, 4-byte aligned; jt_init copies the blob's state
 *          image into it, jt_state_load replaces it with a saved one.
 * jt_init verifies the whole blob once (header, CRC, every table, every tensor inside its
 * region, every op against the rule table of lowering/opset.py, the memory plan of both op
 * lists); after that the kernels run without checks. Every call returns a jt_status; on a
 * refusal at init, rt->error_index names the tensor or op at fault (see jt_error_where).
 *
 * Learned state survives a reset through jt_state_save / jt_state_load: a versioned image
 * holding the blob's CRC (another blob's state is refused), the step counter, the state
 * bytes and a CRC32. jt_slots_* keep two such images in flash-like storage (A/B) so that a
 * power cut in the middle of a save never loses the last good one.
 *
 * Not thread-safe per jt_runtime; independent jt_runtime objects share nothing (the
 * library has no mutable globals).
 */
#ifndef JAXTINY_H
#define JAXTINY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define JT_ALIGN 4u          /* alignment of the blob, arena and state buffers */
#define JT_MAX_RANK 6u
#define JT_MAX_ALIAS_DEPTH 16u /* longest chain of views the verifier accepts */
#define JT_MAX_BUFFER_BYTES (1u << 26) /* largest arena or state a blob may ask for */

typedef enum {
  JT_OK = 0,
  JT_E_NULL,            /* a required pointer is NULL */
  JT_E_ALIGN,           /* blob, arena or state buffer not 4-byte aligned */
  JT_E_MAGIC,           /* not a jaxtiny blob */
  JT_E_BYTE_ORDER,      /* byte-order sentinel wrong (a big-endian reader, or corrupt) */
  JT_E_VERSION,         /* blob format version this runtime does not read */
  JT_E_TRUNCATED,       /* blob length and header disagree, or header too short */
  JT_E_CRC,             /* blob CRC mismatch: corrupt */
  JT_E_SECTION,         /* a section misaligned, outside the blob, overlapping, miscounted */
  JT_E_TENSOR,          /* a tensor record is malformed or lies outside its region */
  JT_E_ALIAS,           /* alias out of range, cyclic, too deep, or of another dtype/size */
  JT_E_OPCODE,          /* unknown opcode */
  JT_E_OPERANDS,        /* operand count or tensor id out of range, or writes a constant */
  JT_E_DTYPE,           /* an operand of the wrong dtype or storage */
  JT_E_SHAPE,           /* operand shapes disagree with the op's rule */
  JT_E_ATTR,            /* attribute slot count or value out of range */
  JT_E_PLAN,            /* memory plan: a tensor read before written, or live overlaps */
  JT_E_IO,              /* io tensors missing, of the wrong dtype or shape */
  JT_E_HEADER,          /* another header field out of range (optimizer, schedule, ...) */
  JT_E_ARENA_SIZE,      /* the arena buffer is smaller than jt_arena_size(blob) */
  JT_E_STATE_SIZE,      /* the state buffer is smaller than jt_state_size(blob) */
  JT_E_NOT_READY,       /* the runtime was not initialized (or its init failed) */
  JT_E_LABEL,           /* label outside [0, classes) */
  JT_E_NONFINITE,       /* the loss is not finite: no update ran, the state is unchanged */
  JT_E_IMAGE,           /* state image malformed, truncated or its CRC wrong */
  JT_E_IMAGE_BLOB,      /* state image saved by another blob */
  JT_E_BUFFER,          /* an output buffer is too small */
  JT_E_NO_IMAGE,        /* neither A/B slot holds a valid image */
  JT_E_STORAGE,         /* the caller's storage callback reported a failure */
  JT_E_INPUT,           /* an input value to quantize is NaN or infinite */
  JT_STATUS_COUNT
} jt_status;

/* Where rt->error_index points after a refusal at init. */
typedef enum {
  JT_WHERE_NONE = 0, JT_WHERE_HEADER, JT_WHERE_SECTION, JT_WHERE_TENSOR, JT_WHERE_TRAIN_OP,
  JT_WHERE_INFER_OP
} jt_where;

/* The runtime object: caller-allocated (static or on the stack), filled by jt_init.
 * Fields are private: read them through the functions below. */
typedef struct jt_runtime {
  const uint8_t *blob;
  uint8_t *arena;
  uint8_t *state;
  uint32_t blob_len, arena_len, state_len;
  /* from the verified header */
  const uint8_t *tensors, *train_ops, *infer_ops, *consts, *strings;
  const int32_t *operands, *attrs;
  uint32_t n_tensors, n_train_ops, n_infer_ops, n_operands, n_attrs, strings_len, consts_len;
  uint32_t arena_bytes, state_bytes, blob_crc;
  int32_t io_input, io_label, io_loss, io_logits, step_tensor;
  uint32_t optimizer, schedule, steps, rounding, seed;
  float lr, final_lr, amplitude, momentum, b1, b2, eps;
  float in_inv_scale, out_scale;
  int32_t in_zero, out_zero;
  /* the current call's io buffers */
  const int8_t *in_input;
  int32_t in_label;
  float out_loss;
  int8_t *out_logits;
  /* diagnostics */
  int32_t error_index;
  uint32_t error_where;
  uint32_t ready;
} jt_runtime;

/* Bytes the arena / the state buffer must have, from a blob's header alone (0 when the
 * header is unreadable or asks for more than JT_MAX_BUFFER_BYTES; jt_init checks the rest).
 * The arena also serves the verifier as scratch during jt_init (8 bytes per tensor). */
uint32_t jt_arena_size(const void *blob, size_t blob_len);
uint32_t jt_state_size(const void *blob, size_t blob_len);

/* Verify the blob and bind the buffers; copies the blob's state image into `state`. */
jt_status jt_init(jt_runtime *rt, const void *blob, size_t blob_len, void *arena,
                  size_t arena_len, void *state, size_t state_len);

/* Elements of the input (int8, the model's input shape) and of the logits (int8). */
uint32_t jt_input_size(const jt_runtime *rt);
uint32_t jt_output_size(const jt_runtime *rt);

/* One training step at batch 1: input is jt_input_size int8 values, label in
 * [0, jt_output_size). On JT_E_NONFINITE no update ran and the state is unchanged. */
jt_status jt_train_step(jt_runtime *rt, const int8_t *input, int32_t label, float *loss);

/* Inference with the current state: writes jt_output_size int8 logits. */
jt_status jt_infer(jt_runtime *rt, const int8_t *input, int8_t *logits);

/* Real values <-> the int8 io, with the quantization stored in the blob: a board reading
 * float sensor values quantizes them as the model was calibrated (bit for bit
 * QModel.quantize_input: clamp(rne(x * (1/scale)) + zero)), and reads real outputs.
 * jt_quantize_input takes jt_input_size floats and refuses NaN or infinity (JT_E_INPUT,
 * nothing written); jt_dequantize_output writes jt_output_size floats. */
jt_status jt_quantize_input(const jt_runtime *rt, const float *x, int8_t *x8);
jt_status jt_dequantize_output(const jt_runtime *rt, const int8_t *y8, float *y);

/* The model input's shape (leading batch axis of 1 included) into dims; returns its rank. */
uint32_t jt_input_shape(const jt_runtime *rt, uint32_t dims[JT_MAX_RANK]);

/* Training steps run so far (the state's step counter). */
uint32_t jt_step_count(const jt_runtime *rt);

/* --- learned state across resets ---------------------------------------------------------
 * Image layout (little-endian u32s): magic "JTS1", version, blob CRC, step count,
 * state bytes, then the state bytes, then CRC32 of everything before it. */
#define JT_IMAGE_OVERHEAD 24u
uint32_t jt_state_image_size(const jt_runtime *rt);
jt_status jt_state_save(const jt_runtime *rt, void *image, size_t image_len, size_t *written);
/* Refuses (state unchanged) an image of another blob, truncated, or with a wrong CRC. */
jt_status jt_state_load(jt_runtime *rt, const void *image, size_t image_len);

/* A/B slots in flash-like storage: two regions of jt_slot_size bytes at offsets 0 and
 * jt_slot_size. A slot holds a sequence number, then an image. A save writes the slot that
 * does not hold the newest valid image, its sequence number last, so a power cut at any
 * byte leaves that newest image intact; a load takes the newest valid slot.
 * `read` / `write` access the caller's storage (erasing first where flash needs it) and
 * return 0 on success. */
typedef struct {
  int (*read)(void *ctx, uint32_t offset, void *dst, uint32_t len);
  int (*write)(void *ctx, uint32_t offset, const void *src, uint32_t len);
  void *ctx;
} jt_flash;
uint32_t jt_slot_size(const jt_runtime *rt);
jt_status jt_slots_save(const jt_runtime *rt, const jt_flash *flash);
/* Loads the newest valid slot; the state is unchanged unless one was loaded (the bytes are
 * staged in the arena when it holds them, and taken only if they match the slot's CRC). */
jt_status jt_slots_load(jt_runtime *rt, const jt_flash *flash);

/* --- diagnostics ------------------------------------------------------------------------ */
const char *jt_status_str(jt_status s);
/* After a refusal at init: what the index points into (jt_where) and the index (a byte
 * offset of the header, a section number, a tensor or an op index; -1 for none). */
uint32_t jt_error_where(const jt_runtime *rt);
int32_t jt_error_index(const jt_runtime *rt);
/* sizeof(jt_runtime), for bindings from other languages. */
size_t jt_runtime_size(void);
const char *jt_where_str(uint32_t where);
/* CRC32 (zlib's polynomial) of `len` bytes, continuing from `crc` (0 to start). */
uint32_t jt_crc32(uint32_t crc, const void *data, size_t len);

#ifdef __cplusplus
}
#endif
#endif
