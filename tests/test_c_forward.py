"""The C runtime's int8 forward kernels (runtime_c/src/jt_conv_s8, jt_pool_s8, jt_eltwise_s8,
jt_bottleneck_s8) against the numpy reference kernels, bit for bit, on seeded random inputs."""

from __future__ import annotations

import ctypes
import re
from ctypes import Structure, c_float, c_int32, c_uint32, c_void_p

import numpy as np
import pytest

from lowering import kernels as K

lib_mod = pytest.importorskip("lowering.cruntime")


class Dims4(Structure):
  _fields_ = [("n", c_uint32), ("h", c_uint32), ("w", c_uint32), ("c", c_uint32)]


class ConvWeight(Structure):
  _fields_ = [("w", c_void_p), ("w_sel", c_void_p), ("sel", c_void_p), ("n_sel", c_uint32),
              ("axis", c_uint32)]


class ConvParams(Structure):
  _fields_ = [(k, c_int32) for k in ("stride_h", "stride_w", "pad_top", "pad_bottom", "pad_left",
                                     "pad_right", "groups", "x_zero", "y_zero", "lo", "hi")]


class DenseParams(Structure):
  _fields_ = [(k, c_int32) for k in ("x_zero", "y_zero", "lo", "hi")]


class PoolParams(Structure):
  _fields_ = [(k, c_int32) for k in ("window_h", "window_w", "stride_h", "stride_w", "pad_top",
                                     "pad_bottom", "pad_left", "pad_right", "x_zero", "y_zero",
                                     "lo", "hi", "m_per_position")]


class RequantParams(Structure):
  _fields_ = [("x_zero", c_int32), ("y_zero", c_int32), ("lo", c_int32), ("hi", c_int32),
              ("m", c_float)]


class AddParams(Structure):
  _fields_ = [(k, c_int32) for k in ("a_zero", "b_zero", "y_zero", "a_mult", "b_mult", "lo",
                                     "hi")] + [("m", c_float)]


class ConvLayer(Structure):
  _fields_ = [("w", c_void_p), ("b", c_void_p), ("m", c_void_p), ("w_dims", Dims4),
              ("p", ConvParams)]


P = c_void_p  # a pointer: an array's address or a byref() of a struct
SIGNATURES = {  # the kernels' C prototypes (floats must not be passed as doubles)
  "jt_conv2d_s8": [P, P, P, P, P, P, P, P, P],
  "jt_dense_s8": [P, c_uint32, c_uint32, P, c_uint32, P, P, P, P],
  "jt_avgpool_s8": [P, P, P, P, P, P],
  "jt_maxpool_s8": [P, P, P, P, P],
  "jt_requant_s8": [P, c_uint32, P, P],
  "jt_add_s8": [P, P, c_uint32, P, P],
  "jt_concat_s8_part": [P, c_uint32, c_uint32, c_uint32, c_int32, c_float, c_int32, P, c_uint32,
                        c_uint32],
  "jt_copy_bytes": [P, c_uint32, P],
  "jt_mask_s8": [P, c_uint32, c_int32, c_int32, P],
  "jt_gather_channels_s8": [P, c_uint32, c_uint32, P, c_uint32, P],
  "jt_bottleneck_s8": [P, P, P, P, P, P, P, P],
  "jt_bottleneck_s8_get_buffer_size": [P, P, P],
}


@pytest.fixture(scope="module")
def lib() -> ctypes.CDLL:
  try:
    lib = lib_mod.library()
  except (ImportError, OSError) as e:
    pytest.skip(f"C runtime not built: {e}")
  for name, args in SIGNATURES.items():
    f = getattr(lib, name)
    f.argtypes = args
    f.restype = c_uint32 if name.endswith("get_buffer_size") else c_int32
  return lib


def ptr(a: np.ndarray | None) -> int | None:
  if a is None:
    return None
  assert a.flags.c_contiguous
  return a.ctypes.data


def dims(shape: tuple[int, ...]) -> Dims4:
  return Dims4(*shape)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
  a, b = np.asarray(a), np.asarray(b)
  return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# --- random inputs ------------------------------------------------------------------------


def rand_i8(rng: np.random.Generator, shape, lo: int = -128) -> np.ndarray:
  return rng.integers(lo, 128, size=shape, dtype=np.int8)


def rand_bias(rng: np.random.Generator, o: int) -> np.ndarray:
  b = rng.integers(-20000, 20000, size=o).astype(np.int32)
  # dead channels of imported models: saturating add; large values: f32(acc) rounding
  extremes = [2**31 - 1, -2**31, 2**31 - 5, 2**24 + 2**18 + 1, -(2**25) - 3]
  for i in range(o):
    if rng.random() < 0.2:
      b[i] = extremes[rng.integers(len(extremes))]
  return b


def rand_mult(rng: np.random.Generator, shape) -> np.ndarray:
  m = (10.0 ** rng.uniform(-4.5, -1.0, size=shape)).astype(np.float32)
  flat = m.reshape(-1)
  for i in range(flat.size):  # exact halves: ties must round to even
    if rng.random() < 0.15:
      flat[i] = np.float32([0.5, 0.25, 2.0**-19, 1.5][rng.integers(4)])
  return m


def rand_clamp(rng: np.random.Generator) -> tuple[int, int, int]:
  y_zero = int(rng.integers(-128, 128))
  lo, hi = sorted(int(v) for v in rng.integers(-128, 128, size=2))
  if rng.random() < 0.4:
    lo, hi = -128, 127
  elif rng.random() < 0.3:
    lo = y_zero  # fused ReLU
  hi = max(hi, lo)
  return y_zero, lo, hi


# --- conv2d -------------------------------------------------------------------------------


def c_conv(lib, x, w, b, m, strides, padding, groups, x_zero, y_zero, lo, hi, out_shape,
           w_sel=None, sel=None, axis=0) -> np.ndarray:
  y = np.full(out_shape, 99, np.int8)
  sel_arr = None if sel is None else np.ascontiguousarray(sel, np.int32)
  cw = ConvWeight(ptr(w), ptr(w_sel), ptr(sel_arr), 0 if sel is None else len(sel), axis)
  (pt, pb), (pl, pr) = padding
  p = ConvParams(strides[0], strides[1], pt, pb, pl, pr, groups, x_zero, y_zero, lo, hi)
  st = lib.jt_conv2d_s8(ptr(x), ctypes.byref(dims(x.shape)), ctypes.byref(cw),
                        ctypes.byref(dims(w.shape)), ptr(b), ptr(m), ctypes.byref(p), ptr(y),
                        ctypes.byref(dims(out_shape)))
  assert st == 0
  return y


def random_conv(rng: np.random.Generator, kind: str):
  n = int(rng.integers(1, 3))
  h, wd = int(rng.integers(1, 9)), int(rng.integers(1, 9))
  kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
  if kind == "ordinary":
    cin, groups = int(rng.integers(1, 6)), 1
    o = int(rng.integers(1, 6))
  elif kind == "grouped":
    groups = int(rng.integers(2, 4))
    cin = groups * int(rng.integers(1, 3))
    o = groups * int(rng.integers(1, 3))
  else:  # depthwise with channel multiplier
    cin = int(rng.integers(1, 6))
    groups, o = cin, cin * int(rng.integers(1, 3))
  strides = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
  padding = tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(2))
  if h + sum(padding[0]) < kh or wd + sum(padding[1]) < kw:
    padding = ((kh, kh), (kw, kw))
  x = rand_i8(rng, (n, h, wd, cin))
  w = rand_i8(rng, (o, kh, kw, cin // groups), lo=-127)
  return x, w, rand_bias(rng, o), rand_mult(rng, (o,)), strides, padding, groups


@pytest.mark.parametrize("kind", ["ordinary", "grouped", "depthwise"])
def test_conv2d(lib, kind: str) -> None:
  rng = np.random.default_rng(["ordinary", "grouped", "depthwise"].index(kind))
  for _ in range(60):
    x, w, b, m, strides, padding, groups = random_conv(rng, kind)
    x_zero = int(rng.integers(-128, 128))
    y_zero, lo, hi = rand_clamp(rng)
    want = K.conv2d(x, w, b, m, strides, padding, groups, x_zero, y_zero, lo, hi)
    got = c_conv(lib, x, w, b, m, strides, padding, groups, x_zero, y_zero, lo, hi, want.shape)
    assert same_bits(got, want), (x.shape, w.shape, strides, padding, groups)


def test_conv2d_extreme_accumulator(lib) -> None:
  # the largest reduction the check accepts, every product at its extreme (-128 weights
  # included): the int32 sum must neither overflow nor lose a bit
  x = np.full((1, 1, 1, 65793), -128, np.int8)
  w = np.full((2, 1, 1, 65793), -128, np.int8)
  w[1] = 127
  b = np.array([0, 2**31 - 1], np.int32)
  m = np.array([2.0**-24, 2.0**-24], np.float32)
  for x_zero in (127, -128):
    want = K.conv2d(x, w, b, m, (1, 1), K.NO_PADDING, 1, x_zero, 3, -128, 127)
    got = c_conv(lib, x, w, b, m, (1, 1), K.NO_PADDING, 1, x_zero, 3, -128, 127, want.shape)
    assert same_bits(got, want)


def merged_case(rng: np.random.Generator, w: np.ndarray, axis: int):
  size = w.shape[axis]
  count = int(rng.integers(0, size + 1))
  sel = np.sort(rng.choice(size, count, replace=False)).astype(np.int32)
  shape = list(w.shape)
  shape[axis] = count
  w_sel = rand_i8(rng, tuple(shape), lo=-127)
  return w_sel, sel, K.merge_channels(w, w_sel, axis, sel.tolist())


@pytest.mark.parametrize("axis", [0, 1, 2, 3])
def test_conv2d_merged_weight(lib, axis: int) -> None:
  rng = np.random.default_rng(10 + axis)
  for k in range(40):
    x, w, b, m, strides, padding, groups = random_conv(rng, ("ordinary", "depthwise")[k % 2])
    w_sel, sel, merged = merged_case(rng, w, axis)
    x_zero = int(rng.integers(-128, 128))
    y_zero, lo, hi = rand_clamp(rng)
    want = K.conv2d(x, merged, b, m, strides, padding, groups, x_zero, y_zero, lo, hi)
    got = c_conv(lib, x, w, b, m, strides, padding, groups, x_zero, y_zero, lo, hi, want.shape,
                 w_sel=w_sel, sel=sel, axis=axis)
    assert same_bits(got, want), (axis, w.shape, sel)


# --- dense --------------------------------------------------------------------------------


def c_dense(lib, x, w, b, m, x_zero, y_zero, lo, hi, w_sel=None, sel=None, axis=0):
  n, k = x.shape
  o = w.shape[0]
  y = np.full((n, o), 99, np.int8)
  sel_arr = None if sel is None else np.ascontiguousarray(sel, np.int32)
  cw = ConvWeight(ptr(w), ptr(w_sel), ptr(sel_arr), 0 if sel is None else len(sel), axis)
  p = DenseParams(x_zero, y_zero, lo, hi)
  assert lib.jt_dense_s8(ptr(x), n, k, ctypes.byref(cw), o, ptr(b), ptr(m), ctypes.byref(p),
                         ptr(y)) == 0
  return y


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_dense(lib, axis: int | None) -> None:
  rng = np.random.default_rng(20 + (axis if axis is not None else 2))
  for _ in range(50):
    n, k, o = int(rng.integers(1, 4)), int(rng.integers(1, 40)), int(rng.integers(1, 12))
    x, w = rand_i8(rng, (n, k)), rand_i8(rng, (o, k), lo=-127)
    b, m = rand_bias(rng, o), rand_mult(rng, (o,))
    x_zero = int(rng.integers(-128, 128))
    y_zero, lo, hi = rand_clamp(rng)
    if axis is None:
      want = K.dense(x, w, b, m, x_zero, y_zero, lo, hi)
      got = c_dense(lib, x, w, b, m, x_zero, y_zero, lo, hi)
    else:
      w_sel, sel, merged = merged_case(rng, w, axis)
      want = K.dense(x, merged, b, m, x_zero, y_zero, lo, hi)
      got = c_dense(lib, x, w, b, m, x_zero, y_zero, lo, hi, w_sel, sel, axis)
    assert same_bits(got, want)


# --- pooling ------------------------------------------------------------------------------


def random_window(rng: np.random.Generator, h: int, wd: int):
  window = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
  strides = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
  padding = tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(2))
  if rng.random() < 0.15:  # a window wider than the input, mostly padding
    window, padding = (h + 2, wd + 1), ((1, 1), (1, 0))
  if h + sum(padding[0]) < window[0] or wd + sum(padding[1]) < window[1]:
    padding = (window[0], window[0]), (window[1], window[1])
  return window, strides, padding


def pool_params(window, strides, padding, x_zero=0, y_zero=0, lo=-128, hi=127, per_pos=0):
  (pt, pb), (pl, pr) = padding
  return PoolParams(window[0], window[1], strides[0], strides[1], pt, pb, pl, pr, x_zero, y_zero,
                    lo, hi, per_pos)


def test_avgpool(lib) -> None:
  rng = np.random.default_rng(30)
  for t in range(80):
    x = rand_i8(rng, (int(rng.integers(1, 3)), int(rng.integers(1, 8)), int(rng.integers(1, 8)),
                      int(rng.integers(1, 5))))
    window, strides, padding = random_window(rng, x.shape[1], x.shape[2])
    ho = K.out_size(x.shape[1], window[0], strides[0], padding[0])
    wo = K.out_size(x.shape[2], window[1], strides[1], padding[1])
    per_pos = t % 2
    m = rand_mult(rng, (ho, wo) if per_pos else ())
    m = np.array(m * np.float32(30), np.float32)  # the window sums are small
    x_zero = int(rng.integers(-128, 128))
    y_zero, lo, hi = rand_clamp(rng)
    want = K.avgpool(x, m, window, strides, padding, x_zero, y_zero, lo, hi)
    y = np.full(want.shape, 99, np.int8)
    p = pool_params(window, strides, padding, x_zero, y_zero, lo, hi, per_pos)
    assert lib.jt_avgpool_s8(ptr(x), ctypes.byref(dims(x.shape)), ptr(m), ctypes.byref(p), ptr(y),
                             ctypes.byref(dims(want.shape))) == 0
    assert same_bits(y, want), (x.shape, window, strides, padding)


def test_maxpool(lib) -> None:
  rng = np.random.default_rng(31)
  for _ in range(80):
    x = rand_i8(rng, (int(rng.integers(1, 3)), int(rng.integers(1, 8)), int(rng.integers(1, 8)),
                      int(rng.integers(1, 5))))
    if rng.random() < 0.3:
      x[...] = -128  # ties with the padding's -128
    window, strides, padding = random_window(rng, x.shape[1], x.shape[2])
    want = K.maxpool(x, window, strides, padding)
    y = np.full(want.shape, 99, np.int8)
    p = pool_params(window, strides, padding)
    assert lib.jt_maxpool_s8(ptr(x), ctypes.byref(dims(x.shape)), ctypes.byref(p), ptr(y),
                             ctypes.byref(dims(want.shape))) == 0
    assert same_bits(y, want)


# --- element-wise -------------------------------------------------------------------------


def test_requant_in_place(lib) -> None:
  rng = np.random.default_rng(40)
  for t in range(60):
    x = rand_i8(rng, (int(rng.integers(1, 200)),))
    x_zero = int(rng.integers(-128, 128))
    y_zero, lo, hi = rand_clamp(rng)
    m = float(rand_mult(rng, ()) * np.float32(300)) if t % 3 else 0.5
    want = K.requant(x, x_zero, m, y_zero, lo, hi)
    p = RequantParams(x_zero, y_zero, lo, hi, m)
    y = x.copy() if t % 2 else np.full(x.shape, 99, np.int8)  # in place: y is x
    src = y if t % 2 else x
    assert lib.jt_requant_s8(ptr(src), x.size, ctypes.byref(p), ptr(y)) == 0
    assert same_bits(y, want)


@pytest.mark.parametrize("where", ["out", "over_a", "over_b"])
def test_add(lib, where: str) -> None:
  rng = np.random.default_rng(41 + ["out", "over_a", "over_b"].index(where))
  for _ in range(60):
    shape = (1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    a, b = rand_i8(rng, shape), rand_i8(rng, shape)
    a_zero, b_zero = (int(v) for v in rng.integers(-128, 128, size=2))
    a_mult, b_mult = (int(v) for v in rng.integers(-(2**15), 2**15 + 1, size=2))
    m = float(np.float32(10.0 ** rng.uniform(-7, -4)))
    y_zero, lo, hi = rand_clamp(rng)
    want = K.add(a, b, a_zero, b_zero, a_mult, b_mult, m, y_zero, lo, hi)
    p = AddParams(a_zero, b_zero, y_zero, a_mult, b_mult, lo, hi, m)
    aa, bb = a.copy(), b.copy()
    y = {"out": np.full(shape, 99, np.int8), "over_a": aa, "over_b": bb}[where]
    assert lib.jt_add_s8(ptr(aa), ptr(bb), a.size, ctypes.byref(p), ptr(y)) == 0
    assert same_bits(y, want)


def test_add_extreme_multipliers(lib) -> None:
  # the check's bound: 255 * (|a_mult| + |b_mult|) <= INT32_MAX
  a = np.array([-128, 127, 0, -128], np.int8)
  b = np.array([127, -128, 0, -128], np.int8)
  a_mult, b_mult = 4210752, -(2147483647 // 255 - 4210752)
  for a_zero, b_zero in ((127, -128), (-128, 127)):
    want = K.add(a, b, a_zero, b_zero, a_mult, b_mult, 2.0**-24, 0, -128, 127)
    y = np.zeros(4, np.int8)
    p = AddParams(a_zero, b_zero, 0, a_mult, b_mult, -128, 127, 2.0**-24)
    assert lib.jt_add_s8(ptr(a), ptr(b), 4, ctypes.byref(p), ptr(y)) == 0
    assert same_bits(y, want)


def c_concat(lib, xs, axis, zeros, mults, y_zero) -> np.ndarray:
  shape = list(xs[0].shape)
  shape[axis] = sum(x.shape[axis] for x in xs)
  y = np.full(shape, 99, np.int8)
  outer = int(np.prod(shape[:axis]))
  inner = int(np.prod(shape[axis + 1:]))
  offset = 0
  for x, z, m in zip(xs, zeros, mults, strict=True):
    assert lib.jt_concat_s8_part(ptr(x), outer, x.shape[axis], inner, z, m, y_zero, ptr(y),
                                 shape[axis], offset) == 0
    offset += x.shape[axis]
  return y


def test_concat(lib) -> None:
  rng = np.random.default_rng(44)
  for _ in range(60):
    ndim = int(rng.integers(2, 5))
    axis = int(rng.integers(1, ndim))
    base = [int(v) for v in rng.integers(1, 5, size=ndim)]
    xs = []
    for _ in range(int(rng.integers(1, 4))):
      shape = list(base)
      shape[axis] = int(rng.integers(0, 4))
      xs.append(rand_i8(rng, tuple(shape)))
    y_zero = int(rng.integers(-128, 128))
    zeros = [int(v) for v in rng.integers(-128, 128, size=len(xs))]
    mults = [float(np.float32(rng.uniform(0.2, 2.0))) for _ in xs]
    if rng.random() < 0.5:  # an input copied unchanged
      zeros[0], mults[0] = y_zero, 1.0
    want = K.concat(xs, axis, zeros, mults, y_zero)
    assert same_bits(c_concat(lib, xs, axis, zeros, mults, y_zero), want)


def test_copy(lib) -> None:
  rng = np.random.default_rng(45)
  x = rng.integers(0, 256, size=37, dtype=np.uint8)
  y = np.zeros(37, np.uint8)
  assert lib.jt_copy_bytes(ptr(x), 37, ptr(y)) == 0
  assert same_bits(x, y)
  assert lib.jt_copy_bytes(ptr(x), 0, ptr(y[:0].copy())) == 0


def test_mask(lib) -> None:
  rng = np.random.default_rng(46)
  # random clamps, then the full range and the empty and nearly empty ones
  bounds = [sorted(int(v) for v in rng.integers(-128, 128, size=2)) for _ in range(6)]
  bounds += [[-128, 127], [5, 5], [5, 6], [0, 2], [-128, -127], [126, 127]]
  for n, (lo, hi) in zip((1, 7, 8, 9, 16, 61, 64, 65, 23, 40, 9, 33), bounds, strict=True):
    y = rand_i8(rng, (n,))
    y[: n // 3] = lo  # on the clamp: outside
    y[n // 3: n // 2] = hi
    rng.shuffle(y)
    want = np.packbits((y > lo) & (y < hi), bitorder="little")
    mask = np.full(want.shape, 0xFF, np.uint8)
    assert lib.jt_mask_s8(ptr(y), n, lo, hi, ptr(mask)) == 0
    assert same_bits(mask, want)


def test_gather_channels(lib) -> None:
  rng = np.random.default_rng(47)
  for _ in range(20):
    x = rand_i8(rng, (1, int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 9))))
    c = x.shape[-1]
    sel = np.sort(rng.choice(c, int(rng.integers(0, c + 1)), replace=False)).astype(np.int32)
    want = np.ascontiguousarray(x[..., sel])
    y = np.full(want.shape, 99, np.int8)
    assert lib.jt_gather_channels_s8(ptr(x), x.size // c, c, ptr(sel), len(sel), ptr(y)) == 0
    assert same_bits(y, want)


# --- bottleneck ---------------------------------------------------------------------------


def random_layer(rng: np.random.Generator, o: int, kh: int, kw: int, i: int) -> dict:
  y_zero, lo, hi = rand_clamp(rng)
  return {"w": rand_i8(rng, (o, kh, kw, i), lo=-127), "b": rand_bias(rng, o),
          "m": rand_mult(rng, (o,)), "y_zero": y_zero, "lo": lo, "hi": hi}


def c_layer(d: dict, groups: int, x_zero: int) -> ConvLayer:
  (pt, pb), (pl, pr) = d["padding"]
  sh, sw = d["strides"]
  return ConvLayer(ptr(d["w"]), ptr(d["b"]), ptr(d["m"]), dims(d["w"].shape),
                   ConvParams(sh, sw, pt, pb, pl, pr, groups, x_zero, d["y_zero"], d["lo"],
                              d["hi"]))


def test_bottleneck(lib) -> None:
  rng = np.random.default_rng(50)
  done = 0
  while done < 40:
    h, wd, k = int(rng.integers(1, 10)), int(rng.integers(1, 10)), int(rng.integers(1, 5))
    c, p = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    ke = (1, 1) if rng.random() < 0.5 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    kd = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    expand = random_layer(rng, c, ke[0], ke[1], k)
    expand |= {"strides": tuple(int(v) for v in rng.integers(1, 3, size=2)),
               "padding": tuple((int(rng.integers(0, ke[a])), int(rng.integers(0, ke[a])))
                                for a in range(2)),
               "x_zero": int(rng.integers(-128, 128))}
    depthwise = random_layer(rng, c, kd[0], kd[1], 1)
    depthwise |= {"strides": tuple(int(v) for v in rng.integers(1, 4, size=2)),
                  "padding": tuple((int(rng.integers(0, kd[a])), int(rng.integers(0, kd[a])))
                                   for a in range(2)),
                  "x_zero": expand["y_zero"]}
    project = random_layer(rng, p, 1, 1, c)
    project |= {"strides": (1, 1), "padding": K.NO_PADDING, "x_zero": depthwise["y_zero"]}
    x = rand_i8(rng, (1, h, wd, k))
    # the three convs whole: the block's definition (geometry that does not fit is skipped)
    try:
      e = K.conv2d(x, **expand, groups=1)
      d = K.conv2d(e, **depthwise, groups=c)
      whole = K.conv2d(d, **project, groups=1)
    except ValueError:
      continue
    need = K.bottleneck_band_bytes(e.shape, d.shape, kd[0])
    junk = rng.integers(-128, 128, size=need + 3, dtype=np.int8)
    band_ref = junk.copy()
    want = K.bottleneck(x, expand, depthwise, project, band_ref)
    assert same_bits(want, whole)
    le, ld, lp = c_layer(expand, 1, expand["x_zero"]), c_layer(depthwise, c, depthwise["x_zero"]), \
        c_layer(project, 1, project["x_zero"])
    xd = dims(x.shape)
    assert lib.jt_bottleneck_s8_get_buffer_size(ctypes.byref(xd), ctypes.byref(le),
                                                ctypes.byref(ld)) == need
    band = junk.copy()
    y = np.full(want.shape, 99, np.int8)
    assert lib.jt_bottleneck_s8(ptr(x), ctypes.byref(xd), ctypes.byref(le), ctypes.byref(ld),
                                ctypes.byref(lp), ptr(y), ctypes.byref(dims(y.shape)),
                                ptr(band)) == 0
    assert same_bits(y, want), (x.shape, ke, kd, expand["strides"], expand["padding"],
                                depthwise["strides"], depthwise["padding"])
    # the band's bytes as the reference leaves them (and nothing written past it)
    assert same_bits(band, band_ref)
    done += 1


# --- whole programs of these ops: the adapters, and the checks of one op made invalid ----


def forward_program(edit=None):
  """A hand-built program using every forward opcode (no JAX needed): two branches from
  the input (convs, merged depthwise weight, pools, requant, add, concat; a bottleneck),
  flattened by a copy into a dense layer with a merged weight; masks and saved channels
  as the training step keeps them. The loss is a copied constant. `edit(graph, ops)` may
  break one op before the program is built."""
  from lowering.ir import Graph, Op
  from lowering.program import Program

  rng = np.random.default_rng(60)
  g = Graph()

  def const(name, a, dtype):
    return g.const(name, a, dtype)

  def act(name, shape, dtype="i8"):
    return g.add(name, shape, dtype)

  def layer(o, kh, kw, i, scale):
    return (const("w", rand_i8(rng, (o, kh, kw, i), lo=-127), "i8"),
            const("b", rng.integers(-500, 500, o), "i32"),
            const("m", np.full(o, scale, np.float32) * rng.uniform(0.5, 1.5, o), "f32"))

  x = g.add("input", (1, 8, 8, 2), "i8", "io")
  label = g.add("label", (1,), "i32", "io")
  loss = g.add("loss", (), "f32", "io")
  logits = g.add("logits", (1, 4), "i8", "io")
  ops = []
  clamp = {"y_zero": -5, "lo": -128, "hi": 127}
  c1 = act("c1", (1, 8, 8, 4))
  ops.append(Op("conv2d_s8", [x, *layer(4, 3, 3, 2, 0.0008)], [c1],
                {"strides": (1, 1), "padding": ((1, 1), (1, 1)), "groups": 1, "x_zero": 3,
                 **clamp}))
  mask = act("mask", (1, 8, 8, 4), "bit")
  ops.append(Op("mask_s8", [c1], [mask], {"lo": -128, "hi": 127}))
  saved = act("saved", (1, 8, 8, 2))
  ops.append(Op("gather_channels_s8", [c1, const("sel", [0, 2], "i32")], [saved]))
  w, b, m = layer(4, 3, 3, 1, 0.006)
  w_sel = g.add("w_sel", (2, 3, 3, 1), "i8", "state", rand_i8(rng, (2, 3, 3, 1), lo=-127))
  dw = act("dw", (1, 8, 8, 4))
  ops.append(Op("conv2d_s8", [c1, w, b, m, w_sel, const("sel", [1, 3], "i32")], [dw],
                {"strides": (1, 1), "padding": ((1, 1), (1, 1)), "groups": 4, "x_zero": -5,
                 "y_zero": -20, "lo": -128, "hi": 100, "sel_axis": 0}))
  mp = act("mp", (1, 4, 4, 4))
  ops.append(Op("maxpool_s8", [dw], [mp],
                {"window": (2, 2), "strides": (2, 2), "padding": ((0, 0), (0, 0))}))
  ap = act("ap", (1, 2, 2, 4))
  ops.append(Op("avgpool_s8", [mp, const("m", np.float32(0.08), "f32")], [ap],
                {"window": (3, 3), "strides": (2, 2), "padding": ((1, 0), (1, 0)),
                 "x_zero": 7, **clamp}))
  rq = act("rq", (1, 2, 2, 4))
  ops.append(Op("requant_s8", [ap], [rq], {"x_zero": -5, "m": 0.7, **clamp}))
  ad = act("ad", (1, 2, 2, 4))
  ops.append(Op("add_s8", [rq, ap], [ad], {"a_zero": -5, "b_zero": -5, "a_mult": 3000,
                                           "b_mult": -1000, "m": 2e-4, **clamp}))
  bt, band = act("bt", (1, 4, 4, 2)), act("band", (3 * 8 * 6 + 4 * 6,))
  ops.append(Op("bottleneck_s8", [x, *layer(6, 1, 1, 2, 0.02), *layer(6, 3, 3, 1, 0.002),
                                  *layer(2, 1, 1, 6, 0.004)], [bt, band],
                {"e_strides": (1, 1), "e_padding": ((0, 0), (0, 0)), "e_x_zero": 3,
                 "e_y_zero": -128, "e_lo": -128, "e_hi": 127, "d_strides": (2, 2),
                 "d_padding": ((1, 1), (1, 1)), "d_y_zero": -128, "d_lo": -128, "d_hi": 127,
                 "p_y_zero": 0, "p_lo": -128, "p_hi": 127}))
  bp = act("bp", (1, 2, 2, 2))
  ops.append(Op("avgpool_s8", [bt, const("m", np.full((2, 2), 0.6, np.float32), "f32")], [bp],
                {"window": (2, 2), "strides": (2, 2), "padding": ((0, 0), (0, 0)),
                 "x_zero": 0, **clamp}))
  cc = act("cc", (1, 2, 2, 10))
  ops.append(Op("concat_s8", [ad, bp, rq], [cc],
                {"axis": 3, "y_zero": 1, "zeros": (-5, -5, -5), "mults": (1.0, 0.8, 1.3)}))
  flat = act("flat", (1, 40))
  ops.append(Op("copy", [cc], [flat]))
  w, b, m = (const("w", rand_i8(rng, (4, 40), lo=-127), "i8"),
             const("b", rng.integers(-500, 500, 4), "i32"), const("m", [0.003] * 4, "f32"))
  wd_sel = g.add("wd_sel", (4, 3), "i8", "state", rand_i8(rng, (4, 3), lo=-127))
  logits8 = act("logits8", (1, 4))
  ops.append(Op("dense_s8", [flat, w, b, m, wd_sel, const("sel", [0, 17, 39], "i32")],
                [logits8], {"x_zero": 1, "y_zero": 0, "lo": -128, "hi": 127, "sel_axis": 1}))
  # inference copies the logits out (train ops never see the logits buffer)
  infer = [op for op in ops if op.name not in ("mask_s8", "gather_channels_s8")]
  infer.append(Op("copy", [logits8], [logits]))
  ops.append(Op("copy", [const("zero", [0.0], "f32")], [loss]))
  if edit is not None:
    edit(g, ops)
  optimizer = {"kind": "sgd", "momentum": 0.0, "b1": 0.9, "b2": 0.999, "eps": 1e-08,
               "schedule": "constant", "lr": 0.1, "steps": 0, "final": 0.0}
  del label
  return Program(g, ops, infer, {"input": x, "label": 1, "loss": loss, "logits": logits},
                 optimizer, "nearest", 0)


def refusal(prog) -> tuple[int, str] | None:
  """(status, where) of the C verifier's refusal of prog's blob, None if it accepts it."""
  from lowering.blob import BlobError, encode
  from lowering.cruntime import CRuntime

  try:
    CRuntime(encode(prog, "current"))
  except BlobError as e:
    status = re.search(r"\(status (\d+)\)", str(e))
    where = re.search(r" at (\w+ op \d+)", str(e))
    return int(status.group(1)) if status else -1, where.group(1) if where else ""
  return None


def test_forward_program(lib) -> None:
  from lowering.blob import encode
  from lowering.cruntime import CRuntime

  prog = forward_program()
  rt = CRuntime(encode(prog, "current"))
  rng = np.random.default_rng(61)
  outputs = set()
  for _ in range(6):
    x8 = rand_i8(rng, (8, 8, 2))
    want = prog.infer(x8)
    assert same_bits(rt.infer(x8), want)
    outputs.add(want.tobytes())
    assert rt.train_step(x8, 0) == 0.0
  assert len(outputs) > 1  # the logits depend on the input
  assert rt.guards_intact()


JT_E_OPERANDS, JT_E_DTYPE, JT_E_SHAPE, JT_E_ATTR = 12, 13, 14, 15


def _attr(index: int, key: str, value):
  def edit(g, ops):
    ops[index].attrs[key] = value
  return edit


def _const(index: int, operand: int, f):
  """Replace op `index`'s const input `operand` by f(its data)."""
  def edit(g, ops):
    t = g.tensors[ops[index].inputs[operand]]
    t.data = np.array(f(t.data), order="C")  # keeps a 0-d array 0-d
    t.shape = t.data.shape
  return edit


def _retype(index: int, operand: int, dtype: str):
  """Store op `index`'s const input `operand` as another dtype."""
  def edit(g, ops):
    t = g.tensors[ops[index].inputs[operand]]
    t.dtype = dtype
    t.data = t.data.astype({"f32": np.float32, "i32": np.int32}[dtype])
  return edit


def _shape(index: int, output: int, shape):
  def edit(g, ops):
    g.tensors[ops[index].outputs[output]].shape = shape
  return edit


CONV, MASK, GATHER, DW, MAXPOOL, AVGPOOL, REQUANT, ADD, BOTTLENECK, AVGPOOL2, CONCAT, COPY, \
  DENSE = range(13)
CHECK_CASES = [  # (op index, edit, status)
  (CONV, _attr(CONV, "lo", 127), None),  # lo == hi: a constant output, fine
  (CONV, _attr(CONV, "hi", -128), None),
  (CONV, lambda g, ops: ops[CONV].attrs.update(lo=127, hi=126), JT_E_ATTR),
  (CONV, _attr(CONV, "strides", (0, 1)), JT_E_ATTR),
  (CONV, _attr(CONV, "padding", ((-1, 0), (0, 0))), JT_E_ATTR),
  (CONV, _attr(CONV, "padding", ((1, 1), (1, 2))), JT_E_SHAPE),  # output width 9
  (CONV, _attr(CONV, "groups", 2), JT_E_SHAPE),
  (CONV, _attr(CONV, "x_zero", 128), JT_E_ATTR),
  (CONV, _const(CONV, 3, lambda m: np.full_like(m, np.inf)), JT_E_ATTR),
  (CONV, _const(CONV, 3, lambda m: m[:3]), JT_E_SHAPE),
  (CONV, _retype(CONV, 2, "f32"), JT_E_DTYPE),
  (CONV, _retype(CONV, 3, "i32"), JT_E_DTYPE),
  (CONV, _const(CONV, 1, lambda w: np.zeros((4, 200, 200, 2), np.int8)), JT_E_SHAPE),
  (DW, _const(DW, 5, lambda s: s[::-1]), JT_E_ATTR),  # channels not ascending
  (DW, _const(DW, 5, lambda s: s + 2), JT_E_ATTR),  # channel 5 of 4
  (DW, _attr(DW, "sel_axis", 3), JT_E_SHAPE),  # w_sel's shape disagrees with the axis
  (DW, _attr(DW, "sel_axis", 4), JT_E_ATTR),
  (DW, _attr(DW, "sel_axis", -4), None),  # numpy's axis 0
  (DW, lambda g, ops: ops[DW].attrs.pop("sel_axis"), JT_E_OPERANDS),
  (MASK, _attr(MASK, "lo", 127), None),  # lo == hi: an empty mask
  (MASK, _attr(MASK, "hi", -129), JT_E_ATTR),
  (MASK, _shape(MASK, 0, (1, 8, 4, 8)), JT_E_SHAPE),
  (GATHER, _const(GATHER, 1, lambda s: s + 2), JT_E_ATTR),
  (GATHER, _shape(GATHER, 0, (1, 8, 8, 3)), JT_E_SHAPE),
  (MAXPOOL, _attr(MAXPOOL, "strides", (1, 2)), JT_E_SHAPE),
  (MAXPOOL, _attr(MAXPOOL, "window", (0, 2)), JT_E_ATTR),
  (AVGPOOL, _attr(AVGPOOL, "window", (10, 3)), JT_E_SHAPE),
  (AVGPOOL, _attr(AVGPOOL, "window", (2**16, 2**16)), JT_E_SHAPE),
  (AVGPOOL, _const(AVGPOOL, 1, lambda m: np.ones((2, 3), np.float32)), JT_E_SHAPE),
  (AVGPOOL, _const(AVGPOOL, 1, lambda m: np.ones((1,), np.float32)), JT_E_SHAPE),
  (AVGPOOL, _const(AVGPOOL, 1, lambda m: np.float32(np.nan)), JT_E_ATTR),
  (AVGPOOL2, _const(AVGPOOL2, 1, lambda m: m.T[:1]), JT_E_SHAPE),
  (REQUANT, _attr(REQUANT, "m", float("inf")), JT_E_ATTR),
  (REQUANT, _shape(REQUANT, 0, (1, 4, 4)), JT_E_SHAPE),
  (ADD, _attr(ADD, "a_mult", 8421504 - 1000 + 1), JT_E_ATTR),  # 255 * (|a| + |b|) > 2**31 - 1
  (ADD, _attr(ADD, "a_mult", -(8421504 - 1000)), None),
  (ADD, lambda g, ops: ops[ADD].inputs.__setitem__(1, ops[MAXPOOL].outputs[0]), JT_E_SHAPE),
  (BOTTLENECK, _attr(BOTTLENECK, "d_padding", ((3, 0), (1, 1))), JT_E_SHAPE),  # row 0 empty
  (BOTTLENECK, _attr(BOTTLENECK, "e_y_zero", 200), JT_E_ATTR),
  (BOTTLENECK, _attr(BOTTLENECK, "d_strides", (1, 2)), JT_E_SHAPE),
  (BOTTLENECK, _shape(BOTTLENECK, 1, (3 * 8 * 6 + 4 * 6 - 1,)), JT_E_SHAPE),  # band short
  (BOTTLENECK, _shape(BOTTLENECK, 1, (3 * 8 * 6 + 4 * 6 + 9,)), None),
  (CONCAT, _attr(CONCAT, "axis", 0), JT_E_ATTR),
  (CONCAT, _attr(CONCAT, "axis", 2), JT_E_SHAPE),
  (CONCAT, _shape(CONCAT, 0, (1, 2, 2, 11)), JT_E_SHAPE),  # 4 + 2 + 4 channels
  (CONCAT, _attr(CONCAT, "zeros", (-5, -5, 300)), JT_E_ATTR),
  (CONCAT, _attr(CONCAT, "zeros", (-5, -5)), JT_E_ATTR),
  (COPY, _shape(COPY, 0, (1, 41)), JT_E_SHAPE),
  (DENSE, _attr(DENSE, "y_zero", -129), JT_E_ATTR),
  (DENSE, _const(DENSE, 5, lambda s: np.array([0, 17, 40], np.int32)), JT_E_ATTR),
]


@pytest.mark.parametrize("at, edit, status", CHECK_CASES,
                         ids=[f"{i}-op{c[0]}" for i, c in enumerate(CHECK_CASES)])
def test_checks(lib, at: int, edit, status: int | None) -> None:
  assert refusal(forward_program()) is None
  got = refusal(forward_program(edit))
  if status is None:
    assert got is None
  else:
    assert got == (status, f"train op {at}")


def bottleneck_program(rng: np.random.Generator, h: int, w: int, ke: tuple, es: tuple,
                       ep: tuple, kd: tuple, ds: tuple, dp: tuple):
  """input -> bottleneck_s8 -> flattened logits; None when the geometry gives no output."""
  from lowering.ir import Graph, Op
  from lowering.program import Program

  e_rows, e_cols = (K.out_size(n, k, s, p) for n, k, s, p in zip((h, w), ke, es, ep))
  if min(e_rows, e_cols) < 1:
    return None
  d_rows, d_cols = (K.out_size(n, k, s, p) for n, k, s, p in zip((e_rows, e_cols), kd, ds, dp))
  if min(d_rows, d_cols) < 1:
    return None
  g = Graph()
  x = g.add("input", (1, h, w, 2), "i8", "io")
  layers = []
  for o, kh, kw, i in ((3, *ke, 2), (3, *kd, 1), (2, 1, 1, 3)):
    layers += [g.const("w", rand_i8(rng, (o, kh, kw, i), lo=-127), "i8"),
               g.const("b", rng.integers(-300, 300, o), "i32"),
               g.const("m", np.full(o, 0.01, np.float32), "f32")]
  y = g.add("y", (1, d_rows, d_cols, 2), "i8")
  band = g.add("band", (K.bottleneck_band_bytes((1, e_rows, e_cols, 3),
                                                (1, d_rows, d_cols, 3), kd[0]),), "i8")
  flat = g.add("flat", (1, d_rows * d_cols * 2), "i8")
  logits = g.add("logits", (1, d_rows * d_cols * 2), "i8", "io")
  loss = g.add("loss", (), "f32", "io")
  label = g.add("label", (1,), "i32", "io")
  ops = [Op("bottleneck_s8", [x, *layers], [y, band],
            {"e_strides": es, "e_padding": ep, "e_x_zero": 0, "e_y_zero": -3, "e_lo": -128,
             "e_hi": 127, "d_strides": ds, "d_padding": dp, "d_y_zero": 2, "d_lo": -128,
             "d_hi": 127, "p_y_zero": 0, "p_lo": -128, "p_hi": 127}),
         Op("copy", [y], [flat])]
  infer = [*ops, Op("copy", [flat], [logits])]
  ops.append(Op("copy", [g.const("zero", [0.0], "f32")], [loss]))
  optimizer = {"kind": "sgd", "momentum": 0.0, "b1": 0.9, "b2": 0.999, "eps": 1e-08,
               "schedule": "constant", "lr": 0.1, "steps": 0, "final": 0.0}
  return Program(g, ops, infer, {"input": x, "label": label, "loss": loss,
                                 "logits": logits}, optimizer, "nearest", 0)


def test_bottleneck_check_agrees_with_the_reference(lib) -> None:
  """Random geometries, paddings as large as the kernels: where the C verifier accepts the
  op, the reference runs it and the C output is its own; where the reference refuses
  (or its band slicing leaves the whole-tensor result), the verifier must refuse."""
  from lowering.blob import BlobError, encode
  from lowering.cruntime import CRuntime

  rng = np.random.default_rng(70)
  accepted = refused = 0
  for _ in range(150):
    h, w = (int(v) for v in rng.integers(1, 7, size=2))
    ke, kd = (tuple(int(v) for v in rng.integers(1, 4, size=2)) for _ in range(2))
    es, ds = (tuple(int(v) for v in rng.integers(1, 4, size=2)) for _ in range(2))
    ep = tuple((int(rng.integers(0, ke[a] + 2)), int(rng.integers(0, ke[a] + 1))) for a in (0, 1))
    dp = tuple((int(rng.integers(0, kd[a] + 1)), int(rng.integers(0, kd[a] + 1))) for a in (0, 1))
    prog = bottleneck_program(rng, h, w, ke, es, ep, kd, ds, dp)
    if prog is None:
      continue
    x8 = rand_i8(rng, (h, w, 2))
    try:
      want = prog.infer(x8)
    except (ValueError, IndexError):
      want = None
    op = prog.infer_ops[0]
    if want is not None:  # the reference ran: did it compute the three convs whole?
      a = {k: op.attrs[k] for k in op.attrs}
      ws = [prog.graph.tensors[t].data for t in op.inputs[1:]]
      e = K.conv2d(x8[None], *ws[0:3], a["e_strides"], a["e_padding"], 1, 0, -3)
      d = K.conv2d(e, *ws[3:6], a["d_strides"], a["d_padding"], 3, -3, 2)
      whole = K.conv2d(d, *ws[6:9], (1, 1), K.NO_PADDING, 1, 2, 0).reshape(1, -1)
      if not np.array_equal(whole[0], want):
        want = None
    try:
      rt = CRuntime(encode(prog, "current"))
    except BlobError as err:
      # Refused by design though the reference may run it: geometries where some output
      # row's depthwise window lies wholly in the padding (an empty band), or where the
      # input rows kernels._rows slices for a band are not a proper slice (x[:, lo:hi]
      # with hi < 0 or lo > H); the reference then raises, or computes on mis-sliced rows
      # and is right or wrong by accident.
      e_rows = K.out_size(h, ke[0], es[0], ep[0])
      d_rows = prog.graph.tensors[op.outputs[0]].shape[1]
      last_top = (d_rows - 1) * ds[0] - dp[0][0]
      stop0 = min(kd[0] - dp[0][0], e_rows)
      improper = ((stop0 - 1) * es[0] - ep[0][0] + ke[0] < 0
                  or max(last_top, 0) * es[0] - ep[0][0] > h)
      outside = kd[0] <= dp[0][0] or last_top >= e_rows or improper
      assert want is None or outside, f"refused: {err} {(h, w, ke, es, ep, kd, ds, dp)}"
      refused += 1
      continue
    assert want is not None, (h, w, ke, es, ep, kd, ds, dp)
    assert same_bits(rt.infer(x8), want)
    accepted += 1
  assert accepted > 30 and refused > 5, (accepted, refused)
