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


def reorder(g: Graph, ops: list[Op]) -> list[Op]:
  deps = dependencies(g, ops)
  waiting = [len(d) for d in deps]
  users: list[list[int]] = [[] for _ in ops]
  for i, d in enumerate(deps):
    for j in d:
      users[j].append(i)
  ready = [((0 if ops[i].name in UPDATES else 1), i) for i, n in enumerate(waiting) if n == 0]
  heapq.heapify(ready)
  order = []
  while ready:
    _, i = heapq.heappop(ready)
    order.append(ops[i])
    for u in users[i]:
      waiting[u] -= 1
      if waiting[u] == 0:
        heapq.heappush(ready, ((0 if ops[u].name in UPDATES else 1), u))
  if len(order) != len(ops):
    raise AssertionError("the op list has a dependency cycle")
  return order
