"""`quantize`: a Flax model and calibration data -> an int8 QModel.

Steps: trace the float graph (`jaxtiny.trace`), fuse clamps (ReLU, ReLU6) into their
producers, run the float graph on the calibration batches to find every tensor's range,
then quantize: activations per tensor (asymmetric), weights per output channel
(symmetric), biases to int32, multipliers to float32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxtiny.errors import InputError, JaxtinyError, UnsupportedError
from jaxtiny.graph import Node, assign_layer_indices, consumers, intersect_bounds
from jaxtiny.numerics import (
  QParams,
  add_multipliers,
  clamp_bounds,
  multiplier,
  qparams_from_range,
  quantize_bias,
  quantize_weight,
  weight_scales,
)
from jaxtiny.qmodel import QModel, TensorSpec
from jaxtiny.trace import trace_float_graph

_FUSABLE = ("conv2d", "dense", "add", "avgpool")


def fuse_clamps(nodes: list[Node], output: int) -> list[Node]:
  """Fold each clamp into its producer when nothing else reads the producer's output."""
  nodes = [Node(n.op, n.name, n.inputs, n.output, dict(n.attrs), n.arrays) for n in nodes]
  for n in nodes:
    if n.op in _FUSABLE:
      n.attrs.setdefault("act_lo", None)
      n.attrs.setdefault("act_hi", None)
  by_output = {n.output: n for n in nodes}
  kept: list[Node] = []
  readers = consumers(nodes)
  for n in nodes:
    src = by_output.get(n.inputs[0]) if n.op == "clamp" else None
    if src is not None and src.op in _FUSABLE and len(readers[src.output]) == 1 \
        and src.output != output:
      lo, hi = intersect_bounds(src.attrs["act_lo"], src.attrs["act_hi"], n.attrs["lo"],
                                n.attrs["hi"])
      src.attrs.update(act_lo=lo, act_hi=hi)
      del by_output[src.output]
      src.output = n.output  # the producer now writes the clamped tensor
      by_output[n.output] = src
      readers = consumers([m for m in nodes if m is not n])
      continue
    kept.append(n)
  return kept


# --- float execution (calibration, and the reference the tests compare against) -------


def _clip(y, attrs):
  lo, hi = attrs.get("act_lo", attrs.get("lo")), attrs.get("act_hi", attrs.get("hi"))
  if lo is not None:
    y = jnp.maximum(y, lo)
  if hi is not None:
    y = jnp.minimum(y, hi)
  return y


def _float_node(n: Node, ins: list, shapes: dict, p: dict) -> jax.Array:
  a = n.attrs
  if n.op == "conv2d":
    y = lax.conv_general_dilated(ins[0], p["weight"], a["strides"], a["padding"],
                                 dimension_numbers=("NHWC", "OHWI", "NHWC"),
                                 feature_group_count=a["groups"],
                                 precision=lax.Precision.HIGHEST)
    return _clip(y + p["bias"], a)
  if n.op == "dense":
    y = jnp.dot(ins[0], p["weight"].T, precision=lax.Precision.HIGHEST)
    return _clip(y + p["bias"], a)
  if n.op == "add":
    return _clip(ins[0] + ins[1], a)
  if n.op == "avgpool":
    s = lax.reduce_window(ins[0], 0.0, lax.add, (1, *a["window"], 1), (1, *a["strides"], 1),
                          ((0, 0), *a["padding"], (0, 0)))
    f = n.arrays["factor"]
    return _clip(s * (f if f.ndim == 0 else f[None, :, :, None]).astype(np.float32), a)
  if n.op == "maxpool":
    return lax.reduce_window(ins[0], -jnp.inf, lax.max, (1, *a["window"], 1),
                             (1, *a["strides"], 1), ((0, 0), *a["padding"], (0, 0)))
  if n.op == "clamp":
    return _clip(ins[0], a)
  if n.op == "concat":
    return jnp.concatenate(ins, axis=a["axis"])
  if n.op == "reshape":
    return ins[0].reshape((ins[0].shape[0], *shapes[n.output]))
  raise UnsupportedError(f"float node {n.op}")


def float_forward(nodes: list[Node], shapes: dict, input_id: int, x: jax.Array,
                  params: dict | None = None) -> dict[int, jax.Array]:
  """Run the float graph; every tensor by id. `params` ({layer: {"weight", "bias"}})
  override the weights and biases held by the nodes (for float training)."""
  params = params or {}
  env = {input_id: x.reshape((x.shape[0], *shapes[input_id]))}
  for n in nodes:
    env[n.output] = _float_node(n, [env[i] for i in n.inputs], shapes,
                                params.get(n.name, n.arrays))
  return env


def dequantized_graph(qm: QModel) -> tuple[list[Node], dict[int, tuple[int, ...]]]:
  """The float graph of a QModel: weights and biases dequantized, every requantizing op
  clamped to the real range of its int8 output (which is how the imported models express
  ReLU6). The fp32 counterpart of the same network, for baselines."""
  t = qm.tensors
  nodes = []
  for n in qm.nodes:
    y = t[n.output].qparams
    x = t[n.inputs[0]].qparams
    a, arrays = n.attrs, {}
    attrs = {k: v for k, v in a.items() if k in ("strides", "padding", "groups", "window",
                                                   "axis")}
    if n.op in _FUSABLE:
      attrs["act_lo"] = y.scale * (a["lo"] - y.zero)
      attrs["act_hi"] = y.scale * (a["hi"] - y.zero)
    if n.op in ("conv2d", "dense"):
      p = qm.params[n.name]
      s_w = n.arrays["w_scale"].astype(np.float64)
      w = p["weight"] * s_w.reshape((-1,) + (1,) * (p["weight"].ndim - 1))
      arrays = {"weight": w.astype(np.float32),
                "bias": (p["bias"] * x.scale * s_w).astype(np.float32)}
    elif n.op == "avgpool":
      arrays = {"factor": n.arrays["multiplier"].astype(np.float64) * y.scale / x.scale}
    elif n.op == "clamp":
      attrs["lo"], attrs["hi"] = y.scale * (a["lo"] - y.zero), y.scale * (a["hi"] - y.zero)
    nodes.append(Node(n.op, n.name, n.inputs, n.output, attrs, arrays, n.index))
  return nodes, {k: v.shape for k, v in t.items()}


def calibrate(nodes: list[Node], shapes: dict, input_id: int, batches: Iterable[np.ndarray]
              ) -> dict[int, tuple[float, float]]:
  """Min and max of every tensor over the calibration batches."""

  @jax.jit
  def ranges(x):
    env = float_forward(nodes, shapes, input_id, x)
    return {t: (jnp.min(v), jnp.max(v)) for t, v in env.items()}

  lo: dict[int, float] = {}
  hi: dict[int, float] = {}
  for x in batches:
    for t, (a, b) in ranges(jnp.asarray(x, jnp.float32)).items():
      lo[t] = min(lo.get(t, np.inf), float(a))
      hi[t] = max(hi.get(t, -np.inf), float(b))
  return {t: (lo[t], hi[t]) for t in lo}


# --- quantization -----------------------------------------------------------------------


def quantize_graph(nodes: list[Node], shapes: dict, input_id: int, output_id: int,
                   ranges: dict[int, tuple[float, float]], input_shape: tuple[int, ...],
                   name: str) -> QModel:
  """Float graph + calibration ranges -> QModel."""
  qp: dict[int, QParams] = {input_id: qparams_from_range(*ranges[input_id])}
  qnodes: list[Node] = []
  params: dict[str, dict[str, np.ndarray]] = {}
  for n in nodes:
    a = n.attrs
    if n.op in ("maxpool", "reshape", "clamp"):
      qp[n.output] = qp[n.inputs[0]]  # value-preserving: the input's parameters carry over
    else:
      qp[n.output] = qparams_from_range(*ranges[n.output])
    x, y = qp[n.inputs[0]], qp[n.output]
    attrs: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    if n.op in _FUSABLE:
      attrs["lo"], attrs["hi"] = clamp_bounds(y, a["act_lo"], a["act_hi"])
    if n.op in ("conv2d", "dense"):
      w = n.arrays["weight"]
      s_w = weight_scales(w, n.arrays["bias"], x.scale)
      params[n.name] = {"weight": quantize_weight(w, s_w),
                        "bias": quantize_bias(n.arrays["bias"], x.scale, s_w, n.name)}
      arrays = {"multiplier": multiplier(x.scale * s_w.astype(np.float64) / y.scale),
                "w_scale": s_w}
      if n.op == "conv2d":
        attrs.update(strides=a["strides"], padding=a["padding"], groups=a["groups"])
    elif n.op == "add":
      am, bm, m = add_multipliers(x.scale, qp[n.inputs[1]].scale, y.scale)
      attrs.update(a_mult=am, b_mult=bm, m=m)
    elif n.op == "avgpool":
      attrs.update(window=a["window"], strides=a["strides"], padding=a["padding"])
      arrays = {"multiplier": multiplier(x.scale * n.arrays["factor"] / y.scale)}
    elif n.op == "maxpool":
      attrs.update(window=a["window"], strides=a["strides"], padding=a["padding"])
    elif n.op == "clamp":
      attrs["lo"], attrs["hi"] = clamp_bounds(y, a["lo"], a["hi"])
    elif n.op == "concat":
      attrs.update(axis=a["axis"],
                   mults=tuple(float(multiplier(qp[i].scale / y.scale)) for i in n.inputs))
    qnodes.append(Node(n.op, n.name, n.inputs, n.output, attrs, arrays))
  assign_layer_indices(qnodes)
  tensors = {t: TensorSpec(shapes[t], qp[t]) for t in qp}
  return QModel(qnodes, tensors, input_id, output_id, params, input_shape, name)


def _as_function(module: Any, variables: Any, apply_kwargs: dict
                 ) -> tuple[Callable[[jax.Array], jax.Array], str]:
  """A Flax linen module (with variables), an NNX module, or a plain function of x."""
  try:
    from flax import linen as nn
    from flax import nnx
  except ImportError:  # pragma: no cover - flax is a dependency
    nn = nnx = None
  if nn is not None and isinstance(module, nn.Module):
    if variables is None:
      raise InputError("quantize: a Flax linen module needs its variables")
    return (lambda x: module.apply(variables, x, **apply_kwargs)), type(module).__name__
  if nnx is not None and isinstance(module, nnx.Module):
    graphdef, state = nnx.split(module)
    return (lambda x: nnx.merge(graphdef, state)(x, **apply_kwargs)), type(module).__name__
  if callable(module):
    if variables is None:
      return (lambda x: module(x, **apply_kwargs)), getattr(module, "__name__", "model")
    return (lambda x: module(variables, x, **apply_kwargs)), getattr(module, "__name__",
                                                                     "model")
  raise InputError(f"quantize: cannot run a {type(module).__name__}")


def quantize(module: Any, variables: Any, calib_inputs: Any, *, batch_size: int = 256,
             name: str | None = None, **apply_kwargs: Any) -> QModel:
  """Quantize a Flax model to an int8 QModel.

  module: a Flax linen Module (with `variables`), an NNX Module (`variables` ignored,
  may be None), or a function `f(variables, x)`. calib_inputs: float array (N, ...) in the
  model's input layout (NHWC images, (N, L, C) signals, (N, K) features), used to set the
  activation ranges; `apply_kwargs` go to the model call (e.g. `train=False`).
  """
  calib = np.asarray(calib_inputs)
  if not np.issubdtype(calib.dtype, np.floating):
    raise InputError(f"calib_inputs must be floating point, got {calib.dtype}")
  if calib.ndim < 2 or calib.shape[0] == 0:
    raise InputError(f"calib_inputs must be a non-empty batch (N, ...), got {calib.shape}")
  if not np.all(np.isfinite(calib)):
    raise InputError("calib_inputs contain NaN or infinite values")
  fn, default_name = _as_function(module, variables, apply_kwargs)
  # Trace with a batch of 2 so a reshape that keeps the batch axis is told apart from one
  # that folds it.
  example = np.concatenate([calib[:1], calib[:1]]).astype(np.float32)
  try:
    b, input_id, output_id = trace_float_graph(fn, example)
  except JaxtinyError:
    raise
  except Exception as e:
    raise InputError(
      f"quantize: calling the model on a batch of calib_inputs (each of shape "
      f"{tuple(calib.shape[1:])}) failed with {type(e).__name__}: {e}\ncalib_inputs must be a "
      "batch (N, ...) in the model's input layout (NHWC images, (N, L, C) signals, (N, K) "
      "features): one example needs a batch axis, x[None]") from e
  nodes = fuse_clamps(b.nodes, output_id)
  batches = (calib[i:i + batch_size] for i in range(0, len(calib), batch_size))
  ranges = calibrate(nodes, b.shapes, input_id, batches)
  return quantize_graph(nodes, b.shapes, input_id, output_id, ranges, tuple(calib.shape[1:]),
                        name or default_name)
