/* ARM semihosting (the debugger's I/O channel; QEMU's -semihosting): files of the host's
 * working directory, the console, the command line and the exit status. For the demo
 * application only: the runtime library itself does no I/O. */
#ifndef JT_SEMIHOST_H
#define JT_SEMIHOST_H

#include <stdint.h>

/* fopen-style modes of SYS_OPEN */
enum { SH_READ_BIN = 1, SH_UPDATE_BIN = 3, SH_WRITE_BIN = 5, SH_CREATE_UPDATE_BIN = 7 };

/* A handle >= 0, or -1 when the file cannot be opened. */
int32_t sh_open(const char *name, int32_t mode);
int32_t sh_close(int32_t handle);
/* Both return the number of bytes NOT transferred (0 = all of them), -1 on error. */
int32_t sh_read(int32_t handle, void *dst, uint32_t len);
int32_t sh_write(int32_t handle, const void *src, uint32_t len);
int32_t sh_seek(int32_t handle, uint32_t offset);
int32_t sh_flen(int32_t handle);
/* The command line QEMU was given (-semihosting-config arg=...), NUL-terminated. */
int32_t sh_cmdline(char *buf, uint32_t len);
void sh_puts(const char *s);
/* Ends the emulation with `code` as QEMU's exit status. */
void sh_exit(int32_t code) __attribute__((noreturn));

/* A line being written: appended to (sent in pieces when longer than buf), ended with
 * sh_line_end. */
typedef struct {
  char buf[96];
  uint32_t len;
} sh_line;
void sh_line_str(sh_line *l, const char *s);
void sh_line_u32(sh_line *l, uint32_t v);
void sh_line_i32(sh_line *l, int32_t v);
void sh_line_u64(sh_line *l, uint64_t v);
void sh_line_hex(sh_line *l, uint32_t v);
void sh_line_end(sh_line *l);

#endif
