/* The jaxtiny example application: trains the exported blob on the board's samples, one
 * step per sample, keeps what it learned in two flash slots so that a reset resumes from
 * it, then infers the last sample with the trained state. Portable C99: the board's part
 * is board.h (host_board.c on a PC); printf is the console (retarget it on a board).
 *
 * Console lines:
 *   init arena=A state=S input=I output=O slot=B   the buffers' bytes
 *   resume step=N          the newest saved state was loaded (or "fresh": none was saved)
 *   step N label=L loss=0xBITS VALUE   the loss's float32 bits, for a bit-for-bit
 *                          comparison with Python, then its value (" nonfinite": the step
 *                          changed nothing)
 *   saved step=N           the state went to flash (every JT_SAVE_EVERY steps and at the end)
 *   infer logits=a,b,...   the last sample's int8 logits
 *   done
 * On an error: "error WHAT: STATUS" and main returns 2. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "board.h"
#include "jaxtiny.h"
#include "jaxtiny_blob.h"

#ifndef JT_SAVE_EVERY
#define JT_SAVE_EVERY 16u /* steps between saves: each one writes a slot of flash */
#endif

/* uint32_t arrays: the 4-byte alignment jt_init asks for, in plain C99. */
static uint32_t arena[(JT_ARENA_BYTES + 3u) / 4u];
static uint32_t state[(JT_STATE_BYTES + 3u) / 4u];
static uint32_t input_words[(JT_INPUT_BYTES + 3u) / 4u];
static int8_t logits[JT_OUTPUT_BYTES];
static jt_runtime rt;

static int fail(const char *what, jt_status s) {
  printf("error %s: %s (status %d)", what, jt_status_str(s), (int)s);
  if (jt_error_where(&rt) != JT_WHERE_NONE)
    printf(" at %s %" PRId32, jt_where_str(jt_error_where(&rt)), jt_error_index(&rt));
  printf("\n");
  return 2;
}

static jt_status save(const jt_flash *flash) {
  const jt_status s = jt_slots_save(&rt, flash);
  if (s == JT_OK) printf("saved step=%" PRIu32 "\n", jt_step_count(&rt));
  return s;
}

int main(int argc, char **argv) {
  int8_t *const input = (int8_t *)input_words;
  jt_status s = jt_init(&rt, jaxtiny_blob.bytes, JT_BLOB_LEN, arena, sizeof arena, state,
                        sizeof state);
  if (s != JT_OK) return fail("init", s);
  if (jt_input_size(&rt) != JT_INPUT_BYTES || jt_output_size(&rt) != JT_OUTPUT_BYTES ||
      jt_slot_size(&rt) != JT_SLOT_BYTES) {
    printf("error init: jaxtiny_blob.h's sizes are not this blob's: export it again\n");
    return 2;
  }
  printf("init arena=%u state=%u input=%u output=%u slot=%u\n", (unsigned)sizeof arena,
         (unsigned)sizeof state, (unsigned)JT_INPUT_BYTES, (unsigned)JT_OUTPUT_BYTES,
         (unsigned)JT_SLOT_BYTES);
  if (board_init(argc, argv, 2u * JT_SLOT_BYTES) != 0) {
    printf("error board: board_init failed\n");
    return 2;
  }

  const jt_flash flash = {board_flash_read, board_flash_write, NULL};
  s = jt_slots_load(&rt, &flash);
  if (s == JT_OK)
    printf("resume step=%" PRIu32 "\n", jt_step_count(&rt));
  else if (s == JT_E_NO_IMAGE)
    printf("fresh\n");
  else
    return fail("load", s);

  uint32_t trained = 0, unsaved = 0;
  int32_t label;
  while (board_next_sample(input, &label)) {
    const uint32_t step = jt_step_count(&rt);
    float loss;
    s = jt_train_step(&rt, input, label, &loss);
    if (s != JT_OK && s != JT_E_NONFINITE) return fail("train", s);
    uint32_t bits;
    memcpy(&bits, &loss, sizeof bits);
    printf("step %" PRIu32 " label=%" PRId32 " loss=0x%08" PRIx32 " %.6f%s\n", step, label,
           bits, (double)loss, s == JT_OK ? "" : " nonfinite");
    trained++;
    if (++unsaved == JT_SAVE_EVERY) {
      if ((s = save(&flash)) != JT_OK) return fail("save", s);
      unsaved = 0;
    }
  }
  if (unsaved != 0 && (s = save(&flash)) != JT_OK) return fail("save", s);

  if (trained != 0) {  /* input still holds the last sample */
    if ((s = jt_infer(&rt, input, logits)) != JT_OK) return fail("infer", s);
    printf("infer logits=");
    for (uint32_t i = 0; i < JT_OUTPUT_BYTES; i++) printf(i ? ",%d" : "%d", logits[i]);
    printf("\n");
  }
  printf("done\n");
  return 0;
}
