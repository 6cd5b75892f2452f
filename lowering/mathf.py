"""float32 math of our own: the numpy mirror of runtime_c/src/jt_math.c.

numpy's exp/log/tanh/pow and the C libraries' (glibc, newlib) differ in the last bit, so
the reference executor and the C runtime both use these algorithms instead. Every function
here is the C code's sequence of float32 operations, operation for operation (each + - * /
of two float32 values is correctly rounded in numpy as in C), with the C's branches as
masks and its bit manipulation via `.view(np.uint32)`; tests/test_c_math.py checks the two
agree bit for bit (NaN payloads aside: a NaN result is some NaN). Accuracy and algorithms
are documented in jt_math.c.

Each function takes a float32 array or scalar (anything np.asarray turns into float32) and
returns a float32 array of the same shape, or an np.float32 for a 0-d input.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

F = np.float32
U = np.uint32
I32 = np.int32


def _h(s: str) -> np.float32:
  """A float32 constant from the C hex-float literal (exactly representable)."""
  v = F(float.fromhex(s))
  assert float(v) == float.fromhex(s), s
  return v


INF = F(np.inf)
NAN = F(np.nan)
ZERO, HALF, ONE, TWO = F(0), F(0.5), F(1), F(2)


def _bits(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(x, F).view(U)


def _from(u: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(u, U).view(F)


def _fabs(x: np.ndarray) -> np.ndarray:
  return _from(_bits(x) & U(0x7FFFFFFF))


def _copysign(x: np.ndarray, s: np.ndarray) -> np.ndarray:
  return _from((_bits(x) & U(0x7FFFFFFF)) | (_bits(s) & U(0x80000000)))


def _pow2i(k: np.ndarray) -> np.ndarray:
  """2^k for int32 k in [-126, 127]."""
  return _from((np.asarray(k, I32) + I32(127)).astype(U) << U(23))


def _scalef(y: np.ndarray, k: np.ndarray) -> np.ndarray:
  k = np.asarray(k, I32)
  k1 = (np.abs(k) // I32(2)) * np.sign(k).astype(I32)  # C's k / 2 (toward zero)
  return (y * _pow2i(k1)) * _pow2i(k - k1)


def _isnan(x: np.ndarray) -> np.ndarray:
  return (_bits(x) & U(0x7FFFFFFF)) > U(0x7F800000)


def _isfinite(x: np.ndarray) -> np.ndarray:
  return (_bits(x) & U(0x7FFFFFFF)) < U(0x7F800000)


def _safe(mask: np.ndarray, x: np.ndarray, value: float = 0.0) -> np.ndarray:
  """x where mask, else a harmless value (lanes whose result another branch decides)."""
  return np.where(mask, x, F(value)).astype(F)


def _unary(f: Callable[[np.ndarray], np.ndarray]) -> Callable:
  def wrapped(x):
    a = np.asarray(x, F)
    with np.errstate(all="ignore"):
      r = np.asarray(f(np.ascontiguousarray(a.reshape(-1))), F).reshape(a.shape)
    return r[()] if a.ndim == 0 else r

  wrapped.__name__ = f.__name__
  wrapped.__doc__ = f.__doc__
  return wrapped


# --- error-free transformations (jt_math.c: two_sum, fast_two_sum, split, two_prod) -------

def _two_sum(a, b):
  s = a + b
  bb = s - a
  return s, (a - (s - bb)) + (b - bb)


def _fast_two_sum(a, b):
  s = a + b
  return s, b - (s - a)


def _split(a):
  t = F(4097) * a
  h = t - (t - a)
  return h, a - h


def _two_prod(a, b):
  p = a * b
  ah, al = _split(a)
  bh, bl = _split(b)
  return p, (((ah * bh - p) + ah * bl) + al * bh) + al * bl


# --- rounding --------------------------------------------------------------------------

def _rint(x):
  # np.rint is exact (ties to even) and keeps the sign of zero, as jt_rintf's 2^23 trick.
  return np.rint(x).astype(F)


def _floor(x):
  return np.floor(x).astype(F)


def _ceil(x):
  return np.ceil(x).astype(F)


rintf = _unary(_rint)
floorf = _unary(_floor)
ceilf = _unary(_ceil)


def isnanf(x) -> np.ndarray:
  a = np.asarray(x, F)
  return _isnan(a.reshape(-1)).reshape(a.shape)


def isfinitef(x) -> np.ndarray:
  a = np.asarray(x, F)
  return _isfinite(a.reshape(-1)).reshape(a.shape)


def f32_to_i32(x) -> np.ndarray:
  """jt_f32_to_i32: truncation toward zero, saturated to int32, NaN -> 0."""
  a = np.asarray(x, F)
  v = a.reshape(-1)
  ok = ~_isnan(v) & (v < F(2147483648.0)) & (v > F(-2147483648.0))
  r = np.trunc(_safe(ok, v)).astype(I32)
  r = np.where(v >= F(2147483648.0), I32(2**31 - 1), r)
  r = np.where(v <= F(-2147483648.0), I32(-(2**31)), r)
  r = np.where(_isnan(v), I32(0), r).astype(I32).reshape(a.shape)
  return r[()] if a.ndim == 0 else r


# --- sqrt ------------------------------------------------------------------------------

@_unary
def sqrtf(x):
  """Correctly rounded (IEEE): np.sqrt on float32 is, and jt_sqrtf's integer root is."""
  return np.sqrt(x).astype(F)


# --- exp -------------------------------------------------------------------------------

LN2_HI = _h("0x1.62e4p-1")
LN2_LO = _h("0x1.7f7d1cp-20")
LOG2E = _h("0x1.715476p+0")
_EXPM1 = [_h(c) for c in ("0x1.a01a02p-16", "0x1.a01a02p-13", "0x1.6c16c2p-10",
                          "0x1.111112p-7", "0x1.555556p-5", "0x1.555556p-3")]


def _expm1_poly(r):
  q = _EXPM1[0]
  for c in _EXPM1[1:]:
    q = q * r + c
  q = q * r + HALF
  return r + (r * r) * q


def _exp_reduced(r, c, k):
  p = _expm1_poly(r)
  y = ONE + (p + (c + c * p))
  return _scalef(y, k)


def _exp_ff(x, xl):
  big, small = x > F(89), x < F(-104)
  xs = _safe(~big & ~small, x)
  kf = _rint(xs * LOG2E)
  rh = xs - kf * LN2_HI
  r = rh - kf * LN2_LO
  c = ((rh - r) - kf * LN2_LO) + _safe(~big & ~small, xl)
  y = _exp_reduced(r, c, kf.astype(I32))
  return np.where(big, INF, np.where(small, ZERO, y)).astype(F)


@_unary
def expf(x):
  return np.where(_isnan(x), x + x, _exp_ff(x, np.zeros_like(x)))


# --- log -------------------------------------------------------------------------------

_LOG_R = [_h(c) for c in ("0x1.745d18p-3", "0x1.c71c72p-3", "0x1.24924ap-2", "0x1.99999ap-2",
                          "0x1.555556p-1")]


def _decompose(x):
  """(m, e) with x = 2^e m, m in [sqrt(1/2), sqrt(2)), for positive finite x."""
  ix = _bits(x)
  sub = ix < U(0x00800000)
  x2 = np.where(sub, x * _h("0x1p23"), x).astype(F)
  ix = _bits(x2)
  e = np.where(sub, I32(-23), I32(0)) + ((ix >> U(23)).astype(I32) - I32(127))
  mb = (ix & U(0x7FFFFF)) | U(0x3F800000)
  high = mb > U(0x3FB504F3)
  mb = np.where(high, mb - U(0x00800000), mb).astype(U)
  e = e + high.astype(I32)
  return _from(mb), e, x2


def _log_core(x, corr):
  m, e, x2 = _decompose(x)
  f = m - ONE
  s = f / (TWO + f)
  z = s * s
  R = _LOG_R[0]
  for c in _LOG_R[1:]:
    R = R * z + c
  R = R * z
  hf = HALF * (f * f)
  ef = e.astype(F)
  # corr / x2: the C divides by its local x after the subnormal scaling (corr is 0 then)
  t = s * (hf + R) + (ef * LN2_LO + corr / x2)
  t = f - (hf - t)
  return ef * LN2_HI + t


@_unary
def logf(x):
  ok = _isfinite(x) & (x > ZERO)
  r = _log_core(_safe(ok, x, 1.0), ZERO)
  r = np.where(x == INF, x, r)
  r = np.where(x < ZERO, NAN, r)
  r = np.where(x == ZERO, -INF, r)
  return np.where(_isnan(x), x + x, r).astype(F)


@_unary
def log1pf(x):
  ok = _isfinite(x) & (x > F(-1)) & ~(_fabs(x) < _h("0x1p-24"))
  xs = _safe(ok, x, 1.0)
  u = ONE + xs
  c = np.where(u > TWO, ONE - (u - xs), xs - (u - ONE)).astype(F)
  r = _log_core(u, c)
  r = np.where(_fabs(x) < _h("0x1p-24"), x, r)
  r = np.where(x == F(-1), -INF, r)
  r = np.where(x < F(-1), NAN, r)
  r = np.where(x == INF, x, r)
  return np.where(_isnan(x), x + x, r).astype(F)


# --- expm1, tanh, logistic -------------------------------------------------------------

@_unary
def expm1f(x):
  ok = ~_isnan(x) & ~(x > F(89)) & ~(x < F(-18)) & ~(_fabs(x) < _h("0x1p-25"))
  xs = _safe(ok, x)
  kf = _rint(xs * LOG2E)
  k = kf.astype(I32)
  rh = xs - kf * LN2_HI
  r = rh - kf * LN2_LO
  c = (rh - r) - kf * LN2_LO
  t = _expm1_poly(r)
  t = t + (c + c * t)
  kc = np.clip(k, -24, 24)
  pos_small = _scalef(t + (ONE - _pow2i(-np.abs(kc))), k)
  pos_big = _scalef(t + ONE, k) - ONE
  neg_small = _scalef(t, k) + (_pow2i(kc) - ONE)
  y = np.where(k == 0, t,
               np.where((k > 0) & (k <= 24), pos_small,
                        np.where(k > 24, pos_big,
                                 np.where(k >= -24, neg_small, pos_big))))
  y = np.where(_fabs(x) < _h("0x1p-25"), x, y)
  y = np.where(x < F(-18), F(-1), y)
  y = np.where(x > F(89), INF, y)
  return np.where(_isnan(x), x + x, y).astype(F)


_TANH = [_h(c) for c in ("0x1.967e18p-14", "-0x1.f57d78p-13", "0x1.355824p-11",
                         "-0x1.7da364p-10", "0x1.d6d3d0p-9", "-0x1.226e36p-7", "0x1.664f48p-6",
                         "-0x1.ba1ba2p-5", "0x1.111112p-3", "-0x1.555556p-2")]


@_unary
def tanhf(x):
  a = _fabs(x)
  ok = ~_isnan(x) & ~(a > F(9.1)) & ~(a < _h("0x1p-12"))
  a = _safe(ok, a)
  z = a * a
  p = _TANH[0]
  for c in _TANH[1:]:
    p = p * z + c
  series = a + (a * z) * p
  t = expm1f(TWO * a)
  r = np.where(a < F(0.55), series, ONE - TWO / (t + TWO)).astype(F)
  r = _copysign(r, x)
  r = np.where(_fabs(x) < _h("0x1p-12"), x, r)
  r = np.where(_fabs(x) > F(9.1), _copysign(np.full_like(x, ONE), x), r)
  return np.where(_isnan(x), x + x, r).astype(F)


@_unary
def logisticf(x):
  e = expf(-_fabs(x))
  s, sl = _fast_two_sum(ONE, e)
  q = np.where(x >= ZERO, ONE, e) / s
  return (q - q * (sl / s)).astype(F)


# --- cos -------------------------------------------------------------------------------

PIO2 = [_h(c) for c in ("0x1.92p+0", "0x1.fb4p-12", "0x1.444p-24", "0x1.68c234p-39")]
TWO_OVER_PI = _h("0x1.45f306p-1")
_COS = [_h(c) for c in ("0x1.1eed8ep-29", "-0x1.27e4fcp-22", "0x1.a01a02p-16",
                        "-0x1.6c16c2p-10", "0x1.555556p-5")]
_SIN = [_h(c) for c in ("0x1.71de3ap-19", "-0x1.a01a02p-13", "0x1.111112p-7",
                        "-0x1.555556p-3")]


def _cos_reduced(rh, rl):
  z, ze = _two_prod(rh, rh)
  q = _COS[0]
  for c in _COS[1:]:
    q = q * z + c
  hz = HALF * z
  w = ONE - hz
  return w + ((((ONE - w) - hz) - HALF * ze) + ((z * z) * q - rh * rl))


def _sin_reduced(rh, rl):
  z = rh * rh
  q = _SIN[0]
  for c in _SIN[1:]:
    q = q * z + c
  return rh + ((rh * z) * q + (rl - (HALF * z) * rl))


@_unary
def cosf(x):
  """Within 2 ulp for |x| <= 4096 (deterministic beyond)."""
  a = _fabs(x)
  ok = _isfinite(x) & ~(a < _h("0x1p-12"))
  a = _safe(ok, a)
  kf = _rint(a * TWO_OVER_PI)
  kf = np.where(kf > F(1e9), F(1e9), kf).astype(F)
  n = kf.astype(I32).astype(U) & U(3)
  r1 = (a - kf * PIO2[0]) - kf * PIO2[1]
  r, e = _two_sum(r1, -(kf * PIO2[2]))
  rl = e - kf * PIO2[3]
  c, s = _cos_reduced(r, rl), _sin_reduced(r, rl)
  y = np.select([n == 0, n == 1, n == 2], [c, -s, -c], s).astype(F)
  y = np.where(_fabs(x) < _h("0x1p-12"), ONE, y)
  return np.where(_isfinite(x), y, x - x).astype(F)


# --- pow -------------------------------------------------------------------------------

_LOG_W = [_h(c) for c in ("0x1.3b13b2p-3", "0x1.745d18p-3", "0x1.c71c72p-3", "0x1.24924ap-2",
                          "0x1.99999ap-2")]
TWO_THIRDS_HI = _h("0x1.555556p-1")
TWO_THIRDS_LO = _h("-0x1.555556p-26")


def _log_ff(a):
  m, e, _ = _decompose(a)
  f = m - ONE
  gh = m + ONE
  gl = m - (gh - ONE)
  sh = f / gh
  p, pe = _two_prod(sh, gh)
  sl = (((f - p) - pe) - sh * gl) / gh
  z, ze = _two_prod(sh, sh)
  zl = ze + (TWO * sh) * sl
  q = _LOG_W[0]
  for c in _LOG_W[1:]:
    q = q * z + c
  q = q * z
  wh, wl = _fast_two_sum(TWO_THIRDS_HI, q)
  wl = wl + TWO_THIRDS_LO
  th, tl = _two_prod(sh, z)
  tl = tl + (sh * zl + sl * z)
  vh, vl = _two_prod(th, wh)
  vl = vl + (th * wl + tl * wh)
  rh, rl = _two_sum(TWO * sh, vh)
  rl = rl + (TWO * sl + vl)
  ef = e.astype(F)
  h, err = _two_sum(ef * LN2_HI, rh)
  low = err + (rl + ef * LN2_LO)
  return _fast_two_sum(h, low)


def _is_integer(b):
  return _floor(b) == b


def _is_odd(b):
  small = _fabs(b) < F(16777216.0)
  bi = _safe(small & _isfinite(b), b).astype(I32)
  return _is_integer(b) & small & ((bi.astype(U) & U(1)) == U(1))


def powf(a, b):
  """C99 powf's special cases (F.9.4.4); |a|^b = e^(b log|a|) in double-float."""
  a, b = np.broadcast_arrays(np.asarray(a, F), np.asarray(b, F))
  shape = a.shape
  with np.errstate(all="ignore"):
    r = _powf(np.ascontiguousarray(a.reshape(-1)), np.ascontiguousarray(b.reshape(-1)))
  r = r.astype(F).reshape(shape)
  return r[()] if len(shape) == 0 else r


def _powf(a, b):
  aa = _fabs(a)
  fin_a, fin_b = _isfinite(a), _isfinite(b)
  odd = _is_odd(_safe(fin_b, b))
  integer = _is_integer(_safe(fin_b, b))
  # the general case: a finite nonzero, b finite nonzero
  general = fin_a & fin_b & (a != ZERO) & (b != ZERO) & (a != ONE)
  lh, ll = _log_ff(_safe(general, aa, 2.0))
  bs = _safe(general, b, 1.0)
  y0 = bs * lh
  mid = ~(y0 > F(100)) & ~(y0 < F(-110)) & (aa != ONE)
  bm = _safe(mid, bs)
  p, pe = _two_prod(bm, _safe(mid, lh))
  s = pe + bm * _safe(mid, ll)
  yh, yl = _fast_two_sum(p, s)
  r = np.where(y0 > F(100), INF, np.where(y0 < F(-110), ZERO, _exp_ff(yh, yl)))
  r = np.where(aa == ONE, ONE, r)
  r = np.where((a < ZERO) & odd, -r, r)
  r = np.where((a < ZERO) & ~integer, NAN, r)
  # +-inf base
  inf_base = np.where(b < ZERO, ZERO, INF)
  inf_base = np.where((a < ZERO) & odd, np.where(b < ZERO, F(-0.0), a), inf_base)
  r = np.where(~fin_a, inf_base, r)
  # +-0 base
  zero_base = np.where(b < ZERO, INF, ZERO)
  zero_base = np.where(odd, np.where(b < ZERO, _copysign(np.full_like(a, INF), a), a),
                       zero_base)
  r = np.where(a == ZERO, zero_base, r)
  # +-inf exponent
  inf_exp = np.where((aa < ONE) == (b < ZERO), INF, ZERO)
  inf_exp = np.where(aa == ONE, ONE, inf_exp)
  r = np.where(~fin_b, inf_exp, r)
  r = np.where(_isnan(a) | _isnan(b), a + b, r)
  r = np.where(a == ONE, ONE, r)
  return np.where(b == ZERO, ONE, r).astype(F)
