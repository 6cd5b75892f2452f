"""Static memory plan: tensor lifetimes over the op list -> offsets in one arena.

Greedy by size, first fit (as TensorFlow Lite Micro's planner): the largest buffers are
placed first, each at the lowest 4-byte-aligned offset where it overlaps no placed buffer
whose lifetime it shares. Aliases (reshapes) share their base's buffer. Constants stay in
flash, persistent state in its own region, the caller owns the input/output buffers.
The inference op list is a subsequence of the training one, so the same offsets serve it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from lowering.ir import Graph, Op, Tensor

ALIGN = 4

# Kernels that may write an output over one of their inputs: element i of the output
# depends on element i of that input only, so the C kernel can run in place.
# op -> (input index, output index) pairs, tried in order.
IN_PLACE = {"requant_s8": ((0, 0),), "add_s8": ((0, 0), (1, 0)),
            "requant_bw_f32": ((0, 0),), "add_bw_f32": ((0, 0),),
            "conv2d_bw_input_f32": ((0, 0),)}


def _channelwise(g: Graph, op: Op) -> bool:
  """Whether an op listed in IN_PLACE may run in place at all. A depthwise conv's input
  gradient (one filter per channel, gx shaped like g) qualifies: channel c of g is copied to
  a one-channel scratch, then channel c of gx is written over it."""
  if op.name != "conv2d_bw_input_f32":
    return True
  gt, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
  c = out.shape[-1]
  return (op.attrs["groups"] == c and g.tensors[op.inputs[1]].shape[0] == c
          and gt.shape == out.shape)


def buffer_bytes(nbytes: int) -> int:
  """Arena bytes of a buffer of `nbytes`: rounded up to ALIGN (at least ALIGN)."""
  return (max(1, nbytes) + ALIGN - 1) // ALIGN * ALIGN


def buffer_size(t: Tensor) -> int:
  return buffer_bytes(t.nbytes)


@dataclass(frozen=True)
class Buffer:
  tensor: int
  size: int
  first: int  # index of the op that writes it first
  last: int  # index of the op that reads it last
  offset: int


@dataclass
class Plan:
  buffers: dict[int, Buffer]
  arena_bytes: int
  ops: int

  def offset(self, tid: int) -> int:
    return self.buffers[tid].offset

  def live_bytes(self, tensors: Collection[int] | None = None) -> list[int]:
    """Bytes of the buffers live during each op (what the report plots); of `tensors`
    only, when given."""
    live = [0] * self.ops
    for b in self.buffers.values():
      if tensors is not None and b.tensor not in tensors:
        continue
      for i in range(b.first, b.last + 1):
        live[i] += b.size
    return live

  def check(self) -> None:
    """Raise if two buffers that are live at the same time share a byte."""
    bs = sorted(self.buffers.values(), key=lambda b: b.offset)
    for i, a in enumerate(bs):
      if a.offset % ALIGN or a.offset + a.size > self.arena_bytes:
        raise AssertionError(f"tensor {a.tensor} is misplaced: [{a.offset}, "
                             f"{a.offset + a.size}) in an arena of {self.arena_bytes}")
      for b in bs[i + 1:]:
        if b.offset >= a.offset + a.size:
          break
        if a.first <= b.last and b.first <= a.last:
          raise AssertionError(f"tensors {a.tensor} and {b.tensor} overlap in the arena "
                               f"while both are live")


def lifetimes(g: Graph, ops: list[Op]) -> dict[int, tuple[int, int]]:
  """Arena tensor (base of aliases) -> (first op writing it, last op touching it)."""
  first: dict[int, int] = {}
  last: dict[int, int] = {}
  for i, op in enumerate(ops):
    for t in op.inputs:
      base = g.base(t)
      if g.tensors[base].storage == "arena":
        if base not in first:
          raise ValueError(f"tensor {g.tensors[base].name} is read by op {i} ({op.name}) "
                           "before any op writes it")
        last[base] = i
    for t in op.outputs:
      base = g.base(t)
      if g.tensors[base].storage == "arena":
        first.setdefault(base, i)
        last[base] = i
  return {t: (first[t], last[t]) for t in first}


def share_in_place(g: Graph, ops: list[Op]) -> None:
  """Make the output of an in-place-capable op an alias of its input's buffer when the op is
  the input's last reader (so the planner gives both one buffer)."""
  last: dict[int, int] = {}
  for i, op in enumerate(ops):
    for t in op.inputs:
      last[g.base(t)] = i
  for i, op in enumerate(ops):
    for a, b in IN_PLACE.get(op.name, ()) if _channelwise(g, op) else ():
      x, y = g.tensors[g.base(op.inputs[a])], g.tensors[op.outputs[b]]
      if (x.storage == y.storage == "arena" and y.alias is None and x.dtype == y.dtype
              and x.nbytes == y.nbytes and last[x.id] == i
              and all(g.base(o) != x.id for o in op.outputs)):
        y.alias = x.id
        last[x.id] = last.get(y.id, i)
        if op.name == "conv2d_bw_input_f32":
          op.outputs.append(g.add(f"scratch{len(g.tensors)}", y.shape[1:-1], "f32"))
        break


def plan(g: Graph, ops: list[Op]) -> Plan:
  spans = lifetimes(g, ops)
  order = sorted(spans, key=lambda t: (-g.tensors[t].nbytes, spans[t][0], t))
  placed: list[Buffer] = []
  for t in order:
    size = buffer_size(g.tensors[t])
    first, last = spans[t]
    clashes = sorted((b for b in placed if b.first <= last and first <= b.last),
                     key=lambda b: b.offset)
    offset = 0
    for b in clashes:
      if offset + size <= b.offset:
        break
      offset = max(offset, b.offset + b.size)
    placed.append(Buffer(t, size, first, last, offset))
  arena = max((b.offset + b.size for b in placed), default=0)
  return Plan({b.tensor: b for b in placed}, arena, len(ops))
