"""The disassembler: `python -m lowering.dump model.jtb` prints a blob as text.

The text is deterministic (no addresses, paths or constant values; floats to 6 significant
digits), so the tests keep a small model's disassembly as a golden snapshot.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lowering import opset
from lowering.blob import OPT_FLOATS, Blob, encode, read
from lowering.ir import Op
from lowering.program import Program


def _value(v: Any) -> str:
  if isinstance(v, float):
    return f"{v:.6g}"
  if isinstance(v, tuple):
    return "(" + ",".join(map(_value, v)) + ")"
  return str(v)


def _op_line(i: int, op: Op) -> str:
  attrs = " ".join(f"{name}={_value(op.attrs[name])}"
                   for name in (key.removesuffix("?") for key, _ in opset.BY_NAME[op.name].attrs)
                   if name in op.attrs)
  outs, ins = (", ".join(f"%{t}" for t in ts) for ts in (op.outputs, op.inputs))
  return f"  {i:>4}  {op.name:<20} {outs} = {ins or '-'}  {attrs}".rstrip()


def _location(b: Blob, tid: int) -> str:
  t = b.graph.tensors[tid]
  if t.alias is not None:
    return f"=%{t.alias}"
  return "-" if b.locations[tid] < 0 else f"@{b.locations[tid]}"


def _text(b: Blob) -> str:
  h, opt = b.header, b.optimizer
  floats = " ".join(f"{k}={_value(opt[k])}" for k in OPT_FLOATS)
  lines = [
    f"blob {b.name!r} version {h['version']}: {h['blob_size']} bytes",
    f"arena {h['arena_bytes']} B, state image {h['state_bytes']} B, flash {h['consts_size']} B",
    f"tensors {h['n_tensors']}, train ops {h['n_train_ops']}, infer ops {h['n_infer_ops']}, "
    f"operands {h['n_operands']}, attr slots {h['n_attrs']}",
    f"optimizer {opt['kind']} schedule={opt['schedule']} steps={opt['steps']} {floats}",
    f"rounding {b.rounding}, seed {b.seed}",
    "io " + " ".join(f"{k}=%{t}" for k, t in b.io.items()),
    "io quantization " + " ".join(f"{k}={_value(v)}" for k, v in asdict(b.quant).items()),
    "",
    "tensors (id, dtype, shape, storage, location, bytes, name)",
  ]
  for t in b.graph.tensors:
    shape = "[" + ",".join(map(str, t.shape)) + "]"
    lines.append(f"  %{t.id:<4} {t.dtype:<4} {shape:<16} {t.storage:<5} "
                 f"{_location(b, t.id):>8} {t.nbytes:>7}  {t.name}")
  for which, ops in (("train", b.train_ops), ("infer", b.infer_ops)):
    lines += ["", f"{which} ops (index, opcode, outputs = inputs, attributes)"]
    lines += [_op_line(i, op) for i, op in enumerate(ops)]
  return "\n".join(lines) + "\n"


def disassemble(src: Program | bytes | bytearray) -> str:
  """The text of a blob, or of the blob a Program saves as."""
  return _text(read(encode(src) if isinstance(src, Program) else src))


HELP = "print a blob as text (the disassembler)"


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("blob", type=Path, help="a blob (.jtb)")


def command(args: argparse.Namespace) -> int:
  from jaxtiny.cli.common import existing_file

  existing_file(args.blob, "the blob")
  sys.stdout.write(disassemble(args.blob.read_bytes()))  # BlobError: a user error
  return 0


def main(argv: list[str] | None = None) -> int:
  from jaxtiny.cli import run_command

  return run_command("python -m lowering.dump", "Print a jaxtiny blob (.jtb) as text.",
                     add_arguments, command, argv)


if __name__ == "__main__":
  sys.exit(main())
