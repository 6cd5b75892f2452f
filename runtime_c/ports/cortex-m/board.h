/* What the Cortex-M port gives the application: instruction counting, the stack's
 * high-water mark, and the board's name. */
#ifndef JT_BOARD_H
#define JT_BOARD_H

#include <stdint.h>

/* Instructions retired since reset under QEMU's -icount shift=0 (one instruction per
 * nanosecond of virtual time): SysTick counts the 25 MHz system clock, so one tick is
 * 40 instructions and that is the resolution. On a real board it counts cycles / 1. */
uint64_t jt_port_instructions(void);

/* Bytes of stack touched since the last jt_port_stack_paint (or reset): the stack is
 * painted with a pattern and scanned for the deepest word overwritten. */
uint32_t jt_port_stack_used(void);
/* Paint the free stack below the caller's frame again, to measure a phase on its own. */
void jt_port_stack_paint(void);

#endif
