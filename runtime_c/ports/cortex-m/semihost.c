/* ARM semihosting calls (semihost.h): `bkpt 0xAB` with the operation in r0 and a pointer
 * to its argument block in r1; the result comes back in r0. */
#include "semihost.h"

enum {
  SYS_OPEN = 0x01, SYS_CLOSE = 0x02, SYS_WRITE0 = 0x04, SYS_WRITE = 0x05, SYS_READ = 0x06,
  SYS_SEEK = 0x0A, SYS_FLEN = 0x0C, SYS_GET_CMDLINE = 0x15, SYS_EXIT_EXTENDED = 0x20
};
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

static int32_t call(uint32_t op, const void *args) {
  register uint32_t r0 __asm__("r0") = op;
  register const void *r1 __asm__("r1") = args;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return (int32_t)r0;
}

static uint32_t length(const char *s) {
  uint32_t n = 0;
  while (s[n] != '\0') n++;
  return n;
}

int32_t sh_open(const char *name, int32_t mode) {
  const uint32_t args[3] = {(uint32_t)(uintptr_t)name, (uint32_t)mode, length(name)};
  return call(SYS_OPEN, args);
}

int32_t sh_close(int32_t handle) {
  const uint32_t args[1] = {(uint32_t)handle};
  return call(SYS_CLOSE, args);
}

int32_t sh_read(int32_t handle, void *dst, uint32_t len) {
  const uint32_t args[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)dst, len};
  return call(SYS_READ, args);
}

int32_t sh_write(int32_t handle, const void *src, uint32_t len) {
  const uint32_t args[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)src, len};
  return call(SYS_WRITE, args);
}

int32_t sh_seek(int32_t handle, uint32_t offset) {
  const uint32_t args[2] = {(uint32_t)handle, offset};
  return call(SYS_SEEK, args);
}

int32_t sh_flen(int32_t handle) {
  const uint32_t args[1] = {(uint32_t)handle};
  return call(SYS_FLEN, args);
}

int32_t sh_cmdline(char *buf, uint32_t len) {
  uint32_t args[2] = {(uint32_t)(uintptr_t)buf, len};
  return call(SYS_GET_CMDLINE, args);
}

void sh_puts(const char *s) { (void)call(SYS_WRITE0, s); }

void sh_exit(int32_t code) {
  const uint32_t args[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
  (void)call(SYS_EXIT_EXTENDED, args);
  for (;;) {
  }
}

/* Append one character; a full buffer is sent first, so a line may be of any length. */
static void put(sh_line *l, char c) {
  if (l->len + 1 >= sizeof l->buf) {
    l->buf[l->len] = '\0';
    sh_puts(l->buf);
    l->len = 0;
  }
  l->buf[l->len++] = c;
}

void sh_line_str(sh_line *l, const char *s) {
  while (*s != '\0') put(l, *s++);
}

void sh_line_u64(sh_line *l, uint64_t v) {
  char digits[21];
  uint32_t n = 0;
  do {
    digits[n++] = (char)('0' + (int)(v % 10u));
    v /= 10u;
  } while (v != 0u);
  while (n > 0) put(l, digits[--n]);
}

void sh_line_u32(sh_line *l, uint32_t v) { sh_line_u64(l, v); }

void sh_line_i32(sh_line *l, int32_t v) {
  if (v < 0) put(l, '-');
  sh_line_u64(l, v < 0 ? (uint64_t)(-(int64_t)v) : (uint64_t)v);
}

void sh_line_hex(sh_line *l, uint32_t v) {
  static const char hex[] = "0123456789abcdef";
  for (int shift = 28; shift >= 0; shift -= 4) put(l, hex[(v >> shift) & 0xFu]);
}

void sh_line_end(sh_line *l) {
  put(l, '\n');
  l->buf[l->len] = '\0';
  sh_puts(l->buf);
  l->len = 0;
}
