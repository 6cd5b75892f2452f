/* The Arm DSP extension (Cortex-M4 / M7: SIMD on 8- and 16-bit lanes of a register), used
 * by the kernels' hot loops when the target has it and JT_PORTABLE_KERNELS is not defined.
 * Every DSP loop computes exactly what its portable loop computes: integer sums whose
 * order does not matter (no partial sum can overflow: the verifier bounds them), and the
 * float32 loops in the same order as the portable C. */
#ifndef JT_SIMD_H
#define JT_SIMD_H

#include <stdint.h>
#include <string.h>

#if defined(__ARM_FEATURE_DSP) && !defined(JT_PORTABLE_KERNELS)
#define JT_DSP 1
#include <arm_acle.h>

/* Four int8 from any address (Cortex-M4/M7 load words unaligned). */
static inline int32_t jt_ld_s8x4(const int8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

static inline int32_t jt_ror8(int32_t v) {
  const uint32_t u = (uint32_t)v;
  return (int32_t)((u >> 8) | (u << 24));
}

/* Both 16-bit lanes holding -zero: __sxtab16(jt_neg_pair(z), x) is (x0 - z, x2 - z). */
static inline int32_t jt_neg_pair(int32_t zero) {
  const uint32_t h = (uint32_t)(-zero) & 0xFFFFu;
  return (int32_t)(h | (h << 16));
}
#else
#define JT_DSP 0
#endif

#endif
