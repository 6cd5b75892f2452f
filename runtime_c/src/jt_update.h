/* The optimizer step of one trained parameter, element by element (lowering/executor.py
 * `_step`, lowering/kernels.py learning_rate / optimizer_step / hash_uniform /
 * apply_update), and the weight / bias gradients fused with it (conv2d_update_s8,
 * dense_update_s8, bias_update_i32): the update ops and the fused bottleneck backward call
 * it.
 *
 * Arithmetic, per element with flat (row-major) index e in output channel r = e / row_size:
 *   g      = grad * inv[r]                                   (real units, QAS)
 *   SGD:   d = lr * g;  with momentum: m' = momentum * m + g, d = lr * m'
 *   Adam:  m' = b1 * m + (1 - b1) * g;  v' = b2 * v + ((1 - b2) * g) * g
 *          k = f32(step) + 1;  d = (lr * (m' / (1 - b1**k))) / (sqrt(v' / (1 - b2**k)) + eps)
 *   delta  = d * inv[r]
 *   if delta or a new slot is not finite: p and its slots keep their old values
 *   int8:  p' = clamp(round(f32(p) - delta), -127, 127)
 *   int32: p' = sat32(p + clamp(round(-delta), -2**30, 2**30))
 *   round: nearest = rint (half to even); stochastic = floor(v + u), u = hash_uniform in
 *          [0, 1) of (seed, step, pid, e).
 * Every float operation is float32, in the order the numpy reference evaluates it; the
 * transcendental functions are jt_math.h's (lowering/mathf.py mirrors them).
 */
#ifndef JT_UPDATE_H
#define JT_UPDATE_H

#include "jt_internal.h"

/* Optimizer constants (the blob header's, as float32) and the rounding mode. */
typedef struct {
  uint32_t optimizer;  /* 0 sgd, 1 adam */
  uint32_t schedule;   /* 0 constant, 1 cosine */
  uint32_t steps;      /* cosine: its length (>= 1; 0 is taken as "already at the end") */
  uint32_t rounding;   /* 0 nearest, 1 stochastic */
  uint32_t seed;
  float lr, final_lr;
  float amplitude;     /* cosine: float32(0.5 * (lr - final)) formed in float64 */
  float momentum, b1, b2, eps;
} jt_optim_params;

/* Everything one update op needs, read once per op. */
typedef struct {
  const jt_runtime *rt; /* NULL when bound by the pure kernels below */
  void *p;              /* int8 weight or int32 bias (state) */
  uint32_t p_dtype;     /* JT_DTYPE_I8 or JT_DTYPE_I32 */
  const float *inv;     /* QAS factor per output channel (axis 0 of p) */
  float *slots[2];      /* optimizer state shaped like p: SGD momentum m; Adam m, v */
  uint32_t n_slots;
  uint32_t row_size;    /* elements of p per output channel */
  int32_t pid;          /* the parameter's id in the stochastic-rounding hash */
  int32_t step;         /* the step counter before this step */
  float lr;             /* the schedule's rate at this step */
  /* derived once per op */
  jt_optim_params prm;
  float one_minus_b1, one_minus_b2; /* 1 - b1, 1 - b2 */
  float corr1, corr2;   /* Adam: 1 - b1**k, 1 - b2**k */
  uint32_t hash_base;   /* the hash's (seed, step, pid) part */
} jt_update_ctx;

/* Optimizer state slots per parameter for the blob's optimizer (verified at init: 0 sgd,
 * 1 adam): adam 2 (m, v), sgd 1 (m) with momentum, else 0. */
uint32_t jt_update_slots(const jt_runtime *rt);

/* Bind ctx to parameter p_id with its QAS factors inv_id, optimizer state slot_ids and the
 * step counter step_id (all verified tensors). */
void jt_update_begin(jt_update_ctx *ctx, const jt_runtime *rt, int32_t pid, int32_t p_id,
                     int32_t inv_id, const int32_t *slot_ids, uint32_t n_slots,
                     int32_t step_id);

/* One element's update: `index` is its flat (row-major) index in p, `grad` its float32
 * gradient (before the QAS factor). A non-finite delta or slot leaves the element's
 * parameter and slots as they were. */
void jt_update_apply(const jt_update_ctx *ctx, uint32_t index, float grad);

/* --- pure kernels (no runtime, no blob: the tests call them through ctypes) ------------ */

/* The schedule's rate at `step` (kernels.learning_rate). */
float jt_learning_rate_f32(const jt_optim_params *prm, int32_t step);

/* u in [0, 1) of element `index` (kernels.hash_uniform): lowbias32 of
 * seed * 0x9E3779B1 + step * 0x85EBCA77 + pid * 0xC2B2AE3D + index (uint32, wrapping), its
 * top 24 bits times 2**-24. */
float jt_hash_uniform_f32(uint32_t seed, uint32_t step, uint32_t pid, uint32_t index);

/* Bind ctx without a runtime: p is int8 (p_dtype JT_DTYPE_I8) or int32 (JT_DTYPE_I32),
 * `rows` output channels of row_size elements, slots[0..n_slots) shaped like p. */
void jt_update_bind(jt_update_ctx *ctx, const jt_optim_params *prm, void *p, uint32_t p_dtype,
                    const float *inv, float *const *slots, uint32_t n_slots, uint32_t row_size,
                    int32_t pid, int32_t step);

/* The update of a whole parameter (rows * row_size elements) from its gradient, in place:
 * p int8 (weight) or int32 (bias); m, v the slots (NULL when the optimizer has fewer). */
jt_status jt_update_s8(int8_t *p, float *m, float *v, const float *grad, const float *inv,
                       uint32_t rows, uint32_t row_size, uint32_t n_slots, int32_t pid,
                       int32_t step, const jt_optim_params *prm);
jt_status jt_update_i32(int32_t *p, float *m, float *v, const float *grad, const float *inv,
                        uint32_t rows, uint32_t row_size, uint32_t n_slots, int32_t pid,
                        int32_t step, const jt_optim_params *prm);

/* The real steps d[0..n) of gradients g in real units (kernels.optimizer_step, no QAS
 * factor, no non-finite rule), the slots m, v replaced by their new values in place. */
jt_status jt_optimizer_step_f32(const float *g, float *m, float *v, float *d, uint32_t n,
                                uint32_t n_slots, int32_t step, const jt_optim_params *prm);

/* Geometry of a convolution's weight gradient (kernels.conv2d_bw_weight).
 * x: int8 NHWC (n, h, w, c); g: float32 (n, ho, wo, gc); gradient: OHWI (o, kh, kw, ci)
 * with og = o / groups output channels per group: output channel r reads input channels
 * (r / og) * ci .. + ci and g channel g_channel[r] (r when g_channel is NULL: a depthwise
 * channel subset reads the selected channels of the layer's full gradient). */
typedef struct {
  uint32_t n, h, w, c;
  uint32_t ho, wo, gc;
  uint32_t o, kh, kw, ci, og;
  uint32_t stride_h, stride_w, pad_top, pad_left;
  int32_t x_zero;
  const int32_t *g_channel;
} jt_conv_bw_weight_params;

/* One output channel `r` of a convolution's weight gradient: kh * kw * ci floats, each a
 * running float32 sum over the positions (n, y, x) in row-major order from the first
 * term, padded taps contributing g * 0.0f. */
jt_status jt_conv2d_bw_weight_f32_row(const float *g, const int8_t *x,
                                      const jt_conv_bw_weight_params *prm, uint32_t r,
                                      float *row);

/* One output channel `r` of a dense weight gradient: g float32 (n, o), x int8 (n, k);
 * row[j] = running sum over the batch of g[b, r] * (x[b, j] - x_zero). */
jt_status jt_dense_bw_weight_f32_row(const float *g, const int8_t *x, uint32_t n, uint32_t o,
                                     uint32_t k, int32_t x_zero, uint32_t r, float *row);

/* A bias gradient: g float32 (positions, c); out[j] = running sum over the positions. */
jt_status jt_bias_bw_f32(const float *g, uint32_t positions, uint32_t c, float *out);

#endif
