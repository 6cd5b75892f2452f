"""Sparse update: which biases, layers and channels train, and what that costs in memory."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from jaxtiny.autodiff import LayerPlan, selection_axis
from jaxtiny.graph import Node, consumers
from jaxtiny.optim import Optimizer
from jaxtiny.qmodel import QModel

RATIOS = (0.125, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class SparseUpdate:
  """A sparse-update scheme.

  bias_last: the biases of the last k layers train. Layer indices count the conv and dense
  layers in network order from 0, the classifier excluded (the idx column of
  `qm.summary()`, `qm.layer(i)`); the classifier always trains.
  weights: {layer index: ratio}: that layer's weights train on a fraction of its input
  channels (a depthwise layer: of its channels), chosen by `select` at compile time.
  weights_last: the whole weights of the last k layers train (a full last-k update).
  """

  bias_last: int = 0
  weights: Mapping[int, float] = field(default_factory=dict)
  select: str = "magnitude"
  weights_last: int = 0

  def __post_init__(self) -> None:
    if self.bias_last < 0 or self.weights_last < 0:
      raise ValueError("bias_last and weights_last must be >= 0")
    if self.select not in ("magnitude", "first"):
      raise ValueError(f"select must be 'magnitude' or 'first', got {self.select!r}")
    for i, r in self.weights.items():
      if not 0 < r <= 1:
        raise ValueError(f"weights[{i}] = {r}: a ratio must lie in (0, 1]")
    object.__setattr__(self, "weights", dict(sorted(self.weights.items())))

  @classmethod
  def last_layers(cls, k: int) -> SparseUpdate:
    """Full update (all weights and biases) of the last k layers and the classifier."""
    return cls(bias_last=k, weights_last=k)

  def __hash__(self) -> int:
    return hash((self.bias_last, tuple(self.weights.items()), self.select, self.weights_last))

  def ratios(self, n_layers: int) -> dict[int, float]:
    """Layer index -> trained fraction of its weight, for a model of n_layers layers."""
    out = dict(self.weights)
    for i in range(max(0, n_layers - self.weights_last), n_layers):
      out[i] = 1.0
    return out

  def describe(self) -> str:
    w = ", ".join(f"{i}: {r:g}" for i, r in self.weights.items())
    last = f", weights_last={self.weights_last}" if self.weights_last else ""
    return f"bias_last={self.bias_last}, weights={{{w}}}{last}"


def select_channels(qm: QModel, index: int, ratio: float, select: str) -> tuple[int, ...]:
  """The channels of layer `index` that train: a fraction `ratio`, by weight magnitude
  (the L2 norm of the real weights reading each channel) or the first ones."""
  n = qm.layer(index)
  axis = selection_axis(qm, n)
  if axis < 0:
    if ratio < 1:
      raise ValueError(f"layer {index} ('{n.name}') is a grouped convolution: only ratio 1")
    return ()
  w = qm.params[n.name]["weight"].astype(np.float64)
  w = w * n.arrays["w_scale"].astype(np.float64).reshape((-1,) + (1,) * (w.ndim - 1))
  total = w.shape[axis]
  k = max(1, math.ceil(ratio * total - 1e-9))
  if select == "first":
    return tuple(range(k))
  norms = np.sqrt((np.moveaxis(w, axis, 0).reshape(total, -1) ** 2).sum(axis=1))
  top = np.argsort(-norms, kind="stable")[:k]
  return tuple(int(c) for c in sorted(top))


def layer_plans(qm: QModel, update: SparseUpdate) -> dict[str, LayerPlan]:
  """The plan of every trained conv/dense layer (the classifier included)."""
  n_layers = qm.num_layers
  ratios = update.ratios(n_layers)
  present = {n.index for n in qm.layers if n.index is not None}
  bias_from = n_layers - update.bias_last
  bad = sorted(i for i in ratios if i not in present)
  if bad or (update.bias_last and bias_from < min(present, default=0)):
    span = f"{min(present)}..{max(present)}" if present else "none"
    raise ValueError(f"{update.describe()} names layers outside model '{qm.name}' "
                     f"(layers {span}; the classifier always trains and has no index)")
  plans: dict[str, LayerPlan] = {}
  for n in qm.layers:
    i = n.index
    is_cls = n is qm.classifier
    bias = is_cls or i >= bias_from
    channels: tuple[int, ...] | None = None
    axis = selection_axis(qm, n)
    total = qm.params[n.name]["weight"].shape[axis] if axis >= 0 else 0
    if is_cls:
      channels = tuple(range(total))
    elif i in ratios:
      channels = select_channels(qm, i, ratios[i], update.select) or None
      if channels is None:  # grouped conv trained whole
        channels, total = (), 0
    if channels is None and not bias:
      continue
    plans[n.name] = LayerPlan(channels, bias, axis,
                              channels is not None and len(channels) == total)
  return plans


def trained_weight_shape(qm: QModel, name: str, plan: LayerPlan) -> tuple[int, ...]:
  shape = list(qm.params[name]["weight"].shape)
  if plan.channels is not None and not plan.all_channels:
    shape[plan.axis] = len(plan.channels)
  return tuple(shape)


@dataclass(frozen=True)
class UpdateCost:
  """Bytes a training step needs beyond inference, by kind (batch 1)."""

  trainable_weights: int
  trainable_biases: int
  optimizer_state: int
  saved_activations: int
  masks: int
  gradient_buffers: int

  @property
  def persistent(self) -> int:
    """What lives across steps: trained parameters and optimizer state."""
    return self.trainable_weights + self.trainable_biases + self.optimizer_state

  @property
  def total(self) -> int:
    return (self.persistent + self.saved_activations + self.masks + self.gradient_buffers)

  def table(self) -> str:
    rows = [("trainable weights (int8)", self.trainable_weights),
            ("trainable biases (int32)", self.trainable_biases),
            ("optimizer state + step", self.optimizer_state),
            ("saved activations (int8)", self.saved_activations),
            ("clamp masks (1 bit)", self.masks),
            ("gradient buffers (fp32)", self.gradient_buffers),
            ("total", self.total)]
    return "\n".join(f"{k:<28}{v:>10,} B" for k, v in rows)


def _elements(shape: tuple[int, ...]) -> int:
  return int(np.prod(shape, dtype=np.int64))


def _pointwise(qm: QModel, n: Node) -> bool:
  return (n.op == "conv2d" and n.attrs["groups"] == 1
          and qm.params[n.name]["weight"].shape[1:3] == (1, 1)
          and n.attrs["strides"] == (1, 1) and n.attrs["padding"] == ((0, 0), (0, 0)))


# At most this many more bytes of scratch buy the channel-paired backward of an inverted
# bottleneck (the C kernel shares loads between two channels' sums: about a tenth of the
# backward's Cortex-M instructions).
PAIR_BYTES = 2048


def bottleneck_scratch(planes: int) -> int:
  """Float32 elements of the scratch of a channel-by-channel bottleneck backward, given
  `planes` = one depthwise-output plane + one expanded plane: two channels' planes when
  that costs at most PAIR_BYTES more, else one's."""
  return planes * (2 if planes * 4 <= PAIR_BYTES else 1)


def channelwise_blocks(qm: QModel, plans: dict[str, LayerPlan], first: int) -> dict[int, int]:
  """The inverted bottlenecks whose backward runs one expanded channel at a time (as
  `lowering.bottleneck_bw` fuses them): node position of each of their three layers ->
  float32 gradient elements alive meanwhile. A block qualifies when its expand layer is on
  the backward path, each of its tensors has one reader, its depthwise weight is frozen
  and its project weight trains whole or not at all."""
  nodes, t = qm.nodes, qm.tensors
  readers = consumers(nodes)
  out: dict[int, int] = {}
  for pe in range(first, len(nodes)):
    e = nodes[pe]
    pd = readers.get(e.output, [])
    pp = readers.get(nodes[pd[0]].output, []) if len(pd) == 1 else []
    if len(pp) != 1 or not _pointwise(qm, e):
      continue
    d, p = nodes[pd[0]], nodes[pp[0]]
    c = qm.params[e.name]["weight"].shape[0]
    if d.op != "conv2d" or not _pointwise(qm, p) or d.attrs["groups"] != c \
            or qm.params[d.name]["weight"].shape[::3] != (c, 1) \
            or qm.params[p.name]["weight"].shape[3] != c:
      continue
    dp, pplan = plans.get(d.name), plans.get(p.name)
    if (dp is not None and dp.channels is not None) or (
            pplan is not None and pplan.channels is not None and not pplan.all_channels):
      continue
    # The project's gradient, the block input's (unless the backward stops at the block),
    # the scratch of one or two depthwise-output and expanded channels, the two bias
    # gradients.
    planes = _elements(t[d.output].shape[:-1]) + _elements(t[e.output].shape[:-1])
    live = (_elements(t[p.output].shape) + (_elements(t[e.inputs[0]].shape) if pe > first else 0)
            + bottleneck_scratch(planes) + 2 * c)
    out.update(dict.fromkeys((pe, pd[0], pp[0]), live))
  return out


def _waiting_skips(qm: QModel, first: int) -> dict[int, int]:
  """Node position -> float32 elements of residual gradients waiting meanwhile: the
  gradient of an add's earlier input lives from the add's backward until the other branch's
  backward reaches that input's producer."""
  producer = {n.output: pos for pos, n in enumerate(qm.nodes)}
  out: dict[int, int] = {}
  for pa, n in enumerate(qm.nodes):
    if n.op != "add":
      continue
    ps = min(producer.get(i, -1) for i in n.inputs)
    if ps >= first:
      size = _elements(qm.tensors[qm.nodes[ps].output].shape)
      for pos in range(ps + 1, pa):
        out[pos] = out.get(pos, 0) + size
  return out


def update_cost(qm: QModel, update: SparseUpdate, optimizer: Optimizer | None = None
                ) -> UpdateCost:
  """The memory a sparse-update scheme adds to inference, broken down (batch 1).

  Saved activations: a trained weight's input, restricted to the trained channels (max
  pooling keeps its input and output). Masks: one bit per output element of every
  requantizing op on the backward path (from the earliest trained layer on). Gradient
  buffers: the most fp32 gradient bytes one backward op holds: its input and output
  gradients (one buffer when a depthwise conv with frozen weights runs in place; an
  inverted bottleneck whose backward runs channel by channel holds the project's gradient,
  the block input's, one channel of each inner gradient and two bias gradients), plus the
  residual gradients waiting meanwhile. Optimizer state includes the 4-byte step counter.
  `Program.cost()` measures the same items on the lowered plan; the tests hold the two
  together (gradient buffers: the plan adds at most the loss's few floats).
  """
  plans = layer_plans(qm, update)
  weights = biases = 0
  saved = masks = grad = 0
  t = qm.tensors
  for name, plan in plans.items():
    if plan.channels is not None:
      w = int(np.prod(trained_weight_shape(qm, name, plan)))
      weights += w
    if plan.bias:
      biases += 4 * qm.params[name]["bias"].size
  trained_elems = weights + biases // 4
  first = min((pos for pos, n in enumerate(qm.nodes) if n.name in plans), default=None)
  if first is not None:
    blocks = channelwise_blocks(qm, plans, first)
    waiting = _waiting_skips(qm, first)
    for pos, n in enumerate(qm.nodes[first:], start=first):
      out = _elements(t[n.output].shape)
      inp = _elements(t[n.inputs[0]].shape)
      plan = plans.get(n.name)
      trained_weight = plan is not None and plan.channels is not None
      if trained_weight:
        x_shape = t[n.inputs[0]].shape
        per_channel = int(np.prod(x_shape[:-1]))
        saved += per_channel * (len(plan.channels) if plan.channels else x_shape[-1])
      if n.op == "maxpool":
        saved += inp + out
      if n.op != "reshape" and n.op != "maxpool":
        masks += math.ceil(out / 8)
      needs_input_grad = pos > first
      in_place = (n.op == "conv2d" and selection_axis(qm, n) == 0 and not trained_weight
                  and t[n.output].shape == t[n.inputs[0]].shape)
      pair = max(out, inp) if in_place else out + inp
      grad = max(grad, 4 * (blocks.get(pos, pair if needs_input_grad else out)
                            + waiting.get(pos, 0)))
  state = (optimizer.state_bytes(trained_elems) if optimizer is not None else 0) + 4
  return UpdateCost(weights, biases, state, saved, masks, grad)
