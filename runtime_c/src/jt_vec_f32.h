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

/* jt_dot_rows_from_f32 for two columns at once: s0 with b0 and s1 with b1, every row's
 * load of a shared by the two (four rows at a time). */
static inline void jt_dot_rows2_from_f32(float *s0, float *s1, const float *a, uint32_t stride,
                                         const float *b0, const float *b1, uint32_t n,
                                         uint32_t rows) {
  uint32_t q = 0;
  for (; q + 4 <= rows; q += 4) {
    const float *a0 = a + q * stride, *a1 = a0 + stride, *a2 = a1 + stride, *a3 = a2 + stride;
    float t0 = s0[q], t1 = s0[q + 1], t2 = s0[q + 2], t3 = s0[q + 3];
    float u0 = s1[q], u1 = s1[q + 1], u2 = s1[q + 2], u3 = s1[q + 3];
    for (uint32_t i = 0; i < n; i++) {
      const float v = b0[i], w = b1[i];
      const float x0 = a0[i], x1 = a1[i], x2 = a2[i], x3 = a3[i];
      t0 += x0 * v;
      u0 += x0 * w;
      t1 += x1 * v;
      u1 += x1 * w;
      t2 += x2 * v;
      u2 += x2 * w;
      t3 += x3 * v;
      u3 += x3 * w;
    }
    s0[q] = t0;
    s0[q + 1] = t1;
    s0[q + 2] = t2;
    s0[q + 3] = t3;
    s1[q] = u0;
    s1[q + 1] = u1;
    s1[q + 2] = u2;
    s1[q + 3] = u3;
  }
  for (; q < rows; q++) {
    s0[q] = jt_dot_from_f32(s0[q], a + q * stride, b0, n);
    s1[q] = jt_dot_from_f32(s1[q], a + q * stride, b1, n);
  }
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

/* y[e * stride + i] += g0[e] * w0[i], then += g1[e] * w1[i] (two channels in their
 * order), for e < rows, i < n: each y element is loaded and stored once for the two
 * terms; four weights of each at a time stay in registers. */
static inline void jt_axpy2_rows_f32(float *y, uint32_t stride, const float *g0, const float *g1,
                                     uint32_t rows, const float *w0, const float *w1, uint32_t n) {
  uint32_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float a0 = w0[i], a1 = w0[i + 1], a2 = w0[i + 2], a3 = w0[i + 3];
    const float b0 = w1[i], b1 = w1[i + 1], b2 = w1[i + 2], b3 = w1[i + 3];
    float *d = y + i;
    for (uint32_t e = 0; e < rows; e++, d += stride) {
      const float u = g0[e], v = g1[e];
      d[0] = (d[0] + u * a0) + v * b0;
      d[1] = (d[1] + u * a1) + v * b1;
      d[2] = (d[2] + u * a2) + v * b2;
      d[3] = (d[3] + u * a3) + v * b3;
    }
  }
  for (; i < n; i++) {
    float *d = y + i;
    for (uint32_t e = 0; e < rows; e++, d += stride) *d = (*d + g0[e] * w0[i]) + g1[e] * w1[i];
  }
}

#endif
