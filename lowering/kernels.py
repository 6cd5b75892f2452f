"""Numpy reference kernels of jaxtiny's int8 forward ops: the living definition.

Every function here states the exact arithmetic of one op (see docs/numerics.md). They are
written independently of the JAX primitives (`jaxtiny.primitives`), which are tested
against them bit for bit, and they are what the reference executor runs.

Conventions:
- Layouts are batch-first: activations NHWC (1-D signals have H = 1) or (N, K);
  convolution weights OHWI with I = C_in / groups; dense weights (O, K).
- Tensors are real integer arrays: int8 activations and weights, int32 biases (never
  float carriers). Sums are formed in int64 and must fit int32 exactly; a sum that does
  not fit raises OverflowError rather than wrapping.
- Multipliers are float32. The only float arithmetic of an op is `f32(acc) * m` followed
  by one round-half-to-even (`np.rint`) per output element.
- A padding is ((top, bottom), (left, right)), strides are (sh, sw), windows (kh, kw).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

Pair = tuple[int, int]
Padding = tuple[Pair, Pair]


# --- argument checks -------------------------------------------------------------------

def _int8_array(x: np.ndarray, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype != np.int8:
    raise TypeError(f"{name} must be an int8 array, got {x.dtype}")
  return x


def _int32_array(x: np.ndarray, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype != np.int32:
    raise TypeError(f"{name} must be an int32 array, got {x.dtype}")
  return x


def _int8_value(v: int, name: str) -> int:
  if not INT8_MIN <= int(v) <= INT8_MAX or int(v) != v:
    raise ValueError(f"{name} = {v} is not an int8 value")
  return int(v)


def _multiplier(m: float | np.ndarray) -> np.ndarray:
  # A float64 multiplier is rounded to float32 here, exactly once.
  m = np.asarray(m, np.float32)
  if not np.all(np.isfinite(m)):
    raise ValueError("multipliers must be finite")
  return m


def _exact_int32(acc: np.ndarray, what: str) -> np.ndarray:
  """int64 -> int32 for a sum that the contract says is exact in int32."""
  if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
    raise OverflowError(f"{what} leaves the int32 range: [{acc.min()}, {acc.max()}]")
  return acc.astype(np.int32)


def out_size(size: int, k: int, stride: int, pad: Pair) -> int:
  """Output length of a window op: floor((size + pad0 + pad1 - k) / stride) + 1."""
  return (size + pad[0] + pad[1] - k) // stride + 1


def _window_geometry(x: np.ndarray, window: Pair, strides: Pair,
                     padding: Padding) -> tuple[int, int]:
  if x.ndim != 4:
    raise ValueError(f"expected an NHWC tensor, got shape {x.shape}")
  if min(window) < 1 or min(strides) < 1 or min(p for pair in padding for p in pair) < 0:
    raise ValueError(f"bad window {window}, strides {strides} or padding {padding}")
  ho = out_size(x.shape[1], window[0], strides[0], padding[0])
  wo = out_size(x.shape[2], window[1], strides[1], padding[1])
  if ho < 1 or wo < 1:
    raise ValueError(f"window {window} with padding {padding} does not fit {x.shape}")
  return ho, wo


def _taps(xp: np.ndarray, window: Pair, strides: Pair,
          out_hw: Pair) -> Iterator[tuple[int, int, np.ndarray]]:
  """For every window tap (i, j): the (N, Ho, Wo, C) view of the padded input it reads.

  Output position (y, x) reads padded input (y * sh + i, x * sw + j) at tap (i, j).
  """
  (sh, sw), (ho, wo) = strides, out_hw
  for i in range(window[0]):
    for j in range(window[1]):
      yield i, j, xp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]


def _pad_hw(x: np.ndarray, padding: Padding, value: int) -> np.ndarray:
  return np.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)),
                constant_values=value)


# --- the two arithmetic building blocks -------------------------------------------------

def requantize(acc_int: np.ndarray, m_f32: float | np.ndarray, y_zero: int, lo: int = INT8_MIN,
               hi: int = INT8_MAX) -> np.ndarray:
  """y = clamp(rne(f32(acc) * m), lo - y_zero, hi - y_zero) + y_zero, as int8.

  acc_int: integers in [-2**31, 2**31 - 1] (any integer dtype). f32(acc) rounds to nearest
  even, so an |acc| above 2**24 may lose its low bits: that rounding is part of the
  contract. m_f32: float32 (broadcast against acc). rne is round-half-to-even. y_zero, lo,
  hi: int8 values with lo <= hi; the clamp happens in float, before any float->int cast,
  so an out-of-range product never reaches a conversion.
  """
  acc = np.asarray(acc_int)
  if not np.issubdtype(acc.dtype, np.integer):
    raise TypeError(f"accumulator must be an integer array, got {acc.dtype}")
  acc = _exact_int32(acc.astype(np.int64), "accumulator")
  y_zero, lo, hi = (_int8_value(v, n) for v, n in ((y_zero, "y_zero"), (lo, "lo"), (hi, "hi")))
  if lo > hi:
    raise ValueError(f"clamp bounds lo={lo} > hi={hi}")
  prod = np.multiply(acc.astype(np.float32), _multiplier(m_f32), dtype=np.float32)
  t = np.clip(np.rint(prod), np.float32(lo - y_zero), np.float32(hi - y_zero))
  return (t.astype(np.int32) + y_zero).astype(np.int8)


def sat_add_int32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """a + b for int32 values, saturated to [-2**31, 2**31 - 1] instead of wrapping.

  Needed because imported models carry biases of +-2**31 in dead channels.
  """
  a64, b64 = np.asarray(a).astype(np.int64), np.asarray(b).astype(np.int64)
  _exact_int32(a64, "sat_add_int32 operand")
  _exact_int32(b64, "sat_add_int32 operand")
  return np.clip(a64 + b64, INT32_MIN, INT32_MAX).astype(np.int32)


# --- convolution (groups: 1 = ordinary, C_in = depthwise) ------------------------------

def conv2d_acc(x: np.ndarray, w: np.ndarray, b: np.ndarray, strides: Pair, padding: Padding,
               groups: int, x_zero: int) -> np.ndarray:
  """The int32 accumulator of `conv2d`, shape (N, Ho, Wo, O).

  acc[n, y, x, o] = sat_add_int32(S, b[o]) with
  S = sum over (i, j, c) of (xpad[n, y*sh + i, x*sw + j, g*I + c] - x_zero) * w[o, i, j, c],
  g = o // (O / groups), I = C_in / groups, and padded positions contributing 0.
  S must be exact int32 (|S| <= kh*kw*I * 255 * 127); OverflowError otherwise.
  """
  x, w, b = _int8_array(x, "x"), _int8_array(w, "w"), _int32_array(b, "b")
  x_zero = _int8_value(x_zero, "x_zero")
  if w.ndim != 4:
    raise ValueError(f"conv weight must be OHWI, got shape {w.shape}")
  if x.ndim != 4:
    raise ValueError(f"conv input must be NHWC, got shape {x.shape}")
  o, kh, kw, ci = w.shape
  n, c = x.shape[0], x.shape[3]
  if groups < 1 or c != ci * groups or o % groups:
    raise ValueError(f"conv: input {x.shape}, weight {w.shape} and groups={groups} disagree")
  if b.shape != (o,):
    raise ValueError(f"conv: bias shape {b.shape} must be ({o},)")
  ho, wo = _window_geometry(x, (kh, kw), strides, padding)
  # Padding holds x_zero, so after subtracting x_zero it contributes 0.
  xp = _pad_hw(x.astype(np.int64) - x_zero, padding, 0)
  og = o // groups
  wg = w.astype(np.int64).reshape(groups, og, kh, kw, ci)
  acc = np.zeros((n, ho, wo, groups, og), np.int64)
  for i, j, tap in _taps(xp, (kh, kw), strides, (ho, wo)):
    acc += np.einsum("nyxgc,goc->nyxgo", tap.reshape(n, ho, wo, groups, ci), wg[:, :, i, j, :])
  s = _exact_int32(acc.reshape(n, ho, wo, o), "conv product sum")
  return sat_add_int32(s, b)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, m: np.ndarray, strides: Pair,
           padding: Padding, groups: int, x_zero: int, y_zero: int, lo: int = INT8_MIN,
           hi: int = INT8_MAX) -> np.ndarray:
  """Quantized 2-D convolution: y[..., o] = requantize(acc[..., o], m[o], y_zero, lo, hi).

  x: int8 (N, H, W, C_in); w: int8 (O, kh, kw, C_in / groups), symmetric in [-127, 127];
  b: int32 (O,); m: float32 (O,); acc as in `conv2d_acc`. Depthwise is groups = C_in
  (O = k * C_in for a channel multiplier k; output o reads input channel o // k).
  Returns int8 (N, Ho, Wo, O), Ho = floor((H + top + bottom - kh) / sh) + 1.
  """
  m = _multiplier(m)
  if m.shape != (np.asarray(w).shape[0],):
    raise ValueError(f"conv: multiplier shape {m.shape} must be (O,)")
  acc = conv2d_acc(x, w, b, strides, padding, groups, x_zero)
  return requantize(acc, m, y_zero, lo, hi)


# --- dense -----------------------------------------------------------------------------

def dense_acc(x: np.ndarray, w: np.ndarray, b: np.ndarray, x_zero: int) -> np.ndarray:
  """acc[n, o] = sat_add_int32(sum_k (x[n, k] - x_zero) * w[o, k], b[o]), int32 (N, O).

  The product sum must be exact int32; OverflowError otherwise.
  """
  x, w, b = _int8_array(x, "x"), _int8_array(w, "w"), _int32_array(b, "b")
  x_zero = _int8_value(x_zero, "x_zero")
  if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1] or b.shape != (w.shape[0],):
    raise ValueError(f"dense: input {x.shape}, weight {w.shape}, bias {b.shape} disagree")
  s = (x.astype(np.int64) - x_zero) @ w.astype(np.int64).T
  return sat_add_int32(_exact_int32(s, "dense product sum"), b)


def dense(x: np.ndarray, w: np.ndarray, b: np.ndarray, m: np.ndarray, x_zero: int,
          y_zero: int, lo: int = INT8_MIN, hi: int = INT8_MAX) -> np.ndarray:
  """Fully connected layer: y[n, o] = requantize(acc[n, o], m[o], y_zero, lo, hi).

  x: int8 (N, K); w: int8 (O, K) in [-127, 127]; b: int32 (O,); m: float32 (O,);
  acc as in `dense_acc`. Returns int8 (N, O).
  """
  m = _multiplier(m)
  if m.shape != (np.asarray(w).shape[0],):
    raise ValueError(f"dense: multiplier shape {m.shape} must be (O,)")
  return requantize(dense_acc(x, w, b, x_zero), m, y_zero, lo, hi)


# --- residual add ----------------------------------------------------------------------

def add(a: np.ndarray, b: np.ndarray, a_zero: int, b_zero: int, a_mult: int, b_mult: int,
        m: float, y_zero: int, lo: int = INT8_MIN, hi: int = INT8_MAX) -> np.ndarray:
  """y = requantize((a - a_zero) * a_mult + (b - b_zero) * b_mult, m, y_zero, lo, hi).

  a, b: int8 of one shape; a_mult, b_mult: integers (at most 2**15 from
  `numerics.add_multipliers`, so |acc| < 2**24 and f32(acc) is exact); m: float32 scalar.
  The integer sum must fit int32; OverflowError otherwise. Returns int8 of a's shape.
  """
  a, b = _int8_array(a, "a"), _int8_array(b, "b")
  if a.shape != b.shape:
    raise ValueError(f"add: shapes {a.shape} and {b.shape} differ")
  a_zero, b_zero = _int8_value(a_zero, "a_zero"), _int8_value(b_zero, "b_zero")
  acc = (a.astype(np.int64) - a_zero) * int(a_mult) + (b.astype(np.int64) - b_zero) * int(b_mult)
  return requantize(_exact_int32(acc, "add accumulator"), np.float32(m), y_zero, lo, hi)


# --- pooling ---------------------------------------------------------------------------

def avgpool_acc(x: np.ndarray, window: Pair, strides: Pair, padding: Padding,
                x_zero: int) -> np.ndarray:
  """acc[n, y, x, c] = sum over the window of (xpad - x_zero), padding contributing 0.

  int32 (N, Ho, Wo, C); |acc| <= kh * kw * 255.
  """
  x = _int8_array(x, "x")
  x_zero = _int8_value(x_zero, "x_zero")
  ho, wo = _window_geometry(x, window, strides, padding)
  xp = _pad_hw(x.astype(np.int64) - x_zero, padding, 0)
  acc = np.zeros((x.shape[0], ho, wo, x.shape[3]), np.int64)
  for _, _, tap in _taps(xp, window, strides, (ho, wo)):
    acc += tap
  return _exact_int32(acc, "avgpool window sum")


def avgpool(x: np.ndarray, m: float | np.ndarray, window: Pair, strides: Pair,
            padding: Padding, x_zero: int, y_zero: int, lo: int = INT8_MIN,
            hi: int = INT8_MAX) -> np.ndarray:
  """Average pool: y[n, y, x, c] = requantize(acc[n, y, x, c], m[y, x], y_zero, lo, hi).

  x: int8 NHWC; acc as in `avgpool_acc`; m: float32 scalar (typically s_x / (s_y * kh*kw))
  or an (Ho, Wo) array, one multiplier per output position (e.g. when the divisor counts
  only the unpadded elements). A global pool is window = (H, W). Returns int8 (N, Ho, Wo, C).
  """
  acc = avgpool_acc(x, window, strides, padding, x_zero)
  m = _multiplier(m)
  if m.ndim:
    if m.shape != acc.shape[1:3]:
      raise ValueError(f"avgpool: multiplier shape {m.shape} must be () or {acc.shape[1:3]}")
    m = m[None, :, :, None]
  return requantize(acc, m, y_zero, lo, hi)


def maxpool(x: np.ndarray, window: Pair, strides: Pair, padding: Padding) -> np.ndarray:
  """y[n, y, x, c] = max over the window of xpad, with padding holding -128.

  Padding therefore never wins (it can at most tie with a real -128, or fill a window that
  lies wholly in the padding). No requantization: the output keeps x's scale and zero
  point. x: int8 NHWC; returns int8 (N, Ho, Wo, C).
  """
  x = _int8_array(x, "x")
  ho, wo = _window_geometry(x, window, strides, padding)
  xp = _pad_hw(x, padding, INT8_MIN)
  y = np.full((x.shape[0], ho, wo, x.shape[3]), INT8_MIN, np.int8)
  for _, _, tap in _taps(xp, window, strides, (ho, wo)):
    np.maximum(y, tap, out=y)
  return y


# --- element-wise requantization, concatenation, reshape -------------------------------

def requant(x: np.ndarray, x_zero: int, m: float, y_zero: int, lo: int = INT8_MIN,
            hi: int = INT8_MAX) -> np.ndarray:
  """y = requantize(x - x_zero, m, y_zero, lo, hi): a standalone clamp or rescale.

  x: int8 of any shape; m: float32 scalar; |x - x_zero| <= 255. Returns int8 of x's shape.
  """
  x = _int8_array(x, "x")
  x_zero = _int8_value(x_zero, "x_zero")
  return requantize(x.astype(np.int32) - x_zero, np.float32(m), y_zero, lo, hi)


def concat(xs: Sequence[np.ndarray], axis: int, zeros: Sequence[int], mults: Sequence[float],
           y_zero: int) -> np.ndarray:
  """y = concatenate_i(requantize(xs[i] - zeros[i], mults[i], y_zero, -128, 127), axis).

  xs: int8 arrays equal in every dimension but `axis`, which is a non-batch axis
  (0 < axis < ndim); zeros: int8 zero points; mults: float32 scalars s_i / s_y. An input
  whose zero point equals y_zero and whose multiplier is 1.0 comes out unchanged.
  """
  if len(xs) != len(zeros) or len(xs) != len(mults) or not xs:
    raise ValueError("concat: need one zero point and one multiplier per input")
  ndim = np.asarray(xs[0]).ndim
  if not 0 < axis < ndim:
    raise ValueError(f"concat: axis {axis} must be a non-batch axis of a {ndim}-D tensor")
  parts = [requant(x, z, m, y_zero) for x, z, m in zip(xs, zeros, mults, strict=True)]
  return np.concatenate(parts, axis=axis)


def reshape(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
  """Reshape every batch element to `shape` (row-major); values and quantization unchanged.

  x: int8 (N, ...); returns int8 (N, *shape).
  """
  x = _int8_array(x, "x")
  shape = tuple(int(d) for d in shape)
  if int(np.prod(shape)) != int(np.prod(x.shape[1:])):
    raise ValueError(f"reshape: cannot reshape {x.shape[1:]} to {shape}")
  return x.reshape((x.shape[0], *shape))
