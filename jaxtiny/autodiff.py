"""The differentiable int8 forward: each node op wrapped in `jax.custom_vjp`.

The forward binds the exact int8 primitives; the backward binds the primitives of
`jaxtiny.backward`, so `jax.make_jaxpr(jax.grad(step))` is the training step the lowering
reads. Trainable parameters enter as float32 carriers: a weight's trained channels
(`LayerPlan.channels`), and for a trained bias a zero "bias handle" whose gradient is the
bias gradient (the int32 bias itself is not differentiable in JAX, and a float32 carrier
could not hold the imported models' biases of up to 2**31 exactly).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from jaxtiny import backward as B
from jaxtiny import primitives as P
from jaxtiny.graph import Node
from jaxtiny.primitives import is_depthwise
from jaxtiny.qmodel import QModel


@dataclass(frozen=True)
class LayerPlan:
  """How one conv/dense layer trains: which weight channels (None: frozen), its bias."""

  channels: tuple[int, ...] | None
  bias: bool
  axis: int  # the weight axis the channels index (OHWI: 3, depthwise: 0, dense: 1)
  all_channels: bool


def selection_axis(qm: QModel, n: Node) -> int:
  """Input channels of a conv (OHWI axis 3) or dense (axis 1); a depthwise conv's own."""
  if n.op == "dense":
    return 1
  w = qm.params[n.name]["weight"]
  groups = n.attrs["groups"]
  if groups == 1:
    return 3
  if is_depthwise(groups, groups * w.shape[3], w.shape[0]):
    return 0
  return -1  # a grouped conv that is neither: only the whole weight can train


def _linear_fn(qm: QModel, n: Node, plan: LayerPlan) -> Callable:
  t = qm.tensors
  xq, yq = t[n.inputs[0]].qparams, t[n.output].qparams
  a = n.attrs
  lo, hi = a["lo"], a["hi"]
  chans = None if plan.all_channels else plan.channels
  in_shape = t[n.inputs[0]].shape

  def weight(w_frozen, w_sel):
    if w_sel is None:
      return w_frozen
    if plan.all_channels:
      return w_sel
    return B.merge_channels(w_frozen, w_sel, axis=plan.axis, channels=plan.channels)

  def run(x, w, b, m):
    if n.op == "conv2d":
      return P.qconv2d(x, w, b, m, strides=a["strides"], padding=a["padding"],
                       groups=a["groups"], x_zero=xq.zero, y_zero=yq.zero, lo=lo, hi=hi)
    return P.qdense(x, w, b, m, x_zero=xq.zero, y_zero=yq.zero, lo=lo, hi=hi)

  @jax.custom_vjp
  def f(x, w_sel, handle, w_frozen, b, m):
    return run(x, weight(w_frozen, w_sel), b, m)

  def fwd(x, w_sel, handle, w_frozen, b, m):
    w = weight(w_frozen, w_sel)
    y = run(x, w, b, m)
    # The layer input is saved only when the weight trains.
    return y, (x if w_sel is not None else None, w, y, m)

  def bwd(res, g):
    x, w, y, m = res
    g_acc = B.requant_bw(g, y, m, lo=lo, hi=hi)
    if n.op == "conv2d":
      gx = B.conv2d_bw_input(g_acc, w, strides=a["strides"], padding=a["padding"],
                             groups=a["groups"], in_shape=in_shape)
      gw = None if x is None else B.conv2d_bw_weight(
        g_acc, x, strides=a["strides"], padding=a["padding"], groups=a["groups"],
        x_zero=xq.zero, kernel=w.shape[1:3], channels=chans)
    else:
      gx = B.dense_bw_input(g_acc, w)
      gw = None if x is None else B.dense_bw_weight(g_acc, x, x_zero=xq.zero, channels=chans)
    gb = B.bias_bw(g_acc) if plan.bias else None
    return gx, gw, gb, None, None, None

  f.defvjp(fwd, bwd)
  return f


def _unary_fn(forward: Callable, backward: Callable) -> Callable:
  """custom_vjp of a one-input op whose backward needs (g, x, y)."""

  @jax.custom_vjp
  def f(x):
    return forward(x)

  def fwd(x):
    y = forward(x)
    return y, (x, y)

  def bwd(res, g):
    return (backward(g, *res),)

  f.defvjp(fwd, bwd)
  return f


def _node_fn(qm: QModel, n: Node) -> Callable:
  """The differentiable function of a non-parametric node."""
  t, a = qm.tensors, n.attrs
  zx = [t[i].qparams.zero for i in n.inputs]
  zy = t[n.output].qparams.zero
  in_shape = t[n.inputs[0]].shape
  if n.op == "add":
    kw = dict(a_mult=a["a_mult"], b_mult=a["b_mult"], m=a["m"], lo=a["lo"], hi=a["hi"])

    @jax.custom_vjp
    def add(x1, x2):
      return P.qadd(x1, x2, a_zero=zx[0], b_zero=zx[1], y_zero=zy, **kw)

    def fwd(x1, x2):
      y = add(x1, x2)
      return y, y

    def bwd(y, g):
      return B.add_bw(g, y, **kw)

    add.defvjp(fwd, bwd)
    return add
  if n.op == "avgpool":
    m = n.arrays["multiplier"]
    pool = dict(window=a["window"], strides=a["strides"], padding=a["padding"])
    return _unary_fn(
      lambda x: P.qavgpool(x, m, x_zero=zx[0], y_zero=zy, lo=a["lo"], hi=a["hi"], **pool),
      lambda g, x, y: B.avgpool_bw(g, y, m, lo=a["lo"], hi=a["hi"], in_shape=in_shape, **pool))
  if n.op == "maxpool":
    pool = dict(window=a["window"], strides=a["strides"], padding=a["padding"])
    return _unary_fn(lambda x: P.qmaxpool(x, **pool),
                     lambda g, x, y: B.maxpool_bw(g, x, y, **pool))
  if n.op == "clamp":
    return _unary_fn(
      lambda x: P.qrequant(x, x_zero=zy, m=1.0, y_zero=zy, lo=a["lo"], hi=a["hi"]),
      lambda g, x, y: B.requant_bw(g, y, 1.0, lo=a["lo"], hi=a["hi"]))
  if n.op == "reshape":
    out_shape = t[n.output].shape
    return _unary_fn(lambda x: P.qreshape(x, shape=out_shape),
                     lambda g, x, y: P.qreshape(g, shape=in_shape))
  if n.op == "concat":
    sizes = [t[i].shape[a["axis"] - 1] for i in n.inputs]
    identity = [z == zy and m == 1.0 for z, m in zip(zx, a["mults"])]

    @jax.custom_vjp
    def concat(*xs):
      return P.qconcat(xs, axis=a["axis"], zeros=zx, mults=a["mults"], y_zero=zy)

    def cfwd(*xs):
      y = concat(*xs)
      return y, y

    def cbwd(y, g):
      return tuple(B.concat_bw(g, y, axis=a["axis"], sizes=sizes, mults=a["mults"],
                               identity=identity))

    concat.defvjp(cfwd, cbwd)
    return concat
  raise NotImplementedError(f"{n.op} has no training rule")


def train_forward(qm: QModel, plans: dict[str, LayerPlan], weights: dict[str, Any],
                  handles: dict[str, Any], biases: dict[str, Any], x: jax.Array
                  ) -> jax.Array:
  """Logits carrier of a batch, differentiable in `weights` (trained channels) and
  `handles` (zero bias handles). `biases` hold the current int32 biases of trained layers;
  everything else comes from the model's constants."""
  env = {qm.input_id: x.reshape((x.shape[0], *qm.tensors[qm.input_id].shape))}
  for n in qm.nodes:
    ins = [env[i] for i in n.inputs]
    if n.op in ("conv2d", "dense"):
      plan = plans.get(n.name, LayerPlan(None, False, 0, False))
      p = qm.params[n.name]
      f = _linear_fn(qm, n, plan)
      env[n.output] = f(ins[0], weights.get(n.name), handles.get(n.name),
                        jnp.asarray(p["weight"], jnp.float32),
                        biases.get(n.name, jnp.asarray(p["bias"])),
                        jnp.asarray(n.arrays["multiplier"]))
    else:
      env[n.output] = _node_fn(qm, n)(*ins)
  return env[qm.output_id]
