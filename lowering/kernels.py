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

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from lowering import mathf

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

Pair = tuple[int, int]
Padding = tuple[Pair, Pair]
NO_PADDING: Padding = ((0, 0), (0, 0))


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


def _rows(x: np.ndarray, first: int, stop: int, k: int, stride: int,
          padding: Padding) -> tuple[np.ndarray, Padding]:
  """The input rows (and vertical padding) that output rows [first, stop) of a conv read."""
  top = first * stride - padding[0][0]
  end = (stop - 1) * stride - padding[0][0] + k
  lo, hi = max(top, 0), min(end, x.shape[1])
  return x[:, lo:hi], ((lo - top, end - hi), padding[1])


def bottleneck_rows_ok(h: int, ke: int, se: int, pe: Pair, kd: int, sd: int, pd: Pair) -> bool:
  """Whether `bottleneck` is defined for this row geometry: every output row's band of
  expanded rows is non-empty and reads a real slice of the input rows (h input rows; the
  expand conv's kernel height, stride and vertical padding; the depthwise conv's). Other
  geometries (a band wholly in the padding) are not banded; the C verifier refuses them."""
  e_rows = out_size(h, ke, se, pe)
  d_rows = out_size(e_rows, kd, sd, pd)
  if e_rows < 1 or d_rows < 1:
    return False
  for r in range(d_rows):
    top = r * sd - pd[0]
    first, stop = max(top, 0), min(top + kd, e_rows)
    x_top, x_end = first * se - pe[0], (stop - 1) * se - pe[0] + ke
    if first >= stop or x_end < 0 or max(x_top, 0) > h:
      return False
  return True


def bottleneck_band_bytes(e_shape: Sequence[int], d_shape: Sequence[int], k: int) -> int:
  """Scratch of `bottleneck`: k rows of the expanded tensor and one row of the depthwise
  output (shapes NHWC, batch 1)."""
  return k * e_shape[2] * e_shape[3] + d_shape[2] * d_shape[3]


def bottleneck(x: np.ndarray, expand: dict, depthwise: dict, project: dict,
               scratch: np.ndarray | None = None) -> np.ndarray:
  """An inverted bottleneck (conv -> depthwise conv -> 1x1 conv), one output row at a time.

  Each dict holds one `conv2d`'s arguments but x and groups (w, b, m, strides, padding,
  x_zero, y_zero, lo, hi). For every output row, the expanded rows the depthwise conv reads
  are computed into `scratch` (int8, `bottleneck_band_bytes`), then one depthwise row, then
  one projected row, so neither the expanded tensor nor the depthwise output ever exists
  in full. Bit-identical to the three convs run whole (each output element has the same
  exact int32 sum; padding contributes the zero point either way). Batch 1.
  """
  x = _int8_array(x, "x")
  kd = depthwise["w"].shape[1]
  ch = expand["w"].shape[0]
  e_rows = out_size(x.shape[1], expand["w"].shape[1], expand["strides"][0],
                    expand["padding"][0])
  e_cols = out_size(x.shape[2], expand["w"].shape[2], expand["strides"][1],
                    expand["padding"][1])
  d_rows = out_size(e_rows, kd, depthwise["strides"][0], depthwise["padding"][0])
  d_cols = out_size(e_cols, depthwise["w"].shape[2], depthwise["strides"][1],
                    depthwise["padding"][1])
  need = bottleneck_band_bytes((1, e_rows, e_cols, ch), (1, d_rows, d_cols, ch), kd)
  if not bottleneck_rows_ok(x.shape[1], expand["w"].shape[1], expand["strides"][0],
                            expand["padding"][0], kd, depthwise["strides"][0],
                            depthwise["padding"][0]):
    raise ValueError("bottleneck: a band of this row geometry lies wholly in the padding")
  if scratch is None:
    scratch = np.empty(need, np.int8)
  if x.shape[0] != 1 or scratch.size < need:
    raise ValueError(f"bottleneck: batch 1 and {need} scratch bytes needed, got batch "
                     f"{x.shape[0]} and {scratch.size} bytes")
  band = scratch.view(np.int8)[:kd * e_cols * ch].reshape(kd, e_cols, ch)
  d_row = scratch.view(np.int8)[kd * e_cols * ch:need].reshape(1, 1, d_cols, ch)
  out = []
  for r in range(d_rows):
    top = r * depthwise["strides"][0] - depthwise["padding"][0][0]
    first, stop = max(top, 0), min(top + kd, e_rows)
    xs, pad = _rows(x, first, stop, expand["w"].shape[1], expand["strides"][0],
                    expand["padding"])
    band[:stop - first] = conv2d(xs, **{**expand, "padding": pad}, groups=1)[0]
    pad = ((first - top, top + kd - stop), depthwise["padding"][1])
    d_row[...] = conv2d(band[None, :stop - first], **{**depthwise, "padding": pad,
                        "strides": (1, depthwise["strides"][1])}, groups=ch)
    out.append(conv2d(d_row, **project, groups=1))
  return np.concatenate(out, axis=1)


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


# --- backward (fp32) ---------------------------------------------------------------------
#
# The straight-through backward pass of the ops above (DESIGN.md, "Training contract"):
# rounding is the identity, a clamp passes the gradient only strictly inside its range.
# Gradients are float32 arrays taken with respect to the integer values (one unit = one
# quantization step); activations, weights and outputs are the real int8 arrays of the
# forward pass. Unlike the forward ops these are not bit-exact across implementations:
# each sum is accumulated in float32 in the order its docstring states (that of a plain
# C loop: one running float32 sum, terms added one at a time, no fused multiply-add), and
# other implementations agree within a tolerance.

def _grad_array(g: np.ndarray, name: str) -> np.ndarray:
  g = np.asarray(g)
  if g.dtype != np.float32:
    raise TypeError(f"{name} must be a float32 gradient, got {g.dtype}")
  return g


def _running_sum(terms: np.ndarray) -> np.ndarray:
  """Sum over axis 0, left to right in float32: ((t0 + t1) + t2) + ... (no pairwise tree)."""
  if terms.shape[0] == 0:
    return np.zeros(terms.shape[1:], np.float32)
  return np.add.accumulate(terms, axis=0, dtype=np.float32)[-1]


def _bw_multiplier(m: float | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """M as () per tensor, (C,) per channel (last axis) or (Ho, Wo) per position (NHWC)."""
  m = _multiplier(m)
  if m.ndim == 0:
    return m
  if m.ndim == 1 and m.shape[0] == shape[-1]:
    return m
  if m.ndim == 2 and len(shape) == 4 and m.shape == shape[1:3]:
    return m[None, :, :, None]
  raise ValueError(f"multiplier shape {m.shape} fits neither () nor per channel nor per "
                   f"position of a gradient {shape}")


def requant_bw(g: np.ndarray, y: np.ndarray, m: float | np.ndarray, lo: int,
               hi: int) -> np.ndarray:
  """d acc = g * M * [lo < y < hi]: the gradient at a requantization's int32 input.

  g: float32, the gradient at the int8 output y (same shape); m: float32 scalar, per
  channel (C,) or per position (Ho, Wo). An output that sits on the clamp (y == lo or
  y == hi, saturated or cut by a fused ReLU) passes nothing. One float32 multiply per
  element.
  """
  g, y = _grad_array(g, "g"), _int8_array(y, "y")
  if g.shape != y.shape:
    raise ValueError(f"requant_bw: gradient {g.shape} and output {y.shape} differ")
  lo, hi = _int8_value(lo, "lo"), _int8_value(hi, "hi")
  inside = (y > lo) & (y < hi)
  prod = np.multiply(g, _bw_multiplier(m, g.shape), dtype=np.float32)
  return np.where(inside, prod, np.float32(0))


def _conv_bw_geometry(g: np.ndarray, in_shape: Sequence[int], kernel: Pair, strides: Pair,
                      padding: Padding) -> tuple[int, int]:
  if g.ndim != 4 or len(in_shape) != 3:
    raise ValueError(f"expected an NHWC gradient and an (H, W, C) input, got {g.shape}, "
                     f"{tuple(in_shape)}")
  probe = np.empty((1, in_shape[0], in_shape[1], 0), np.int8)
  ho, wo = _window_geometry(probe, kernel, strides, padding)
  if (ho, wo) != g.shape[1:3]:
    raise ValueError(f"gradient {g.shape} does not match a {kernel} window over "
                     f"{tuple(in_shape)} with strides {strides} and padding {padding}")
  return ho, wo


def conv2d_bw_input(g_acc: np.ndarray, w: np.ndarray, strides: Pair, padding: Padding,
                    groups: int, in_shape: Sequence[int]) -> np.ndarray:
  """d x = the transposed convolution of d acc with the int8 weight.

  dx[n, y*sh + i - top, x*sw + j - left, g*I + c] += d acc[n, y, x, o] * w[o, i, j, c]
  for every output position (y, x), tap (i, j) and output channel o of group g
  (I = C_in / groups); gradients that land in the padding are dropped.
  g_acc: float32 (N, Ho, Wo, O); w: int8 OHWI; in_shape: (H, W, C_in).
  Returns float32 (N, H, W, C_in).
  Order: one running float32 sum per input element, over taps (i, j) in row-major order,
  then over output channels o ascending.
  """
  g, w = _grad_array(g_acc, "g_acc"), _int8_array(w, "w")
  if w.ndim != 4:
    raise ValueError(f"conv weight must be OHWI, got shape {w.shape}")
  o, kh, kw, ci = w.shape
  h, wd, c = (int(d) for d in in_shape)
  if groups < 1 or c != ci * groups or o % groups or g.shape[-1:] != (o,):
    raise ValueError(f"conv2d_bw_input: gradient {g.shape}, weight {w.shape}, input "
                     f"{tuple(in_shape)} and groups={groups} disagree")
  ho, wo = _conv_bw_geometry(g, (h, wd, c), (kh, kw), strides, padding)
  (pt, pb), (pl, pr) = padding
  og = o // groups
  wf = w.astype(np.float32)
  gxp = np.zeros((g.shape[0], h + pt + pb, wd + pl + pr, c), np.float32)
  for i, j, tap in _taps(gxp, (kh, kw), strides, (ho, wo)):
    for oc in range(o):
      grp = oc // og
      tap[..., grp * ci:(grp + 1) * ci] += g[..., oc:oc + 1] * wf[oc, i, j, :]
  return gxp[:, pt:pt + h, pl:pl + wd, :]


def conv2d_bw_weight(g_acc: np.ndarray, x: np.ndarray, strides: Pair, padding: Padding,
                     groups: int, x_zero: int, kernel: Pair,
                     channels: Sequence[int] | None = None) -> np.ndarray:
  """d w[o, i, j, c] = sum over n, y, x of d acc[n, y, x, o] * (xpad - x_zero)[n, y*sh + i,
  x*sw + j, g*I + c], g = o // (O / groups), padded positions contributing 0.

  g_acc: float32 (N, Ho, Wo, O); x: int8 (N, H, W, C_in); kernel: (kh, kw).
  channels None: every weight, float32 (O, kh, kw, C_in / groups). Otherwise a sorted
  list of channels: for groups == 1 the weights reading those input channels,
  (O, kh, kw, len); for a depthwise conv (groups == C_in == O) the weights of those
  channels, (len, kh, kw, 1). Other grouped convolutions only train whole.
  Order: one running float32 sum per weight element over the output positions (n, y, x)
  in row-major order.
  """
  g, x = _grad_array(g_acc, "g_acc"), _int8_array(x, "x")
  x_zero = _int8_value(x_zero, "x_zero")
  if x.ndim != 4:
    raise ValueError(f"conv input must be NHWC, got shape {x.shape}")
  kh, kw = (int(k) for k in kernel)
  n, c, o = x.shape[0], x.shape[3], g.shape[-1]
  if groups < 1 or c % groups or o % groups or g.shape[0] != n:
    raise ValueError(f"conv2d_bw_weight: gradient {g.shape}, input {x.shape} and "
                     f"groups={groups} disagree")
  ho, wo = _conv_bw_geometry(g, x.shape[1:], (kh, kw), strides, padding)
  xs = x.astype(np.float32) - np.float32(x_zero)  # exact: |x - z| <= 255
  if channels is not None:
    chans = np.asarray(channels, np.int64)
    if groups > 1 and groups == c == o:  # depthwise: the selected channels, one group each
      xs, g, groups = xs[..., chans], g[..., chans], len(chans)
    elif groups == 1:
      xs = xs[..., chans]
    else:
      raise ValueError("conv2d_bw_weight: channel selection needs groups == 1 or depthwise")
  o, c = g.shape[-1], xs.shape[-1]
  og, ci = o // groups, c // groups
  xp = _pad_hw(xs, padding, 0)
  gp = g.reshape(n * ho * wo, groups, og)
  gw = np.zeros((o, kh, kw, ci), np.float32)
  for i, j, tap in _taps(xp, (kh, kw), strides, (ho, wo)):
    xt = tap.reshape(n * ho * wo, groups, ci)
    terms = gp[:, :, :, None] * xt[:, :, None, :]  # (positions, groups, og, ci)
    gw[:, i, j, :] = _running_sum(terms).reshape(o, ci)
  return gw


def bias_bw(g_acc: np.ndarray) -> np.ndarray:
  """d b[c] = sum of d acc[..., c] over the batch and every position.

  g_acc: float32 (N, ..., C); returns float32 (C,). Order: one running float32 sum per
  channel over the leading indices in row-major order.
  """
  g = _grad_array(g_acc, "g_acc")
  return _running_sum(g.reshape(-1, g.shape[-1]))


def dense_bw_input(g_acc: np.ndarray, w: np.ndarray) -> np.ndarray:
  """d x[n, k] = sum over o of d acc[n, o] * w[o, k].

  g_acc: float32 (N, O); w: int8 (O, K); returns float32 (N, K). Order: one running
  float32 sum per element over o ascending.
  """
  g, w = _grad_array(g_acc, "g_acc"), _int8_array(w, "w")
  if g.ndim != 2 or w.ndim != 2 or g.shape[1] != w.shape[0]:
    raise ValueError(f"dense_bw_input: gradient {g.shape} and weight {w.shape} disagree")
  terms = g.T[:, :, None] * w.astype(np.float32)[:, None, :]  # (O, N, K)
  return _running_sum(terms)


def dense_bw_weight(g_acc: np.ndarray, x: np.ndarray, x_zero: int,
                    channels: Sequence[int] | None = None) -> np.ndarray:
  """d w[o, k] = sum over n of d acc[n, o] * (x[n, k] - x_zero), for k in `channels`.

  g_acc: float32 (N, O); x: int8 (N, K); channels: sorted input indices or None (all).
  Returns float32 (O, K) or (O, len(channels)). Order: one running float32 sum per element
  over the batch index n ascending.
  """
  g, x = _grad_array(g_acc, "g_acc"), _int8_array(x, "x")
  x_zero = _int8_value(x_zero, "x_zero")
  if g.ndim != 2 or x.ndim != 2 or g.shape[0] != x.shape[0]:
    raise ValueError(f"dense_bw_weight: gradient {g.shape} and input {x.shape} disagree")
  xs = x.astype(np.float32) - np.float32(x_zero)
  if channels is not None:
    xs = xs[:, np.asarray(channels, np.int64)]
  return _running_sum(g[:, :, None] * xs[:, None, :])  # (N, O, K) summed over N


def bottleneck_bw(g_acc: np.ndarray, project: dict, depthwise: dict, expand: dict,
                  gx: np.ndarray | None = None,
                  on_channel: Callable[[int, np.ndarray], None] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Backward of an inverted bottleneck (1x1 expand, depthwise, 1x1 project), one expanded
  channel c at a time, so that neither the depthwise output's nor the expanded tensor's
  gradient exists in full.

  g_acc: float32 (1, Ho, Wo, O), the gradient at the project's int32 accumulator.
  project: {"w": int8 (O, 1, 1, C)}; depthwise: {"w": int8 (C, kh, kw, 1), "strides",
  "padding", "y", "m", "lo", "hi"}; expand: {"w": int8 (C, 1, 1, K), "y", "m", "lo", "hi"},
  where y is the layer's int8 output (or a stand-in) whose clamp gates its gradient and m
  its requantization multiplier (scalar or per channel).
  For each c ascending: gd = project input gradient of channel c, through the depthwise
  requantization; ge = depthwise input gradient of gd, through the expand requantization;
  gx (float32 (1, H, W, K), overwritten) += ge * w_expand[c]; then on_channel(c, ge).
  Returns the bias gradients (gd, ge summed over positions), float32 (C,) each.
  Bit-identical to conv2d_bw_input, requant_bw, bias_bw on whole tensors: every sum runs
  in the same order (gx: over channels ascending, as conv2d_bw_input's output channels).
  """
  g = _grad_array(g_acc, "g_acc")
  w3, w2, w1 = (_int8_array(d["w"], f"{n} weight") for d, n in
                ((project, "project"), (depthwise, "depthwise"), (expand, "expand")))
  c = w2.shape[0]
  yd, ye = _int8_array(depthwise["y"], "depthwise y"), _int8_array(expand["y"], "expand y")
  if (g.ndim != 4 or g.shape[0] != 1 or w3.shape != (g.shape[-1], 1, 1, c)
          or w2.shape[3] != 1 or w1.shape[:3] != (c, 1, 1) or yd.shape != (*g.shape[:3], c)
          or ye.ndim != 4 or ye.shape[-1] != c):
    raise ValueError(f"bottleneck_bw: gradient {g.shape}, weights {w3.shape} {w2.shape} "
                     f"{w1.shape} and outputs {yd.shape} {ye.shape} disagree")
  in_shape = (*ye.shape[1:3], 1)
  if gx is not None and gx.shape != (*ye.shape[:3], w1.shape[3]):
    raise ValueError(f"bottleneck_bw: gx {gx.shape} is not the block input's gradient")

  def per_channel(m):  # channel k's multiplier: m_k[k]
    m = _multiplier(m).reshape(-1)
    if m.size not in (1, c):
      raise ValueError(f"bottleneck_bw: multiplier shape {m.shape}, {c} channels")
    return np.broadcast_to(m, (c,))

  m_d, m_e = per_channel(depthwise["m"]), per_channel(expand["m"])

  w1f = w1.astype(np.float32)
  gb_d, gb_e = np.zeros(c, np.float32), np.zeros(c, np.float32)
  if gx is not None:
    gx[...] = 0
  for k in range(c):
    gd = conv2d_bw_input(g, w3[..., k:k + 1], (1, 1), NO_PADDING, 1, (*g.shape[1:3], 1))
    gd = requant_bw(gd, yd[..., k:k + 1], m_d[k], depthwise["lo"], depthwise["hi"])
    gb_d[k] = bias_bw(gd)[0]
    ge = conv2d_bw_input(gd, w2[k:k + 1], depthwise["strides"], depthwise["padding"], 1,
                         in_shape)
    ge = requant_bw(ge, ye[..., k:k + 1], m_e[k], expand["lo"], expand["hi"])
    gb_e[k] = bias_bw(ge)[0]
    if gx is not None:
      gx += ge * w1f[k, 0, 0, :]
    if on_channel is not None:
      on_channel(k, ge)
  return gb_d, gb_e


def add_bw(g: np.ndarray, y: np.ndarray, a_mult: int, b_mult: int, m: float, lo: int,
           hi: int) -> tuple[np.ndarray, np.ndarray]:
  """(d a, d b) = (d acc * m_a, d acc * m_b) with d acc = requant_bw(g, y, m, lo, hi).

  The integer multipliers (at most 2**15) are exact in float32; two multiplies per element.
  """
  g_acc = requant_bw(g, y, np.float32(m), lo, hi)
  return g_acc * np.float32(a_mult), g_acc * np.float32(b_mult)


def avgpool_bw(g: np.ndarray, y: np.ndarray, m: float | np.ndarray, window: Pair,
               strides: Pair, padding: Padding, lo: int, hi: int,
               in_shape: Sequence[int]) -> np.ndarray:
  """d x = every position of a window receives d acc = requant_bw(g, y, m, lo, hi) of its
  output (the window sum has derivative 1 in each element); padding drops its share.

  g: float32 (N, Ho, Wo, C); y: int8 output; m: scalar or (Ho, Wo); in_shape (H, W, C).
  Returns float32 (N, H, W, C). Order: one running float32 sum per input element over the
  window taps (i, j) in row-major order.
  """
  g_acc = requant_bw(g, y, m, lo, hi)
  h, wd, c = (int(d) for d in in_shape)
  ho, wo = _conv_bw_geometry(g_acc, (h, wd, c), window, strides, padding)
  (pt, pb), (pl, pr) = padding
  gxp = np.zeros((g_acc.shape[0], h + pt + pb, wd + pl + pr, c), np.float32)
  for _, _, tap in _taps(gxp, window, strides, (ho, wo)):
    tap += g_acc
  return gxp[:, pt:pt + h, pl:pl + wd, :]


def maxpool_bw(g: np.ndarray, x: np.ndarray, y: np.ndarray, window: Pair, strides: Pair,
               padding: Padding) -> np.ndarray:
  """d x: each output's gradient goes to the first window position, in row-major tap
  order, whose value equals the max y; padding never wins.

  A window lying wholly in the padding (output -128 with no real element) drops its
  gradient. g: float32 (N, Ho, Wo, C); x, y: int8. Returns float32 of x's shape. Order:
  one running float32 sum per input element over the taps (i, j) in row-major order.
  """
  g, x, y = _grad_array(g, "g"), _int8_array(x, "x"), _int8_array(y, "y")
  ho, wo = _window_geometry(x, window, strides, padding)
  if y.shape != (x.shape[0], ho, wo, x.shape[3]) or g.shape != y.shape:
    raise ValueError(f"maxpool_bw: gradient {g.shape}, input {x.shape}, output {y.shape}")
  (pt, _), (pl, _) = padding
  xp = _pad_hw(x.astype(np.int16), padding, INT8_MIN - 1)  # below every int8: never a max
  gxp = np.zeros(xp.shape, np.float32)
  taken = np.zeros(y.shape, bool)
  taps = zip(_taps(xp, window, strides, (ho, wo)), _taps(gxp, window, strides, (ho, wo)))
  for (_, _, xt), (_, _, gt) in taps:
    hit = (xt == y) & ~taken
    taken |= hit
    gt += np.where(hit, g, np.float32(0))
  return gxp[:, pt:pt + x.shape[1], pl:pl + x.shape[2], :]


def concat_bw(g: np.ndarray, y: np.ndarray, axis: int, sizes: Sequence[int],
              mults: Sequence[float], identity: Sequence[bool]) -> list[np.ndarray]:
  """Split g along `axis` into the inputs' parts; input i gets
  requant_bw(g_i, y_i, mults[i], -128, 127), or g_i itself when it was copied unchanged
  (identity[i]: its zero point equals the output's and its multiplier is 1).

  g: float32; y: the int8 output. Returns one float32 gradient per input.
  """
  g, y = _grad_array(g, "g"), _int8_array(y, "y")
  if not 0 < axis < g.ndim or g.shape != y.shape or sum(sizes) != g.shape[axis]:
    raise ValueError(f"concat_bw: gradient {g.shape}, output {y.shape}, axis {axis} and "
                     f"sizes {tuple(sizes)} disagree")
  if not len(sizes) == len(mults) == len(identity):
    raise ValueError("concat_bw: need one size, multiplier and identity flag per input")
  bounds = np.cumsum([0, *sizes])
  parts = []
  for k, (m, same) in enumerate(zip(mults, identity)):
    gk = np.take(g, np.arange(bounds[k], bounds[k + 1]), axis=axis)
    yk = np.take(y, np.arange(bounds[k], bounds[k + 1]), axis=axis)
    parts.append(gk if same else requant_bw(gk, yk, np.float32(m), INT8_MIN, INT8_MAX))
  return parts


def merge_channels(w: np.ndarray, w_sel: np.ndarray, axis: int,
                   channels: Sequence[int]) -> np.ndarray:
  """The full weight of a sparsely trained layer: a copy of the frozen w with
  w[..., channels, ...] (along `axis`) replaced by the trained w_sel.

  w, w_sel: int8 weights differing only in the length of `axis` (len(channels)).
  """
  w, w_sel = _int8_array(w, "w"), _int8_array(w_sel, "w_sel")
  expect = list(w.shape)
  expect[axis] = len(channels)
  if w_sel.shape != tuple(expect):
    raise ValueError(f"merge_channels: trained part {w_sel.shape} != {tuple(expect)}")
  idx: list[slice | np.ndarray] = [slice(None)] * w.ndim
  idx[axis] = np.asarray(channels, np.int64)
  out = w.copy()
  out[tuple(idx)] = w_sel
  return out


# --- the parameter update (jaxtiny.optim.update) ------------------------------------------
# Float32 throughout, in the order jaxtiny's update primitive computes. The transcendental
# functions (cos of a cosine schedule, b**k of Adam) are lowering.mathf's, the C runtime's
# bit for bit (runtime_c/src/jt_update.c); they may differ from XLA's by an ulp.


def learning_rate(kind: str, lr: float, steps: int, final: float, step: int) -> np.float32:
  """constant: lr; cosine: final + (lr - final)/2 * (1 + cos(pi * min(step/steps, 1))).

  float32 throughout but for the amplitude (lr - final)/2, formed in float64 and rounded
  once; cos is mathf.cosf (the C runtime's jt_cosf, bit for bit)."""
  if kind == "constant":
    return np.float32(lr)
  t = np.minimum(np.float32(step) / np.float32(steps), np.float32(1))
  c = np.float32(1) + np.float32(mathf.cosf(np.float32(np.pi) * t))
  return np.float32(np.float32(0.5 * (lr - final)) * c + np.float32(final))


def optimizer_step(kind: str, g: np.ndarray, slots: list[np.ndarray], lr: np.float32,
                   step: int, momentum: float, b1: float, b2: float,
                   eps: float) -> tuple[np.ndarray, list[np.ndarray]]:
  """(real step, new slots) from a float32 gradient in real units: SGD (momentum: one
  slot m), Adam (slots m, v). Elementwise float32 in numpy's evaluation order (the C
  runtime's jt_update_apply repeats it operation for operation); b**k is mathf.powf, sqrt
  the correctly rounded np.sqrt. Non-finite values are returned as they come: the caller
  keeps such an element's old parameter and slots (executor._step)."""
  f = np.float32
  if kind == "sgd":
    if not momentum:
      return lr * g, []
    m = f(momentum) * slots[0] + g
    return lr * m, [m]
  b1f, b2f = f(b1), f(b2)
  m = b1f * slots[0] + (f(1) - b1f) * g
  v = b2f * slots[1] + (f(1) - b2f) * g * g
  k = f(step) + f(1)
  mhat = m / (f(1) - f(mathf.powf(b1f, k)))
  vhat = v / (f(1) - f(mathf.powf(b2f, k)))
  return (lr * mhat) / (np.sqrt(vhat) + f(eps)), [m, v]


def hash_uniform(seed: int, step: int, param: int, n: int, start: int = 0) -> np.ndarray:
  """u in [0, 1) per element index start..start+n-1 (flat, row-major): lowbias32 of seed,
  step, parameter, index."""
  with np.errstate(over="ignore"):
    base = (np.uint32(seed) * np.uint32(0x9E3779B1) + np.uint32(step) * np.uint32(0x85EBCA77)
            + np.uint32(param) * np.uint32(0xC2B2AE3D))
    h = base + np.arange(start, start + n, dtype=np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x7FEB352D)
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x846CA68B)
    h ^= h >> np.uint32(16)
  return (h >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)


def apply_update(p: np.ndarray, delta: np.ndarray, u: np.ndarray | None) -> np.ndarray:
  """int8 weight: clamp(round(w - delta), -127, 127); int32 bias: sat32(b + round(-delta))
  with the step bounded to +-2**30 before the integer cast. round: rne, or floor(v + u)."""
  def rnd(v):
    return np.rint(v) if u is None else np.floor(v + u.reshape(v.shape))

  if p.dtype == np.int8:
    v = p.astype(np.float32) - delta
    return np.clip(rnd(v), -127, 127).astype(np.int8)
  _int32_array(p, "bias")
  step = np.clip(rnd(-delta), np.float32(-(2.0 ** 30)), np.float32(2.0 ** 30)).astype(np.int32)
  return sat_add_int32(p, step)
