"""`lower(trainer) -> Program`: the whole training step and inference as op lists."""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxtiny.errors import InputError, UnsupportedError
from jaxtiny.numerics import QParams, quantize_with
from jaxtiny.sparse import UpdateCost
from lowering import planner
from lowering.banding import fuse_bottlenecks
from lowering.bottleneck_bw import fuse_bottleneck_backward, trained
from lowering.capture import flatten
from lowering.convert import Lowerer
from lowering.executor import Executor
from lowering.ir import Graph, Op
from lowering.planner import share_in_place
from lowering.schedule import reorder

STATE_DTYPES = {"weights": "i8", "biases": "i32", "opt": "f32", "step": "i32"}


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def _infer_ops(g: Graph, ops: list[Op], logits8: int) -> list[Op]:
  """The forward ops the int8 logits depend on, in program order."""
  need = {g.base(logits8)}
  keep = []
  for op in reversed(ops):
    if any(g.base(t) in need for t in op.outputs):
      keep.append(op)
      need.update(g.base(t) for t in op.inputs)
  return keep[::-1]


def check_input(x8: Any, shape: tuple[int, ...]) -> np.ndarray:
  """One int8 input of `shape`, as a batch of one."""
  x8 = np.asarray(x8)
  if x8.dtype != np.int8:
    raise InputError(f"the program takes an int8 input, got {x8.dtype}")
  if x8.shape != shape:
    raise InputError(f"the program takes one input of shape {shape}, got {x8.shape}")
  return x8.reshape((1, *x8.shape))


def check_label(label: Any, classes: int) -> np.ndarray:
  """An integer scalar or a shape-(1,) integer array (what `Trainer.step` takes at batch
  1), in [0, classes)."""
  a = np.asarray(label)
  if a.dtype.kind not in "iu" or a.shape not in ((), (1,)):
    raise InputError(f"label must be an integer scalar or an integer array of shape (1,), "
                     f"got {type(label).__name__} {a.dtype}{list(a.shape)}: {label!r}")
  v = int(a.reshape(-1)[0])
  if not 0 <= v < classes:
    raise InputError(f"label must lie in [0, {classes}), got {v}")
  return np.array([v], np.int32)


@dataclass(frozen=True)
class IoQuant:
  """How the program's int8 input and logits relate to real values, as float32 constants
  stored in the blob: x8 = clamp(rne(f32(x) * input_inv_scale) + input_zero, -128, 127) (what
  `QModel.quantize_input` computes) and y = output_scale * (y8 - output_zero)."""

  input_inv_scale: float = 1.0
  input_zero: int = 0
  output_scale: float = 1.0
  output_zero: int = 0

  @classmethod
  def of(cls, qin: QParams, qout: QParams) -> IoQuant:
    return cls(float(np.float32(1.0 / qin.scale)), int(qin.zero), float(np.float32(qout.scale)),
               int(qout.zero))

  def quantize_input(self, x: Any) -> np.ndarray:
    """Float values -> int8, bit for bit `jt_quantize_input`; refuses NaN or infinity."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
      raise InputError(f"inputs to quantize must be floating-point, got {x.dtype}")
    if not np.all(np.isfinite(x)):
      raise InputError("the inputs hold NaN or infinite values")
    return quantize_with(x, np.float32(self.input_inv_scale), self.input_zero)

  def dequantize_output(self, y8: Any) -> np.ndarray:
    """int8 logits -> float32, bit for bit `jt_dequantize_output`."""
    return QParams(self.output_scale, self.output_zero).dequantize(np.asarray(y8))


class Program:
  """A lowered training step: tensors, the train and infer op lists, the optimizer."""

  def __init__(self, graph: Graph, train_ops: list[Op], infer_ops: list[Op], io: dict[str, int],
               optimizer: dict, rounding: str, seed: int, name: str = "model",
               plan: planner.Plan | None = None, infer_plan: planner.Plan | None = None,
               quant: IoQuant | None = None):
    self.graph, self.train_ops, self.infer_ops, self.io = graph, train_ops, infer_ops, io
    # hand-built programs in the tests default to the identity
    self.quant = quant if quant is not None else IoQuant()
    self.optimizer, self.rounding, self.seed, self.name = optimizer, rounding, seed, name
    # `plan`: the memory plan stored in a blob (lowering.load); checked like a fresh one.
    self.plan = plan if plan is not None else planner.plan(graph, train_ops)
    self.plan.check()
    offsets = {t: b.offset for t, b in self.plan.buffers.items()}
    # A loaded blob's inference may place tensors the train step never uses (lower() makes
    # inference a subset of the train step): they need offsets too.
    self.infer_plan = infer_plan
    if infer_plan is not None:
      infer_plan.check()
      for t, b in infer_plan.buffers.items():
        offsets.setdefault(t, b.offset)
    self._ex = Executor(graph, optimizer, rounding, seed, offsets, self.plan.arena_bytes)

  @property
  def arena_bytes(self) -> int:
    """Scratch SRAM of a training step (inference runs in the same arena)."""
    return self.plan.arena_bytes

  @property
  def state_bytes(self) -> int:
    """Persistent SRAM: trained weights and biases, optimizer state, the step counter."""
    return sum(t.nbytes for t in self.graph.tensors if t.storage == "state")

  @property
  def flash_bytes(self) -> int:
    """Constants (frozen weights, biases, multipliers, channel lists), 4-byte aligned,
    plus the initial values of the state."""
    return sum((t.nbytes + 3) // 4 * 4 for t in self.graph.tensors
               if t.storage in ("const", "state"))

  @property
  def input_shape(self) -> tuple[int, ...]:
    return self.graph.tensors[self.io["input"]].shape[1:]

  def train_step(self, x8: Any, label: Any) -> float:
    """One training step on one example with the reference executor; returns the loss.
    A loss that is not finite raises NonFiniteLossError before any update runs."""
    io = {self.io["input"]: check_input(x8, self.input_shape),
          self.io["label"]: check_label(label, self.classes)}
    self._ex.run(self.train_ops, io, loss=self.io["loss"])
    return float(self._ex.env[self.io["loss"]])

  @property
  def classes(self) -> int:
    return self.graph.tensors[self.io["logits"]].shape[-1]

  def runtime(self):
    """This program on the host build of the C runtime (`lowering.CRuntime`), from its
    current state: the same calls as the reference executor's, bit for bit what a board
    computes."""
    from lowering.blob import encode  # lowering.blob builds Programs: import it late
    from lowering.cruntime import CRuntime

    return CRuntime(encode(self, "current"))

  def infer(self, x8: Any) -> np.ndarray:
    """int8 logits of one input, with the current trained state."""
    self._ex.run(self.infer_ops, {self.io["input"]: check_input(x8, self.input_shape)})
    return self._ex.get(self.io["logits"])[0].copy()

  def cost(self) -> UpdateCost:
    """What the plan spends on training, in the terms of `jaxtiny.update_cost` (the search's
    cost model, which the tests hold to this): persistent state by kind, the int8 inputs
    kept for weight gradients (and max-pool inputs), the clamp masks, and the peak of live
    float32 gradient bytes."""
    g = self.graph
    state = {k: sum(t.nbytes for t in g.tensors if t.storage == "state" and
                    t.name.split("/")[0] == k) for k in STATE_DTYPES}
    kept = {g.base(op.inputs[1]) for op in self.train_ops
            if op.name in ("conv2d_update_s8", "dense_update_s8")}
    kept |= {g.base(t.x) for t in map(trained, self.train_ops) if t is not None}
    kept |= {g.base(t) for op in self.train_ops if op.name == "maxpool_bw_f32"
             for t in op.inputs[1:]}
    f32 = self.plan.live_bytes({t for t in self.plan.buffers if g.tensors[t].dtype == "f32"})
    return UpdateCost(state["weights"], state["biases"], state["opt"] + state["step"],
                      sum(g.tensors[t].nbytes for t in kept),
                      sum(g.tensors[t].nbytes for t in self.plan.buffers
                          if g.tensors[t].dtype == "bit"), max(f32, default=0))

  def state(self) -> dict[str, np.ndarray]:
    """The persistent state by name (trained parameters, optimizer state, step): copies."""
    return {self.graph.tensors[t].name: v.copy() for t, v in self._ex.state.items()}

  def state_arrays(self) -> dict[int, np.ndarray]:
    """The live persistent state by tensor id: the executor's own arrays (writing into
    them changes what the next step starts from)."""
    return self._ex.state

  def save(self, path: str | PathLike, state: str = "current") -> None:
    """Write the program as a blob (docs/blob.md); `lowering.load(path)` reads it back.

    state: "current" (default) stores what the steps run so far have learned, so a
    loaded program goes on from there; "initial" stores the state as lowered."""
    from lowering.blob import encode  # lowering.blob builds Programs: import it late

    Path(path).write_bytes(encode(self, state))


def lower(trainer, name: str | None = None, *, reorder_updates: bool = True,
          band: bool = True, in_place: bool = True, channelwise: bool = True) -> Program:
  """Lower `trainer`'s step (batch 1) and its inference to a Program.

  The switches turn off one memory technique each (for the benchmark's ablation): updates
  run as early as possible, frozen-prefix bottlenecks run band by band, elementwise ops and
  stride-1 depthwise input gradients run in place, bottlenecks on the backward path run
  their backward one expanded channel at a time.
  """
  state = trainer.init()
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  names = [_path_name(p) for p, _ in leaves]
  closed = trainer.step_jaxpr(state, batch=1)
  prog = flatten(closed, [*names, "input", "label"])
  g = Graph()
  lw = Lowerer(prog, g)
  state_ids = []
  for ref, nm, (_, value) in zip(prog.inputs[:len(names)], names, leaves, strict=True):
    dt = STATE_DTYPES[nm.split("/")[0]]
    data = np.asarray(value)
    if dt == "i8":
      data = data.astype(np.int8)
    tid = g.add(nm, data.shape, dt, "state", np.array(data, order="C"))
    lw.bind(ref, tid)
    state_ids.append(tid)
  x_ref, y_ref = prog.inputs[len(names):]
  io = {"input": g.add("input", x_ref.shape, "i8", "io"),
        "label": g.add("label", y_ref.shape, "i32", "io")}
  lw.bind(x_ref, io["input"])
  lw.bind(y_ref, io["label"])
  lw.run()
  *new_state, loss = prog.outputs
  for ref, tid in zip(new_state, state_ids, strict=True):
    v = lw.tensor(ref)
    if v != tid:
      lw.emit("copy", [v], [tid])
  io["loss"] = g.add("loss", (), "f32", "io")
  lw.emit("copy", [lw.tensor(loss, "f32")], [io["loss"]])
  ops = fuse_bottlenecks(g, lw.ops()) if band else lw.ops()
  if channelwise:
    ops = fuse_bottleneck_backward(g, ops)
  casts = [op for op in ops if op.name == "cast" and g.tensors[op.inputs[0]].dtype == "i8"]
  if len(casts) != 1:
    raise UnsupportedError("lowering: the loss must read the int8 logits exactly once "
                           f"(found {len(casts)} dequantizations)")
  logits8 = casts[0].inputs[0]
  ops = reorder(g, ops, io["loss"], logits8, updates_early=reorder_updates)
  if in_place:
    share_in_place(g, ops)
  infer = _infer_ops(g, [op for op in ops if op.name not in ("mask_s8", "gather_channels_s8")],
                     logits8)
  io["logits"] = g.add("logits", g.tensors[logits8].shape, "i8", "io")
  infer.append(Op("copy", [logits8], [io["logits"]]))
  opt = trainer.optimizer
  spec = {"kind": opt.kind, "momentum": opt.momentum, "b1": opt.b1, "b2": opt.b2,
          "eps": opt.eps, "schedule": opt.lr.kind, "lr": opt.lr.lr, "steps": opt.lr.steps,
          "final": opt.lr.final}
  return Program(g, ops, infer, io, spec, trainer.rounding, trainer.seed,
                 name or trainer.qm.name,
                 quant=IoQuant.of(trainer.qm.input_qparams, trainer.qm.output_qparams))
