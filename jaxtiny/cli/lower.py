"""`jaxtiny lower`: a user's training script to a blob, with its memory summary; a program
over the SRAM budget is refused and nothing is written."""

from __future__ import annotations

import argparse
from pathlib import Path

from jaxtiny.cli.common import output_file, size_arg
from jaxtiny.cli.script import RETURNS, as_trainer, run_script

HELP = "lower a training script's step to a blob (.jtb)"


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("script", metavar="SCRIPT.py[:FUNCTION]",
                 help=f"a Python file whose FUNCTION (default: trainer) returns {RETURNS}")
  p.add_argument("-o", "--out", type=Path, required=True, metavar="STEP.jtb",
                 help="where to write the blob")
  p.add_argument("--budget", type=size_arg,
                 help="SRAM budget for arena + persistent state, e.g. 256KB (KB = 1024 B): "
                      "over it, the blob is not written and the exit status is 2")
  p.add_argument("--plot", type=Path, metavar="MEM.png", help="draw the memory timeline")
  p.add_argument("--name", help="the program's name in the blob (default: the model's)")


def command(args: argparse.Namespace) -> int:
  from lowering.report import check_budget, plot, summary

  output_file(args.out, "-o")
  if args.plot:
    output_file(args.plot, "--plot")
  trainer = as_trainer(run_script(args.script), args.script)
  print(f"lowering {trainer.qm.name}: update {trainer.update.describe()}, "
        f"{trainer.optimizer.kind}, rounding {trainer.rounding}")
  program = trainer.lower(args.name)
  print(summary(program, args.budget))
  if args.plot:
    plot(program, args.plot, args.budget)
    print(f"wrote {args.plot}")
  if args.budget is not None:
    check_budget(program, args.budget)  # BudgetError: a user error, nothing written
  program.save(args.out)
  print(f"wrote {args.out} ({args.out.stat().st_size:,} B). Next: jaxtiny run {args.out} "
        "--data train.npz, or jaxtiny export / firmware")
  return 0
