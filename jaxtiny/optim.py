"""Optimizers and the device-faithful int8 / int32 parameter update.

An optimizer works in real units: with QAS the gradient with respect to an int8 weight is
divided by its scale (g_real = g * (1/s)), the optimizer turns it into a real step, and
the step is divided by the scale again (delta = step_real * (1/s)). For SGD this is the
contract's factor s**-2; without QAS the scale is taken as 1. The stored value then moves
by `delta` with a rounding mode, exactly as the device does it:

  weight (int8):  w <- clamp(round(w - delta), -127, 127)
  bias (int32):   b <- sat32(b + round(-delta))

round is rne ("nearest") or floor(v + u) with u in [0, 1) from a counter-based hash of
(seed, step, parameter, element) ("stochastic"), computed identically in JAX and C.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive

from jaxtiny.errors import InputError
from jaxtiny.numerics import WEIGHT_MAX
from jaxtiny.primitives import F32, I32, check_carriers, register, sat_add, shaped


@dataclass(frozen=True)
class Schedule:
  """A learning-rate schedule the lowering can serialize: constant, or cosine decay from
  `lr` to `final` over `steps` steps (then `final`)."""

  kind: str
  lr: float
  steps: int = 0
  final: float = 0.0

  def __call__(self, step: jax.Array) -> jax.Array:
    if self.kind == "constant":
      return jnp.asarray(self.lr, F32)
    t = jnp.minimum(jnp.asarray(step, F32) / self.steps, 1.0)
    return (self.final + 0.5 * (self.lr - self.final) * (1.0 + jnp.cos(math.pi * t))
            ).astype(F32)


def _rate(value: Any, what: str, zero_ok: bool = False) -> float:
  """A learning rate: a finite number > 0 (>= 0 where `zero_ok`)."""
  if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
    raise InputError(f"{what} must be a number, got {type(value).__name__} {value!r}")
  v = float(value)
  if not math.isfinite(v) or v < 0 or (v == 0 and not zero_ok):
    raise InputError(f"{what} must be a finite number {'>=' if zero_ok else '>'} 0, got {v}"
                     " (a typical rate at batch 1 is 0.001-0.05; see docs/training.md)")
  return v


def constant(lr: float) -> Schedule:
  """A constant learning rate."""
  return Schedule("constant", _rate(lr, "the learning rate"))


def cosine(lr: float, steps: int, final: float = 0.0) -> Schedule:
  """Cosine decay from `lr` to `final` over `steps` steps, then `final`."""
  if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps <= 0:
    raise InputError(f"cosine schedule needs an integer steps > 0, got {steps!r}")
  return Schedule("cosine", _rate(lr, "the peak learning rate"), int(steps),
                  _rate(final, "the final learning rate", zero_ok=True))


def _schedule(lr: float | Schedule) -> Schedule:
  if isinstance(lr, Schedule):
    return lr
  if callable(lr):
    raise InputError("a learning rate must be a number, jt.constant(...) or jt.cosine(...), "
                     f"not {type(lr).__name__} (an optax schedule?): the device runs the "
                     "schedule, so it must be one it knows")
  return constant(lr)


def _fraction(value: Any, what: str) -> float:
  v = _rate(value, what, zero_ok=True)
  if v >= 1:
    raise InputError(f"{what} must lie in [0, 1), got {v}")
  return v


@dataclass(frozen=True)
class Optimizer:
  """A per-element optimizer in real units; `slots` float32 values of state per trained
  element. Hashable and plain data: it is a parameter of the update primitive."""

  kind: str  # "sgd" | "adam"
  lr: Schedule
  momentum: float = 0.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8

  @property
  def slots(self) -> int:
    return 2 if self.kind == "adam" else int(self.momentum != 0.0)

  @property
  def name(self) -> str:
    if self.kind == "sgd" and self.momentum:
      return f"sgd(momentum={self.momentum})"
    return self.kind

  @property
  def slot_names(self) -> tuple[str, ...]:
    return ("m", "v")[:self.slots]

  def init(self, shape: tuple[int, ...]) -> dict:
    return {k: jnp.zeros(shape, F32) for k in self.slot_names}

  def step(self, g: jax.Array, s: dict, lr_t: jax.Array, t: jax.Array
           ) -> tuple[jax.Array, dict]:
    """(real step, new state) from a gradient in real units."""
    if self.kind == "sgd":
      if not self.momentum:
        return lr_t * g, s
      m = F32(self.momentum) * s["m"] + g
      return lr_t * m, {"m": m}
    b1, b2 = F32(self.b1), F32(self.b2)
    m = b1 * s["m"] + (1 - b1) * g
    v = b2 * s["v"] + (1 - b2) * g * g
    k = jnp.asarray(t, F32) + 1
    mhat = m / (1 - b1 ** k)
    vhat = v / (1 - b2 ** k)
    return lr_t * mhat / (jnp.sqrt(vhat) + F32(self.eps)), {"m": m, "v": v}

  def state_bytes(self, elements: int) -> int:
    return 4 * self.slots * elements


def sgd(lr: float | Schedule, momentum: float = 0.0) -> Optimizer:
  """SGD (the paper's choice at batch 1: no momentum); momentum costs 4 bytes/element.

  With momentum the step is `lr * m`, m summing gradients with weight `momentum`, so its
  size is about `lr / (1 - momentum)`: divide the rate of plain SGD by 10 for 0.9."""
  return Optimizer("sgd", _schedule(lr), momentum=_fraction(momentum, "momentum"))


def adam(lr: float | Schedule, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8) -> Optimizer:
  """Adam; its two moments cost 8 bytes per trained element."""
  return Optimizer("adam", _schedule(lr), b1=_fraction(b1, "b1"), b2=_fraction(b2, "b2"),
                   eps=_rate(eps, "eps"))


# --- rounding ---------------------------------------------------------------------------


def hash_uniform(seed: int, step: jax.Array, param: int, shape: tuple[int, ...]) -> jax.Array:
  """u in [0, 1) per element: lowbias32 of (seed, step, parameter, element index)."""
  idx = jnp.arange(int(np.prod(shape)), dtype=jnp.uint32).reshape(shape)
  h = (jnp.uint32(seed) * jnp.uint32(0x9E3779B1) + jnp.asarray(step).astype(jnp.uint32)
       * jnp.uint32(0x85EBCA77) + jnp.uint32(param) * jnp.uint32(0xC2B2AE3D) + idx)
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x7FEB352D)
  h = h ^ (h >> 15)
  h = h * jnp.uint32(0x846CA68B)
  h = h ^ (h >> 16)
  return (h >> 8).astype(F32) * F32(2.0 ** -24)


def _round(v: jax.Array, u: jax.Array | None) -> jax.Array:
  return jnp.round(v) if u is None else jnp.floor(v + u)


def apply_weight(w: jax.Array, delta: jax.Array, u: jax.Array | None) -> jax.Array:
  """int8 carrier w <- clamp(round(w - delta), -127, 127)."""
  return jnp.clip(_round(w - delta, u), -WEIGHT_MAX, WEIGHT_MAX)


def apply_bias(b: jax.Array, delta: jax.Array, u: jax.Array | None) -> jax.Array:
  """int32 b <- sat32(b + round(-delta)); the step is bounded before the integer cast."""
  step = jnp.clip(_round(-delta, u), F32(-(2.0 ** 30)), F32(2.0 ** 30))
  return sat_add(b, step.astype(I32))


# --- the update as one primitive ----------------------------------------------------------
# One equation per trained parameter in the step's jaxpr: the lowering reads it as one op
# (fused with the gradient that feeds it), and the reference executor and the C runtime
# implement the same arithmetic.

update_p = Primitive("jt_update")
update_p.multiple_results = True


def _update_impl(p, g, inv, step, *slots, kind, optimizer, rounding, seed, pid):
  inv = inv.reshape((-1,) + (1,) * (p.ndim - 1))
  lr = optimizer.lr(step)
  d_real, new = optimizer.step(g * inv, dict(zip(optimizer.slot_names, slots)), lr, step)
  u = None if rounding == "nearest" else hash_uniform(seed, step, pid, p.shape)
  apply = apply_weight if kind == "weight" else apply_bias
  return [apply(p, d_real * inv, u), *(new[k] for k in optimizer.slot_names)]


def _update_abstract(p, g, inv, step, *slots, kind, optimizer, rounding, seed, pid):
  check_carriers("update", g, inv, *slots)
  if g.shape != p.shape or any(s.shape != p.shape for s in slots):
    raise ValueError(f"update: gradient {g.shape} / state shapes differ from {p.shape}")
  if inv.shape != (p.shape[0],):
    raise ValueError(f"update: scale factors {inv.shape} are not per output channel")
  if len(slots) != optimizer.slots:
    raise ValueError(f"update: {optimizer.name} needs {optimizer.slots} state slots")
  want = I32 if kind == "bias" else F32
  if p.dtype != want:
    raise ValueError(f"update: a {kind} must be {jnp.dtype(want).name}, got {p.dtype}")
  return [jax.core.ShapedArray(p.shape, p.dtype), *(shaped(s.shape) for s in slots)]


register(update_p, _update_impl, _update_abstract)


def update(p, g, inv, step, slots: dict, *, kind: str, optimizer: Optimizer, rounding: str,
           seed: int, pid: int) -> tuple[jax.Array, dict]:
  """One device-faithful update of a trained weight (int8 carrier) or bias (int32): QAS
  factor `inv` per output channel (1 without QAS), optimizer step in real units, rounding."""
  out = update_p.bind(p, g, jnp.asarray(inv, F32), jnp.asarray(step, I32),
                      *(slots[k] for k in optimizer.slot_names), kind=kind,
                      optimizer=optimizer, rounding=rounding, seed=int(seed), pid=int(pid))
  return out[0], dict(zip(optimizer.slot_names, out[1:]))


def tree_bytes(tree: Any) -> int:
  return sum(int(np.prod(np.shape(a))) * np.dtype(a.dtype).itemsize
             for a in jax.tree_util.tree_leaves(tree))
