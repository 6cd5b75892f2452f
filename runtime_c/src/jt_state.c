/* What the device learned, kept across resets: the state image and its A/B slots. */
#include "jt_internal.h"

#define IMAGE_MAGIC 0x3153544au /* "JTS1" read as a little-endian u32 */
#define IMAGE_VERSION 1u
#define IMAGE_HEAD 20u          /* magic, version, blob CRC, step, state bytes */
#define CHUNK 64u               /* stack buffer of the streaming slot reads */

static void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static uint32_t rd32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

static void image_head(const jt_runtime *rt, uint8_t head[IMAGE_HEAD]) {
  wr32(head, IMAGE_MAGIC);
  wr32(head + 4, IMAGE_VERSION);
  wr32(head + 8, rt->blob_crc);
  wr32(head + 12, jt_step_count(rt));
  wr32(head + 16, rt->state_bytes);
}

/* A header read back: JT_OK when it is this blob's image of this size. */
static jt_status head_ok(const jt_runtime *rt, const uint8_t head[IMAGE_HEAD]) {
  if (rd32(head) != IMAGE_MAGIC || rd32(head + 4) != IMAGE_VERSION) return JT_E_IMAGE;
  if (rd32(head + 8) != rt->blob_crc) return JT_E_IMAGE_BLOB;
  if (rd32(head + 16) != rt->state_bytes) return JT_E_IMAGE;
  return JT_OK;
}

uint32_t jt_state_image_size(const jt_runtime *rt) {
  return rt != NULL && rt->ready ? rt->state_bytes + JT_IMAGE_OVERHEAD : 0;
}

jt_status jt_state_save(const jt_runtime *rt, void *image, size_t image_len, size_t *written) {
  if (rt == NULL || image == NULL) return JT_E_NULL;
  if (!rt->ready) return JT_E_NOT_READY;
  uint32_t n = jt_state_image_size(rt);
  if (image_len < n) return JT_E_BUFFER;
  uint8_t *p = (uint8_t *)image;
  image_head(rt, p);
  memcpy(p + IMAGE_HEAD, rt->state, rt->state_bytes);
  wr32(p + IMAGE_HEAD + rt->state_bytes, jt_crc32(0, p, IMAGE_HEAD + rt->state_bytes));
  if (written != NULL) *written = n;
  return JT_OK;
}

jt_status jt_state_load(jt_runtime *rt, const void *image, size_t image_len) {
  if (rt == NULL || image == NULL) return JT_E_NULL;
  if (!rt->ready) return JT_E_NOT_READY;
  const uint8_t *p = (const uint8_t *)image;
  if (image_len != jt_state_image_size(rt)) return JT_E_IMAGE;
  jt_status s = head_ok(rt, p);
  if (s != JT_OK) return s;
  if (jt_crc32(0, p, IMAGE_HEAD + rt->state_bytes) != rd32(p + IMAGE_HEAD + rt->state_bytes))
    return JT_E_IMAGE;
  memcpy(rt->state, p + IMAGE_HEAD, rt->state_bytes);
  return JT_OK;
}

/* --- A/B slots ---------------------------------------------------------------------------- */

uint32_t jt_slot_size(const jt_runtime *rt) {
  return rt != NULL && rt->ready ? 4u + jt_state_image_size(rt) : 0;
}

/* Whether slot `slot` holds a valid image of this blob; its sequence number in *seq.
 * Streams the slot through a small stack buffer, so it needs no RAM of the image's size. */
static jt_status slot_valid(const jt_runtime *rt, const jt_flash *f, uint32_t slot,
                            uint32_t *seq) {
  uint32_t base = slot * jt_slot_size(rt);
  uint8_t buf[CHUNK];
  if (f->read(f->ctx, base, buf, 4 + IMAGE_HEAD)) return JT_E_STORAGE;
  *seq = rd32(buf);
  jt_status s = head_ok(rt, buf + 4);
  if (s != JT_OK) return s;
  uint32_t crc = jt_crc32(0, buf + 4, IMAGE_HEAD);
  for (uint32_t at = 0; at < rt->state_bytes; at += CHUNK) {
    uint32_t n = rt->state_bytes - at < CHUNK ? rt->state_bytes - at : CHUNK;
    if (f->read(f->ctx, base + 4 + IMAGE_HEAD + at, buf, n)) return JT_E_STORAGE;
    crc = jt_crc32(crc, buf, n);
  }
  if (f->read(f->ctx, base + 4 + IMAGE_HEAD + rt->state_bytes, buf, 4)) return JT_E_STORAGE;
  return rd32(buf) == crc ? JT_OK : JT_E_IMAGE;
}

/* The slot holding the newest valid image (sequence numbers compared modulo 2^32), or -1. */
static int newest(const jt_runtime *rt, const jt_flash *f, uint32_t *seq, jt_status *err) {
  uint32_t q[2];
  int ok[2];
  *err = JT_OK;
  for (uint32_t k = 0; k < 2; k++) {
    jt_status s = slot_valid(rt, f, k, &q[k]);
    if (s == JT_E_STORAGE) *err = s;
    ok[k] = s == JT_OK;
  }
  int best = ok[0] ? 0 : ok[1] ? 1 : -1;
  if (ok[0] && ok[1] && (int32_t)(q[1] - q[0]) > 0) best = 1;
  if (best >= 0) *seq = q[best];
  return best;
}

jt_status jt_slots_save(const jt_runtime *rt, const jt_flash *f) {
  if (rt == NULL || f == NULL || f->read == NULL || f->write == NULL) return JT_E_NULL;
  if (!rt->ready) return JT_E_NOT_READY;
  uint32_t seq = 0;
  jt_status err;
  int cur = newest(rt, f, &seq, &err);
  if (err != JT_OK) return err;
  uint32_t target = cur == 0 ? 1u : 0u, base = target * jt_slot_size(rt);
  uint8_t head[IMAGE_HEAD], tail[4];
  image_head(rt, head);
  wr32(tail, jt_crc32(jt_crc32(0, head, IMAGE_HEAD), rt->state, rt->state_bytes));
  /* The image first, its sequence number last: until that last write, the slot is either
   * its old self or invalid, and the newest image stays in the other slot. */
  if (f->write(f->ctx, base + 4, head, IMAGE_HEAD) ||
      f->write(f->ctx, base + 4 + IMAGE_HEAD, rt->state, rt->state_bytes) ||
      f->write(f->ctx, base + 4 + IMAGE_HEAD + rt->state_bytes, tail, 4))
    return JT_E_STORAGE;
  uint8_t q[4];
  wr32(q, cur < 0 ? 1u : seq + 1u);
  return f->write(f->ctx, base, q, 4) ? JT_E_STORAGE : JT_OK;
}

jt_status jt_slots_load(jt_runtime *rt, const jt_flash *f) {
  if (rt == NULL || f == NULL || f->read == NULL) return JT_E_NULL;
  if (!rt->ready) return JT_E_NOT_READY;
  uint32_t seq;
  jt_status err;
  int cur = newest(rt, f, &seq, &err);
  if (cur < 0) return err != JT_OK ? err : JT_E_NO_IMAGE;
  uint32_t at = (uint32_t)cur * jt_slot_size(rt) + 4 + IMAGE_HEAD;
  /* Stage the bytes in the arena (scratch between calls) when it is large enough, and take
   * them only if they still match the slot's CRC: a read that fails or returns other bytes
   * than the validation pass then leaves the state as it was. */
  uint8_t *dst = rt->arena_len >= rt->state_bytes ? rt->arena : rt->state;
  uint8_t head[IMAGE_HEAD], crc[4];
  if (f->read(f->ctx, at - IMAGE_HEAD, head, IMAGE_HEAD) ||
      f->read(f->ctx, at, dst, rt->state_bytes) || f->read(f->ctx, at + rt->state_bytes, crc, 4))
    return JT_E_STORAGE;
  if (head_ok(rt, head) != JT_OK ||
      jt_crc32(jt_crc32(0, head, IMAGE_HEAD), dst, rt->state_bytes) != rd32(crc))
    return JT_E_STORAGE;
  if (dst != rt->state) memcpy(rt->state, dst, rt->state_bytes);
  return JT_OK;
}
