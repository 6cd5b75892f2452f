"""Seeded random small Flax models over the layers jaxtiny supports, for the random-model
test and benchmark: `random_model(seed)` -> (module, input shape, classes).

A model is a `RandomNet`: a tuple-of-tuples program interpreted by one `nn.compact`
method. Value 0 is the input; op j appends value j + 1 and names its operands by value
index, so a value may be read by several ops (residual adds, concatenated branches, a conv
output with two readers). The generator tracks every value's shape, so each program is
valid by construction (no kernel larger than its padded input, adds of equal shapes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

import jaxtiny as jt
from jaxtiny.autodiff import selection_axis
from jaxtiny.sparse import RATIOS

Shape = tuple[int, ...]
Padding = str | tuple[tuple[int, int], ...]

MAX_PARAMS = 20_000
# int8 vs float: max |error| over the calibration batch as a fraction of the calibrated
# output range (255 output steps). Seeds 0-999: median 0.9 %, 99th percentile 2.9 %, worst
# 5.0 % (seed 131, 7 layers: half weight/input rounding, half requantization). An avg pool
# with count_include_pad flipped is off by 4-82 %, so a looser bound would hide such bugs.
ERROR_BOUND = 0.06

_ACTS = {"relu": nn.relu, "relu6": nn.relu6, "none": lambda x: x}


class RandomNet(nn.Module):
  """Interprets `spec`: ops ("conv", src, features, kernel, strides, padding, groups,
  use_bias, batch_norm, act), ("dense", src, features, act), ("add", a, b, act),
  ("concat", a, b), ("maxpool", src, window, strides, padding), ("avgpool", src, window,
  strides, padding, count_include_pad), ("mean", src, keepdims), ("max", src),
  ("flatten", src). The last op's value is the output."""

  spec: tuple[tuple, ...]

  @nn.compact
  def __call__(self, x):
    vals = [x]
    for op in self.spec:
      vals.append(self._op(vals, op))
    return vals[-1]

  def _op(self, vals: list, op: tuple):
    kind, src = op[0], vals[op[1]]
    spatial = tuple(range(1, src.ndim - 1))
    if kind == "conv":
      _, _, f, k, s, pad, groups, use_bias, bn, act = op
      y = nn.Conv(f, k, s, padding=pad, feature_group_count=groups, use_bias=use_bias)(src)
      if bn:
        y = nn.BatchNorm(use_running_average=True)(y)
      return _ACTS[act](y)
    if kind == "dense":
      return _ACTS[op[3]](nn.Dense(op[2])(src))
    if kind == "add":
      return _ACTS[op[3]](src + vals[op[2]])
    if kind == "concat":
      return jnp.concatenate([src, vals[op[2]]], axis=-1)
    if kind == "maxpool":
      return nn.max_pool(src, op[2], op[3], padding=op[4])
    if kind == "avgpool":
      return nn.avg_pool(src, op[2], op[3], padding=op[4], count_include_pad=op[5])
    if kind == "mean":
      return src.mean(axis=spatial, keepdims=op[2])
    if kind == "max":
      return src.max(axis=spatial)
    if kind == "flatten":
      return src.reshape((src.shape[0], -1))
    raise ValueError(f"unknown op {kind!r}")


# --- the generator ---------------------------------------------------------------------------


def _out_size(size: int, k: int, s: int, pad: tuple[int, int]) -> int:
  return (size + pad[0] + pad[1] - k) // s + 1


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
  """lax's "SAME": output ceil(size / s), the extra padding row at the end."""
  total = max((-(-size // s) - 1) * s + k - size, 0)
  return total // 2, total - total // 2


def _resolve(padding: Padding, sizes: Shape, window: Shape, strides: Shape) -> Shape:
  """Output spatial sizes of a conv or pool."""
  pads = [_same_pads(n, k, s) for n, k, s in zip(sizes, window, strides)] if padding == "SAME" \
    else [(0, 0)] * len(sizes) if padding == "VALID" else padding
  return tuple(_out_size(n, k, s, p) for n, k, s, p in zip(sizes, window, strides, pads))


class _Gen:
  def __init__(self, rng: np.random.Generator):
    self.rng = rng
    self.shapes: list[Shape] = []
    self.ops: list[tuple] = []
    self.params = 0
    self.tags: set[str] = set()  # what the model exercises, for the coverage test

  def randint(self, lo: int, hi: int) -> int:
    """Uniform in [lo, hi]."""
    return int(self.rng.integers(lo, hi + 1))

  def pick(self, options: Sequence, p: Sequence[float] | None = None):
    return options[int(self.rng.choice(len(options), p=p))]

  def chance(self, p: float) -> bool:
    return bool(self.rng.random() < p)

  def emit(self, op: tuple, shape: Shape, params: int = 0, *tags: str) -> int:
    self.tags.update((op[0], *tags))
    self.ops.append(op)
    self.shapes.append(shape)
    self.params += params
    return len(self.shapes) - 1

  def act(self) -> str:
    return self.pick(("relu", "relu6", "none"), (0.4, 0.3, 0.3))

  # --- layers ----------------------------------------------------------------------------

  def window(self, sizes: Shape, lo: int, hi: int) -> Shape:
    """A kernel/window: square (1-D: one size), sometimes not square in 2-D."""
    k = self.randint(lo, hi)
    if len(sizes) == 2 and self.chance(0.3):
      return (k, self.randint(lo, hi))
    return (k,) * len(sizes)

  def conv(self, src: int, features: int | None = None, *, keep_shape: bool = False,
           strides: Shape | None = None, padding: Padding | None = None,
           act: str | None = None) -> int:
    """A conv (+ BatchNorm) (+ activation) on value src. keep_shape: stride 1 and a padding
    that keeps the spatial size. strides/padding given: both branches of a concat agree."""
    shape = self.shapes[src]
    sizes, c = shape[:-1], shape[-1]
    k = self.window(sizes, 1, 5)
    if keep_shape:
      s = (1,) * len(sizes)
      if padding is None:
        lows = [self.randint(0, kk - 1) for kk in k]  # lo + hi = k - 1, each below k
        padding = "SAME" if self.chance(0.5) else tuple((lo, kk - 1 - lo)
                                                        for lo, kk in zip(lows, k))
    else:
      s = strides or tuple(self.pick((1, 2), (0.6, 0.4)) for _ in sizes)
      if len(set(s)) > 1 and self.chance(0.5):
        s = (s[0],) * len(s)
      if padding is None:
        padding = self.pick(("SAME", "VALID", "explicit"), (0.4, 0.3, 0.3))
        if padding == "explicit":
          padding = tuple((self.randint(0, kk - 1), self.randint(0, kk - 1)) for kk in k)
        if padding != "SAME" and min(_resolve(padding, sizes, k, s)) < 1:
          padding = "SAME"  # the kernel does not fit the (padded) input
    out_sizes = _resolve(padding, sizes, k, s)
    f = features or self.randint(2, 12)
    groups = 1
    g = self.rng.random()
    if c > 1 and g < 0.2 and features is None:
      groups = f = c  # depthwise
    elif c > 1 and g < 0.35:
      divisors = [d for d in range(2, c + 1) if c % d == 0 and f % d == 0]
      if not divisors and features is None:
        d = self.pick([d for d in range(2, c + 1) if c % d == 0])
        f = d * self.randint(1, max(1, 12 // d))
        divisors = [d]
      if divisors:
        groups = self.pick(divisors)
    bn = self.chance(0.35)
    use_bias = not bn or self.chance(0.5)
    op = ("conv", src, f, k, s, padding, groups, use_bias, bn, act or self.act())
    n_params = int(np.prod(k)) * (c // groups) * f + (f if use_bias else 0) + (2 * f if bn else 0)
    tags = [f"act:{op[-1]}", "pad:" + (padding if isinstance(padding, str) else "explicit")]
    tags += ["bn"] if bn else []
    tags += ["stride2"] if 2 in s else []
    tags += ["non-square"] if len(set(k)) > 1 else []
    tags += ["depthwise" if groups == c == f else "grouped"] if groups > 1 else []
    return self.emit(op, (*out_sizes, f), n_params, *tags)

  def pool(self, src: int, strides: Shape | None = None, padding: str | None = None) -> int:
    sizes, c = self.shapes[src][:-1], self.shapes[src][-1]
    w = self.window(sizes, 2, 3)
    s = strides or (self.randint(1, 2),) * len(sizes)
    if padding is None:
      padding = self.pick(("VALID", "SAME"))
      if any(n < k for n, k in zip(sizes, w)):
        padding = "SAME"
    out = _resolve(padding, sizes, w, s)
    if self.chance(0.5):
      return self.emit(("maxpool", src, w, s, padding), (*out, c))
    include = self.chance(0.5)
    return self.emit(("avgpool", src, w, s, padding, include), (*out, c), 0,
                     f"count_include_pad:{include}")

  def dense(self, src: int, features: int, act: str) -> int:
    k = self.shapes[src][-1]
    return self.emit(("dense", src, features, act), (features,), k * features + features)

  def add(self, a: int, b: int) -> int:
    assert self.shapes[a] == self.shapes[b]
    if self.chance(0.5):
      a, b = b, a
    return self.emit(("add", a, b, self.act()), self.shapes[a])

  def concat(self, a: int, b: int) -> int:
    sa, sb = self.shapes[a], self.shapes[b]
    assert sa[:-1] == sb[:-1]
    return self.emit(("concat", a, b), (*sa[:-1], sa[-1] + sb[-1]))

  # --- blocks ----------------------------------------------------------------------------

  def block(self, x: int) -> int:
    kind = self.pick(("conv", "residual", "branches", "shared", "pool"),
                     (0.35, 0.2, 0.15, 0.1, 0.2))
    self.tags.add(f"block:{kind}")
    if kind == "conv":
      return self.conv(x)
    if kind == "residual":
      c = self.shapes[x][-1]
      y = self.conv(x, c, keep_shape=True)
      if self.chance(0.4):
        y = self.conv(y, c, keep_shape=True)
      return self.add(x, y)
    if kind == "branches":
      # Two branches of the same output size ("SAME", one stride): conv + conv or pool.
      s = (self.randint(1, 2),) * (len(self.shapes[x]) - 1)
      a = self.conv(x, self.randint(2, 8), strides=s, padding="SAME")
      b = self.pool(x, s, "SAME") if self.chance(0.4) else self.conv(
        x, self.randint(2, 8), strides=s, padding="SAME")
      return self.concat(*((a, b) if self.chance(0.5) else (b, a)))
    if kind == "shared":
      # A conv output read twice: by the next conv and by an add or a concat.
      c = self.conv(x, act=self.pick(("relu", "none")))
      d = self.conv(c, self.shapes[c][-1], keep_shape=True)
      return self.add(c, d) if self.chance(0.5) else self.concat(c, d)
    return self.pool(x)

  def head(self, x: int) -> int:
    """Feature map -> (N, K)."""
    kind = self.pick(("mean", "mean_conv", "max", "flatten"), (0.35, 0.15, 0.2, 0.3))
    c = self.shapes[x][-1]
    if kind == "flatten" and int(np.prod(self.shapes[x])) <= 256:
      return self.emit(("flatten", x), (int(np.prod(self.shapes[x])),))
    if kind == "mean_conv":
      # keepdims leaves a 1x1 (or length-1) map for a 1x1 conv, flattened after.
      m = self.emit(("mean", x, True), (1,) * (len(self.shapes[x]) - 1) + (c,), 0,
                    "keepdims")
      f = self.randint(2, 12)
      k = (1,) * (len(self.shapes[x]) - 1)
      op = ("conv", m, f, k, k, "VALID", 1, True, False, self.act())
      y = self.emit(op, (*k, f), c * f + f)
      return self.emit(("flatten", y), (f,))
    if kind == "max":
      return self.emit(("max", x), (c,))
    return self.emit(("mean", x, False), (c,))

  def flat_block(self, x: int) -> int:
    k = self.shapes[x][0]
    kind = self.pick(("dense", "residual", "concat"), (0.5, 0.25, 0.25))
    self.tags.add(f"flat:{kind}")
    if kind == "residual":
      return self.add(x, self.dense(x, k, self.act()))
    if kind == "concat":
      return self.concat(self.dense(x, self.randint(2, 8), self.act()),
                         self.dense(x, self.randint(2, 8), self.act()))
    return self.dense(x, self.randint(4, 16), self.act())


def _generate(seed: int) -> tuple[_Gen, Shape, int]:
  for attempt in range(100):  # redraw the rare model over the parameter cap
    g = _Gen(np.random.default_rng([seed, attempt]))
    layout = g.pick(("2d", "1d", "flat"), (0.5, 0.35, 0.15))
    g.tags.add(layout)
    if layout == "2d":
      shape: Shape = (g.randint(4, 12), g.randint(4, 12), g.randint(1, 4))
    elif layout == "1d":
      shape = (g.randint(8, 40), g.randint(1, 4))
    else:
      shape = (g.randint(4, 32),)
    g.shapes.append(shape)
    x = 0
    if layout == "flat":
      for _ in range(g.randint(1, 3)):
        x = g.flat_block(x)
    else:
      for _ in range(g.randint(1, 5)):
        x = g.block(x)
      x = g.head(x)
      if g.chance(0.4):
        x = g.dense(x, g.randint(4, 16), g.pick(("relu", "relu6", "none"), (0.6, 0.2, 0.2)))
    classes = g.randint(2, 5)
    g.dense(x, classes, "none")
    if g.params <= MAX_PARAMS:
      return g, shape, classes
  raise RuntimeError(f"seed {seed}: no model under {MAX_PARAMS} parameters")


def random_spec(seed: int) -> tuple[tuple[tuple, ...], Shape, int]:
  """The program, input shape (without batch) and class count of seed's model."""
  g, shape, classes = _generate(seed)
  return tuple(g.ops), shape, classes


def model_tags(seed: int) -> set[str]:
  """What seed's model exercises: op kinds, blocks, layout, paddings, groups, BN, ..."""
  return _generate(seed)[0].tags


def random_model(seed: int) -> tuple[nn.Module, Shape, int]:
  """A random small model: (Flax module, input shape without batch, class count)."""
  spec, shape, classes = random_spec(seed)
  return RandomNet(spec), shape, classes


def random_variables(module: nn.Module, shape: Shape, seed: int) -> dict[str, Any]:
  """module's variables drawn with numpy (LeCun-normal kernels; jax's PRNG takes seconds to
  compile per shape on CPU), with non-trivial BatchNorm statistics, scales (some negative)
  and offsets, and conv/dense biases, so folding and bias quantization are exercised."""
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, *shape), jnp.float32))
  rng = np.random.default_rng([seed, 1])
  flat = {}
  for path, s in traverse_util.flatten_dict(shapes).items():
    bn = path[-2].startswith("BatchNorm")
    if path[-1] == "kernel":
      v = rng.normal(0.0, 1.0 / np.sqrt(np.prod(s.shape[:-1])), s.shape)
    elif path[-1] == "mean":
      v = rng.normal(0.0, 0.3, s.shape)
    elif path[-1] == "var":
      v = rng.uniform(0.2, 2.0, s.shape)
    elif path[-1] == "scale":
      v = rng.uniform(0.5, 1.5, s.shape) * rng.choice([-1.0, 1.0], s.shape, p=[0.2, 0.8])
    elif path[-1] == "bias":
      v = rng.normal(0.0, 0.3 if bn else 0.1, s.shape)
    else:
      raise ValueError(f"unexpected variable {'/'.join(path)}")
    flat[path] = v.astype(s.dtype)
  return traverse_util.unflatten_dict(flat)


def parameter_count(variables: dict[str, Any]) -> int:
  return sum(int(np.size(v)) for v in jax.tree_util.tree_leaves(variables["params"]))


# --- the pipeline's pieces, shared by the test and the benchmark ----------------------------


def random_data(shape: Shape, classes: int, seed: int, n: int = 32
                ) -> tuple[np.ndarray, np.ndarray]:
  """Calibration inputs (also the training batch) and integer labels."""
  rng = np.random.default_rng([seed, 2])
  x = rng.normal(size=(n, *shape)).astype(np.float32)
  return x, rng.integers(0, classes, n).astype(np.int32)


def int8_error(qm: jt.QModel, module: nn.Module, variables: Any, x: np.ndarray) -> float:
  """max |int8 output (dequantized) - float output| over x, as a fraction of the calibrated
  output range."""
  ref = np.asarray(jax.jit(module.apply)(variables, x))  # eager: one compile per op
  got = qm.dequantize_output(qm.apply(qm.quantize_input(x)))
  return float(np.abs(got - ref).max() / (255 * float(qm.output_qparams.scale)))


def random_update(qm: jt.QModel, seed: int) -> jt.SparseUpdate:
  """A sparse-update scheme drawn from seed, valid for qm: the classifier only, the last k
  biases, the last k layers whole, or some layers' weights on a fraction of their channels
  (a grouped conv that is not depthwise trains whole, ratio 1)."""
  rng = np.random.default_rng([seed, 3])
  n = qm.num_layers
  kind = ("classifier", "bias", "last", "weights")[int(rng.integers(0, 4))] if n else "classifier"
  if kind == "classifier":
    return jt.SparseUpdate()
  if kind == "bias":
    return jt.SparseUpdate(bias_last=int(rng.integers(1, n + 1)))
  if kind == "last":
    return jt.SparseUpdate.last_layers(int(rng.integers(1, n + 1)))
  chosen = rng.choice(n, size=int(rng.integers(1, min(3, n) + 1)), replace=False)
  weights = {}
  for i in sorted(int(i) for i in chosen):
    ratio = float(rng.choice(RATIOS))
    weights[i] = ratio if selection_axis(qm, qm.layer(i)) >= 0 else 1.0
  return jt.SparseUpdate(bias_last=int(rng.integers(0, n + 1)), weights=weights)


def describe(spec: tuple[tuple, ...], shape: Shape) -> str:
  """One line per op, for failure reports."""
  lines = [f"input {shape}"]
  for j, op in enumerate(spec):
    # add and concat read a second value; everything else takes plain arguments
    args = [f"v{op[1]}"] + [f"v{a}" if op[0] in ("add", "concat") and i == 0 else repr(a)
                            for i, a in enumerate(op[2:])]
    lines.append(f"v{j + 1} = {op[0]}({', '.join(args)})")
  return "\n".join(lines)
