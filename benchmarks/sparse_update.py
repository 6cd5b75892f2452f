"""Accuracy against training memory: last layer only, bias-only last k, full update of the
last k layers, and schemes found by `search_scheme` under several budgets.

Memory is `update_cost(...).total`: the bytes a training step adds to inference (trained
parameters, saved activations, clamp masks, fp32 gradient buffers; batch 1, SGD). The
search runs once per task on a train/validation split of the training data (seed 0); every
scheme is then trained on the whole training split and tested on the test split with 3
seeds (accuracy mean ± std).

Run: python benchmarks/sparse_update.py [--tasks digits faces] [--seeds 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import jaxtiny as jt

from common import RESULTS, TASKS, int8_accuracy, mean_std, save

# Per task: bias-only k, full last-k, the full update the search is held against, and the
# search's candidate layers / bias grid (offsets from the end of the network).
SETTINGS = {
  "digits": dict(bias=[2, 4, 9], full=[1, 2, 4], reference=4, layers=6,
                 bias_grid=[1, 2, 4, 6, 9]),
  "motions": dict(bias=[1, 2, 3], full=[1, 2, 3], reference=3, layers=3, bias_grid=[1, 2, 3]),
  "faces": dict(bias=[4, 8, 12, 20], full=[1, 2, 4, 6], reference=6, layers=12,
                bias_grid=[2, 4, 8, 12, 20]),
}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--tasks", nargs="+", default=["digits", "faces"], choices=list(TASKS))
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--fractions", nargs="+", type=float, default=[0.125, 0.25, 0.5])
  args = p.parse_args()
  rows, raw = {}, {}
  for name in args.tasks:
    t0 = time.time()
    s = SETTINGS[name]
    tasks = [TASKS[name](seed) for seed in range(args.seeds)]
    qm = tasks[0].qm
    n = qm.num_layers
    opt = jt.sgd(tasks[0].lr)
    schemes: dict[str, jt.SparseUpdate] = {"last layer only": jt.SparseUpdate()}
    schemes.update({f"bias-only last {k}": jt.SparseUpdate(bias_last=k) for k in s["bias"]})
    schemes.update({f"full last {k}": jt.SparseUpdate.last_layers(k) for k in s["full"]})
    reference = jt.update_cost(qm, jt.SparseUpdate.last_layers(s["reference"])).total
    # Search once, on a split of the training data.
    x, y = tasks[0].train
    order = np.random.default_rng(0).permutation(len(x))
    cut = int(0.7 * len(x))
    fit, val = order[:cut], order[cut:]
    layers = list(range(max(0, n - s["layers"]), n))
    bias_grid = [k for k in s["bias_grid"] if k <= n]
    for frac in args.fractions:
      budget = int(frac * reference)
      try:
        found = jt.search_scheme(qm, (x[fit], y[fit]), (x[val], y[val]), budget,
                                 optimizer=opt, layers=layers, bias_grid=bias_grid,
                                 epochs=tasks[0].epochs, cache=RESULTS / f"analysis_{name}.json")
        schemes[f"searched, budget {frac:g} x full last {s['reference']}"] = found.update
      except ValueError as e:
        print(f"{name}: no scheme at {frac:g}: {e}")
    acc = {}
    for label, update in schemes.items():
      acc[label] = [int8_accuracy(t, optimizer=opt, seed=i, update=update)
                    for i, t in enumerate(tasks)]
      cost = jt.update_cost(qm, update).total
      rows.setdefault(name, []).append([tasks[0].name, label, update.describe(),
                                        f"{cost:,}", f"{cost / reference:.3f}",
                                        mean_std(acc[label])])
      print(" | ".join(rows[name][-1]), flush=True)
    raw[name] = {k: {"accuracy": v, "scheme": schemes[k].describe(),
                     "bytes": jt.update_cost(qm, schemes[k]).total} for k, v in acc.items()}
    print(f"{name}: {time.time() - t0:.0f} s", flush=True)
  save("sparse_update", ["task", "scheme", "definition", "bytes", "x full ref", "accuracy %"],
       rows, {"raw": raw, "seeds": args.seeds})


if __name__ == "__main__":
  main()
