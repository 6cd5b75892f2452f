"""Our float32 math (runtime_c/src/jt_math.c) against its numpy mirror (lowering/mathf.py),
bit for bit on ~1e5 inputs per function (special values, subnormals, huge, tiny, near
overflow, random bit patterns), and both against float64 numpy: within 2 ulp."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from lowering import mathf

try:
  from lowering.cruntime import library
  LIB = library()
except (ImportError, OSError) as err:  # no build of the runtime
  pytest.skip(f"the C runtime is not built: {err}", allow_module_level=True)

F32P = ctypes.POINTER(ctypes.c_float)
NAMES = ("rint", "floor", "ceil", "sqrt", "exp", "log", "cos", "tanh", "log1p", "expm1",
         "logistic", "pow")  # the order of JT_MATH_* in jt_math.h
UNARY = NAMES[:-1]


def c_map(name: str, a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
  a = np.ascontiguousarray(a, np.float32)
  b = a if b is None else np.ascontiguousarray(b, np.float32)
  y = np.empty_like(a)
  rc = LIB.jt_math_map(NAMES.index(name), a.ctypes.data_as(F32P), b.ctypes.data_as(F32P),
                       y.ctypes.data_as(F32P), ctypes.c_uint32(a.size))
  assert rc == 0
  return y


def same_bits(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Equal float32 bits, or both NaN (NaN payloads are not part of the contract)."""
  x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
  return (x.view(np.uint32) == y.view(np.uint32)) | (np.isnan(x) & np.isnan(y))


SPECIALS = np.array(
  [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 1e-45, -1e-45,
   1.1754942e-38, -1.1754942e-38, 1.1754944e-38, 3.4028235e38, -3.4028235e38, 88.72283,
   88.72284, 89.0, -87.33655, -103.27893, -103.97208, -104.0, 1e-30, 1e-8, -1e-8, 2.0**-24,
   -(2.0**-24), 2.0**-25, 0.3466, 0.3467, -0.3466, 0.55, 9.1, -9.1, 18.0, -18.0, -17.3,
   1.5707964, 3.1415927, 4.712389, 6.2831855, 4096.0, 8388608.5, 8388607.5, 2.5, 3.5, -2.5,
   0.49999997, 16777216.0, 2147483648.0, -2147483648.0, 2147483520.0, 0.99999994,
   1.0000001, -0.99999994], np.float32)


def inputs(seed: int, n: int = 12000) -> np.ndarray:
  rng = np.random.default_rng(seed)
  raw = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
  parts = [SPECIALS, raw, rng.uniform(-10, 10, n), rng.uniform(-110, 110, n),
           1 + rng.uniform(-1e-3, 1e-3, n), rng.uniform(-1, 1, n) * 10.0 ** rng.uniform(-45, 0, n),
           rng.uniform(-7, 7, n), rng.uniform(-1, 1, n) * 10.0 ** rng.uniform(0, 38, n)]
  x = np.concatenate([np.asarray(p, np.float32) for p in parts])
  with np.errstate(all="ignore"):
    return np.concatenate([x, np.nextafter(x, np.float32(np.inf))])  # ~1e5 in all


def ulps(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
  """|y - ref| in float32 ulps of ref (ulp of the smallest normal for subnormals), where
  both are finite."""
  y = y.astype(np.float64)
  fin = np.isfinite(ref) & np.isfinite(y)
  a = np.minimum(np.abs(ref[fin]), np.finfo(np.float32).max).astype(np.float32)
  a = np.maximum(a, np.float32(2.0**-149))
  e = np.floor(np.log2(a.astype(np.float64)))
  ulp = 2.0 ** np.maximum(e - 23, -149)
  return np.abs(y[fin] - ref[fin]) / ulp


REF = {"exp": np.exp, "log": np.log, "tanh": np.tanh, "log1p": np.log1p, "expm1": np.expm1,
       "logistic": lambda x: 0.5 * (1 + np.tanh(x / 2)), "sqrt": np.sqrt, "rint": np.rint,
       "floor": np.floor, "ceil": np.ceil,
       "cos": lambda x: np.where(np.abs(x) <= 4096, np.cos(x), np.nan)}


@pytest.mark.parametrize("name", UNARY)
def test_c_matches_mirror_bit_for_bit(name: str) -> None:
  x = inputs(NAMES.index(name))
  c = c_map(name, x)
  m = getattr(mathf, name + "f")(x)
  bad = ~same_bits(c, m)
  assert not bad.any(), (x[bad][:5], c[bad][:5], m[bad][:5])


@pytest.mark.parametrize("name", UNARY)
def test_within_2_ulp(name: str) -> None:
  x = inputs(100 + NAMES.index(name))
  y = getattr(mathf, name + "f")(x)
  with np.errstate(all="ignore"):
    ref = REF[name](x.astype(np.float64))
    if name == "logistic":  # 1/(1+e^-x) in float64 loses e^x below -37: use e^x / (1 + e^x)
      e = np.exp(np.minimum(x.astype(np.float64), 0))
      ref = np.where(x < 0, e / (1 + e), 1 / (1 + np.exp(-x.astype(np.float64))))
  err = ulps(y, ref)
  assert err.max() <= 2.0, (name, err.max())
  # special values: NaN exactly where the true function is undefined, infinities agree
  nan_in = np.isnan(x)
  if name != "cos":
    assert np.array_equal(np.isnan(y) & ~nan_in, np.isnan(ref) & ~nan_in)
    inf = np.isinf(ref)
    assert np.array_equal(y[inf], ref[inf].astype(np.float32))
  assert np.isnan(y[nan_in]).all()


def test_exact_functions_match_numpy() -> None:
  x = inputs(7)
  for name, f in (("rint", np.rint), ("floor", np.floor), ("ceil", np.ceil),
                  ("sqrt", np.sqrt)):
    with np.errstate(invalid="ignore"):
      want = f(x)
    assert same_bits(c_map(name, x), want).all(), name


def test_signed_zeros_and_edges() -> None:
  z = np.array([0.0, -0.0], np.float32)
  for name in ("rint", "floor", "ceil", "sqrt", "tanh", "log1p", "expm1"):
    assert np.array_equal(c_map(name, z).view(np.uint32), z.view(np.uint32)), name
  assert c_map("floor", np.array([-0.5], np.float32))[0] == -1
  assert c_map("ceil", np.array([-0.5], np.float32)).view(np.uint32)[0] == 0x80000000
  assert list(c_map("rint", np.array([0.5, 1.5, 2.5, -2.5], np.float32))) == [0, 2, 2, -2]
  assert c_map("exp", np.array([88.72283], np.float32))[0] < np.inf
  assert c_map("exp", np.array([88.72284], np.float32))[0] == np.inf
  sub = c_map("exp", np.array([-103.0, -100.0, -88.0], np.float32))
  assert (sub > 0).all() and sub[0] < np.finfo(np.float32).tiny
  assert c_map("log", np.array([0.0], np.float32))[0] == -np.inf
  assert np.isnan(c_map("log", np.array([-1.0], np.float32))[0])
  tiny = np.array([2.0**-149], np.float32)
  assert c_map("log", tiny)[0] == np.float32(-149 * np.log(2.0))


def test_pow_mirror_and_accuracy() -> None:
  rng = np.random.default_rng(3)
  n = 15000
  sp = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0,
                 1e-45, 3.4e38, 0.9, 0.999, 1.5, -1.5, 16777216.0, -16777215.0, 3.4e38],
                np.float32)
  a = np.concatenate([np.repeat(sp, sp.size), rng.uniform(0, 3, n), rng.uniform(-3, 3, n),
                      10.0 ** rng.uniform(-45, 38, n), rng.choice([0.9, 0.99, 0.999, 0.9999], n),
                      1 + rng.uniform(-1e-6, 1e-6, n)]).astype(np.float32)
  b = np.concatenate([np.tile(sp, sp.size), rng.uniform(-30, 30, n),
                      np.round(rng.uniform(-30, 30, n)), rng.uniform(-3, 3, n),
                      rng.integers(1, 2000000, n), rng.uniform(-1e7, 1e7, n)]).astype(np.float32)
  c = c_map("pow", a, b)
  m = mathf.powf(a, b)
  assert same_bits(c, m).all()
  with np.errstate(all="ignore"):
    ref = np.power(a.astype(np.float64), b.astype(np.float64))
    libm = np.power(a, b)  # C99 powf: the special cases
  assert ulps(c, ref).max() <= 2.0
  special = (~np.isfinite(a) | ~np.isfinite(b) | (a == 0) | (b == 0) | ~np.isfinite(libm)
             | (libm == 0) | ((a < 0) & (np.floor(b) != b)))
  assert same_bits(c[special], libm[special]).all()
  assert mathf.powf(np.float32(0.9), np.float32(3)).dtype == np.float32  # scalars work


def test_adam_bias_correction_powers() -> None:
  """b ** k of Adam for every step count: mirror exact, C equal, accurate."""
  k = np.arange(1, 200001, 7, dtype=np.float32)
  for beta in (0.9, 0.99, 0.999):
    b = np.full_like(k, beta)
    c = c_map("pow", b, k)
    assert same_bits(c, mathf.powf(np.float32(beta), k)).all()
    assert ulps(c, np.power(np.float64(np.float32(beta)), k.astype(np.float64))).max() <= 2


def test_cos_schedule_range() -> None:
  t = np.linspace(0, 1, 20001, dtype=np.float32)
  x = np.float32(np.pi) * t
  c = c_map("cos", x)
  assert same_bits(c, mathf.cosf(x)).all()
  assert ulps(c, np.cos(x.astype(np.float64))).max() <= 1.0


def test_f32_to_i32() -> None:
  x = np.concatenate([SPECIALS, inputs(11)[:20000],
                      np.array([2147483520.0, -2147483520.0, -0.9, 0.9, -1.5], np.float32)])
  y = np.empty(x.size, np.int32)
  LIB.jt_math_to_i32(x.ctypes.data_as(F32P), y.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
                     ctypes.c_uint32(x.size))
  m = mathf.f32_to_i32(x)
  assert np.array_equal(y, m)
  with np.errstate(invalid="ignore"):  # the signaling NaNs among SPECIALS
    x64 = np.nan_to_num(x.astype(np.float64), nan=0.0, posinf=2.0**40, neginf=-(2.0**40))
  want = np.clip(np.trunc(x64), -(2**31), 2**31 - 1).astype(np.int32)
  assert np.array_equal(m, want)
