"""The backward pass: jaxtiny.backward against the numpy reference, and the VJPs of
jaxtiny.autodiff against plain JAX autodiff of a float straight-through reference.

Part 1 runs every backward primitive on random inputs and compares it with
`lowering.kernels`. Part 2 quantizes small Flax models, takes `jax.grad` through
`train_forward` (trained weight channels, bias handles and the input) and compares it with
`jax.grad` of a float reference of the same network in which each requantization is a
straight-through estimator: value = the exact int8 output, derivative = M * [lo < y < hi].
Part 3 checks in the training jaxpr that frozen layers get no weight gradient.
"""

from __future__ import annotations

import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

# JAX's own dead-code elimination; jax.extend exposes no DCE of a whole jaxpr.
from jax._src.interpreters.partial_eval import dce_jaxpr
from jax.extend.core import jaxprs_in_params

import jaxtiny as jt
from jaxtiny import backward as B
from jaxtiny.autodiff import LayerPlan, train_forward
from jaxtiny.qmodel import QModel
from jaxtiny.sparse import SparseUpdate, layer_plans
from lowering import kernels as K

# fp32 backward tolerance. Both sides sum in float32 but in different orders (XLA tiles and
# reorders the reductions of conv, dot and scatter-add; the reference adds left to right),
# so a sum of n terms may differ by up to about n * 2**-24 times the sum of the terms'
# magnitudes, typically by a few ulps. With at most a few hundred terms per sum here, the
# observed differences stay below 3e-7 of the largest reference element. An element may
# differ by RTOL of itself plus ATOL_REL times the largest reference element (the absolute
# part covers cancellation: an element can be far smaller than the terms it sums).
# Element-wise ops (one multiply per element: requant_bw, add_bw, concat_bw) and
# merge_channels must match exactly.
RTOL = 1e-5
ATOL_REL = 1e-5

VALID = ((0, 0), (0, 0))
SAME1 = ((1, 1), (1, 1))
ASYM = ((0, 1), (0, 1))
F32 = np.float32
HIGHEST = lax.Precision.HIGHEST


# --- helpers ---------------------------------------------------------------------------

def _rng(*key) -> np.random.Generator:
  # Stable per-case seed: the same case always draws the same data.
  return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _i8(rng: np.random.Generator, shape, lo: int = -128, hi: int = 127) -> np.ndarray:
  return rng.integers(lo, hi, size=shape, endpoint=True, dtype=np.int8)


def _grad(rng: np.random.Generator, shape) -> np.ndarray:
  return rng.normal(size=shape).astype(F32)


def _close(got, ref, what: str = "") -> None:
  got, ref = np.asarray(got), np.asarray(ref)
  assert got.dtype == np.float32 and got.shape == ref.shape, (what, got.dtype, got.shape,
                                                              ref.shape)
  scale = float(np.abs(ref).max()) if ref.size else 0.0
  np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL_REL * scale, err_msg=what)


def _same(got, ref) -> None:
  got = np.asarray(got)
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, ref)


def _compiled(f, args):
  # These programs run once: LLVM's optimizations would cost more than they save (about
  # half the compile time). They do not change float semantics (no fast-math either way).
  lowered = jax.jit(f).lower(*args)
  return lowered.compile(compiler_options={"xla_backend_optimization_level": 0})(*args)


def _bw(prim, *arrays, **params):
  """A backward primitive called under jit (abstract eval + its registered lowering)."""
  return _compiled(lambda *a: prim(*a, **params), arrays)


def _out_hw(hw, kernel, strides, padding) -> tuple[int, int]:
  return tuple(K.out_size(hw[d], kernel[d], strides[d], padding[d]) for d in range(2))


# === 1. backward primitives == numpy reference ==========================================

@pytest.mark.parametrize("m_kind", ["scalar", "channel", "position"])
def test_requant_bw(m_kind):
  rng = _rng("requant_bw", m_kind)
  shape, lo, hi = (2, 4, 5, 3), -100, 90
  g = _grad(rng, shape)
  y = np.clip(_i8(rng, shape), lo, hi).astype(np.int8)  # many on the clamp, many inside
  m = {"scalar": F32(0.37), "channel": rng.uniform(0.01, 2, 3).astype(F32),
       "position": rng.uniform(0.01, 2, (4, 5)).astype(F32)}[m_kind]
  ref = K.requant_bw(g, y, m, lo, hi)
  _same(_bw(B.requant_bw, g, y.astype(F32), m, lo=lo, hi=hi), ref)
  assert np.any(ref == 0) and np.any(ref != 0)


def test_requant_bw_dense_and_bounds():
  rng = _rng("requant_bw_dense")
  g, y = _grad(rng, (4, 6)), _i8(rng, (4, 6))
  y[0, :3] = (-128, 127, 0)
  m = rng.uniform(0.1, 1, 6).astype(F32)
  ref = K.requant_bw(g, y, m, -128, 127)
  assert ref[0, 0] == 0 and ref[0, 1] == 0 and ref[0, 2] == g[0, 2] * m[2]  # saturation cuts
  _same(_bw(B.requant_bw, g, y.astype(F32), m, lo=-128, hi=127), ref)


# (input NHWC, output channels, kernel, strides, padding, groups)
CONV_CASES = {
  "valid": ((2, 7, 7, 3), 4, (3, 3), (1, 1), VALID, 1),
  "same_s2": ((2, 8, 8, 4), 6, (3, 3), (2, 2), SAME1, 1),
  "unequal_asym": ((1, 9, 6, 4), 5, (3, 2), (2, 1), ASYM, 1),
  "gaps": ((2, 7, 7, 2), 3, (2, 2), (3, 3), VALID, 1),  # stride > kernel: unread inputs
  "grouped": ((2, 6, 6, 4), 6, (3, 3), (1, 1), SAME1, 2),
  "depthwise": ((2, 8, 8, 5), 5, (3, 3), (2, 2), ASYM, 5),
  "depthwise_x2": ((1, 6, 6, 3), 6, (3, 3), (1, 1), SAME1, 3),  # channel multiplier 2
  "1d": ((2, 1, 16, 3), 4, (1, 5), (1, 2), ((0, 0), (2, 2)), 1),
  "1d_depthwise": ((2, 1, 12, 4), 4, (1, 3), (1, 1), ((0, 0), (0, 1)), 4),
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_bw_input(case):
  xs, o, k, s, p, groups = CONV_CASES[case]
  rng = _rng("conv2d_bw_input", case)
  ho, wo = _out_hw(xs[1:3], k, s, p)
  g = _grad(rng, (xs[0], ho, wo, o))
  w = _i8(rng, (o, *k, xs[3] // groups), -127, 127)
  ref = K.conv2d_bw_input(g, w, s, p, groups, xs[1:])
  got = _bw(B.conv2d_bw_input, g, w.astype(F32), strides=s, padding=p, groups=groups,
                          in_shape=xs[1:])
  _close(got, ref)
  if case == "gaps":
    assert np.all(ref[:, 2::3] == 0) and np.all(ref[:, :, 2::3] == 0)


def _weight_cases():
  for name, (xs, o, _, _, _, groups) in CONV_CASES.items():
    c = xs[3]
    yield name, None
    if groups == 1:
      yield name, (0,)
      yield name, tuple(range(1, c, 2))
    elif groups == c == o:
      yield name, (1, c - 1)


@pytest.mark.parametrize("case,channels", list(_weight_cases()))
def test_conv2d_bw_weight(case, channels):
  xs, o, k, s, p, groups = CONV_CASES[case]
  rng = _rng("conv2d_bw_weight", case, channels)
  ho, wo = _out_hw(xs[1:3], k, s, p)
  g, x = _grad(rng, (xs[0], ho, wo, o)), _i8(rng, xs)
  x_zero = int(rng.integers(-128, 128))
  ref = K.conv2d_bw_weight(g, x, s, p, groups, x_zero, k, channels)
  got = _bw(B.conv2d_bw_weight, g, x.astype(F32), strides=s, padding=p, groups=groups,
                           x_zero=x_zero, kernel=k, channels=channels)
  if channels is not None:
    full = K.conv2d_bw_weight(g, x, s, p, groups, x_zero, k, None)
    depthwise = groups > 1
    np.testing.assert_array_equal(ref, full[list(channels)] if depthwise
                                  else full[..., list(channels)])
  _close(got, ref)


def test_conv2d_bw_weight_grouped_subset_rejected():
  xs, o, k, s, p, groups = CONV_CASES["grouped"]
  g, x = np.zeros((2, 6, 6, o), F32), np.zeros(xs, np.int8)
  with pytest.raises(ValueError, match="groups == 1 or depthwise"):
    K.conv2d_bw_weight(g, x, s, p, groups, 0, k, (0,))
  with pytest.raises(ValueError, match="groups == 1 or depthwise"):
    _bw(B.conv2d_bw_weight, g, x.astype(F32), strides=s, padding=p, groups=groups, x_zero=0,
                       kernel=k, channels=(0,))


@pytest.mark.parametrize("shape", [(2, 5, 5, 4), (7, 6), (3, 1, 9, 2)])
def test_bias_bw(shape):
  g = _grad(_rng("bias_bw", shape), shape)
  _close(_bw(B.bias_bw, g), K.bias_bw(g))


@pytest.mark.parametrize("channels", [None, (0,), (1, 4, 8)])
def test_dense_bw(channels):
  rng = _rng("dense_bw", channels)
  n, o, kk = 5, 16, 9
  g, x, w = _grad(rng, (n, o)), _i8(rng, (n, kk)), _i8(rng, (o, kk), -127, 127)
  _close(_bw(B.dense_bw_input, g, w.astype(F32)), K.dense_bw_input(g, w))
  ref = K.dense_bw_weight(g, x, 3, channels)
  _close(_bw(B.dense_bw_weight, g, x.astype(F32), x_zero=3, channels=channels), ref)
  if channels is not None:
    np.testing.assert_array_equal(ref, K.dense_bw_weight(g, x, 3)[:, list(channels)])


def test_add_bw():
  rng = _rng("add_bw")
  g, y = _grad(rng, (2, 4, 4, 3)), _i8(rng, (2, 4, 4, 3))
  kw = dict(a_mult=2**15, b_mult=11123, m=3.1e-5, lo=-20, hi=127)
  ga, gb = K.add_bw(g, y, **kw)
  got = _bw(B.add_bw, g, y.astype(F32), **kw)
  _same(got[0], ga)
  _same(got[1], gb)
  assert np.any(ga == 0) and np.any(ga != 0)


# (input NHWC, window, strides, padding, per-position multiplier)
POOL_CASES = {
  "same_s2": ((2, 6, 6, 3), (3, 3), (2, 2), SAME1, True),
  "valid_scalar": ((2, 5, 7, 2), (2, 2), (2, 2), VALID, False),
  "asym_s1": ((1, 5, 5, 2), (2, 2), (1, 1), ASYM, True),
  "unequal": ((2, 7, 6, 2), (3, 2), (2, 1), ((1, 0), (0, 1)), False),
  "1d": ((2, 1, 10, 3), (1, 3), (1, 2), ((0, 0), (1, 1)), True),
}


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_avgpool_bw(case):
  xs, win, s, p, per_pos = POOL_CASES[case]
  rng = _rng("avgpool_bw", case)
  ho, wo = _out_hw(xs[1:3], win, s, p)
  g, y = _grad(rng, (xs[0], ho, wo, xs[3])), _i8(rng, (xs[0], ho, wo, xs[3]))
  m = rng.uniform(0.05, 1, (ho, wo)).astype(F32) if per_pos else F32(1 / 9)
  lo, hi = -128, 100
  ref = K.avgpool_bw(g, y, m, win, s, p, lo, hi, xs[1:])
  got = _bw(B.avgpool_bw, g, y.astype(F32), m, window=win, strides=s, padding=p, lo=lo, hi=hi,
                     in_shape=xs[1:])
  _close(got, ref)


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_maxpool_bw(case):
  xs, win, s, p, _ = POOL_CASES[case]
  rng = _rng("maxpool_bw", case)
  x = _i8(rng, xs, -3, 2)  # a narrow range: most windows hold ties
  x[0, 0] = -128  # a row of -128 meets the padding
  y = K.maxpool(x, win, s, p)
  g = _grad(rng, y.shape)
  ref = K.maxpool_bw(g, x, y, win, s, p)
  got = _bw(B.maxpool_bw, g, x.astype(F32), y.astype(F32), window=win, strides=s, padding=p)
  _close(got, ref)
  np.testing.assert_allclose(ref.sum(), g.sum(), rtol=1e-5)  # no window loses its gradient


def test_maxpool_bw_ties_go_to_the_first_position():
  # Every window of a constant input is one big tie: the first position (row-major) wins.
  x = np.full((1, 3, 3, 1), 5, np.int8)
  y = K.maxpool(x, (2, 2), (1, 1), VALID)
  g = np.array([1, 2, 3, 4], F32).reshape(1, 2, 2, 1)
  expect = np.array([[1, 2, 0], [3, 4, 0], [0, 0, 0]], F32).reshape(1, 3, 3, 1)
  _same(K.maxpool_bw(g, x, y, (2, 2), (1, 1), VALID), expect)
  _same(_bw(B.maxpool_bw, g, x.astype(F32), y.astype(F32), window=(2, 2), strides=(1, 1),
                     padding=VALID), expect)
  # A tie between later positions: (0, 1) and (1, 0) both hold the max 7; (0, 1) is first.
  x = np.array([[0, 7], [7, 1]], np.int8).reshape(1, 2, 2, 1)
  y = K.maxpool(x, (2, 2), (2, 2), VALID)
  g = np.array([2.5], F32).reshape(1, 1, 1, 1)
  expect = np.array([[0, 2.5], [0, 0]], F32).reshape(1, 2, 2, 1)
  _same(K.maxpool_bw(g, x, y, (2, 2), (2, 2), VALID), expect)
  _same(_bw(B.maxpool_bw, g, x.astype(F32), y.astype(F32), window=(2, 2), strides=(2, 2),
                     padding=VALID), expect)


def test_maxpool_bw_padding_never_wins():
  # All -128: the padding ties with every real element but never takes the gradient; a
  # window lying wholly in the padding (the first output row) drops it.
  x = np.full((1, 2, 2, 1), -128, np.int8)
  pad = ((2, 0), (1, 0))
  y = K.maxpool(x, (2, 2), (1, 1), pad)
  assert y.shape == (1, 3, 2, 1)
  g = np.arange(1, 7, dtype=F32).reshape(1, 3, 2, 1)
  # Every window of output rows 1-2 reaches x[0, 0] before any other real element.
  expect = np.array([[3 + 4 + 5 + 6, 0], [0, 0]], F32).reshape(1, 2, 2, 1)
  _same(K.maxpool_bw(g, x, y, (2, 2), (1, 1), pad), expect)
  _same(_bw(B.maxpool_bw, g, x.astype(F32), y.astype(F32), window=(2, 2), strides=(1, 1),
                     padding=pad), expect)


@pytest.mark.parametrize("axis,shape", [(3, (2, 3, 4, 6)), (2, (2, 3, 6, 2)), (1, (3, 6))])
def test_concat_bw(axis, shape):
  rng = _rng("concat_bw", axis)
  g, y = _grad(rng, shape), _i8(rng, shape)
  y.flat[::3] = -128  # saturated elements: a requantized input passes nothing there
  y.flat[1::5] = 127
  sizes, mults, identity = (1, 3, 2), (1.0, 0.75, 1.3), (True, False, False)
  ref = K.concat_bw(g, y, axis, sizes, mults, identity)
  got = _bw(B.concat_bw, g, y.astype(F32), axis=axis, sizes=sizes, mults=mults, identity=identity)
  assert len(got) == len(ref) == 3
  for a, b in zip(got, ref):
    _same(a, b)
  np.testing.assert_array_equal(ref[0], np.take(g, [0], axis=axis))  # identity: passed on
  assert np.any(ref[1] == 0) and np.any(ref[1] != 0)  # saturated elements masked


@pytest.mark.parametrize("axis,shape,channels", [
  (3, (4, 3, 3, 5), (0, 3)), (0, (6, 3, 3, 1), (1, 2, 5)), (1, (4, 7), (6,))])
def test_merge_channels(axis, shape, channels):
  rng = _rng("merge", axis)
  w = _i8(rng, shape, -127, 127)
  sel_shape = list(shape)
  sel_shape[axis] = len(channels)
  w_sel = _i8(rng, sel_shape, -127, 127)
  ref = K.merge_channels(w, w_sel, axis, channels)
  got = _bw(B.merge_channels, w.astype(F32), w_sel.astype(F32), axis=axis, channels=channels)
  _same(got, ref.astype(F32))
  np.testing.assert_array_equal(np.take(ref, channels, axis=axis), w_sel)
  rest = [c for c in range(shape[axis]) if c not in channels]
  np.testing.assert_array_equal(np.take(ref, rest, axis=axis), np.take(w, rest, axis=axis))


# === 2. VJPs of train_forward == plain autodiff of a float STE reference ================

class ConvStack(nn.Module):
  """Strided conv with asymmetric padding and ReLU6, a depthwise conv, a dense head."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu6(nn.Conv(6, (3, 3), strides=(2, 1), padding=((0, 1), (0, 1)))(x))
    x = nn.relu(nn.Conv(6, (3, 3), feature_group_count=6, padding="SAME")(x))
    return nn.Dense(4)(x.reshape((x.shape[0], -1)))


class Mlp(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(5)(nn.relu(nn.Dense(8)(x)))


class Residual(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(4, (3, 3))(x))
    x = nn.relu(h + nn.Conv(4, (3, 3))(h))
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


class AvgPools(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    x = nn.avg_pool(x, (3, 3), (2, 2), padding="SAME", count_include_pad=False)  # M per position
    x = nn.avg_pool(x, (2, 1), (1, 1))  # scalar M
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


class MaxPools(nn.Module):
  """Max pooling straight on the (tie-rich) input, a ReLU that cannot fuse into it, then
  max pooling after a ReLU conv."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.max_pool(x, (3, 3), (2, 2), padding="SAME"))  # a standalone clamp
    x = nn.relu(nn.Conv(4, (3, 3), padding="VALID")(x))
    x = nn.max_pool(x, (2, 2), (1, 1))
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


class Concat(nn.Module):
  """concat([h, relu(conv(h))]): h spans the output's range (copied), the other is
  requantized."""

  @nn.compact
  def __call__(self, x):
    h = nn.Conv(4, (3, 3))(x)
    x = jnp.concatenate([h, nn.relu(nn.Conv(3, (1, 1))(h))], axis=-1)
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


class Signal1D(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (5,), strides=2, padding="SAME")(x))
    x = nn.relu(nn.Conv(4, (3,), feature_group_count=4)(x))
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


# (model, input shape, kernel gains by layer name, integer-valued input data)
MODELS = {
  "conv_stack": (ConvStack, (7, 6, 3), {}, False),
  "mlp": (Mlp, (12,), {}, False),
  "residual": (Residual, (5, 5, 2), {}, False),
  "avgpool": (AvgPools, (6, 6, 3), {}, False),
  "maxpool": (MaxPools, (8, 8, 2), {}, True),
  "concat": (Concat, (5, 5, 2), {"Conv_0": 2.0, "Conv_1": 0.2}, False),
  "signal1d": (Signal1D, (16, 3), {}, False),
}

_QMODELS: dict[str, tuple[QModel, np.ndarray]] = {}


def _qmodel(name: str) -> tuple[QModel, np.ndarray]:
  """The quantized model and an int8 test batch (wider than the calibration data, so some
  outputs saturate)."""
  if name not in _QMODELS:
    cls, shape, gains, coarse = MODELS[name]
    model, rng = cls(), _rng("model", name)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *shape)))
    # Random parameters drawn directly: faster than running Flax's initializers.
    params = {}
    for layer, p in shapes["params"].items():
      fan_in = int(np.prod(p["kernel"].shape[:-1]))
      params[layer] = {
        "kernel": (rng.normal(size=p["kernel"].shape) * gains.get(layer, 1.0)
                   / np.sqrt(fan_in)).astype(F32),
        "bias": (0.2 * rng.normal(size=p["bias"].shape)).astype(F32)}
    draw = (lambda s: rng.integers(-2, 3, s).astype(F32)) if coarse else (
      lambda s: rng.normal(size=s).astype(F32))
    qm = jt.quantize(model, {"params": params}, draw((16, *shape)))
    _QMODELS[name] = qm, qm.quantize_input(1.3 * draw((3, *shape)))
  return _QMODELS[name]


def _exact_env(qm: QModel, x8: np.ndarray) -> dict[int, np.ndarray]:
  """Every tensor of the int8 forward pass by tensor id, from the numpy reference kernels."""
  t = qm.tensors
  env = {qm.input_id: x8}
  for n in qm.nodes:
    a, ins = n.attrs, [env[i] for i in n.inputs]
    zs, zy = [t[i].qparams.zero for i in n.inputs], t[n.output].qparams.zero
    p, m = qm.params.get(n.name), n.arrays.get("multiplier")
    if n.op == "conv2d":
      y = K.conv2d(ins[0], p["weight"], p["bias"], m, a["strides"], a["padding"], a["groups"],
                   zs[0], zy, a["lo"], a["hi"])
    elif n.op == "dense":
      y = K.dense(ins[0], p["weight"], p["bias"], m, zs[0], zy, a["lo"], a["hi"])
    elif n.op == "add":
      y = K.add(ins[0], ins[1], zs[0], zs[1], a["a_mult"], a["b_mult"], a["m"], zy, a["lo"],
                a["hi"])
    elif n.op == "avgpool":
      y = K.avgpool(ins[0], m, a["window"], a["strides"], a["padding"], zs[0], zy, a["lo"],
                    a["hi"])
    elif n.op == "maxpool":
      y = K.maxpool(ins[0], a["window"], a["strides"], a["padding"])
    elif n.op == "clamp":
      y = K.requant(ins[0], zy, 1.0, zy, a["lo"], a["hi"])
    elif n.op == "concat":
      y = K.concat(ins, a["axis"], zs, a["mults"], zy)
    elif n.op == "reshape":
      y = K.reshape(ins[0], t[n.output].shape)
    else:
      raise NotImplementedError(n.op)
    env[n.output] = y
  return env


def _ste(acc, m, y, lo: int, hi: int):
  """Straight-through requantization: the value is the int8 output y, the derivative
  with respect to acc is M where lo < y < hi and 0 on the clamp."""
  t = acc * m
  return y + jnp.where((y > lo) & (y < hi), t - lax.stop_gradient(t), 0.0)


def _window_taps(a, window, strides, out_hw):
  (sh, sw), (ho, wo) = strides, out_hw
  return [a[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
          for i in range(window[0]) for j in range(window[1])]


def _ref_maxpool(x, x_int: np.ndarray, y, a: dict):
  """Max pool as a selection: the first window position (row-major) holding the max."""
  pad = ((0, 0), *a["padding"], (0, 0))
  out_hw = y.shape[1:3]
  taps_int = _window_taps(np.pad(x_int.astype(F32), pad, constant_values=-np.inf), a["window"],
                          a["strides"], out_hw)
  first = np.argmax(np.stack(taps_int), axis=0)  # argmax returns the first maximum
  taps = _window_taps(jnp.pad(x, pad), a["window"], a["strides"], out_hw)
  chosen = sum(jnp.where(first == k, tap, 0.0) for k, tap in enumerate(taps))
  return y + (chosen - lax.stop_gradient(chosen))


def _ref_params(qm: QModel, name: str, plan: LayerPlan | None, weights, handles):
  w = jnp.asarray(qm.params[name]["weight"], jnp.float32)
  if plan is not None and plan.channels is not None:
    if plan.all_channels:
      w = weights[name]
    else:
      idx: list = [slice(None)] * w.ndim
      idx[plan.axis] = np.asarray(plan.channels)
      w = w.at[tuple(idx)].set(weights[name])
  b = jnp.asarray(qm.params[name]["bias"], jnp.float32)  # its value never matters (STE)
  if plan is not None and plan.bias:
    b = b + handles[name]
  return w, b


def _float_reference(qm: QModel, plans, env, weights, handles, x):
  """The network in float with straight-through requantizations; differentiable in the
  trained weights, the bias handles and x. Forward values equal `env` exactly."""
  t = qm.tensors
  vals = {qm.input_id: x}
  for n in qm.nodes:
    a, ins = n.attrs, [vals[i] for i in n.inputs]
    zs = [t[i].qparams.zero for i in n.inputs]
    zy = t[n.output].qparams.zero
    y = jnp.asarray(env[n.output], jnp.float32)
    if n.op in ("conv2d", "dense"):
      w, b = _ref_params(qm, n.name, plans.get(n.name), weights, handles)
      xs = ins[0] - zs[0]  # zero padding after the shift: padding contributes 0
      if n.op == "conv2d":
        acc = lax.conv_general_dilated(xs, w, a["strides"], a["padding"],
                                       dimension_numbers=("NHWC", "OHWI", "NHWC"),
                                       feature_group_count=a["groups"], precision=HIGHEST)
      else:
        acc = jnp.dot(xs, w.T, precision=HIGHEST)
      out = _ste(acc + b, n.arrays["multiplier"], y, a["lo"], a["hi"])
    elif n.op == "add":
      acc = (ins[0] - zs[0]) * a["a_mult"] + (ins[1] - zs[1]) * a["b_mult"]
      out = _ste(acc, F32(a["m"]), y, a["lo"], a["hi"])
    elif n.op == "avgpool":
      acc = lax.reduce_window(ins[0] - zs[0], 0.0, lax.add, (1, *a["window"], 1),
                              (1, *a["strides"], 1), ((0, 0), *a["padding"], (0, 0)))
      m = n.arrays["multiplier"]
      out = _ste(acc, m if m.ndim == 0 else m[None, :, :, None], y, a["lo"], a["hi"])
    elif n.op == "maxpool":
      out = _ref_maxpool(ins[0], env[n.inputs[0]], y, a)
    elif n.op == "clamp":
      out = _ste(ins[0] - zy, F32(1), y, a["lo"], a["hi"])
    elif n.op == "concat":
      parts, start = [], 0
      for xi, z, m in zip(ins, zs, a["mults"]):
        size = xi.shape[a["axis"]]
        yi = lax.slice_in_dim(y, start, start + size, axis=a["axis"])
        same = z == zy and m == 1.0  # copied unchanged (docs/numerics.md)
        parts.append(xi if same else _ste(xi - z, F32(m), yi, -128, 127))
        start += size
      out = jnp.concatenate(parts, axis=a["axis"])
    elif n.op == "reshape":
      out = ins[0].reshape((ins[0].shape[0], *t[n.output].shape))
    else:
      raise NotImplementedError(n.op)
    vals[n.output] = out
  return vals[qm.output_id]


def _trained(qm: QModel, plans: dict[str, LayerPlan]):
  weights, handles, biases = {}, {}, {}
  for name, plan in plans.items():
    p = qm.params[name]
    if plan.channels is not None:
      w = p["weight"] if plan.all_channels else np.take(p["weight"], plan.channels, plan.axis)
      weights[name] = jnp.asarray(w, jnp.float32)
    if plan.bias:
      handles[name] = jnp.zeros(p["bias"].shape, jnp.float32)
      biases[name] = jnp.asarray(p["bias"])
  return weights, handles, biases


def _check_vjp(qm: QModel, plans: dict[str, LayerPlan], x8: np.ndarray) -> None:
  """grad of sum(G * logits) through train_forward == through the float STE reference, with
  respect to the trained weights, the bias handles and the input carrier."""
  x8 = x8.reshape((len(x8), *qm.tensors[qm.input_id].shape))
  env = _exact_env(qm, x8)
  weights, handles, biases = _trained(qm, plans)
  cot = _grad(_rng("cotangent", qm.name), env[qm.output_id].shape)

  def loss_jt(w, h, x):
    y = train_forward(qm, plans, w, h, biases, x)
    return jnp.sum(y * cot), y

  def loss_ref(w, h, x):
    y = _float_reference(qm, plans, env, w, h, x)
    return jnp.sum(y * cot), y

  args = (weights, handles, jnp.asarray(x8, jnp.float32))
  got, y_jt = _compiled(jax.grad(loss_jt, argnums=(0, 1, 2), has_aux=True), args)
  ref, y_ref = _compiled(jax.grad(loss_ref, argnums=(0, 1, 2), has_aux=True), args)
  y8 = env[qm.output_id].astype(F32)
  np.testing.assert_array_equal(np.asarray(y_jt), y8)  # the int8 forward, bit for bit
  np.testing.assert_array_equal(np.asarray(y_ref), y8)
  for kind, g_got, g_ref in zip(("weight", "bias handle"), got[:2], ref[:2]):
    assert g_got.keys() == g_ref.keys()
    for name in g_ref:
      assert np.any(np.asarray(g_ref[name]) != 0), f"{kind} {name}: vacuous gradient"
      _close(g_got[name], g_ref[name], f"{kind} gradient of {name}")
  _close(got[2], ref[2], "input gradient")
  # A clamp (ReLU / saturation) must have cut some gradient, or the masks went untested.
  assert any(np.any((env[n.output] == n.attrs["lo"]) | (env[n.output] == n.attrs["hi"]))
             for n in qm.nodes if "lo" in n.attrs)


# (model, scheme): what trains. The classifier always trains; SparseUpdate picks the rest.
VJP_CASES = {
  "conv_full": ("conv_stack", SparseUpdate.last_layers(2)),
  # Channel subsets of a conv (input channels) and of a depthwise conv (its channels).
  "conv_dw_subsets": ("conv_stack", SparseUpdate(bias_last=2, weights={0: 0.5, 1: 0.5})),
  "conv_weight_only": ("conv_stack", SparseUpdate(weights={0: 0.34})),  # through frozen dw
  "dense_full": ("mlp", SparseUpdate.last_layers(1)),
  "dense_subset": ("mlp", SparseUpdate(bias_last=1, weights={0: 0.25})),
  "residual_add": ("residual", SparseUpdate(bias_last=2, weights={0: 0.5, 1: 1.0})),
  "avgpool": ("avgpool", SparseUpdate(bias_last=1, weights={0: 1.0})),
  "maxpool": ("maxpool", SparseUpdate(bias_last=1, weights={0: 0.5})),
  "concat": ("concat", SparseUpdate.last_layers(2)),
  "signal1d": ("signal1d", SparseUpdate(bias_last=2, weights={0: 0.5, 1: 0.5})),
}


@pytest.mark.parametrize("case", list(VJP_CASES))
def test_vjp_matches_float_ste_reference(case):
  model, update = VJP_CASES[case]
  qm, x8 = _qmodel(model)
  plans = layer_plans(qm, update)
  sel = {name: p for name, p in plans.items() if p.channels and not p.all_channels}
  if "subset" in case:
    assert sel, "the scheme should train a channel subset"
  if case == "conv_dw_subsets":
    assert sorted(p.axis for p in sel.values()) == [0, 3]  # depthwise: axis 0, conv: axis 3
  _check_vjp(qm, plans, x8)


def test_vjp_hand_built_plans():
  # Plans the sparse scheme does not produce: a bias without its weight, and a weight
  # subset without its bias, on the same layer pair.
  qm, x8 = _qmodel("conv_stack")
  conv0, dw = qm.layers[0].name, qm.layers[1].name
  base = layer_plans(qm, SparseUpdate())
  _check_vjp(qm, {**base, conv0: LayerPlan(None, True, 3, False),
                  dw: LayerPlan((0, 2, 5), False, 0, False)}, x8)


def test_concat_model_has_an_identity_and_a_requantized_input():
  qm, _ = _qmodel("concat")
  (n,) = [n for n in qm.nodes if n.op == "concat"]
  zy = qm.tensors[n.output].qparams.zero
  same = [qm.tensors[i].qparams.zero == zy and m == 1.0 for i, m in zip(n.inputs,
                                                                        n.attrs["mults"])]
  assert same == [True, False]


def test_maxpool_model_has_ties_and_a_clamp():
  qm, x8 = _qmodel("maxpool")
  assert [n.op for n in qm.nodes][:2] == ["maxpool", "clamp"]
  (n,) = [n for n in qm.nodes if n.op == "maxpool" and n.inputs[0] == qm.input_id]
  x = x8.astype(np.int8)
  a = n.attrs
  y = K.maxpool(x, a["window"], a["strides"], a["padding"])
  xp = np.pad(x.astype(F32), ((0, 0), *a["padding"], (0, 0)), constant_values=-np.inf)
  taps = np.stack(_window_taps(xp, a["window"], a["strides"], y.shape[1:3]))
  assert np.mean((taps == y).sum(axis=0) > 1) > 0.3  # many windows hold a tie


# === 3. frozen layers get no weight gradient in the training jaxpr =====================

def _count(jaxpr, name: str) -> int:
  """Equations binding primitive `name`, in the jaxpr and every sub-jaxpr."""
  total = 0
  for eqn in jaxpr.eqns:
    total += eqn.primitive.name == name
    total += sum(_count(sub, name) for sub in jaxprs_in_params(eqn.params))
  return total


@pytest.mark.parametrize("update,counts", [
  # Layer 0 (conv) frozen, layer 1 (depthwise) and the classifier train: layer 1 needs no
  # input gradient either.
  (SparseUpdate(weights={1: 1.0}),
   {"jt_conv2d_bw_weight": 1, "jt_conv2d_bw_input": 0, "jt_dense_bw_weight": 1,
    "jt_bias_bw": 1}),
  # Layer 0's bias trains, its weight stays frozen: layer 1 now passes an input gradient.
  (SparseUpdate(bias_last=2, weights={1: 1.0}),
   {"jt_conv2d_bw_weight": 1, "jt_conv2d_bw_input": 1, "jt_dense_bw_weight": 1,
    "jt_bias_bw": 3}),
])
def test_frozen_layer_has_no_weight_gradient(update, counts):
  qm, x8 = _qmodel("conv_stack")  # conv -> depthwise conv -> dense classifier
  plans = layer_plans(qm, update)
  assert qm.layers[0].name not in plans or plans[qm.layers[0].name].channels is None
  weights, handles, biases = _trained(qm, plans)
  x = jnp.asarray(x8, jnp.float32)

  def loss(w, h):
    return jnp.sum(train_forward(qm, plans, w, h, biases, x))

  closed = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(weights, handles)
  jaxpr, _ = dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
  assert {name: _count(jaxpr, name) for name in counts} == counts
  (w_grad,) = [e for e in jaxpr.eqns if e.primitive.name == "jt_conv2d_bw_weight"]
  assert w_grad.outvars[0].aval.shape == qm.params[qm.layers[1].name]["weight"].shape
