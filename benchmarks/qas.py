"""The paper's Table 1 on our data: fp32 SGD vs int8 SGD without / with QAS vs int8 Adam.

Every task is transfer learning with a new head and a fixed sparse scheme (the same for
all four rows); int8 rows train in the device-faithful simulation (int8 weights, int32
biases, stochastic rounding), fp32 trains the dequantized network on the same channels.
Every method decays its learning rate to 0 with a cosine over the run, from a peak picked
from a grid on a validation split of the seed-0 training data (70 % train / 30 %
validation); then every seed trains on the whole training split and is scored on the
held-out split: accuracy mean ± std over 3 seeds.

Run: python benchmarks/qas.py [--tasks digits faces motions] [--seeds 3] [--fixed-lr]
"""

from __future__ import annotations

import argparse
import time

import jaxtiny as jt

from common import TASKS, Task, fp32_accuracy, int8_accuracy, mean_std, pick_lr, save

SGD_GRID = (0.25, 0.5, 1.0, 2.0)  # multiples of the task's default learning rate
ADAM_GRID = (3e-4, 1e-3, 3e-3)
ADAM_DEFAULT = 1e-3



def _cosine(task: Task, lr: float) -> jt.optim.Schedule:
  return jt.cosine(lr, task.epochs * len(task.train[0]))


METHODS = {
  "fp32 SGD": lambda t, lr, seed: fp32_accuracy(t, lr=_cosine(t, lr), seed=seed),
  "int8 SGD, no QAS": lambda t, lr, seed: int8_accuracy(
    t, optimizer=jt.sgd(_cosine(t, lr)), qas=False, seed=seed),
  "int8 SGD + QAS": lambda t, lr, seed: int8_accuracy(
    t, optimizer=jt.sgd(_cosine(t, lr)), seed=seed),
  "int8 Adam + QAS": lambda t, lr, seed: int8_accuracy(
    t, optimizer=jt.adam(_cosine(t, lr)), seed=seed),
}


def learning_rates(task: Task, fixed: bool) -> dict[str, float]:
  """Per method: the task's default, or the best of the grid on validation."""
  chosen = {}
  for m, run in METHODS.items():
    adam = "Adam" in m
    default = ADAM_DEFAULT if adam else task.lr
    if fixed:
      chosen[m] = default
      continue
    grid = ADAM_GRID if adam else [task.lr * f for f in SGD_GRID]
    chosen[m], scores = pick_lr(task, grid, lambda t, lr, run=run: run(t, lr, 0), default)
    print(f"  {m}: validation " + ", ".join(f"lr {lr:g} {a:.3f}" for lr, a in scores.items())
          + f" -> {chosen[m]:g}", flush=True)
  return chosen


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--fixed-lr", action="store_true",
                 help="skip the validation choice: peak lr = the task's SGD lr, Adam 1e-3")
  args = p.parse_args()
  rows, raw = {}, {}
  for name in args.tasks:
    t0 = time.time()
    tasks = [TASKS[name](seed) for seed in range(args.seeds)]
    lrs = learning_rates(tasks[0], args.fixed_lr)
    acc = {m: [run(t, lrs[m], seed) for seed, t in enumerate(tasks)]
           for m, run in METHODS.items()}
    key = f"{name}@fixed-lr" if args.fixed_lr else name
    rows[key] = [[tasks[0].name, tasks[0].update.describe()]
                 + [f"{mean_std(acc[m])} (lr {lrs[m]:g})" for m in METHODS]]
    raw[key] = {"accuracy": acc, "lr": lrs}
    print(" | ".join(rows[key][0]), flush=True)
    print(f"{name}: {time.time() - t0:.0f} s", flush=True)
  save("qas", ["task", "scheme", *METHODS], rows, {"raw": raw, "seeds": args.seeds})


if __name__ == "__main__":
  main()
