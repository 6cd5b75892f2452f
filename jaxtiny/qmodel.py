"""QModel: an int8 graph whose `apply` computes exactly what the device computes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from os import PathLike
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtiny import primitives as P
from jaxtiny.errors import InputError
from jaxtiny.graph import LINEAR_OPS, Node, peak_live_bytes
from jaxtiny.numerics import INT8_MAX, INT8_MIN, WEIGHT_MAX, QParams, multiplier, quantize_weight

Params = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class TensorSpec:
  shape: tuple[int, ...]  # without the batch axis
  qparams: QParams


def _run_conv2d(n: Node, ins, p, t):
  a = n.attrs
  return P.qconv2d(ins[0], p["weight"], p["bias"], n.arrays["multiplier"],
                   strides=a["strides"], padding=a["padding"], groups=a["groups"],
                   x_zero=t[n.inputs[0]].qparams.zero, y_zero=t[n.output].qparams.zero,
                   lo=a["lo"], hi=a["hi"])


def _run_dense(n: Node, ins, p, t):
  return P.qdense(ins[0], p["weight"], p["bias"], n.arrays["multiplier"],
                  x_zero=t[n.inputs[0]].qparams.zero, y_zero=t[n.output].qparams.zero,
                  lo=n.attrs["lo"], hi=n.attrs["hi"])


def _run_add(n: Node, ins, p, t):
  a = n.attrs
  return P.qadd(ins[0], ins[1], a_zero=t[n.inputs[0]].qparams.zero,
                b_zero=t[n.inputs[1]].qparams.zero, a_mult=a["a_mult"], b_mult=a["b_mult"],
                m=a["m"], y_zero=t[n.output].qparams.zero, lo=a["lo"], hi=a["hi"])


def _run_avgpool(n: Node, ins, p, t):
  a = n.attrs
  return P.qavgpool(ins[0], n.arrays["multiplier"], window=a["window"], strides=a["strides"],
                    padding=a["padding"], x_zero=t[n.inputs[0]].qparams.zero,
                    y_zero=t[n.output].qparams.zero, lo=a["lo"], hi=a["hi"])


def _run_maxpool(n: Node, ins, p, t):
  a = n.attrs
  return P.qmaxpool(ins[0], window=a["window"], strides=a["strides"], padding=a["padding"])


def _run_clamp(n: Node, ins, p, t):
  qp = t[n.output].qparams
  return P.qrequant(ins[0], x_zero=qp.zero, m=1.0, y_zero=qp.zero, lo=n.attrs["lo"],
                    hi=n.attrs["hi"])


def _run_concat(n: Node, ins, p, t):
  return P.qconcat(ins, axis=n.attrs["axis"], zeros=[t[i].qparams.zero for i in n.inputs],
                   mults=n.attrs["mults"], y_zero=t[n.output].qparams.zero)


def _run_reshape(n: Node, ins, p, t):
  return P.qreshape(ins[0], shape=t[n.output].shape)


RUNNERS: dict[str, Callable] = {
  "conv2d": _run_conv2d, "dense": _run_dense, "add": _run_add, "avgpool": _run_avgpool,
  "maxpool": _run_maxpool, "clamp": _run_clamp, "concat": _run_concat,
  "reshape": _run_reshape,
}


class QModel:
  """An int8 network: nodes over quantized tensors, int8 weights and int32 biases.

  `params` maps each conv/dense layer's name to {"weight": int8 OHWI or (O, K),
  "bias": int32 (O,)}; everything else about a node (multipliers, weight scales,
  strides, clamps) is fixed at quantization time and lives in the node.
  """

  def __init__(self, nodes: list[Node], tensors: Mapping[int, TensorSpec], input_id: int,
               output_id: int, params: Params, input_shape: tuple[int, ...] | None = None,
               name: str = "model"):
    self.nodes = nodes
    self.tensors = dict(tensors)
    self.input_id = input_id
    self.output_id = output_id
    self.params = {k: {"weight": np.asarray(v["weight"], np.int8),
                       "bias": np.asarray(v["bias"], np.int32)} for k, v in params.items()}
    # The user's input layout (a 1-D signal (L, C) runs as (1, L, C) inside).
    self.input_shape = tuple(input_shape or self.tensors[input_id].shape)
    self.name = name
    self._jitted = jax.jit(self.forward)
    self._device_params: Params | None = None

  # --- quantization of the boundary -----------------------------------------------------

  @property
  def input_qparams(self) -> QParams:
    return self.tensors[self.input_id].qparams

  @property
  def output_qparams(self) -> QParams:
    return self.tensors[self.output_id].qparams

  @property
  def output_shape(self) -> tuple[int, ...]:
    return self.tensors[self.output_id].shape

  def _check_shape(self, x: Any, what: str) -> None:
    if tuple(x.shape[1:]) != self.input_shape or x.ndim != len(self.input_shape) + 1:
      dims = ", ".join(map(str, self.input_shape))
      raise InputError(f"{what}: expected a batch of shape (N, {dims}) for model "
                       f"'{self.name}', got {tuple(x.shape)}")

  def quantize_input(self, x: Any) -> np.ndarray:
    """Float batch -> int8: clamp(rne(f32(x) * f32(1/s)) + z) with the input's parameters."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
      raise InputError(f"quantize_input expects a floating-point batch, got {x.dtype}")
    self._check_shape(x, "quantize_input")
    if not np.all(np.isfinite(x)):
      raise InputError("quantize_input: the batch contains NaN or infinite values")
    return self.input_qparams.quantize(x)

  def dequantize_output(self, y8: Any) -> np.ndarray:
    return self.output_qparams.dequantize(np.asarray(y8))

  # --- execution --------------------------------------------------------------------------

  def forward(self, params: Params, x: jax.Array) -> jax.Array:
    """Pure function of (params, float32 carrier batch) -> float32 carrier logits.

    Differentiable entry point for training; `apply` is the int8 front door.
    """
    env = {self.input_id: x.reshape((x.shape[0], *self.tensors[self.input_id].shape))}
    for n in self.nodes:
      ins = [env[i] for i in n.inputs]
      env[n.output] = RUNNERS[n.op](n, ins, params.get(n.name), self.tensors)
    return env[self.output_id]

  def device_params(self) -> Params:
    """Params as the simulation carries them: weights as float32 carriers, int32 biases."""
    if self._device_params is None:
      self._device_params = {
        k: {"weight": jnp.asarray(v["weight"], jnp.float32), "bias": jnp.asarray(v["bias"])}
        for k, v in self.params.items()}
    return self._device_params

  def apply(self, x8: Any) -> jax.Array:
    """int8 batch (N, *input_shape) -> int8 logits, exactly as the device computes them."""
    dtype = getattr(x8, "dtype", None)
    if dtype != np.int8:
      raise InputError(f"apply expects an int8 batch, got {dtype or type(x8).__name__}; "
                       "use quantize_input for float data")
    self._check_shape(x8, "apply")
    y = self._jitted(self.device_params(), jnp.asarray(x8, jnp.float32))
    return y.astype(jnp.int8)

  def with_params(self, params: Params) -> QModel:
    """The same network with other int8 weights and int32 biases (e.g. after training)."""
    missing = set(self.params) - set(params)
    if missing:
      raise KeyError(f"params lack layers {sorted(missing)}")
    for k, v in params.items():
      for key, ref in self.params[k].items():
        if np.shape(v[key]) != ref.shape:
          raise InputError(f"{k}.{key}: shape {np.shape(v[key])} != {ref.shape}")
    return QModel(self.nodes, self.tensors, self.input_id, self.output_id, params,
                  self.input_shape, self.name)

  def save(self, path: str | PathLike) -> None:
    """Write the model to a file (`.jtq` by convention; docs/qmodel_file.md) that
    `jt.load_qmodel(path)` reads back, verified, computing exactly what this one does."""
    from jaxtiny.qmodel_file import save_qmodel  # it builds on this module: import it late

    save_qmodel(self, path)

  # --- derived models -------------------------------------------------------------------

  def split(self, index: int) -> tuple[QModel, QModel]:
    """(prefix, suffix) cut at the input of layer `index`: prefix.apply gives the int8
    tensor that suffix.apply continues from, so suffix(prefix(x)) == self(x) bit for bit.

    Training a scheme whose earliest trained layer is at or after `index` on cached prefix
    outputs is exactly training the whole model, at a fraction of the cost.
    """
    cut_node = self.layer(index)
    pos = self.nodes.index(cut_node)
    cut = cut_node.inputs[0]
    before, after = self.nodes[:pos], self.nodes[pos:]
    produced = {n.output for n in before} | {self.input_id}
    crossing = {t for n in after for t in n.inputs if t in produced} - {cut}
    if crossing:
      raise ValueError(f"cannot split '{self.name}' at layer {index}: tensors {sorted(crossing)}"
                       " made before it are read after it (a residual crosses the cut)")

    def keep(nodes: list[Node], extra: set[int]) -> dict[int, TensorSpec]:
      return {t: self.tensors[t] for t in {n.output for n in nodes} | extra}

    prefix = _Prefix(before, keep(before, {self.input_id}), self.input_id, cut, self.params,
                     self.input_shape, f"{self.name}[:{index}]")
    suffix = QModel(after, keep(after, {cut}), cut, self.output_id,
                    {k: v for k, v in self.params.items() if any(n.name == k for n in after)},
                    name=f"{self.name}[{index}:]")
    return prefix, suffix

  def with_classifier(self, num_classes: int, seed: int = 0, logit_range: float = 16.0
                      ) -> QModel:
    """The same network with a new trainable dense classifier of `num_classes` outputs.

    Weights are drawn from N(0, 1/K) (K inputs) and quantized per output channel with
    the range +-4 standard deviations, so learned weights have room to grow; the bias
    starts at 0; the logits are quantized symmetrically over [-logit_range, logit_range].
    """
    cls = self.classifier
    if cls.op != "dense" or cls.output != self.output_id:
      raise ValueError("with_classifier needs a dense classifier that produces the output")
    if num_classes < 2:
      raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    k = self.tensors[cls.inputs[0]].shape[0]
    sx = self.tensors[cls.inputs[0]].qparams.scale
    rng = np.random.default_rng(seed)
    sigma = 1.0 / np.sqrt(k)
    w = rng.normal(0.0, sigma, (num_classes, k))
    s_w = np.full(num_classes, 4 * sigma / WEIGHT_MAX, np.float32)
    yq = QParams(2 * logit_range / 255, 0)
    node = Node("dense", cls.name, cls.inputs, cls.output, dict(cls.attrs, lo=INT8_MIN,
                                                                 hi=INT8_MAX),
                {"multiplier": multiplier(sx * s_w.astype(np.float64) / yq.scale),
                 "w_scale": s_w}, cls.index)
    nodes = [node if n is cls else n for n in self.nodes]
    tensors = dict(self.tensors)
    tensors[cls.output] = TensorSpec((num_classes,), yq)
    params = dict(self.params)
    params[cls.name] = {"weight": quantize_weight(w, s_w),
                        "bias": np.zeros(num_classes, np.int32)}
    return QModel(nodes, tensors, self.input_id, self.output_id, params, self.input_shape,
                  f"{self.name}+head{num_classes}")

  # --- introspection ----------------------------------------------------------------------

  @property
  def layers(self) -> list[Node]:
    """Conv/dense nodes in network order, the classifier included as the last one:
    `layers[i].index == i` below `num_layers`, and the classifier's index is None (sparse
    update indices exclude it; `layer(i)` looks a layer up by index)."""
    return [n for n in self.nodes if n.op in LINEAR_OPS]

  @property
  def num_layers(self) -> int:
    """Indexed layers of the network (the classifier excluded; a split-off suffix keeps
    the indices of the whole network)."""
    return max((n.index for n in self.layers if n.index is not None), default=-1) + 1

  def layer(self, index: int) -> Node:
    for n in self.layers:
      if n.index == index:
        return n
    present = [n.index for n in self.layers if n.index is not None]
    span = f"{min(present)}..{max(present)}" if present else "none"
    raise IndexError(f"layer index {index} is not in model '{self.name}' (layers {span}; "
                     "the classifier has no index)")

  @property
  def classifier(self) -> Node:
    return self.layers[-1]

  def flash_bytes(self) -> int:
    """Constants a device keeps in flash: int8 weights, int32 biases, f32 multipliers."""
    total = sum(v["weight"].nbytes + v["bias"].nbytes for v in self.params.values())
    total += sum(a.nbytes for n in self.nodes for k, a in n.arrays.items() if k == "multiplier")
    return total

  def inference_bytes(self) -> int:
    """Peak live int8 activations of one inference at batch 1 (nodes in order)."""
    return peak_live_bytes(self.nodes, {t: s.shape for t, s in self.tensors.items()},
                           self.input_id, self.output_id)

  def summary(self) -> str:
    rows = [("idx", "layer", "op", "input", "output", "params", "scale", "zero")]
    for n in self.nodes:
      out = self.tensors[n.output]
      nparams = sum(v.size for v in self.params.get(n.name, {}).values())
      desc = n.op
      if n.op == "conv2d":
        k = self.params[n.name]["weight"].shape
        desc = f"conv {k[1]}x{k[2]}/{n.attrs['strides'][0]}" + (
          " dw" if n.attrs["groups"] > 1 and n.attrs["groups"] == k[0] else
          f" g{n.attrs['groups']}" if n.attrs["groups"] > 1 else "")
      idx = "cls" if n is self.classifier else ("" if n.index is None else str(n.index))
      rows.append((idx, n.name, desc, "x".join(map(str, self.tensors[n.inputs[0]].shape)),
                   "x".join(map(str, out.shape)), str(nparams) if nparams else "",
                   f"{out.qparams.scale:.4g}", str(out.qparams.zero)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    nparams = sum(v.size for p in self.params.values() for v in p.values())
    lines += [
      "",
      f"model '{self.name}': input {self.input_shape} int8, output {self.output_shape} int8",
      f"layers: {len(self.layers) - 1} + classifier; parameters: {nparams:,}",
      f"flash (weights, biases, multipliers): {self.flash_bytes():,} bytes",
      f"inference activations, batch 1 (peak live): {self.inference_bytes():,} bytes",
    ]
    return "\n".join(lines)

  def __repr__(self) -> str:
    return (f"QModel('{self.name}', input={self.input_shape}, output={self.output_shape}, "
            f"layers={len(self.layers)})")


class _Prefix(QModel):
  """The part of a split model before the cut: its output is an int8 feature map."""

  @property
  def classifier(self) -> Node:
    raise AttributeError("a model prefix has no classifier")
