"""The C runtime's float32 backward kernels against lowering.kernels, bit for bit.

Each kernel of runtime_c/src/jt_{conv,eltwise,pool,bottleneck}_bw_f32.c is called through
ctypes on seeded random inputs (shapes, strides, paddings, groups, merged weights, masks,
multiplier broadcasts, in-place buffers) and its float32 output compared with the numpy
reference as uint32 bits, so a different summation order or a wrong zero sign fails.
Gradients hold exact zeros and negative zeros on purpose. The ops' checks run through
jt_init on one-op programs built by hand: each accepted base case, each mutation refused
with its status.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, Structure, c_float, c_int32, c_uint32, c_void_p

import numpy as np
import pytest

from lowering import blob as B
from lowering import kernels as K
from lowering.ir import Graph, Op
from lowering.program import Program

try:
  from lowering.cruntime import CRuntime, library

  LIB = library()
except (ImportError, OSError) as e:  # not built: nothing to test
  pytest.skip(f"the C runtime is not built ({e})", allow_module_level=True)

F32 = np.float32
JT_OK = 0
M_SCALAR, M_CHANNEL, M_POSITION = 0, 1, 2


class Weight(Structure):
  _fields_ = [("w", c_void_p), ("w_sel", c_void_p), ("sel", c_void_p), ("n_sel", c_uint32),
              ("axis", c_uint32), ("rank", c_uint32), ("dims", c_uint32 * 4)]


class ConvParams(Structure):
  _fields_ = [(n, c_uint32) for n in ("n", "h", "w", "c", "ho", "wo", "o", "kh", "kw",
                                      "groups")] + \
             [(n, c_int32) for n in ("stride_h", "stride_w", "pad_top", "pad_left")]


class DenseParams(Structure):
  _fields_ = [("n", c_uint32), ("o", c_uint32), ("k", c_uint32)]


class RequantParams(Structure):
  _fields_ = [(n, c_uint32) for n in ("size", "channels", "positions", "m_mode")]


class AddParams(Structure):
  _fields_ = [("size", c_uint32), ("m", c_float), ("a_mult", c_int32), ("b_mult", c_int32)]


class ConcatParams(Structure):
  _fields_ = [(n, c_uint32) for n in ("outer", "total", "inner", "start", "size")] + \
             [("m", c_float), ("identity", c_uint32)]


class PoolParams(Structure):
  _fields_ = [(n, c_uint32) for n in ("n", "h", "w", "c", "ho", "wo", "kh", "kw")] + \
             [(n, c_int32) for n in ("stride_h", "stride_w", "pad_top", "pad_left")] + \
             [("m_mode", c_uint32)]


GRAD_FN = ctypes.CFUNCTYPE(None, c_void_p, c_uint32, c_float)


class BottleneckParams(Structure):
  _fields_ = [("g", c_void_p), ("w3", c_void_p), ("mask_d", c_void_p), ("m_d", c_void_p),
              ("w2", c_void_p), ("mask_e", c_void_p), ("m_e", c_void_p), ("w1", Weight),
              ("scratch", c_void_p), ("gb_d", c_void_p), ("gb_e", c_void_p), ("gx", c_void_p),
              ("x", c_void_p), ("on_grad", GRAD_FN), ("on_grad_ctx", c_void_p)] + \
             [(n, c_uint32) for n in ("o", "c", "k", "kx", "ho", "wo", "he", "we", "kh",
                                      "kw")] + \
             [(n, c_int32) for n in ("stride_h", "stride_w", "pad_top", "pad_left",
                                     "x_zero")] + \
             [("m_d_per_channel", c_uint32), ("m_e_per_channel", c_uint32), ("pairs", c_uint32)]


def _fn(name: str, *args):
  f = getattr(LIB, name)
  f.argtypes, f.restype = list(args), c_int32
  return f


P = c_void_p
conv_bw = _fn("jt_conv2d_bw_input_f32", P, POINTER(Weight), P, POINTER(ConvParams))
conv_bw_dw = _fn("jt_conv2d_bw_input_f32_dw_in_place", P, POINTER(Weight), P,
                 POINTER(ConvParams))
dense_bw = _fn("jt_dense_bw_input_f32", P, POINTER(Weight), P, POINTER(DenseParams))
requant_bw = _fn("jt_requant_bw_f32", P, P, P, P, POINTER(RequantParams))
add_bw = _fn("jt_add_bw_f32", P, P, P, P, POINTER(AddParams))
concat_bw = _fn("jt_concat_bw_f32", P, P, P, POINTER(ConcatParams))
avgpool_bw = _fn("jt_avgpool_bw_f32", P, P, P, P, POINTER(PoolParams))
maxpool_bw = _fn("jt_maxpool_bw_f32", P, P, P, P, POINTER(PoolParams))
bottleneck_bw = _fn("jt_bottleneck_bw_f32", POINTER(BottleneckParams))
weight_at = LIB.jt_weight_s8_at
weight_at.argtypes, weight_at.restype = [POINTER(Weight), c_uint32], ctypes.c_int8


# --- helpers ---------------------------------------------------------------------------------

def ptr(a: np.ndarray) -> int:
  assert a.flags.c_contiguous
  return a.ctypes.data


def same_bits(got: np.ndarray, want: np.ndarray) -> None:
  want = np.ascontiguousarray(want, F32)
  assert got.shape == want.shape
  bad = got.view(np.uint32) != want.view(np.uint32)
  assert not bad.any(), (f"{int(bad.sum())} of {bad.size} elements differ, first at "
                         f"{np.argwhere(bad)[0]}: {got[bad][0]!r} != {want[bad][0]!r}")


def grad(rng: np.random.Generator, shape) -> np.ndarray:
  """float32 values of mixed magnitudes with exact zeros and negative zeros."""
  g = (rng.standard_normal(shape) * np.exp2(rng.integers(-6, 7, shape))).astype(F32)
  u = rng.random(shape)
  g[u < 0.08] = 0.0
  g[(u >= 0.08) & (u < 0.16)] = -0.0
  return g


def i8(rng: np.random.Generator, shape, lo: int = -127, hi: int = 127) -> np.ndarray:
  w = rng.integers(lo, hi + 1, shape).astype(np.int8)
  w[rng.random(shape) < 0.1] = 0
  return w


def pack(bits: np.ndarray) -> np.ndarray:
  return np.packbits(bits.reshape(-1).astype(np.uint8), bitorder="little")


def stand_in(bits: np.ndarray) -> np.ndarray:
  """The executor's int8 stand-in of a mask: inside (-128, 127) exactly where set."""
  return np.where(bits, -127, -128).astype(np.int8)


def merged(rng: np.random.Generator, shape, use_sel: bool, keep: list):
  """A C weight struct (maybe merged along a random axis) and its full reference weight."""
  w = i8(rng, shape)
  ws = Weight(ptr(w), None, None, 0, 0, len(shape), (c_uint32 * 4)(*shape, *[1] * (4 - len(shape))))
  keep.append(w)
  if not use_sel:
    return ws, w
  axis = int(rng.integers(len(shape)))
  n = int(rng.integers(1, shape[axis] + 1))
  sel = np.sort(rng.choice(shape[axis], n, replace=False)).astype(np.int32)
  part = list(shape)
  part[axis] = n
  w_sel = i8(rng, part)
  keep += [sel, w_sel]
  ws.w_sel, ws.sel, ws.n_sel, ws.axis = ptr(w_sel), ptr(sel), n, axis
  return ws, K.merge_channels(w, w_sel, axis - len(shape), sel.tolist())


def window_case(rng: np.random.Generator, k_max: int = 3):
  """(h, w, (kh, kw), strides, padding, (ho, wo)) of a random window that fits."""
  while True:
    h, w = (int(v) for v in rng.integers(1, 8, 2))
    kh, kw = (int(v) for v in rng.integers(1, k_max + 1, 2))
    s = tuple(int(v) for v in rng.integers(1, 3, 2))
    pad = tuple(tuple(int(v) for v in rng.integers(0, 2, 2)) for _ in range(2))
    if h + sum(pad[0]) >= kh and w + sum(pad[1]) >= kw:
      ho, wo = K.out_size(h, kh, s[0], pad[0]), K.out_size(w, kw, s[1], pad[1])
      return h, w, (kh, kw), s, pad, (ho, wo)


# --- merged weights -----------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_weight_at(seed: int) -> None:
  rng = np.random.default_rng(seed)
  shape = tuple(int(v) for v in rng.integers(1, 5, int(rng.integers(1, 5))))
  keep: list = []
  ws, full = merged(rng, shape, True, keep)
  got = np.array([weight_at(ctypes.byref(ws), i) for i in range(full.size)], np.int8)
  assert np.array_equal(got, full.reshape(-1))


# --- conv2d_bw_input --------------------------------------------------------------------------

def conv_case(rng: np.random.Generator, kind: str):
  h, w, k, s, pad, (ho, wo) = window_case(rng)
  n = int(rng.integers(1, 3))
  if kind == "ordinary":  # up to past a 32-channel chunk and an 8-float block of the C loops
    groups, c, o = 1, int(rng.choice([1, 3, 4, 9, 37])), int(rng.integers(1, 5))
  elif kind == "grouped":
    groups = int(rng.integers(2, 4))
    c, o = groups * int(rng.choice([1, 2, 5, 9])), groups * int(rng.integers(1, 3))
  else:  # depthwise, with a channel multiplier
    c = groups = int(rng.integers(1, 5))
    o = c * int(rng.integers(1, 3))
  params = ConvParams(n, h, w, c, ho, wo, o, k[0], k[1], groups, s[0], s[1], pad[0][0],
                      pad[1][0])
  return params, (n, ho, wo, o), (o, k[0], k[1], c // groups), s, pad, groups, (h, w, c)


@pytest.mark.parametrize("kind", ["ordinary", "grouped", "depthwise"])
@pytest.mark.parametrize("seed", range(12))
def test_conv2d_bw_input(kind: str, seed: int) -> None:
  rng = np.random.default_rng([seed, len(kind)])
  params, g_shape, w_shape, s, pad, groups, in_shape = conv_case(rng, kind)
  keep: list = []
  ws, w_full = merged(rng, w_shape, seed % 2 == 1, keep)
  g = grad(rng, g_shape)
  gx = np.full((g_shape[0], *in_shape), np.nan, F32)  # every element must be written
  assert conv_bw(ptr(g), ctypes.byref(ws), ptr(gx), ctypes.byref(params)) == JT_OK
  same_bits(gx, K.conv2d_bw_input(g, w_full, s, pad, groups, in_shape))


@pytest.mark.parametrize("seed", range(12))
def test_conv2d_bw_input_depthwise_in_place(seed: int) -> None:
  rng = np.random.default_rng([seed, 99])
  while True:  # a depthwise conv whose output has the input's (h, w): gx shaped like g
    h, w, k, s, pad, (ho, wo) = window_case(rng)
    if (ho, wo) == (h, w):
      break
  n, c = int(rng.integers(1, 3)), int(rng.integers(1, 5))
  params = ConvParams(n, h, w, c, h, w, c, k[0], k[1], c, s[0], s[1], pad[0][0], pad[1][0])
  keep: list = []
  ws, w_full = merged(rng, (c, k[0], k[1], 1), seed % 2 == 1, keep)
  g = grad(rng, (n, h, w, c))
  want = K.conv2d_bw_input(g, w_full, s, pad, c, (h, w, c))
  buf = g.copy()  # g in, gx out
  scratch = np.full(h * w, np.nan, F32)
  assert LIB.jt_conv2d_bw_input_f32_dw_in_place_get_buffer_size(ctypes.byref(params)) \
      == scratch.nbytes
  assert conv_bw_dw(ptr(buf), ctypes.byref(ws), ptr(scratch), ctypes.byref(params)) == JT_OK
  same_bits(buf, want)


# --- dense_bw_input ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_dense_bw_input(seed: int) -> None:
  rng = np.random.default_rng([seed, 7])
  n, k = int(rng.integers(1, 4)), int(rng.integers(1, 12))
  o = 0 if seed == 0 else int(rng.integers(1, 20))
  keep: list = []
  ws, w_full = merged(rng, (max(o, 1), k), seed % 2 == 1 and seed != 3, keep)
  w_full = w_full[:o]
  g = grad(rng, (n, o))
  if seed == 3:  # a column of products that are all -0.0: the sum starts at the first term
    g[:] = -np.abs(g) - F32(1)
    w_full[:, 0] = 0  # w_full is the weight the C side reads (no selection)
  gx = np.full((n, k), np.nan, F32)
  assert dense_bw(ptr(g), ctypes.byref(ws), ptr(gx), ctypes.byref(DenseParams(n, o, k))) == JT_OK
  want = K.dense_bw_input(g, w_full)
  same_bits(gx, want)
  if seed == 3:
    assert np.signbit(want[:, 0]).all()


# --- requant_bw, add_bw, concat_bw ------------------------------------------------------------

@pytest.mark.parametrize("mode", [M_SCALAR, M_CHANNEL, M_POSITION])
@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_requant_bw(mode: int, in_place: bool, seed: int) -> None:
  rng = np.random.default_rng([seed, mode, in_place])
  shape = tuple(int(v) for v in rng.integers(1, 6, 4))
  g = grad(rng, shape)
  bits = rng.random(shape) < 0.6
  m = {M_SCALAR: lambda: np.asarray(rng.random() + 0.01, F32),
       M_CHANNEL: lambda: (rng.random(shape[-1]) * 2 - 1).astype(F32),
       M_POSITION: lambda: rng.random(shape[1:3]).astype(F32)}[mode]()
  want = K.requant_bw(g, stand_in(bits), m, -128, 127)
  out = g.copy() if in_place else np.full(shape, np.nan, F32)
  src = out if in_place else g
  params = RequantParams(g.size, shape[-1], shape[1] * shape[2], mode)
  packed, mc = pack(bits), np.ascontiguousarray(m)  # alive during the call
  assert requant_bw(ptr(src), ptr(packed), ptr(mc), ptr(out), ctypes.byref(params)) == JT_OK
  same_bits(out, want)


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_add_bw(in_place: bool, seed: int) -> None:
  rng = np.random.default_rng([seed, 5, in_place])
  shape = tuple(int(v) for v in rng.integers(1, 6, 4))
  g = grad(rng, shape)
  bits = rng.random(shape) < 0.6
  m = F32(rng.random() * 0.5)
  a_mult, b_mult = int(rng.integers(-2**15, 2**15)), int(rng.integers(-2**15, 2**15))
  if seed == 0:
    a_mult, b_mult = -3, 2**24 + 1  # a negative multiplier turns +0.0 into -0.0; rounding
  ga_want, gb_want = K.add_bw(g, stand_in(bits), a_mult, b_mult, m, -128, 127)
  ga = g.copy() if in_place else np.full(shape, np.nan, F32)
  gb = np.full(shape, np.nan, F32)
  packed = pack(bits)
  assert add_bw(ptr(ga if in_place else g), ptr(packed), ptr(ga), ptr(gb),
                ctypes.byref(AddParams(g.size, m, a_mult, b_mult))) == JT_OK
  same_bits(ga, ga_want)
  same_bits(gb, gb_want)


@pytest.mark.parametrize("seed", range(10))
def test_concat_bw(seed: int) -> None:
  rng = np.random.default_rng([seed, 11])
  rank = int(rng.integers(2, 5))
  axis = int(rng.integers(1, rank))
  sizes = [int(v) for v in rng.integers(0 if seed % 3 == 0 else 1, 4, int(rng.integers(1, 4)))]
  shape = [int(v) for v in rng.integers(1, 4, rank)]
  shape[axis] = sum(sizes)
  g = grad(rng, tuple(shape))
  bits = rng.random(g.shape) < 0.6
  mults = [float(F32(rng.random() * 2 - 1)) for _ in sizes]
  identity = [bool(rng.random() < 0.4) for _ in sizes]
  want = K.concat_bw(g, stand_in(bits), axis, sizes, mults, identity)
  outer, inner = int(np.prod(shape[:axis])), int(np.prod(shape[axis + 1:]))
  packed, start = pack(bits), 0
  for size, m, same, w in zip(sizes, mults, identity, want, strict=True):
    out = np.full(w.shape, np.nan, F32)
    params = ConcatParams(outer, shape[axis], inner, start, size, m, same)
    assert concat_bw(ptr(g), ptr(packed), ptr(out), ctypes.byref(params)) == JT_OK
    same_bits(out, w)
    start += size


# --- pooling ----------------------------------------------------------------------------------

def pool_case(rng: np.random.Generator, k_max: int = 3):
  h, w, k, s, pad, (ho, wo) = window_case(rng, k_max)
  n, c = int(rng.integers(1, 3)), int(rng.integers(1, 4))
  params = PoolParams(n, h, w, c, ho, wo, k[0], k[1], s[0], s[1], pad[0][0], pad[1][0], 0)
  return params, (n, h, w, c), (n, ho, wo, c), k, s, pad


@pytest.mark.parametrize("mode", [M_SCALAR, M_CHANNEL, M_POSITION])
@pytest.mark.parametrize("seed", range(8))
def test_avgpool_bw(mode: int, seed: int) -> None:
  rng = np.random.default_rng([seed, mode, 13])
  params, in_shape, out_shape, k, s, pad = pool_case(rng)
  params.m_mode = mode
  g = grad(rng, out_shape)
  bits = rng.random(out_shape) < 0.7
  m = {M_SCALAR: lambda: np.asarray(rng.random(), F32),
       M_CHANNEL: lambda: rng.random(out_shape[-1]).astype(F32),
       M_POSITION: lambda: rng.random(out_shape[1:3]).astype(F32)}[mode]()
  want = K.avgpool_bw(g, stand_in(bits), m, k, s, pad, -128, 127, in_shape[1:])
  gx = np.full(in_shape, np.nan, F32)
  packed, mc = pack(bits), np.ascontiguousarray(m)
  assert avgpool_bw(ptr(g), ptr(packed), ptr(mc), ptr(gx), ctypes.byref(params)) == JT_OK
  same_bits(gx, want)


@pytest.mark.parametrize("seed", range(16))
def test_maxpool_bw(seed: int) -> None:
  rng = np.random.default_rng([seed, 17])
  params, in_shape, out_shape, k, s, pad = pool_case(rng, 4)
  # few distinct values: many ties, so "the first max in tap order" decides; -128 ties
  # with the padding's stand-in in the forward pass
  x = rng.integers(-128, -124 if seed % 2 else 127, in_shape).astype(np.int8)
  y = K.maxpool(x, k, s, pad)
  if seed % 4 == 3:  # a y that no tap equals drops its gradient
    y = y.copy()
    y.reshape(-1)[0] = 127 if y.reshape(-1)[0] != 127 else 126
  g = grad(rng, out_shape)
  want = K.maxpool_bw(g, x, y, k, s, pad)
  gx = np.full(in_shape, np.nan, F32)
  assert maxpool_bw(ptr(g), ptr(x), ptr(y), ptr(gx), ctypes.byref(params)) == JT_OK
  same_bits(gx, want)


# --- bottleneck_bw ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_bottleneck_bw(seed: int) -> None:
  rng = np.random.default_rng([seed, 23])
  he, we, kd, ds, dpad, (ho, wo) = window_case(rng)
  # o, k and x's channels up to past the C kernel's 32-float chunks and 8-float blocks
  o, c, k = int(rng.choice([1, 5, 9, 40])), int(rng.integers(1, 6)), int(rng.choice([1, 5, 11, 35]))
  with_gx, use_sel, train = seed % 2 == 0, seed % 3 == 1, seed % 4 != 3
  keep: list = []
  g = grad(rng, (1, ho, wo, o))
  w3, w2 = i8(rng, (o, 1, 1, c)), i8(rng, (c, kd[0], kd[1], 1))
  bits_d = rng.random((1, ho, wo, c)) < 0.7
  bits_e = rng.random((1, he, we, c)) < 0.7
  m_d = (rng.random(c if seed % 2 else 1) + 0.01).astype(F32)
  m_e = (rng.random(1 if seed % 2 else c) + 0.01).astype(F32)
  w1s = Weight(0, None, None, 0, 0, 4, (c_uint32 * 4)(c, 1, 1, k))
  w1 = i8(rng, (c, 1, 1, k))
  w1s.w, w1_full, kx = ptr(w1), w1, k
  if use_sel:  # input channels of the expand weight trained: w1_sel is the parameter
    n = int(rng.integers(1, k + 1))
    sel = np.sort(rng.choice(k, n, replace=False)).astype(np.int32)
    w1_sel = i8(rng, (c, 1, 1, n))
    keep += [sel, w1_sel]
    w1s.w_sel, w1s.sel, w1s.n_sel, w1s.axis = ptr(w1_sel), ptr(sel), n, 3
    w1_full, kx = K.merge_channels(w1, w1_sel, 3, sel.tolist()), n
  x_zero = int(rng.integers(-128, 128))
  x = i8(rng, (1, he, we, kx), -128, 127)
  zero_row = seed % 4 == 0  # channel 0 masked out, x below its zero point: a weight
  if zero_row:  # gradient of +0.0 * negatives, -0.0 only when the sum starts at a term
    bits_e[..., 0] = False
    x[..., 0], x_zero = -128, max(x_zero, -100)

  want_grads: dict[int, np.ndarray] = {}

  def on_channel(ch: int, ge: np.ndarray) -> None:
    want_grads[ch] = K.conv2d_bw_weight(ge, x, (1, 1), K.NO_PADDING, 1, x_zero, (1, 1))

  gx_want = np.full((1, he, we, k), np.nan, F32) if with_gx else None
  depthwise = {"w": w2, "strides": ds, "padding": dpad, "y": stand_in(bits_d), "m": m_d,
               "lo": -128, "hi": 127}
  expand = {"w": w1_full, "y": stand_in(bits_e), "m": m_e, "lo": -128, "hi": 127}
  gb_d_want, gb_e_want = K.bottleneck_bw(g, {"w": w3}, depthwise, expand, gx_want,
                                         on_channel if train else None)

  got_grads = np.full((c, kx), np.nan, F32)
  calls: list[int] = []

  def record(_ctx, index: int, value: float) -> None:
    calls.append(index)
    got_grads.reshape(-1)[index] = value  # a c_float arrives as a Python float: exact

  callback = GRAD_FN(record) if train else GRAD_FN()
  pairs = seed % 3 != 2  # channels two at a time (twice the scratch), or one
  scratch = np.full((ho * wo + he * we) * (2 if pairs else 1), np.nan, F32)
  gb_d, gb_e = np.full(c, np.nan, F32), np.full(c, np.nan, F32)
  gx = np.full((1, he, we, k), np.nan, F32)
  packed_d, packed_e = pack(bits_d), pack(bits_e)
  p = BottleneckParams(
    ptr(g), ptr(w3), ptr(packed_d), ptr(m_d), ptr(w2), ptr(packed_e), ptr(m_e), w1s,
    ptr(scratch), ptr(gb_d), ptr(gb_e), ptr(gx) if with_gx else None,
    ptr(x) if train else None, callback, None, o, c, k, kx, ho, wo, he, we, kd[0], kd[1],
    ds[0], ds[1], dpad[0][0], dpad[1][0], x_zero, int(m_d.size > 1), int(m_e.size > 1),
    int(pairs))
  assert LIB.jt_bottleneck_bw_f32_get_buffer_size(ctypes.byref(p)) == scratch.nbytes
  assert bottleneck_bw(ctypes.byref(p)) == JT_OK
  same_bits(gb_d, gb_d_want)
  same_bits(gb_e, gb_e_want)
  if with_gx:
    same_bits(gx, gx_want)
  if train:
    # each element once, a row's chunk before any later row's (chunks of pairs interleave)
    assert sorted(calls) == list(range(c * kx))
    assert all(calls.index(r * kx) < calls.index((r + 1) * kx) for r in range(c - 1))
    want = np.concatenate([want_grads[ch].reshape(1, -1) for ch in range(c)])
    same_bits(got_grads, want)
    if zero_row:
      assert np.signbit(want[0, 0]) and want[0, 0] == 0


# --- the checks: one-op programs through jt_init ------------------------------------------
# Each case is a tiny hand-built program (cast the input to a float32 gradient, take the
# loss from it, then the op under test); the base must be accepted, every mutation refused
# by the op's check with the stated status (jaxtiny.h).

OK, E_OPERANDS, E_DTYPE, E_SHAPE, E_ATTR = 0, 12, 13, 14, 15
SGD = {"kind": "sgd", "momentum": 0.0, "lr": 0.1, "final": 0.1, "steps": 1,
       "schedule": "constant", "b1": 0.9, "b2": 0.999, "eps": 1e-8}
NAN = float("nan")


def _status(g_shape, make, **change) -> int:
  """jt_init's status on the program of one op made by make(graph, g, **change)."""
  gr = Graph()
  x = gr.add("x", g_shape, "i8", "io")
  label, loss = gr.add("label", (1,), "i32", "io"), gr.add("loss", (), "f32", "io")
  logits = gr.add("logits", (1, int(np.prod(g_shape))), "i8", "io")
  g = gr.add("g", g_shape, "f32")
  train = [Op("cast", [x], [g], {}),
           Op("reduce", [g], [loss], {"fn": "sum", "axes": tuple(range(len(g_shape)))}),
           make(gr, g, **change)]
  prog = Program(gr, train, [Op("copy", [x], [logits], {})],
                 {"input": x, "label": label, "loss": loss, "logits": logits}, SGD, "nearest", 0)
  try:
    CRuntime(B.encode(prog))
  except B.BlobError as e:
    assert "train op 2" in str(e), e  # refused by the op under test
    return int(str(e).rsplit("(status ", 1)[1].rstrip(")"))
  return OK


def _mask(gr: Graph, shape) -> int:
  n = int(np.prod(shape))
  return gr.add("mask", shape, "bit", "const", np.packbits(np.ones(n, np.uint8), bitorder="little"))


def _f32(gr: Graph, value) -> int:
  return gr.const(f"c{len(gr.tensors)}", np.asarray(value, F32), "f32")


def _i8c(gr: Graph, shape, value: int = 1) -> int:
  return gr.const(f"w{len(gr.tensors)}", np.full(shape, value, np.int8), "i8")


def requant_op(gr, g, m=0.5, mask_shape=None, out_shape=None):
  shape = gr.tensors[g].shape
  out = gr.add("out", out_shape or shape, "f32")
  return Op("requant_bw_f32", [g, _mask(gr, mask_shape or shape), _f32(gr, m)], [out], {})


def conv_op(gr, g, gx_shape=(1, 3, 3, 2), w_shape=(4, 2, 2, 2), sel=None, w_sel_shape=None,
            scratch=None, alias=False, **attrs):
  a = {"strides": (1, 1), "padding": ((0, 0), (0, 0)), "groups": 1, "in_shape": gx_shape[1:]}
  a.update(attrs)
  ins = [g, _i8c(gr, w_shape)]
  if sel is not None:
    ins += [_i8c(gr, w_sel_shape), gr.const("sel", np.asarray(sel, np.int32), "i32")]
    a["sel_axis"] = a.get("sel_axis", 3)
  outs = [gr.add("gx", gx_shape, "f32", alias=g if alias else None)]
  if scratch is not None:
    outs.append(gr.add("scratch", scratch, "f32"))
  return Op("conv2d_bw_input_f32", ins, outs, a)


def dense_op(gr, g, w_shape=(3, 4), gx_shape=(1, 4), sel=None, w_sel_shape=None, axis=1):
  ins, a = [g, _i8c(gr, w_shape)], {}
  if sel is not None:
    ins += [_i8c(gr, w_sel_shape), gr.const("sel", np.asarray(sel, np.int32), "i32")]
    a["sel_axis"] = axis
  return Op("dense_bw_input_f32", ins, [gr.add("gx", gx_shape, "f32")], a)


def add_op(gr, g, m=0.5, gb_alias=False):
  shape = gr.tensors[g].shape
  ga, gb = gr.add("ga", shape, "f32"), gr.add("gb", shape, "f32", alias=g if gb_alias else None)
  return Op("add_bw_f32", [g, _mask(gr, shape)], [ga, gb], {"a_mult": 3, "b_mult": -2, "m": m})


def avgpool_op(gr, g, m=0.25, window=(2, 2), strides=(2, 2), padding=((0, 0), (0, 0)),
               in_shape=(4, 4, 3)):
  shape = gr.tensors[g].shape
  return Op("avgpool_bw_f32", [g, _mask(gr, shape), _f32(gr, m)],
            [gr.add("gx", (1, 4, 4, 3), "f32")],
            {"window": window, "strides": strides, "padding": padding, "in_shape": in_shape})


def maxpool_op(gr, g, y_shape=(1, 2, 2, 3), x_dtype="i8", window=(2, 2)):
  x = gr.const("xin", np.zeros((1, 4, 4, 3), np.int8 if x_dtype == "i8" else F32), x_dtype)
  return Op("maxpool_bw_f32", [g, x, _i8c(gr, y_shape)], [gr.add("gx", (1, 4, 4, 3), "f32")],
            {"window": window, "strides": (2, 2), "padding": ((0, 0), (0, 0))})


def concat_op(gr, g, axis=3, sizes=(2, 3), mults=(0.5, 1.0), identity=(False, True),
              out_sizes=(2, 3)):
  shape = gr.tensors[g].shape
  outs = [gr.add(f"p{k}", (*shape[:3], s), "f32") for k, s in enumerate(out_sizes)]
  return Op("concat_bw_f32", [g, _mask(gr, shape)], outs,
            {"axis": axis, "sizes": sizes, "mults": mults, "identity": identity})


def bottleneck_op(gr, g, d_strides=(1, 1), scratch=(8,), gb_d=(2,), gx=True, gx_out=True,
                  pid=False, x_zero=0, slots=0, m_d=(0.5, 0.25)):
  ins = [g, _i8c(gr, (3, 1, 1, 2)), _mask(gr, (1, 2, 2, 2)), _f32(gr, m_d),
         _i8c(gr, (2, 3, 3, 1)), _mask(gr, (1, 2, 2, 2)), _f32(gr, 0.5)]
  w1 = gr.add("w1", (2, 1, 1, 4), "i8", "state", np.ones((2, 1, 1, 4), np.int8)) if pid \
      else _i8c(gr, (2, 1, 1, 4))
  ins.append(w1)
  outs = [gr.add("scratch", scratch, "f32"), gr.add("gb_d", gb_d, "f32"),
          gr.add("gb_e", (2,), "f32")]
  if gx_out:
    outs.append(gr.add("gx", (1, 2, 2, 4), "f32"))
  a = {"d_strides": d_strides, "d_padding": ((1, 1), (1, 1)), "gx": gx}
  if pid:
    state = [gr.add(f"s{k}", (2, 1, 1, 4), "f32", "state", np.zeros((2, 1, 1, 4), F32))
             for k in range(slots)]
    step = gr.add("step", (), "i32", "state", np.zeros((), np.int32))
    ins += [_i8c(gr, (1, 2, 2, 4)), _f32(gr, (1.0, 1.0)), *state, step]
    outs += [w1, *state]
    a |= {"pid": 0, "x_zero": x_zero}
  return Op("bottleneck_bw_f32", ins, outs, a)


G4 = (1, 2, 2, 3)
CHECKS = [
  # requant_bw: multiplier scalar / per channel / per position, finite; shapes
  (G4, requant_op, {}, OK), (G4, requant_op, {"m": [1.0, 2.0, 3.0]}, OK),
  (G4, requant_op, {"m": [[1.0, 2.0], [3.0, 4.0]]}, OK),
  (G4, requant_op, {"m": [1.0, 2.0]}, E_SHAPE), (G4, requant_op, {"m": NAN}, E_ATTR),
  (G4, requant_op, {"mask_shape": (1, 2, 2, 2)}, E_SHAPE),
  (G4, requant_op, {"out_shape": (1, 2, 3, 2)}, E_SHAPE),
  # conv2d_bw_input: geometry, groups, in_shape, merged weight, the in-place variant
  ((1, 2, 2, 4), conv_op, {}, OK),
  ((1, 2, 2, 4), conv_op, {"strides": (0, 1)}, E_ATTR),
  ((1, 2, 2, 4), conv_op, {"padding": ((0, -1), (0, 0))}, E_ATTR),
  ((1, 2, 2, 4), conv_op, {"strides": (2, 1)}, E_SHAPE),
  ((1, 2, 2, 4), conv_op, {"in_shape": (3, 3, 3)}, E_ATTR),
  ((1, 2, 2, 4), conv_op, {"groups": 3}, E_SHAPE),
  ((1, 2, 2, 4), conv_op, {"groups": 0}, E_ATTR),
  ((1, 2, 2, 4), conv_op, {"w_shape": (4, 3, 3, 2)}, E_SHAPE),
  ((1, 2, 2, 4), conv_op, {"sel": [1], "w_sel_shape": (4, 2, 2, 1)}, OK),
  ((1, 2, 2, 4), conv_op, {"sel": [1, 2], "w_sel_shape": (2, 2, 2, 2), "sel_axis": 0}, OK),
  ((1, 2, 2, 4), conv_op, {"sel": [2], "w_sel_shape": (4, 2, 2, 1)}, E_ATTR),
  ((1, 2, 2, 4), conv_op, {"sel": [1, 0], "w_sel_shape": (4, 2, 2, 2)}, E_ATTR),
  ((1, 2, 2, 4), conv_op, {"sel": [1], "w_sel_shape": (4, 2, 2, 2)}, E_SHAPE),
  ((1, 2, 2, 4), conv_op, {"sel": [1], "w_sel_shape": (4, 2, 2, 1), "sel_axis": 4}, E_ATTR),
  ((1, 3, 3, 2), conv_op, {"gx_shape": (1, 3, 3, 2), "w_shape": (2, 3, 3, 1), "groups": 2,
                           "padding": ((1, 1), (1, 1)), "alias": True, "scratch": (3, 3)}, OK),
  ((1, 3, 3, 2), conv_op, {"gx_shape": (1, 3, 3, 2), "w_shape": (2, 3, 3, 1), "groups": 2,
                           "padding": ((1, 1), (1, 1)), "alias": True, "scratch": (3, 2)},
   E_SHAPE),
  ((1, 3, 3, 2), conv_op, {"gx_shape": (1, 3, 3, 2), "w_shape": (2, 3, 3, 2),
                           "padding": ((1, 1), (1, 1)), "alias": True, "scratch": (3, 3)},
   E_SHAPE),  # not depthwise: cannot run channel by channel
  ((1, 3, 3, 2), conv_op, {"gx_shape": (1, 3, 3, 2), "w_shape": (2, 3, 3, 1), "groups": 2,
                           "padding": ((1, 1), (1, 1)), "alias": True}, E_SHAPE),
  # dense_bw_input
  ((1, 3), dense_op, {}, OK), ((1, 3), dense_op, {"w_shape": (2, 4)}, E_SHAPE),
  ((1, 3), dense_op, {"gx_shape": (1, 5)}, E_SHAPE),
  ((1, 3), dense_op, {"sel": [0, 3], "w_sel_shape": (3, 2)}, OK),
  ((1, 3), dense_op, {"sel": [0, 3], "w_sel_shape": (3, 2), "axis": 2}, E_ATTR),
  ((1, 3), dense_op, {"sel": [4], "w_sel_shape": (3, 1)}, E_ATTR),
  # add_bw
  (G4, add_op, {}, OK), (G4, add_op, {"m": NAN}, E_ATTR),
  (G4, add_op, {"gb_alias": True}, E_SHAPE),
  # avgpool_bw
  (G4, avgpool_op, {}, OK), (G4, avgpool_op, {"m": [[1.0, 2.0], [3.0, 4.0]]}, OK),
  (G4, avgpool_op, {"m": [1.0, 2.0, 3.0]}, OK), (G4, avgpool_op, {"m": [1.0] * 4}, E_SHAPE),
  (G4, avgpool_op, {"window": (0, 2)}, E_ATTR), (G4, avgpool_op, {"window": (3, 3)}, E_SHAPE),
  (G4, avgpool_op, {"padding": ((2, 0), (0, 0))}, E_SHAPE),
  (G4, avgpool_op, {"in_shape": (4, 4, 2)}, E_ATTR),
  (G4, avgpool_op, {"in_shape": (5, 4, 3)}, E_ATTR),
  # maxpool_bw
  (G4, maxpool_op, {}, OK), (G4, maxpool_op, {"y_shape": (1, 2, 1, 3)}, E_SHAPE),
  (G4, maxpool_op, {"x_dtype": "f32"}, E_DTYPE), (G4, maxpool_op, {"window": (2, 4)}, E_SHAPE),
  # concat_bw
  ((1, 2, 2, 5), concat_op, {}, OK),
  ((1, 2, 2, 5), concat_op, {"mults": (0.5, NAN)}, E_ATTR),  # the generic f32 rule
  ((1, 2, 2, 5), concat_op, {"mults": (NAN, 1.0)}, E_ATTR),
  ((1, 2, 2, 5), concat_op, {"sizes": (2, 2)}, E_SHAPE),
  ((1, 2, 2, 5), concat_op, {"sizes": (3, 2)}, E_SHAPE),
  ((1, 2, 2, 5), concat_op, {"sizes": (2, 2), "out_sizes": (2, 2)}, E_SHAPE),  # sum != 5
  ((1, 2, 2, 5), concat_op, {"axis": 0}, E_ATTR),
  # bottleneck_bw
  ((1, 2, 2, 3), bottleneck_op, {}, OK),
  ((1, 2, 2, 3), bottleneck_op, {"gx": False, "gx_out": False}, OK),
  ((1, 2, 2, 3), bottleneck_op, {"pid": True}, OK),
  ((1, 2, 2, 3), bottleneck_op, {"d_strides": (2, 2)}, E_SHAPE),
  ((1, 2, 2, 3), bottleneck_op, {"scratch": (7,)}, E_SHAPE),
  ((1, 2, 2, 3), bottleneck_op, {"gb_d": (3,)}, E_SHAPE),
  ((1, 2, 2, 3), bottleneck_op, {"m_d": (0.5, 0.25, 1.0)}, E_SHAPE),
  ((1, 2, 2, 3), bottleneck_op, {"gx": False}, E_OPERANDS),
  ((1, 2, 2, 3), bottleneck_op, {"pid": True, "x_zero": 200}, E_ATTR),
  ((1, 2, 2, 3), bottleneck_op, {"pid": True, "slots": 1}, E_OPERANDS),  # SGD: no slot
]


@pytest.mark.parametrize("g_shape, make, change, want", CHECKS,
                         ids=[f"{m.__name__}-{k}" for k, (_, m, _, _) in enumerate(CHECKS)])
def test_check(g_shape, make, change, want) -> None:
  assert _status(g_shape, make, **change) == want
