"""The reference executor: runs a lowered program op by op with the numpy kernels of
`lowering.kernels`. It is the living definition of every opcode; the C runtime is tested
against it (forward bit-exact, float32 backward within a stated tolerance).

Arena tensors live at their planned offsets in one byte array, so a wrong plan (or a wrong
in-place decision) corrupts results instead of going unnoticed; an alias reads and writes
its base's bytes. Masks are stored packed, 8 elements per byte, as on the device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from jaxtiny.errors import NonFiniteLossError
from lowering import kernels as K
from lowering import mathf
from lowering.bottleneck_bw import trained
from lowering.ir import NUMPY, Graph, Op

Env = dict[int, np.ndarray]
KERNELS: dict[str, Callable[[Any, Op], None]] = {}


def kernel(name: str):
  def register(f):
    KERNELS[name] = f
    return f

  return register


class Executor:
  """State (trained parameters, optimizer state, step) persists across calls."""

  def __init__(self, graph: Graph, optimizer: dict, rounding: str, seed: int,
               offsets: dict[int, int], arena_bytes: int):
    self.g = graph
    self.optimizer, self.rounding, self.seed = optimizer, rounding, seed
    self.state: Env = {t.id: t.data.copy() for t in graph.tensors if t.storage == "state"}
    self.env: Env = {}  # the caller's buffers (io)
    self.offsets = offsets
    self.arena = np.zeros(arena_bytes, np.uint8)

  def _arena_view(self, tid: int) -> np.ndarray:
    t = self.g.tensors[tid]
    start = self.offsets[self.g.base(tid)]
    raw = self.arena[start:start + t.nbytes]
    return raw if t.dtype == "bit" else raw.view(NUMPY[t.dtype]).reshape(t.shape)

  # --- tensor access ----------------------------------------------------------------------

  def get(self, tid: int) -> np.ndarray:
    t = self.g.tensors[tid]
    if t.storage == "arena":
      return self._arena_view(tid)
    if t.alias is not None:
      return self.get(t.alias).reshape(t.shape)
    if t.storage == "const":
      return t.data
    if t.storage == "state":
      return self.state[tid]
    return self.env[tid]

  def set(self, tid: int, value: np.ndarray) -> None:
    t = self.g.tensors[tid]
    want = NUMPY[t.dtype]
    value = np.asarray(value)
    if t.dtype != "bit" and (value.dtype != want or value.shape != t.shape):
      raise AssertionError(f"op wrote {value.dtype}{value.shape} into {t.name} "
                           f"({t.dtype}{t.shape})")
    if t.storage == "arena":
      self._arena_view(tid)[...] = value
    else:
      (self.state if t.storage == "state" else self.env)[tid] = value

  def mask(self, tid: int, lo: int, hi: int) -> np.ndarray:
    """An int8 stand-in for an output whose clamp mask is stored: inside -> lo + 1."""
    t = self.g.tensors[tid]
    bits = np.unpackbits(self.get(tid), count=t.elements, bitorder="little")
    return np.where(bits.reshape(t.shape) == 1, lo + 1, lo).astype(np.int8)

  def run(self, ops: list[Op], io: Env, loss: int | None = None) -> None:
    """Run `ops`; with `loss`, stop with NonFiniteLossError right after the op that writes
    that tensor if its value is not finite (the plan writes no state before it)."""
    self.env = dict(io)
    # Float32 is IEEE arithmetic here, as on the device: a non-finite gradient (a loss that
    # divides by zero somewhere) is a value the update steps skip (_step), not an error.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
      self._run(ops, loss)

  def _run(self, ops: list[Op], loss: int | None) -> None:
    for op in ops:
      KERNELS[op.name](self, op)
      if loss is not None and loss in op.outputs:
        value = self.env[loss]
        if not np.all(np.isfinite(value)):
          raise NonFiniteLossError(f"the loss is {float(value.reshape(-1)[0])}: the step "
                                   "stopped before any update, the state is unchanged")
        loss = None


# --- int8 forward ---------------------------------------------------------------------------


def _weight(ex: Executor, op: Op, w_index: int) -> np.ndarray:
  """The full int8 weight, with trained channels (state, the last-but-one operand) over
  the frozen ones (flash); the channel list is the last operand."""
  w = ex.get(op.inputs[w_index])
  if "sel_axis" not in op.attrs:
    return w
  w_sel, sel = ex.get(op.inputs[-2]), ex.get(op.inputs[-1])
  return K.merge_channels(w, w_sel, op.attrs["sel_axis"], sel.tolist())


@kernel("conv2d_s8")
def _conv(ex: Executor, op: Op) -> None:
  a = op.attrs
  x, _, b, m = (ex.get(i) for i in op.inputs[:4])
  ex.set(op.outputs[0], K.conv2d(x, _weight(ex, op, 1), b, m, a["strides"], a["padding"],
                                 a["groups"], a["x_zero"], a["y_zero"], a["lo"], a["hi"]))


@kernel("bottleneck_s8")
def _bottleneck(ex: Executor, op: Op) -> None:
  a = op.attrs
  x, w1, b1, m1, w2, b2, m2, w3, b3, m3 = (ex.get(i) for i in op.inputs)
  expand = {"w": w1, "b": b1, "m": m1, **{k: a["e_" + k] for k in
                                         ("strides", "padding", "x_zero", "y_zero", "lo", "hi")}}
  depthwise = {"w": w2, "b": b2, "m": m2, "x_zero": a["e_y_zero"],
               **{k: a["d_" + k] for k in ("strides", "padding", "y_zero", "lo", "hi")}}
  project = {"w": w3, "b": b3, "m": m3, "strides": (1, 1), "padding": K.NO_PADDING,
             "x_zero": a["d_y_zero"], **{k: a["p_" + k] for k in ("y_zero", "lo", "hi")}}
  ex.set(op.outputs[0], K.bottleneck(x, expand, depthwise, project, ex.get(op.outputs[1])))


@kernel("dense_s8")
def _dense(ex: Executor, op: Op) -> None:
  a = op.attrs
  x, _, b, m = (ex.get(i) for i in op.inputs[:4])
  ex.set(op.outputs[0], K.dense(x, _weight(ex, op, 1), b, m, a["x_zero"], a["y_zero"],
                                a["lo"], a["hi"]))


@kernel("add_s8")
def _add(ex: Executor, op: Op) -> None:
  a = op.attrs
  ex.set(op.outputs[0], K.add(ex.get(op.inputs[0]), ex.get(op.inputs[1]), a["a_zero"],
                              a["b_zero"], a["a_mult"], a["b_mult"], a["m"], a["y_zero"],
                              a["lo"], a["hi"]))


@kernel("avgpool_s8")
def _avgpool(ex: Executor, op: Op) -> None:
  a = op.attrs
  ex.set(op.outputs[0], K.avgpool(ex.get(op.inputs[0]), ex.get(op.inputs[1]), a["window"],
                                  a["strides"], a["padding"], a["x_zero"], a["y_zero"],
                                  a["lo"], a["hi"]))


@kernel("maxpool_s8")
def _maxpool(ex: Executor, op: Op) -> None:
  a = op.attrs
  ex.set(op.outputs[0], K.maxpool(ex.get(op.inputs[0]), a["window"], a["strides"],
                                  a["padding"]))


@kernel("requant_s8")
def _requant(ex: Executor, op: Op) -> None:
  a = op.attrs
  ex.set(op.outputs[0], K.requant(ex.get(op.inputs[0]), a["x_zero"], a["m"], a["y_zero"],
                                  a["lo"], a["hi"]))


@kernel("concat_s8")
def _concat(ex: Executor, op: Op) -> None:
  a = op.attrs
  ex.set(op.outputs[0], K.concat([ex.get(i) for i in op.inputs], a["axis"], a["zeros"],
                                 a["mults"], a["y_zero"]))


@kernel("copy")
def _copy(ex: Executor, op: Op) -> None:
  t = ex.g.tensors[op.outputs[0]]
  ex.set(op.outputs[0], ex.get(op.inputs[0]).reshape(t.shape).astype(NUMPY[t.dtype]))


@kernel("mask_s8")
def _mask(ex: Executor, op: Op) -> None:
  y = ex.get(op.inputs[0])
  inside = (y > op.attrs["lo"]) & (y < op.attrs["hi"])
  ex.set(op.outputs[0], np.packbits(inside.reshape(-1), bitorder="little"))


@kernel("gather_channels_s8")
def _gather_channels(ex: Executor, op: Op) -> None:
  x, sel = ex.get(op.inputs[0]), ex.get(op.inputs[1])
  ex.set(op.outputs[0], np.ascontiguousarray(x[..., sel]))


# --- backward -------------------------------------------------------------------------------


def _stand_in(ex: Executor, op: Op, index: int) -> np.ndarray:
  """Operand `index` is a mask: an int8 stand-in read by the kernels with (lo, hi) =
  (-128, 127), inside exactly where the stored mask is set."""
  return ex.mask(op.inputs[index], -128, 127)


@kernel("requant_bw_f32")
def _requant_bw(ex: Executor, op: Op) -> None:
  g, m = ex.get(op.inputs[0]), ex.get(op.inputs[2])
  ex.set(op.outputs[0], K.requant_bw(g, _stand_in(ex, op, 1), m, -128, 127))


@kernel("conv2d_bw_input_f32")
def _conv_bw_input(ex: Executor, op: Op) -> None:
  a = op.attrs
  shape = ex.g.tensors[op.outputs[0]].shape
  ex.set(op.outputs[0], K.conv2d_bw_input(ex.get(op.inputs[0]), _weight(ex, op, 1),
                                          a["strides"], a["padding"], a["groups"], shape[1:]))


@kernel("bottleneck_bw_f32")
def _bottleneck_bw(ex: Executor, op: Op) -> None:
  a = op.attrs
  g, w3, _, m_d, w2, _, m_e, w1 = (ex.get(i) for i in op.inputs[:8])
  if "sel_axis" in a:
    w1 = K.merge_channels(w1, ex.get(op.inputs[8]), a["sel_axis"], ex.get(op.inputs[9]).tolist())
  on_channel = None
  t = trained(op)
  if t is not None:
    x = ex.get(t.x)

    def on_channel(c: int, ge: np.ndarray) -> None:
      grad = K.conv2d_bw_weight(ge, x, (1, 1), K.NO_PADDING, 1, a["x_zero"], (1, 1))
      _step(ex, a["pid"], t.p, t.inv, t.slots, t.step, grad, row=c)

  depthwise = {"w": w2, "strides": a["d_strides"], "padding": a["d_padding"],
               "y": _stand_in(ex, op, 2), "m": m_d, "lo": -128, "hi": 127}
  expand = {"w": w1, "y": _stand_in(ex, op, 5), "m": m_e, "lo": -128, "hi": 127}
  gx = ex.get(op.outputs[3]) if a["gx"] else None
  gb_d, gb_e = K.bottleneck_bw(g, {"w": w3}, depthwise, expand, gx, on_channel)
  ex.set(op.outputs[1], gb_d)
  ex.set(op.outputs[2], gb_e)


@kernel("dense_bw_input_f32")
def _dense_bw_input(ex: Executor, op: Op) -> None:
  ex.set(op.outputs[0], K.dense_bw_input(ex.get(op.inputs[0]), _weight(ex, op, 1)))


@kernel("add_bw_f32")
def _add_bw(ex: Executor, op: Op) -> None:
  a = op.attrs
  ga, gb = K.add_bw(ex.get(op.inputs[0]), _stand_in(ex, op, 1), a["a_mult"], a["b_mult"],
                    a["m"], -128, 127)
  ex.set(op.outputs[0], ga)
  ex.set(op.outputs[1], gb)


@kernel("avgpool_bw_f32")
def _avgpool_bw(ex: Executor, op: Op) -> None:
  a = op.attrs
  shape = ex.g.tensors[op.outputs[0]].shape
  ex.set(op.outputs[0], K.avgpool_bw(ex.get(op.inputs[0]), _stand_in(ex, op, 1),
                                     ex.get(op.inputs[2]), a["window"], a["strides"],
                                     a["padding"], -128, 127, shape[1:]))


@kernel("maxpool_bw_f32")
def _maxpool_bw(ex: Executor, op: Op) -> None:
  a = op.attrs
  g, x, y = (ex.get(i) for i in op.inputs)
  ex.set(op.outputs[0], K.maxpool_bw(g, x, y, a["window"], a["strides"], a["padding"]))


@kernel("concat_bw_f32")
def _concat_bw(ex: Executor, op: Op) -> None:
  a = op.attrs
  parts = K.concat_bw(ex.get(op.inputs[0]), _stand_in(ex, op, 1), a["axis"], a["sizes"],
                      a["mults"], a["identity"])
  for t, part in zip(op.outputs, parts, strict=True):
    ex.set(t, np.ascontiguousarray(part))


def _update(ex: Executor, op: Op, grad: np.ndarray, p_index: int) -> None:
  """Optimizer step of the parameter operand `p_index`, followed by its QAS factors, its
  optimizer state and the step counter (the last operand)."""
  _step(ex, op.attrs["pid"], op.inputs[p_index], op.inputs[p_index + 1],
        op.inputs[p_index + 2:-1], op.inputs[-1], grad)


def _step(ex: Executor, pid: int, p_id: int, inv_id: int, slot_ids: list[int], step_id: int,
          grad: np.ndarray, row: int | None = None) -> None:
  """Optimizer step in real units (QAS factor per output channel), rounding, in place; of
  the whole parameter, or of one output channel `row` (grad: that row's gradient).

  Per element, where the delta or a new optimizer slot is not finite, the parameter and
  its slots keep their old values: no NaN or infinity ever reaches the stored state."""
  o = ex.optimizer
  p_all = ex.get(p_id)
  rows = slice(None) if row is None else slice(row, row + 1)
  p = p_all[rows]
  inv = ex.get(inv_id).reshape((-1,) + (1,) * (p.ndim - 1))[rows]
  slots = [ex.get(i)[rows] for i in slot_ids]
  step = int(ex.get(step_id))
  lr = K.learning_rate(o["schedule"], o["lr"], o["steps"], o["final"], step)
  with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
    d_real, new = K.optimizer_step(o["kind"], grad * inv, slots, lr, step, o["momentum"],
                                   o["b1"], o["b2"], o["eps"])
    delta = d_real * inv
  ok = np.isfinite(delta)
  for v in new:
    ok &= np.isfinite(v)
  # The hash takes the counter's uint32 bits (as the C runtime): a blob may start it anywhere.
  u = None if ex.rounding == "nearest" else K.hash_uniform(
    ex.seed, step % 2**32, pid, p.size, 0 if row is None else row * p.size)
  new_p = np.where(ok, K.apply_update(p, np.where(ok, delta, np.float32(0)), u), p)
  new = [np.where(ok, v, s) for v, s in zip(new, slots, strict=True)]
  if row is None:
    ex.set(p_id, new_p)
    for t, v in zip(slot_ids, new, strict=True):
      ex.set(t, v.astype(np.float32))
  else:  # parameters and optimizer state are persistent arrays: write the row in place
    p_all[rows] = new_p
    for t, v in zip(slot_ids, new, strict=True):
      ex.get(t)[rows] = v


@kernel("conv2d_update_s8")
def _conv_update(ex: Executor, op: Op) -> None:
  a = op.attrs
  g, x = ex.get(op.inputs[0]), ex.get(op.inputs[1])
  w = ex.get(op.inputs[2])
  groups = a["groups"]
  if a["channels"] is not None and groups > 1:  # depthwise: the saved channels, one group each
    g, groups = g[..., list(a["channels"])], len(a["channels"])
  grad = K.conv2d_bw_weight(g, x, a["strides"], a["padding"], groups, a["x_zero"],
                            w.shape[1:3])
  _update(ex, op, grad, 2)


@kernel("dense_update_s8")
def _dense_update(ex: Executor, op: Op) -> None:
  grad = K.dense_bw_weight(ex.get(op.inputs[0]), ex.get(op.inputs[1]), op.attrs["x_zero"])
  _update(ex, op, grad, 2)


@kernel("bias_update_i32")
def _bias_update(ex: Executor, op: Op) -> None:
  _update(ex, op, K.bias_bw(ex.get(op.inputs[0])), 1)


# --- small ops of the loss ------------------------------------------------------------------
# Each op is defined here explicitly for every dtype a verified blob can give it (the C
# runtime, runtime_c/src/jt_loss_ops.c, matches bit for bit), including where numpy is
# ill-defined or platform-dependent: float math is lowering.mathf (numpy's exp/log/pow
# differ from any C library's in the last bit); 32-bit integer add/sub/mul/neg/abs wrap;
# integer division truncates, x / 0 = -1 (all bits set), INT32_MIN / -1 = INT32_MIN;
# float -> int casts truncate and saturate, NaN -> 0; max/min propagate NaN and order
# -0 < +0; a float sum is a running sum in row-major order (not numpy's pairwise sum).

_U32 = np.uint32


def _wrap(f: Callable) -> Callable:
  """A 32-bit integer op on the uint32 bits (wraps around; no overflow warning)."""
  def op(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    dt = np.asarray(a).dtype
    ua = np.asarray(a).view(_U32)
    r = f(ua) if b is None else f(ua, np.asarray(b).view(_U32))
    return np.asarray(r, _U32).view(dt)

  return op


def _fmax(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """NaN if either is NaN; of +0 and -0, +0 (the AND of the bits of equal values)."""
  a, b = np.broadcast_arrays(np.asarray(a, np.float32), np.asarray(b, np.float32))
  tie = (np.ascontiguousarray(a).view(_U32) & np.ascontiguousarray(b).view(_U32)).view(np.float32)
  r = np.where(a > b, a, np.where(b > a, b, tie))
  return np.where(np.isnan(a), a, np.where(np.isnan(b), b, r)).astype(np.float32)


def _fmin(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """NaN if either is NaN; of +0 and -0, -0 (the OR of the bits)."""
  a, b = np.broadcast_arrays(np.asarray(a, np.float32), np.asarray(b, np.float32))
  tie = (np.ascontiguousarray(a).view(_U32) | np.ascontiguousarray(b).view(_U32)).view(np.float32)
  r = np.where(a < b, a, np.where(b < a, b, tie))
  return np.where(np.isnan(a), a, np.where(np.isnan(b), b, r)).astype(np.float32)


def _fsign(x: np.ndarray) -> np.ndarray:
  """1 / -1, and x itself for +-0 and NaN."""
  one = np.float32(1)
  return np.where(x > 0, one, np.where(x < 0, -one, x)).astype(np.float32)


def _isign(x: np.ndarray) -> np.ndarray:
  return ((x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)).astype(x.dtype)


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Truncating division; x / 0 = -1 (all bits set), INT32_MIN / -1 = INT32_MIN."""
  a, b = np.broadcast_arrays(a, b)
  dt = a.dtype
  a64, b64 = a.astype(np.int64), b.astype(np.int64)
  zero = b64 == 0
  q = np.abs(a64) // np.where(zero, 1, np.abs(b64))
  q = np.where((a64 < 0) != (b64 < 0), -q, q)
  q = np.where(zero, -1, q) & 0xFFFFFFFF  # INT32_MIN / -1 = 2^31 wraps to INT32_MIN
  return q.astype(np.uint64).astype(_U32).view(dt)


# fn -> {input dtype: function}; the output dtype is the op's (bool for is_finite)
_UNARY: dict[str, dict[str, Callable]] = {
  "neg": {"f32": np.negative, "i32": _wrap(lambda u: -u), "u32": _wrap(lambda u: -u)},
  "exp": {"f32": mathf.expf},
  "log": {"f32": mathf.logf},
  "floor": {"f32": mathf.floorf},
  "not": {"bool": np.logical_not, "i32": np.invert, "u32": np.invert},
  "sqrt": {"f32": mathf.sqrtf},
  "abs": {"f32": np.abs, "i32": _wrap(lambda u: np.where(u >> _U32(31) == 1, -u, u)),
          "u32": lambda x: x},
  "sign": {"f32": _fsign, "i32": _isign, "u32": lambda x: (x > 0).astype(_U32)},
  "log1p": {"f32": mathf.log1pf},
  "expm1": {"f32": mathf.expm1f},
  "logistic": {"f32": mathf.logisticf},
  "is_finite": {"f32": np.isfinite},
  "tanh": {"f32": mathf.tanhf},
  "ceil": {"f32": mathf.ceilf},
}

_COMPARE = {"lt": np.less, "gt": np.greater, "le": np.less_equal, "ge": np.greater_equal,
            "eq": np.equal, "ne": np.not_equal}
_INT_BINARY = {"add": _wrap(lambda a, b: a + b), "sub": _wrap(lambda a, b: a - b),
               "mul": _wrap(lambda a, b: a * b), "div": _int_div, "max": np.maximum,
               "min": np.minimum, "and": np.bitwise_and, "or": np.bitwise_or, **_COMPARE}
_BINARY: dict[str, dict[str, Callable]] = {
  "f32": {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
          "max": _fmax, "min": _fmin, "pow": mathf.powf, **_COMPARE},
  "i32": _INT_BINARY,
  "u32": _INT_BINARY,
  "bool": {"and": np.logical_and, "or": np.logical_or, **_COMPARE},
}


def _dtype(ex: Executor, tid: int) -> str:
  return ex.g.tensors[tid].dtype


def _out(ex: Executor, op: Op, value: np.ndarray) -> None:
  t = ex.g.tensors[op.outputs[0]]
  ex.set(op.outputs[0], np.asarray(value).astype(NUMPY[t.dtype]).reshape(t.shape))


def convert(x: np.ndarray, src: str, dst: str) -> np.ndarray:
  """The cast op: float -> int truncates toward zero and saturates (NaN -> 0), as XLA;
  int -> int wraps (two's complement); -> bool is != 0; int -> float rounds to nearest."""
  x = np.asarray(x)
  if dst == "bool":
    return x != 0
  if src == "bool":
    return x.astype(NUMPY[dst])
  if src == "f32" and dst != "f32":
    lo, hi = {"i32": (-2.0**31, 2.0**31), "u32": (0.0, 2.0**32), "i8": (-128.0, 127.0)}[dst]
    t = np.trunc(np.clip(np.where(np.isnan(x), 0, x), lo, hi).astype(np.float64))
    t = np.minimum(t, np.iinfo(NUMPY[dst]).max)  # 2^31, 2^32 saturate to the max
    return t.astype(np.int64).astype(NUMPY[dst])
  if dst == "f32":
    return x.astype(np.float32)  # exact for i8; int32 / uint32 round to nearest once
  return x.astype(np.int64).astype(NUMPY[dst])  # integers: modulo 2^32 / 2^8


@kernel("cast")
def _cast(ex: Executor, op: Op) -> None:
  x = ex.get(op.inputs[0])
  with np.errstate(invalid="ignore"):
    _out(ex, op, convert(x, _dtype(ex, op.inputs[0]), _dtype(ex, op.outputs[0])))


@kernel("unary")
def _unary(ex: Executor, op: Op) -> None:
  with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
    f = _UNARY[op.attrs["fn"]][_dtype(ex, op.inputs[0])]
    _out(ex, op, f(ex.get(op.inputs[0])))


@kernel("binary")
def _binary(ex: Executor, op: Op) -> None:
  a, b = ex.get(op.inputs[0]), ex.get(op.inputs[1])
  with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
    _out(ex, op, _BINARY[_dtype(ex, op.inputs[0])][op.attrs["fn"]](a, b))


@kernel("select")
def _select(ex: Executor, op: Op) -> None:
  pred, a, b = (ex.get(i) for i in op.inputs)
  _out(ex, op, np.where(pred.astype(bool), b, a))


def reduce(x: np.ndarray, fn: str, axes: tuple[int, ...]) -> np.ndarray:
  """Sum / max / min over `axes`: per output element, a running fold over its reduced
  elements in row-major order, from the first term (an empty reduction is the identity:
  +0, -inf, +inf; for integers 0 and the type's bounds). Integer sums wrap."""
  keep = [a for a in range(x.ndim) if a not in axes]
  red = sorted(axes)
  t = np.transpose(x, keep + red).reshape([x.shape[a] for a in keep] + [-1])
  n = t.shape[-1]
  if x.dtype == np.float32:
    f = {"sum": np.add, "max": _fmax, "min": _fmin}[fn]
    empty = {"sum": 0.0, "max": -np.inf, "min": np.inf}[fn]
  else:
    info = np.iinfo(x.dtype)
    f = {"sum": _wrap(lambda a, b: a + b), "max": np.maximum, "min": np.minimum}[fn]
    empty = {"sum": 0, "max": info.min, "min": info.max}[fn]
  if n == 0:
    return np.full(t.shape[:-1], empty, x.dtype)
  acc = t[..., 0]
  for i in range(1, n):
    acc = f(acc, t[..., i])
  return np.asarray(acc, x.dtype)


@kernel("reduce")
def _reduce(ex: Executor, op: Op) -> None:
  with np.errstate(invalid="ignore", over="ignore"):
    _out(ex, op, reduce(ex.get(op.inputs[0]), op.attrs["fn"], tuple(op.attrs["axes"])))


@kernel("broadcast")
def _broadcast(ex: Executor, op: Op) -> None:
  x = ex.get(op.inputs[0])
  shape = ex.g.tensors[op.outputs[0]].shape
  expanded = [1] * len(shape)
  for src, dst in enumerate(op.attrs["dims"]):
    expanded[dst] = x.shape[src]
  _out(ex, op, np.broadcast_to(x.reshape(expanded), shape))


@kernel("iota")
def _iota(ex: Executor, op: Op) -> None:
  t = ex.g.tensors[op.outputs[0]]
  ax = op.attrs["axis"]
  shape = [1] * len(t.shape)
  shape[ax] = t.shape[ax]
  _out(ex, op, np.broadcast_to(np.arange(t.shape[ax]).reshape(shape), t.shape))


def _last_axis_index(ex: Executor, op: Op) -> tuple[np.ndarray, int | None]:
  """x and the one index of a take/scatter on its last axis (None when out of range)."""
  x, idx = ex.get(op.inputs[0]), ex.get(op.inputs[1])
  i = int(idx.reshape(-1)[0])
  return x, i if 0 <= i < x.shape[-1] else None


# Out of range, take_last gives JAX's fill value of gather in FILL_OR_DROP mode.
FILL = {"f32": np.nan, "i32": -2**31, "u32": 2**32 - 1, "i8": -128, "bool": True}


@kernel("take_last")
def _take_last(ex: Executor, op: Op) -> None:
  x, i = _last_axis_index(ex, op)
  fill = FILL[_dtype(ex, op.inputs[0])]
  _out(ex, op, x[..., i] if i is not None else np.full(x.shape[:-1], fill, x.dtype))


@kernel("scatter_add_last")
def _scatter_add_last(ex: Executor, op: Op) -> None:
  x, i = _last_axis_index(ex, op)
  y = x.copy()
  if i is not None:  # out of range: dropped, as JAX's scatter in FILL_OR_DROP mode
    v = ex.get(op.inputs[2]).reshape(x.shape[:-1])
    if x.dtype == np.float32:
      y[..., i] += v
    else:
      y[..., i] = _wrap(lambda a, b: a + b)(np.ascontiguousarray(y[..., i]), v)
  _out(ex, op, y)
