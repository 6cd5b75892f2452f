"""From the closed jaxpr of a training step to a flat, pruned list of equations.

Call-like equations (jit, custom_vjp_call of a frozen layer, ...) are inlined; a backward
liveness sweep then drops every equation no output needs (JAX's `make_jaxpr` of a grad
keeps the input gradient of the earliest trained layer, for instance). This is our own
dead-code elimination over the public `jax.extend.core` types, so no private JAX module
is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from jax.extend import core

from jaxtiny.errors import source_line

# Primitives whose only job is to call a sub-jaxpr, and the parameter that holds it.
CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr",
         "custom_vjp_call": "call_jaxpr", "custom_jvp_call": "call_jaxpr",
         "remat": "jaxpr", "checkpoint": "jaxpr"}


class Ref:
  """A value of the flat program: an equation output, an input, or a constant."""

  __slots__ = ("aval", "value", "name")

  def __init__(self, aval: Any, value: np.ndarray | None = None, name: str = ""):
    self.aval, self.value, self.name = aval, value, name

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.aval.shape)

  @property
  def dtype(self) -> np.dtype:
    return np.dtype(self.aval.dtype)


@dataclass
class Eqn:
  prim: str
  inputs: list[Ref]
  outputs: list[Ref]
  params: dict[str, Any]
  source: str = ""


@dataclass
class FlatProgram:
  inputs: list[Ref]
  outputs: list[Ref]
  eqns: list[Eqn] = field(default_factory=list)


def _source(eqn: Any) -> str:
  info = getattr(eqn, "source_info", None)
  return source_line(info) if info is not None else ""


def _inline(jaxpr: core.Jaxpr, consts: list, args: list[Ref], out: FlatProgram) -> list[Ref]:
  env: dict[Any, Ref] = {}

  def read(v: Any) -> Ref:
    if isinstance(v, core.Literal):
      return Ref(v.aval, np.asarray(v.val, dtype=v.aval.dtype))
    return env[v]

  for v, c in zip(jaxpr.constvars, consts, strict=True):
    env[v] = Ref(v.aval, np.asarray(c))
  for v, a in zip(jaxpr.invars, args, strict=True):
    env[v] = a
  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    if name in CALLS:
      sub = eqn.params[CALLS[name]]
      if isinstance(sub, core.ClosedJaxpr):
        outs = _inline(sub.jaxpr, list(sub.consts), ins, out)
      else:
        outs = _inline(sub, [], ins, out)
    else:
      outs = [Ref(v.aval) for v in eqn.outvars]
      out.eqns.append(Eqn(name, ins, outs, dict(eqn.params), _source(eqn)))
    for v, r in zip(eqn.outvars, outs, strict=True):
      if not isinstance(v, core.DropVar):
        env[v] = r
  return [read(v) for v in jaxpr.outvars]


def flatten(closed: core.ClosedJaxpr, input_names: list[str]) -> FlatProgram:
  """Inline every call and drop dead equations."""
  jaxpr = closed.jaxpr
  inputs = [Ref(v.aval, name=n) for v, n in zip(jaxpr.invars, input_names, strict=True)]
  prog = FlatProgram(inputs, [])
  prog.outputs = _inline(jaxpr, list(closed.consts), inputs, prog)
  live = {id(r) for r in prog.outputs}
  kept = []
  for e in reversed(prog.eqns):
    if any(id(o) in live for o in e.outputs):
      kept.append(e)
      live.update(id(i) for i in e.inputs)
  prog.eqns = kept[::-1]
  return prog
