"""The opcode table: the one source of truth of the ops a blob may hold.

Ids are stable: an opcode is never renumbered or reused, new ones take the next free id
(LAST_USED_ID below). `python -m lowering.opset` regenerates the C header
`runtime_c/include/jt_opcodes.h` from this table.

Kernel names follow CMSIS-NN's pattern, jt_<op>_<dtype>[_<variant>]: s8 = int8
activations, f32 = float32 gradients, i32 = int32. Each op lists its operands (inputs,
then outputs) and its integer attributes, in the order the blob stores them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OpDef:
  id: int
  name: str
  inputs: tuple[str, ...]
  outputs: tuple[str, ...]
  attrs: tuple[str, ...]
  doc: str


OPS: tuple[OpDef, ...] = (
  # --- int8 forward (docs/numerics.md) -------------------------------------------------
  OpDef(1, "conv2d_s8", ("x", "w", "b", "m", "w_sel?", "sel?"), ("y",),
        ("sh", "sw", "pt", "pb", "pl", "pr", "groups", "x_zero", "y_zero", "lo", "hi"),
        "conv / depthwise conv, exact int32 acc, per-channel requant; w_sel+sel: the "
        "trained input channels live in SRAM"),
  OpDef(2, "dense_s8", ("x", "w", "b", "m", "w_sel?", "sel?"), ("y",),
        ("x_zero", "y_zero", "lo", "hi"), "fully connected, as conv2d_s8"),
  OpDef(3, "add_s8", ("a", "b"), ("y",),
        ("a_zero", "b_zero", "y_zero", "a_mult", "b_mult", "lo", "hi", "m_bits"),
        "residual add: integer multipliers, one f32 multiply (m_bits: its float32 bits)"),
  OpDef(4, "avgpool_s8", ("x", "m"), ("y",),
        ("kh", "kw", "sh", "sw", "pt", "pb", "pl", "pr", "x_zero", "y_zero", "lo", "hi"),
        "average pool; m per output position or scalar"),
  OpDef(5, "maxpool_s8", ("x",), ("y",), ("kh", "kw", "sh", "sw", "pt", "pb", "pl", "pr"),
        "max pool"),
  OpDef(6, "requant_s8", ("x",), ("y",), ("x_zero", "y_zero", "lo", "hi", "m_bits"),
        "requantize / clamp"),
  OpDef(7, "concat_s8", ("xs*",), ("y",), ("axis", "y_zero"),
        "channel concat; per input zero point and f32 multiplier in a constant table"),
  OpDef(8, "copy", ("x",), ("y",), (), "byte copy (a reshape that cannot alias)"),
  OpDef(9, "mask_s8", ("y",), ("mask",), ("lo", "hi"),
        "1 bit per element: lo < y < hi, the clamp mask saved for the backward pass"),
  OpDef(10, "gather_channels_s8", ("x", "sel"), ("y",), (),
        "the selected input channels of a layer input, saved for its weight gradient"),
  # --- float32 backward (pulp-trainlib's split: bw_input_grads / bw_param_grads) ---------
  OpDef(16, "requant_bw_f32", ("g", "mask", "m"), ("g_acc",), (),
        "g * M where the output was inside its clamp range, else 0"),
  OpDef(17, "conv2d_bw_input_f32", ("g", "w", "w_sel?", "sel?"), ("gx",),
        ("sh", "sw", "pt", "pb", "pl", "pr", "groups"), "input gradient of a conv"),
  OpDef(18, "dense_bw_input_f32", ("g", "w", "w_sel?", "sel?"), ("gx",), (),
        "input gradient of a dense layer"),
  OpDef(19, "add_bw_f32", ("g", "mask"), ("ga", "gb"), ("a_mult", "b_mult", "m_bits"),
        "gradients of a residual add's two inputs"),
  OpDef(20, "avgpool_bw_f32", ("g", "mask", "m"), ("gx",),
        ("kh", "kw", "sh", "sw", "pt", "pb", "pl", "pr"), "average-pool gradient"),
  OpDef(21, "maxpool_bw_f32", ("g", "x", "y"), ("gx",),
        ("kh", "kw", "sh", "sw", "pt", "pb", "pl", "pr"),
        "max-pool gradient to the first maximum of each window"),
  OpDef(22, "concat_bw_f32", ("g", "mask"), ("gxs*",), ("axis",), "split of a concat's gradient"),
  OpDef(23, "conv2d_update_s8", ("g", "x", "w", "inv", "state*", "step"), ("w",),
        ("sh", "sw", "pt", "pb", "pl", "pr", "groups", "x_zero", "pid"),
        "weight gradient fused with the update, one output channel at a time (in place)"),
  OpDef(24, "dense_update_s8", ("g", "x", "w", "inv", "state*", "step"), ("w",),
        ("x_zero", "pid"), "dense weight gradient fused with the update (in place)"),
  OpDef(25, "bias_update_i32", ("g", "b", "inv", "state*", "step"), ("b",), ("pid",),
        "bias gradient (sum over positions) fused with the update (in place)"),
  # --- small float32 / int32 ops of the loss ---------------------------------------------
  OpDef(32, "cast", ("x",), ("y",), (), "value conversion to the output dtype"),
  OpDef(33, "unary", ("x",), ("y",), ("fn",), "neg / exp / log / floor / not, elementwise"),
  OpDef(34, "binary", ("a", "b"), ("y",), ("fn",),
        "add / sub / mul / div / max / min / lt / gt / le / ge / eq / ne / and / or; a "
        "scalar operand broadcasts"),
  OpDef(35, "select", ("pred", "a", "b"), ("y",), (), "pred ? b : a (jax select_n)"),
  OpDef(36, "reduce", ("x",), ("y",), ("fn", "axes_mask"), "sum / max over the masked axes"),
  OpDef(37, "broadcast", ("x",), ("y",), ("dims_mask",),
        "broadcast_in_dim: x's axes map to the masked output axes"),
  OpDef(38, "iota", (), ("y",), ("axis",), "index along an axis"),
  OpDef(39, "take_last", ("x", "idx"), ("y",), (), "y[..., 0] = x[..., idx] (take_along_axis)"),
  OpDef(40, "scatter_add_last", ("x", "idx", "v"), ("y",), (),
        "y = x; y[..., idx] += v[..., 0]"),
)

BY_NAME = {op.name: op for op in OPS}
BY_ID = {op.id: op for op in OPS}
LAST_USED_ID = 40  # the next opcode takes 41; a retired id is never reused

UNARY = ("neg", "exp", "log", "floor", "not", "sqrt")
BINARY = ("add", "sub", "mul", "div", "max", "min", "lt", "gt", "le", "ge", "eq", "ne",
          "and", "or")
REDUCE = ("sum", "max")
DTYPES = ("i8", "i32", "f32", "bit", "bool", "u32")  # bit: packed masks, 8 per byte

assert len(BY_NAME) == len(OPS) and len(BY_ID) == len(OPS)
assert max(BY_ID) <= LAST_USED_ID


def c_header() -> str:
  """The C enum of opcodes and of the small ops' functions, one aligned comment each."""
  lines = ["/* Generated by `python -m lowering.opset` from lowering/opset.py: do not edit. */",
           "#ifndef JT_OPCODES_H", "#define JT_OPCODES_H", "",
           f"#define JT_LAST_OPCODE {LAST_USED_ID}", "", "typedef enum {"]
  width = max(len(op.name) for op in OPS) + 10
  for op in OPS:
    lines.append(f"  {('JT_OP_' + op.name.upper() + ' = ' + str(op.id) + ','):<{width + 8}}"
                 f"/* {op.doc} */")
  lines += ["} jt_opcode;", ""]
  for kind, names in (("UNARY", UNARY), ("BINARY", BINARY), ("REDUCE", REDUCE),
                      ("DTYPE", DTYPES)):
    lines.append("typedef enum {")
    lines += [f"  JT_{kind}_{n.upper()} = {i}," for i, n in enumerate(names)]
    lines += [f"}} jt_{kind.lower()}_fn;", ""]
  lines.append("#endif")
  return "\n".join(lines) + "\n"


HEADER = Path(__file__).resolve().parent.parent / "runtime_c" / "include" / "jt_opcodes.h"


def main() -> None:
  HEADER.parent.mkdir(parents=True, exist_ok=True)
  HEADER.write_text(c_header())
  print(f"wrote {HEADER}", file=sys.stderr)


if __name__ == "__main__":
  main()
