/* The Arm DSP extension (Cortex-M4 / M7: SIMD on 8- and 16-bit lanes of a register), used
 * by the kernels' hot loops when the target has it and JT_PORTABLE_KERNELS is not defined.
 * Every DSP loop computes exactly what its portable loop computes: integer sums whose
 * order does not matter (no partial sum can overflow: the verifier bounds them), and the
 * float32 loops in the same order as the portable C. */
#ifndef JT_SIMD_H
#define JT_SIMD_H

#include <stdint.h>
#include <string.h>

/* The hottest helpers are forced inline: gcc -O2 otherwise keeps some as calls; a hot
 * loop kept out of line keeps its registers from its caller's pressure. */
#if defined(__GNUC__)
#define JT_ALWAYS_INLINE __attribute__((always_inline))
#define JT_NOINLINE __attribute__((noinline))
#else
#define JT_ALWAYS_INLINE
#define JT_NOINLINE
#endif

/* d[0..n) = s[0..n) (not overlapping), a word at a time: for the short runs of the
 * kernels (patch rows of a few bytes), where a call to memcpy costs more than the copy;
 * the M4/M7 load and store words unaligned. */
static inline void jt_copy_short(int8_t *d, const int8_t *s, uint32_t n) {
  uint32_t k = 0;
  for (; k + 4 <= n; k += 4) {
    int32_t v;
    memcpy(&v, s + k, sizeof v);
    memcpy(d + k, &v, sizeof v);
  }
  for (; k < n; k++) d[k] = s[k];
}

#if defined(__ARM_FEATURE_DSP) && !defined(JT_PORTABLE_KERNELS)
#define JT_DSP 1
#include <arm_acle.h>

/* Four int8 from any address (Cortex-M4/M7 load words unaligned). */
static inline int32_t jt_ld_s8x4(const int8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* The extends of the odd bytes (1 and 3): the rotation in the same instruction (gcc does
 * not fold a separate rotate into the extend). */
static inline JT_ALWAYS_INLINE int32_t jt_sxtab16_ror8(int32_t a, int32_t b) {
  int32_t r;
  __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

static inline JT_ALWAYS_INLINE int32_t jt_sxtb16_ror8(int32_t b) {
  int32_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(b));
  return r;
}

/* *a, *b = p[0], p[1] (p word aligned), p advanced by 2: one LDRD, which gcc does not
 * form from two loads or a 64-bit memcpy here. */
static inline JT_ALWAYS_INLINE void jt_ld2_inc(const int32_t **p, int32_t *a, int32_t *b) {
  __asm__("ldrd %0, %1, [%2], #8"
          : "=r"(*a), "=r"(*b), "+r"(*p)
          : "m"(*(const int32_t(*)[2])(*p)));
}

/* The 16-bit lanes (r0, r1) of y = clamp(r + z, lo, hi), each of z2, lo2, hi2 holding its
 * value in both lanes (lo <= hi int8): r saturated to 16 bits, QADD16 of z and a
 * SSUB16 + SEL per bound keep every lane on the same side of lo and hi as r + z. */
static inline JT_ALWAYS_INLINE int32_t jt_clamp2(int32_t r0, int32_t r1, int32_t z2,
                                                 int32_t lo2, int32_t hi2) {
  int32_t v, t;
  __asm__("ssat %0, #16, %2\n\t"
          "ssat %1, #16, %3\n\t"
          "pkhbt %0, %0, %1, lsl #16\n\t"
          "qadd16 %0, %0, %4\n\t"
          "ssub16 %1, %0, %5\n\t"
          "sel %0, %0, %5\n\t"
          "ssub16 %1, %6, %0\n\t"
          "sel %0, %0, %6"
          : "=&r"(v), "=&r"(t)
          : "r"(r0), "r"(r1), "r"(z2), "r"(lo2), "r"(hi2)
          : "cc");
  return v;
}

/* Both 16-bit lanes holding -zero: __sxtab16(jt_neg_pair(z), x) is (x0 - z, x2 - z). */
static inline int32_t jt_neg_pair(int32_t zero) {
  const uint32_t h = (uint32_t)(-zero) & 0xFFFFu;
  return (int32_t)(h | (h << 16));
}
#if defined(__ARM_FP)
/* float32 -> int32 rounded as the FPSCR says (half to even from reset), saturating. */
static inline JT_ALWAYS_INLINE int32_t jt_round_f32_i32(float t) {
  float r;
  int32_t i;
  __asm__("vcvtr.s32.f32 %0, %1" : "=t"(r) : "t"(t));
  memcpy(&i, &r, sizeof i);
  return i;
}
#endif
#else
#define JT_DSP 0
#endif

#endif
