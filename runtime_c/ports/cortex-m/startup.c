/* Reset, vector table, fault reporting and counters of the Cortex-M port (board.h).
 * Memory comes from cortex-m.ld: .data copied from flash, .bss zeroed, the stack from the
 * end of .bss to the top of RAM. */
#include <stdint.h>

#include "board.h"
#include "semihost.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _stack_top;
int main(void);

#define REG(addr) (*(volatile uint32_t *)(addr))
#define SCB_CPACR REG(0xE000ED88u)
#define SCB_CFSR REG(0xE000ED28u)
#define SCB_HFSR REG(0xE000ED2Cu)
#define SCB_MMFAR REG(0xE000ED34u)
#define SCB_BFAR REG(0xE000ED38u)
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define SYSTICK_RELOAD 0x00FFFFFFu
#define INSTRUCTIONS_PER_TICK 40u
#define PAINT 0xC0DEFEEDu

static volatile uint32_t systick_wraps;

static uint32_t stack_pointer(void) {
  uint32_t sp;
  __asm__ volatile("mov %0, sp" : "=r"(sp));
  return sp;
}

/* Paint from the end of .bss up to 64 bytes below the current stack pointer. */
static void paint_below_sp(void) {
  volatile uint32_t *p = &_ebss;
  const uint32_t *end = (const uint32_t *)(stack_pointer() - 64u);
  while ((const uint32_t *)p < end) *p++ = PAINT;
}

void jt_port_stack_paint(void) { paint_below_sp(); }

uint32_t jt_port_stack_used(void) {
  const uint32_t *p = &_ebss;
  while (p < &_stack_top && *p == PAINT) p++;
  return (uint32_t)((uintptr_t)&_stack_top - (uintptr_t)p);
}

uint64_t jt_port_instructions(void) {
  uint32_t wraps, value;
  do {  /* a wrap between the two reads shows as a changed count: read again */
    wraps = systick_wraps;
    value = SYST_CVR;
  } while (wraps != systick_wraps);
  const uint64_t ticks = (uint64_t)wraps * (SYSTICK_RELOAD + 1u) + (SYSTICK_RELOAD - value);
  return ticks * INSTRUCTIONS_PER_TICK;
}

void Reset_Handler(void) {
  const uint32_t *src = &_sidata;
  for (uint32_t *dst = &_sdata; dst < &_edata;) *dst++ = *src++;
  for (uint32_t *dst = &_sbss; dst < &_ebss;) *dst++ = 0;
  SCB_CPACR |= 0xFu << 20;  /* full access to coprocessors 10 and 11: the FPU */
  __asm__ volatile("dsb\n\tisb" ::: "memory");
  paint_below_sp();
  SYST_RVR = SYSTICK_RELOAD;
  SYST_CVR = 0;
  SYST_CSR = 7u;  /* enable, interrupt on wrap, processor clock */
  sh_exit(main());
}

void SysTick_Handler(void) { systick_wraps++; }

/* Called with the exception frame the fault pushed: report where, then stop QEMU. */
void jt_port_fault(const uint32_t *frame, uint32_t exc_return) {
  sh_line l = {.len = 0};
  sh_line_str(&l, "fault: pc=0x");
  sh_line_hex(&l, frame[6]);
  sh_line_str(&l, " lr=0x");
  sh_line_hex(&l, frame[5]);
  sh_line_str(&l, " cfsr=0x");
  sh_line_hex(&l, SCB_CFSR);
  sh_line_str(&l, " hfsr=0x");
  sh_line_hex(&l, SCB_HFSR);
  sh_line_str(&l, " mmfar=0x");
  sh_line_hex(&l, SCB_MMFAR);
  sh_line_str(&l, " bfar=0x");
  sh_line_hex(&l, SCB_BFAR);
  sh_line_str(&l, " exc_return=0x");
  sh_line_hex(&l, exc_return);
  sh_line_end(&l);
  sh_exit(3);
}

/* Every fault lands here: pick the stack the frame was pushed on (bit 2 of EXC_RETURN). */
__attribute__((naked)) void Fault_Handler(void) {
  __asm__ volatile(
      "tst lr, #4\n\t"
      "ite eq\n\t"
      "mrseq r0, msp\n\t"
      "mrsne r0, psp\n\t"
      "mov r1, lr\n\t"
      "b jt_port_fault\n\t");
}

static void Unexpected_Handler(void) {
  sh_puts("fault: unexpected interrupt\n");
  sh_exit(3);
}

typedef void (*vector)(void);
__attribute__((section(".isr_vector"), used)) static const vector vectors[16] = {
    (vector)(uintptr_t)&_stack_top, Reset_Handler, Unexpected_Handler /* NMI */,
    Fault_Handler /* HardFault */, Fault_Handler /* MemManage */, Fault_Handler /* BusFault */,
    Fault_Handler /* UsageFault */, 0, 0, 0, 0, Unexpected_Handler /* SVCall */,
    Unexpected_Handler /* DebugMon */, 0, Unexpected_Handler /* PendSV */, SysTick_Handler};
