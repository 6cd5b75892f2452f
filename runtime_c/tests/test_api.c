/* Host test of the API's edges that need no blob (ctest; the blobs themselves are tested
 * from Python): jt_init refuses NULL, misaligned and malformed blobs with the documented
 * status and location, a runtime whose init failed refuses every call, each status has a
 * name, and the CRC is zlib's. Exits 1 after printing every failed check. */
#include <stdio.h>
#include <string.h>

#include "jaxtiny.h"

static int failures;

#define CHECK(cond)                                                       \
  do {                                                                    \
    if (!(cond)) {                                                        \
      printf("%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);     \
      failures++;                                                         \
    }                                                                     \
  } while (0)

static uint32_t blob[64], arena[64], state[64];

static int no_storage(void *ctx, uint32_t offset, void *dst, uint32_t len) {
  (void)ctx, (void)offset, (void)dst, (void)len;
  return 1;
}

static int no_write(void *ctx, uint32_t offset, const void *src, uint32_t len) {
  (void)ctx, (void)offset, (void)src, (void)len;
  return 1;
}

/* jt_init on `len` bytes of `blob` from byte `skew`. */
static jt_status init(jt_runtime *rt, size_t skew, size_t len) {
  return jt_init(rt, (const uint8_t *)blob + skew, len, arena, sizeof arena, state, sizeof state);
}

static void test_init_refusals(void) {
  jt_runtime rt;
  CHECK(jt_init(NULL, blob, sizeof blob, arena, sizeof arena, state, sizeof state) == JT_E_NULL);
  CHECK(jt_init(&rt, NULL, sizeof blob, arena, sizeof arena, state, sizeof state) == JT_E_NULL);
  CHECK(jt_init(&rt, blob, sizeof blob, NULL, sizeof arena, state, sizeof state) == JT_E_NULL);
  CHECK(jt_init(&rt, blob, sizeof blob, arena, sizeof arena, NULL, sizeof state) == JT_E_NULL);
  CHECK(jt_error_where(&rt) == JT_WHERE_NONE);
  CHECK(init(&rt, 1, sizeof blob - 4) == JT_E_ALIGN);

  memset(blob, 0x5A, sizeof blob);  /* garbage */
  CHECK(init(&rt, 0, sizeof blob) == JT_E_MAGIC);
  CHECK(jt_error_where(&rt) == JT_WHERE_HEADER && jt_error_index(&rt) == 0);
  CHECK(jt_arena_size(blob, sizeof blob) == 0 && jt_state_size(blob, sizeof blob) == 0);

  memcpy(blob, "JTB1", 4);
  CHECK(init(&rt, 0, 8) == JT_E_TRUNCATED);  /* shorter than any header */
  CHECK(init(&rt, 0, sizeof blob) == JT_E_BYTE_ORDER);  /* the sentinel after the magic */
  CHECK(jt_error_where(&rt) == JT_WHERE_HEADER && jt_error_index(&rt) == 4);
}

static void test_failed_runtime_refuses_every_call(void) {
  jt_runtime rt;
  int8_t x[4] = {0}, logits[4];
  float loss = 0.0f;
  const jt_flash flash = {no_storage, no_write, NULL};
  memset(blob, 0, sizeof blob);
  CHECK(init(&rt, 0, sizeof blob) == JT_E_MAGIC);
  CHECK(jt_train_step(&rt, x, 0, &loss) == JT_E_NOT_READY);
  CHECK(jt_train_step(&rt, NULL, 0, &loss) == JT_E_NULL);
  CHECK(jt_infer(&rt, x, logits) == JT_E_NOT_READY);
  CHECK(jt_slots_save(&rt, &flash) == JT_E_NOT_READY);
  CHECK(jt_slots_load(&rt, &flash) == JT_E_NOT_READY);
  CHECK(jt_state_load(&rt, state, sizeof state) != JT_OK);
  CHECK(jt_input_size(&rt) == 0 && jt_output_size(&rt) == 0 && jt_step_count(&rt) == 0);
  CHECK(jt_slot_size(&rt) == 0);
}

static void test_status_names(void) {
  for (int s = 0; s < JT_STATUS_COUNT; s++) {
    const char *name = jt_status_str((jt_status)s);
    CHECK(name != NULL && name[0] != '\0');
    CHECK(strcmp(name, jt_status_str(JT_STATUS_COUNT)) != 0);  /* each one is named */
    for (int t = 0; t < s; t++) CHECK(strcmp(name, jt_status_str((jt_status)t)) != 0);
  }
  CHECK(strcmp(jt_status_str(JT_OK), "ok") == 0);
  CHECK(strcmp(jt_where_str(JT_WHERE_TENSOR), "tensor") == 0);
  CHECK(strcmp(jt_where_str(1000u), "") == 0);
}

static void test_crc32(void) {
  static const char check[] = "123456789";  /* CRC-32's standard check string */
  CHECK(jt_crc32(0, check, 9) == 0xCBF43926u);
  CHECK(jt_crc32(jt_crc32(0, check, 4), check + 4, 5) == 0xCBF43926u);
  CHECK(jt_crc32(0, check, 0) == 0);
}

int main(void) {
  test_init_refusals();
  test_failed_runtime_refuses_every_call();
  test_status_names();
  test_crc32();
  if (failures) {
    printf("%d checks failed\n", failures);
    return 1;
  }
  printf("all checks passed\n");
  return 0;
}
