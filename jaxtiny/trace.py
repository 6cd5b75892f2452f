"""Read a float network out of a jaxpr: a custom interpreter that builds the float graph.

`trace_float_graph(fn, x)` traces `fn` to a jaxpr and walks its equations with an env
(`read`/`write`). Values are either constants (parameters and everything computed from
them alone, evaluated on the spot) or symbolic activations. A conv/dense result stays
*pending* while per-channel affine operations follow it, so BatchNorm (inference
statistics) and biases fold into the layer; ReLU/ReLU6 become clamp nodes that
`quantize` later fuses into their producer. Rules live in `RULES`, keyed by primitive; a
primitive without a rule raises `UnsupportedError` naming it and the layer it came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, JaxprEqn, Literal

from jaxtiny.errors import UnsupportedError, source_line
from jaxtiny.graph import Node, intersect_bounds
from jaxtiny.registry import registrar

# Call-like primitives whose body is inlined (their param holding the body).
_CALL_PARAMS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr",
                "core_call": "call_jaxpr", "custom_jvp_call": "call_jaxpr",
                "custom_vjp_call": "call_jaxpr", "remat2": "jaxpr", "checkpoint": "jaxpr"}
_PASS_THROUGH = {"copy", "copy_p", "optimization_barrier"}


@dataclass(frozen=True)
class Act:
  """A materialized activation: float-graph tensor `tid`, seen by JAX with `shape`."""

  tid: int
  shape: tuple[int, ...]  # jaxpr shape, batch included


@dataclass(frozen=True)
class PendingLinear:
  """conv/dense output not yet materialized: y = linear(x) * scale[c] + shift[c]."""

  op: str
  x: int
  weight: np.ndarray  # OHWI or (O, K)
  attrs: dict
  scale: np.ndarray
  shift: np.ndarray
  name: str
  shape: tuple[int, ...]


@dataclass(frozen=True)
class PendingPool:
  """A window sum not yet materialized: y = factor * sum over window (x)."""

  x: int
  window: tuple[int, int]
  strides: tuple[int, int]
  padding: tuple[tuple[int, int], tuple[int, int]]
  factor: Any  # scalar or (Ho, Wo)
  name: str
  shape: tuple[int, ...]
  flat: bool = False  # a global reduction whose JAX result has dropped the spatial axes


Sym = Act | PendingLinear | PendingPool
INPUT = "the model input"


def batch_shape(shape: tuple[int, ...]) -> str:
  """A jaxpr activation shape as the user sees it: the trace's batch axis shown as N."""
  return "(" + ", ".join(["N", *map(str, shape[1:])]) + ")" if shape else "()"


def internal_shape(shape: tuple[int, ...], where: str) -> tuple[int, ...]:
  """jaxpr activation shape -> graph shape: NHWC, (N, L, C) as (1, L, C), (N, K) as (K,)."""
  if len(shape) == 4:
    return tuple(shape[1:])
  if len(shape) == 3:
    return (1, *shape[1:])
  if len(shape) == 2:
    return (shape[1],)
  raise UnsupportedError(f"{where}: activations of rank {len(shape)} {batch_shape(shape)} are not "
                         "supported (use NHWC images, (N, L, C) signals or (N, K) features)")


@dataclass
class GraphBuilder:
  batch: int
  nodes: list[Node] = field(default_factory=list)
  shapes: dict[int, tuple[int, ...]] = field(default_factory=dict)
  names: dict[str, int] = field(default_factory=dict)
  where: str = ""  # the layer being interpreted, for error messages
  src: str = ""  # its source line (or that of the call it is inside)
  within: str = ""  # the named jax function it is inside (jax.nn.leaky_relu: "leaky_relu")
  operand: Sym | None = None  # its first activation operand (named only in messages)
  # Pending values already emitted, by identity: a value read twice is computed once.
  _emitted: dict[int, tuple[Sym, Act]] = field(default_factory=dict)
  _by_output: dict[int, Node] = field(default_factory=dict)

  def new_tensor(self, shape: tuple[int, ...]) -> int:
    tid = len(self.shapes)
    self.shapes[tid] = tuple(int(d) for d in shape)
    return tid

  def unique(self, name: str) -> str:
    k = self.names.get(name, 0)
    self.names[name] = k + 1
    return name if k == 0 else f"{name}_{k}"

  def emit(self, op: str, name: str, inputs: tuple[int, ...], shape: tuple[int, ...],
           attrs: dict | None = None, arrays: dict | None = None) -> int:
    out = self.new_tensor(shape)
    self.nodes.append(Node(op, self.unique(name), inputs, out, attrs or {}, arrays or {}))
    self._by_output[out] = self.nodes[-1]
    return out

  def node_of(self, tid: int) -> Node | None:
    """The node that writes tensor tid (None for the model input)."""
    return self._by_output.get(tid)

  def producer(self, v: Sym) -> str:
    """What computes a symbolic value, as a user would name it."""
    if isinstance(v, PendingLinear | PendingPool):
      return f"'{v.name}'"
    n = self.node_of(v.tid)
    if n is None:
      return INPUT
    if n.op in ("clamp", "reshape"):  # named by the layer they follow
      what = "the clamp (ReLU)" if n.op == "clamp" else "the reshape"
      return f"{what} of {self.producer(Act(n.inputs[0], ()))}"
    return f"'{n.name}'"

  def context(self) -> str:
    parts = [f"in layer '{self.where}'"] if self.where else []
    if self.within:
      parts.append(f"inside jax's '{self.within}'")
    if self.operand is not None:
      after = self.producer(self.operand)
      parts.append("applied to " + (after if after == INPUT else f"the output of {after}"))
    if self.src:
      parts.append(f"at {self.src}")
    return ", ".join(parts)

  def fail(self, what: str) -> UnsupportedError:
    return UnsupportedError(f"{what} ({self.context()})")

  def materialize(self, v: Sym) -> Act:
    """Emit the node a pending value stands for (once, however often it is read)."""
    if isinstance(v, Act):
      return v
    if id(v) not in self._emitted:
      self._emitted[id(v)] = (v, self._emit_pending(v))  # keeps v alive, so its id is unique
    return self._emitted[id(v)][1]

  def pooled_shape(self, v: PendingPool) -> tuple[int, int, int]:
    """The graph shape (Ho, Wo, C) of a pooling sum."""
    h, w, c = self.shapes[v.x]
    return ((h + sum(v.padding[0]) - v.window[0]) // v.strides[0] + 1,
            (w + sum(v.padding[1]) - v.window[1]) // v.strides[1] + 1, c)

  def _emit_pending(self, v: PendingLinear | PendingPool) -> Act:
    if isinstance(v, PendingLinear):
      shape = (-1,) + (1,) * (v.weight.ndim - 1)
      w = (v.weight.astype(np.float64) * v.scale.reshape(shape)).astype(np.float32)
      tid = self.emit(v.op, v.name, (v.x,), internal_shape(v.shape, v.name), dict(v.attrs),
                      {"weight": w, "bias": v.shift.astype(np.float32)})
      return Act(tid, v.shape)
    x_shape = self.shapes[v.x]
    factor = np.asarray(v.factor, np.float64)
    tid = self.emit("avgpool", v.name, (v.x,), self.pooled_shape(v),
                    {"window": v.window, "strides": v.strides, "padding": v.padding},
                    {"factor": factor})
    if v.flat:
      tid = self.emit("reshape", v.name + "_flat", (tid,), (x_shape[2],))
    return Act(tid, v.shape)


def _layer_name(eqn: JaxprEqn, fallback: str) -> str:
  stack = str(eqn.source_info.name_stack)
  parts = [p for p in stack.split("/") if p and not p.startswith(("jvp(", "transpose("))]
  # The first part is the top-level module's class: an op directly inside it is named by
  # its kind.
  return ".".join(parts[1:]) if len(parts) > 1 else fallback


def _is_const(v: Any) -> bool:
  return not isinstance(v, Act | PendingLinear | PendingPool)


def _channel_vector(c: np.ndarray, v: Sym, b: GraphBuilder) -> np.ndarray:
  """A constant that broadcasts along the channel (last) axis only -> its vector."""
  shape = v.shape
  c = np.asarray(c)
  if c.ndim > len(shape) or any(d != 1 for d in c.shape[:-1]):
    raise b.fail(f"an elementwise constant of shape {c.shape} on an activation of shape "
                 f"{batch_shape(shape)} varies along more than the channel axis")
  return np.broadcast_to(c.reshape(-1), (shape[-1],)).astype(np.float64)


# --- rules ---------------------------------------------------------------------------

Rule = Callable[[GraphBuilder, JaxprEqn, list], Any]
RULES: dict[str, Rule] = {}
rule = registrar(RULES)


@rule("conv_general_dilated")
def _conv(b: GraphBuilder, eqn: JaxprEqn, ins: list) -> Sym:
  x, w = ins
  p = eqn.params
  if not _is_const(w):
    raise b.fail("a convolution whose kernel depends on the input")
  if _is_const(x):
    raise b.fail("a convolution of a constant")
  x = b.materialize(x)
  nd = len(x.shape)
  dn = p["dimension_numbers"]
  channels_last = (0, nd - 1, *range(1, nd - 1))
  if tuple(dn.lhs_spec) != channels_last or tuple(dn.out_spec) != channels_last:
    raise b.fail("convolutions must be channels-last (NHWC / NLC)")
  if any(d != 1 for d in (*p["lhs_dilation"], *p["rhs_dilation"])) or p[
      "batch_group_count"] != 1:
    raise b.fail("dilated, transposed and batch-grouped convolutions are not supported")
  if nd not in (3, 4):
    raise b.fail(f"{nd - 2}-D convolutions are not supported")
  rs = dn.rhs_spec
  weight = np.asarray(w, np.float32).transpose(rs[0], *rs[2:], rs[1])  # -> O, spatial, I
  strides, padding = tuple(p["window_strides"]), tuple(tuple(q) for q in p["padding"])
  _check_padding(b, padding, "convolution")
  if nd == 3:  # a 1-D convolution runs as a 2-D one with H = 1
    weight = weight[:, None]
    strides, padding = (1, *strides), ((0, 0), *padding)
  o = weight.shape[0]
  return PendingLinear("conv2d", x.tid, weight,
                       {"strides": strides, "padding": padding,
                        "groups": int(p["feature_group_count"])},
                       np.ones(o), np.zeros(o), _layer_name(eqn, "conv"),
                       tuple(eqn.outvars[0].aval.shape))


@rule("dot_general")
def _dot(b: GraphBuilder, eqn: JaxprEqn, ins: list) -> Sym:
  x, w = ins
  (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
  if _is_const(x) or not _is_const(w):
    raise b.fail("a matrix product must be activation @ constant weight")
  x = b.materialize(x)
  w = np.asarray(w, np.float32)
  if lb or rb or tuple(lc) != (len(x.shape) - 1,) or w.ndim != 2 or len(rc) != 1:
    raise b.fail(f"dot_general with dimension numbers {eqn.params['dimension_numbers']} "
                 "is not a dense layer over the last axis")
  weight = w.T if rc[0] == 0 else w  # -> (O, K)
  name = _layer_name(eqn, "dense")
  o = weight.shape[0]
  shape = tuple(eqn.outvars[0].aval.shape)
  if len(x.shape) == 2:
    return PendingLinear("dense", x.tid, weight, {}, np.ones(o), np.zeros(o), name, shape)
  # Dense over the channels of a feature map: a 1x1 convolution.
  return PendingLinear("conv2d", x.tid, weight[:, None, None, :],
                       {"strides": (1, 1), "padding": ((0, 0), (0, 0)), "groups": 1},
                       np.ones(o), np.zeros(o), name, shape)


@rule("add", "sub", "mul", "div", "add_any")
def _arith(b: GraphBuilder, eqn: JaxprEqn, ins: list) -> Sym:
  prim = "add" if eqn.primitive.name == "add_any" else eqn.primitive.name
  x, y = ins
  if not _is_const(x) and not _is_const(y):
    if prim != "add":
      raise b.fail(f"'{prim}' of two activations has no int8 rule")
    a, c = b.materialize(x), b.materialize(y)
    if a.shape != c.shape:
      raise b.fail(f"add of activations with shapes {batch_shape(a.shape)} and "
                   f"{batch_shape(c.shape)} (no broadcasting)")
    tid = b.emit("add", _layer_name(eqn, "add"), (a.tid, c.tid), b.shapes[a.tid])
    return Act(tid, a.shape)
  const_first = _is_const(x)
  v, c = (y, x) if const_first else (x, y)
  if isinstance(v, PendingLinear):
    vec = _channel_vector(c, v, b)
    scale, shift = v.scale, v.shift
    if prim == "add":
      shift = shift + vec
    elif prim == "sub":
      scale, shift = (-scale, vec - shift) if const_first else (scale, shift - vec)
    elif prim == "mul":
      scale, shift = scale * vec, shift * vec
    elif not const_first:
      scale, shift = scale / vec, shift / vec
    else:
      raise b.fail("dividing a constant by an activation has no int8 rule")
    return replace(v, scale=scale, shift=shift, shape=tuple(eqn.outvars[0].aval.shape))
  if isinstance(v, PendingPool) and prim in ("mul", "div") and not (const_first and
                                                                     prim == "div"):
    c = np.asarray(c, np.float64)
    if c.size == 1:
      c = c.reshape(())
    elif c.ndim in (3, 4) and c.shape[0] == 1 and c.shape[-1] == 1 and not v.flat:
      # A per-position divisor (avg_pool with count_include_pad=False): (1, Ho, Wo, 1).
      c = c.reshape(c.shape[1:-1]) if c.ndim == 4 else c.reshape(1, -1)
    else:
      raise b.fail(f"a pooling sum scaled by a constant of shape {c.shape}")
    return replace(v, factor=v.factor * c if prim == "mul" else v.factor / c)
  raise b.fail(f"'{prim}' of an activation and a constant that does not follow a conv/dense "
               "layer or a pooling sum (normalize inputs outside the model)")


@rule("neg")
def _neg(b: GraphBuilder, eqn: JaxprEqn, ins: list) -> Sym:
  v = ins[0]
  if isinstance(v, PendingLinear):
    return replace(v, scale=-v.scale, shift=-v.shift)
  raise b.fail("negating an activation has no int8 rule")


@rule("max", "min")
def _clamp(b: GraphBuilder, eqn: JaxprEqn, ins: list) -> Sym:
  x, y = ins
  v, c = (y, x) if _is_const(x) else (x, y)
  if _is_const(v) or not _is_const(c) or np.asarray(c).size != 1:
    raise b.fail(f"'{eqn.primitive.name}' must be between an activation and a scalar "
                 "(ReLU, ReLU6, clipping)")
  a = b.materialize(v)
  bound = float(np.asarray(c))
  attrs = {"lo": bound, "hi": None} if eqn.primitive.name == "max" else {"lo": None, "hi": bound}
  lo, hi = _chain_bounds(b, a.tid, attrs)
  if lo is not None and hi is not None and lo > hi:
    raise b.fail(f"clamping to [{lo:g}, {hi:g}] leaves no value (every output would be one "
                 "constant): check the bounds and their order")
  tid = b.emit("clamp", _layer_name(eqn, "clamp"), (a.tid,), b.shapes[a.tid], attrs)
  return Act(tid, a.shape)


def _chain_bounds(b: GraphBuilder, tid: int, attrs: dict) -> tuple[float | None, float | None]:
  """The bounds of a clamp on `tid` combined with those of the clamps that produce tid."""
  lo, hi = attrs["lo"], attrs["hi"]
  n = b.node_of(tid)
  while n is not None and n.op == "clamp":
    lo, hi = intersect_bounds(lo, hi, n.attrs["lo"], n.attrs["hi"])
    n = b.node_of(n.inputs[0])
  return lo, hi


def _check_padding(b: GraphBuilder, padding: tuple, what: str,
                   window: tuple[int, ...] | None = None) -> None:
  pads = [int(q) for pair in padding for q in pair]
  if min(pads, default=0) < 0:
    raise b.fail(f"a {what} with negative (cropping) padding {padding}: crop with a slice "
                 "of the input outside the model, or use padding >= 0")
  if window is not None and any(max(pair) >= k for pair, k in zip(padding, window,
                                                                   strict=True)):
    raise b.fail(f"a {what} with padding {padding} as large as its window {window}: some "
                 "windows would hold padding only")


def _window_2d(b: GraphBuilder, x: Act, p: dict) -> tuple:
  dims, strides, pad = p["window_dimensions"], p["window_strides"], p["padding"]
  nd = len(x.shape)
  if nd not in (3, 4) or dims[0] != 1 or dims[-1] != 1 or strides[0] != 1 or strides[-1] != 1 \
      or tuple(pad[0]) != (0, 0) or tuple(pad[-1]) != (0, 0):
    raise b.fail("pooling must slide over the spatial axes of an NHWC / NLC activation")
  if any(d != 1 for d in (*p["base_dilation"], *p["window_dilation"])):
    raise b.fail("dilated pooling is not supported")
  _check_padding(b, tuple(pad[1:-1]), "pooling", tuple(dims[1:-1]))
  window, strides, pad = tuple(dims[1:-1]), tuple(strides[1:-1]), tuple(
    tuple(q) for q in pad[1:-1])
  if nd == 3:
    window, strides, pad = (1, *window), (1, *strides), ((0, 0), *pad)
  return window, strides, pad


@rule("reduce_window_sum")
def _window_sum(b: GraphBuilder, eqn: JaxprEqn, ins: list) -> Sym:
  x = b.materialize(ins[0])
  window, strides, pad = _window_2d(b, x, eqn.params)
  return PendingPool(x.tid, window, strides, pad, 1.0, _layer_name(eqn, "avg_pool"),
                     tuple(eqn.outvars[0].aval.shape))


@rule("reduce_window_max")
def _window_max(b: GraphBuilder, eqn: JaxprEqn, ins: list) -> Sym:
  x = b.materialize(ins[0])
  window, strides, pad = _window_2d(b, x, eqn.params)
  h, w, c = b.shapes[x.tid]
  shape = ((h + sum(pad[0]) - window[0]) // strides[0] + 1,
           (w + sum(pad[1]) - window[1]) // strides[1] + 1, c)
  tid = b.emit("maxpool", _layer_name(eqn, "max_pool"), (x.tid,), shape,
               {"window": window, "strides": strides, "padding": pad})
  return Act(tid, tuple(eqn.outvars[0].aval.shape))


def _global_axes(b: GraphBuilder, x: Act, axes: tuple[int, ...]) -> None:
  if len(x.shape) - 1 in axes:
    raise b.fail(f"a reduction over the channel axis of an activation of shape "
                 f"{batch_shape(x.shape)}: a softmax (or log_softmax) in the model? Return "
                 "the logits and leave the softmax to the loss (jt.softmax_cross_entropy, "
                 "optax.softmax_cross_entropy_with_integer_labels apply it)")
  if tuple(sorted(axes)) != tuple(range(1, len(x.shape) - 1)) or len(x.shape) not in (3, 4):
    raise b.fail(f"a reduction over axes {axes} of an activation of shape "
                 f"{batch_shape(x.shape)} (only global pooling over all spatial axes is "
                 "supported)")


@rule("reduce_sum")
def _reduce_sum(b: GraphBuilder, eqn: JaxprEqn, ins: list) -> Sym:
  x = b.materialize(ins[0])
  _global_axes(b, x, tuple(eqn.params["axes"]))
  h, w, _ = b.shapes[x.tid]
  return PendingPool(x.tid, (h, w), (1, 1), ((0, 0), (0, 0)), 1.0,
                     _layer_name(eqn, "global_pool"),
                     tuple(eqn.outvars[0].aval.shape), flat=True)


@rule("reduce_max")
def _reduce_max(b: GraphBuilder, eqn: JaxprEqn, ins: list) -> Sym:
  x = b.materialize(ins[0])
  _global_axes(b, x, tuple(eqn.params["axes"]))
  h, w, c = b.shapes[x.tid]
  name = _layer_name(eqn, "global_max_pool")
  tid = b.emit("maxpool", name, (x.tid,), (1, 1, c),
               {"window": (h, w), "strides": (1, 1), "padding": ((0, 0), (0, 0))})
  tid = b.emit("reshape", name + "_flat", (tid,), (c,))
  return Act(tid, tuple(eqn.outvars[0].aval.shape))


@rule("reshape", "squeeze", "expand_dims", "broadcast_in_dim")
def _reshape(b: GraphBuilder, eqn: JaxprEqn, ins: list) -> Sym:
  shape = tuple(eqn.outvars[0].aval.shape)
  v = ins[0]
  if isinstance(v, PendingPool) and np.prod(shape) == np.prod(v.shape) and shape[:1] == (
      b.batch,):
    # A pooling sum whose result is reshaped before it is scaled (a mean with keepdims):
    # it stays pending, so the division still folds into it.
    pooled = b.pooled_shape(v)
    new = internal_shape(shape, f"'{eqn.primitive.name}' ({b.context()})")
    if new == pooled:
      return replace(v, flat=False, shape=shape)
    if new == pooled[-1:]:
      return replace(v, flat=True, shape=shape)
  x = b.materialize(v)
  if np.prod(shape) != np.prod(x.shape):
    raise b.fail(f"'{eqn.primitive.name}' broadcasts an activation {batch_shape(x.shape)} -> "
                 f"{batch_shape(shape)}: upsampling, jnp.repeat or jnp.tile of an activation "
                 "has no int8 rule")
  if not shape or shape[0] != b.batch:
    raise b.fail(f"a reshape {batch_shape(x.shape)} -> {shape} that mixes the batch axis "
                 "(keep the batch axis first: x.reshape((x.shape[0], -1)))")
  new = internal_shape(shape, f"'{eqn.primitive.name}' ({b.context()})")
  if new == b.shapes[x.tid]:
    return Act(x.tid, shape)
  return Act(b.emit("reshape", _layer_name(eqn, "reshape"), (x.tid,), new), shape)


@rule("concatenate")
def _concat(b: GraphBuilder, eqn: JaxprEqn, ins: list) -> Sym:
  if any(_is_const(v) for v in ins):
    raise b.fail("concatenating an activation with a constant")
  xs = [b.materialize(v) for v in ins]
  axis, nd = eqn.params["dimension"], len(xs[0].shape)
  if axis == 0:
    raise b.fail("concatenation along the batch axis")
  internal_axis = axis + 1 if nd == 3 else axis
  shape = tuple(eqn.outvars[0].aval.shape)
  tid = b.emit("concat", _layer_name(eqn, "concat"), tuple(x.tid for x in xs),
               internal_shape(shape, f"concatenate ({b.context()})"), {"axis": internal_axis})
  return Act(tid, shape)


@rule("convert_element_type")
def _convert(b: GraphBuilder, eqn: JaxprEqn, ins: list) -> Sym:
  if eqn.params["new_dtype"] != np.float32:
    raise b.fail(f"converting an activation to {eqn.params['new_dtype']}")
  return ins[0]


# --- the interpreter -----------------------------------------------------------------


def _uses(jaxpr: Jaxpr) -> dict:
  uses: dict = {}
  for v in [*(v for e in jaxpr.eqns for v in e.invars), *jaxpr.outvars]:
    if not isinstance(v, Literal):
      uses[v] = uses.get(v, 0) + 1
  return uses


@dataclass(frozen=True)
class _Where:
  """Where an equation sits for error messages: its layer, source line and named call."""

  layer: str = ""
  src: str = ""
  within: str = ""

  def of(self, eqn: JaxprEqn) -> _Where:
    # Inside jax.nn's jitted functions the name stack and the user's source line are lost:
    # the enclosing call's are the ones a user can find.
    return _Where(_layer_name(eqn, "") or self.layer,
                  source_line(eqn.source_info) or self.src, self.within)


def _eval(b: GraphBuilder, jaxpr: Jaxpr, consts: list, args: list,
          outer: _Where | None = None) -> list:
  outer = outer or _Where()
  env: dict = {}
  uses = _uses(jaxpr)

  def read(v):
    return np.asarray(v.val) if isinstance(v, Literal) else env[v]

  def write(v, val):
    # A conv/dense or pool output with several readers is one tensor of the graph: folding a
    # later affine op into it would give each reader its own copy of the layer.
    if isinstance(val, PendingLinear | PendingPool) and uses.get(v, 0) > 1:
      val = b.materialize(val)
    env[v] = val

  for v, val in zip(jaxpr.constvars, consts, strict=True):
    write(v, np.asarray(val))
  for v, val in zip(jaxpr.invars, args, strict=True):
    write(v, val)
  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    here = outer.of(eqn)
    if name in _CALL_PARAMS:
      body = eqn.params[_CALL_PARAMS[name]]
      inner, inner_consts = (body.jaxpr, body.consts) if isinstance(body, ClosedJaxpr) else (
        body, [])
      call = eqn.params.get("name")
      if call and not outer.within:
        here = _Where(here.layer, here.src, str(call))
      outs = _eval(b, inner, inner_consts, ins[len(ins) - len(inner.invars):], here)
    elif all(_is_const(v) for v in ins):
      # Parameter arithmetic (BatchNorm statistics, reshaped biases): evaluate it now.
      outs = eqn.primitive.bind(*ins, **eqn.params)
      outs = [np.asarray(o) for o in (outs if eqn.primitive.multiple_results else [outs])]
    elif name in _PASS_THROUGH:
      outs = ins
    else:
      b.where, b.src, b.within = here.layer, here.src, here.within
      b.operand = next((v for v in ins if not _is_const(v)), None)
      if name not in RULES:
        raise UnsupportedError(f"{name} has no int8 rule ({b.context()}); the supported "
                               "layers are listed in the README's 'Use' section")
      outs = [RULES[name](b, eqn, ins)]
    for v, val in zip(eqn.outvars, outs, strict=True):
      write(v, val)
  return [read(v) for v in jaxpr.outvars]


def trace_float_graph(fn: Callable[[jax.Array], jax.Array], example: np.ndarray
                      ) -> tuple[GraphBuilder, int, int]:
  """Trace `fn` on an example batch and read the float graph out of its jaxpr.

  Returns the builder (nodes, tensor shapes), the input tensor and the output tensor.
  """
  example = np.asarray(example, np.float32)
  closed = jax.make_jaxpr(fn)(example)
  if len(closed.jaxpr.outvars) != 1:
    raise UnsupportedError(f"the model returns {len(closed.jaxpr.outvars)} arrays; "
                           "quantize needs a single array of logits")
  b = GraphBuilder(batch=example.shape[0])
  x = Act(b.new_tensor(internal_shape(example.shape, "input")), tuple(example.shape))
  (out,) = _eval(b, closed.jaxpr, closed.consts, [x])
  if _is_const(out):
    raise UnsupportedError("the model output does not depend on its input")
  out = b.materialize(out)
  if len(out.shape) != 2:
    raise UnsupportedError(f"the model output has shape {out.shape}; quantize expects "
                           "(N, classes) logits")
  return b, x.tid, out.tid
