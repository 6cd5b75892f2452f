/* The training application: the blob in flash, arena, state and input buffer static in
 * RAM, samples streamed from a host file over semihosting (the stand-in for a sensor), the
 * learned state kept in A/B slots of a flash-like host file, so that it survives a reset.
 *
 * Command line (QEMU -semihosting-config arg=...): fw STEPS [SAVE_EVERY]
 * Files in QEMU's working directory:
 *   train.bin  samples (lowering/firmware.py writes it): "JTD1", count, input bytes,
 *              record bytes, then per record the int8 input and, at its end, an int32 label
 *   test.bin   optional held-out samples, same layout: inferred after training
 *   flash.bin  the two state slots; created erased (0xFF) when absent
 * Run: resume from the newest valid slot if there is one, infer sample 0, train STEPS steps
 * (global step s takes sample s mod count), saving every SAVE_EVERY steps and at the end,
 * then infer every test sample. One line per event on the console (firmware.py parses it).
 * Built with PROFILE=1 it also prints the instructions spent in each op, for the
 * inference of sample 0 and for all training steps. */
#include <stdint.h>

#include "board.h"
#include "jaxtiny.h"
#include "semihost.h"

#ifndef JT_ARENA_BYTES
#error "define JT_ARENA_BYTES, JT_STATE_BYTES, JT_INPUT_BYTES and JT_OUTPUT_BYTES"
#endif

extern const uint8_t jt_blob[], jt_blob_end[];

static uint32_t arena[(JT_ARENA_BYTES + 3u) / 4u];
static uint32_t state[(JT_STATE_BYTES + 3u) / 4u];
static int8_t input[JT_INPUT_BYTES] __attribute__((aligned(4)));
static int8_t logits[JT_OUTPUT_BYTES];
static jt_runtime rt;

#if JT_PROFILE
#define PROFILE_OPS 1024u /* ops of a list profiled one by one; later ones are not counted */
static uint64_t op_instructions[PROFILE_OPS], op_started;

void jt_port_op_hook(uint32_t index, int end);
void jt_port_op_hook(uint32_t index, int end) {
  const uint64_t now = jt_port_instructions();
  if (!end) op_started = now;
  else if (index < PROFILE_OPS) op_instructions[index] += now - op_started;
}

/* One line per op that ran (instructions summed over the calls since the last print). */
static void profile_print(const char *phase) {
  for (uint32_t k = 0; k < PROFILE_OPS; k++) {
    if (op_instructions[k] == 0) continue;
    sh_line l = {.len = 0};
    sh_line_str(&l, "profile ");
    sh_line_str(&l, phase);
    sh_line_str(&l, " op=");
    sh_line_u32(&l, k);
    sh_line_str(&l, " instructions=");
    sh_line_u64(&l, op_instructions[k]);
    sh_line_end(&l);
    op_instructions[k] = 0;
  }
}
#else
static void profile_print(const char *phase) { (void)phase; }
#endif

typedef struct {
  int32_t handle;
  uint32_t count, input_bytes, record_bytes;
} samples;

static void fail(const char *what, jt_status s) {
  sh_line l = {.len = 0};
  sh_line_str(&l, "error ");
  sh_line_str(&l, what);
  sh_line_str(&l, " status=");
  sh_line_u32(&l, (uint32_t)s);
  sh_line_str(&l, " (");
  sh_line_str(&l, jt_status_str(s));
  sh_line_str(&l, ") where=");
  sh_line_str(&l, jt_where_str(jt_error_where(&rt)));
  sh_line_str(&l, " index=");
  sh_line_i32(&l, jt_error_index(&rt));
  sh_line_end(&l);
  sh_exit(2);
}

static void fail_msg(const char *msg) {
  sh_puts("error ");
  sh_puts(msg);
  sh_puts("\n");
  sh_exit(2);
}

static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Opens a sample file; returns 0 when it is absent, fails on a malformed one. */
static int open_samples(const char *name, samples *f) {
  uint8_t head[16];
  f->handle = sh_open(name, SH_READ_BIN);
  if (f->handle < 0) return 0;
  if (sh_read(f->handle, head, sizeof head) != 0 || rd32(head) != 0x3144544Au)
    fail_msg("sample file: bad header");
  f->count = rd32(head + 4);
  f->input_bytes = rd32(head + 8);
  f->record_bytes = rd32(head + 12);
  if (f->input_bytes != JT_INPUT_BYTES || f->record_bytes < f->input_bytes + 4u)
    fail_msg("sample file: input size differs from the blob's input");
  return 1;
}

static int32_t read_sample(const samples *f, uint32_t i) {
  uint8_t label[4];
  const uint32_t at = 16u + i * f->record_bytes;
  if (sh_seek(f->handle, at) != 0 || sh_read(f->handle, input, JT_INPUT_BYTES) != 0 ||
      sh_seek(f->handle, at + f->record_bytes - 4u) != 0 || sh_read(f->handle, label, 4) != 0)
    fail_msg("sample file: truncated");
  return (int32_t)rd32(label);
}

/* --- the flash-like storage of the A/B slots: a host file, read and written in place --- */

static int flash_read(void *ctx, uint32_t offset, void *dst, uint32_t len) {
  const int32_t h = *(const int32_t *)ctx;
  return sh_seek(h, offset) != 0 || sh_read(h, dst, len) != 0;
}

static int flash_write(void *ctx, uint32_t offset, const void *src, uint32_t len) {
  const int32_t h = *(const int32_t *)ctx;
  return sh_seek(h, offset) != 0 || sh_write(h, src, len) != 0;
}

static int32_t open_flash(uint32_t bytes) {
  int32_t h = sh_open("flash.bin", SH_UPDATE_BIN);
  if (h >= 0 && (uint32_t)sh_flen(h) >= bytes) return h;
  if (h >= 0) sh_close(h);
  h = sh_open("flash.bin", SH_CREATE_UPDATE_BIN);
  if (h < 0) fail_msg("cannot create flash.bin");
  uint8_t erased[64];
  for (uint32_t i = 0; i < sizeof erased; i++) erased[i] = 0xFF;
  for (uint32_t at = 0; at < bytes; at += sizeof erased) {
    const uint32_t n = bytes - at < sizeof erased ? bytes - at : (uint32_t)sizeof erased;
    if (sh_write(h, erased, n) != 0) fail_msg("cannot erase flash.bin");
  }
  return h;
}

static void print_logits(sh_line *l) {
  sh_line_str(l, " logits=");
  for (uint32_t i = 0; i < JT_OUTPUT_BYTES; i++) {
    if (i) sh_line_str(l, ",");
    sh_line_i32(l, logits[i]);
  }
  sh_line_end(l);
}

static uint32_t parse_u32(const char **s) {
  uint32_t v = 0;
  while (**s == ' ') (*s)++;
  while (**s >= '0' && **s <= '9') v = v * 10u + (uint32_t)(*(*s)++ - '0');
  return v;
}

int main(void) {
  char cmd[128] = {0};
  const char *c = cmd;
  if (sh_cmdline(cmd, sizeof cmd - 1) != 0) cmd[0] = '\0';
  while (*c != '\0' && *c != ' ') c++;  /* the program's name */
  const uint32_t steps = parse_u32(&c), save_every = parse_u32(&c);

  jt_status s = jt_init(&rt, jt_blob, (size_t)(jt_blob_end - jt_blob), arena, sizeof arena,
                        state, sizeof state);
  if (s != JT_OK) fail("init", s);
  if (jt_input_size(&rt) != JT_INPUT_BYTES || jt_output_size(&rt) != JT_OUTPUT_BYTES)
    fail_msg("the firmware was built for another blob's input or output size");
  sh_line l = {.len = 0};
  sh_line_str(&l, "init arena=");
  sh_line_u32(&l, (uint32_t)sizeof arena);
  sh_line_str(&l, " state=");
  sh_line_u32(&l, (uint32_t)sizeof state);
  sh_line_str(&l, " input=");
  sh_line_u32(&l, JT_INPUT_BYTES);
  sh_line_str(&l, " output=");
  sh_line_u32(&l, JT_OUTPUT_BYTES);
  sh_line_str(&l, " slot=");
  sh_line_u32(&l, jt_slot_size(&rt));
  sh_line_end(&l);

  samples train;
  if (!open_samples("train.bin", &train) || train.count == 0) fail_msg("no train.bin samples");
  int32_t flash_handle = open_flash(2u * jt_slot_size(&rt));
  const jt_flash flash = {flash_read, flash_write, &flash_handle};
  s = jt_slots_load(&rt, &flash);
  if (s == JT_OK) {
    sh_line_str(&l, "resume step=");
    sh_line_u32(&l, jt_step_count(&rt));
    sh_line_end(&l);
  } else if (s == JT_E_NO_IMAGE) {
    sh_puts("fresh\n");
  } else {
    fail("load", s);
  }

  (void)read_sample(&train, 0);
  uint64_t t0 = jt_port_instructions();
  if ((s = jt_infer(&rt, input, logits)) != JT_OK) fail("infer", s);
  sh_line_str(&l, "infer0 instructions=");
  sh_line_u64(&l, jt_port_instructions() - t0);
  print_logits(&l);
  profile_print("infer");

  for (uint32_t k = 0; k < steps; k++) {
    const uint32_t step = jt_step_count(&rt);
    const int32_t label = read_sample(&train, step % train.count);
    float loss;
    t0 = jt_port_instructions();
    s = jt_train_step(&rt, input, label, &loss);
    const uint64_t spent = jt_port_instructions() - t0;
    if (s != JT_OK && s != JT_E_NONFINITE) fail("train", s);
    uint32_t bits;
    __builtin_memcpy(&bits, &loss, 4);
    sh_line_str(&l, "step ");
    sh_line_u32(&l, step);
    sh_line_str(&l, " label=");
    sh_line_i32(&l, label);
    sh_line_str(&l, " loss=0x");
    sh_line_hex(&l, bits);
    sh_line_str(&l, " instructions=");
    sh_line_u64(&l, spent);
    sh_line_str(&l, s == JT_OK ? "" : " nonfinite");
    sh_line_end(&l);
    if (k + 1 == steps || (save_every != 0 && (k + 1) % save_every == 0)) {
      t0 = jt_port_instructions();
      if ((s = jt_slots_save(&rt, &flash)) != JT_OK) fail("save", s);
      sh_line_str(&l, "saved step=");
      sh_line_u32(&l, jt_step_count(&rt));
      sh_line_str(&l, " instructions=");
      sh_line_u64(&l, jt_port_instructions() - t0);
      sh_line_end(&l);
    }
  }

  profile_print("train");

  samples test;
  if (open_samples("test.bin", &test)) {
    for (uint32_t i = 0; i < test.count; i++) {
      const int32_t label = read_sample(&test, i);
      if ((s = jt_infer(&rt, input, logits)) != JT_OK) fail("infer", s);
      sh_line_str(&l, "test ");
      sh_line_u32(&l, i);
      sh_line_str(&l, " label=");
      sh_line_i32(&l, label);
      print_logits(&l);
    }
  }
  sh_line_str(&l, "stack bytes=");
  sh_line_u32(&l, jt_port_stack_used());
  sh_line_end(&l);
  sh_puts("done\n");
  return 0;
}
