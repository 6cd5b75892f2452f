"""The graph shared by the float front end and the int8 model: tensors and nodes.

A graph is a topologically ordered list of nodes over numbered tensors. Tensor shapes
exclude the batch axis; 4-D activations are NHWC (1-D signals are H = 1), flat ones (K,).
The float graph (what `quantize` reads out of a Flax jaxpr) and the int8 `QModel` use the
same node kinds, so one summary and one liveness analysis serve both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Node kinds and what they compute (float graph; int8 semantics in docs/numerics.md).
LINEAR_OPS = ("conv2d", "dense")
OPS = LINEAR_OPS + ("add", "avgpool", "maxpool", "clamp", "concat", "reshape")


@dataclass
class Node:
  op: str
  name: str
  inputs: tuple[int, ...]
  output: int
  attrs: dict[str, Any] = field(default_factory=dict)
  arrays: dict[str, np.ndarray] = field(default_factory=dict)
  # Layer index as in SparseUpdate (conv/dense layers in order, classifier excluded).
  index: int | None = None


def intersect_bounds(lo: float | None, hi: float | None, other_lo: float | None,
                     other_hi: float | None) -> tuple[float | None, float | None]:
  """Two clamps in a row as one: the larger lower bound, the smaller upper (None: open)."""
  if other_lo is not None:
    lo = other_lo if lo is None else max(lo, other_lo)
  if other_hi is not None:
    hi = other_hi if hi is None else min(hi, other_hi)
  return lo, hi


def assign_layer_indices(nodes: list[Node]) -> None:
  """Number conv/dense nodes from 0 in network order; the last one is the classifier."""
  linear = [n for n in nodes if n.op in LINEAR_OPS]
  for n in nodes:
    n.index = None
  for i, n in enumerate(linear[:-1]):
    n.index = i


def consumers(nodes: list[Node]) -> dict[int, list[int]]:
  """Tensor id -> positions of the nodes that read it."""
  out: dict[int, list[int]] = {}
  for pos, n in enumerate(nodes):
    for t in n.inputs:
      out.setdefault(t, []).append(pos)
  return out


def peak_live_bytes(nodes: list[Node], shapes: dict[int, tuple[int, ...]], input_id: int,
                    output_id: int, itemsize: int = 1) -> int:
  """Peak bytes of live activations at batch 1 when the nodes run in order.

  A tensor lives from its producer until its last reader; reshapes alias their input.
  This is the inference estimate of `QModel.summary`, not the lowering's memory plan.
  """
  alias = {n.output: n.inputs[0] for n in nodes if n.op == "reshape"}

  def root(t: int) -> int:
    while t in alias:
      t = alias[t]
    return t

  last_use: dict[int, int] = {root(output_id): len(nodes)}
  for pos, n in enumerate(nodes):
    for t in n.inputs:
      last_use[root(t)] = max(last_use.get(root(t), -1), pos)
  size = {t: int(np.prod(s)) * itemsize for t, s in shapes.items()}
  live = {root(input_id)}
  peak = size[root(input_id)]
  for pos, n in enumerate(nodes):
    live.add(root(n.output))
    peak = max(peak, sum(size[t] for t in live))
    live = {t for t in live if last_use.get(t, -1) > pos}
  return peak
