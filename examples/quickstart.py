"""jaxtiny quickstart: a Flax CNN and an ImageNet model, both as exact int8 graphs.

1. Train a small CNN in fp32 on scikit-learn digits, quantize it with `jaxtiny.quantize`
   and compare fp32 with int8 accuracy (the int8 numbers are what a microcontroller
   computes, bit for bit).
2. Load the ImageNet-pretrained int8 MCUNet-5FPS of tiny-training and classify the cat
   photo bundled with scikit-image.
3. Teach it a new task the way the device would: a new 2-class head, the published
   engine's sparse scheme, QAS and int8 updates at batch 1 (faces vs background).
4. Lower that training step to a blob (op list + static memory plan), print where the
   SRAM goes, reload the blob, run its first steps on the C runtime (the host build of
   what the board runs) beside the reference executor, then train it on the C runtime.

Run: python examples/quickstart.py [--models DIR] [--epochs N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import jaxtiny as jt
from jaxtiny import datasets, models, pretrain


def digits_demo(epochs: int) -> None:
  x_train, y_train, x_test, y_test = datasets.digits()
  model = models.DigitsCNN()
  variables = pretrain.fit_fp32(model, x_train, y_train, epochs=epochs, progress=True)
  fp32 = pretrain.accuracy(model.apply(variables, x_test), y_test)
  qm = jt.quantize(model, variables, x_train)
  print(qm.summary())
  int8 = pretrain.accuracy(qm.apply(qm.quantize_input(x_test)), y_test)
  print(f"\ndigits test accuracy ({len(x_test)} images): fp32 {fp32:.2%}, int8 {int8:.2%}\n")


def imagenet_demo(models_dir: Path | None) -> None:
  if models_dir is None:
    print("shared models not found (set JAXTINY_MODELS or pass --models): skipping ImageNet")
    return
  from skimage import data

  qm = jt.load_tinytraining(models_dir / "mcunet-5fps.pkl")
  print(qm.summary().split("\n\n")[-1])
  x8 = qm.quantize_input(datasets.imagenet_preprocess(data.chelsea())[None])
  t = time.perf_counter()
  y8 = np.asarray(qm.apply(x8))[0].astype(np.int32)
  top5 = np.argsort(-y8, kind="stable")[:5]
  print(f"chelsea.png top-5 ImageNet classes: {top5.tolist()} (285 Egyptian cat, 281 tabby, "
        f"282 tiger cat); int8 logits {y8[top5].tolist()}; "
        f"simulation {time.perf_counter() - t:.2f} s (first call compiles)")


def on_device_demo(models_dir: Path | None, epochs: int = 2) -> None:
  if models_dir is None:
    return
  from tqdm import tqdm

  qm = jt.load_tinytraining(models_dir / "mcunet-5fps.pkl").with_classifier(2)
  update = jt.SparseUpdate(bias_last=20, weights={24: 0.25, 27: 0.5, 30: 0.5})
  trainer = jt.tiny_train(qm, optimizer=jt.sgd(0.002), update=update,
                          rounding="stochastic")(jt.softmax_cross_entropy)
  print(f"\nsparse update {update.describe()}: memory it adds to inference\n"
        f"{trainer.cost.table()}")
  x_tr, y_tr, x_te, y_te = datasets.lfw_faces()
  x8, xt8 = qm.quantize_input(x_tr), qm.quantize_input(x_te)
  state = trainer.init()
  before = pretrain.accuracy(trainer.logits(state, xt8), y_te)
  rng = np.random.default_rng(0)
  for _ in range(epochs):
    for i in tqdm(rng.permutation(len(x8)), desc="int8 training, batch 1", unit="step"):
      state, _ = trainer.step(state, x8[i:i + 1], y_tr[i:i + 1])
  after = pretrain.accuracy(trainer.model(state).apply(xt8), y_te)
  print(f"faces vs background, {len(xt8)} test images: {before:.0%} before, {after:.0%} "
        f"after {epochs} epochs of int8 training")
  lowering_demo(trainer, x8, y_tr, xt8, y_te)


def lowering_demo(trainer: jt.Trainer, x8: np.ndarray, labels: np.ndarray,
                  xt8: np.ndarray, y_te: np.ndarray, epochs: int = 2) -> None:
  from tqdm import tqdm

  import lowering
  from lowering.report import check_budget, report

  path = Path("mcunet-faces.jtb")
  trainer.lower().save(path, state="initial")  # the blob a board would get: the new head
  program = lowering.load(path)
  print("\n" + report(program).split("\ntimeline")[0])
  check_budget(program, 256 * 1024)
  blob = path.read_bytes()
  rt = lowering.CRuntime(blob)  # the C runtime (host build), verified by the C verifier
  pairs = [(rt.train_step(x8[i], int(labels[i])), program.train_step(x8[i], int(labels[i])))
           for i in range(4)]
  print(f"wrote {path} ({len(blob):,} B); 4 steps on the reloaded blob, C runtime vs "
        "reference executor losses: "
        + ", ".join(f"{c:.6f} / {e:.6f}" for c, e in pairs)
        + f" ({'bit for bit' if all(c == e for c, e in pairs) else 'DIFFERENT'})")
  rt = lowering.CRuntime(blob)
  acc = np.mean([int(np.argmax(rt.infer(x))) == y for x, y in zip(xt8, y_te)])
  rng = np.random.default_rng(0)
  for _ in range(epochs):
    for i in tqdm(rng.permutation(len(x8)), desc="C runtime training, batch 1", unit="step"):
      rt.train_step(x8[i], int(labels[i]))
  after = np.mean([int(np.argmax(rt.infer(x))) == y for x, y in zip(xt8, y_te)])
  image = rt.save_state()
  print(f"the blob trained on the host C runtime: test accuracy {acc:.0%} before, {after:.0%} "
        f"after {epochs} epochs; its learned state: a {len(image):,}-byte CRC-protected image "
        f"(`rt.save_state()` / `rt.load_state(image)`); `jaxtiny report {path} "
        "--plot mem.png` draws the memory timeline")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", type=Path, default=None, help="folder of the shared .pkl models")
  p.add_argument("--epochs", type=int, default=25)
  args = p.parse_args()
  models_dir = args.models or datasets.shared_models_dir()
  digits_demo(args.epochs)
  imagenet_demo(models_dir)
  on_device_demo(models_dir)


if __name__ == "__main__":
  main()
