"""jaxtiny's int8 primitives equal the numpy reference kernels bit for bit.

Every primitive is run eagerly and under jax.jit on float32 carriers and compared with
`lowering.kernels` on int8 arrays. Each case draws its data from its own seeded generator.
"""

from __future__ import annotations

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtiny import numerics
from jaxtiny import primitives as P
from lowering import kernels as K

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
VALID = ((0, 0), (0, 0))
SAME1 = ((1, 1), (1, 1))


# --- helpers ---------------------------------------------------------------------------

def _rng(*key) -> np.random.Generator:
  # Stable per-case seed: the same case always draws the same data.
  return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _i8(rng: np.random.Generator, shape, lo: int = -128, hi: int = 127) -> np.ndarray:
  return rng.integers(lo, hi, size=shape, endpoint=True, dtype=np.int8)


def _w8(rng: np.random.Generator, shape, amax: int = 127) -> np.ndarray:
  return _i8(rng, shape, -amax, amax)  # weights are symmetric: never -128


def _f32(q: np.ndarray) -> np.ndarray:
  return np.asarray(q).astype(np.float32)


def _from_carrier(y) -> np.ndarray:
  """A float32 carrier -> int8, after checking it holds integers in the int8 range."""
  y = np.asarray(y)
  assert y.dtype == np.float32
  assert np.all(y == np.rint(y)), "carrier holds non-integers"
  assert y.size == 0 or (y.min() >= -128 and y.max() <= 127), "carrier leaves int8 range"
  return y.astype(np.int8)


def _check(prim, args: tuple, expected: np.ndarray, **params) -> None:
  """prim(*args, **params) equals `expected` eagerly and under jit."""
  eager = prim(*args, **params)
  jitted = jax.jit(functools.partial(prim, **params))(*args)
  for y in (eager, jitted):
    assert y.shape == expected.shape
    np.testing.assert_array_equal(_from_carrier(y), expected)


def _assert_spread(y: np.ndarray, lo: int, hi: int) -> None:
  # Guards against vacuous cases: both clamped and unclamped outputs must occur.
  assert np.any((y == lo) | (y == hi)), "no output reached the clamp"
  assert np.any((y > lo) & (y < hi)), "every output is clamped"


def _ties_inside(acc: np.ndarray, m, y_zero: int, lo: int, hi: int) -> int:
  """How many f32(acc) * m are exact .5 ties that the clamp does not hide."""
  t = np.multiply(acc.astype(np.float32), np.asarray(m, np.float32), dtype=np.float32)
  tie = np.abs(t - np.floor(t)) == 0.5
  inside = (t > lo - y_zero + 1) & (t < hi - y_zero - 1)
  return int(np.sum(tie & inside))


def _channel_multipliers(rng: np.random.Generator, acc: np.ndarray) -> np.ndarray:
  """Per-channel M mapping a typical |acc| to ~0.5..100 output steps; the last M is > 1."""
  spread = acc.reshape(-1, acc.shape[-1]).astype(np.float64).std(axis=0) + 1.0
  m = 10.0 ** rng.uniform(-0.3, 2.0, acc.shape[-1]) / spread
  m[-1] = 1.5
  return numerics.multiplier(m)


def _biases(rng: np.random.Generator, acc: np.ndarray) -> np.ndarray:
  """Biases on the accumulator's scale, with +-2**31-ish ones in the first two channels."""
  o = acc.shape[-1]
  spread = acc.reshape(-1, o).astype(np.float64).std(axis=0) + 1.0
  b = np.rint(rng.normal(size=o) * 0.5 * spread).astype(np.int64)
  if o >= 3:  # what imported models carry in dead channels: must saturate, never wrap
    b[0] = I32_MAX - rng.integers(0, 2000)
    b[1] = I32_MIN + rng.integers(0, 2000)
  return b.astype(np.int32)


# Zero points and fused clamps: (x_zero, y_zero, lo, hi).
QUANTS = [
  (0, 0, -128, 127),
  (-128, 127, -128, 127),
  (127, -128, -128, 127),
  (-7, -20, -20, 127),  # fused ReLU
  (33, -128, -128, -5),  # fused ReLU6 with y_zero = -128
  (-128, 5, 5, 60),
]


# --- the reference's own arithmetic ----------------------------------------------------

def test_requantize_rounds_half_to_even():
  acc = np.array([1, 3, 5, 7, -1, -3, -5, 2, -2], np.int32)
  np.testing.assert_array_equal(K.requantize(acc, np.float32(0.5), 0),
                                [0, 2, 2, 4, 0, -2, -2, 1, -1])
  # Against Python's round() (also half-to-even) on the exact float32 products.
  rng = _rng("rne")
  acc = rng.integers(-4000, 4000, 2000)
  for shift in (1, 2, 3, 5):
    m = np.float32(2.0**-shift)
    want = [round(float(np.float32(a) * m)) for a in acc]
    np.testing.assert_array_equal(K.requantize(acc, m, 0), np.clip(want, -128, 127))


def test_requantize_converts_acc_to_float32_first():
  # 2**24 + 2**18 + 1 is odd above 2**24: f32 rounds it to 2**24 + 2**18 (even mantissa).
  acc = np.array([2**24 + 2**18 + 1], np.int32)
  m = np.float32(2.0**-19)
  assert K.requantize(acc, m, 0)[0] == 32  # exact arithmetic would give rne(32.5 + 2**-19) = 33
  # Same through the conv primitive: input at its zero point, so acc = bias.
  x = np.zeros((1, 1, 1, 1), np.int8)
  w = np.ones((1, 1, 1, 1), np.int8)
  args = (x, w, acc, m.reshape(1))
  kw = dict(strides=(1, 1), padding=VALID, groups=1, x_zero=0, y_zero=0)
  want = K.conv2d(*args, **kw)
  assert want[0, 0, 0, 0] == 32
  _check(P.qconv2d, (_f32(x), _f32(w), acc, m.reshape(1)), want, **kw)


def test_requantize_clamps_before_offset():
  acc = np.array([-1000, -3, 0, 3, 1000], np.int32)
  np.testing.assert_array_equal(K.requantize(acc, np.float32(1.0), 10, 5, 12), [5, 7, 10, 12, 12])
  np.testing.assert_array_equal(K.requantize(acc, np.float32(1.0), -128), [-128] * 3 + [-125, 127])


def test_sat_add_int32():
  a = np.array([I32_MAX, I32_MAX - 5, I32_MIN, I32_MIN + 5, 100, I32_MAX], np.int32)
  b = np.array([1, 10, -1, -10, -300, I32_MIN], np.int32)
  np.testing.assert_array_equal(K.sat_add_int32(a, b),
                                [I32_MAX, I32_MAX, I32_MIN, I32_MIN, -200, -1])


def _direct_conv_acc(x, w, b, strides, padding, groups, x_zero):
  """Scalar loops straight from the formula, to check the reference's tap loop."""
  n, h, wd, c = x.shape
  o, kh, kw, ci = w.shape
  (pt, pb), (pl, pr) = padding
  ho = (h + pt + pb - kh) // strides[0] + 1
  wo = (wd + pl + pr - kw) // strides[1] + 1
  acc = np.zeros((n, ho, wo, o), np.int64)
  for b_, y, x_, oc, i, j, k in np.ndindex(n, ho, wo, o, kh, kw, ci):
    r, s = y * strides[0] + i - pt, x_ * strides[1] + j - pl
    if 0 <= r < h and 0 <= s < wd:
      cin = (oc // (o // groups)) * ci + k
      acc[b_, y, x_, oc] += (int(x[b_, r, s, cin]) - x_zero) * int(w[oc, i, j, k])
  return np.clip(acc + b, I32_MIN, I32_MAX).astype(np.int32)


@pytest.mark.parametrize("shape,wshape,strides,padding,groups", [
  ((2, 5, 4, 4), (6, 3, 2, 2), (2, 1), ((0, 1), (1, 2)), 2),
  ((1, 4, 4, 3), (6, 3, 3, 1), (1, 2), SAME1, 3),
  ((1, 1, 9, 2), (3, 1, 4, 2), (1, 2), ((0, 0), (2, 1)), 1),
])
def test_reference_conv_matches_direct_loops(shape, wshape, strides, padding, groups):
  rng = _rng("direct", shape, wshape)
  x, w = _i8(rng, shape), _w8(rng, wshape)
  b = rng.integers(-1000, 1000, wshape[0]).astype(np.int32)
  b[0] = I32_MAX
  args = (x, w, b, strides, padding, groups, -17)
  np.testing.assert_array_equal(K.conv2d_acc(*args), _direct_conv_acc(*args))


def test_reference_rejects_float_and_overflow():
  with pytest.raises(TypeError):
    K.requant(np.zeros(3, np.float32), 0, 1.0, 0)
  with pytest.raises(TypeError):
    K.dense(np.zeros((1, 2), np.int8), np.zeros((1, 2), np.int8), np.zeros(1, np.float32),
            np.ones(1, np.float32), 0, 0)
  with pytest.raises(OverflowError):
    K.requantize(np.array([2**31]), np.float32(1.0), 0)
  k = 70_000  # 70000 * 255 * 127 > 2**31: not an exact int32 sum
  with pytest.raises(OverflowError):
    K.dense_acc(np.full((1, k), 127, np.int8), np.full((1, k), 127, np.int8),
                np.zeros(1, np.int32), -128)


# --- conv2d ----------------------------------------------------------------------------

_CONV_GEOMETRIES = [  # (n, h, w, c_in, o, kh, kw, strides, padding, groups), id
  ((2, 8, 8, 4, 6, 3, 3, (1, 1), SAME1, 1), "3x3-same"),
  ((2, 9, 7, 4, 5, 3, 3, (2, 2), VALID, 1), "3x3-valid-s2"),
  ((1, 8, 9, 6, 6, 3, 2, (2, 1), ((0, 1), (0, 1)), 2), "unequal-strides-asym-g2"),
  ((2, 5, 5, 8, 12, 1, 1, (1, 1), VALID, 1), "pointwise"),
  ((1, 6, 6, 8, 8, 1, 1, (2, 2), VALID, 4), "pointwise-s2-g4"),
  ((2, 8, 8, 8, 8, 3, 3, (1, 1), SAME1, 8), "depthwise"),
  ((1, 9, 9, 6, 6, 3, 3, (2, 2), ((0, 1), (0, 1)), 6), "depthwise-s2-asym"),
  ((1, 7, 7, 4, 8, 3, 3, (1, 1), SAME1, 4), "depthwise-multiplier2"),
  ((2, 9, 9, 5, 5, 5, 5, (2, 2), ((2, 2), (2, 2)), 5), "depthwise-5x5-s2"),
  ((1, 6, 5, 3, 5, 3, 3, (1, 2), ((2, 0), (1, 3)), 1), "odd-padding"),
  ((1, 8, 8, 3, 5, 2, 2, (3, 3), VALID, 1), "stride-over-kernel"),
  ((2, 1, 20, 3, 5, 1, 5, (1, 2), ((0, 0), (2, 1)), 1), "1d"),
  ((1, 1, 16, 4, 8, 1, 3, (1, 1), ((0, 0), (1, 1)), 4), "1d-depthwise-mult2"),
  ((2, 1, 17, 6, 6, 1, 4, (1, 2), VALID, 3), "1d-grouped-s2"),
  ((2, 16, 16, 8, 8, 3, 3, (1, 1), SAME1, 1), "16x16x8"),
]
# Every geometry gets a zero-point/clamp setting; each setting is used twice or more.
CONV_CASES = [pytest.param(*g, QUANTS[i % len(QUANTS)], id=name)
              for i, (g, name) in enumerate(_CONV_GEOMETRIES)]


def _conv_case(rng, n, h, w, c, o, kh, kw, strides, padding, groups, quant):
  x_zero, y_zero, lo, hi = quant
  x, wt = _i8(rng, (n, h, w, c)), _w8(rng, (o, kh, kw, c // groups))
  geo = dict(strides=strides, padding=padding, groups=groups)
  acc0 = K.conv2d_acc(x, wt, np.zeros(o, np.int32), x_zero=x_zero, **geo)
  b = _biases(rng, acc0)
  m = _channel_multipliers(rng, K.conv2d_acc(x, wt, b, x_zero=x_zero, **geo))
  kw_ = dict(geo, x_zero=x_zero, y_zero=y_zero, lo=lo, hi=hi)
  return (x, wt, b, m), kw_


@pytest.mark.parametrize("n,h,w,c,o,kh,kw,strides,padding,groups,quant", CONV_CASES)
def test_qconv2d(n, h, w, c, o, kh, kw, strides, padding, groups, quant):
  case = (n, h, w, c, o, kh, kw, strides, padding, groups)
  (x, wt, b, m), kw_ = _conv_case(_rng("conv", case), *case, quant)
  want = K.conv2d(x, wt, b, m, **kw_)
  _assert_spread(want, kw_["lo"], kw_["hi"])
  _check(P.qconv2d, (_f32(x), _f32(wt), b, m), want, **kw_)


@pytest.mark.parametrize("groups", [1, 4])
def test_qconv2d_ties_round_half_to_even(groups):
  rng = _rng("convtie", groups)
  x_zero = -100
  x = _i8(rng, (2, 6, 6, 4), x_zero - 3, x_zero + 3)  # small |x - z|: small sums
  w = _w8(rng, (4, 3, 3, 4 // groups), 3)
  b = rng.integers(-5, 6, 4).astype(np.int32)
  m = np.array([0.5, 0.5, 0.25, 1.5], np.float32)
  kw_ = dict(strides=(1, 1), padding=SAME1, groups=groups, x_zero=x_zero, y_zero=3, lo=-128,
             hi=127)
  acc = K.conv2d_acc(x, w, b, (1, 1), SAME1, groups, x_zero)
  assert _ties_inside(acc[..., :2], 0.5, 3, -128, 127) > 20
  want = K.conv2d(x, w, b, m, **kw_)
  _check(P.qconv2d, (_f32(x), _f32(w), b, m), want, **kw_)


def test_qconv2d_bias_saturates():
  # x - z = 255 everywhere and w = +-127: sums of +-(9 * 4 * 255 * 127) push the bias over.
  x = np.full((1, 3, 3, 4), 127, np.int8)
  w = np.stack([np.full((3, 3, 4), s, np.int8) for s in (127, -127, 127, -127)])
  b = np.array([I32_MAX - 5, I32_MIN + 5, I32_MIN, I32_MAX], np.int32)
  m = np.full(4, 2.0**-25, np.float32)
  kw_ = dict(strides=(1, 1), padding=VALID, groups=1, x_zero=-128, y_zero=0)
  want = K.conv2d(x, w, b, m, **kw_)
  s = 9 * 4 * 255 * 127
  expect = [64, -64, round((I32_MIN + s) * 2.0**-25), round((I32_MAX - s) * 2.0**-25)]
  np.testing.assert_array_equal(want[0, 0, 0], expect)  # wrapping would flip the signs
  _check(P.qconv2d, (_f32(x), _f32(w), b, m), want, **kw_)


# --- dense -----------------------------------------------------------------------------

@pytest.mark.parametrize("n,k,o", [(3, 16, 5), (1, 64, 10), (4, 1, 3), (2, 300, 7), (5, 9, 1)])
def test_qdense(n, k, o):
  rng = _rng("dense", n, k, o)
  x_zero, y_zero, lo, hi = QUANTS[(n + k + o) % len(QUANTS)]
  x, w = _i8(rng, (n, k)), _w8(rng, (o, k))
  b = _biases(rng, K.dense_acc(x, w, np.zeros(o, np.int32), x_zero))
  m = _channel_multipliers(rng, K.dense_acc(x, w, b, x_zero))
  kw_ = dict(x_zero=x_zero, y_zero=y_zero, lo=lo, hi=hi)
  want = K.dense(x, w, b, m, **kw_)
  _check(P.qdense, (_f32(x), _f32(w), b, m), want, **kw_)


def test_qdense_ties_and_saturating_bias():
  rng = _rng("dense-tie")
  x = _i8(rng, (8, 12), 125, 127)
  w = _w8(rng, (4, 12), 2)
  w[2:] = np.array([127, -127], np.int8)[:, None]
  b = np.array([1, -2, I32_MAX - 3, I32_MIN + 3], np.int32)
  m = np.array([0.5, 0.5, 2.0**-25, 2.0**-25], np.float32)
  kw_ = dict(x_zero=126, y_zero=-1, lo=-128, hi=127)
  acc = K.dense_acc(x, w, b, 126)
  assert _ties_inside(acc[:, :2], 0.5, -1, -128, 127) > 3
  want = K.dense(x, w, b, m, **kw_)
  np.testing.assert_array_equal(want[:, 2:], [[63, -65]] * 8)  # saturated, not wrapped
  _check(P.qdense, (_f32(x), _f32(w), b, m), want, **kw_)


# --- residual add ----------------------------------------------------------------------

ADD_CASES = [  # (shape, a_zero, b_zero, (a_mult, b_mult, m), y_zero, lo, hi)
  pytest.param((2, 4, 4, 3), 3, -7, numerics.add_multipliers(0.05, 0.02, 0.06), 0, -128, 127,
               id="nhwc"),
  pytest.param((3, 10), -128, 127, numerics.add_multipliers(0.1, 0.1, 0.1), -128, -128, 127,
               id="equal-scales-extreme-zeros"),
  pytest.param((2, 5, 5, 2), 127, -128, numerics.add_multipliers(0.01, 0.2, 0.15), 10, 10, 127,
               id="relu"),
  pytest.param((1, 1, 9, 4), 0, 0, (1, 1, 0.5), 0, -128, 127, id="ties"),
  pytest.param((2, 3, 3, 2), 10, -10, (1, 3, 1.7), -5, -128, 90, id="m-over-1"),
]


@pytest.mark.parametrize("shape,a_zero,b_zero,mults,y_zero,lo,hi", ADD_CASES)
def test_qadd(shape, a_zero, b_zero, mults, y_zero, lo, hi):
  rng = _rng("add", shape, a_zero)
  a, b = _i8(rng, shape), _i8(rng, shape)
  ma, mb, m = mults
  kw_ = dict(a_zero=a_zero, b_zero=b_zero, a_mult=ma, b_mult=mb, m=m, y_zero=y_zero, lo=lo,
             hi=hi)
  want = K.add(a, b, **kw_)
  _check(P.qadd, (_f32(a), _f32(b)), want, **kw_)
  _check(P.qadd, (_f32(a), _f32(a)), K.add(a, a, **kw_), **kw_)  # one tensor, both inputs


def test_qadd_ties():
  rng = _rng("add-tie")
  a, b = _i8(rng, (4, 50)), _i8(rng, (4, 50))
  kw_ = dict(a_zero=0, b_zero=0, a_mult=1, b_mult=1, m=0.5, y_zero=0)
  acc = a.astype(np.int32) + b
  assert _ties_inside(acc, 0.5, 0, -128, 127) > 50
  _check(P.qadd, (_f32(a), _f32(b)), K.add(a, b, **kw_), **kw_)


# --- average pooling -------------------------------------------------------------------

AVG_CASES = [  # (shape, window, strides, padding, multiplier kind, quant)
  pytest.param((2, 5, 5, 8), (5, 5), (1, 1), VALID, "scalar", QUANTS[1], id="global"),
  pytest.param((2, 6, 6, 3), (2, 2), (2, 2), VALID, "quarter", QUANTS[0], id="2x2-ties"),
  pytest.param((1, 5, 6, 4), (3, 3), (1, 1), SAME1, "per-position", QUANTS[2], id="3x3-same"),
  pytest.param((2, 7, 7, 2), (2, 2), (2, 2), ((0, 1), (0, 1)), "per-position", QUANTS[3],
               id="asym-pad"),
  pytest.param((1, 8, 6, 3), (3, 2), (2, 1), ((1, 1), (0, 1)), "scalar", QUANTS[4],
               id="unequal"),
  pytest.param((2, 1, 16, 4), (1, 16), (1, 1), VALID, "scalar", QUANTS[5], id="1d-global"),
  pytest.param((1, 4, 4, 3), (1, 2), (1, 2), VALID, "over-1", QUANTS[0], id="m-over-1"),
]


@pytest.mark.parametrize("shape,window,strides,padding,kind,quant", AVG_CASES)
def test_qavgpool(shape, window, strides, padding, kind, quant):
  rng = _rng("avg", shape, window, kind)
  x_zero, y_zero, lo, hi = quant
  x = _i8(rng, shape)
  ratio = rng.uniform(0.8, 1.3)  # s_x / s_y
  ones = np.ones((1, *shape[1:3], 1), np.int8)
  count = K.avgpool_acc(ones, window, strides, padding, 0)[0, :, :, 0]  # unpadded elements
  m = {"scalar": numerics.multiplier(ratio / (window[0] * window[1])),
       "quarter": np.float32(0.25),
       "per-position": numerics.multiplier(ratio / count),
       "over-1": np.float32(2.5)}[kind]
  kw_ = dict(window=window, strides=strides, padding=padding, x_zero=x_zero, y_zero=y_zero,
             lo=lo, hi=hi)
  want = K.avgpool(x, m, **kw_)
  if kind == "quarter":
    acc = K.avgpool_acc(x, window, strides, padding, x_zero)
    assert _ties_inside(acc, m, y_zero, lo, hi) > 5
  _check(P.qavgpool, (_f32(x), m), want, **kw_)


# --- max pooling -----------------------------------------------------------------------

MAX_CASES = [  # (shape, window, strides, padding, input range)
  pytest.param((2, 6, 6, 3), (2, 2), (2, 2), VALID, (-128, 127), id="2x2-s2"),
  pytest.param((1, 7, 7, 4), (3, 3), (2, 2), SAME1, (-128, 127), id="3x3-s2-pad"),
  pytest.param((2, 5, 5, 2), (3, 3), (1, 1), ((0, 2), (1, 0)), (-128, 127), id="asym-pad"),
  pytest.param((1, 9, 7, 3), (3, 2), (2, 1), ((1, 0), (0, 1)), (-128, 127), id="unequal"),
  pytest.param((2, 1, 12, 3), (1, 3), (1, 2), ((0, 0), (1, 1)), (-128, 127), id="1d"),
  pytest.param((1, 5, 5, 4), (3, 3), (1, 1), SAME1, (-128, -100), id="negative-input"),
  pytest.param((1, 3, 3, 2), (2, 2), (1, 1), ((0, 2), (0, 2)), (-50, 127), id="all-pad-window"),
]


@pytest.mark.parametrize("shape,window,strides,padding,irange", MAX_CASES)
def test_qmaxpool(shape, window, strides, padding, irange):
  x = _i8(_rng("max", shape, window), shape, *irange)
  kw_ = dict(window=window, strides=strides, padding=padding)
  want = K.maxpool(x, **kw_)
  if irange[1] < 0:  # padding at 0 (instead of -128) would win every border window
    assert want.max() < 0
  _check(P.qmaxpool, (_f32(x),), want, **kw_)


# --- requant ---------------------------------------------------------------------------

REQUANT_CASES = [  # (shape, x_zero, m, y_zero, lo, hi)
  pytest.param((2, 4, 4, 3), 5, 0.37, -3, -128, 127, id="rescale"),
  pytest.param((3, 7), -128, 0.5, 0, -128, 127, id="ties"),
  pytest.param((2, 3, 3, 2), 127, 3.0, 0, -128, 127, id="saturate"),
  pytest.param((2, 5), 0, 1.0, 0, 0, 127, id="relu-identity"),
  pytest.param((1, 2, 2, 4), 10, 1.0, 10, 10, 70, id="relu6-like"),
  pytest.param((2, 6), -20, 0.003, 100, -128, 127, id="tiny-m"),
]


@pytest.mark.parametrize("shape,x_zero,m,y_zero,lo,hi", REQUANT_CASES)
def test_qrequant(shape, x_zero, m, y_zero, lo, hi):
  x = _i8(_rng("requant", shape, m), shape)
  kw_ = dict(x_zero=x_zero, m=m, y_zero=y_zero, lo=lo, hi=hi)
  want = K.requant(x, **kw_)
  if m == 1.0 and x_zero == y_zero:
    np.testing.assert_array_equal(want, np.clip(x, lo, hi))
  _check(P.qrequant, (_f32(x),), want, **kw_)


# --- concat ----------------------------------------------------------------------------

CONCAT_CASES = [  # (shapes, axis, zeros, mults, y_zero)
  pytest.param([(2, 3, 3, 2), (2, 3, 3, 4), (2, 3, 3, 1)], 3, (-128, 5, 5), (0.5, 1.0, 0.8), 5,
               id="channels-identity-input"),
  pytest.param([(2, 2, 3, 2), (2, 4, 3, 2)], 1, (0, 127), (2.5, 0.33), -10, id="axis1"),
  pytest.param([(1, 2, 2, 3), (1, 2, 5, 3)], 2, (7, 7), (1.0, 1.0), -100, id="shift-and-clamp"),
  pytest.param([(3, 4), (3, 6)], 1, (-3, 12), (0.75, 1.25), 0, id="flat"),
]


@pytest.mark.parametrize("shapes,axis,zeros,mults,y_zero", CONCAT_CASES)
def test_qconcat(shapes, axis, zeros, mults, y_zero):
  rng = _rng("concat", shapes, axis)
  xs = [_i8(rng, s) for s in shapes]
  kw_ = dict(axis=axis, zeros=zeros, mults=mults, y_zero=y_zero)
  want = K.concat(xs, **kw_)
  parts = np.split(want, np.cumsum([x.shape[axis] for x in xs])[:-1], axis)
  for x, z, m, part in zip(xs, zeros, mults, parts, strict=True):
    if z == y_zero and m == 1.0:  # an input already on the output's parameters is unchanged
      np.testing.assert_array_equal(part, x)
  _check(P.qconcat, ([_f32(x) for x in xs],), want, **kw_)


# --- reshape ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape,new", [((2, 4, 4, 3), (48,)), ((2, 48), (4, 4, 3)),
                                       ((3, 1, 8, 2), (16,)), ((2, 6), (2, 3))])
def test_qreshape(shape, new):
  x = _i8(_rng("reshape", shape), shape)
  want = K.reshape(x, new)
  np.testing.assert_array_equal(want.reshape(x.shape), x)  # value-preserving
  _check(P.qreshape, (_f32(x),), want, shape=new)


# --- abstract evaluation: error paths --------------------------------------------------

def _sds(shape, dtype=np.float32) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(shape, dtype)


CONV_KW = dict(strides=(1, 1), padding=SAME1, x_zero=0, y_zero=0)
POOL_KW = dict(window=(2, 2), strides=(2, 2), padding=VALID)
X4, W4, B4, M4 = _sds((1, 4, 4, 4)), _sds((4, 3, 3, 4)), _sds((4,), np.int32), _sds((4,))

BAD_DTYPE = [
  pytest.param(lambda: P.qconv2d(_sds((1, 4, 4, 4), np.int8), W4, B4, M4, groups=1, **CONV_KW),
               id="conv-x-int8"),
  pytest.param(lambda: P.qconv2d(X4, _sds((4, 3, 3, 4), np.int32), B4, M4, groups=1, **CONV_KW),
               id="conv-w-int32"),
  pytest.param(lambda: P.qdense(_sds((2, 8), np.int8), _sds((3, 8)), _sds((3,), np.int32),
                                _sds((3,)), x_zero=0, y_zero=0), id="dense-x-int8"),
  pytest.param(lambda: P.qadd(X4, _sds((1, 4, 4, 4), np.int8), a_zero=0, b_zero=0, a_mult=1,
                              b_mult=1, m=1.0, y_zero=0), id="add-b-int8"),
  pytest.param(lambda: P.qavgpool(_sds((1, 4, 4, 4), np.int32), _sds(()), x_zero=0, y_zero=0,
                                  **POOL_KW), id="avgpool-int32"),
  pytest.param(lambda: P.qmaxpool(_sds((1, 4, 4, 4), np.int8), **POOL_KW), id="maxpool-int8"),
  pytest.param(lambda: P.qrequant(_sds((2, 3), jnp.bfloat16), x_zero=0, m=1.0, y_zero=0),
               id="requant-bf16"),
  pytest.param(lambda: P.qconcat([X4, _sds((1, 4, 4, 2), np.int8)], axis=3, zeros=(0, 0),
                                 mults=(1.0, 1.0), y_zero=0), id="concat-int8"),
  pytest.param(lambda: P.qreshape(_sds((2, 8), np.int8), shape=(4, 2)), id="reshape-int8"),
]


@pytest.mark.parametrize("make", BAD_DTYPE)
def test_non_float32_carrier_raises_type_error(make):
  with pytest.raises(TypeError, match="float32 carriers"):
    jax.eval_shape(make)


def test_non_float32_carrier_raises_under_jit():
  w, b, m = np.zeros((4, 3, 3, 4), np.float32), np.zeros(4, np.int32), np.ones(4, np.float32)
  f = jax.jit(lambda x: P.qconv2d(x, w, b, m, groups=1, **CONV_KW))
  with pytest.raises(TypeError, match="float32 carriers"):
    f(np.zeros((1, 4, 4, 4), np.int8))


BAD_SHAPE = [
  pytest.param(lambda: P.qconv2d(X4, _sds((4, 3, 3, 3)), B4, M4, groups=1, **CONV_KW),
               id="conv-channels"),
  pytest.param(lambda: P.qconv2d(X4, _sds((4, 3, 3, 4)), B4, M4, groups=4, **CONV_KW),
               id="depthwise-weight-not-1-channel"),
  pytest.param(lambda: P.qconv2d(_sds((1, 4, 4, 6)), _sds((4, 3, 3, 2)), B4, M4, groups=3,
                                 **CONV_KW), id="out-channels-not-multiple-of-groups"),
  pytest.param(lambda: P.qconv2d(X4, W4, _sds((3,), np.int32), M4, groups=1, **CONV_KW),
               id="conv-bias"),
  pytest.param(lambda: P.qconv2d(X4, W4, B4, _sds((1,)), groups=1, **CONV_KW),
               id="conv-multiplier"),
  pytest.param(lambda: P.qdense(_sds((2, 8)), _sds((3, 7)), _sds((3,), np.int32), _sds((3,)),
                                x_zero=0, y_zero=0), id="dense-k"),
  pytest.param(lambda: P.qadd(X4, _sds((1, 4, 4, 3)), a_zero=0, b_zero=0, a_mult=1, b_mult=1,
                              m=1.0, y_zero=0), id="add-shapes"),
  pytest.param(lambda: P.qavgpool(X4, _sds((3, 3)), x_zero=0, y_zero=0, **POOL_KW),
               id="avgpool-multiplier"),
  pytest.param(lambda: P.qmaxpool(X4, window=(5, 5), strides=(1, 1), padding=VALID),
               id="pool-window-too-big"),
  pytest.param(lambda: P.qconcat([X4, _sds((1, 4, 3, 2))], axis=3, zeros=(0, 0),
                                 mults=(1.0, 1.0), y_zero=0), id="concat-off-axis"),
  pytest.param(lambda: P.qconcat([X4, X4], axis=0, zeros=(0, 0), mults=(1.0, 1.0), y_zero=0),
               id="concat-batch-axis"),
  pytest.param(lambda: P.qreshape(X4, shape=(5, 13)), id="reshape-size"),
]


@pytest.mark.parametrize("make", BAD_SHAPE)
def test_mismatched_shapes_raise_value_error(make):
  with pytest.raises(ValueError):
    jax.eval_shape(make)


def test_reference_rejects_mismatched_groups():
  x, w = np.zeros((1, 4, 4, 4), np.int8), np.zeros((4, 3, 3, 4), np.int8)
  with pytest.raises(ValueError):
    K.conv2d(x, w, np.zeros(4, np.int32), np.ones(4, np.float32), (1, 1), SAME1, 4, 0, 0)


# --- checks that once had gaps ----------------------------------------------------------


def test_eager_call_checks_carriers():
  w, b, m = np.zeros((4, 3, 3, 4), np.float32), np.zeros(4, np.int32), np.ones(4, np.float32)
  try:
    P.qconv2d(np.zeros((1, 4, 4, 4), np.int8), w, b, m, groups=1, **CONV_KW)
  except TypeError:
    return
  raise AssertionError("an int8 carrier was accepted eagerly")


def test_reduction_limit_covers_zero_point_offset():
  k = 70_000  # < MAX_REDUCTION, yet 70000 * 255 * 127 > 2**31 - 1
  args = (_sds((1, k)), _sds((1, k)), _sds((1,), np.int32), _sds((1,)))
  try:
    jax.eval_shape(lambda *a: P.qdense(*a, x_zero=-128, y_zero=0), *args)
  except ValueError:
    return
  raise AssertionError("a reduction that can overflow int32 was accepted")
