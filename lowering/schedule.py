"""Operator reordering: each fused gradient+update op runs as soon as its inputs exist.

JAX's jaxpr applies every update after the whole backward pass, so every layer's
gradient at its int32 accumulator stays alive until the end. Here the op list is
re-sorted topologically with the update ops first whenever they are ready (the paper's
operator reordering); every other op keeps its original relative order. An update writes
its parameter in place, so it also waits for every earlier op that reads the parameter's
old value (the layer's own input gradient needs the weight before the update).
"""

from __future__ import annotations

import heapq

from lowering.ir import Graph, Op

UPDATES = ("conv2d_update_s8", "dense_update_s8", "bias_update_i32")


def dependencies(g: Graph, ops: list[Op]) -> list[set[int]]:
  """For each op, the ops that must run before it: its producers (read after write) and,
  for an op that overwrites a tensor, that tensor's earlier readers and writers."""
  deps: list[set[int]] = [set() for _ in ops]
  writer: dict[int, int] = {}
  readers: dict[int, list[int]] = {}
  for i, op in enumerate(ops):
    for t in op.inputs:
      b = g.base(t)
      if b in writer:
        deps[i].add(writer[b])
    for t in op.outputs:
      b = g.base(t)
      deps[i].update(r for r in readers.get(b, []) if r != i)
      if b in writer:
        deps[i].add(writer[b])
    for t in op.inputs:
      readers.setdefault(g.base(t), []).append(i)
    for t in op.outputs:
      writer[g.base(t)] = i
      readers[g.base(t)] = []
  return deps


def ancestors(g: Graph, ops: list[Op], tensor: int) -> set[int]:
  """Indices of the ops that `tensor`'s value depends on (its writer included)."""
  deps = dependencies(g, ops)
  todo = [i for i, op in enumerate(ops) if any(g.base(t) == g.base(tensor) for t in op.outputs)]
  seen: set[int] = set()
  while todo:
    i = todo.pop()
    if i not in seen:
      seen.add(i)
      todo.extend(deps[i])
  return seen


def reorder(g: Graph, ops: list[Op], loss: int, logits: int,
            updates_early: bool = True) -> list[Op]:
  """A topological order in which nothing writes the state before the loss is known (so a
  step whose loss is not finite can stop before any update): the loss's own ops (those
  after the logits) run as soon as they are ready, and so does each update when
  `updates_early`; every other op keeps its original relative order."""
  deps = dependencies(g, ops)
  writer = [i for i, op in enumerate(ops) if any(g.base(t) == g.base(loss) for t in op.outputs)]
  for i, op in enumerate(ops):
    if any(g.tensors[g.base(t)].storage == "state" for t in op.outputs):
      deps[i].update(writer)
  chain = ancestors(g, ops, loss) - ancestors(g, ops, logits)

  def rank(i: int) -> tuple[int, int]:
    urgent = i in chain or (updates_early and ops[i].name in UPDATES)
    return (0 if urgent else 1), i

  waiting = [len(d) for d in deps]
  users: list[list[int]] = [[] for _ in ops]
  for i, d in enumerate(deps):
    for j in d:
      users[j].append(i)
  ready = [rank(i) for i, n in enumerate(waiting) if n == 0]
  heapq.heapify(ready)
  order = []
  while ready:
    _, i = heapq.heappop(ready)
    order.append(ops[i])
    for u in users[i]:
      waiting[u] -= 1
      if waiting[u] == 0:
        heapq.heappush(ready, rank(u))
  if len(order) != len(ops):
    raise AssertionError("the op list has a dependency cycle")
  return order
