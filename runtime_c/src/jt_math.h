/* float32 math of our own, so that the host and every Cortex-M build compute the same bits
 * (newlib's and glibc's expf/logf differ in the last bit). lowering/mathf.py is its numpy
 * mirror, operation for operation: the reference executor calls it, so the executor and
 * this runtime agree bit for bit. Built with -ffp-contract=off, no fast-math. */
#ifndef JT_MATH_H
#define JT_MATH_H

#include <stdint.h>
#include <string.h>

/* The bits of a float32, and the float32 of some bits (memcpy: no aliasing rules broken;
 * compilers turn it into a register move). */
static inline uint32_t jt_fbits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static inline float jt_ffrom(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

int jt_isfinitef(float x);
int jt_isnanf(float x);
float jt_rintf(float x);   /* round half to even (exact) */
float jt_floorf(float x);  /* exact */
float jt_ceilf(float x);   /* exact */
float jt_sqrtf(float x);   /* correctly rounded (IEEE) */
float jt_expf(float x);
float jt_logf(float x);
float jt_cosf(float x);    /* accurate for |x| <= 2*pi at least */
float jt_tanhf(float x);
float jt_log1pf(float x);
float jt_expm1f(float x);
float jt_logisticf(float x);
float jt_powf(float a, float b);
/* float32 -> int32 / int8 after clamping in float (overflowing casts differ between x86
 * and ARM); NaN maps to 0. */
int32_t jt_f32_to_i32(float x);

/* For host tests and tools: y[i] = fn(a[i]) (pow: fn(a[i], b[i]); b unused otherwise) for
 * i < n; returns 0, or 1 for an unknown fn. */
enum {
  JT_MATH_RINT, JT_MATH_FLOOR, JT_MATH_CEIL, JT_MATH_SQRT, JT_MATH_EXP, JT_MATH_LOG,
  JT_MATH_COS, JT_MATH_TANH, JT_MATH_LOG1P, JT_MATH_EXPM1, JT_MATH_LOGISTIC, JT_MATH_POW
};
int jt_math_map(uint32_t fn, const float *a, const float *b, float *y, uint32_t n);
/* y[i] = jt_f32_to_i32(a[i]). */
void jt_math_to_i32(const float *a, int32_t *y, uint32_t n);

#endif
