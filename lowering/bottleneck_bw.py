"""Channel-by-channel backward of the inverted bottlenecks on the backward path.

Op by op, the backward pass of a 1x1 expand -> depthwise -> 1x1 project block holds the
gradients of the depthwise output and of the expanded tensor in full (float32, t times the
block's width): in MobileNetV2 they are the largest tensors of the training step. Their
channels are independent until the expand's input gradient sums them, so one
`bottleneck_bw_f32` op (`kernels.bottleneck_bw`) runs the block's backward one expanded
channel at a time: only the project's accumulator gradient, the block input's gradient and
two one-channel planes are alive. The bias updates of the depthwise and expand layers read
the (C,) bias gradients it writes; the expand's weight update runs inside, row by row.

A block is fused when its backward ops have exactly the readers the pattern expects: the
depthwise weight frozen (its update would need the whole gradient), the project's weight
in one piece (frozen or trained whole), the expand's channel selection (if any) on its
input channels. Anything else keeps the op-by-op backward.
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxtiny.sparse import bottleneck_scratch
from lowering.ir import Graph, Op
from lowering.kernels import NO_PADDING

FUSED = "bottleneck_bw_f32"


@dataclass(frozen=True)
class Trained:
  """The expand-weight update of a bottleneck_bw_f32 op: the parameter (w1, or w1_sel of a
  channel selection), the saved input x, the QAS factors, optimizer state, step counter."""

  p: int
  x: int
  inv: int
  slots: list[int]
  step: int


def trained(op: Op) -> Trained | None:
  """The update operands of a bottleneck_bw_f32 op; None when it updates nothing (or for
  any other op)."""
  if op.name != FUSED or "pid" not in op.attrs:
    return None
  sel = "sel_axis" in op.attrs
  x = 10 if sel else 8
  return Trained(op.inputs[8 if sel else 7], op.inputs[x], op.inputs[x + 1],
                 op.inputs[x + 2:-1], op.inputs[-1])


def pointwise(g: Graph, op: Op, weight: int) -> bool:
  """A plain 1x1 convolution (or its backward): stride 1, no padding, one group."""
  w = g.tensors[weight].shape
  return (op.attrs.get("strides") == (1, 1) and op.attrs.get("padding") == NO_PADDING
          and op.attrs.get("groups") == 1 and len(w) == 4 and w[1:3] == (1, 1))


@dataclass
class _Block:
  """One block's backward ops, found from its depthwise input gradient (indices into ops)."""

  project: int  # conv2d_bw_input_f32 of the project layer
  rq_d: int  # requant_bw_f32 at the depthwise accumulator
  dw: int  # conv2d_bw_input_f32 of the depthwise layer
  rq_e: int  # requant_bw_f32 at the expand accumulator
  forward: int  # conv2d_s8 of the expand layer (its weight operands)
  bias: dict[int, int]  # bias_update_i32 -> 0 (depthwise bias) or 1 (expand bias)
  bw: int | None  # conv2d_bw_input_f32 of the expand layer
  up: int | None  # conv2d_update_s8 of the expand weight

  @property
  def at(self) -> int:
    """Where the fused op goes: the last of the gradient ops it replaces."""
    return max(self.project, self.rq_d, self.dw, self.rq_e, -1 if self.bw is None else self.bw)

  @property
  def absorbed(self) -> set[int]:
    return {self.project, self.rq_d, self.dw, self.rq_e,
            *(i for i in (self.bw, self.up) if i is not None)}


class _Finder:
  def __init__(self, g: Graph, ops: list[Op]):
    self.g, self.ops = g, ops
    self.producer = {g.base(t): i for i, op in enumerate(ops) for t in op.outputs}
    self.viewed = {t.alias for t in g.tensors if t.alias is not None}
    self.readers: dict[int, list[int]] = {}
    for i, op in enumerate(ops):
      for t in op.inputs:
        self.readers.setdefault(g.base(t), []).append(i)

  def scratch(self, t: int) -> bool:
    """A gradient the fusion may drop: its own arena buffer, no view of it."""
    return (self.g.base(t) == t and self.g.tensors[t].storage == "arena"
            and t not in self.viewed)

  def made_by(self, t: int, name: str) -> int | None:
    i = self.producer.get(self.g.base(t))
    return i if i is not None and self.ops[i].name == name else None

  def only_reader(self, t: int, name: str) -> int | None:
    """The one op reading t, if it is a `name` op reading t as its first operand."""
    r = self.readers.get(t, [])
    ok = (self.scratch(t) and len(r) == 1 and self.ops[r[0]].name == name
          and self.ops[r[0]].inputs[0] == t)
    return r[0] if ok else None

  def block(self, j: int) -> _Block | None:
    g, ops = self.g, self.ops
    dw = ops[j]
    if dw.name != "conv2d_bw_input_f32":
      return None
    gd_acc, w2 = dw.inputs[0], dw.inputs[1]
    c = g.tensors[w2].shape[0]
    if ("sel_axis" in dw.attrs or len(dw.outputs) != 1 or dw.attrs["groups"] != c
            or g.tensors[w2].shape[3] != 1 or not self.scratch(gd_acc)):
      return None
    rd = self.made_by(gd_acc, "requant_bw_f32")
    pr = None if rd is None else self.made_by(ops[rd].inputs[0], "conv2d_bw_input_f32")
    if pr is None or self.only_reader(ops[rd].inputs[0], "requant_bw_f32") != rd:
      return None
    p = ops[pr]
    if ("sel_axis" in p.attrs or not pointwise(g, p, p.inputs[1])
            or g.tensors[p.inputs[1]].shape[3] != c):
      return None
    bias = {i: 0 for i in self.readers[gd_acc] if i != j}
    re = self.only_reader(dw.outputs[0], "requant_bw_f32")
    if re is None or any(ops[i].name != "bias_update_i32" for i in bias):
      return None
    ge_acc = ops[re].outputs[0]
    mk = self.made_by(ops[re].inputs[1], "mask_s8")
    fe = None if mk is None else self.made_by(ops[mk].inputs[0], "conv2d_s8")
    if (fe is None or not self.scratch(ge_acc) or not pointwise(g, ops[fe], ops[fe].inputs[1])
            or g.tensors[ops[fe].inputs[1]].shape[0] != c
            or ops[fe].attrs.get("sel_axis", 3) not in (3, -1)):
      return None
    w1 = _expand_weight(ops[fe])
    bw = up = None
    for i in self.readers.get(ge_acc, []):
      o = ops[i]
      if o.inputs[0] != ge_acc:
        return None
      if o.name == "bias_update_i32":
        bias[i] = 1
      elif (o.name == "conv2d_bw_input_f32" and bw is None and o.inputs[1:] == w1
            and pointwise(g, o, o.inputs[1])):
        bw = i
      elif (o.name == "conv2d_update_s8" and up is None and o.attrs["kind"] == "weight"
            and o.inputs[2] == w1[1 if len(w1) == 3 else 0] and pointwise(g, o, o.inputs[2])):
        up = i
      else:
        return None
    b = _Block(pr, rd, j, re, fe, bias, bw, up)
    # The bias updates read what the fused op writes; the weight update moves up to it.
    if any(i <= b.at for i in bias) or (up is not None and self.touched(b.at, up)):
      return None
    return b

  def touched(self, at: int, up: int) -> bool:
    """Whether an op between `at` and `up` uses the update's parameter or state."""
    bases = {self.g.base(t) for t in self.ops[up].outputs}
    return any(self.g.base(t) in bases for op in self.ops[at + 1:up]
               for t in op.inputs + op.outputs)


def _expand_weight(fe: Op) -> list[int]:
  """The weight operands of the expand layer's forward op: w, or w, w_sel, sel."""
  return [fe.inputs[1], *fe.inputs[4:6]] if "sel_axis" in fe.attrs else [fe.inputs[1]]


def _fused(g: Graph, ops: list[Op], b: _Block) -> tuple[Op, int, int]:
  """The bottleneck_bw_f32 op of a block, and its two bias gradient tensors."""
  dw, fe = ops[b.dw], ops[b.forward]
  c = g.tensors[dw.inputs[1]].shape[0]
  (ho, wo), (h, w) = g.tensors[dw.inputs[0]].shape[1:3], g.tensors[dw.outputs[0]].shape[1:3]
  n = len(g.tensors)
  scratch = g.add(f"scratch{n}", (bottleneck_scratch(ho * wo + h * w),), "f32")
  gb_d, gb_e = (g.add(f"grad{n + k}", (c,), "f32") for k in (1, 2))
  ins = [*ops[b.project].inputs[:2], *ops[b.rq_d].inputs[1:3], dw.inputs[1],
         *ops[b.rq_e].inputs[1:3], *_expand_weight(fe)]
  outs = [scratch, gb_d, gb_e]
  attrs = {"d_strides": dw.attrs["strides"], "d_padding": dw.attrs["padding"],
           "gx": b.bw is not None}
  if "sel_axis" in fe.attrs:
    attrs["sel_axis"] = fe.attrs["sel_axis"]
  if b.bw is not None:
    outs.append(ops[b.bw].outputs[0])
  if b.up is not None:
    u = ops[b.up]
    ins += [u.inputs[1], *u.inputs[3:]]
    outs += u.outputs
    attrs |= {"pid": u.attrs["pid"], "x_zero": u.attrs["x_zero"]}
  return Op(FUSED, ins, outs, attrs), gb_d, gb_e


def fuse_bottleneck_backward(g: Graph, ops: list[Op]) -> list[Op]:
  """The op list with the backward of every matching bottleneck as one channel-by-channel
  op (ops in program order, before reordering)."""
  finder = _Finder(g, ops)
  at: dict[int, Op] = {}
  dropped: set[int] = set()
  replaced: dict[int, Op] = {}
  for j in range(len(ops)):
    b = finder.block(j)
    if b is None or b.absorbed & dropped or b.absorbed & set(replaced):
      continue
    fused, gb_d, gb_e = _fused(g, ops, b)
    at[b.at] = fused
    dropped |= b.absorbed - {b.at}
    for i, which in b.bias.items():
      o = ops[i]
      replaced[i] = Op(o.name, [(gb_d, gb_e)[which], *o.inputs[1:]], o.outputs, o.attrs)
  return [at.get(i) or replaced.get(i, op) for i, op in enumerate(ops) if i not in dropped]
