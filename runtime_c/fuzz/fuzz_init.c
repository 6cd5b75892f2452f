/* libFuzzer target: any bytes as a blob (its size and CRC fields patched to match, so the
 * mutations reach the verifier's structural checks); when jt_init accepts it, one
 * inference and one train step must run without a crash or an out-of-bounds access. */
#include <stdlib.h>
#include <string.h>

#include "jaxtiny.h"

#define MAX_BUFFER (4u << 20)

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > (16u << 20)) return 0;
  uint32_t *words = malloc(size + 4);
  uint8_t *blob = (uint8_t *)words;
  memcpy(blob, data, size);
  if (size >= 24) {
    put32(blob + 16, (uint32_t)size);
    put32(blob + 20, 0);
    uint32_t c = jt_crc32(0, blob, size);
    put32(blob + 20, c);
  }
  uint32_t arena_len = jt_arena_size(blob, size), state_len = jt_state_size(blob, size);
  if (arena_len > MAX_BUFFER) arena_len = MAX_BUFFER;
  if (state_len > MAX_BUFFER) state_len = MAX_BUFFER;
  /* exact sizes, so AddressSanitizer catches a read or write one byte outside */
  void *arena = malloc(arena_len ? arena_len : 4), *state = malloc(state_len ? state_len : 4);
  jt_runtime rt;
  if (jt_init(&rt, blob, size, arena, arena_len, state, state_len) == JT_OK) {
    uint32_t n_in = jt_input_size(&rt), n_out = jt_output_size(&rt);
    int8_t *x = calloc(n_in ? n_in : 1, 1), *y = malloc(n_out ? n_out : 1);
    float loss;
    (void)jt_infer(&rt, x, y);
    (void)jt_train_step(&rt, x, 0, &loss);
    (void)jt_infer(&rt, x, y);
    free(x);
    free(y);
  }
  free(arena);
  free(state);
  free(words);
  return 0;
}
