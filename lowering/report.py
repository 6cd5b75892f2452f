"""Memory report of a lowered Program: where the SRAM of a training step goes.

In the spirit of TFLite Micro's `print_plan()`: the arena peak, the persistent state by
group, flash, the caller's buffers, then a per-op timeline of the live arena bytes and the
biggest tensors at the peak. `check_budget` turns "does not fit" into an error that says
what to change. Sizes in KB are 1024 bytes, as in MCU datasheets.

CLI: python -m lowering.report model.jtb [--budget 256KB] [--plot mem.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxtiny.cli.common import UsageError, existing_file, output_file, size_arg
from jaxtiny.errors import JaxtinyError
from lowering.planner import Buffer
from lowering.program import Program

KB = 1024
BAR = 40  # characters of the timeline bar at the peak
TOP = 8  # live tensors listed at the peak
STATE_GROUPS = ("weights", "biases", "opt", "step")
BACKWARD = "backward + update"  # timeline phase name


class BudgetError(JaxtinyError, ValueError):
  """The program's SRAM (arena + persistent state) exceeds the budget."""


def _kb(n: int) -> str:
  return f"{n / KB:.1f} KB"


def _sram(program: Program) -> int:
  return program.arena_bytes + program.state_bytes


def _peak(program: Program) -> tuple[int, list[Buffer]]:
  """The first op with the most live arena bytes, and its live buffers, biggest first."""
  live = program.plan.live_bytes()
  i = max(range(len(live)), key=live.__getitem__)
  bufs = [b for b in program.plan.buffers.values() if b.first <= i <= b.last]
  return i, sorted(bufs, key=lambda b: (-b.size, b.tensor))


def _phases(program: Program) -> dict[int, str]:
  """Op index -> phase starting there: the loss starts at the dequantization of the int8
  logits (the one int8 cast, as `lower` finds it), the backward pass at the first float32
  gradient or update op."""
  g, ops = program.graph, program.train_ops
  marks = {0: "forward (int8)"}
  loss = next((i for i, op in enumerate(ops)
               if op.name == "cast" and g.tensors[op.inputs[0]].dtype == "i8"), None)
  if loss is not None:
    marks[loss] = "loss"
  bw = next((i for i, op in enumerate(ops)
             if op.name.endswith("_f32") or "update" in op.name), None)
  if bw is not None:
    marks[bw] = BACKWARD
  return marks


def _describe(program: Program, b: Buffer) -> str:
  t = program.graph.tensors[b.tensor]
  return f"{t.name} ({t.dtype} {t.shape}, {b.size} B)"


def check_budget(program: Program, budget: int) -> None:
  """Raise BudgetError when arena + persistent state exceeds `budget` bytes."""
  total = _sram(program)
  if total <= budget:
    return
  i, bufs = _peak(program)
  biggest = ", ".join(_describe(program, b) for b in bufs[:3])
  backward = {name: j for j, name in _phases(program).items()}.get(BACKWARD, i)
  hint = ("train fewer layers or channels (SparseUpdate) to shrink them" if i >= backward
          else "the arena peaks in the forward pass: a smaller update shrinks only the state")
  raise BudgetError(
    f"{program.name} needs {total} B ({_kb(total)}) of SRAM but the budget is {budget} B "
    f"({_kb(budget)}): {total - budget} B over. SRAM = arena {program.arena_bytes} B + "
    f"persistent state {program.state_bytes} B. The arena peaks at op {i} "
    f"({program.train_ops[i].name}), where the biggest live tensors are {biggest}; {hint}.")


def _row(label: str, n: int, extra: str = "") -> str:
  return f"  {label:<34} {n:>9} B  {_kb(n):>9}{extra}"


def _summary(program: Program, budget: int | None) -> list[str]:
  g = program.graph
  state = [t for t in g.tensors if t.storage == "state"]
  groups = [*STATE_GROUPS, *sorted({t.name.split("/")[0] for t in state} - set(STATE_GROUPS))]
  total = _sram(program)
  lines = [f"memory report: {program.name}  (KB = 1024 B)",
           _row("arena peak (scratch)", program.arena_bytes),
           _row("persistent state", program.state_bytes)]
  for grp in groups:
    members = [t for t in state if t.name.split("/")[0] == grp]
    if members:
      count = f"{len(members)} tensor" + ("s" if len(members) > 1 else "")
      lines.append(_row(f"  {grp:<9} {count:>11}", sum(t.nbytes for t in members)))
  lines.append(_row("total SRAM (arena + state)", total))
  if budget is not None:
    verdict = f"fits, {budget - total} B free" if total <= budget else f"OVER by {total - budget} B"
    lines.append(_row("budget", budget, f"  {verdict}"))
  lines += [_row("flash (constants + initial state)", program.flash_bytes),
            "  caller's io buffers (outside the arena and the budget):"]
  for role, tid in program.io.items():
    t = g.tensors[tid]
    lines.append(_row(f"  {role:<8} {t.dtype:<4} {t.shape!s}", t.nbytes))
  return lines


def _timeline(program: Program) -> list[str]:
  live = program.plan.live_bytes()
  top = max(live, default=0)
  peak, bufs = _peak(program)
  marks = _phases(program)
  g = program.graph
  gaps = program.arena_bytes - top
  lines = ["", f"timeline of the training step: {len(live)} ops, arena bytes live during "
           f"each op (bar: {BAR} = peak {top} B)"
           + (f"; the arena adds {gaps} B of placement gaps" if gaps else ""),
           f"  {'op':>4}  {'opcode':<20} {'live B':>8}  {'':<{BAR}}  writes"]
  for i, (op, n) in enumerate(zip(program.train_ops, live, strict=True)):
    if i in marks:
      lines.append(f"  ---- {marks[i]} ----")
    bar = "#" * round(BAR * n / top) if top else ""
    out = g.tensors[op.outputs[0]].name if op.outputs else ""
    flag = "  <- peak" if i == peak else ""
    lines.append(f"  {i:>4}  {op.name:<20} {n:>8}  {bar:<{BAR}}  {out}{flag}")
  lines += ["", f"largest live tensors at the peak (op {peak}, {program.train_ops[peak].name}, "
            f"{top} B in {len(bufs)} tensors):",
            f"  {'name':<24} {'dtype':<5} {'shape':<20} {'bytes':>8} {'offset':>8}  ops"]
  for b in bufs[:TOP]:
    t = g.tensors[b.tensor]
    lines.append(f"  {t.name:<24} {t.dtype:<5} {t.shape!s:<20} {b.size:>8} {b.offset:>8}  "
                 f"{b.first}..{b.last}")
  if len(bufs) > TOP:
    lines.append(f"  ... {len(bufs) - TOP} more, {sum(b.size for b in bufs[TOP:])} B")
  return lines


def summary(program: Program, budget: int | None = None) -> str:
  """The sizes part of the report: arena, state by group, total, budget, flash, io."""
  return "\n".join(_summary(program, budget))


def report(program: Program, budget: int | None = None) -> str:
  """The text report: sizes, the per-op timeline, the biggest tensors at the peak."""
  return "\n".join(_summary(program, budget) + _timeline(program)) + "\n"


def plot(program: Program, path: str | Path, budget: int | None = None) -> None:
  """Write a PNG of the timeline: persistent state at the bottom, live arena on top."""
  from matplotlib.figure import Figure  # no pyplot: no global backend, no display

  live = program.plan.live_bytes()
  ops = range(len(live))
  state = program.state_bytes / KB
  fig = Figure(figsize=(10, 4.5), layout="constrained")
  ax = fig.add_subplot()
  ax.fill_between(ops, 0, state, step="mid", color="tab:orange", alpha=0.6,
                  label=f"persistent state ({_kb(program.state_bytes)})")
  ax.fill_between(ops, state, [state + n / KB for n in live], step="mid", color="tab:blue",
                  alpha=0.6, label="live arena")
  total = _sram(program)
  ax.axhline(total / KB, color="black", lw=1,
             label=f"arena + state = {_kb(total)} (arena {_kb(program.arena_bytes)})")
  if budget is not None:
    ax.axhline(budget / KB, color="tab:red", ls="--", lw=1.2, label=f"budget {_kb(budget)}")
  for i, name in _phases(program).items():
    if i:
      ax.axvline(i - 0.5, color="gray", ls=":", lw=1)
      ax.text(i, 0.98, f" {name}", transform=ax.get_xaxis_transform(), va="top",
              fontsize=8, color="dimgray")
  peak, _ = _peak(program)
  right = peak > len(live) / 2  # the label goes toward the middle of the plot
  ax.annotate(f"peak: op {peak} {program.train_ops[peak].name}\n{_kb(live[peak])} live arena",
              (peak, state + live[peak] / KB), xytext=(-14 if right else 14, -30),
              textcoords="offset points", ha="right" if right else "left", fontsize=8,
              arrowprops={"arrowstyle": "->", "lw": 0.8})
  ax.set_xlim(-0.5, len(live) - 0.5)
  ax.set_ylim(0, max(total, budget or 0) / KB * 1.12)
  ax.set_xlabel("op index (training step)")
  ax.set_ylabel("SRAM (KB = 1024 B)")
  ax.set_title(f"{program.name}: SRAM per op")
  fig.legend(loc="outside lower center", ncol=2, fontsize=8)
  fig.savefig(path, dpi=120)


HELP = "the memory report of a blob: where the SRAM of a step goes"


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("blob", type=Path, help="a lowered program, as written by Program.save")
  p.add_argument("--budget", type=size_arg,
                 help="SRAM budget for arena + state: bytes, or with a unit B, KB, KiB, MB "
                      "(KB = KiB = 1024 bytes, as for MCUs); exit status 2 when over")
  p.add_argument("--plot", type=Path, help="write the timeline as a PNG here")


def command(args: argparse.Namespace) -> int:
  from lowering import load  # the blob reader lives in lowering/blob.py

  existing_file(args.blob, "the blob")
  if args.plot:
    output_file(args.plot, "--plot")
  try:
    program = load(args.blob)
  except OSError as e:
    raise UsageError(f"cannot load {args.blob}: {e}") from None
  print(report(program, args.budget), end="")
  if args.plot:
    plot(program, args.plot, args.budget)
  if args.budget is not None:
    check_budget(program, args.budget)
  return 0


def main(argv: list[str] | None = None) -> int:
  from jaxtiny.cli import run_command

  return run_command("python -m lowering.report", "Memory report of a lowered training step "
                     "(.jtb).", add_arguments, command, argv)


if __name__ == "__main__":
  sys.exit(main())
