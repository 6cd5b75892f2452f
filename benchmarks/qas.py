"""The paper's Table 1 on our data: fp32 SGD vs int8 SGD without / with QAS vs int8 Adam.

Every task is transfer learning with a new head and a fixed sparse scheme (the same for
all four rows); int8 rows train in the device-faithful simulation (int8 weights, int32
biases, stochastic rounding), fp32 trains the dequantized network on the same channels.
Accuracy on the held-out split, mean ± std over 3 seeds.

Run: python benchmarks/qas.py [--tasks digits faces motions] [--seeds 3]
"""

from __future__ import annotations

import argparse
import time

import jaxtiny as jt

from common import TASKS, fp32_accuracy, int8_accuracy, mean_std, save


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--lr-scale", type=float, default=1.0,
                 help="multiply each task's SGD learning rate (fp32 and int8 alike)")
  args = p.parse_args()
  methods = ["fp32 SGD", "int8 SGD, no QAS", "int8 SGD + QAS", "int8 Adam + QAS"]
  rows, raw = {}, {}
  for name in args.tasks:
    acc = {m: [] for m in methods}
    t0 = time.time()
    for seed in range(args.seeds):
      task = TASKS[name](seed)
      task.lr *= args.lr_scale
      acc["fp32 SGD"].append(fp32_accuracy(task, lr=task.lr, seed=seed))
      acc["int8 SGD, no QAS"].append(
        int8_accuracy(task, optimizer=jt.sgd(task.lr), qas=False, seed=seed))
      acc["int8 SGD + QAS"].append(int8_accuracy(task, optimizer=jt.sgd(task.lr), seed=seed))
      acc["int8 Adam + QAS"].append(int8_accuracy(task, optimizer=jt.adam(1e-3), seed=seed))
      print(f"{name} seed {seed}: " + ", ".join(f"{m} {acc[m][-1]:.3f}" for m in methods),
            flush=True)
    key = name if args.lr_scale == 1.0 else f"{name}@lr*{args.lr_scale:g}"
    rows[key] = [[task.name, f"{task.update.describe()}, SGD lr {task.lr:g}"]
                 + [mean_std(acc[m]) for m in methods]]
    raw[key] = acc
    print(f"{name}: {time.time() - t0:.0f} s", flush=True)
  save("qas", ["task", "scheme"] + methods, rows, {"raw": raw, "seeds": args.seeds})


if __name__ == "__main__":
  main()
