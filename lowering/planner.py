"""Static memory plan: tensor lifetimes over the op list -> offsets in one arena.

Greedy by size, first fit (as TensorFlow Lite Micro's planner): the largest buffers are
placed first, each at the lowest 4-byte-aligned offset where it overlaps no placed buffer
whose lifetime it shares. Aliases (reshapes) share their base's buffer. Constants stay in
flash, persistent state in its own region, the caller owns the input/output buffers.
The inference op list is a subsequence of the training one, so the same offsets serve it.
"""

from __future__ import annotations

from dataclasses import dataclass

from lowering.ir import Graph, Op

ALIGN = 4


def _aligned(n: int) -> int:
  return (n + ALIGN - 1) // ALIGN * ALIGN


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

  def live_bytes(self) -> list[int]:
    """Bytes of the buffers live during each op (what the report plots)."""
    live = [0] * self.ops
    for b in self.buffers.values():
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


def plan(g: Graph, ops: list[Op]) -> Plan:
  spans = lifetimes(g, ops)
  order = sorted(spans, key=lambda t: (-g.tensors[t].nbytes, spans[t][0], t))
  placed: list[Buffer] = []
  for t in order:
    size = _aligned(max(1, g.tensors[t].nbytes))
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
