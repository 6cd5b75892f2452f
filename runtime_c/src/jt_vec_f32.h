/* float32 vector loops shared by the backward kernels. Each keeps the order of its sums
 * term by term (no reassociation, no fused multiply-add: the build has -ffp-contract=off),
 * so a kernel built on them stays bit-exact with the reference; the blocking only shares
 * loads between independent sums. */
#ifndef JT_VEC_F32_H
#define JT_VEC_F32_H

#include <stdint.h>

/* s + a[0] * b[0] + a[1] * b[1] + ..., left to right. */
static inline float jt_dot_from_f32(float s, const float *a, const float *b, uint32_t n) {
  uint32_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s += a[i] * b[i];
    s += a[i + 1] * b[i + 1];
    s += a[i + 2] * b[i + 2];
    s += a[i + 3] * b[i + 3];
  }
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

/* s[q] carries on its sum over a[q * stride + i] * b[i], i = 0..n-1 ascending, for the
 * rows q < rows; four rows at a time share each load of b. */
static inline void jt_dot_rows_from_f32(float *s, const float *a, uint32_t stride,
                                        const float *b, uint32_t n, uint32_t rows) {
  uint32_t q = 0;
  for (; q + 4 <= rows; q += 4) {
    const float *a0 = a + q * stride, *a1 = a0 + stride, *a2 = a1 + stride, *a3 = a2 + stride;
    float s0 = s[q], s1 = s[q + 1], s2 = s[q + 2], s3 = s[q + 3];
    for (uint32_t i = 0; i < n; i++) {
      const float v = b[i];
      s0 += a0[i] * v;
      s1 += a1[i] * v;
      s2 += a2[i] * v;
      s3 += a3[i] * v;
    }
    s[q] = s0;
    s[q + 1] = s1;
    s[q + 2] = s2;
    s[q + 3] = s3;
  }
  for (; q < rows; q++) s[q] = jt_dot_from_f32(s[q], a + q * stride, b, n);
}

/* y[i] += g * w[i]. */
static inline void jt_axpy_f32(float *y, float g, const float *w, uint32_t n) {
  uint32_t i = 0;
  for (; i + 4 <= n; i += 4) {
    y[i] += g * w[i];
    y[i + 1] += g * w[i + 1];
    y[i + 2] += g * w[i + 2];
    y[i + 3] += g * w[i + 3];
  }
  for (; i < n; i++) y[i] += g * w[i];
}

/* y[e * stride + i] += g[e * g_stride] * w[i] for the rows e < rows, i < n: eight
 * weights at a time stay in registers across all the rows. */
static inline void jt_axpy_rows_f32(float *y, uint32_t stride, const float *g, uint32_t g_stride,
                                    uint32_t rows, const float *w, uint32_t n) {
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const float w0 = w[i], w1 = w[i + 1], w2 = w[i + 2], w3 = w[i + 3];
    const float w4 = w[i + 4], w5 = w[i + 5], w6 = w[i + 6], w7 = w[i + 7];
    float *d = y + i;
    const float *ge = g;
    for (uint32_t e = 0; e < rows; e++, d += stride, ge += g_stride) {
      const float v = *ge;
      d[0] += v * w0;
      d[1] += v * w1;
      d[2] += v * w2;
      d[3] += v * w3;
      d[4] += v * w4;
      d[5] += v * w5;
      d[6] += v * w6;
      d[7] += v * w7;
    }
  }
  if (i < n)
    for (uint32_t e = 0; e < rows; e++) jt_axpy_f32(y + e * stride + i, g[e * g_stride], w + i, n - i);
}

#endif
