"""The opcode table: the one source of truth of the ops a blob may hold.

Ids are stable: an opcode is never renumbered or reused, new ones take the next free id
(LAST_USED_ID below). `python -m lowering.opset` regenerates the C header
`runtime_c/include/jt_opcodes.h` from this table.

Kernel names follow CMSIS-NN's pattern, jt_<op>_<dtype>[_<variant>]: s8 = int8
activations, f32 = float32 gradients, i32 = int32. Each op lists its operands (inputs,
then outputs; "?" optional, "*" any number) and its attribute schema: how the blob stores
each attribute of the op's dict in int32 slots (SCALARS below), in order.
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
  attrs: tuple[tuple[str, str], ...]  # (IR key, encoding), in blob order
  doc: str


# --- attribute schema (the blob stores an op's attributes as int32 slots, entry by entry) ---
# An entry is (IR key, encoding). A key ending in "?" may be absent from the op: a presence
# slot (0 or 1), then the value's slots (zeros when absent). Encodings: a scalar of SCALARS;
# "enum:<table>": one slot, the index of a name in ENUMS[table]; "<scalar>[]": a count slot,
# then the values (a tuple); "opt_<scalar>[]": the same, or count -1 for None. Fixed-size
# entries come first so that a kernel finds them at fixed slots.
SCALARS = {  # encoding -> (slots, what they hold)
  "i32": (1, "an int"),
  "f32": (1, "the float32 bits of a float"),
  "bool": (1, "0 or 1"),
  "i32x2": (2, "a pair (h, w): strides, window, kernel"),
  "i32x3": (3, "a shape (h, w, c)"),
  "pad4": (4, "((top, bottom), (left, right)) as top, bottom, left, right"),
}


def _schema(spec: str) -> tuple[tuple[str, str], ...]:
  """"strides:i32x2 groups" -> (("strides", "i32x2"), ("groups", "i32")): i32 if unnamed."""
  return tuple((key, enc or "i32") for key, _, enc in (w.partition(":") for w in spec.split()))


OPS: tuple[OpDef, ...] = (
  # --- int8 forward (docs/numerics.md) -------------------------------------------------
  OpDef(1, "conv2d_s8", ("x", "w", "b", "m", "w_sel?", "sel?"), ("y",),
        _schema("strides:i32x2 padding:pad4 groups x_zero y_zero lo hi sel_axis?"),
        "conv / depthwise conv, exact int32 acc, per-channel requant; w_sel+sel: the "
        "trained input channels live in SRAM"),
  OpDef(2, "dense_s8", ("x", "w", "b", "m", "w_sel?", "sel?"), ("y",),
        _schema("x_zero y_zero lo hi sel_axis?"), "fully connected, as conv2d_s8"),
  OpDef(3, "add_s8", ("a", "b"), ("y",),
        _schema("a_zero b_zero y_zero a_mult b_mult lo hi m:f32"),
        "residual add: integer multipliers, one f32 multiply m"),
  OpDef(4, "avgpool_s8", ("x", "m"), ("y",),
        _schema("window:i32x2 strides:i32x2 padding:pad4 x_zero y_zero lo hi"),
        "average pool; m per output position or scalar"),
  OpDef(5, "maxpool_s8", ("x",), ("y",), _schema("window:i32x2 strides:i32x2 padding:pad4"),
        "max pool"),
  OpDef(6, "requant_s8", ("x",), ("y",), _schema("x_zero y_zero lo hi m:f32"),
        "requantize / clamp"),
  OpDef(7, "concat_s8", ("xs*",), ("y",), _schema("axis y_zero zeros:i32[] mults:f32[]"),
        "concat; each input requantized with its zero point and f32 multiplier"),
  OpDef(8, "copy", ("x",), ("y",), (), "byte copy (a reshape that cannot alias)"),
  OpDef(9, "mask_s8", ("y",), ("mask",), _schema("lo hi"),
        "1 bit per element: lo < y < hi, the clamp mask saved for the backward pass"),
  OpDef(10, "gather_channels_s8", ("x", "sel"), ("y",), (),
        "the selected input channels of a layer input, saved for its weight gradient"),
  OpDef(11, "bottleneck_s8", ("x", "w1", "b1", "m1", "w2", "b2", "m2", "w3", "b3", "m3"),
        ("y", "band"),
        _schema("e_strides:i32x2 e_padding:pad4 e_x_zero e_y_zero e_lo e_hi d_strides:i32x2 "
                "d_padding:pad4 d_y_zero d_lo d_hi p_y_zero p_lo p_hi"),
        "inverted bottleneck of the frozen prefix (conv, depthwise, 1x1) one output row at "
        "a time; band: int8 scratch of kd expanded rows + one depthwise row"),
  # --- float32 backward (pulp-trainlib's split: bw_input_grads / bw_param_grads) ---------
  OpDef(16, "requant_bw_f32", ("g", "mask", "m"), ("g_acc",), (),
        "g * M where the output was inside its clamp range, else 0"),
  OpDef(17, "conv2d_bw_input_f32", ("g", "w", "w_sel?", "sel?"), ("gx", "scratch?"),
        _schema("strides:i32x2 padding:pad4 groups in_shape:i32x3 sel_axis?"),
        "input gradient of a conv; with scratch (one channel of g, f32): a depthwise "
        "conv whose gx, shaped like g, takes g's bytes, computed channel by channel"),
  OpDef(18, "dense_bw_input_f32", ("g", "w", "w_sel?", "sel?"), ("gx",), _schema("sel_axis?"),
        "input gradient of a dense layer"),
  OpDef(19, "add_bw_f32", ("g", "mask"), ("ga", "gb"), _schema("a_mult b_mult m:f32"),
        "gradients of a residual add's two inputs"),
  OpDef(20, "avgpool_bw_f32", ("g", "mask", "m"), ("gx",),
        _schema("window:i32x2 strides:i32x2 padding:pad4 in_shape:i32x3"),
        "average-pool gradient"),
  OpDef(21, "maxpool_bw_f32", ("g", "x", "y"), ("gx",),
        _schema("window:i32x2 strides:i32x2 padding:pad4"),
        "max-pool gradient to the first maximum of each window"),
  OpDef(22, "concat_bw_f32", ("g", "mask"), ("gxs*",),
        _schema("axis sizes:i32[] mults:f32[] identity:bool[]"),
        "split of a concat's gradient; a requantized input's part times its multiplier"),
  OpDef(23, "conv2d_update_s8", ("g", "x", "w", "inv", "state*", "step"), ("w", "state*"),
        _schema("strides:i32x2 padding:pad4 groups kernel:i32x2 x_zero pid kind:enum:kind "
                "channels:opt_i32[]"),
        "weight gradient fused with the update, one output channel at a time (in place)"),
  OpDef(24, "dense_update_s8", ("g", "x", "w", "inv", "state*", "step"), ("w", "state*"),
        _schema("x_zero pid kind:enum:kind channels:opt_i32[]"),
        "dense weight gradient fused with the update (in place)"),
  OpDef(25, "bias_update_i32", ("g", "b", "inv", "state*", "step"), ("b", "state*"),
        _schema("pid kind:enum:kind"),
        "bias gradient (sum over positions) fused with the update (in place)"),
  OpDef(41, "bottleneck_bw_f32",
        ("g", "w3", "mask_d", "m_d", "w2", "mask_e", "m_e", "w1", "w1_sel?", "sel?", "x?",
         "inv?", "state*", "step?"), ("scratch", "gb_d", "gb_e", "gx?", "w1?", "state*"),
        _schema("d_strides:i32x2 d_padding:pad4 gx:bool sel_axis? pid? x_zero?"),
        "backward of an inverted bottleneck (1x1 expand, depthwise, 1x1 project) one expanded "
        "channel at a time, from the project's accumulator gradient g: bias gradients gb_d, "
        "gb_e (C,); with gx, the block input's gradient summed channel by channel; with pid "
        "(then x, inv, state, step), the expand weight rows (w1_sel with sel_axis, else w1) "
        "updated in place; scratch: one depthwise-output and one expanded channel, f32, or two of "
        "each (channels then run in pairs)"),
  # --- small float32 / int32 ops of the loss ---------------------------------------------
  OpDef(32, "cast", ("x",), ("y",), (), "value conversion to the output dtype"),
  OpDef(33, "unary", ("x",), ("y",), _schema("fn:enum:unary"),
        "neg / exp / log / floor / not / sqrt / abs / sign / log1p / expm1 / logistic / "
        "is_finite / tanh / ceil, elementwise"),
  OpDef(34, "binary", ("a", "b"), ("y",), _schema("fn:enum:binary"),
        "add / sub / mul / div / max / min / lt / gt / le / ge / eq / ne / and / or / pow; "
        "a scalar operand broadcasts"),
  OpDef(35, "select", ("pred", "a", "b"), ("y",), (), "pred ? b : a (jax select_n)"),
  OpDef(36, "reduce", ("x",), ("y",), _schema("fn:enum:reduce axes:i32[]"),
        "sum / max / min over the listed axes"),
  OpDef(37, "broadcast", ("x",), ("y",), _schema("dims:i32[]"),
        "broadcast_in_dim: x's axis i maps to output axis dims[i]"),
  OpDef(38, "iota", (), ("y",), _schema("axis"), "index along an axis"),
  OpDef(39, "take_last", ("x", "idx"), ("y",), (),
        "y = x[..., idx], idx one index (take_along_axis at batch 1); NaN when out of range"),
  OpDef(40, "scatter_add_last", ("x", "idx", "v"), ("y",), (),
        "y = x; y[..., idx] += v, idx one index; dropped when out of range"),
)

BY_NAME = {op.name: op for op in OPS}
BY_ID = {op.id: op for op in OPS}
LAST_USED_ID = 41  # the next opcode takes 42; a retired id is never reused

# The small ops' functions: new ones are appended (the blob stores the index).
UNARY = ("neg", "exp", "log", "floor", "not", "sqrt", "abs", "sign", "log1p", "expm1",
         "logistic", "is_finite", "tanh", "ceil")
BINARY = ("add", "sub", "mul", "div", "max", "min", "lt", "gt", "le", "ge", "eq", "ne",
          "and", "or", "pow")
REDUCE = ("sum", "max", "min")
DTYPES = ("i8", "i32", "f32", "bit", "bool", "u32")  # bit: packed masks, 8 per byte
KINDS = ("weight", "bias")  # what an update op trains
ENUMS = {"unary": UNARY, "binary": BINARY, "reduce": REDUCE, "kind": KINDS}


def parse_encoding(enc: str) -> tuple[str, bool, bool]:
  """(scalar encoding, is an array, may be None) of an attribute encoding."""
  nullable = enc.startswith("opt_")
  body = enc.removeprefix("opt_")
  array = body.endswith("[]")
  scalar = body.removesuffix("[]")
  known = scalar in SCALARS or scalar.removeprefix("enum:") in ENUMS
  if not known or (nullable and not array):
    raise ValueError(f"unknown attribute encoding {enc!r}")
  return scalar, array, nullable


def scalar_slots(scalar: str) -> int:
  return 1 if scalar.startswith("enum:") else SCALARS[scalar][0]


def attr_layout(op: OpDef) -> str:
  """The schema as `key:encoding@slot` (the slot while entries have a fixed size)."""
  parts, at = [], 0
  for key, enc in op.attrs:
    scalar, array, _ = parse_encoding(enc)
    parts.append(f"{key}:{enc}" + ("" if at is None else f"@{at}"))
    if at is not None:
      at = None if array else at + key.endswith("?") + scalar_slots(scalar)
  return " ".join(parts) or "-"


assert len(BY_NAME) == len(OPS) and len(BY_ID) == len(OPS)
assert max(BY_ID) <= LAST_USED_ID


def _check_schemas() -> None:
  for op in OPS:
    for entry in op.attrs:
      if not (isinstance(entry, tuple) and len(entry) == 2):
        raise TypeError(f"{op.name}: attrs are (IR key, encoding) pairs, got {entry!r}")
      key, enc = entry
      # A presence slot keeps later entries at fixed slots only for a fixed-size value.
      if parse_encoding(enc)[1] and key.endswith("?"):
        raise TypeError(f"{op.name}: optional attribute {key} must have a fixed size")


_check_schemas()


def c_header() -> str:
  """The C enum of opcodes and of the small ops' functions, one aligned comment each; under
  each opcode its operands and its attribute layout."""
  scalars = [f" *   {enc:<7}{n} slot{'s' * (n > 1)}: {what}" for enc, (n, what) in SCALARS.items()]
  lines = ["/* Generated by `python -m lowering.opset` from lowering/opset.py: do not edit. */",
           "#ifndef JT_OPCODES_H", "#define JT_OPCODES_H", "",
           f"#define JT_LAST_OPCODE {LAST_USED_ID}", "",
           "/* Under each opcode: inputs -> outputs (\"?\" optional, \"*\" any number) | its",
           " * attributes, int32 slots in this order (docs/blob.md). key:enc@n starts at slot n;",
           " * key? may be absent: a presence slot (0/1), then the value (zeros when absent).",
           *scalars,
           " *   enum:T 1 slot: a jt_T_fn value",
           " *   E[]    a count slot, then count values of E; opt_E[]: count -1 for none",
           " */", "typedef enum {"]
  width = max(len(op.name) for op in OPS) + 10
  for op in OPS:
    lines.append(f"  {('JT_OP_' + op.name.upper() + ' = ' + str(op.id) + ','):<{width + 8}}"
                 f"/* {op.doc} */")
    operands = f"{' '.join(op.inputs) or '-'} -> {' '.join(op.outputs)}"
    lines.append(f"  {'':<{width + 8}}/*   {operands} | {attr_layout(op)} */")
  lines += ["} jt_opcode;", ""]
  for kind, names in (*((k.upper(), v) for k, v in ENUMS.items()), ("DTYPE", DTYPES)):
    lines.append("typedef enum {")
    lines += [f"  JT_{kind}_{n.upper()} = {i}," for i, n in enumerate(names)]
    lines += [f"}} jt_{kind.lower()}_fn;", ""]
  lines.append("#endif")
  return "\n".join(lines) + "\n"


# Attribute entry kinds of the C rule table (jt_rules.h), one per encoding shape.
ATTR_KINDS = ("scalar", "f32", "enum", "bool", "array", "f32_array", "opt_array", "bool_array")
ANY = 255  # "*": any number of operands


def arity(spec: tuple[str, ...]) -> tuple[int, int]:
  """(least, most) operands of an operand list: "?" optional, "*" any number (most ANY)."""
  least = sum(not s.endswith(("?", "*")) for s in spec)
  return least, ANY if any(s.endswith("*") for s in spec) else len(spec)


def attr_rule(key: str, enc: str) -> tuple[str, int, bool, int]:
  """(kind, slots per value, optional, enum size) of one attribute entry."""
  scalar, array, nullable = parse_encoding(enc)
  table = scalar.removeprefix("enum:")
  if scalar.startswith("enum:"):
    kind = "enum"
  elif scalar in ("f32", "bool"):
    kind = scalar
  else:
    kind = "scalar"
  if array:
    kind = "opt_array" if nullable else "array" if kind == "scalar" else f"{kind}_array"
  return kind, scalar_slots(scalar), key.endswith("?"), len(ENUMS[table]) if kind == "enum" else 0


def c_rules() -> str:
  """The verifier's rule table: per opcode its operand arity and attribute schema, and the
  X-macro of opcode names the dispatcher's tables follow."""
  width = max(len(op.attrs) for op in OPS)
  lines = ["/* Generated by `python -m lowering.opset` from lowering/opset.py: do not edit. */",
           "#ifndef JT_RULES_H", "#define JT_RULES_H", "", '#include "jt_opcodes.h"', "",
           f"#define JT_ANY {ANY}  /* \"*\": any number of operands */",
           f"#define JT_MAX_ATTR_ENTRIES {width}", "",
           "typedef enum {",
           *(f"  JT_ATTR_{k.upper()} = {i}," for i, k in enumerate(ATTR_KINDS)),
           "} jt_attr_kind;", "",
           "/* One attribute entry: its kind, int32 slots per value, whether a presence slot",
           " * comes first (\"key?\"), and the size of its enum table. */",
           "typedef struct { uint8_t kind, slots, optional, enum_size; } jt_attr_rule;", "",
           "typedef struct {",
           "  uint8_t known, in_min, in_max, out_min, out_max, n_attrs;",
           "  jt_attr_rule attrs[JT_MAX_ATTR_ENTRIES];", "} jt_op_rule;", "",
           "static const jt_op_rule jt_rules[JT_LAST_OPCODE + 1] = {"]
  for op in OPS:
    entries = ", ".join(
      f"{{JT_ATTR_{k.upper()}, {n}, {int(opt)}, {e}}}" for k, n, opt, e in
      (attr_rule(key, enc) for key, enc in op.attrs)) or "{0, 0, 0, 0}"  # C99: no empty {}
    (a, b), (c, d) = arity(op.inputs), arity(op.outputs)
    lines.append(f"  [JT_OP_{op.name.upper()}] = {{1, {a}, {b}, {c}, {d}, {len(op.attrs)}, "
                 f"{{{entries}}}}},")
  lines += ["};", "", "#define JT_FOR_EACH_OP(X) \\"]
  lines += [f"  X({op.name}, {op.name.upper()}) \\" for op in OPS]
  lines += ["", "#endif"]
  return "\n".join(lines) + "\n"


RUNTIME = Path(__file__).resolve().parent.parent / "runtime_c"
HEADER = RUNTIME / "include" / "jt_opcodes.h"
RULES = RUNTIME / "src" / "jt_rules.h"


def main() -> None:
  for path, text in ((HEADER, c_header()), (RULES, c_rules())):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
  main()
