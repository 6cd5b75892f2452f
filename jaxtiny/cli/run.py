"""`jaxtiny run`: train a blob on the host build of the C runtime (what a board computes,
bit for bit), one sample a step, with a progress bar, test accuracy, a loss plot, and the
learned state saved and resumed as a board keeps it."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxtiny.cli.common import UsageError, existing_file, output_file, positive_int
from jaxtiny.errors import NonFiniteLossError

HELP = "train a blob on the host C runtime, batch 1, on your own samples"


def add_arguments(p: argparse.ArgumentParser) -> None:
  p.add_argument("blob", type=Path, help="a lowered training step (.jtb, from jaxtiny lower)")
  p.add_argument("--data", type=Path, required=True, metavar="TRAIN.npz",
                 help="training samples: arrays x (float, quantized with the model's input "
                      "parameters stored in the blob, or int8) and y (integer labels)")
  p.add_argument("--test", type=Path, metavar="TEST.npz",
                 help="held-out samples (same layout): accuracy before training and after "
                      "each epoch")
  p.add_argument("--epochs", type=positive_int, default=1, help="passes over the data "
                 "(default 1)")
  p.add_argument("--shuffle", action="store_true",
                 help="visit the samples in a new random order each epoch (default: in "
                      "file order, as a sensor delivers them)")
  p.add_argument("--seed", type=int, default=0, help="seed of --shuffle (default 0)")
  p.add_argument("--state", type=Path, metavar="STATE.bin",
                 help="the learned state: resumed from this file when it exists, written "
                      "back after every epoch (a CRC-protected image, as jt_state_save)")
  p.add_argument("--plot", type=Path, metavar="LOSS.png",
                 help="draw the loss of each step (and the test accuracy) into a PNG")
  p.add_argument("--json", type=Path, metavar="OUT.json",
                 help="write every step's loss and the accuracies as JSON")
  p.add_argument("--quiet", action="store_true", help="no progress bar")


def _accuracy(rt: Any, data: tuple[np.ndarray, np.ndarray] | None) -> float | None:
  if data is None:
    return None
  x8, y = data
  return float(np.mean([int(np.argmax(rt.infer(x))) == int(t) for x, t in zip(x8, y)]))


def _write_state(path: Path, image: bytes) -> None:
  """Write the image next to the old one, then swap: an interrupted write loses nothing."""
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_bytes(image)
  os.replace(tmp, path)


def _plot(path: Path, losses: list[float], epoch_ends: list[int], accs: list[float | None],
          start: int, title: str) -> None:
  try:
    from matplotlib.figure import Figure  # no pyplot: no global backend, no display
  except ImportError:
    raise UsageError("--plot needs matplotlib (pip install matplotlib)") from None
  fig = Figure(figsize=(9, 4), layout="constrained")
  ax = fig.add_subplot()
  steps = np.arange(start + 1, start + len(losses) + 1)
  ax.plot(steps, losses, lw=0.6, color="tab:blue", alpha=0.45, label="loss of each step")
  window = max(1, len(losses) // 50)
  if window > 1:
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(steps[window - 1:], smooth, color="tab:blue", label=f"mean of {window} steps")
  ax.set_xlabel("training step (batch 1)")
  ax.set_ylabel("loss")
  ax.set_title(title)
  handles, labels = ax.get_legend_handles_labels()
  if any(a is not None for a in accs):
    ax2 = ax.twinx()
    ends = [start, *epoch_ends]
    ax2.plot(ends, [a * 100 for a in accs], "o-", color="tab:orange", label="test accuracy")
    ax2.set_ylabel("test accuracy (%)")
    ax2.set_ylim(0, 100)
    h2, l2 = ax2.get_legend_handles_labels()
    handles, labels = handles + h2, labels + l2
  ax.legend(handles, labels, loc="upper right", fontsize=8)
  fig.savefig(path, dpi=120)


def command(args: argparse.Namespace) -> int:
  from lowering.blob import read
  from lowering.cruntime import CRuntime, StateImageError
  from lowering.datafile import load_samples

  existing_file(args.blob, "the blob")
  for opt, path in (("--plot", args.plot), ("--json", args.json), ("--state", args.state)):
    if path is not None:
      output_file(path, opt)
  data = args.blob.read_bytes()
  quant = read(data).quant  # the Python verifier, then the C one: a blob both accept
  rt = CRuntime(data)

  def samples(path: Path) -> tuple[np.ndarray, np.ndarray]:
    return load_samples(path, rt.input_shape, rt.classes, quant.quantize_input)

  x8, y = samples(args.data)
  test = samples(args.test) if args.test else None
  start = 0
  if args.state is not None and args.state.exists():
    try:
      rt.load_state(args.state.read_bytes())
    except StateImageError as e:
      raise UsageError(f"--state {args.state}: {e}; it was saved by another blob or is "
                       "corrupt: delete it (or pick another file) to start from the blob's "
                       "state") from None
    start = rt.steps
    print(f"resumed from {args.state} at step {start}")
  before = _accuracy(rt, test)
  if before is not None:
    print(f"test accuracy before: {before:.1%} ({len(test[0])} samples)")
  from tqdm import tqdm

  rng = np.random.default_rng(args.seed)
  losses: list[float] = []
  skipped: list[int] = []
  epochs: list[dict[str, Any]] = []
  ends: list[int] = []
  accs = [before]
  try:
    for epoch in range(args.epochs):
      order = rng.permutation(len(x8)) if args.shuffle else range(len(x8))
      bar = tqdm(order, desc=f"epoch {epoch + 1}/{args.epochs}", unit="step",
                 disable=args.quiet, leave=False)
      first = len(losses)
      for i in bar:
        try:
          losses.append(rt.train_step(x8[i], int(y[i])))
        except NonFiniteLossError:
          skipped.append(rt.steps)  # the step changed nothing: go on with the next sample
          continue
        if len(losses) % 16 == 0:
          bar.set_postfix(loss=f"{np.mean(losses[-64:]):.4f}", refresh=False)
      mean = float(np.mean(losses[first:])) if len(losses) > first else float("nan")
      acc = _accuracy(rt, test)
      accs.append(acc)
      ends.append(rt.steps)
      epochs.append({"epoch": epoch + 1, "mean_loss": mean, "test_accuracy": acc,
                     "steps": rt.steps})
      tail = f", test accuracy {acc:.1%}" if acc is not None else ""
      print(f"epoch {epoch + 1}/{args.epochs}: mean loss {mean:.4f} over {len(losses) - first}"
            f" steps{tail}")
      if args.state is not None:
        _write_state(args.state, rt.save_state())
  except KeyboardInterrupt:
    if args.state is not None:
      _write_state(args.state, rt.save_state())
      print(f"\ninterrupted at step {rt.steps}: the state is saved in {args.state}")
    raise
  if skipped:
    print(f"{len(skipped)} steps had a loss that is not finite and changed nothing "
          f"(at steps {skipped[:5]}{' ...' if len(skipped) > 5 else ''})")
  if args.state is not None:
    print(f"learned state: {args.state} ({args.state.stat().st_size:,} B, step {rt.steps}); "
          "the next run with --state resumes from it")
  if args.plot:
    _plot(args.plot, losses, ends, accs, start, f"{args.blob.name} on the host C runtime")
    print(f"wrote {args.plot}")
  if args.json:
    args.json.write_text(json.dumps({
      "blob": str(args.blob), "start_step": start, "steps": rt.steps, "losses": losses,
      "skipped_steps": skipped, "epochs": epochs, "test_accuracy_before": before}, indent=1))
  return 0
