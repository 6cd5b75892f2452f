"""jaxtiny's int8 primitives: exact integer kernels behind JAX primitives.

Activations travel as float32 *carriers* holding exact integers (an int8-dtype output
would give JAX's autodiff a float0 tangent and silently cut the backward pass). Each
implementation casts the carriers to integers, computes in exact int32, requantizes with
one float32 multiply and one round-half-to-even per output element, and casts back.
The formulas are written down in docs/numerics.md; `lowering.kernels` holds the numpy
reference they are tested against.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import mlir

from jaxtiny.numerics import ADD_SHIFT, INT8_MAX, INT8_MIN, INT32_MAX, INT32_MIN

F32, I32 = jnp.float32, jnp.int32
# The int32 accumulator sum((x - z) * w) must not overflow: |x - z| <= 255, |w| <= 127.
# (Intermediate terms may wrap: int32 arithmetic is modular, so only the total matters.)
MAX_REDUCTION = INT32_MAX // (255 * 127)

Padding = tuple[tuple[int, int], tuple[int, int]]


def shaped(shape: Sequence[int]) -> jax.core.ShapedArray:
  return jax.core.ShapedArray(tuple(int(d) for d in shape), F32)


def check_carriers(name: str, *avals: jax.core.ShapedArray) -> None:
  for a in avals:
    if a.dtype != F32:
      raise TypeError(f"{name}: int8 tensors travel as float32 carriers, got {a.dtype}")


def _check_bias_multiplier(name: str, b, m, o: int) -> None:
  if b.shape != (o,) or m.shape != (o,):
    raise ValueError(f"{name}: bias {b.shape} and multiplier {m.shape} must be ({o},)")
  # A float32 bias carrier is exact only up to 2**24: trainable biases stay below that.
  _check_operand(name, "the bias", b, (I32, F32))
  _check_operand(name, "the multiplier", m, (F32,))


def _int(x: jax.Array) -> jax.Array:
  """Carrier (or integer array) -> int32; carriers hold exact integers."""
  return x.astype(I32)


def sat_add(a: jax.Array, b: jax.Array) -> jax.Array:
  """int32 a + b, saturating instead of wrapping (imported models carry biases of +-2**31)."""
  r = a + b
  overflow = ((a ^ r) & (b ^ r)) < 0
  return jnp.where(overflow, jnp.where(a < 0, INT32_MIN, INT32_MAX), r)


def requantize(acc: jax.Array, m: jax.Array, y_zero: int, lo: int, hi: int) -> jax.Array:
  """clamp(rne(f32(acc) * m) + y_zero, lo, hi) as a float32 carrier.

  The clamp is applied before the integer conversion so an out-of-range product never
  reaches a float->int cast.
  """
  t = jnp.round(acc.astype(F32) * m)
  t = jnp.clip(t, F32(lo - y_zero), F32(hi - y_zero))
  return (t.astype(I32) + y_zero).astype(F32)


def _check_operand(name: str, what: str, a: jax.core.ShapedArray, dtypes: tuple) -> None:
  if a.dtype not in dtypes:
    raise TypeError(f"{name}: {what} must be {' or '.join(map(str, dtypes))}, got {a.dtype}")


def register(p: Primitive, impl, abstract_eval) -> Primitive:
  # Eager calls run the implementation compiled once per shape and parameters (rather
  # than op by op), after the same checks a traced call gets from the abstract eval.
  static = [k for k, v in inspect.signature(impl).parameters.items() if v.kind == v.KEYWORD_ONLY]
  compiled = jax.jit(impl, static_argnames=static)

  def eager(*args, **params):
    abstract_eval(*(jax.typeof(a) for a in args), **params)
    return compiled(*args, **params)

  p.def_impl(eager)
  p.def_abstract_eval(abstract_eval)
  mlir.register_lowering(p, mlir.lower_fun(impl, multiple_results=p.multiple_results))
  return p


def conv_out_size(size: int, k: int, stride: int, pad: tuple[int, int]) -> int:
  return (size + pad[0] + pad[1] - k) // stride + 1


# --- conv2d (groups: 1 = dense conv, C = depthwise) -----------------------------------

qconv2d_p = Primitive("jt_qconv2d")


def is_depthwise(groups: int, in_channels: int, out_channels: int) -> bool:
  """One filter per channel: groups == C_in == C_out (an OHWI weight of shape (C, kh, kw, 1))."""
  return groups > 1 and groups == in_channels == out_channels


def _depthwise_taps(xi, wi, strides, out_hw):
  """Depthwise int32 product sum as kh*kw shifted multiply-adds (XLA's grouped integer
  convolution is slow on CPU for many groups; this is the same exact sum)."""
  ho, wo = out_hw
  acc = jnp.zeros((xi.shape[0], ho, wo, wi.shape[0]), I32)
  for i in range(wi.shape[1]):
    for j in range(wi.shape[2]):
      tap = xi[:, i:i + strides[0] * (ho - 1) + 1:strides[0],
               j:j + strides[1] * (wo - 1) + 1:strides[1], :]
      acc = acc + tap * wi[:, i, j, 0]
  return acc


def _qconv2d_impl(x, w, b, m, *, strides, padding, groups, x_zero, y_zero, lo, hi):
  xi = jnp.pad(_int(x), ((0, 0), padding[0], padding[1], (0, 0)), constant_values=x_zero)
  if is_depthwise(groups, x.shape[-1], w.shape[0]):
    kh, kw = w.shape[1:3]
    out_hw = (conv_out_size(x.shape[1], kh, strides[0], padding[0]),
              conv_out_size(x.shape[2], kw, strides[1], padding[1]))
    dot = _depthwise_taps(xi, _int(w), strides, out_hw)
  else:
    dot = lax.conv_general_dilated(
      xi.astype(jnp.int8), _int(w).astype(jnp.int8), window_strides=strides,
      padding="VALID", dimension_numbers=("NHWC", "OHWI", "NHWC"),
      feature_group_count=groups, preferred_element_type=I32)
  # Padding holds x_zero, so sum((x - z) * w) = sum(x * w) - z * sum(w) over every window.
  wsum = jnp.sum(_int(w), axis=(1, 2, 3))
  acc = sat_add(dot - x_zero * wsum, _int(b))
  return requantize(acc, m, y_zero, lo, hi)


def _qconv2d_abstract(x, w, b, m, *, strides, padding, groups, x_zero, y_zero, lo, hi):
  check_carriers("qconv2d", x, w)
  n, h, wd, c = x.shape
  o, kh, kw, ci = w.shape
  if c != ci * groups or o % groups:
    raise ValueError(f"qconv2d: input channels {c}, weight {w.shape} and groups={groups} "
                     "do not agree")
  if kh * kw * ci > MAX_REDUCTION:
    raise ValueError(f"qconv2d: a reduction of {kh * kw * ci} products may overflow int32")
  _check_bias_multiplier("qconv2d", b, m, o)
  ho, wo = (conv_out_size(h, kh, strides[0], padding[0]),
            conv_out_size(wd, kw, strides[1], padding[1]))
  if ho <= 0 or wo <= 0:
    raise ValueError(f"qconv2d: a {kh}x{kw} kernel does not fit the padded input {x.shape}")
  return shaped((n, ho, wo, o))


register(qconv2d_p, _qconv2d_impl, _qconv2d_abstract)


def qconv2d(x, w, b, m, *, strides: tuple[int, int], padding: Padding, groups: int,
            x_zero: int, y_zero: int, lo: int = INT8_MIN, hi: int = INT8_MAX) -> jax.Array:
  """Quantized 2-D convolution, NHWC input, OHWI weight (I = C_in / groups)."""
  return qconv2d_p.bind(x, w, b, m, strides=tuple(strides),
                        padding=tuple(tuple(p) for p in padding), groups=int(groups),
                        x_zero=int(x_zero), y_zero=int(y_zero), lo=int(lo), hi=int(hi))


# --- dense -----------------------------------------------------------------------------

qdense_p = Primitive("jt_qdense")


def _qdense_impl(x, w, b, m, *, x_zero, y_zero, lo, hi):
  dot = lax.dot_general(_int(x).astype(jnp.int8), _int(w).astype(jnp.int8),
                        (((1,), (1,)), ((), ())), preferred_element_type=I32)
  acc = sat_add(dot - x_zero * jnp.sum(_int(w), axis=1), _int(b))
  return requantize(acc, m, y_zero, lo, hi)


def _qdense_abstract(x, w, b, m, *, x_zero, y_zero, lo, hi):
  check_carriers("qdense", x, w)
  if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
    raise ValueError(f"qdense: input {x.shape} and weight {w.shape} (O, K) do not agree")
  if w.shape[1] > MAX_REDUCTION:
    raise ValueError(f"qdense: a reduction of {w.shape[1]} products may overflow int32")
  _check_bias_multiplier("qdense", b, m, w.shape[0])
  return shaped((x.shape[0], w.shape[0]))


register(qdense_p, _qdense_impl, _qdense_abstract)


def qdense(x, w, b, m, *, x_zero: int, y_zero: int, lo: int = INT8_MIN,
           hi: int = INT8_MAX) -> jax.Array:
  """Quantized fully connected layer, (N, K) input, (O, K) weight."""
  return qdense_p.bind(x, w, b, m, x_zero=int(x_zero), y_zero=int(y_zero), lo=int(lo),
                       hi=int(hi))


# --- residual add ----------------------------------------------------------------------

qadd_p = Primitive("jt_qadd")


def _qadd_impl(a, b, *, a_zero, b_zero, a_mult, b_mult, m, y_zero, lo, hi):
  acc = (_int(a) - a_zero) * a_mult + (_int(b) - b_zero) * b_mult
  return requantize(acc, F32(m), y_zero, lo, hi)


def _qadd_abstract(a, b, *, a_mult, b_mult, **_):
  check_carriers("qadd", a, b)
  if not (0 <= a_mult <= 2**ADD_SHIFT and 0 <= b_mult <= 2**ADD_SHIFT):
    raise ValueError(f"qadd: input multipliers {a_mult}, {b_mult} must lie in [0, 2**{ADD_SHIFT}]"
                     " so the int32 sum stays exact in float32")
  if a.shape != b.shape:
    raise ValueError(f"qadd: shapes {a.shape} and {b.shape} differ")
  return shaped(a.shape)


register(qadd_p, _qadd_impl, _qadd_abstract)


def qadd(a, b, *, a_zero: int, b_zero: int, a_mult: int, b_mult: int, m: float,
         y_zero: int, lo: int = INT8_MIN, hi: int = INT8_MAX) -> jax.Array:
  """y = clamp(rne(f32((a - za) * ma + (b - zb) * mb) * m) + zy, lo, hi)."""
  return qadd_p.bind(a, b, a_zero=int(a_zero), b_zero=int(b_zero), a_mult=int(a_mult),
                     b_mult=int(b_mult), m=float(np.float32(m)), y_zero=int(y_zero),
                     lo=int(lo), hi=int(hi))


# --- average pooling (windowed; global = window of the whole plane) -------------------

qavgpool_p = Primitive("jt_qavgpool")


def _window_sum(xi, window, strides, padding):
  return lax.reduce_window(xi, np.int32(0), lax.add, (1, *window, 1), (1, *strides, 1),
                           ((0, 0), padding[0], padding[1], (0, 0)))


def _qavgpool_impl(x, m, *, window, strides, padding, x_zero, y_zero, lo, hi):
  acc = _window_sum(_int(x) - x_zero, window, strides, padding)  # padding contributes 0
  mm = m if m.ndim == 0 else m[None, :, :, None]
  return requantize(acc, mm, y_zero, lo, hi)


def pool_shape(x, window, strides, padding):
  n, h, w, c = x.shape
  ho = conv_out_size(h, window[0], strides[0], padding[0])
  wo = conv_out_size(w, window[1], strides[1], padding[1])
  if ho <= 0 or wo <= 0:
    raise ValueError(f"pool window {window} does not fit input {x.shape}")
  return (n, ho, wo, c)


def _qavgpool_abstract(x, m, *, window, strides, padding, **_):
  check_carriers("qavgpool", x)
  _check_operand("qavgpool", "the multiplier", m, (F32,))
  shape = pool_shape(x, window, strides, padding)
  if m.ndim and m.shape != shape[1:3]:
    raise ValueError(f"qavgpool: multiplier {m.shape} must be scalar or {shape[1:3]}")
  return shaped(shape)


register(qavgpool_p, _qavgpool_impl, _qavgpool_abstract)


def qavgpool(x, m, *, window: tuple[int, int], strides: tuple[int, int], padding: Padding,
             x_zero: int, y_zero: int, lo: int = INT8_MIN, hi: int = INT8_MAX) -> jax.Array:
  """y = clamp(rne(f32(sum over window of (x - zx)) * m) + zy); m scalar or per position."""
  m = m if hasattr(m, "dtype") else np.float32(m)  # a plain Python number is a scalar M
  return qavgpool_p.bind(x, m, window=tuple(window), strides=tuple(strides),
                         padding=tuple(tuple(p) for p in padding), x_zero=int(x_zero),
                         y_zero=int(y_zero), lo=int(lo), hi=int(hi))


# --- max pooling (output keeps the input's quantization) ------------------------------

qmaxpool_p = Primitive("jt_qmaxpool")


def _qmaxpool_impl(x, *, window, strides, padding):
  y = lax.reduce_window(_int(x), np.int32(INT8_MIN), lax.max, (1, *window, 1),
                        (1, *strides, 1), ((0, 0), padding[0], padding[1], (0, 0)))
  return y.astype(F32)


def _qmaxpool_abstract(x, *, window, strides, padding):
  check_carriers("qmaxpool", x)
  return shaped(pool_shape(x, window, strides, padding))


register(qmaxpool_p, _qmaxpool_impl, _qmaxpool_abstract)


def qmaxpool(x, *, window: tuple[int, int], strides: tuple[int, int],
             padding: Padding) -> jax.Array:
  """Integer max over each window; padding never wins (it holds -128)."""
  return qmaxpool_p.bind(x, window=tuple(window), strides=tuple(strides),
                         padding=tuple(tuple(p) for p in padding))


# --- requantize (a standalone clamp such as a ReLU that could not be fused) -----------

qrequant_p = Primitive("jt_qrequant")


def _qrequant_impl(x, *, x_zero, m, y_zero, lo, hi):
  return requantize(_int(x) - x_zero, F32(m), y_zero, lo, hi)


def _qrequant_abstract(x, **_):
  check_carriers("qrequant", x)
  return shaped(x.shape)


register(qrequant_p, _qrequant_impl, _qrequant_abstract)


def qrequant(x, *, x_zero: int, m: float, y_zero: int, lo: int = INT8_MIN,
             hi: int = INT8_MAX) -> jax.Array:
  """y = clamp(rne(f32(x - zx) * m) + zy, lo, hi)."""
  return qrequant_p.bind(x, x_zero=int(x_zero), m=float(np.float32(m)), y_zero=int(y_zero),
                         lo=int(lo), hi=int(hi))


# --- concatenate (each input requantized to the output's parameters) ------------------

qconcat_p = Primitive("jt_qconcat")


def _qconcat_impl(*xs, axis, zeros, mults, y_zero):
  parts = []
  for x, z, m in zip(xs, zeros, mults, strict=True):
    if z == y_zero and m == 1.0:
      parts.append(x)  # same parameters: rne((x - z) * 1) + z is x itself
    else:
      parts.append(requantize(_int(x) - z, F32(m), y_zero, INT8_MIN, INT8_MAX))
  return lax.concatenate(parts, axis)


def _qconcat_abstract(*xs, axis, zeros, mults, y_zero):
  check_carriers("qconcat", *xs)
  if not 0 < axis < xs[0].ndim:
    raise ValueError(f"qconcat: axis {axis} must be a non-batch axis")
  shape = list(xs[0].shape)
  for x in xs[1:]:
    if x.ndim != len(shape) or any(
        d != e for i, (d, e) in enumerate(zip(x.shape, shape)) if i != axis):
      raise ValueError(f"qconcat: shapes {[tuple(v.shape) for v in xs]} differ off axis {axis}")
  shape[axis] = sum(x.shape[axis] for x in xs)
  return shaped(shape)


register(qconcat_p, _qconcat_impl, _qconcat_abstract)


def qconcat(xs: Sequence[jax.Array], *, axis: int, zeros: Sequence[int],
            mults: Sequence[float], y_zero: int) -> jax.Array:
  """Concatenate along a non-batch axis; input i is mapped by rne(f32(x - z_i) * m_i) + zy."""
  return qconcat_p.bind(*xs, axis=int(axis), zeros=tuple(int(z) for z in zeros),
                        mults=tuple(float(np.float32(m)) for m in mults), y_zero=int(y_zero))


# --- reshape (values and quantization unchanged) --------------------------------------

qreshape_p = Primitive("jt_qreshape")


def _qreshape_impl(x, *, shape):
  return x.reshape((x.shape[0], *shape))


def _qreshape_abstract(x, *, shape):
  check_carriers("qreshape", x)
  if int(np.prod(shape)) != int(np.prod(x.shape[1:])):
    raise ValueError(f"qreshape: cannot reshape {x.shape[1:]} to {shape}")
  return shaped((x.shape[0], *shape))


register(qreshape_p, _qreshape_impl, _qreshape_abstract)


def qreshape(x, *, shape: Sequence[int]) -> jax.Array:
  """Reshape every batch element to `shape` (the batch axis is kept)."""
  return qreshape_p.bind(x, shape=tuple(int(d) for d in shape))
