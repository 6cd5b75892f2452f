/* What the example application (main.c) needs from a board. host_board.c implements it on
 * a PC; on a real board, implement these four functions over the sensor, the flash driver
 * and whatever starts the application, and keep main.c as it is. */
#ifndef JAXTINY_BOARD_H
#define JAXTINY_BOARD_H

#include <stdint.h>

/* Called once, after jt_init: set up the sensor and the storage of the state slots,
 * `flash_bytes` bytes (2 * JT_SLOT_BYTES) that board_flash_read / _write address from
 * offset 0. argc / argv: main's (the host reads its file names there). Returns 0, or
 * nonzero when the board cannot run. */
int board_init(int argc, char **argv, uint32_t flash_bytes);

/* The next training sample: JT_INPUT_BYTES int8 values into x, in the model's input layout
 * (row-major, channels last), and its label in [0, JT_OUTPUT_BYTES) into *label. Returns 1
 * with a sample, 0 when there are no more (then x and *label are left as they were).
 * A board whose sensor gives float values converts them to the blob's int8 input with
 * jt_quantize_input (jaxtiny.h). */
int board_next_sample(int8_t *x, int32_t *label);

/* The storage of the two state slots, jt_flash's callbacks (ctx is NULL): read or write
 * `len` bytes at `offset`, return 0 on success. Flash that must be erased before it is
 * written: give each slot its own sectors (slot k holds offsets k * JT_SLOT_BYTES to
 * (k + 1) * JT_SLOT_BYTES - 1) and erase a sector when a save first writes into it.
 * A save writes its slot from offset 4 on and the slot's first 4 bytes (its sequence
 * number) last, so a reset in the middle of a save keeps the other slot's state. */
int board_flash_read(void *ctx, uint32_t offset, void *dst, uint32_t len);
int board_flash_write(void *ctx, uint32_t offset, const void *src, uint32_t len);

#endif
