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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtiny.numerics import WEIGHT_MAX
from jaxtiny.primitives import F32, I32, sat_add

Schedule = Callable[[jax.Array], jax.Array]


def constant(lr: float) -> Schedule:
  """A constant learning rate."""
  return lambda step: jnp.asarray(lr, F32)


def cosine(lr: float, steps: int, final: float = 0.0) -> Schedule:
  """Cosine decay from `lr` to `final` over `steps` steps, then `final`."""
  if steps <= 0:
    raise ValueError(f"cosine schedule needs steps > 0, got {steps}")

  def schedule(step):
    t = jnp.minimum(jnp.asarray(step, F32) / steps, 1.0)
    return (final + 0.5 * (lr - final) * (1.0 + jnp.cos(math.pi * t))).astype(F32)

  return schedule


def _schedule(lr: float | Schedule) -> Schedule:
  return lr if callable(lr) else constant(float(lr))


@dataclass(frozen=True)
class Optimizer:
  """A per-element optimizer; `slots` float32 values of state per trained element."""

  name: str
  lr: Schedule
  slots: int
  init: Callable[[tuple[int, ...]], dict]
  step: Callable[[jax.Array, dict, jax.Array, jax.Array], tuple[jax.Array, dict]]

  def state_bytes(self, elements: int) -> int:
    return 4 * self.slots * elements


def sgd(lr: float | Schedule, momentum: float = 0.0) -> Optimizer:
  """SGD (the paper's choice at batch 1: no momentum); momentum costs 4 bytes/element."""
  sched = _schedule(lr)
  if momentum == 0.0:
    return Optimizer("sgd", sched, 0, lambda shape: {},
                     lambda g, s, lr_t, step: (lr_t * g, s))
  mu = F32(momentum)

  def step(g, s, lr_t, t):
    m = mu * s["m"] + g
    return lr_t * m, {"m": m}

  return Optimizer(f"sgd(momentum={momentum})", sched, 1,
                   lambda shape: {"m": jnp.zeros(shape, F32)}, step)


def adam(lr: float | Schedule, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8) -> Optimizer:
  """Adam; its two moments cost 8 bytes per trained element."""
  sched = _schedule(lr)
  b1f, b2f, epsf = F32(b1), F32(b2), F32(eps)

  def step(g, s, lr_t, t):
    m = b1f * s["m"] + (1 - b1f) * g
    v = b2f * s["v"] + (1 - b2f) * g * g
    k = jnp.asarray(t, F32) + 1
    mhat = m / (1 - b1f ** k)
    vhat = v / (1 - b2f ** k)
    return lr_t * mhat / (jnp.sqrt(vhat) + epsf), {"m": m, "v": v}

  return Optimizer("adam", sched, 2,
                   lambda shape: {"m": jnp.zeros(shape, F32), "v": jnp.zeros(shape, F32)}, step)


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


def tree_bytes(tree: Any) -> int:
  return sum(int(np.prod(np.shape(a))) * np.dtype(a.dtype).itemsize
             for a in jax.tree_util.tree_leaves(tree))
