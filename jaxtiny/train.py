"""`tiny_train`: train a QModel the way the device will, in a jitted simulation.

Every stored value is what the device stores: trained weights are int8 (float32 carriers
holding integers in [-127, 127]), biases int32, and the update rounds them as the device
does (`jaxtiny.optim`). Frozen parameters are constants of the step, so JAX's dead-code
elimination prunes their gradients; the backward pass stops at the earliest trained layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from jaxtiny.autodiff import LayerPlan, train_forward
from jaxtiny.errors import InputError
from jaxtiny.optim import F32, Optimizer, sgd, update
from jaxtiny.qmodel import QModel
from jaxtiny.sparse import SparseUpdate, layer_plans, trained_weight_shape, update_cost

State = dict[str, Any]
LossFn = Callable[[jax.Array, jax.Array], jax.Array]

# Defaults measured in benchmarks/defaults.py (docs/training.md has the guidance): nearest
# rounding loses every update smaller than half a unit, which at batch 1 is most of them.
DEFAULT_LR = 0.01
DEFAULT_ROUNDING = "stochastic"


def _take(a: np.ndarray, plan: LayerPlan) -> np.ndarray:
  if plan.channels is None or plan.all_channels:
    return a
  return np.take(a, plan.channels, axis=plan.axis)


class Trainer:
  """The training step of one QModel, scheme, optimizer and loss."""

  def __init__(self, qm: QModel, loss_fn: LossFn, optimizer: Optimizer, update: SparseUpdate,
               qas: bool, rounding: str, seed: int):
    if rounding not in ("nearest", "stochastic"):
      raise InputError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    self.qm, self.loss_fn, self.optimizer = qm, loss_fn, optimizer
    self.update, self.qas, self.rounding, self.seed = update, qas, rounding, int(seed)
    self._check_loss()
    self.plans = layer_plans(qm, update)
    self.cost = update_cost(qm, update, optimizer)
    nodes = {n.name: n for n in qm.layers}
    # Per trained parameter and output channel: 1/scale in real units (QAS), or 1.
    self._inv_w: dict[str, np.ndarray] = {}
    self._inv_b: dict[str, np.ndarray] = {}
    for name, plan in self.plans.items():
      n = nodes[name]
      s_w = n.arrays["w_scale"].astype(np.float64)
      s_x = qm.tensors[n.inputs[0]].qparams.scale
      shape = trained_weight_shape(qm, name, plan) if plan.channels is not None else None
      if shape is not None:
        inv = 1.0 / (_take(s_w, plan) if plan.axis == 0 else s_w)
        self._inv_w[name] = (inv if qas else np.ones_like(inv)).astype(np.float32)
      if plan.bias:
        inv_b = 1.0 / (s_x * s_w)
        self._inv_b[name] = (inv_b if qas else np.ones_like(inv_b)).astype(np.float32)
    self._step = jax.jit(self._step_impl)

  def _check_loss(self) -> None:
    """loss_fn(logits, labels) must trace at batch 1 to a float scalar that depends on the
    logits (else every gradient is zero and nothing would ever train)."""
    n = self.qm.output_shape[0]
    logits = jax.ShapeDtypeStruct((1, n), F32)
    labels = jax.ShapeDtypeStruct((1,), jnp.int32)
    call = f"loss_fn(logits: float32[1, {n}], labels: int32[1])"
    try:
      closed = jax.make_jaxpr(self.loss_fn)(logits, labels)
    except Exception as e:
      raise InputError(f"{call} failed with {type(e).__name__}: {e}") from e
    out = closed.out_avals
    if len(out) != 1 or out[0].shape != () or not jnp.issubdtype(out[0].dtype, jnp.floating):
      got = ", ".join(f"{a.dtype}{list(a.shape)}" for a in out)
      raise InputError(f"{call} must return one float scalar (reduce over the batch, e.g. "
                       f".mean()), got {got}")
    tainted = {closed.jaxpr.invars[0]}
    for eqn in closed.jaxpr.eqns:  # forward dependence; a call's outputs all depend on it
      if any(v in tainted for v in eqn.invars if not isinstance(v, jax.extend.core.Literal)):
        tainted.update(eqn.outvars)
    if closed.jaxpr.outvars[0] not in tainted:
      raise InputError(f"{call} does not depend on the logits: its gradient would be zero "
                       "and nothing would train")

  # --- state ------------------------------------------------------------------------------

  def init(self) -> State:
    """Trained parameters (from the model), optimizer state, step counter."""
    weights = {k: jnp.asarray(_take(self.qm.params[k]["weight"], p), F32)
               for k, p in self.plans.items() if p.channels is not None}
    biases = {k: jnp.asarray(self.qm.params[k]["bias"]) for k, p in self.plans.items()
              if p.bias}
    opt = {"weights": {k: self.optimizer.init(v.shape) for k, v in weights.items()},
           "biases": {k: self.optimizer.init(v.shape) for k, v in biases.items()}}
    return {"weights": weights, "biases": biases, "opt": opt,
            "step": jnp.zeros((), jnp.int32)}

  def model(self, state: State) -> QModel:
    """A QModel holding the learned int8 weights and int32 biases."""
    params = {k: {"weight": v["weight"].copy(), "bias": v["bias"].copy()}
              for k, v in self.qm.params.items()}
    for k, w in state["weights"].items():
      plan = self.plans[k]
      w = np.asarray(w).astype(np.int8)
      if plan.all_channels:
        params[k]["weight"] = w
      else:
        idx = [slice(None)] * w.ndim
        idx[plan.axis] = list(plan.channels)
        params[k]["weight"][tuple(idx)] = w
    for k, b in state["biases"].items():
      params[k]["bias"] = np.asarray(b, np.int32)
    return self.qm.with_params(params)

  # --- the step ---------------------------------------------------------------------------

  def _logits(self, weights, handles, biases, x8) -> jax.Array:
    y = train_forward(self.qm, self.plans, weights, handles, biases, jnp.asarray(x8, F32))
    qp = self.qm.output_qparams
    return F32(qp.scale) * (y - F32(qp.zero))

  @staticmethod
  def _handles(state: State) -> dict:
    return {k: jnp.zeros(b.shape, F32) for k, b in state["biases"].items()}

  def logits(self, state: State, x8: jax.Array) -> jax.Array:
    """Float32 logits (dequantized int8 outputs) of the current state."""
    return self._logits(state["weights"], self._handles(state), state["biases"], x8)

  def _step_impl(self, state: State, x8: jax.Array, labels: jax.Array):
    def loss_of(weights, handles):
      return self.loss_fn(self._logits(weights, handles, state["biases"], x8), labels)

    loss, (g_w, g_b) = jax.value_and_grad(loss_of, argnums=(0, 1))(state["weights"],
                                                                   self._handles(state))
    step = state["step"]
    new = {"weights": {}, "biases": {}, "opt": {"weights": {}, "biases": {}}}
    # Parameter ids (for the rounding hash): weights in name order, then biases.
    params = [("weights", k, g_w[k], self._inv_w[k], "weight") for k in sorted(g_w)]
    params += [("biases", k, g_b[k], self._inv_b[k], "bias") for k in sorted(g_b)]
    for pid, (group, k, g, inv, kind) in enumerate(params):
      new[group][k], new["opt"][group][k] = update(
        state[group][k], g, inv, step, state["opt"][group][k], kind=kind,
        optimizer=self.optimizer, rounding=self.rounding, seed=self.seed, pid=pid)
    return {**new, "step": step + 1}, loss

  def step(self, state: State, x8: Any, labels: Any) -> tuple[State, jax.Array]:
    """One training step on a batch (the device runs batch 1); returns (state, loss)."""
    x8 = self._check_batch(x8)
    labels = np.asarray(labels)
    if labels.shape != (x8.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
      raise InputError(f"labels must be integers of shape ({x8.shape[0]},), got "
                       f"{labels.dtype}{list(labels.shape)}")
    n_classes = self.qm.output_shape[0]
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
      raise InputError(f"labels must lie in [0, {n_classes}), got "
                       f"[{labels.min()}, {labels.max()}]")
    return self._step(state, jnp.asarray(x8, F32), jnp.asarray(labels, jnp.int32))

  def _check_batch(self, x8: Any) -> np.ndarray:
    x8 = np.asarray(x8)
    if x8.dtype != np.int8:
      raise InputError(f"step expects an int8 batch, got {x8.dtype}; use qm.quantize_input")
    if x8.shape[1:] != self.qm.input_shape:
      raise InputError(f"step expects a batch of shape (N, "
                       f"{', '.join(map(str, self.qm.input_shape))}), got {x8.shape}")
    return x8

  def lower(self, name: str | None = None, **switches: bool):
    """The step (batch 1) and inference lowered to a `lowering.Program`: an op list with
    its tensors and memory plan, runnable on the host by the reference executor
    (`switches`: see `lowering.program.lower`)."""
    from lowering.program import lower  # lowering builds on jaxtiny, not the reverse

    return lower(self, name, **switches)

  def step_jaxpr(self, state: State, batch: int = 1):
    """The closed jaxpr of one training step at `batch` (the lowering's input)."""
    x = jnp.zeros((batch, *self.qm.input_shape), F32)
    y = jnp.zeros((batch,), jnp.int32)
    return jax.make_jaxpr(self._step_impl)(state, x, y)


def tiny_train(qm: QModel, optimizer: Optimizer | None = None,
               update: SparseUpdate | None = None, qas: bool = True,
               rounding: str = DEFAULT_ROUNDING, seed: int = 0) -> Callable[[LossFn], Trainer]:
  """Decorator: `trainer = tiny_train(qm, ...)(loss_fn)`; loss_fn(logits, labels) -> scalar.

  optimizer: `jt.sgd(lr)` (default `jt.sgd(0.01)`), `jt.sgd(lr, momentum)` or `jt.adam(lr)`.
  update: a SparseUpdate (default: the classifier only). qas: quantization-aware scaling.
  rounding: "stochastic" (default; seeded by `seed`, identical on the device) or "nearest".
  """
  opt = optimizer if optimizer is not None else sgd(DEFAULT_LR)
  if not isinstance(opt, Optimizer):
    raise InputError(
      f"tiny_train: optimizer must be jt.sgd(lr), jt.sgd(lr, momentum) or jt.adam(lr), got "
      f"{type(opt).__name__}: the device runs the update itself, so it must be one jaxtiny "
      "knows (an optax optimizer cannot be lowered); schedules: jt.constant, jt.cosine")
  scheme = update if update is not None else SparseUpdate()
  if not isinstance(scheme, SparseUpdate):
    raise InputError(f"tiny_train: update must be a jt.SparseUpdate, got {type(scheme).__name__}")
  if not isinstance(qm, QModel):
    raise InputError(f"tiny_train: the model must be a QModel (from jt.quantize or "
                     f"jt.load_tinytraining), got {type(qm).__name__}")

  def wrap(loss_fn: LossFn) -> Trainer:
    return Trainer(qm, loss_fn, opt, scheme, qas, rounding, seed)

  return wrap


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy with integer labels."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))
