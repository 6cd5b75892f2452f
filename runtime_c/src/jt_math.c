/* float32 math of our own (jt_math.h). Every function is a fixed sequence of IEEE float32
 * operations (+ - * / of two floats, each correctly rounded to nearest even) and integer
 * bit manipulation, so it gives the same bits on any C99 platform with IEEE single
 * precision (x86 SSE, Cortex-M4F/M7 FPU, soft-float) and in numpy: lowering/mathf.py
 * mirrors it operation for operation. Requirements: -ffp-contract=off (a fused a*b+c
 * rounds once, the mirror twice), no fast-math, FLT_EVAL_METHOD 0, subnormals not
 * flushed to zero (the Cortex-M FPSCR default).
 *
 * Accuracy (tests/test_c_math.py measures it against float64): within 2 ulp of the true
 * value for every input, except cos for |x| > 4096 (deterministic but not accurate there).
 * NaN payloads are not part of the contract: a NaN result is some NaN.
 *
 * Tools used throughout:
 * - Cody-Waite reduction: a constant c split into parts with trailing zero bits so that
 *   k * part is exact for the k in range, and x - k * part is exact (Sterbenz).
 * - Double-float ("float-float") values hi + lo with |lo| <= ulp(hi) / 2, built from
 *   error-free transformations: two_sum (Knuth), two_prod (Dekker's split, no FMA).
 */
#include "jt_math.h"

/* --- bits ---------------------------------------------------------------------------- */

static float fabs_(float x) { return jt_ffrom(jt_fbits(x) & 0x7fffffffu); }

static float fcopysign(float x, float s) {
  return jt_ffrom((jt_fbits(x) & 0x7fffffffu) | (jt_fbits(s) & 0x80000000u));
}

#define F_INF (jt_ffrom(0x7f800000u))
#define F_NAN (jt_ffrom(0x7fc00000u))

/* 2^k for k in [-126, 127], by its bits. */
static float pow2i(int32_t k) { return jt_ffrom((uint32_t)(k + 127) << 23); }

/* y * 2^k for k in [-252, 254] with one rounding: the first factor keeps y (about 1)
 * normal, only the second can round (subnormal result) or overflow. */
static float scalef(float y, int32_t k) {
  int32_t k1 = k / 2;
  return (y * pow2i(k1)) * pow2i(k - k1);
}

int jt_isnanf(float x) { return (jt_fbits(x) & 0x7fffffffu) > 0x7f800000u; }

int jt_isfinitef(float x) { return (jt_fbits(x) & 0x7fffffffu) < 0x7f800000u; }

/* --- error-free transformations -------------------------------------------------------- */

/* s + e = a + b exactly. */
static void two_sum(float a, float b, float *s, float *e) {
  float ss = a + b;
  float bb = ss - a;
  *e = (a - (ss - bb)) + (b - bb);
  *s = ss;
}

/* s + e = a + b exactly, given |a| >= |b| (or a == 0). */
static void fast_two_sum(float a, float b, float *s, float *e) {
  float ss = a + b;
  *e = b - (ss - a);
  *s = ss;
}

/* a = hi + lo, each with at most 12 significant bits (|a| < 2^115). */
static void split(float a, float *hi, float *lo) {
  float t = 4097.0f * a;
  float h = t - (t - a);
  *hi = h;
  *lo = a - h;
}

/* p + e = a * b exactly (no overflow, no underflow). */
static void two_prod(float a, float b, float *p, float *e) {
  float ah, al, bh, bl;
  float pp = a * b;
  split(a, &ah, &al);
  split(b, &bh, &bl);
  *e = (((ah * bh - pp) + ah * bl) + al * bh) + al * bl;
  *p = pp;
}

/* --- rounding -------------------------------------------------------------------------- */

float jt_rintf(float x) {
  /* Adding and subtracting 2^23 rounds |x| < 2^23 to an integer, ties to even (the
   * default rounding mode); larger floats, inf and NaN are integral already. */
  const float two23 = 8388608.0f;
  float a = fabs_(x);
  if (!(a < two23)) return x;
  return fcopysign((a + two23) - two23, x);
}

float jt_floorf(float x) {
  float t = jt_rintf(x);
  if (t > x) t = t - 1.0f;
  return t == 0.0f ? fcopysign(t, x) : t; /* floor(-0) = -0, floor(0.3) = +0 */
}

float jt_ceilf(float x) {
  float t = jt_rintf(x);
  if (t < x) t = t + 1.0f;
  return t == 0.0f ? fcopysign(t, x) : t; /* ceil(-0.7) = -0 */
}

int32_t jt_f32_to_i32(float x) {
  /* Clamp in float: 2^31 is a float, 2^31 - 1 is not; an out-of-range cast is UB. */
  if (jt_isnanf(x)) return 0;
  if (x >= 2147483648.0f) return INT32_MAX;
  if (x <= -2147483648.0f) return INT32_MIN;
  return (int32_t)x; /* truncates toward zero */
}

/* --- sqrt: correctly rounded, by integer square root ----------------------------------- */

float jt_sqrtf(float x) {
#if defined(JT_HW_SQRT) && defined(__GNUC__)
  /* The FPU's square root is IEEE correctly rounded too, so it gives the same bits. */
  if (!(x >= 0.0f)) return x == 0.0f ? x : F_NAN;
  return __builtin_sqrtf(x);
#else
  uint32_t ix = jt_fbits(x);
  uint32_t m;
  int32_t e;
  uint64_t n, q = 0, r;
  int32_t shift, i;
  if (x == 0.0f) return x;               /* sqrt(-0) = -0 */
  if (ix & 0x80000000u) return F_NAN;    /* x < 0, or a negative NaN */
  if (ix >= 0x7f800000u) return x + x;   /* inf, NaN */
  /* x = m * 2^e with m an integer in [2^23, 2^24) */
  if (ix < 0x00800000u) {                /* subnormal: normalize the integer mantissa */
    m = ix;
    e = -149;
    while (m < 0x00800000u) {
      m <<= 1;
      e -= 1;
    }
  } else {
    m = (ix & 0x7fffffu) | 0x00800000u;
    e = (int32_t)(ix >> 23) - 150;
  }
  if (e & 1) {                           /* make the exponent even: m in [2^23, 2^25) */
    m <<= 1;
    e -= 1;
  }
  /* n = m * 2^shift in [2^46, 2^48) with shift even, so q = isqrt(n) has 24 bits */
  shift = m < 0x01000000u ? 24 : 22;
  n = (uint64_t)m << shift;
  /* q = floor(sqrt(n)) bit by bit from the top (q < 2^24, q^2 < 2^48) */
  for (i = 23; i >= 0; i--) {
    uint64_t cand = q | ((uint64_t)1 << i);
    if (cand * cand <= n) q = cand;
  }
  r = n - q * q;
  if (r > q) q += 1;                     /* nearest: sqrt(n) > q + 1/2 iff r > q */
  return scalef((float)q, (e - shift) / 2);
#endif
}

/* --- exp ------------------------------------------------------------------------------ */

#define LN2_HI 0x1.62e4p-1f       /* 15 significant bits: k * LN2_HI exact for |k| < 2^8 */
#define LN2_LO 0x1.7f7d1cp-20f    /* ln 2 - LN2_HI, rounded */
#define LOG2E 0x1.715476p+0f

/* e^r - 1 for |r| <= 0.35: Taylor to degree 8 (truncation below 2^-30 relative). */
static float expm1_poly(float r) {
  float q = 0x1.a01a02p-16f;            /* 1/8! */
  q = q * r + 0x1.a01a02p-13f;          /* 1/7! */
  q = q * r + 0x1.6c16c2p-10f;          /* 1/6! */
  q = q * r + 0x1.111112p-7f;           /* 1/5! */
  q = q * r + 0x1.555556p-5f;           /* 1/4! */
  q = q * r + 0x1.555556p-3f;           /* 1/3! */
  q = q * r + 0.5f;
  return r + (r * r) * q;
}

/* 2^k * e^(r + c), |r| <= 0.35, |c| tiny (the low part of the reduced argument). */
static float exp_reduced(float r, float c, int32_t k) {
  float p = expm1_poly(r);
  /* e^(r + c) = e^r (1 + c) = 1 + (p + (c + c p)) to first order in c */
  float y = 1.0f + (p + (c + c * p));
  return scalef(y, k);
}

/* e^(x + xl) for a double-float argument (xl = 0 for plain exp). */
static float exp_ff(float x, float xl) {
  float kf, rh, r, c;
  if (x > 89.0f) return F_INF;       /* e^89 > FLT_MAX */
  if (x < -104.0f) return 0.0f;      /* e^-104 < 2^-150: rounds to 0 */
  kf = jt_rintf(x * LOG2E);
  rh = x - kf * LN2_HI;              /* exact (Cody-Waite, Sterbenz) */
  r = rh - kf * LN2_LO;
  c = ((rh - r) - kf * LN2_LO) + xl; /* the rounding error of r, plus the low part */
  return exp_reduced(r, c, (int32_t)kf);
}

float jt_expf(float x) {
  if (jt_isnanf(x)) return x + x;
  return exp_ff(x, 0.0f);
}

/* --- log ------------------------------------------------------------------------------ */

/* log(x) for positive finite x, plus corr / x for a small correction corr of x (log1p):
 * x = 2^e m with m in [sqrt(1/2), sqrt(2)), f = m - 1 (exact), s = f / (2 + f);
 * log(1 + f) = 2 atanh(s) = f - (hf - s (hf + R(s^2))) with hf = f^2 / 2 (an identity:
 * f - s f = 2 s), so the exact f carries the result and rounding errors only touch the
 * small correction terms. */
/* *x = 2^*e * m with m in [sqrt(1/2), sqrt(2)), for positive finite *x; returns m (exact).
 * A subnormal *x is scaled by 2^23 in place (exact), as both callers' mirrors do. */
static float log_reduce(float *x, int32_t *e) {
  uint32_t ix = jt_fbits(*x), mb;
  *e = 0;
  if (ix < 0x00800000u) {            /* subnormal: scale by 2^23 (exact) */
    *x = *x * 0x1p23f;
    ix = jt_fbits(*x);
    *e = -23;
  }
  *e += (int32_t)(ix >> 23) - 127;
  mb = (ix & 0x7fffffu) | 0x3f800000u;
  if (mb > 0x3fb504f3u) {            /* m > sqrt(2): halve it */
    mb -= 0x00800000u;
    *e += 1;
  }
  return jt_ffrom(mb);
}

static float log_core(float x, float corr) {
  int32_t e;
  float m, f, s, z, R, hf, ef, t;
  m = log_reduce(&x, &e);
  f = m - 1.0f;
  s = f / (2.0f + f);
  z = s * s;
  /* R = 2/3 z + 2/5 z^2 + ... + 2/11 z^5; |s| <= 0.1716, z <= 0.0295 */
  R = 0x1.745d18p-3f;                /* 2/11 */
  R = R * z + 0x1.c71c72p-3f;        /* 2/9 */
  R = R * z + 0x1.24924ap-2f;        /* 2/7 */
  R = R * z + 0x1.99999ap-2f;        /* 2/5 */
  R = R * z + 0x1.555556p-1f;        /* 2/3 */
  R = R * z;
  hf = 0.5f * (f * f);
  ef = (float)e;
  t = s * (hf + R) + (ef * LN2_LO + corr / x);
  t = f - (hf - t);
  return ef * LN2_HI + t;
}

float jt_logf(float x) {
  if (jt_isnanf(x)) return x + x;
  if (x == 0.0f) return -F_INF;
  if (x < 0.0f) return F_NAN;
  if (x == F_INF) return x;
  return log_core(x, 0.0f);
}

float jt_log1pf(float x) {
  float u, c;
  if (jt_isnanf(x)) return x + x;
  if (x == F_INF) return x;
  if (x < -1.0f) return F_NAN;
  if (x == -1.0f) return -F_INF;
  if (fabs_(x) < 0x1p-24f) return x;  /* log1p(x) = x (1 - x/2 + ...): rounds to x; keeps -0 */
  u = 1.0f + x;
  /* c = (1 + x) - u exactly: the rounding error of u, corrected for as c / u */
  c = u > 2.0f ? 1.0f - (u - x) : x - (u - 1.0f);
  return log_core(u, c);
}

/* --- expm1, tanh, logistic ------------------------------------------------------------ */

float jt_expm1f(float x) {
  float kf, rh, r, c, t;
  int32_t k;
  if (jt_isnanf(x)) return x + x;
  if (x > 89.0f) return F_INF;
  if (x < -18.0f) return -1.0f;        /* e^x < 2^-25: -1 + e^x rounds to -1 */
  if (fabs_(x) < 0x1p-25f) return x;   /* x + x^2/2 rounds to x; keeps -0 */
  kf = jt_rintf(x * LOG2E);
  k = (int32_t)kf;
  rh = x - kf * LN2_HI;
  r = rh - kf * LN2_LO;
  c = (rh - r) - kf * LN2_LO;
  t = expm1_poly(r);
  t = t + (c + c * t);                 /* expm1(r + c) = t + c (1 + t) */
  /* expm1(x) = 2^k (1 + t) - 1, arranged so that the big terms are exact */
  if (k == 0) return t;
  if (k > 0 && k <= 24) return scalef(t + (1.0f - pow2i(-k)), k); /* 1 - 2^-k exact */
  if (k > 24) return scalef(t + 1.0f, k) - 1.0f;
  if (k >= -24) return scalef(t, k) + (pow2i(k) - 1.0f);          /* 2^k - 1 exact */
  return scalef(t + 1.0f, k) - 1.0f;
}

/* tanh x = x + x^3 P(x^2) for |x| < 0.55: Taylor to degree 21 (truncation 2^-33). */
static const float tanh_taylor[10] = {
  0x1.967e18p-14f, -0x1.f57d78p-13f, 0x1.355824p-11f, -0x1.7da364p-10f, 0x1.d6d3d0p-9f,
  -0x1.226e36p-7f, 0x1.664f48p-6f, -0x1.ba1ba2p-5f, 0x1.111112p-3f, -0x1.555556p-2f};

float jt_tanhf(float x) {
  float a = fabs_(x), t, r, z, p;
  int i;
  if (jt_isnanf(x)) return x + x;
  if (a > 9.1f) return fcopysign(1.0f, x);  /* 1 - 2 e^-2a rounds to 1 */
  if (a < 0x1p-12f) return x;                /* x - x^3/3 rounds to x */
  if (a < 0.55f) {
    /* the series: the exact a carries the result (t / (t + 2) would add the errors of
     * expm1, the sum and the quotient) */
    z = a * a;
    p = tanh_taylor[0];
    for (i = 1; i < 10; i++) p = p * z + tanh_taylor[i];
    r = a + (a * z) * p;
  } else {
    t = jt_expm1f(2.0f * a);                 /* e^2a - 1 >= 1.9 */
    r = 1.0f - 2.0f / (t + 2.0f);            /* 2 / (t + 2) <= 1/2 */
  }
  return fcopysign(r, x);
}

float jt_logisticf(float x) {
  /* 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below (no overflow, and e^x underflows to
   * the right 0), e = e^-|x| <= 1. 1 + e = s + sl exactly, and q / (s + sl) =
   * (q / s)(1 - sl / s) to far below an ulp: the quotient rounds once more, not twice. */
  float e = jt_expf(-fabs_(x)), s, sl, q;
  fast_two_sum(1.0f, e, &s, &sl);
  q = (x >= 0.0f ? 1.0f : e) / s;
  return q - q * (sl / s);
}

/* --- cos ------------------------------------------------------------------------------ */

/* pi/2 = P1 + P2 + P3 + P4; P1..P3 have at most 12 significant bits, so k * Pi is exact
 * for k < 2^12 (|x| < 4096 * pi/2 / ... about 6400). */
#define PIO2_1 0x1.92p+0f
#define PIO2_2 0x1.fb4p-12f
#define PIO2_3 0x1.444p-24f
#define PIO2_4 0x1.68c234p-39f
#define TWO_OVER_PI 0x1.45f306p-1f

/* cos(rh + rl), |rh| <= pi/4 (+ a little), |rl| <= ulp(rh). */
static float cos_reduced(float rh, float rl) {
  float z, ze, hz, w, q;
  two_prod(rh, rh, &z, &ze);           /* z + ze = rh^2 exactly */
  q = 0x1.1eed8ep-29f;                 /* 1/12! */
  q = q * z - 0x1.27e4fcp-22f;         /* -1/10! */
  q = q * z + 0x1.a01a02p-16f;         /* 1/8! */
  q = q * z - 0x1.6c16c2p-10f;         /* -1/6! */
  q = q * z + 0x1.555556p-5f;          /* 1/4! */
  hz = 0.5f * z;                       /* exact */
  w = 1.0f - hz;
  /* cos = 1 - z/2 + z^2 q - sin(rh) rl: (1 - w) - hz is the rounding error of w
   * (exact, Sterbenz); -ze/2 the part of rh^2 that z lost */
  return w + ((((1.0f - w) - hz) - 0.5f * ze) + ((z * z) * q - rh * rl));
}

/* sin(rh + rl), as cos_reduced. */
static float sin_reduced(float rh, float rl) {
  float z = rh * rh, q;
  q = 0x1.71de3ap-19f;                 /* 1/9! */
  q = q * z - 0x1.a01a02p-13f;         /* -1/7! */
  q = q * z + 0x1.111112p-7f;          /* 1/5! */
  q = q * z - 0x1.555556p-3f;          /* -1/3! */
  /* sin(rh + rl) = sin rh + rl cos rh, cos rh = 1 - z/2 to the precision needed */
  return rh + ((rh * z) * q + (rl - (0.5f * z) * rl));
}

float jt_cosf(float x) {
  float a = fabs_(x), kf, r1, r, rl, e;
  uint32_t n;
  if (!jt_isfinitef(x)) return x - x;  /* NaN for inf and NaN */
  if (a < 0x1p-12f) return 1.0f;       /* 1 - x^2/2 rounds to 1 */
  kf = jt_rintf(a * TWO_OVER_PI);
  if (kf > 1e9f) kf = 1e9f;            /* keeps the int conversion defined (|x| huge) */
  n = (uint32_t)(int32_t)kf & 3u;
  /* a - k pi/2 as a double-float rh + rl */
  r1 = (a - kf * PIO2_1) - kf * PIO2_2; /* exact for k < 2^12 */
  two_sum(r1, -(kf * PIO2_3), &r, &e);
  rl = e - kf * PIO2_4;
  switch (n) {
    case 0: return cos_reduced(r, rl);
    case 1: return -sin_reduced(r, rl);
    case 2: return -cos_reduced(r, rl);
    default: return sin_reduced(r, rl);
  }
}

/* --- pow ------------------------------------------------------------------------------ */

#define TWO_THIRDS_HI 0x1.555556p-1f
#define TWO_THIRDS_LO -0x1.555556p-26f

/* log(a) = lh + ll with a relative error of about 2^-36, for positive finite a: as
 * log_core, but the series 2 atanh(s) = 2 s + 2/3 s^3 + s^5 Q(s^2) in double-float for
 * its first two terms (s = sh + sl from an exact residual). */
static void log_ff(float a, float *lh, float *ll) {
  int32_t e;
  float m, f, gh, gl, sh, sl, p, pe, z, ze, zl, q, wh, wl, th, tl, vh, vl, rh, rl, h, err;
  float low, ef;
  m = log_reduce(&a, &e);
  f = m - 1.0f;                        /* exact */
  gh = m + 1.0f;                       /* 1 + m = gh + gl exactly */
  gl = m - (gh - 1.0f);
  sh = f / gh;                         /* s = f / (1 + m) = sh + sl */
  two_prod(sh, gh, &p, &pe);
  sl = (((f - p) - pe) - sh * gl) / gh;
  two_prod(sh, sh, &z, &ze);           /* s^2 = z + zl */
  zl = ze + (2.0f * sh) * sl;
  /* W = 2/3 + z (2/5 + z (2/7 + ...)) = wh + wl */
  q = 0x1.3b13b2p-3f;                  /* 2/13 */
  q = q * z + 0x1.745d18p-3f;          /* 2/11 */
  q = q * z + 0x1.c71c72p-3f;          /* 2/9 */
  q = q * z + 0x1.24924ap-2f;          /* 2/7 */
  q = q * z + 0x1.99999ap-2f;          /* 2/5 */
  q = q * z;
  fast_two_sum(TWO_THIRDS_HI, q, &wh, &wl);
  wl = wl + TWO_THIRDS_LO;
  /* s^3 = s * s^2 = th + tl */
  two_prod(sh, z, &th, &tl);
  tl = tl + (sh * zl + sl * z);
  /* s^3 W = vh + vl */
  two_prod(th, wh, &vh, &vl);
  vl = vl + (th * wl + tl * wh);
  /* log1p(f) = 2 s + s^3 W = rh + rl */
  two_sum(2.0f * sh, vh, &rh, &rl);
  rl = rl + (2.0f * sl + vl);
  /* + e ln 2 */
  ef = (float)e;
  two_sum(ef * LN2_HI, rh, &h, &err);
  low = err + (rl + ef * LN2_LO);
  fast_two_sum(h, low, lh, ll);
}

/* b is an integer (finite b only). */
static int is_integer(float b) { return jt_floorf(b) == b; }

/* b is an odd integer (finite b only): floats of magnitude >= 2^24 are even. */
static int is_odd(float b) {
  return is_integer(b) && fabs_(b) < 16777216.0f && ((uint32_t)(int32_t)b & 1u);
}

float jt_powf(float a, float b) {
  float aa, lh, ll, y0, p, pe, s, yh, yl, r;
  int negate = 0;
  /* C99 F.9.4.4, in this order */
  if (b == 0.0f) return 1.0f;                      /* even for a NaN */
  if (a == 1.0f) return 1.0f;                      /* even for a NaN b */
  if (jt_isnanf(a) || jt_isnanf(b)) return a + b;
  aa = fabs_(a);
  if (!jt_isfinitef(b)) {
    if (aa == 1.0f) return 1.0f;                   /* (-1)^+-inf */
    return (aa < 1.0f) == (b < 0.0f) ? F_INF : 0.0f;
  }
  if (a == 0.0f) {
    if (is_odd(b)) return b < 0.0f ? fcopysign(F_INF, a) : a;
    return b < 0.0f ? F_INF : 0.0f;
  }
  if (!jt_isfinitef(a)) {
    if (a < 0.0f && is_odd(b)) return b < 0.0f ? -0.0f : a;
    return b < 0.0f ? 0.0f : F_INF;
  }
  if (a < 0.0f) {
    if (!is_integer(b)) return F_NAN;
    negate = is_odd(b);
  }
  /* |a|^b = e^(b log|a|), the exponent as a double-float (an error of d in it is a
   * relative error d in the result, and |b log|a|| reaches 104 before under/overflow) */
  log_ff(aa, &lh, &ll);
  y0 = b * lh;
  if (aa == 1.0f) {                                 /* a = -1: log 0, and b may be huge */
    r = 1.0f;
  } else if (y0 > 100.0f) {
    r = F_INF;
  } else if (y0 < -110.0f) {
    r = 0.0f;
  } else {                                          /* |b| small enough to split */
    two_prod(b, lh, &p, &pe);
    s = pe + b * ll;
    fast_two_sum(p, s, &yh, &yl);
    r = exp_ff(yh, yl);
  }
  return negate ? -r : r;
}

/* --- the table of functions (host tests and tools) -------------------------------------- */

int jt_math_map(uint32_t fn, const float *a, const float *b, float *y, uint32_t n) {
  uint32_t i;
  for (i = 0; i < n; i++) {
    float x = a[i];
    float r;
    switch (fn) {
      case JT_MATH_RINT: r = jt_rintf(x); break;
      case JT_MATH_FLOOR: r = jt_floorf(x); break;
      case JT_MATH_CEIL: r = jt_ceilf(x); break;
      case JT_MATH_SQRT: r = jt_sqrtf(x); break;
      case JT_MATH_EXP: r = jt_expf(x); break;
      case JT_MATH_LOG: r = jt_logf(x); break;
      case JT_MATH_COS: r = jt_cosf(x); break;
      case JT_MATH_TANH: r = jt_tanhf(x); break;
      case JT_MATH_LOG1P: r = jt_log1pf(x); break;
      case JT_MATH_EXPM1: r = jt_expm1f(x); break;
      case JT_MATH_LOGISTIC: r = jt_logisticf(x); break;
      case JT_MATH_POW: r = jt_powf(x, b[i]); break;
      default: return 1;
    }
    y[i] = r;
  }
  return 0;
}

void jt_math_to_i32(const float *a, int32_t *y, uint32_t n) {
  uint32_t i;
  for (i = 0; i < n; i++) y[i] = jt_f32_to_i32(a[i]);
}
