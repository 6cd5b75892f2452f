/* The loss's small ops: kernels, adapters and checks (jt_loss_ops.h). Definitions:
 * lowering/executor.py, section "small ops of the loss". */
#include "jt_loss_ops.h"

#include <string.h>

#include "jt_internal.h"
#include "jt_math.h"

/* --- scalar helpers ---------------------------------------------------------------------- */

/* uint32 -> int32 two's complement (a plain cast is implementation-defined above
 * INT32_MAX); compiles to nothing. */
static int32_t u2i(uint32_t u) {
  return u <= (uint32_t)INT32_MAX ? (int32_t)u : -(int32_t)(~u) - 1;
}

/* The low byte as int8 (wraps, as a narrowing numpy astype). */
static int8_t u2i8(uint32_t u) {
  uint32_t b = u & 0xffu;
  return (int8_t)(b < 128u ? (int32_t)b : (int32_t)b - 256);
}

/* NaN-propagating max / min; between equal values (+0 and -0) the bits decide: AND gives
 * +0 for max, OR -0 for min. */
static float fmax_nan(float a, float b) {
  if (jt_isnanf(a)) return a;
  if (jt_isnanf(b)) return b;
  if (a > b) return a;
  if (b > a) return b;
  return jt_ffrom(jt_fbits(a) & jt_fbits(b));
}

static float fmin_nan(float a, float b) {
  if (jt_isnanf(a)) return a;
  if (jt_isnanf(b)) return b;
  if (a < b) return a;
  if (b < a) return b;
  return jt_ffrom(jt_fbits(a) | jt_fbits(b));
}

uint32_t jt_dtype_size(uint32_t dtype) {
  switch (dtype) {
    case JT_DTYPE_I8:
    case JT_DTYPE_BOOL: return 1;
    case JT_DTYPE_I32:
    case JT_DTYPE_F32:
    case JT_DTYPE_U32: return 4;
    default: return 0;
  }
}

/* --- cast -------------------------------------------------------------------------------- */

/* float -> integer in [lo, hi]: truncate toward zero, saturate, NaN -> 0; lo, hi are
 * exact floats' integers (the clamp happens in float, so no cast is out of range). */
static float f_trunc_clamp(float x, float lo, float hi) {
  float t;
  if (jt_isnanf(x)) return 0.0f;
  if (x <= lo) return lo;
  if (x >= hi) return hi;
  t = jt_floorf(x < 0.0f ? -x : x);
  return x < 0.0f ? -t : t;
}

jt_status jt_cast(const void *x, uint32_t x_dtype, void *y, uint32_t y_dtype, uint32_t n) {
  uint32_t i;
  for (i = 0; i < n; i++) {
    /* Read as (float, or exact integer in 64 bits). */
    int is_float = 0;
    float f = 0.0f;
    int64_t v = 0;
    switch (x_dtype) {
      case JT_DTYPE_I8: v = ((const int8_t *)x)[i]; break;
      case JT_DTYPE_I32: v = ((const int32_t *)x)[i]; break;
      case JT_DTYPE_U32: v = ((const uint32_t *)x)[i]; break;
      case JT_DTYPE_BOOL: v = ((const uint8_t *)x)[i] != 0; break;
      case JT_DTYPE_F32: f = ((const float *)x)[i]; is_float = 1; break;
      default: return JT_E_DTYPE;
    }
    switch (y_dtype) {
      case JT_DTYPE_F32:
        /* int -> float rounds to nearest (every value fits int32 or uint32: one rounding) */
        ((float *)y)[i] = is_float ? f
                          : x_dtype == JT_DTYPE_U32 ? (float)(uint32_t)v : (float)(int32_t)v;
        break;
      case JT_DTYPE_BOOL:
        ((uint8_t *)y)[i] = (uint8_t)(is_float ? f != 0.0f : v != 0);
        break;
      case JT_DTYPE_I32:
        ((int32_t *)y)[i] = is_float ? jt_f32_to_i32(f) : u2i((uint32_t)v);
        break;
      case JT_DTYPE_U32:
        if (is_float) {
          float t = f_trunc_clamp(f, 0.0f, 4294967296.0f);
          ((uint32_t *)y)[i] = t >= 4294967296.0f ? UINT32_MAX : (uint32_t)t;
        } else {
          ((uint32_t *)y)[i] = (uint32_t)v; /* modulo 2^32 */
        }
        break;
      case JT_DTYPE_I8:
        if (is_float) {
          ((int8_t *)y)[i] = (int8_t)(int32_t)f_trunc_clamp(f, -128.0f, 127.0f);
        } else {
          ((int8_t *)y)[i] = u2i8((uint32_t)v);
        }
        break;
      default: return JT_E_DTYPE;
    }
  }
  return JT_OK;
}

/* --- unary ------------------------------------------------------------------------------- */

jt_status jt_unary_f32(const float *x, void *y, uint32_t n, uint32_t fn) {
  float *yf = (float *)y;
  uint32_t i;
  if (fn == JT_UNARY_IS_FINITE) {
    for (i = 0; i < n; i++) ((uint8_t *)y)[i] = (uint8_t)jt_isfinitef(x[i]);
    return JT_OK;
  }
  for (i = 0; i < n; i++) {
    float v = x[i], r;
    switch (fn) {
      case JT_UNARY_NEG: r = -v; break;
      case JT_UNARY_EXP: r = jt_expf(v); break;
      case JT_UNARY_LOG: r = jt_logf(v); break;
      case JT_UNARY_FLOOR: r = jt_floorf(v); break;
      case JT_UNARY_SQRT: r = jt_sqrtf(v); break;
      case JT_UNARY_ABS: r = jt_ffrom(jt_fbits(v) & 0x7fffffffu); break;
      case JT_UNARY_SIGN: r = v > 0.0f ? 1.0f : v < 0.0f ? -1.0f : v; break;
      case JT_UNARY_LOG1P: r = jt_log1pf(v); break;
      case JT_UNARY_EXPM1: r = jt_expm1f(v); break;
      case JT_UNARY_LOGISTIC: r = jt_logisticf(v); break;
      case JT_UNARY_TANH: r = jt_tanhf(v); break;
      case JT_UNARY_CEIL: r = jt_ceilf(v); break;
      default: return JT_E_ATTR;
    }
    yf[i] = r;
  }
  return JT_OK;
}

/* neg, abs, sign, not on 32-bit integers, as uint32 bits (no signed overflow). */
static jt_status unary_int(const uint32_t *x, uint32_t *y, uint32_t n, uint32_t fn,
                           int is_signed) {
  uint32_t i;
  for (i = 0; i < n; i++) {
    uint32_t v = x[i];
    int neg = is_signed && (v & 0x80000000u);
    switch (fn) {
      case JT_UNARY_NEG: y[i] = 0u - v; break;
      case JT_UNARY_ABS: y[i] = neg ? 0u - v : v; break; /* abs(INT32_MIN) = INT32_MIN */
      case JT_UNARY_SIGN: y[i] = neg ? 0xffffffffu : v != 0u; break;
      case JT_UNARY_NOT: y[i] = ~v; break;
      default: return JT_E_ATTR;
    }
  }
  return JT_OK;
}

jt_status jt_unary_i32(const int32_t *x, int32_t *y, uint32_t n, uint32_t fn) {
  return unary_int((const uint32_t *)(const void *)x, (uint32_t *)(void *)y, n, fn, 1);
}

jt_status jt_unary_u32(const uint32_t *x, uint32_t *y, uint32_t n, uint32_t fn) {
  return unary_int(x, y, n, fn, 0);
}

jt_status jt_unary_bool(const uint8_t *x, uint8_t *y, uint32_t n, uint32_t fn) {
  uint32_t i;
  if (fn != JT_UNARY_NOT) return JT_E_ATTR;
  for (i = 0; i < n; i++) y[i] = (uint8_t)(x[i] == 0);
  return JT_OK;
}

/* --- binary ------------------------------------------------------------------------------ */

static int is_comparison(uint32_t fn) { return fn >= JT_BINARY_LT && fn <= JT_BINARY_NE; }

/* A comparison of two values already ordered by their type: lt / eq as flags. */
static uint8_t compare(uint32_t fn, int lt, int gt, int eq) {
  switch (fn) {
    case JT_BINARY_LT: return (uint8_t)lt;
    case JT_BINARY_GT: return (uint8_t)gt;
    case JT_BINARY_LE: return (uint8_t)(lt || eq);
    case JT_BINARY_GE: return (uint8_t)(gt || eq);
    case JT_BINARY_EQ: return (uint8_t)eq;
    default: return (uint8_t)!eq; /* ne */
  }
}

jt_status jt_binary_f32(const float *a, uint32_t sa, const float *b, uint32_t sb, void *y,
                        uint32_t n, uint32_t fn) {
  uint32_t i;
  if (fn == JT_BINARY_AND || fn == JT_BINARY_OR || fn > JT_BINARY_POW) return JT_E_ATTR;
  for (i = 0; i < n; i++) {
    float u = a[i * sa], v = b[i * sb], r;
    if (is_comparison(fn)) {
      /* IEEE: every comparison with a NaN is false, except ne */
      ((uint8_t *)y)[i] = compare(fn, u < v, u > v, u == v);
      continue;
    }
    switch (fn) {
      case JT_BINARY_ADD: r = u + v; break;
      case JT_BINARY_SUB: r = u - v; break;
      case JT_BINARY_MUL: r = u * v; break;
      case JT_BINARY_DIV: r = u / v; break;
      case JT_BINARY_MAX: r = fmax_nan(u, v); break;
      case JT_BINARY_MIN: r = fmin_nan(u, v); break;
      default: r = jt_powf(u, v); break;
    }
    ((float *)y)[i] = r;
  }
  return JT_OK;
}

/* 32-bit integer arithmetic on uint32 bits: wrap-around add / sub / mul, the executor's
 * division. */
static jt_status binary_int(const uint32_t *a, uint32_t sa, const uint32_t *b, uint32_t sb,
                            void *y, uint32_t n, uint32_t fn, int is_signed) {
  uint32_t i;
  if (fn == JT_BINARY_POW || fn > JT_BINARY_POW) return JT_E_ATTR;
  for (i = 0; i < n; i++) {
    uint32_t u = a[i * sa], v = b[i * sb], r;
    /* order: flip the sign bit so that unsigned order is signed order */
    uint32_t bias = is_signed ? 0x80000000u : 0u;
    uint32_t ou = u ^ bias, ov = v ^ bias;
    if (is_comparison(fn)) {
      ((uint8_t *)y)[i] = compare(fn, ou < ov, ou > ov, u == v);
      continue;
    }
    switch (fn) {
      case JT_BINARY_ADD: r = u + v; break;
      case JT_BINARY_SUB: r = u - v; break;
      case JT_BINARY_MUL: r = u * v; break;
      case JT_BINARY_DIV:
        if (v == 0u) {
          r = 0xffffffffu;                     /* x / 0 = -1 (all bits set) */
        } else if (!is_signed) {
          r = u / v;
        } else if (u == 0x80000000u && v == 0xffffffffu) {
          r = u;                               /* INT32_MIN / -1 = INT32_MIN */
        } else {
          r = (uint32_t)(u2i(u) / u2i(v));     /* C99 truncates toward zero */
        }
        break;
      case JT_BINARY_MAX: r = ou > ov ? u : v; break;
      case JT_BINARY_MIN: r = ou < ov ? u : v; break;
      case JT_BINARY_AND: r = u & v; break;
      default: r = u | v; break;              /* or */
    }
    ((uint32_t *)y)[i] = r;
  }
  return JT_OK;
}

jt_status jt_binary_i32(const int32_t *a, uint32_t sa, const int32_t *b, uint32_t sb, void *y,
                        uint32_t n, uint32_t fn) {
  return binary_int((const uint32_t *)(const void *)a, sa, (const uint32_t *)(const void *)b,
                    sb, y, n, fn, 1);
}

jt_status jt_binary_u32(const uint32_t *a, uint32_t sa, const uint32_t *b, uint32_t sb,
                        void *y, uint32_t n, uint32_t fn) {
  return binary_int(a, sa, b, sb, y, n, fn, 0);
}

jt_status jt_binary_bool(const uint8_t *a, uint32_t sa, const uint8_t *b, uint32_t sb,
                         uint8_t *y, uint32_t n, uint32_t fn) {
  uint32_t i;
  if (!is_comparison(fn) && fn != JT_BINARY_AND && fn != JT_BINARY_OR) return JT_E_ATTR;
  for (i = 0; i < n; i++) {
    int u = a[i * sa] != 0, v = b[i * sb] != 0;
    if (fn == JT_BINARY_AND) {
      y[i] = (uint8_t)(u && v);
    } else if (fn == JT_BINARY_OR) {
      y[i] = (uint8_t)(u || v);
    } else {
      y[i] = compare(fn, u < v, u > v, u == v);
    }
  }
  return JT_OK;
}

/* --- select ------------------------------------------------------------------------------ */

jt_status jt_select(const uint8_t *pred, uint32_t sp, const void *a, const void *b, void *y,
                    uint32_t n, uint32_t elem_size) {
  uint32_t i;
  const uint8_t *pa = (const uint8_t *)a, *pb = (const uint8_t *)b;
  uint8_t *py = (uint8_t *)y;
  if (elem_size != 1u && elem_size != 4u) return JT_E_DTYPE;
  for (i = 0; i < n; i++) {
    const uint8_t *src = pred[i * sp] ? pb : pa;
    memcpy(py + i * elem_size, src + i * elem_size, elem_size);
  }
  return JT_OK;
}

/* --- reduce ------------------------------------------------------------------------------ */

jt_status jt_reduce(const void *x, const uint32_t *dims, uint32_t rank, uint32_t axes_mask,
                    void *y, uint32_t dtype, uint32_t fn) {
  /* kept axes (in order), then reduced axes (in order): each output element sums its
   * reduced elements with the last reduced axis fastest (row-major over them) */
  uint32_t kd[JT_MAX_RANK], ks[JT_MAX_RANK], rd[JT_MAX_RANK], rs[JT_MAX_RANK];
  uint32_t ki[JT_MAX_RANK], ri[JT_MAX_RANK];
  uint32_t nk = 0, nr = 0, stride = 1, n_out = 1, n_red = 1, o, t, k;
  int a;
  if (rank > JT_MAX_RANK) return JT_E_SHAPE;
  if (dtype != JT_DTYPE_F32 && dtype != JT_DTYPE_I32 && dtype != JT_DTYPE_U32)
    return JT_E_DTYPE;
  if (fn > JT_REDUCE_MIN) return JT_E_ATTR;
  /* element strides of x */
  {
    uint32_t s[JT_MAX_RANK];
    for (a = (int)rank - 1; a >= 0; a--) {
      s[a] = stride;
      stride *= dims[a];
    }
    for (k = 0; k < rank; k++) {
      if (axes_mask & (1u << k)) {
        rd[nr] = dims[k];
        rs[nr++] = s[k];
        n_red *= dims[k];
      } else {
        kd[nk] = dims[k];
        ks[nk++] = s[k];
        n_out *= dims[k];
      }
    }
  }
  for (k = 0; k < nk; k++) ki[k] = 0;
  for (o = 0; o < n_out; o++) {
    uint32_t base = 0;
    float facc = 0.0f;
    uint32_t uacc = 0;
    for (k = 0; k < nk; k++) base += ki[k] * ks[k];
    /* the identity of an empty reduction */
    if (fn == JT_REDUCE_MAX) {
      facc = -jt_ffrom(0x7f800000u);
      uacc = dtype == JT_DTYPE_I32 ? 0x80000000u : 0u;
    } else if (fn == JT_REDUCE_MIN) {
      facc = jt_ffrom(0x7f800000u);
      uacc = dtype == JT_DTYPE_I32 ? 0x7fffffffu : 0xffffffffu;
    }
    for (k = 0; k < nr; k++) ri[k] = 0;
    for (t = 0; t < n_red; t++) {
      uint32_t off = base, j;
      for (k = 0; k < nr; k++) off += ri[k] * rs[k];
      if (dtype == JT_DTYPE_F32) {
        float v = ((const float *)x)[off];
        if (t == 0) {
          facc = v;                       /* from the first term, not from +0 */
        } else if (fn == JT_REDUCE_SUM) {
          facc = facc + v;
        } else if (fn == JT_REDUCE_MAX) {
          facc = fmax_nan(facc, v);
        } else {
          facc = fmin_nan(facc, v);
        }
      } else {
        uint32_t v = ((const uint32_t *)x)[off];
        uint32_t bias = dtype == JT_DTYPE_I32 ? 0x80000000u : 0u;
        if (t == 0) {
          uacc = v;
        } else if (fn == JT_REDUCE_SUM) {
          uacc = uacc + v;                /* wraps */
        } else if (fn == JT_REDUCE_MAX) {
          uacc = (v ^ bias) > (uacc ^ bias) ? v : uacc;
        } else {
          uacc = (v ^ bias) < (uacc ^ bias) ? v : uacc;
        }
      }
      for (j = nr; j-- > 0;) {            /* odometer over the reduced axes */
        if (++ri[j] < rd[j]) break;
        ri[j] = 0;
      }
    }
    if (dtype == JT_DTYPE_F32) {
      ((float *)y)[o] = facc;
    } else {
      ((uint32_t *)y)[o] = uacc;
    }
    for (k = nk; k-- > 0;) {              /* odometer over the kept axes */
      if (++ki[k] < kd[k]) break;
      ki[k] = 0;
    }
  }
  return JT_OK;
}

/* --- broadcast, iota --------------------------------------------------------------------- */

jt_status jt_broadcast(const void *x, const uint32_t *x_dims, uint32_t x_rank,
                       const int32_t *map, void *y, const uint32_t *y_dims, uint32_t y_rank,
                       uint32_t elem_size) {
  /* xs[j]: x's element stride along y's axis j (0 where x has no axis or size 1) */
  uint32_t xs[JT_MAX_RANK], idx[JT_MAX_RANK], n = 1, stride = 1, i, j;
  int a;
  const uint8_t *px = (const uint8_t *)x;
  uint8_t *py = (uint8_t *)y;
  if (y_rank > JT_MAX_RANK || x_rank > y_rank) return JT_E_SHAPE;
  if (elem_size != 1u && elem_size != 4u) return JT_E_DTYPE;
  for (j = 0; j < y_rank; j++) {
    xs[j] = 0;
    idx[j] = 0;
    n *= y_dims[j];
  }
  for (a = (int)x_rank - 1; a >= 0; a--) {
    if (x_dims[a] != 1u) xs[map[a]] = stride;
    stride *= x_dims[a];
  }
  for (i = 0; i < n; i++) {
    uint32_t off = 0;
    for (j = 0; j < y_rank; j++) off += idx[j] * xs[j];
    memcpy(py + i * elem_size, px + off * elem_size, elem_size);
    for (j = y_rank; j-- > 0;) {
      if (++idx[j] < y_dims[j]) break;
      idx[j] = 0;
    }
  }
  return JT_OK;
}

jt_status jt_iota(void *y, const uint32_t *dims, uint32_t rank, uint32_t axis, uint32_t dtype) {
  uint32_t outer = 1, inner = 1, o, j, k, i = 0;
  if (axis >= rank || rank > JT_MAX_RANK) return JT_E_ATTR;
  for (k = 0; k < axis; k++) outer *= dims[k];
  for (k = axis + 1; k < rank; k++) inner *= dims[k];
  for (o = 0; o < outer; o++) {
    for (j = 0; j < dims[axis]; j++) {
      for (k = 0; k < inner; k++, i++) {
        if (dtype == JT_DTYPE_F32) {
          ((float *)y)[i] = (float)j;     /* rounds to nearest above 2^24, as numpy */
        } else if (dtype == JT_DTYPE_I32 || dtype == JT_DTYPE_U32) {
          ((uint32_t *)y)[i] = j;
        } else {
          return JT_E_DTYPE;
        }
      }
    }
  }
  return JT_OK;
}

/* --- take_last, scatter_add_last --------------------------------------------------------- */

jt_status jt_take_last(const void *x, uint32_t rows, uint32_t last, int32_t idx, void *y,
                       uint32_t dtype) {
  uint32_t size = jt_dtype_size(dtype), r;
  const uint8_t *px = (const uint8_t *)x;
  uint8_t *py = (uint8_t *)y;
  uint8_t fill[4];
  if (size == 0u) return JT_E_DTYPE;
  if (idx >= 0 && (uint32_t)idx < last) {
    for (r = 0; r < rows; r++)
      memcpy(py + r * size, px + ((uint64_t)r * last + (uint32_t)idx) * size, size);
    return JT_OK;
  }
  /* out of range: JAX's fill value (gather in FILL_OR_DROP mode) */
  switch (dtype) {
    case JT_DTYPE_F32: {
      uint32_t v = 0x7fc00000u;
      memcpy(fill, &v, 4);
      break;
    }
    case JT_DTYPE_I32: {
      uint32_t v = 0x80000000u;
      memcpy(fill, &v, 4);
      break;
    }
    case JT_DTYPE_U32: {
      uint32_t v = 0xffffffffu;
      memcpy(fill, &v, 4);
      break;
    }
    case JT_DTYPE_I8: fill[0] = 0x80u; break;
    default: fill[0] = 1u; break;            /* bool: true */
  }
  for (r = 0; r < rows; r++) memcpy(py + r * size, fill, size);
  return JT_OK;
}

jt_status jt_scatter_add_last(const void *x, uint32_t rows, uint32_t last, int32_t idx,
                              const void *v, void *y, uint32_t dtype) {
  uint32_t r;
  if (dtype != JT_DTYPE_F32 && dtype != JT_DTYPE_I32 && dtype != JT_DTYPE_U32)
    return JT_E_DTYPE;
  if (y != x) memcpy(y, x, (size_t)rows * last * 4u);
  if (idx < 0 || (uint32_t)idx >= last) return JT_OK; /* dropped */
  for (r = 0; r < rows; r++) {
    uint32_t at = r * last + (uint32_t)idx;
    if (dtype == JT_DTYPE_F32) {
      ((float *)y)[at] = ((float *)y)[at] + ((const float *)v)[r];
    } else {
      ((uint32_t *)y)[at] = ((uint32_t *)y)[at] + ((const uint32_t *)v)[r]; /* wraps */
    }
  }
  return JT_OK;
}

/* --- adapters ---------------------------------------------------------------------------- */

static uint32_t dtype_of(const jt_runtime *rt, int32_t id) { return jt_t(rt, id)->dtype; }

jt_status jt_op_cast(jt_runtime *rt, const jt_op *op) {
  return jt_cast(jt_data(rt, op->in[0]), dtype_of(rt, op->in[0]), jt_data(rt, op->out[0]),
                 dtype_of(rt, op->out[0]), jt_numel(rt, op->out[0]));
}

jt_status jt_op_unary(jt_runtime *rt, const jt_op *op) {
  void *x = jt_data(rt, op->in[0]), *y = jt_data(rt, op->out[0]);
  uint32_t n = jt_numel(rt, op->out[0]), fn = (uint32_t)op->attr[0];
  switch (dtype_of(rt, op->in[0])) {
    case JT_DTYPE_F32: return jt_unary_f32((const float *)x, y, n, fn);
    case JT_DTYPE_I32: return jt_unary_i32((const int32_t *)x, (int32_t *)y, n, fn);
    case JT_DTYPE_U32: return jt_unary_u32((const uint32_t *)x, (uint32_t *)y, n, fn);
    default: return jt_unary_bool((const uint8_t *)x, (uint8_t *)y, n, fn);
  }
}

/* One call of the dtype's binary kernel over n elements (strides 0 or 1). */
static jt_status binary_run(uint32_t dtype, const void *a, uint32_t sa, const void *b,
                            uint32_t sb, void *y, uint32_t n, uint32_t fn) {
  switch (dtype) {
    case JT_DTYPE_F32: return jt_binary_f32((const float *)a, sa, (const float *)b, sb, y, n, fn);
    case JT_DTYPE_I32:
      return jt_binary_i32((const int32_t *)a, sa, (const int32_t *)b, sb, y, n, fn);
    case JT_DTYPE_U32:
      return jt_binary_u32((const uint32_t *)a, sa, (const uint32_t *)b, sb, y, n, fn);
    default:
      return jt_binary_bool((const uint8_t *)a, sa, (const uint8_t *)b, sb, (uint8_t *)y, n, fn);
  }
}

/* Element strides of x read as the output's shape: 0 along x's size-1 axes (numpy's
 * broadcasting of two operands of one rank). */
static void broadcast_strides(const jt_tensor_rec *x, const jt_tensor_rec *y,
                              uint32_t strides[JT_MAX_RANK]) {
  uint32_t step = 1;
  for (uint32_t k = y->rank; k-- > 0;) {
    strides[k] = x->dims[k] == 1u && y->dims[k] != 1u ? 0u : step;
    step *= x->dims[k];
  }
}

jt_status jt_op_binary(jt_runtime *rt, const jt_op *op) {
  const uint8_t *a = (const uint8_t *)jt_data(rt, op->in[0]);
  const uint8_t *b = (const uint8_t *)jt_data(rt, op->in[1]);
  uint8_t *y = (uint8_t *)jt_data(rt, op->out[0]);
  const jt_tensor_rec *ta = jt_t(rt, op->in[0]), *tb = jt_t(rt, op->in[1]);
  const jt_tensor_rec *ty = jt_t(rt, op->out[0]);
  uint32_t n = jt_numel(rt, op->out[0]), fn = (uint32_t)op->attr[0], d = ta->dtype;
  if (ta->rank == 0u || tb->rank == 0u || (jt_same_shape(rt, op->in[0], op->out[0]) &&
                                           jt_same_shape(rt, op->in[1], op->out[0])))
    /* a rank-0 operand broadcasts (stride 0) */
    return binary_run(d, a, ta->rank == 0u ? 0u : 1u, b, tb->rank == 0u ? 0u : 1u, y, n, fn);
  uint32_t sa[JT_MAX_RANK], sb[JT_MAX_RANK], idx[JT_MAX_RANK] = {0};
  broadcast_strides(ta, ty, sa);
  broadcast_strides(tb, ty, sb);
  uint32_t in_size = jt_dtype_size(d), out_size = jt_dtype_size(ty->dtype), ia = 0, ib = 0;
  for (uint32_t i = 0; i < n; i++) {
    jt_status s = binary_run(d, a + ia * in_size, 0, b + ib * in_size, 0, y + i * out_size, 1,
                             fn);
    if (s != JT_OK) return s;
    for (uint32_t k = ty->rank; k-- > 0;) { /* next output index, row-major */
      ia += sa[k];
      ib += sb[k];
      if (++idx[k] < ty->dims[k]) break;
      ia -= sa[k] * idx[k];
      ib -= sb[k] * idx[k];
      idx[k] = 0;
    }
  }
  return JT_OK;
}

jt_status jt_op_select(jt_runtime *rt, const jt_op *op) {
  return jt_select((const uint8_t *)jt_data(rt, op->in[0]),
                   jt_rank(rt, op->in[0]) == 0u ? 0u : 1u, jt_data(rt, op->in[1]),
                   jt_data(rt, op->in[2]), jt_data(rt, op->out[0]), jt_numel(rt, op->out[0]),
                   jt_dtype_size(dtype_of(rt, op->out[0])));
}

jt_status jt_op_reduce(jt_runtime *rt, const jt_op *op) {
  uint32_t mask = 0, k, count = (uint32_t)op->attr[1];
  const jt_tensor_rec *x = jt_t(rt, op->in[0]);
  for (k = 0; k < count; k++) mask |= 1u << (uint32_t)op->attr[2 + k];
  return jt_reduce(jt_data(rt, op->in[0]), x->dims, x->rank, mask, jt_data(rt, op->out[0]),
                   x->dtype, (uint32_t)op->attr[0]);
}

jt_status jt_op_broadcast(jt_runtime *rt, const jt_op *op) {
  const jt_tensor_rec *x = jt_t(rt, op->in[0]), *y = jt_t(rt, op->out[0]);
  return jt_broadcast(jt_data(rt, op->in[0]), x->dims, x->rank, op->attr + 1,
                      jt_data(rt, op->out[0]), y->dims, y->rank, jt_dtype_size(y->dtype));
}

jt_status jt_op_iota(jt_runtime *rt, const jt_op *op) {
  const jt_tensor_rec *y = jt_t(rt, op->out[0]);
  return jt_iota(jt_data(rt, op->out[0]), y->dims, y->rank, (uint32_t)op->attr[0], y->dtype);
}

/* rows (all but the last axis) and the last axis of x. */
static void rows_last(const jt_tensor_rec *x, uint32_t *rows, uint32_t *last) {
  uint32_t k;
  *rows = 1;
  for (k = 0; k + 1 < x->rank; k++) *rows *= x->dims[k];
  *last = x->dims[x->rank - 1u];
}

jt_status jt_op_take_last(jt_runtime *rt, const jt_op *op) {
  uint32_t rows, last;
  const jt_tensor_rec *x = jt_t(rt, op->in[0]);
  rows_last(x, &rows, &last);
  return jt_take_last(jt_data(rt, op->in[0]), rows, last,
                      *(const int32_t *)jt_data(rt, op->in[1]), jt_data(rt, op->out[0]),
                      x->dtype);
}

jt_status jt_op_scatter_add_last(jt_runtime *rt, const jt_op *op) {
  uint32_t rows, last;
  const jt_tensor_rec *x = jt_t(rt, op->in[0]);
  rows_last(x, &rows, &last);
  return jt_scatter_add_last(jt_data(rt, op->in[0]), rows, last,
                             *(const int32_t *)jt_data(rt, op->in[1]), jt_data(rt, op->in[2]),
                             jt_data(rt, op->out[0]), x->dtype);
}

/* --- checks ------------------------------------------------------------------------------ */

static int is_value_dtype(uint32_t d) { return jt_dtype_size(d) != 0u; }

static int is_word_dtype(uint32_t d) {
  return d == JT_DTYPE_F32 || d == JT_DTYPE_I32 || d == JT_DTYPE_U32;
}

jt_status jt_check_cast(const jt_runtime *rt, const jt_op *op) {
  if (!is_value_dtype(dtype_of(rt, op->in[0])) || !is_value_dtype(dtype_of(rt, op->out[0])))
    return JT_E_DTYPE;
  return jt_same_shape(rt, op->in[0], op->out[0]) ? JT_OK : JT_E_SHAPE;
}

jt_status jt_check_unary(const jt_runtime *rt, const jt_op *op) {
  uint32_t dx = dtype_of(rt, op->in[0]), dy = dtype_of(rt, op->out[0]);
  uint32_t fn = (uint32_t)op->attr[0];
  if (!jt_same_shape(rt, op->in[0], op->out[0])) return JT_E_SHAPE;
  if (dx == JT_DTYPE_F32) {
    if (fn == JT_UNARY_NOT) return JT_E_ATTR;
    return dy == (fn == JT_UNARY_IS_FINITE ? (uint32_t)JT_DTYPE_BOOL : (uint32_t)JT_DTYPE_F32)
               ? JT_OK : JT_E_DTYPE;
  }
  if (dx != dy) return JT_E_DTYPE;
  if (dx == JT_DTYPE_I32 || dx == JT_DTYPE_U32) {
    return fn == JT_UNARY_NEG || fn == JT_UNARY_ABS || fn == JT_UNARY_SIGN || fn == JT_UNARY_NOT
               ? JT_OK : JT_E_ATTR;
  }
  if (dx == JT_DTYPE_BOOL) return fn == JT_UNARY_NOT ? JT_OK : JT_E_ATTR;
  return JT_E_DTYPE;
}

jt_status jt_check_binary(const jt_runtime *rt, const jt_op *op) {
  int32_t a = op->in[0], b = op->in[1], y = op->out[0];
  uint32_t d = dtype_of(rt, a), fn = (uint32_t)op->attr[0];
  uint32_t want = is_comparison(fn) ? (uint32_t)JT_DTYPE_BOOL : d;
  if (dtype_of(rt, b) != d || dtype_of(rt, y) != want) return JT_E_DTYPE;
  if (d == JT_DTYPE_F32) {
    if (fn == JT_BINARY_AND || fn == JT_BINARY_OR) return JT_E_ATTR;
  } else if (d == JT_DTYPE_I32 || d == JT_DTYPE_U32) {
    if (fn == JT_BINARY_POW) return JT_E_ATTR;
  } else if (d == JT_DTYPE_BOOL) {
    if (!is_comparison(fn) && fn != JT_BINARY_AND && fn != JT_BINARY_OR) return JT_E_ATTR;
  } else {
    return JT_E_DTYPE;
  }
  /* a rank-0 operand broadcast to the other's shape, or operands of the output's rank whose
   * axes are the output's or 1 (numpy's broadcasting) */
  if (jt_rank(rt, a) == 0u && jt_same_shape(rt, b, y)) return JT_OK;
  if (jt_rank(rt, b) == 0u && jt_same_shape(rt, a, y)) return JT_OK;
  const jt_tensor_rec *ta = jt_t(rt, a), *tb = jt_t(rt, b), *ty = jt_t(rt, y);
  if (ta->rank != ty->rank || tb->rank != ty->rank) return JT_E_SHAPE;
  for (uint32_t k = 0; k < ty->rank; k++) {
    uint32_t da = ta->dims[k], db = tb->dims[k], dy = ty->dims[k];
    if ((da != dy && da != 1u) || (db != dy && db != 1u) || dy != (da > db ? da : db))
      return JT_E_SHAPE;
  }
  return JT_OK;
}

jt_status jt_check_select(const jt_runtime *rt, const jt_op *op) {
  int32_t p = op->in[0], a = op->in[1], b = op->in[2], y = op->out[0];
  uint32_t d = dtype_of(rt, y);
  if (dtype_of(rt, p) != JT_DTYPE_BOOL || !is_value_dtype(d) || dtype_of(rt, a) != d ||
      dtype_of(rt, b) != d)
    return JT_E_DTYPE;
  if (!jt_same_shape(rt, a, y) || !jt_same_shape(rt, b, y)) return JT_E_SHAPE;
  return jt_rank(rt, p) == 0u || jt_same_shape(rt, p, y) ? JT_OK : JT_E_SHAPE;
}

jt_status jt_check_reduce(const jt_runtime *rt, const jt_op *op) {
  const jt_tensor_rec *x = jt_t(rt, op->in[0]), *y = jt_t(rt, op->out[0]);
  uint32_t mask = 0, k, j = 0;
  int32_t count = op->attr[1];
  if (!is_word_dtype(x->dtype) || y->dtype != x->dtype) return JT_E_DTYPE;
  if (count < 0 || (uint32_t)count > x->rank || op->n_attr != 2u + (uint32_t)count)
    return JT_E_ATTR;
  for (k = 0; k < (uint32_t)count; k++) {
    int32_t ax = op->attr[2 + k];
    if (ax < 0 || (uint32_t)ax >= x->rank || (mask & (1u << (uint32_t)ax))) return JT_E_ATTR;
    mask |= 1u << (uint32_t)ax;
  }
  /* y = x without the reduced axes */
  if (y->rank != x->rank - (uint32_t)count) return JT_E_SHAPE;
  for (k = 0; k < x->rank; k++) {
    if (mask & (1u << k)) continue;
    if (y->dims[j++] != x->dims[k]) return JT_E_SHAPE;
  }
  return JT_OK;
}

jt_status jt_check_broadcast(const jt_runtime *rt, const jt_op *op) {
  const jt_tensor_rec *x = jt_t(rt, op->in[0]), *y = jt_t(rt, op->out[0]);
  int32_t count = op->attr[0], prev = -1;
  uint32_t k;
  if (!is_value_dtype(x->dtype) || y->dtype != x->dtype) return JT_E_DTYPE;
  if (count < 0 || (uint32_t)count != x->rank || op->n_attr != 1u + (uint32_t)count)
    return JT_E_ATTR;
  for (k = 0; k < x->rank; k++) {
    int32_t d = op->attr[1 + k];
    if (d <= prev || (uint32_t)d >= y->rank) return JT_E_ATTR; /* strictly increasing */
    if (x->dims[k] != 1u && x->dims[k] != y->dims[d]) return JT_E_SHAPE;
    prev = d;
  }
  return JT_OK;
}

jt_status jt_check_iota(const jt_runtime *rt, const jt_op *op) {
  const jt_tensor_rec *y = jt_t(rt, op->out[0]);
  int32_t axis = op->attr[0];
  if (!is_word_dtype(y->dtype)) return JT_E_DTYPE;
  if (axis < 0 || (uint32_t)axis >= y->rank) return JT_E_ATTR;
  /* every index must be an int32 value */
  if (y->dtype == JT_DTYPE_I32 && y->dims[axis] > (uint32_t)INT32_MAX) return JT_E_SHAPE;
  return JT_OK;
}

/* idx is one int32 element; v (or y) is x without its last axis. */
static int one_index(const jt_runtime *rt, int32_t idx) {
  return dtype_of(rt, idx) == JT_DTYPE_I32 && jt_numel(rt, idx) == 1u;
}

/* v holds one element per row of x (x without its last axis, any shape: the executor
 * reshapes, as take_along_axis keeps a unit axis). */
static int drops_last(const jt_tensor_rec *x, const jt_tensor_rec *v) {
  uint32_t k, rows = 1, n = 1;
  if (x->rank == 0u) return 0;
  for (k = 0; k + 1 < x->rank; k++) rows *= x->dims[k];
  for (k = 0; k < v->rank; k++) n *= v->dims[k];
  return n == rows;
}
jt_status jt_check_take_last(const jt_runtime *rt, const jt_op *op) {
  const jt_tensor_rec *x = jt_t(rt, op->in[0]), *y = jt_t(rt, op->out[0]);
  if (!is_value_dtype(x->dtype) || y->dtype != x->dtype || !one_index(rt, op->in[1]))
    return JT_E_DTYPE;
  return drops_last(x, y) ? JT_OK : JT_E_SHAPE;
}

jt_status jt_check_scatter_add_last(const jt_runtime *rt, const jt_op *op) {
  const jt_tensor_rec *x = jt_t(rt, op->in[0]), *v = jt_t(rt, op->in[2]);
  const jt_tensor_rec *y = jt_t(rt, op->out[0]);
  if (!is_word_dtype(x->dtype) || v->dtype != x->dtype || y->dtype != x->dtype ||
      !one_index(rt, op->in[1]))
    return JT_E_DTYPE;
  if (!jt_same_shape(rt, op->in[0], op->out[0]) || !drops_last(x, v)) return JT_E_SHAPE;
  return JT_OK;
}
