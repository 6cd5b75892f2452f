"""What a user gets with the defaults: `jt.tiny_train(qm, update=scheme)(loss)`, nothing else.

For each task of `common.TASKS` (the same models, data, schemes and epochs as qas.py), the
held-out accuracy over 3 seeds of:
- the defaults (optimizer `jt.sgd(DEFAULT_LR)` constant, stochastic rounding), with the
  task's scheme and with the default scheme (the classifier alone);
- nearest rounding at the default rate (the earlier default);
- SGD with momentum 0.9 at the default rate and at a tenth of it (same effective step
  `lr / (1 - momentum)` as plain SGD at the default rate), in int8 and in fp32 (the
  dequantized network with float weights: the same rows without any int8 rounding);
- `--lrs`: plain SGD at other constant rates, to see how wide the good range is.
The tuned figure to compare with is qas.py's int8 SGD + QAS row (peak lr picked on
validation, cosine decay).

Run: python benchmarks/defaults.py [--tasks digits faces motions] [--seeds 3] [--lrs ...]
"""

from __future__ import annotations

import argparse
import json
import time

import jaxtiny as jt
from jaxtiny.train import DEFAULT_LR

from common import RESULTS, TASKS, fp32_accuracy, int8_accuracy, mean_std, save


def _variants(lrs: list[float]) -> dict:
  d = DEFAULT_LR
  out = {
    "defaults, task scheme": lambda t, s: int8_accuracy(t, optimizer=None, seed=s),
    "defaults, classifier only": lambda t, s: int8_accuracy(t, optimizer=None, seed=s,
                                                            update=jt.SparseUpdate()),
    f"nearest rounding, sgd({d:g})": lambda t, s: int8_accuracy(
      t, optimizer=None, rounding="nearest", seed=s),
    f"sgd({d:g}, momentum=0.9)": lambda t, s: int8_accuracy(
      t, optimizer=jt.sgd(d, momentum=0.9), seed=s),
    f"sgd({d / 10:g}, momentum=0.9)": lambda t, s: int8_accuracy(
      t, optimizer=jt.sgd(d / 10, momentum=0.9), seed=s),
    # The same in fp32: does momentum fail because of the int8 update, or at any precision
    # because the step is too large?
    f"fp32 SGD {d:g}": lambda t, s: fp32_accuracy(t, lr=d, seed=s),
    f"fp32 SGD {d:g}, momentum 0.9": lambda t, s: fp32_accuracy(t, lr=d, seed=s, momentum=0.9),
    f"fp32 SGD {d / 10:g}, momentum 0.9": lambda t, s: fp32_accuracy(t, lr=d / 10, seed=s,
                                                                     momentum=0.9),
  }
  for lr in lrs:
    out[f"sgd({lr:g})"] = lambda t, s, lr=lr: int8_accuracy(t, optimizer=jt.sgd(lr), seed=s)
  return out


def _tuned(task: str) -> str:
  """qas.py's int8 SGD + QAS cell for the task, if it has been run."""
  path = RESULTS / "qas.json"
  if not path.exists():
    return "-"
  rows = json.loads(path.read_text())["tasks"].get(task)
  return rows[0][4] if rows else "-"


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--tasks", nargs="+", default=["digits", "faces", "motions"],
                 choices=list(TASKS))
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--lrs", type=float, nargs="*", default=[],
                 help="also plain SGD at these constant learning rates")
  args = p.parse_args()
  variants = _variants(args.lrs)
  rows = {}
  for name in args.tasks:
    t0 = time.time()
    tasks = [TASKS[name](seed) for seed in range(args.seeds)]
    acc = {}
    for label, run in variants.items():
      acc[label] = [run(t, seed) for seed, t in enumerate(tasks)]
      print(f"  {name}: {label}: {mean_std(acc[label])}", flush=True)
    rows[name] = [[tasks[0].name, tasks[0].update.describe(), label, mean_std(a),
                   _tuned(name) if i == 0 else ""]
                  for i, (label, a) in enumerate(acc.items())]
    print(f"{name}: {time.time() - t0:.0f} s", flush=True)
    # Saved task by task (earlier tasks' rows are kept), so a later failure loses nothing.
    save("defaults", ["task", "task scheme", "training", "accuracy %", "tuned (qas.py)"],
         {name: rows[name]}, {"raw": {name: acc}, "seeds": args.seeds,
                              "default_lr": DEFAULT_LR})


if __name__ == "__main__":
  main()
