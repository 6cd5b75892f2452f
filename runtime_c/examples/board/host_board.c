/* board.h on a PC, the stand-in for a board:
 *   jaxtiny_example SAMPLES.jtd [FLASH.bin]
 * SAMPLES.jtd: the samples in order (python -m lowering.export --data writes samples.jtd):
 *   "JTD1", then little-endian u32s: count, input bytes, record bytes; per record the int8
 *   input, padding, and in its last 4 bytes the int32 label.
 * FLASH.bin (default flash.bin): the state slots' storage, created erased (0xFF) when
 * absent or short; it outlives the run, so a second run resumes where the first stopped. */
#include <stdio.h>
#include <stdlib.h>

#include "board.h"
#include "jaxtiny_blob.h"

static FILE *samples, *flash;
static const char *samples_path;
static uint32_t left, padding;

static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int open_samples(const char *path) {
  uint8_t head[16];
  samples_path = path;
  samples = fopen(path, "rb");
  if (samples == NULL) {
    fprintf(stderr, "error: cannot open the samples file %s\n", path);
    return 1;
  }
  if (fread(head, 1, sizeof head, samples) != sizeof head || rd32(head) != 0x3144544Au) {
    fprintf(stderr, "error: %s is not a samples file (JTD1)\n", path);
    return 1;
  }
  const uint32_t input_bytes = rd32(head + 8), record_bytes = rd32(head + 12);
  if (input_bytes != JT_INPUT_BYTES || record_bytes < input_bytes + 4u) {
    fprintf(stderr, "error: %s holds inputs of %u bytes, the blob takes %u\n", path,
            (unsigned)input_bytes, (unsigned)JT_INPUT_BYTES);
    return 1;
  }
  left = rd32(head + 4);
  padding = record_bytes - input_bytes - 4u;
  return 0;
}

static int open_flash(const char *path, uint32_t bytes) {
  flash = fopen(path, "r+b");
  if (flash != NULL && fseek(flash, 0, SEEK_END) == 0 && ftell(flash) >= (long)bytes) return 0;
  if (flash != NULL) fclose(flash);
  flash = fopen(path, "w+b");
  if (flash == NULL) {
    fprintf(stderr, "error: cannot create the flash file %s\n", path);
    return 1;
  }
  for (uint32_t i = 0; i < bytes; i++) {
    if (fputc(0xFF, flash) == EOF) {
      fprintf(stderr, "error: cannot write the flash file %s\n", path);
      return 1;
    }
  }
  return fflush(flash) != 0;
}

int board_init(int argc, char **argv, uint32_t flash_bytes) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s SAMPLES.jtd [FLASH.bin]\n", argc > 0 ? argv[0] : "example");
    return 1;
  }
  return open_samples(argv[1]) || open_flash(argc == 3 ? argv[2] : "flash.bin", flash_bytes);
}

int board_next_sample(int8_t *x, int32_t *label) {
  uint8_t raw[4];
  if (left == 0) return 0;
  if (fread(x, 1, JT_INPUT_BYTES, samples) != JT_INPUT_BYTES ||
      fseek(samples, (long)padding, SEEK_CUR) != 0 || fread(raw, 1, 4, samples) != 4) {
    /* the hook has no error return: a truncated file ends the host run here */
    fprintf(stderr, "error: %s is truncated\n", samples_path);
    exit(2);
  }
  left--;
  *label = (int32_t)rd32(raw);
  return 1;
}

int board_flash_read(void *ctx, uint32_t offset, void *dst, uint32_t len) {
  (void)ctx;
  return fseek(flash, (long)offset, SEEK_SET) != 0 || fread(dst, 1, len, flash) != len;
}

int board_flash_write(void *ctx, uint32_t offset, const void *src, uint32_t len) {
  (void)ctx;
  /* flushed at once, as a flash write lands before the call returns */
  return fseek(flash, (long)offset, SEEK_SET) != 0 || fwrite(src, 1, len, flash) != len ||
         fflush(flash) != 0;
}
