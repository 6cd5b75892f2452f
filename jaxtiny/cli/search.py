"""`jaxtiny search`: the sparse-update scheme that gains the most accuracy under a memory
budget (jt.search_scheme), for a saved QModel or a script's model; optionally lowered."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from jaxtiny.cli.common import UsageError, output_file, positive_int, size_arg

HELP = "search a sparse-update scheme for a memory budget"


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("model", metavar="MODEL",
                 help="a saved QModel (qm.save) or SCRIPT.py[:FUNCTION] (see jaxtiny lower)")
  p.add_argument("--data", type=Path, required=True, metavar="TRAIN.npz",
                 help="samples to measure each option's gain on: arrays x (float or int8), y")
  p.add_argument("--val", type=Path, metavar="VAL.npz",
                 help="held-out samples to score on (default: the last --val-split of --data)")
  p.add_argument("--val-split", type=float, default=0.25, metavar="FRACTION",
                 help="share of --data held out when there is no --val (default 0.25)")
  p.add_argument("--budget", type=size_arg, required=True,
                 help="memory the training step may add to inference (jt.update_cost total), "
                      "e.g. 64KB (KB = 1024 B)")
  p.add_argument("--epochs", type=positive_int, default=3,
                 help="epochs of each contribution measurement (default 3)")
  p.add_argument("--layers", metavar="I,J,..",
                 help="candidate layers for weight updates (default: the last 12)")
  p.add_argument("--generations", type=positive_int, default=40)
  p.add_argument("--population", type=positive_int, default=64)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--cache", type=Path, metavar="FILE",
                 help="keep the measured contributions here; a rerun reuses them")
  p.add_argument("-o", "--out", type=Path, metavar="STEP.jtb",
                 help="also lower the found scheme to this blob (the script's loss and "
                      "optimizer when it gave a Trainer, else the defaults)")
  p.add_argument("--json", type=Path, metavar="SCHEME.json", help="write the scheme as JSON")
  p.add_argument("--quiet", action="store_true", help="no progress bars")


def _layers(text: str | None, n: int) -> list[int] | None:
  if text is None:
    return None
  try:
    layers = [int(t) for t in text.split(",") if t.strip()]
  except ValueError:
    raise UsageError(f"--layers {text!r}: give layer indices separated by commas, e.g. "
                     "20,24,27") from None
  bad = [i for i in layers if not 0 <= i < n]
  if bad or not layers:
    raise UsageError(f"--layers {text!r}: the model's layers are 0..{n - 1} (the classifier "
                     "always trains and has no index)")
  return layers


def command(args: argparse.Namespace) -> int:
  import jaxtiny as jt
  from jaxtiny.cli.script import load_model
  from lowering.datafile import load_samples

  for opt, path in (("-o", args.out), ("--json", args.json), ("--cache", args.cache)):
    if path is not None:
      output_file(path, opt)
  if not 0 < args.val_split < 1:
    raise UsageError(f"--val-split must lie in (0, 1), got {args.val_split}")
  qm, trainer = load_model(args.model)
  layers = _layers(args.layers, qm.num_layers)

  def samples(path: Path) -> tuple[np.ndarray, np.ndarray]:
    return load_samples(path, qm.input_shape, qm.output_shape[0], qm.quantize_input)

  x8, y = samples(args.data)
  if args.val is not None:
    val = samples(args.val)
  else:
    cut = len(x8) - max(1, round(len(x8) * args.val_split))
    if cut < 1:
      raise UsageError(f"{args.data} holds {len(x8)} samples: too few to hold some out; "
                       "give --val")
    (x8, y), val = (x8[:cut], y[:cut]), (x8[cut:], y[cut:])
  optimizer = trainer.optimizer if trainer is not None else None
  print(f"searching a scheme for {qm.name} under {args.budget:,} B on {len(x8)} samples "
        f"({len(val[0])} held out)")
  found = jt.search_scheme(qm, (x8, y), val, args.budget, optimizer=optimizer, layers=layers,
                           epochs=args.epochs, seed=args.seed, cache=args.cache,
                           population=args.population, generations=args.generations,
                           progress=not args.quiet)
  cost = jt.update_cost(qm, found.update, optimizer)
  print(f"scheme: jt.SparseUpdate({found.update.describe()})")
  print(f"estimated accuracy gain {found.estimated_gain:+.2%}; memory it adds "
        f"{cost.total:,} B of {args.budget:,} B\n{cost.table()}")
  if args.json:
    args.json.write_text(json.dumps({
      "bias_last": found.update.bias_last,
      "weights": {str(k): v for k, v in found.update.weights.items()},
      "estimated_gain": found.estimated_gain, "cost_bytes": cost.total}, indent=1))
  if args.out:
    loss = trainer.loss_fn if trainer is not None else jt.softmax_cross_entropy
    lowered = jt.tiny_train(qm, optimizer=optimizer, update=found.update,
                            **({"qas": trainer.qas, "rounding": trainer.rounding,
                                "seed": trainer.seed} if trainer is not None else {}))(loss)
    program = lowered.lower()
    program.save(args.out)
    print(f"wrote {args.out}: SRAM {program.arena_bytes + program.state_bytes:,} B (arena "
          f"{program.arena_bytes:,} + state {program.state_bytes:,})")
  return 0
