"""Backward primitives of the int8 graph: float32 gradients with straight-through rounding.

Gradients are taken with respect to the integer carriers (one unit = one quantization
step). Each forward op's output passed through `requantize`, so its backward starts with
`requant_bw`: the gradient times the multiplier M, masked to where the output was
strictly inside its clamp range (a saturated or clamped element passes nothing). The
input-gradient and weight-gradient paths are separate primitives, so JAX's dead-code
elimination drops the weight gradient of a frozen layer and the input gradient of the
earliest trained one, and the lowering sees each as an op of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive

from jaxtiny.primitives import (
  F32,
  check_carriers,
  conv_out_size,
  is_depthwise,
  pool_shape,
  register,
  shaped,
)

_CONV_DN = ("NHWC", "OHWI", "NHWC")
_HI = lax.Precision.HIGHEST


def _float_conv(x, w, strides, padding, groups):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_CONV_DN,
                                  feature_group_count=groups, precision=_HI)


def _broadcast_m(m: jax.Array, ndim: int) -> jax.Array:
  """Multiplier shapes: () per tensor, (C,) per channel, (Ho, Wo) per position."""
  if m.ndim == 2:
    return m[None, :, :, None]
  return m


# --- requant_bw: through rne (identity) and the clamp (mask) ---------------------------

requant_bw_p = Primitive("jt_requant_bw")


def _requant_bw_impl(g, y, m, *, lo, hi):
  inside = (y > lo) & (y < hi)
  return jnp.where(inside, g * _broadcast_m(m, g.ndim), F32(0))


def _requant_bw_abstract(g, y, m, *, lo, hi):
  check_carriers("requant_bw", g, y)
  if g.shape != y.shape:
    raise ValueError(f"requant_bw: gradient {g.shape} and output {y.shape} differ")
  ok = {(), (g.shape[-1],)} | ({tuple(g.shape[1:3])} if g.ndim == 4 else set())
  if tuple(m.shape) not in ok:
    raise ValueError(f"requant_bw: multiplier {m.shape} is neither scalar, per channel "
                     f"({g.shape[-1]},) nor per position")
  return shaped(g.shape)


register(requant_bw_p, _requant_bw_impl, _requant_bw_abstract)


def requant_bw(g, y, m, *, lo: int, hi: int) -> jax.Array:
  """d acc = g * M * [lo < y < hi]: the gradient at a requantization's int32 input."""
  return requant_bw_p.bind(g, y, jnp.asarray(m, F32), lo=int(lo), hi=int(hi))


# --- convolution ------------------------------------------------------------------------

conv2d_bw_input_p = Primitive("jt_conv2d_bw_input")


def _depthwise_bw_input(g, w, strides, padding, in_shape):
  """Transposed depthwise convolution as kh*kw shifted adds of the stride-dilated gradient
  (XLA's grouped convolution is slow on CPU for many groups)."""
  kh, kw = w.shape[1:3]
  (pt, pb), (pl, pr) = padding
  hp, wp = in_shape[0] + pt + pb, in_shape[1] + pl + pr
  ho, wo = g.shape[1:3]
  dh, dw = (ho - 1) * strides[0] + 1, (wo - 1) * strides[1] + 1
  gd = lax.pad(g, F32(0), ((0, 0, 0), (kh - 1, hp - dh, strides[0] - 1),
                           (kw - 1, wp - dw, strides[1] - 1), (0, 0, 0)))
  gx = jnp.zeros((g.shape[0], hp, wp, g.shape[3]), F32)
  for i in range(kh):
    for j in range(kw):
      gx = gx + gd[:, kh - 1 - i:kh - 1 - i + hp, kw - 1 - j:kw - 1 - j + wp, :] * w[:, i, j, 0]
  return gx[:, pt:pt + in_shape[0], pl:pl + in_shape[1], :]


def _conv2d_bw_input_impl(g, w, *, strides, padding, groups, in_shape):
  if is_depthwise(groups, in_shape[2], w.shape[0]):
    return _depthwise_bw_input(g, w, strides, padding, in_shape)
  x0 = jnp.zeros((g.shape[0], *in_shape), F32)
  _, vjp = jax.vjp(lambda x: _float_conv(x, w, strides, padding, groups), x0)
  return vjp(g)[0]


def _conv2d_bw_input_abstract(g, w, *, strides, padding, groups, in_shape):
  check_carriers("conv2d_bw_input", g, w)
  h, wd, c = in_shape
  expect = (conv_out_size(h, w.shape[1], strides[0], padding[0]),
            conv_out_size(wd, w.shape[2], strides[1], padding[1]), w.shape[0])
  if tuple(g.shape[1:]) != expect or c != w.shape[3] * groups:
    raise ValueError(f"conv2d_bw_input: gradient {g.shape}, weight {w.shape} and input "
                     f"{in_shape} do not agree")
  return shaped((g.shape[0], *in_shape))


register(conv2d_bw_input_p, _conv2d_bw_input_impl, _conv2d_bw_input_abstract)


def conv2d_bw_input(g_acc, w, *, strides, padding, groups: int,
                    in_shape: Sequence[int]) -> jax.Array:
  """d x = transposed convolution of d acc with the int8 weight (carrier)."""
  return conv2d_bw_input_p.bind(g_acc, w, strides=tuple(strides),
                                padding=tuple(tuple(p) for p in padding), groups=int(groups),
                                in_shape=tuple(int(d) for d in in_shape))


conv2d_bw_weight_p = Primitive("jt_conv2d_bw_weight")


def _depthwise_bw_weight(g, xs, strides, padding, kernel):
  """dW[c, i, j] = sum over batch and positions of g * shifted (x - z), tap by tap."""
  xp = jnp.pad(xs, ((0, 0), padding[0], padding[1], (0, 0)))
  ho, wo = g.shape[1:3]
  taps = []
  for i in range(kernel[0]):
    for j in range(kernel[1]):
      tap = xp[:, i:i + strides[0] * (ho - 1) + 1:strides[0],
               j:j + strides[1] * (wo - 1) + 1:strides[1], :]
      taps.append(jnp.sum(tap * g, axis=(0, 1, 2)))
  return jnp.stack(taps, axis=1).reshape(g.shape[3], *kernel, 1)


def _conv2d_bw_weight_impl(g, x, *, strides, padding, groups, x_zero, kernel, channels):
  xs = x - F32(x_zero)  # padding contributes 0, as in the forward
  c, o = x.shape[-1], g.shape[-1]
  if is_depthwise(groups, c, o):
    if channels is not None:
      idx = jnp.asarray(channels)
      xs, g = xs[..., idx], g[..., idx]
    return _depthwise_bw_weight(g, xs, strides, padding, kernel)
  if channels is not None:
    xs = xs[..., jnp.asarray(channels)]
    w0 = jnp.zeros((o, *kernel, len(channels)), F32)
  else:
    w0 = jnp.zeros((o, *kernel, c // groups), F32)
  _, vjp = jax.vjp(lambda w: _float_conv(xs, w, strides, padding, groups), w0)
  return vjp(g)[0]


def _conv2d_bw_weight_abstract(g, x, *, strides, padding, groups, x_zero, kernel, channels):
  check_carriers("conv2d_bw_weight", g, x)
  c, o = x.shape[-1], g.shape[-1]
  if channels is None:
    return shaped((o, *kernel, c // groups))
  if is_depthwise(groups, c, o):
    return shaped((len(channels), *kernel, 1))
  if groups != 1:
    raise ValueError("conv2d_bw_weight: channel selection needs groups == 1 or depthwise")
  return shaped((o, *kernel, len(channels)))


register(conv2d_bw_weight_p, _conv2d_bw_weight_impl, _conv2d_bw_weight_abstract)


def conv2d_bw_weight(g_acc, x, *, strides, padding, groups: int, x_zero: int,
                     kernel: Sequence[int], channels: Sequence[int] | None = None
                     ) -> jax.Array:
  """d w[o, i, j, c] = sum over positions of d acc[o] * (x - z_x)[c] (padding: 0).

  `channels` restricts the gradient to those input channels (depthwise: those channels),
  in the given order; None means all.
  """
  return conv2d_bw_weight_p.bind(
    g_acc, x, strides=tuple(strides), padding=tuple(tuple(p) for p in padding),
    groups=int(groups), x_zero=int(x_zero), kernel=tuple(int(k) for k in kernel),
    channels=None if channels is None else tuple(int(c) for c in channels))


# --- bias (conv and dense) --------------------------------------------------------------

bias_bw_p = Primitive("jt_bias_bw")


def _bias_bw_impl(g):
  return jnp.sum(g, axis=tuple(range(g.ndim - 1)))


def _bias_bw_abstract(g):
  check_carriers("bias_bw", g)
  return shaped((g.shape[-1],))


register(bias_bw_p, _bias_bw_impl, _bias_bw_abstract)


def bias_bw(g_acc) -> jax.Array:
  """d b[c] = sum of d acc[..., c] over batch and positions."""
  return bias_bw_p.bind(g_acc)


# --- dense ------------------------------------------------------------------------------

dense_bw_input_p = Primitive("jt_dense_bw_input")


def _dense_bw_input_impl(g, w):
  return jnp.dot(g, w, precision=_HI)


def _dense_bw_input_abstract(g, w):
  check_carriers("dense_bw_input", g, w)
  return shaped((g.shape[0], w.shape[1]))


register(dense_bw_input_p, _dense_bw_input_impl, _dense_bw_input_abstract)


def dense_bw_input(g_acc, w) -> jax.Array:
  """d x = d acc @ w."""
  return dense_bw_input_p.bind(g_acc, w)


dense_bw_weight_p = Primitive("jt_dense_bw_weight")


def _dense_bw_weight_impl(g, x, *, x_zero, channels):
  xs = x - F32(x_zero)
  if channels is not None:
    xs = xs[:, jnp.asarray(channels)]
  return jnp.dot(g.T, xs, precision=_HI)


def _dense_bw_weight_abstract(g, x, *, x_zero, channels):
  check_carriers("dense_bw_weight", g, x)
  if g.shape[0] != x.shape[0]:
    raise ValueError(f"dense_bw_weight: batch of gradient {g.shape} and input {x.shape} differ")
  k = x.shape[1] if channels is None else len(channels)
  return shaped((g.shape[1], k))


register(dense_bw_weight_p, _dense_bw_weight_impl, _dense_bw_weight_abstract)


def dense_bw_weight(g_acc, x, *, x_zero: int, channels: Sequence[int] | None = None
                    ) -> jax.Array:
  """d w[o, k] = sum over the batch of d acc[o] * (x[k] - z_x), for the chosen k."""
  return dense_bw_weight_p.bind(g_acc, x, x_zero=int(x_zero), channels=None if channels is None
                                else tuple(int(c) for c in channels))


# --- residual add -----------------------------------------------------------------------

add_bw_p = Primitive("jt_add_bw")
add_bw_p.multiple_results = True


def _add_bw_impl(g, y, *, a_mult, b_mult, m, lo, hi):
  g_acc = _requant_bw_impl(g, y, F32(m), lo=lo, hi=hi)
  return [g_acc * F32(a_mult), g_acc * F32(b_mult)]


def _add_bw_abstract(g, y, **_):
  check_carriers("add_bw", g, y)
  return [shaped(g.shape), shaped(g.shape)]


register(add_bw_p, _add_bw_impl, _add_bw_abstract)


def add_bw(g, y, *, a_mult: int, b_mult: int, m: float, lo: int, hi: int
           ) -> tuple[jax.Array, jax.Array]:
  """(d a, d b) = d acc * (m_a, m_b) with d acc = requant_bw(g, y, m)."""
  ga, gb = add_bw_p.bind(g, y, a_mult=int(a_mult), b_mult=int(b_mult), m=float(m), lo=int(lo),
                         hi=int(hi))
  return ga, gb


# --- pooling ----------------------------------------------------------------------------

avgpool_bw_p = Primitive("jt_avgpool_bw")


def _window_slices(window, strides, out_hw):
  """Per window tap, the strided slice of the padded input that tap reads."""
  ho, wo = out_hw
  for i in range(window[0]):
    for j in range(window[1]):
      yield (slice(None), slice(i, i + strides[0] * (ho - 1) + 1, strides[0]),
             slice(j, j + strides[1] * (wo - 1) + 1, strides[1]), slice(None))


def _avgpool_bw_impl(g, y, m, *, window, strides, padding, lo, hi, in_shape):
  g_acc = _requant_bw_impl(g, y, m, lo=lo, hi=hi)
  (pt, pb), (pl, pr) = padding
  h, w, c = in_shape
  gp = jnp.zeros((g.shape[0], h + pt + pb, w + pl + pr, c), F32)
  for sl in _window_slices(window, strides, g.shape[1:3]):
    gp = gp.at[sl].add(g_acc)
  return gp[:, pt:pt + h, pl:pl + w, :]


def _avgpool_bw_abstract(g, y, m, *, in_shape, **_):
  check_carriers("avgpool_bw", g, y)
  return shaped((g.shape[0], *in_shape))


register(avgpool_bw_p, _avgpool_bw_impl, _avgpool_bw_abstract)


def avgpool_bw(g, y, m, *, window, strides, padding, lo: int, hi: int,
               in_shape: Sequence[int]) -> jax.Array:
  """d x = every window position receives requant_bw(g, y, m) of its output."""
  return avgpool_bw_p.bind(g, y, jnp.asarray(m, F32), window=tuple(window),
                           strides=tuple(strides), padding=tuple(tuple(p) for p in padding),
                           lo=int(lo), hi=int(hi), in_shape=tuple(int(d) for d in in_shape))


maxpool_bw_p = Primitive("jt_maxpool_bw")


def _maxpool_bw_impl(g, x, y, *, window, strides, padding):
  # Route each output's gradient to the first window position (row-major) holding the max.
  n, h, w, c = x.shape
  (pt, pb), (pl, pr) = padding
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-jnp.inf)
  gp = jnp.zeros_like(xp)
  taken = jnp.zeros(y.shape, bool)
  for sl in _window_slices(window, strides, y.shape[1:3]):
    hit = (xp[sl] == y) & ~taken
    taken = taken | hit
    gp = gp.at[sl].add(jnp.where(hit, g, F32(0)))
  return gp[:, pt:pt + h, pl:pl + w, :]


def _maxpool_bw_abstract(g, x, y, *, window, strides, padding):
  check_carriers("maxpool_bw", g, x, y)
  if tuple(pool_shape(x, window, strides, padding)) != tuple(y.shape):
    raise ValueError(f"maxpool_bw: output {y.shape} does not match input {x.shape}")
  return shaped(x.shape)


register(maxpool_bw_p, _maxpool_bw_impl, _maxpool_bw_abstract)


def maxpool_bw(g, x, y, *, window, strides, padding) -> jax.Array:
  """d x: each output's gradient goes to the first position of its window holding the max."""
  return maxpool_bw_p.bind(g, x, y, window=tuple(window), strides=tuple(strides),
                           padding=tuple(tuple(p) for p in padding))


# --- concat -----------------------------------------------------------------------------

concat_bw_p = Primitive("jt_concat_bw")
concat_bw_p.multiple_results = True


def _concat_bw_impl(g, y, *, axis, sizes, mults, identity):
  outs, start = [], 0
  for size, m, same in zip(sizes, mults, identity, strict=True):
    sl = [slice(None)] * g.ndim
    sl[axis] = slice(start, start + size)
    part, ypart = g[tuple(sl)], y[tuple(sl)]
    outs.append(part if same else _requant_bw_impl(part, ypart, F32(m), lo=-128, hi=127))
    start += size
  return outs


def _concat_bw_abstract(g, y, *, axis, sizes, **_):
  check_carriers("concat_bw", g, y)
  shapes = []
  for size in sizes:
    s = list(g.shape)
    s[axis] = size
    shapes.append(shaped(s))
  return shapes


register(concat_bw_p, _concat_bw_impl, _concat_bw_abstract)


def concat_bw(g, y, *, axis: int, sizes: Sequence[int], mults: Sequence[float],
              identity: Sequence[bool]) -> list[jax.Array]:
  """Split the gradient; an input that was requantized gets requant_bw with its M."""
  return concat_bw_p.bind(g, y, axis=int(axis), sizes=tuple(int(s) for s in sizes),
                          mults=tuple(float(m) for m in mults),
                          identity=tuple(bool(i) for i in identity))


# --- merging trained channels into a frozen weight (forward of a sparse layer) ---------

merge_channels_p = Primitive("jt_merge_channels")


def _merge_channels_impl(w, w_sel, *, axis, channels):
  idx = [slice(None)] * w.ndim
  idx[axis] = jnp.asarray(channels)
  return w.at[tuple(idx)].set(w_sel)


def _merge_channels_abstract(w, w_sel, *, axis, channels):
  check_carriers("merge_channels", w, w_sel)
  expect = list(w.shape)
  expect[axis] = len(channels)
  if tuple(w_sel.shape) != tuple(expect):
    raise ValueError(f"merge_channels: trained part {w_sel.shape} != {tuple(expect)}")
  return shaped(w.shape)


register(merge_channels_p, _merge_channels_impl, _merge_channels_abstract)


def merge_channels(w, w_sel, *, axis: int, channels: Sequence[int]) -> jax.Array:
  """The full weight: the frozen one with the trained channels (along `axis`) put in."""
  return merge_channels_p.bind(w, w_sel, axis=int(axis),
                               channels=tuple(int(c) for c in channels))
