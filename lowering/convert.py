"""Equations of the flat training step -> the op list of `lowering.ir` (one rule per primitive).

Carriers become device dtypes here: every output of an int8 forward primitive is an int8
tensor, a weight operand an int8 constant (or a trained int8 state tensor), a bias int32.
Rules are registered in RULES right after they are written; an equation without a rule
raises `UnsupportedError` naming the primitive and the line that produced it.

Rewrites that the device needs and JAX does not express are made on the way:
- a clamp mask (1 bit per element) replaces an int8 output that only the backward pass
  reads; the mask op runs right after the forward op;
- a trained layer's input is saved restricted to its trained channels;
- a weight (or bias) gradient and its update become one fused op, so the full fp32
  gradient never exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxtiny.errors import UnsupportedError
from jaxtiny.registry import registrar
from lowering.capture import Eqn, FlatProgram, Ref
from lowering.ir import Graph, Op, device_dtype, dtype_of


@dataclass(frozen=True)
class Merged:
  """A weight whose trained channels live in SRAM: const w, state w_sel, channel list."""

  w: int
  w_sel: int
  sel: int
  axis: int


@dataclass(frozen=True)
class WeightGrad:
  """A weight gradient not yet computed: it is fused into the op of its update."""

  op: str  # conv2d_update_s8 | dense_update_s8
  g: int
  x: int
  attrs: dict


@dataclass(frozen=True)
class BiasGrad:
  g: int


class Lowerer:
  """Builds a Graph from a FlatProgram; `env` maps a Ref to a tensor id or a pending value."""

  def __init__(self, prog: FlatProgram, graph: Graph):
    self.prog, self.g = prog, graph
    self.env: dict[int, Any] = {}
    self._keyed: list[tuple[tuple[int, int], Op]] = []
    self._seq = 0
    self.producer: dict[int, tuple[int, int]] = {}  # tensor -> order key of its op
    self._after: dict[int, int] = {}
    self._consts: dict[tuple[int, str], int] = {}
    self._masks: dict[tuple[int, int, int], int] = {}
    self._gathers: dict[tuple[int, tuple[int, ...], int], int] = {}
    self.eqn: Eqn | None = None

  # --- values ---------------------------------------------------------------------------

  def bind(self, ref: Ref, value: Any) -> None:
    self.env[id(ref)] = value

  def value(self, ref: Ref) -> Any:
    if id(ref) in self.env:
      return self.env[id(ref)]
    if ref.value is None:
      raise self.error(f"a value of shape {ref.shape} has no producer")
    return self.const(ref)

  def const(self, ref: Ref, dtype: str | None = None) -> int:
    """A constant of the jaxpr as a flash tensor, in the device dtype the operand needs."""
    if ref.value is None:
      raise self.error("this operand must be a constant of the step")
    a = np.asarray(ref.value)
    try:
      dt = dtype or device_dtype(a)
    except TypeError as e:
      raise self.error(str(e)) from None
    key = (id(ref), dt)
    if key not in self._consts:
      if dt in ("i8", "i32") and a.dtype.kind == "f":
        if not np.all(np.rint(a) == a):
          raise self.error(f"a float constant used as {dt} holds non-integers")
      self._consts[key] = self.g.const(f"const{len(self._consts)}", a, dt)
    return self._consts[key]

  def tensor(self, ref: Ref, dtype: str | None = None) -> int:
    if id(ref) not in self.env and ref.value is not None:
      return self.const(ref, dtype)
    v = self.value(ref)
    if not isinstance(v, int):
      raise self.error(f"a {type(v).__name__} cannot be used here")
    if dtype is not None and self.g.tensors[v].dtype != dtype:
      raise self.error(f"expected a {dtype} operand, got {self.g.tensors[v].dtype}")
    return v

  def view(self, ref: Ref, x: int) -> int:
    """`ref` as a reshape of tensor x: an alias of its bytes (a constant is reshaped, a
    state tensor copied, since neither has bytes an alias may share)."""
    base = self.g.tensors[self.g.base(x)]
    t = self.g.tensors[x]
    if base.storage == "const":  # constants are never aliased, so x is base
      v = self.g.const(f"const{len(self.g.tensors)}", base.data.reshape(ref.shape), t.dtype)
    elif base.storage == "state":
      v = self.new(ref, t.dtype, "view")
      self.emit("copy", [x], [v])
    else:
      v = self.g.add(f"view{len(self.g.tensors)}", ref.shape, t.dtype, base.storage, alias=x)
    self.bind(ref, v)
    return v

  def new(self, ref: Ref, dtype: str, name: str = "t") -> int:
    tid = self.g.add(f"{name}{len(self.g.tensors)}", ref.shape, dtype)
    self.bind(ref, tid)
    return tid

  # --- ops --------------------------------------------------------------------------------

  def emit(self, name: str, inputs: list[int], outputs: list[int], after: int | None = None,
           **attrs: Any) -> Op:
    """Append an op, or place it right after the producer of tensor `after`."""
    op = Op(name, inputs, outputs, attrs)
    if after is not None and after in self.producer:
      base = self.producer[after]
      self._after[base[0]] = self._after.get(base[0], 0) + 1
      key = (base[0], self._after[base[0]])
    else:
      self._seq += 1
      key = (self._seq, 0)
    self._keyed.append((key, op))
    for t in outputs:
      self.producer.setdefault(t, key)
    return op

  def ops(self) -> list[Op]:
    return [op for _, op in sorted(self._keyed, key=lambda kv: kv[0])]

  def mask(self, y: int, lo: int, hi: int) -> int:
    """The 1-bit clamp mask of an int8 output, computed right after it is produced."""
    key = (y, lo, hi)
    if key not in self._masks:
      t = self.g.tensors[y]
      m = self.g.add(f"mask{len(self.g.tensors)}", t.shape, "bit")
      self.emit("mask_s8", [y], [m], after=y, lo=lo, hi=hi)
      self._masks[key] = m
    return self._masks[key]

  def saved_input(self, x: int, channels: tuple[int, ...] | None, axis: int) -> int:
    """A trained layer's input, restricted to its trained channels (copied after it is
    produced, so the full input can die with the forward pass)."""
    if channels is None:
      return x
    key = (x, channels, axis)
    if key not in self._gathers:
      t = self.g.tensors[x]
      shape = list(t.shape)
      shape[-1] = len(channels)
      sel = self.g.const(f"sel{len(self.g.tensors)}", np.asarray(channels), "i32")
      out = self.g.add(f"saved{len(self.g.tensors)}", shape, "i8")
      self.emit("gather_channels_s8", [x, sel], [out], after=x)
      self._gathers[key] = out
    return self._gathers[key]

  def error(self, msg: str) -> UnsupportedError:
    e = self.eqn
    where = f" (primitive {e.prim}{', ' + e.source if e and e.source else ''})" if e else ""
    return UnsupportedError(f"lowering: {msg}{where}")

  def run(self) -> None:
    for e in self.prog.eqns:
      self.eqn = e
      rule = RULES.get(e.prim)
      if rule is None:
        raise UnsupportedError(f"{e.prim} has no lowering rule"
                               + (f" (from {e.source})" if e.source else ""))
      rule(self, e)
    self.eqn = None


Rule = Callable[[Lowerer, Eqn], None]
RULES: dict[str, Rule] = {}
rule = registrar(RULES)


def _pads(padding) -> dict:
  (pt, pb), (pl, pr) = padding
  return dict(padding=((int(pt), int(pb)), (int(pl), int(pr))))


# --- int8 forward -------------------------------------------------------------------------


def _weight_operands(lw: Lowerer, ref: Ref) -> tuple[list[int], dict]:
  v = lw.env.get(id(ref))
  if isinstance(v, Merged):
    return [v.w, v.w_sel, v.sel], {"sel_axis": v.axis}
  return [lw.tensor(ref, "i8")], {}


@rule("jt_merge_channels")
def _merge(lw: Lowerer, e: Eqn) -> None:
  w, w_sel = e.inputs
  sel = lw.g.const(f"sel{len(lw.g.tensors)}", np.asarray(e.params["channels"]), "i32")
  lw.bind(e.outputs[0], Merged(lw.tensor(w, "i8"), lw.tensor(w_sel, "i8"), sel,
                               e.params["axis"]))


@rule("jt_qconv2d", "jt_qdense")
def _linear(lw: Lowerer, e: Eqn) -> None:
  x, w, b, m = e.inputs
  ws, extra = _weight_operands(lw, w)
  p = dict(e.params)
  if e.prim == "jt_qconv2d":
    p.update(_pads(p.pop("padding")))
  y = lw.new(e.outputs[0], "i8", "act")
  ins = [lw.tensor(x, "i8"), ws[0], lw.tensor(b, "i32"), lw.tensor(m, "f32"), *ws[1:]]
  lw.emit("conv2d_s8" if e.prim == "jt_qconv2d" else "dense_s8", ins, [y], **p, **extra)


@rule("jt_qadd")
def _add(lw: Lowerer, e: Eqn) -> None:
  a, b = e.inputs
  y = lw.new(e.outputs[0], "i8", "act")
  lw.emit("add_s8", [lw.tensor(a, "i8"), lw.tensor(b, "i8")], [y], **e.params)


@rule("jt_qavgpool")
def _avgpool(lw: Lowerer, e: Eqn) -> None:
  x, m = e.inputs
  p = dict(e.params)
  p.update(_pads(p.pop("padding")))
  y = lw.new(e.outputs[0], "i8", "act")
  lw.emit("avgpool_s8", [lw.tensor(x, "i8"), lw.tensor(m, "f32")], [y], **p)


@rule("jt_qmaxpool")
def _maxpool(lw: Lowerer, e: Eqn) -> None:
  p = dict(e.params)
  p.update(_pads(p.pop("padding")))
  y = lw.new(e.outputs[0], "i8", "act")
  lw.emit("maxpool_s8", [lw.tensor(e.inputs[0], "i8")], [y], **p)


@rule("jt_qrequant")
def _requant(lw: Lowerer, e: Eqn) -> None:
  y = lw.new(e.outputs[0], "i8", "act")
  lw.emit("requant_s8", [lw.tensor(e.inputs[0], "i8")], [y], **e.params)


@rule("jt_qconcat")
def _concat(lw: Lowerer, e: Eqn) -> None:
  y = lw.new(e.outputs[0], "i8", "act")
  lw.emit("concat_s8", [lw.tensor(r, "i8") for r in e.inputs], [y], **e.params)


@rule("jt_qreshape")
def _reshape(lw: Lowerer, e: Eqn) -> None:
  lw.view(e.outputs[0], lw.tensor(e.inputs[0]))


# --- backward -------------------------------------------------------------------------------


@rule("jt_requant_bw")
def _requant_bw(lw: Lowerer, e: Eqn) -> None:
  g, y, m = e.inputs
  mask = lw.mask(lw.tensor(y, "i8"), e.params["lo"], e.params["hi"])
  out = lw.new(e.outputs[0], "f32", "grad")
  lw.emit("requant_bw_f32", [lw.tensor(g, "f32"), mask, lw.tensor(m, "f32")], [out])


@rule("jt_conv2d_bw_input", "jt_dense_bw_input")
def _bw_input(lw: Lowerer, e: Eqn) -> None:
  g, w = e.inputs
  ws, extra = _weight_operands(lw, w)
  p = dict(e.params)
  if "padding" in p:
    p.update(_pads(p.pop("padding")))
  out = lw.new(e.outputs[0], "f32", "grad")
  name = "conv2d_bw_input_f32" if e.prim == "jt_conv2d_bw_input" else "dense_bw_input_f32"
  lw.emit(name, [lw.tensor(g, "f32"), *ws], [out], **p, **extra)


@rule("jt_conv2d_bw_weight", "jt_dense_bw_weight")
def _bw_weight(lw: Lowerer, e: Eqn) -> None:
  g, x = e.inputs
  p = dict(e.params)
  channels = p.pop("channels")
  if "padding" in p:
    p.update(_pads(p.pop("padding")))
  p["channels"] = channels
  saved = lw.saved_input(lw.tensor(x, "i8"), channels, -1)
  op = "conv2d_update_s8" if e.prim == "jt_conv2d_bw_weight" else "dense_update_s8"
  lw.bind(e.outputs[0], WeightGrad(op, lw.tensor(g, "f32"), saved, p))


@rule("jt_bias_bw")
def _bias_bw(lw: Lowerer, e: Eqn) -> None:
  lw.bind(e.outputs[0], BiasGrad(lw.tensor(e.inputs[0], "f32")))


@rule("jt_update")
def _update(lw: Lowerer, e: Eqn) -> None:
  p_ref, g_ref, inv, step, *slots = e.inputs
  p = lw.tensor(p_ref)
  if lw.g.tensors[p].storage != "state":
    raise lw.error("an update must write a trained parameter of the state")
  grad = lw.value(g_ref)
  state = [lw.tensor(s, "f32") for s in slots]
  common = [lw.tensor(inv, "f32"), *state, lw.tensor(step, "i32")]
  attrs = {"pid": e.params["pid"], "kind": e.params["kind"]}
  if isinstance(grad, WeightGrad):
    lw.emit(grad.op, [grad.g, grad.x, p, *common], [p, *state], **grad.attrs, **attrs)
  elif isinstance(grad, BiasGrad):
    lw.emit("bias_update_i32", [grad.g, p, *common], [p, *state], **attrs)
  else:
    raise lw.error("an update's gradient must come straight from a weight or bias "
                   "gradient op")
  for ref, t in zip(e.outputs, [p, *state], strict=True):
    lw.bind(ref, t)


@rule("jt_add_bw")
def _add_bw(lw: Lowerer, e: Eqn) -> None:
  g, y = e.inputs
  p = e.params
  mask = lw.mask(lw.tensor(y, "i8"), p["lo"], p["hi"])
  outs = [lw.new(r, "f32", "grad") for r in e.outputs]
  lw.emit("add_bw_f32", [lw.tensor(g, "f32"), mask], outs, a_mult=p["a_mult"],
          b_mult=p["b_mult"], m=p["m"])


@rule("jt_avgpool_bw")
def _avgpool_bw(lw: Lowerer, e: Eqn) -> None:
  g, y, m = e.inputs
  p = dict(e.params)
  mask = lw.mask(lw.tensor(y, "i8"), p.pop("lo"), p.pop("hi"))
  p.update(_pads(p.pop("padding")))
  out = lw.new(e.outputs[0], "f32", "grad")
  lw.emit("avgpool_bw_f32", [lw.tensor(g, "f32"), mask, lw.tensor(m, "f32")], [out], **p)


@rule("jt_maxpool_bw")
def _maxpool_bw(lw: Lowerer, e: Eqn) -> None:
  g, x, y = e.inputs
  p = dict(e.params)
  p.update(_pads(p.pop("padding")))
  out = lw.new(e.outputs[0], "f32", "grad")
  lw.emit("maxpool_bw_f32", [lw.tensor(g, "f32"), lw.tensor(x, "i8"), lw.tensor(y, "i8")],
          [out], **p)


@rule("jt_concat_bw")
def _concat_bw(lw: Lowerer, e: Eqn) -> None:
  g, y = e.inputs
  mask = lw.mask(lw.tensor(y, "i8"), -128, 127)
  outs = [lw.new(r, "f32", "grad") for r in e.outputs]
  lw.emit("concat_bw_f32", [lw.tensor(g, "f32"), mask], outs, **e.params)


# --- the loss: small float32 / int32 ops -----------------------------------------------------

_UNARY = {"neg": "neg", "exp": "exp", "log": "log", "floor": "floor", "not": "not",
          "sqrt": "sqrt", "abs": "abs", "sign": "sign", "log1p": "log1p", "expm1": "expm1",
          "logistic": "logistic", "is_finite": "is_finite", "tanh": "tanh", "ceil": "ceil"}
_BINARY = {"add": "add", "add_any": "add", "sub": "sub", "mul": "mul", "div": "div",
           "max": "max", "min": "min", "lt": "lt", "gt": "gt", "le": "le", "ge": "ge",
           "eq": "eq", "ne": "ne", "and": "and", "or": "or", "pow": "pow"}


def _dt(ref: Ref) -> str:
  return dtype_of(ref.dtype)


def _small(lw: Lowerer, ref: Ref) -> int:
  """An operand of a small op: int8 activations are first cast to float32 (the
  dequantization of the logits is the only place this happens)."""
  t = lw.tensor(ref)
  if lw.g.tensors[t].dtype == "i8":
    out = lw.g.add(f"t{len(lw.g.tensors)}", ref.shape, "f32")
    lw.emit("cast", [t], [out])
    return out
  return t


@rule(*_UNARY)
def _unary(lw: Lowerer, e: Eqn) -> None:
  out = lw.new(e.outputs[0], _dt(e.outputs[0]))
  lw.emit("unary", [_small(lw, e.inputs[0])], [out], fn=_UNARY[e.prim])


@rule(*_BINARY)
def _binary(lw: Lowerer, e: Eqn) -> None:
  a, b = e.inputs
  out = lw.new(e.outputs[0], _dt(e.outputs[0]))
  lw.emit("binary", [_small(lw, a), _small(lw, b)], [out], fn=_BINARY[e.prim])


def _binary_op(lw: Lowerer, fn: str, a: int, b: int, ref: Ref) -> int:
  """`fn(a, b)` into a new tensor shaped like `ref` (bound to it)."""
  out = lw.new(ref, lw.g.tensors[a].dtype)
  lw.emit("binary", [a, b], [out], fn=fn)
  return out


@rule("square")
def _square(lw: Lowerer, e: Eqn) -> None:
  x = _small(lw, e.inputs[0])
  _binary_op(lw, "mul", x, x, e.outputs[0])


@rule("integer_pow")
def _integer_pow(lw: Lowerer, e: Eqn) -> None:
  """x ** n by square-and-multiply (XLA's order of multiplications); 1 / x ** -n below 0."""
  x, n = _small(lw, e.inputs[0]), int(e.params["y"])
  out = e.outputs[0]
  dt = lw.g.tensors[x].dtype
  if n == 0:
    one = lw.g.const(f"const{len(lw.g.tensors)}", np.ones(out.shape), dt)
    lw.bind(out, one)
    return
  acc, base, k = None, x, abs(n)
  while k:
    if k & 1:
      acc = base if acc is None else _binary_op(lw, "mul", acc, base, out)
    k >>= 1
    if k:
      base = _binary_op(lw, "mul", base, base, out)
  if n < 0:
    one = lw.g.const(f"const{len(lw.g.tensors)}", np.ones(()), dt)
    acc = _binary_op(lw, "div", one, acc, out)
  lw.bind(out, acc)


@rule("clamp")
def _clamp(lw: Lowerer, e: Eqn) -> None:
  lo, x, hi = (_small(lw, r) for r in e.inputs)
  _binary_op(lw, "min", _binary_op(lw, "max", x, lo, e.outputs[0]), hi, e.outputs[0])


@rule("stop_gradient")
def _identity(lw: Lowerer, e: Eqn) -> None:
  lw.bind(e.outputs[0], lw.value(e.inputs[0]))


@rule("convert_element_type")
def _convert(lw: Lowerer, e: Eqn) -> None:
  x = _small(lw, e.inputs[0])
  want = _dt(e.outputs[0])
  if lw.g.tensors[x].dtype == want:
    lw.bind(e.outputs[0], x)
    return
  out = lw.new(e.outputs[0], want)
  lw.emit("cast", [x], [out])


@rule("reshape", "squeeze", "expand_dims")
def _view(lw: Lowerer, e: Eqn) -> None:
  # An int8 tensor stays int8 (the model input of a 1-D model is reshaped to H = 1).
  lw.view(e.outputs[0], lw.tensor(e.inputs[0]))


@rule("broadcast_in_dim")
def _broadcast(lw: Lowerer, e: Eqn) -> None:
  x = _small(lw, e.inputs[0])
  out = lw.new(e.outputs[0], lw.g.tensors[x].dtype)
  lw.emit("broadcast", [x], [out], dims=tuple(int(d) for d in e.params["broadcast_dimensions"]))


@rule("reduce_sum", "reduce_max", "reduce_min")
def _reduce(lw: Lowerer, e: Eqn) -> None:
  x = _small(lw, e.inputs[0])
  out = lw.new(e.outputs[0], lw.g.tensors[x].dtype)
  lw.emit("reduce", [x], [out], fn=e.prim.split("_")[1],
          axes=tuple(int(a) for a in e.params["axes"]))


@rule("select_n")
def _select(lw: Lowerer, e: Eqn) -> None:
  if len(e.inputs) != 3:
    raise lw.error("select_n with more than two cases")
  pred, a, b = (_small(lw, r) for r in e.inputs)
  out = lw.new(e.outputs[0], _dt(e.outputs[0]))
  lw.emit("select", [pred, a, b], [out])


@rule("iota")
def _iota(lw: Lowerer, e: Eqn) -> None:
  out = lw.new(e.outputs[0], _dt(e.outputs[0]))
  lw.emit("iota", [], [out], axis=int(e.params["dimension"]))


def _last_axis_pattern(lw: Lowerer, operand: Ref, idx: Ref, window: tuple, collapsed: tuple,
                       index_map: tuple) -> None:
  n = len(operand.shape)
  if (collapsed != (n - 1,) or index_map != (n - 1,) or int(np.prod(idx.shape)) != 1
          or tuple(window) != tuple(range(n - 1))):
    raise lw.error("only take_along_axis on the last axis (the label pick of a loss) is "
                   "supported")


@rule("gather")
def _gather(lw: Lowerer, e: Eqn) -> None:
  x, idx = e.inputs
  dn = e.params["dimension_numbers"]
  _last_axis_pattern(lw, x, idx, dn.offset_dims, dn.collapsed_slice_dims, dn.start_index_map)
  out = lw.new(e.outputs[0], _dt(e.outputs[0]))
  lw.emit("take_last", [_small(lw, x), _small(lw, idx)], [out])


@rule("scatter-add")
def _scatter_add(lw: Lowerer, e: Eqn) -> None:
  x, idx, v = e.inputs
  dn = e.params["dimension_numbers"]
  _last_axis_pattern(lw, x, idx, dn.update_window_dims, dn.inserted_window_dims,
                     dn.scatter_dims_to_operand_dims)
  out = lw.new(e.outputs[0], _dt(e.outputs[0]))
  lw.emit("scatter_add_last", [_small(lw, x), _small(lw, idx), _small(lw, v)], [out])
