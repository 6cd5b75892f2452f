"""Training on emulated Cortex-M7 and M4 boards: instructions per training step and per
inference, RAM and flash of the firmware, beside the published engine's figures.

Boards: QEMU mps2-an500 (Cortex-M7, fpv5-sp-d16) and mps2-an386 (Cortex-M4F), -icount
shift=0, instructions counted by SysTick (40-instruction resolution). Models: MCUNet-5FPS
with the published "49kb" scheme and MobileNetV2-w0.35 with the "99kb" scheme, 128x128x3,
batch 1, SGD, a new 10-class head (as the published engine's demo). The firmware is
`python -m lowering.firmware` (gcc 12, int8 kernels -O3, the rest -O2, -ffp-contract=off,
no fast-math), DSP kernels and, on the M7, the portable C for comparison. Per step: the
last of `--steps` steps (every step costs the same within a few hundred instructions); per
inference: sample 0.
RAM = .data + .bss (input buffer, arena, state, runtime object) + the painted stack's
high-water mark; flash = vectors + code + constants (the blob) from the ELF.

Time to learn: faces vs background (lfw_subset, MCUNet-5FPS, a new 2-class head, the 49kb
scheme, SGD lr 0.002, stochastic rounding, batch 1, samples in a seeded random order),
trained on the host build of the C runtime (bit for bit the firmware, tests/test_firmware.py)
until the test accuracy, checked after every step, reaches 90 %; device time = those steps x
the 2-class blob's instructions per step on the M7 / 216 MHz, assuming one instruction per
cycle (QEMU models no cycles; a real STM32F746 also waits on flash and memory).

Run: python benchmarks/device.py [--steps 3] [--skip-faces]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from memory import SCHEMES

import jaxtiny as jt
from jaxtiny import datasets
from jaxtiny.datasets import shared_models_dir
from lowering import firmware
from lowering.blob import encode
from lowering.cruntime import CRuntime

from common import save

MODELS = {"MCUNet-5FPS 49kb": "mcunet-5fps.pkl", "MobileNetV2-w0.35 99kb": "mbv2-w0.35.pkl"}
BUILDS = (("cortex-m7", "dsp"), ("cortex-m7", "portable"), ("cortex-m4", "dsp"))
CLASSES = 10
CLOCK_HZ = 216e6  # STM32F746
# DESIGN.md: the published engine on QEMU Cortex-M7, MCUNet-5FPS 49kb, 10-class head
ENGINE = {"step": 106.37e6, "infer": 65.04e6, "ram": 252_288, "flash": 655_696}
GOALS = {"MCUNet-5FPS 49kb": {"step": 85e6, "infer": 52e6, "ram": 160 * 1024,
                              "flash": 600 * 1024},
         "MobileNetV2-w0.35 99kb": {"ram": 200 * 1024}}


def blob_for(model: str, classes: int, seed: int = 0, rounding: str = "nearest") -> tuple:
  qm = jt.load_tinytraining(shared_models_dir() / model).with_classifier(classes, seed=seed)
  lr = 0.002 if classes == 2 else 0.01
  tr = jt.tiny_train(qm, optimizer=jt.sgd(lr), update=SCHEMES[model],
                     rounding=rounding)(jt.softmax_cross_entropy)
  return qm, encode(tr.lower())


def measure(blob: bytes, qm: jt.QModel, classes: int, cpu: str, kernels: str, steps: int,
            tmp: Path) -> dict:
  fw = firmware.build(blob, cpu, tmp / f"{cpu}-{kernels}", kernels)
  rng = np.random.default_rng(0)
  x = rng.integers(-128, 128, (steps, *qm.input_shape), dtype=np.int8)
  y = rng.integers(0, classes, steps)
  r = firmware.run(fw, x, y, tmp / f"run-{cpu}-{kernels}", timeout=3600)
  s = r.summary(fw)
  return {"step": r.steps[-1]["instructions"], "infer": r.inference["instructions"],
          "ram": s["ram_bytes"], "stack": s["stack_bytes"], "flash": s["flash_bytes"],
          "static_ram": fw.static_ram_bytes, "sizes": fw.sizes}


def faces_steps(seed: int = 0, target: float = 0.9, every: int = 1, epochs: int = 4) -> dict:
  """Training steps of the faces task on the host C runtime until the test accuracy >= target."""
  qm, blob = blob_for("mcunet-5fps.pkl", 2, seed, rounding="stochastic")
  x_tr, y_tr, x_te, y_te = datasets.lfw_faces(seed=seed)
  x8, xt8 = qm.quantize_input(x_tr), qm.quantize_input(x_te)
  rt = CRuntime(blob)

  def accuracy() -> float:
    return float(np.mean([int(np.argmax(rt.infer(x))) == int(t) for x, t in zip(xt8, y_te)]))

  start = accuracy()
  rng = np.random.default_rng(seed)
  n = 0
  for _ in range(epochs):
    for i in rng.permutation(len(x8)):
      rt.train_step(x8[i], int(y_tr[i]))
      n += 1
      if n % every == 0 and (acc := accuracy()) >= target:
        return {"steps": n, "accuracy": acc, "start": start, "blob": blob, "qm": qm}
  return {"steps": None, "accuracy": accuracy(), "start": start, "blob": blob, "qm": qm}


def _m(n: float) -> str:
  return f"{n / 1e6:.2f}"


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--skip-faces", action="store_true")
  args = ap.parse_args()
  results: dict[str, dict] = {}
  rows: dict[str, list[list[str]]] = {"measured": [], "goals": [], "time to learn": []}
  with tempfile.TemporaryDirectory() as tmp:
    for label, model in MODELS.items():
      qm, blob = blob_for(model, CLASSES)
      for cpu, kernels in BUILDS:
        m = measure(blob, qm, CLASSES, cpu, kernels, args.steps, Path(tmp) / label.split()[0])
        results[f"{label} {cpu} {kernels}"] = m
        print(label, cpu, kernels, {k: v for k, v in m.items() if k != "sizes"}, flush=True)
        rows["measured"].append([label, f"{cpu} ({firmware.BOARDS[cpu]})", kernels, _m(m["step"]),
                                 _m(m["infer"]), f"{m['ram']:,}", f"{m['stack']:,}",
                                 f"{m['flash']:,}"])
    rows["measured"].append(["MCUNet-5FPS 49kb, published engine", "cortex-m7 (mps2-an500)",
                             "CMSIS-style, -Ofast", _m(ENGINE["step"]), _m(ENGINE["infer"]),
                             f"{ENGINE['ram']:,}", "21,856", f"{ENGINE['flash']:,}"])
    for label, goals in GOALS.items():
      m = results[f"{label} cortex-m7 dsp"]
      for key, goal in goals.items():
        what = {"step": "instructions per training step", "infer": "instructions per inference",
                "ram": "RAM, everything counted (B)", "flash": "flash (B)"}[key]
        fmt = _m if key in ("step", "infer") else (lambda v: f"{v:,.0f}")
        engine = fmt(ENGINE[key]) if label.startswith("MCUNet") else "-"
        rows["goals"].append([label, what, fmt(goal), fmt(m[key]), engine,
                              "met" if m[key] <= goal else "not met"])
    if not args.skip_faces:
      f = faces_steps()
      m = measure(f["blob"], f["qm"], 2, "cortex-m7", "dsp", args.steps, Path(tmp) / "faces")
      seconds = f["steps"] * m["step"] / CLOCK_HZ if f["steps"] else float("nan")
      results["faces"] = {k: v for k, v in f.items() if k not in ("blob", "qm")} | {
        "instructions_per_step": m["step"], "seconds_at_216MHz": seconds}
      rows["time to learn"].append(
        ["faces vs background (MCUNet-5FPS 49kb, 2 classes)", f"{f['start']:.0%}",
         f"{f['accuracy']:.0%}", str(f["steps"]), _m(m["step"]), f"{seconds:.1f}"])
  save("device", ["model", "board", "kernels", "M instr / train step", "M instr / inference",
                  "RAM (B)", "of it stack (B)", "flash (B)"],
       {"measured": rows["measured"]}, {"results": results})
  save("device_goals", ["model", "figure", "goal", "ours (M7, DSP)", "published engine",
                        "status"], {"goals": rows["goals"]}, {})
  if rows["time to learn"]:
    save("device_faces", ["task", "test accuracy before", "reached", "steps",
                          "M instr / step (M7)", "seconds at 216 MHz, 1 instr / cycle"],
         {"time to learn": rows["time to learn"]}, {})


if __name__ == "__main__":
  main()
