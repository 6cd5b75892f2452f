"""Per-op rules of a blob: what each opcode's operands and attributes must satisfy.

One function per opcode, `check_<name>(g, op)` (the update ops also take the number of
optimizer slots the header implies), each the mirror of the C verifier's `jt_check_<name>`
(runtime_c/src/jt_*.c): a blob loads in both readers or in neither, and after loading no
op can make the reference executor or the C kernels raise, read outside their operands,
overflow an integer or loop forever. The checks run after lowering.blob's generic ones
(opcode known, operand counts within the opset's arity, tensor ids valid, attributes
decoded as the schema says, every tensor record valid), so they may rely on those.

A refusal raises RuleError naming the rule; lowering.blob turns it into a BlobError that
says which op. Keep each function in step with its C twin: same decisions, in the same
order where a later one relies on an earlier one (a rank checked before a dim is read).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NoReturn

import numpy as np

from lowering.ir import Graph, Op
from lowering.opset import BY_NAME

INT32_MAX = 2**31 - 1
# JT_MAX_REDUCTION_S8: the longest int8 dot product (kh * kw * channels) whose int32 sum is
# exact for any int8 weight, INT32_MAX // (255 * 128).
MAX_REDUCTION = 65793


class RuleError(Exception):
  """An op breaks its rule (lowering.blob adds which op and raises BlobError)."""


def _fail(rule: str) -> NoReturn:
  raise RuleError(rule)


def _need(ok: bool, rule: str) -> None:
  if not ok:
    _fail(rule)


# --- tensor access (the jt_t / jt_dim / jt_storage of jt_internal.h) -------------------------


def _shape(g: Graph, tid: int) -> tuple[int, ...]:
  return g.tensors[tid].shape


def _dim(g: Graph, tid: int, k: int) -> int:
  """Dim k, 0 past the rank (as the C record's unused dims)."""
  s = g.tensors[tid].shape
  return s[k] if k < len(s) else 0


def _rank(g: Graph, tid: int) -> int:
  return len(g.tensors[tid].shape)


def _dtype(g: Graph, tid: int) -> str:
  return g.tensors[tid].dtype


def _numel(g: Graph, tid: int) -> int:
  return math.prod(g.tensors[tid].shape)


def _storage(g: Graph, tid: int) -> str:
  return g.tensors[g.base(tid)].storage


def _same(g: Graph, a: int, b: int) -> bool:
  """jt_same_buffer: one base tensor (the plan keeps other live buffers disjoint)."""
  return g.base(a) == g.base(b)


def _same_shape(g: Graph, a: int, b: int) -> bool:
  return _shape(g, a) == _shape(g, b)


def _const_data(g: Graph, tid: int) -> np.ndarray:
  data = g.tensors[g.base(tid)].data
  assert data is not None  # blob.read gives every const tensor its data
  return data


def _i8(v: int) -> bool:
  return -128 <= v <= 127


# --- shared check helpers (jt_check.c, jt_weight_s8.c) --------------------------------------


def _want(g: Graph, tid: int, dtype: str, rank: int, what: str) -> None:
  """jt_want: the dtype, then the rank."""
  _need(_dtype(g, tid) == dtype, f"{what} (tensor {tid}) must be {dtype}, not "
        f"{_dtype(g, tid)}")
  _need(_rank(g, tid) == rank, f"{what} (tensor {tid}) must have rank {rank}, not "
        f"{_rank(g, tid)}")


def _finite_if_const(g: Graph, tid: int) -> bool:
  """jt_finite_if_const."""
  return _storage(g, tid) != "const" or bool(np.all(np.isfinite(_const_data(g, tid))))


def _multiplier(g: Graph, tid: int, rank: int, what: str) -> None:
  """jt_want_multiplier: a const float32 tensor of this rank, every value finite."""
  _want(g, tid, "f32", rank, what)
  _need(_storage(g, tid) == "const", f"{what} (tensor {tid}) must be a constant")
  _need(_finite_if_const(g, tid), f"{what} (tensor {tid}) holds a value that is not finite")


def _clamp(y_zero: int, lo: int, hi: int, what: str) -> None:
  """jt_requant_ok: a zero point and clamp bounds of int8 with lo <= hi."""
  _need(_i8(y_zero) and _i8(lo) and _i8(hi) and lo <= hi,
        f"{what}: zero point {y_zero} and clamp [{lo}, {hi}] must be int8 values, lo <= hi")


def _window(size: int, k: int, stride: int, p0: int, p1: int, what: str) -> int:
  """jt_want_window: stride >= 1, pads >= 0 and at most size + k, size + pads <=
  INT32_MAX, a window k >= 1 that fits; the output length."""
  _need(stride >= 1, f"{what}: stride {stride} must be >= 1")
  _need(p0 >= 0 and p1 >= 0, f"{what}: padding ({p0}, {p1}) must be >= 0")
  _need(size + p0 + p1 <= INT32_MAX, f"{what}: padding ({p0}, {p1}) makes a padded size "
        f"{size + p0 + p1} over {INT32_MAX}")
  _need(max(p0, p1) <= size + k, f"{what}: padding ({p0}, {p1}) is larger than the input "
        f"({size}) and a window ({k})")
  _need(k >= 1 and size + p0 + p1 >= k,
        f"{what}: a window of {k} does not fit the padded size {size + p0 + p1}")
  return (size + p0 + p1 - k) // stride + 1


def _reduction_ok(kh: int, kw: int, n: int) -> bool:
  """jt_reduction_ok: kh * kw * max(n, 1) <= MAX_REDUCTION."""
  return kh <= MAX_REDUCTION and kw <= MAX_REDUCTION and kh * kw * max(n, 1) <= MAX_REDUCTION


def _channels(g: Graph, tid: int, bound: int, what: str) -> None:
  """jt_channels_ok: a const int32 list, values in [0, bound), strictly ascending."""
  ok = _dtype(g, tid) == "i32" and _rank(g, tid) == 1 and _storage(g, tid) == "const"
  if ok:
    c = _const_data(g, tid).astype(np.int64)
    ok = bool(np.all((c >= 0) & (c < bound))) and bool(np.all(np.diff(c) > 0))
  _need(ok, f"{what} (tensor {tid}) must be a constant int32 list of channels in [0, "
        f"{bound}), strictly ascending")


def _selection(g: Graph, op: Op, w: int, w_sel: int, sel: int, rank: int, what: str) -> int:
  """The trained part of a weight (jt_weight_bind of jt_weight_s8.c): w_sel
  of w's shape but along sel_axis (numpy-style, -rank..rank-1), where it has sel's length;
  sel a channel list of that axis. Returns the axis."""
  axis = op.attrs["sel_axis"]
  _need(-rank <= axis < rank, f"sel_axis {axis} is out of range for a rank-{rank} weight")
  axis %= rank
  _want(g, w_sel, "i8", rank, f"{what}'s trained part")
  _want(g, sel, "i32", 1, f"{what}'s channel list")
  _need(_storage(g, sel) == "const", f"{what}'s channel list (tensor {sel}) must be a constant")
  want = tuple(_dim(g, sel, 0) if k == axis else _dim(g, w, k) for k in range(rank))
  _need(_shape(g, w_sel) == want, f"{what}'s trained part {list(_shape(g, w_sel))} must be "
        f"{list(want)}")
  _channels(g, sel, _dim(g, w, axis), f"{what}'s channel list")
  return axis


def _fw_weight(g: Graph, op: Op, rank: int) -> None:
  """jt_weight_operands (jt_weight_s8.c) of a forward op: w is input 1; w_sel, sel are
  inputs 4, 5, present exactly when sel_axis is."""
  has_sel = "sel_axis" in op.attrs
  _need(len(op.inputs) == (6 if has_sel else 4),
        f"{len(op.inputs)} inputs: 6 with sel_axis, else 4")
  _want(g, op.inputs[1], "i8", rank, "the weight")
  if has_sel:
    _selection(g, op, op.inputs[1], op.inputs[4], op.inputs[5], rank, "the weight")


def _bw_weight(g: Graph, op: Op, w: int, w_sel: int, sel: int, rank: int) -> int | None:
  """jt_weight_bind: w (and its trained part when sel_axis is present); the axis."""
  _want(g, w, "i8", rank, "the weight")
  if "sel_axis" not in op.attrs:
    return None
  return _selection(g, op, w, w_sel, sel, rank, "the weight")


def _m_mode(g: Graph, m: int, grad: int) -> None:
  """jt_want_m_mode: a multiplier of a gradient: a scalar, one per channel (grad's last
  axis), or one per position (grad NHWC); finite when constant."""
  _need(_dtype(g, m) == "f32", f"the multiplier (tensor {m}) must be f32")
  mr, gr = _rank(g, m), _rank(g, grad)
  ok = (mr == 0 or (mr == 1 and gr >= 1 and _dim(g, m, 0) == _dim(g, grad, gr - 1))
        or (mr == 2 and gr == 4 and _dim(g, m, 0) == _dim(g, grad, 1)
            and _dim(g, m, 1) == _dim(g, grad, 2)))
  _need(ok, f"the multiplier {list(_shape(g, m))} must be a scalar, one per channel or one "
        f"per position of the gradient {list(_shape(g, grad))}")
  _need(_finite_if_const(g, m), f"the multiplier (tensor {m}) holds a value that is not finite")


def _in_shape(g: Graph, op: Op, gx: int) -> None:
  """The reference takes the input shape from gx: in_shape must say the same."""
  _need(tuple(op.attrs["in_shape"]) == _shape(g, gx)[1:4],
        f"in_shape {op.attrs['in_shape']} is not the gradient's {list(_shape(g, gx)[1:])}")


# --- int8 forward (jt_conv_s8.c, jt_eltwise_s8.c, jt_pool_s8.c, jt_bottleneck_s8.c) ------------


def check_conv2d_s8(g: Graph, op: Op) -> None:
  """jt_check_conv2d_s8."""
  a = op.attrs
  x, w, b, m = op.inputs[:4]
  y = op.outputs[0]
  _fw_weight(g, op, 4)
  _want(g, x, "i8", 4, "the input")
  _want(g, b, "i32", 1, "the bias")
  _multiplier(g, m, 1, "the multiplier")
  _want(g, y, "i8", 4, "the output")
  _need(_i8(a["x_zero"]), f"x_zero {a['x_zero']} is not an int8 value")
  _clamp(a["y_zero"], a["lo"], a["hi"], "the output")
  groups = a["groups"]
  _need(groups >= 1, f"groups {groups} must be >= 1")
  n, h, wd, c = _shape(g, x)
  o, kh, kw, ci = _shape(g, w)
  _need(ci * groups == c and o % groups == 0,
        f"a weight {[o, kh, kw, ci]} in {groups} groups does not fit {c} input channels")
  _need(_dim(g, b, 0) == o and _dim(g, m, 0) == o, "bias and multiplier need one value per "
        "output channel")
  _need(_reduction_ok(kh, kw, ci), f"a {kh}x{kw}x{ci} reduction can overflow int32")
  (sh, sw), ((pt, pb), (pl, pr)) = a["strides"], a["padding"]
  ho = _window(h, kh, sh, pt, pb, "rows")
  wo = _window(wd, kw, sw, pl, pr, "columns")
  _need(_shape(g, y) == (n, ho, wo, o), f"the output {list(_shape(g, y))} must be "
        f"{[n, ho, wo, o]}")


def check_dense_s8(g: Graph, op: Op) -> None:
  """jt_check_dense_s8."""
  a = op.attrs
  x, w, b, m = op.inputs[:4]
  y = op.outputs[0]
  _fw_weight(g, op, 2)
  _want(g, x, "i8", 2, "the input")
  _want(g, b, "i32", 1, "the bias")
  _multiplier(g, m, 1, "the multiplier")
  _want(g, y, "i8", 2, "the output")
  _need(_i8(a["x_zero"]), f"x_zero {a['x_zero']} is not an int8 value")
  _clamp(a["y_zero"], a["lo"], a["hi"], "the output")
  o, k = _shape(g, w)
  _need(_dim(g, x, 1) == k and _dim(g, b, 0) == o and _dim(g, m, 0) == o,
        f"input {list(_shape(g, x))}, bias and multiplier do not fit the weight {[o, k]}")
  _need(_reduction_ok(1, 1, k), f"a reduction over {k} can overflow int32")
  _need(_shape(g, y) == (_dim(g, x, 0), o), f"the output {list(_shape(g, y))} must be "
        f"{[_dim(g, x, 0), o]}")


def check_requant_s8(g: Graph, op: Op) -> None:
  """jt_check_requant_s8 (element-wise: may run in place)."""
  a = op.attrs
  x, y = op.inputs[0], op.outputs[0]
  _need(_dtype(g, x) == "i8" and _dtype(g, y) == "i8", "input and output must be i8")
  _need(_same_shape(g, x, y), "the output must have the input's shape")
  _need(_i8(a["x_zero"]), f"x_zero {a['x_zero']} is not an int8 value")
  _clamp(a["y_zero"], a["lo"], a["hi"], "the output")


def check_add_s8(g: Graph, op: Op) -> None:
  """jt_check_add_s8."""
  a = op.attrs
  x0, x1, y = op.inputs[0], op.inputs[1], op.outputs[0]
  _need(all(_dtype(g, t) == "i8" for t in (x0, x1, y)), "operands must be i8")
  _need(_same_shape(g, x0, x1) and _same_shape(g, x0, y), "operands must have one shape")
  _need(_i8(a["a_zero"]) and _i8(a["b_zero"]), "zero points must be int8 values")
  _clamp(a["y_zero"], a["lo"], a["hi"], "the output")
  # |acc| <= 255 * (|a_mult| + |b_mult|) stays inside int32: no sum can overflow
  _need(255 * (abs(a["a_mult"]) + abs(a["b_mult"])) <= INT32_MAX,
        f"multipliers {a['a_mult']}, {a['b_mult']} can overflow the int32 sum")


def check_concat_s8(g: Graph, op: Op) -> None:
  """jt_check_concat_s8."""
  a = op.attrs
  y, n = op.outputs[0], len(op.inputs)
  _need(n > 0, "concat needs at least one input")
  _need(len(a["zeros"]) == n and len(a["mults"]) == n,
        "one zero point and one multiplier per input")
  _need(_dtype(g, y) == "i8", "the output must be i8")
  axis, r = a["axis"], _rank(g, y)
  _need(1 <= axis < r, f"axis {axis} must be a non-batch axis of a rank-{r} output")
  _need(_i8(a["y_zero"]), f"y_zero {a['y_zero']} is not an int8 value")
  total = 0
  for i, x in enumerate(op.inputs):
    _need(_dtype(g, x) == "i8", f"input {i} must be i8")
    _need(_rank(g, x) == r and all(_dim(g, x, k) == _dim(g, y, k) for k in range(r)
                                   if k != axis),
          f"input {i} {list(_shape(g, x))} does not fit the output {list(_shape(g, y))}")
    total += _dim(g, x, axis)
    _need(_i8(a["zeros"][i]), f"zero point {a['zeros'][i]} is not an int8 value")
  _need(total == _dim(g, y, axis), f"the inputs' {total} along axis {axis} are not the "
        f"output's {_dim(g, y, axis)}")


def check_copy(g: Graph, op: Op) -> None:
  """jt_check_copy: one dtype (not packed bits), one element count."""
  x, y = op.inputs[0], op.outputs[0]
  _need(_dtype(g, x) == _dtype(g, y) and _dtype(g, x) != "bit",
        "input and output of one dtype, not bit")
  _need(_numel(g, x) == _numel(g, y), "input and output must have one element count")


def check_mask_s8(g: Graph, op: Op) -> None:
  """jt_check_mask_s8."""
  a = op.attrs
  y, mask = op.inputs[0], op.outputs[0]
  _need(_dtype(g, y) == "i8" and _dtype(g, mask) == "bit", "an i8 input and a bit mask")
  _need(_same_shape(g, y, mask), "the mask must have the input's shape")
  _need(_i8(a["lo"]) and _i8(a["hi"]) and a["lo"] <= a["hi"],
        f"clamp [{a['lo']}, {a['hi']}] must be int8 values, lo <= hi")


def check_gather_channels_s8(g: Graph, op: Op) -> None:
  """jt_check_gather_channels_s8."""
  x, sel, y = op.inputs[0], op.inputs[1], op.outputs[0]
  _need(_dtype(g, x) == "i8" and _dtype(g, y) == "i8", "input and output must be i8")
  _want(g, sel, "i32", 1, "the channel list")
  _need(_storage(g, sel) == "const", "the channel list must be a constant")
  r = _rank(g, x)
  _need(r >= 1 and _rank(g, y) == r, "input and output of one rank >= 1")
  _need(_shape(g, x)[:-1] == _shape(g, y)[:-1] and _dim(g, y, r - 1) == _dim(g, sel, 0),
        f"the output {list(_shape(g, y))} must be the input's with {_dim(g, sel, 0)} channels")
  _channels(g, sel, _dim(g, x, r - 1), "the channel list")


def _pool(g: Graph, op: Op) -> tuple[int, int]:
  """pool_check (jt_pool_s8.c): int8 NHWC x, y; y (n, ho, wo, c); returns (ho, wo)."""
  a = op.attrs
  x, y = op.inputs[0], op.outputs[0]
  _want(g, x, "i8", 4, "the input")
  _want(g, y, "i8", 4, "the output")
  (kh, kw), (sh, sw), ((pt, pb), (pl, pr)) = a["window"], a["strides"], a["padding"]
  _need(kh >= 1 and kw >= 1, f"window {a['window']} must be >= 1")
  n, h, w, c = _shape(g, x)
  ho = _window(h, kh, sh, pt, pb, "rows")
  wo = _window(w, kw, sw, pl, pr, "columns")
  _need(_shape(g, y) == (n, ho, wo, c), f"the output {list(_shape(g, y))} must be "
        f"{[n, ho, wo, c]}")
  return ho, wo


def check_avgpool_s8(g: Graph, op: Op) -> None:
  """jt_check_avgpool_s8."""
  a = op.attrs
  ho, wo = _pool(g, op)
  _need(_i8(a["x_zero"]), f"x_zero {a['x_zero']} is not an int8 value")
  _clamp(a["y_zero"], a["lo"], a["hi"], "the output")
  kh, kw = a["window"]
  _need(kh * kw <= INT32_MAX // 255, f"a {kh}x{kw} window can overflow the int32 sum")
  m = op.inputs[1]
  r = _rank(g, m)
  if r not in (0, 2):
    _need(_dtype(g, m) == "f32", "the multiplier must be f32")
    _fail(f"the multiplier has rank {r}: a scalar or one per output position")
  _multiplier(g, m, r, "the multiplier")
  _need(r == 0 or _shape(g, m) == (ho, wo), f"the multiplier {list(_shape(g, m))} must be "
        f"{[ho, wo]}")


def check_maxpool_s8(g: Graph, op: Op) -> None:
  """jt_check_maxpool_s8."""
  _pool(g, op)


def _layer(g: Graph, w: int, b: int, m: int, what: str) -> None:
  """layer_check (jt_bottleneck_s8.c): weight (o, kh, kw, ci) i8, bias (o,) i32, multiplier
  (o,) const finite f32."""
  _want(g, w, "i8", 4, f"the {what} weight")
  _want(g, b, "i32", 1, f"the {what} bias")
  _multiplier(g, m, 1, f"the {what} multiplier")
  o = _dim(g, w, 0)
  _need(_dim(g, b, 0) == o and _dim(g, m, 0) == o,
        f"the {what} bias and multiplier need one value per output channel")
  _need(_reduction_ok(_dim(g, w, 1), _dim(g, w, 2), _dim(g, w, 3)),
        f"the {what} reduction can overflow int32")


def check_bottleneck_s8(g: Graph, op: Op) -> None:
  """jt_check_bottleneck_s8."""
  a = op.attrs
  x, y, band = op.inputs[0], op.outputs[0], op.outputs[1]
  for k, what in enumerate(("expand", "depthwise", "project")):
    _layer(g, *op.inputs[1 + 3 * k:4 + 3 * k], what)
  _want(g, x, "i8", 4, "the input")
  _want(g, y, "i8", 4, "the output")
  _want(g, band, "i8", 1, "the band")
  _need(_i8(a["e_x_zero"]), f"e_x_zero {a['e_x_zero']} is not an int8 value")
  _clamp(a["e_y_zero"], a["e_lo"], a["e_hi"], "the expand layer")
  _clamp(a["d_y_zero"], a["d_lo"], a["d_hi"], "the depthwise layer")
  _clamp(a["p_y_zero"], a["p_lo"], a["p_hi"], "the project layer")
  we, wdw, wp = (_shape(g, op.inputs[i]) for i in (1, 4, 7))
  xn, xh, xw, xc = _shape(g, x)
  c, kd = we[0], wdw[1]
  _need(xn == 1 and we[3] == xc, "batch 1, the expand weight over the input's channels")
  _need(wdw[0] == c and wdw[3] == 1, "one depthwise filter per expanded channel")
  _need(wp[1:] == (1, 1, c), "the project layer is 1x1 over the expanded channels")
  (esh, esw), ((ept, epb), (epl, epr)) = a["e_strides"], a["e_padding"]
  (dsh, dsw), ((dpt, dpb), (dpl, dpr)) = a["d_strides"], a["d_padding"]
  e_rows = _window(xh, we[1], esh, ept, epb, "expand rows")
  e_cols = _window(xw, we[2], esw, epl, epr, "expand columns")
  d_rows = _window(e_rows, kd, dsh, dpt, dpb, "depthwise rows")
  d_cols = _window(e_cols, wdw[2], dsw, dpl, dpr, "depthwise columns")
  _need(_shape(g, y) == (1, d_rows, d_cols, wp[0]), f"the output {list(_shape(g, y))} must "
        f"be {[1, d_rows, d_cols, wp[0]]}")
  # Every output row's band [first, stop) is non-empty and the input rows the reference
  # slices for it are a real slice (first and stop ascend: the extreme rows decide).
  top_last = (d_rows - 1) * dsh - dpt
  _need(kd > dpt and top_last < e_rows, "an output row's band of expanded rows is empty")
  stop0 = min(kd - dpt, e_rows)
  end0 = (stop0 - 1) * esh - ept + we[1]
  _need(end0 >= 0 and max(top_last, 0) * esh - ept <= xh,
        "an output row's band reads input rows outside the input")
  # band_bytes: kd expanded rows and one depthwise row (jt_bottleneck_s8_get_buffer_size)
  need = kd * e_cols * c + d_cols * c
  _need(_dim(g, band, 0) >= need, f"the band holds {_dim(g, band, 0)} bytes, the block needs "
        f"{need}")


# --- float32 backward (jt_eltwise_bw_f32.c, jt_conv_bw_f32.c, jt_pool_bw_f32.c) ----------------


def check_requant_bw_f32(g: Graph, op: Op) -> None:
  """jt_check_requant_bw_f32 (in place over g is fine, over the multiplier it is not)."""
  grad, mask, m = op.inputs
  out = op.outputs[0]
  _need(_dtype(g, grad) == "f32" and _dtype(g, mask) == "bit" and _dtype(g, out) == "f32",
        "an f32 gradient, a bit mask, an f32 output")
  _need(_same_shape(g, grad, mask) and _same_shape(g, grad, out),
        "gradient, mask and output of one shape")
  _m_mode(g, m, grad)
  _need(not _same(g, out, m), "the output must not take the multiplier's bytes")


def check_conv2d_bw_input_f32(g: Graph, op: Op) -> None:
  """jt_check_conv2d_bw_input_f32."""
  a = op.attrs
  has_sel = "sel_axis" in a
  _need(len(op.inputs) == (4 if has_sel else 2), f"{len(op.inputs)} inputs: 4 with sel_axis, "
        "else 2")
  grad, gx = op.inputs[0], op.outputs[0]
  _want(g, grad, "f32", 4, "the gradient")
  _want(g, gx, "f32", 4, "the input gradient")
  w = op.inputs[1]
  _bw_weight(g, op, w, *(op.inputs[2:4] if has_sel else (-1, -1)), 4)
  n, h, wd, c = _shape(g, gx)
  o = _dim(g, grad, 3)
  groups = a["groups"]
  _need(groups >= 1, f"groups {groups} must be >= 1")
  _in_shape(g, op, gx)
  _need(_dim(g, grad, 0) == n and _dim(g, w, 0) == o and o % groups == 0
        and _dim(g, w, 3) * groups == c,
        f"gradient {list(_shape(g, grad))}, weight {list(_shape(g, w))} and input gradient "
        f"{list(_shape(g, gx))} do not fit in {groups} groups")
  (sh, sw), ((pt, pb), (pl, pr)) = a["strides"], a["padding"]
  ho = _window(h, _dim(g, w, 1), sh, pt, pb, "rows")
  wo = _window(wd, _dim(g, w, 2), sw, pl, pr, "columns")
  _need(_dim(g, grad, 1) == ho and _dim(g, grad, 2) == wo,
        f"the gradient's positions must be {[ho, wo]}")
  if len(op.outputs) == 2:
    # in place, channel by channel: depthwise, gx shaped like g, scratch one plane
    sc = op.outputs[1]
    _need(_dtype(g, sc) == "f32", "the scratch must be f32")
    _need(groups == c and o == c and _same_shape(g, grad, gx) and _numel(g, sc) == h * wd,
          "the channel-by-channel variant is a depthwise conv with one plane of scratch")
    _need(not _same(g, sc, grad) and not _same(g, sc, gx),
          "the scratch must not take the gradients' bytes")
  else:
    _need(not _same(g, gx, grad), "only the channel-by-channel variant may run in place")


def check_dense_bw_input_f32(g: Graph, op: Op) -> None:
  """jt_check_dense_bw_input_f32."""
  has_sel = "sel_axis" in op.attrs
  _need(len(op.inputs) == (4 if has_sel else 2), f"{len(op.inputs)} inputs: 4 with sel_axis, "
        "else 2")
  grad, gx, w = op.inputs[0], op.outputs[0], op.inputs[1]
  _want(g, grad, "f32", 2, "the gradient")
  _want(g, gx, "f32", 2, "the input gradient")
  _bw_weight(g, op, w, *(op.inputs[2:4] if has_sel else (-1, -1)), 2)
  _need(_dim(g, grad, 1) == _dim(g, w, 0) and _shape(g, gx) == (_dim(g, grad, 0),
                                                                 _dim(g, w, 1)),
        f"gradient {list(_shape(g, grad))}, weight {list(_shape(g, w))} and input gradient "
        f"{list(_shape(g, gx))} do not fit")
  _need(not _same(g, gx, grad), "the input gradient must not take the gradient's bytes")


def check_add_bw_f32(g: Graph, op: Op) -> None:
  """jt_check_add_bw_f32 (ga may take g's bytes; gb neither g's nor ga's)."""
  grad, mask = op.inputs
  ga, gb = op.outputs
  _need(_dtype(g, mask) == "bit" and all(_dtype(g, t) == "f32" for t in (grad, ga, gb)),
        "f32 gradients and a bit mask")
  _need(all(_same_shape(g, grad, t) for t in (mask, ga, gb)), "operands of one shape")
  _need(not _same(g, gb, grad) and not _same(g, gb, ga),
        "gb must not take the bytes of g or ga")


def check_avgpool_bw_f32(g: Graph, op: Op) -> None:
  """jt_check_avgpool_bw_f32."""
  a = op.attrs
  grad, mask, m = op.inputs
  gx = op.outputs[0]
  _want(g, grad, "f32", 4, "the gradient")
  _want(g, gx, "f32", 4, "the input gradient")
  _need(_dtype(g, mask) == "bit", "the mask must be bit")
  _need(_same_shape(g, grad, mask), "the mask must have the gradient's shape")
  _m_mode(g, m, grad)
  _in_shape(g, op, gx)
  (kh, kw), (sh, sw), ((pt, pb), (pl, pr)) = a["window"], a["strides"], a["padding"]
  n, h, w, c = _shape(g, gx)
  ho = _window(h, kh, sh, pt, pb, "rows")
  wo = _window(w, kw, sw, pl, pr, "columns")
  _need(_shape(g, grad) == (n, ho, wo, c), f"the gradient {list(_shape(g, grad))} must be "
        f"{[n, ho, wo, c]}")
  _need(not _same(g, gx, grad) and not _same(g, gx, m),
        "the input gradient must not take the gradient's or the multiplier's bytes")


def check_maxpool_bw_f32(g: Graph, op: Op) -> None:
  """jt_check_maxpool_bw_f32."""
  a = op.attrs
  grad, x, y = op.inputs
  gx = op.outputs[0]
  _want(g, grad, "f32", 4, "the gradient")
  _want(g, x, "i8", 4, "the input")
  _want(g, y, "i8", 4, "the output")
  _want(g, gx, "f32", 4, "the input gradient")
  (kh, kw), (sh, sw), ((pt, pb), (pl, pr)) = a["window"], a["strides"], a["padding"]
  n, h, w, c = _shape(g, x)
  ho = _window(h, kh, sh, pt, pb, "rows")
  wo = _window(w, kw, sw, pl, pr, "columns")
  _need(_shape(g, y) == (n, ho, wo, c) and _same_shape(g, grad, y) and _same_shape(g, gx, x),
        "output, gradient and input gradient do not fit the pool")
  _need(not _same(g, gx, grad), "the input gradient must not take the gradient's bytes")


def check_concat_bw_f32(g: Graph, op: Op) -> None:
  """jt_check_concat_bw_f32."""
  a = op.attrs
  grad, mask = op.inputs
  n = len(op.outputs)
  _need(len(a["sizes"]) == n and len(a["mults"]) == n and len(a["identity"]) == n,
        "one size, multiplier and identity flag per output")
  _need(_dtype(g, grad) == "f32" and _dtype(g, mask) == "bit", "an f32 gradient, a bit mask")
  _need(_same_shape(g, grad, mask), "the mask must have the gradient's shape")
  axis, r = a["axis"], _rank(g, grad)
  _need(1 <= axis < r, f"axis {axis} must be a non-batch axis of a rank-{r} gradient")
  total = 0
  for k, out in enumerate(op.outputs):
    size = a["sizes"][k]
    _need(size >= 0, f"size {size} must be >= 0")
    _need(_dtype(g, out) == "f32", f"output {k} must be f32")
    want = tuple(size if d == axis else _dim(g, grad, d) for d in range(r))
    _need(_shape(g, out) == want, f"output {k} {list(_shape(g, out))} must be {list(want)}")
    _need(not _same(g, out, grad), f"output {k} must not take the gradient's bytes")
    total += size
  _need(total == _dim(g, grad, axis), f"sizes sum to {total}, not the gradient's "
        f"{_dim(g, grad, axis)}")


# --- fused updates (jt_update.c, jt_bottleneck_bw_f32.c) ------------------------------------


def optimizer_slots(kind: str, momentum: float) -> int:
  """The optimizer state tensors per parameter: Adam m and v; SGD m when its momentum
  (as the runtime holds it, float32) is not zero."""
  return 2 if kind == "adam" else int(np.float32(momentum) != 0)


def _update(g: Graph, op: Op, p_index: int, p_dtype: str, p_rank: int, kind: str,
            slots: int) -> None:
  """check_update (jt_update.c): the parameter operand p_index (in state), then inv (O,)
  f32, the optimizer slots (f32 like p, in state), the step counter (int32 state scalar,
  last); outputs p then the slots, in place; pid >= 0; what the op writes shares no bytes
  with anything else it reads."""
  ins = op.inputs
  _need(len(ins) >= p_index + 3, "too few update operands")
  p, inv, step = ins[p_index], ins[p_index + 1], ins[-1]
  n_slots = len(ins) - p_index - 3
  _need(len(op.outputs) == 1 + n_slots, "outputs: the parameter, then its optimizer slots")
  _need(n_slots == slots, f"{n_slots} optimizer slots, the optimizer keeps {slots}")
  _need(op.attrs["pid"] >= 0 and op.attrs["kind"] == kind,
        f"pid {op.attrs['pid']} must be >= 0 and kind {op.attrs['kind']!r} {kind!r}")
  _need(_dtype(g, p) == p_dtype and _rank(g, p) == p_rank and _storage(g, p) == "state",
        f"the parameter (tensor {p}) must be a rank-{p_rank} {p_dtype} state tensor")
  _need(_dtype(g, inv) == "f32" and _rank(g, inv) == 1, "inv must be an f32 vector")
  _need(_dim(g, inv, 0) == _dim(g, p, 0), "inv needs one value per output channel")
  _need(_dtype(g, step) == "i32" and _storage(g, step) == "state",
        "the step counter must be an int32 state tensor")
  _need(_numel(g, step) == 1, "the step counter must hold one element")
  _need(_same(g, op.outputs[0], p) and _same_shape(g, op.outputs[0], p),
        "output 0 must be the parameter (in place)")
  for k in range(n_slots):
    s = ins[p_index + 2 + k]
    _need(_dtype(g, s) == "f32" and _rank(g, s) == p_rank and _storage(g, s) == "state",
          f"optimizer slot {k} must be an f32 state tensor")
    _need(_same_shape(g, s, p), f"optimizer slot {k} must have the parameter's shape")
    _need(_same(g, op.outputs[1 + k], s) and _same_shape(g, op.outputs[1 + k], s),
          f"output {1 + k} must be optimizer slot {k} (in place)")
  written = {p_index, *range(p_index + 2, p_index + 2 + n_slots)}
  for i in range(len(ins)):
    for k in range(len(ins)):
      if k != i and (i in written or k in written) and _same(g, ins[i], ins[k]):
        _fail(f"inputs {i} and {k} share bytes, and the op writes one of them")


def _channel_list(values: tuple[int, ...] | None, bound: int) -> None:
  """channels_attr (jt_update.c): None, or values in [0, bound), strictly ascending."""
  if values is None:
    return
  _need(all(0 <= v < bound for v in values) and all(x < y for x, y in zip(values, values[1:])),
        f"channels {list(values)} must lie in [0, {bound}) and ascend strictly")


def check_conv2d_update_s8(g: Graph, op: Op, slots: int) -> None:
  """jt_check_conv2d_update_s8."""
  a = op.attrs
  grad, x, w = op.inputs[:3]
  _need(_dtype(g, grad) == "f32" and _rank(g, grad) == 4 and _dtype(g, x) == "i8"
        and _rank(g, x) == 4, "an f32 NHWC gradient and an i8 NHWC input")
  _update(g, op, 2, "i8", 4, "weight", slots)
  (sh, sw), ((pt, pb), (pl, pr)), groups = a["strides"], a["padding"], a["groups"]
  _need(sh >= 1 and sw >= 1 and min(pt, pb, pl, pr) >= 0 and groups >= 1 and _i8(a["x_zero"]),
        "strides and groups must be >= 1, padding >= 0, x_zero an int8 value")
  n, h, wd, c = _shape(g, x)
  gc = _dim(g, grad, 3)
  o, kh, kw, ci = _shape(g, w)
  _need(kh >= 1 and kw >= 1 and tuple(a["kernel"]) == (kh, kw),
        f"kernel {a['kernel']} must be the weight's {[kh, kw]}")
  _need(_dim(g, grad, 0) == n, "gradient and input of one batch")
  ho = _window(h, kh, sh, pt, pb, "rows")
  wo = _window(wd, kw, sw, pl, pr, "columns")
  _need(_dim(g, grad, 1) == ho and _dim(g, grad, 2) == wo,
        f"the gradient's positions must be {[ho, wo]}")
  channels = a["channels"]
  _channel_list(channels, gc if groups > 1 else 2**32 - 1)
  if channels is not None and groups > 1:
    # depthwise channel subset: g's selected channels, one group each (executor _conv_update)
    _need(len(channels) > 0, "an empty channel subset")
    eff_groups = eff_o = len(channels)
  else:
    # whole, or the saved input channels of an ordinary conv (x holds just those)
    _need(channels is None or len(channels) == c, f"{c} saved input channels, "
          f"{0 if channels is None else len(channels)} listed")
    eff_groups, eff_o = groups, gc
  _need(c % eff_groups == 0 and eff_o % eff_groups == 0, "channels do not split into groups")
  _need(o == eff_o and ci == c // eff_groups, f"the weight {[o, kh, kw, ci]} does not fit")


def check_dense_update_s8(g: Graph, op: Op, slots: int) -> None:
  """jt_check_dense_update_s8."""
  a = op.attrs
  grad, x, w = op.inputs[:3]
  _need(_dtype(g, grad) == "f32" and _rank(g, grad) == 2 and _dtype(g, x) == "i8"
        and _rank(g, x) == 2, "an f32 (N, O) gradient and an i8 (N, K) input")
  _update(g, op, 2, "i8", 2, "weight", slots)
  _need(_i8(a["x_zero"]), f"x_zero {a['x_zero']} is not an int8 value")
  channels = a["channels"]
  _channel_list(channels, 2**32 - 1)
  # with channels, x is the saved input restricted to them
  _need(channels is None or len(channels) == _dim(g, x, 1),
        "as many channels as the saved input has")
  _need(_dim(g, grad, 0) == _dim(g, x, 0) and _dim(g, grad, 1) == _dim(g, w, 0)
        and _dim(g, x, 1) == _dim(g, w, 1), "gradient, input and weight do not fit")


def check_bias_update_i32(g: Graph, op: Op, slots: int) -> None:
  """jt_check_bias_update_i32."""
  grad, b = op.inputs[:2]
  _need(_dtype(g, grad) == "f32", "the gradient must be f32")
  _update(g, op, 1, "i32", 1, "bias", slots)
  r = _rank(g, grad)
  _need(r >= 1 and _dim(g, grad, r - 1) == _dim(g, b, 0),
        "the gradient's last axis must be the bias's length")


def check_bottleneck_bw_f32(g: Graph, op: Op, slots: int) -> None:
  """jt_check_bottleneck_bw_f32 (operand positions: lowering/bottleneck_bw.py)."""
  a = op.attrs
  ins, outs = op.inputs, op.outputs
  has_gx, has_sel, has_pid = a["gx"], "sel_axis" in a, "pid" in a
  _need(("x_zero" in a) == has_pid, "x_zero is present exactly when pid is")
  # get_layout: where the optional operands are
  upd = 10 if has_sel else 8
  n_slots = 0
  if has_pid:
    _need(len(ins) >= upd + 3, "too few update operands")
    n_slots = len(ins) - upd - 3
  else:
    _need(len(ins) == upd, f"{len(ins)} inputs, the layout takes {upd}")
  _need(len(outs) == 3 + has_gx + (1 + n_slots if has_pid else 0),
        f"{len(outs)} outputs do not fit the layout")
  grad, w3, mask_d, m_d, w2, mask_e, m_e, w1 = ins[:8]
  _want(g, grad, "f32", 4, "the gradient")
  _want(g, w2, "i8", 4, "the depthwise weight")
  _want(g, mask_e, "bit", 4, "the expand mask")
  _, ho, wo, o = _shape(g, grad)
  c = _dim(g, w2, 0)
  he, we = _dim(g, mask_e, 1), _dim(g, mask_e, 2)
  _need(_dim(g, grad, 0) == 1 and _dim(g, w2, 3) == 1,
        "batch 1 and one depthwise filter per channel")
  for t, dtype, want, what in ((w3, "i8", (o, 1, 1, c), "the project weight"),
                               (mask_d, "bit", (1, ho, wo, c), "the depthwise mask"),
                               (mask_e, "bit", (1, he, we, c), "the expand mask")):
    _want(g, t, dtype, 4, what)
    _need(_shape(g, t) == want, f"{what} {list(_shape(g, t))} must be {list(want)}")
  for m, what in ((m_d, "depthwise"), (m_e, "expand")):
    # the reference reshapes m to (-1,): one value, or one per channel
    _need(_dtype(g, m) == "f32", f"the {what} multiplier must be f32")
    _need(_numel(g, m) in (1, c), f"the {what} multiplier needs 1 or {c} values")
    _need(_finite_if_const(g, m), f"the {what} multiplier holds a value that is not finite")
  axis = _bw_weight(g, op, w1, *(ins[8:10] if has_sel else (-1, -1)), 4)
  k = _dim(g, w1, 3)
  _need(_shape(g, w1)[:3] == (c, 1, 1), "the expand weight is 1x1 into the expanded channels")
  (sh, sw), ((pt, pb), (pl, pr)) = a["d_strides"], a["d_padding"]
  dh = _window(he, _dim(g, w2, 1), sh, pt, pb, "depthwise rows")
  dw = _window(we, _dim(g, w2, 2), sw, pl, pr, "depthwise columns")
  _need((dh, dw) == (ho, wo), "the depthwise conv does not map the expanded positions onto "
        "the gradient's")
  _need(_dtype(g, outs[0]) == "f32", "the scratch must be f32")
  _need(_numel(g, outs[0]) in (ho * wo + he * we, 2 * (ho * wo + he * we)),
        "the scratch holds one depthwise-output and one expanded plane, or two of each")
  for t, what in ((outs[1], "gb_d"), (outs[2], "gb_e")):
    _want(g, t, "f32", 1, what)
    _need(_dim(g, t, 0) == c, f"{what} needs one value per expanded channel")
  if has_gx:
    _want(g, outs[3], "f32", 4, "gx")
    _need(_shape(g, outs[3]) == (1, he, we, k), f"gx must be {[1, he, we, k]}")
  plain = 3 + has_gx  # scratch, gb_d, gb_e, gx take no input's or other output's bytes
  for q in range(plain):
    _need(not any(_same(g, outs[q], t) for t in ins), f"output {q} takes an input's bytes")
    _need(not any(_same(g, outs[q], outs[r]) for r in range(q)),
          f"output {q} takes another output's bytes")
  if not has_pid:
    return
  param, x = ins[8 if has_sel else 7], ins[upd]
  inv, step = ins[upd + 1], ins[-1]
  _need(a["pid"] >= 0 and _i8(a["x_zero"]), "pid must be >= 0, x_zero an int8 value")
  # row c of the parameter is row c of w1: a selection must be of input channels
  _need(not has_sel or axis == 3, "a selection of the expand weight must be of input channels")
  _need(_dtype(g, param) == "i8" and _storage(g, param) == "state",
        "the trained weight must be an i8 state tensor")
  kx = _dim(g, param, 3)
  _want(g, x, "i8", 4, "the saved input")
  _need(_shape(g, x) == (1, he, we, kx), f"the saved input must be {[1, he, we, kx]}")
  _need(_dtype(g, inv) == "f32", "inv must be f32")
  _need(_numel(g, inv) == c, "inv needs one value per expanded channel")
  _need(_dtype(g, step) == "i32", "the step counter must be int32")
  _need(_numel(g, step) == 1, "the step counter must hold one element")
  _need(n_slots == slots, f"{n_slots} optimizer slots, the optimizer keeps {slots}")
  _need(_same(g, outs[plain], param), "the trained weight is updated in place")
  for q in range(n_slots):
    s = ins[upd + 2 + q]
    _need(_dtype(g, s) == "f32" and _storage(g, s) == "state",
          f"optimizer slot {q} must be an f32 state tensor")
    _need(_same_shape(g, s, param), f"optimizer slot {q} must have the weight's shape")
    _need(_same(g, outs[plain + 1 + q], s), f"optimizer slot {q} is updated in place")


# --- small ops of the loss (jt_loss_ops.c) -------------------------------------------------

VALUE_DTYPES = ("i8", "i32", "f32", "bool", "u32")  # jt_dtype_size != 0: not packed bits
WORD_DTYPES = ("f32", "i32", "u32")
COMPARISONS = ("lt", "gt", "le", "ge", "eq", "ne")


def check_cast(g: Graph, op: Op) -> None:
  """jt_check_cast."""
  x, y = op.inputs[0], op.outputs[0]
  _need(_dtype(g, x) in VALUE_DTYPES and _dtype(g, y) in VALUE_DTYPES,
        "a value dtype on both sides (not bit)")
  _need(_same_shape(g, x, y), "the output must have the input's shape")


def check_unary(g: Graph, op: Op) -> None:
  """jt_check_unary."""
  x, y, fn = op.inputs[0], op.outputs[0], op.attrs["fn"]
  dx, dy = _dtype(g, x), _dtype(g, y)
  _need(_same_shape(g, x, y), "the output must have the input's shape")
  if dx == "f32":
    _need(fn != "not", "not of a float")
    _need(dy == ("bool" if fn == "is_finite" else "f32"), f"{fn} of f32 gives "
          f"{'bool' if fn == 'is_finite' else 'f32'}, not {dy}")
    return
  _need(dx == dy, f"{fn} of {dx} gives {dx}, not {dy}")
  if dx in ("i32", "u32"):
    _need(fn in ("neg", "abs", "sign", "not"), f"no {fn} of {dx}")
  else:
    _need(dx == "bool", f"no unary op of {dx}")
    _need(fn == "not", f"no {fn} of bool")


def check_binary(g: Graph, op: Op) -> None:
  """jt_check_binary: numpy broadcasting of a scalar or of unit axes."""
  x0, x1, y, fn = op.inputs[0], op.inputs[1], op.outputs[0], op.attrs["fn"]
  d = _dtype(g, x0)
  want = "bool" if fn in COMPARISONS else d
  _need(_dtype(g, x1) == d and _dtype(g, y) == want, f"{fn} of {d} and {_dtype(g, x1)} "
        f"gives {want}, not {_dtype(g, y)}")
  if d == "f32":
    _need(fn not in ("and", "or"), f"no {fn} of floats")
  elif d in ("i32", "u32"):
    _need(fn != "pow", f"no pow of {d}")
  elif d == "bool":
    _need(fn in COMPARISONS or fn in ("and", "or"), f"no {fn} of bool")
  else:
    _fail(f"no binary op of {d}")
  if (_rank(g, x0) == 0 and _same_shape(g, x1, y)) or (_rank(g, x1) == 0
                                                       and _same_shape(g, x0, y)):
    return
  r = _rank(g, y)
  _need(_rank(g, x0) == r and _rank(g, x1) == r
        and all(da in (dy, 1) and db in (dy, 1) and dy == max(da, db)
                for da, db, dy in zip(_shape(g, x0), _shape(g, x1), _shape(g, y))),
        f"shapes {list(_shape(g, x0))} and {list(_shape(g, x1))} do not broadcast to "
        f"{list(_shape(g, y))}")


def check_select(g: Graph, op: Op) -> None:
  """jt_check_select."""
  p, x0, x1 = op.inputs
  y = op.outputs[0]
  d = _dtype(g, y)
  _need(_dtype(g, p) == "bool" and d in VALUE_DTYPES and _dtype(g, x0) == d
        and _dtype(g, x1) == d, "a bool predicate and values of the output's dtype")
  _need(_same_shape(g, x0, y) and _same_shape(g, x1, y), "values of the output's shape")
  _need(_rank(g, p) == 0 or _same_shape(g, p, y), "a scalar predicate or one per element")


def check_reduce(g: Graph, op: Op) -> None:
  """jt_check_reduce: y is x without the reduced axes."""
  x, y, axes = op.inputs[0], op.outputs[0], op.attrs["axes"]
  _need(_dtype(g, x) in WORD_DTYPES and _dtype(g, y) == _dtype(g, x),
        "an f32, i32 or u32 input and an output of its dtype")
  r = _rank(g, x)
  _need(len(axes) <= r and all(0 <= ax < r for ax in axes) and len(set(axes)) == len(axes),
        f"axes {list(axes)} must be distinct axes of a rank-{r} input")
  keep = tuple(d for k, d in enumerate(_shape(g, x)) if k not in axes)
  _need(_shape(g, y) == keep, f"the output {list(_shape(g, y))} must be {list(keep)}")


def check_broadcast(g: Graph, op: Op) -> None:
  """jt_check_broadcast: x's axis i goes to output axis dims[i], ascending."""
  x, y, dims = op.inputs[0], op.outputs[0], op.attrs["dims"]
  _need(_dtype(g, x) in VALUE_DTYPES and _dtype(g, y) == _dtype(g, x),
        "a value dtype, the output's")
  _need(len(dims) == _rank(g, x), f"{len(dims)} dims for a rank-{_rank(g, x)} input")
  prev = -1
  for k, d in enumerate(dims):
    _need(prev < d < _rank(g, y), f"dims {list(dims)} must ascend strictly within the "
          f"output's rank {_rank(g, y)}")
    _need(_dim(g, x, k) in (1, _dim(g, y, d)), f"input axis {k} does not broadcast")
    prev = d


def check_iota(g: Graph, op: Op) -> None:
  """jt_check_iota."""
  y, axis = op.outputs[0], op.attrs["axis"]
  _need(_dtype(g, y) in WORD_DTYPES, "an f32, i32 or u32 output")
  _need(0 <= axis < _rank(g, y), f"axis {axis} is not an axis of the output")
  _need(_dtype(g, y) != "i32" or _dim(g, y, axis) <= INT32_MAX, "an index beyond int32")


def _one_index(g: Graph, idx: int) -> bool:
  return _dtype(g, idx) == "i32" and _numel(g, idx) == 1


def _drops_last(g: Graph, x: int, v: int) -> bool:
  """v holds one element per row of x (x without its last axis, any shape)."""
  return _rank(g, x) > 0 and math.prod(_shape(g, x)[:-1]) == _numel(g, v)


def check_take_last(g: Graph, op: Op) -> None:
  """jt_check_take_last."""
  x, idx, y = op.inputs[0], op.inputs[1], op.outputs[0]
  _need(_dtype(g, x) in VALUE_DTYPES and _dtype(g, y) == _dtype(g, x) and _one_index(g, idx),
        "values of one dtype and one int32 index")
  _need(_drops_last(g, x, y), "one output element per row of the input")


def check_scatter_add_last(g: Graph, op: Op) -> None:
  """jt_check_scatter_add_last."""
  x, idx, v = op.inputs
  y = op.outputs[0]
  _need(_dtype(g, x) in WORD_DTYPES and _dtype(g, v) == _dtype(g, x)
        and _dtype(g, y) == _dtype(g, x) and _one_index(g, idx),
        "f32, i32 or u32 values of one dtype and one int32 index")
  _need(_same_shape(g, x, y) and _drops_last(g, x, v),
        "the output of the input's shape, one value per row")


# --- dispatch ------------------------------------------------------------------------------

UPDATES = ("conv2d_update_s8", "dense_update_s8", "bias_update_i32", "bottleneck_bw_f32")
# must_not_alias of jt_runtime.c: the kernels write the output while they still read the
# inputs (windows, gathers, scatters), where the reference computes the whole result first.
NOT_IN_PLACE = ("conv2d_s8", "dense_s8", "avgpool_s8", "maxpool_s8", "gather_channels_s8",
                "bottleneck_s8", "concat_s8", "scatter_add_last")
CHECKS: dict[str, Callable[..., None]] = {
  name.removeprefix("check_"): f for name, f in dict(globals()).items()
  if name.startswith("check_") and callable(f)}


assert set(CHECKS) == set(BY_NAME), "every opcode of lowering/opset.py needs its rule here"


def check(g: Graph, op: Op, slots: int) -> None:
  """Op `op`'s rule; slots: the optimizer slots per parameter (optimizer_slots)."""
  f = CHECKS[op.name]
  if op.name in UPDATES:
    f(g, op, slots)
  else:
    f(g, op)
  if op.name in NOT_IN_PLACE:  # outputs_disjoint of jt_runtime.c
    for k, t in enumerate(op.outputs):
      _need(not any(_same(g, t, u) for u in op.inputs + op.outputs[:k]),
            f"output {k} (tensor {t}) shares bytes with another operand: {op.name} cannot "
            "run in place")
