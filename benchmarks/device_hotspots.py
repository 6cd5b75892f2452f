"""Where the instructions of an inference and of a training step go on the emulated
Cortex-M, function by function, and the hottest translation blocks with their code.

QEMU logs every translated block (`-d in_asm`: its symbol and instructions) and every
execution of one (`-d exec,nochain`: chaining off so that each execution is logged); a
block's instructions x its executions, summed per function, are that function's
instructions (inlined code counts for its caller). The log streams through a pipe, never
to disk (an MCUNet step is some 2 GB of it). Two runs: inference only (0 steps), then one
training step; the step's figures are the difference. The counts are exact (every
executed instruction, not SysTick's 40-instruction resolution); about a minute for MCUNet.

Run: python benchmarks/device_hotspots.py [--model mcunet-5fps.pkl] [--cpu cortex-m7]
     [--kernels dsp] [--blocks 8]
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
from device import CLASSES, blob_for

from lowering import firmware

from common import save


def profile(fw: firmware.Firmware, work: Path, steps: int) -> tuple[collections.Counter, dict]:
  """Instructions per function of one QEMU run of `steps` training steps (after the
  inference of sample 0), and per block start: (function, instructions, executions, code)."""
  fifo = work / f"log{steps}"
  os.mkfifo(fifo)
  cmd = [firmware.tool("qemu-system-arm"), "-M", firmware.BOARDS[fw.cpu], "-cpu", fw.cpu,
         "-nographic", "-monitor", "none", "-serial", "none", "-semihosting-config",
         f"enable=on,target=native,arg=fw,arg={steps},arg=0", "-kernel", str(fw.elf),
         "-d", "in_asm,exec,nochain", "-D", str(fifo)]
  size: dict[int, int] = {}
  code: dict[int, tuple[str, list[str]]] = {}
  runs: collections.Counter = collections.Counter()
  with subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True) as p:
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(p.stdout or []))
    reader.start()
    with open(fifo, errors="replace") as log:
      fn, start, lines = "?", None, []
      for line in log:
        if line.startswith("Trace"):
          runs[int(line[line.index("[") + 1:].split("/")[1], 16)] += 1
        elif line.startswith("IN:"):
          fn, start, lines = line[3:].strip(), None, []
        elif line.startswith("0x"):
          if start is None:
            start = int(line[:10], 16)
          lines.append(line.rstrip())
        elif not line.strip() and start is not None:
          size[start], code[start] = len(lines), (fn, lines)
          start = None
    p.wait(timeout=3600)
    reader.join()
  if p.returncode != 0 or "done" not in "".join(out).split():
    raise firmware.FirmwareError(f"the profiled run failed: {''.join(out)[-300:]}")
  per_fn: collections.Counter = collections.Counter()
  blocks = {}
  for pc, n in runs.items():
    name, text = code.get(pc, ("?", []))
    per_fn[name] += n * size.get(pc, 1)
    blocks[pc] = (name, n * size.get(pc, 1), n, text)
  return per_fn, blocks


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--model", default="mcunet-5fps.pkl")
  ap.add_argument("--cpu", default="cortex-m7", choices=list(firmware.BOARDS))
  ap.add_argument("--kernels", default="dsp", choices=["dsp", "portable"])
  ap.add_argument("--top", type=int, default=20, help="functions in the table")
  ap.add_argument("--blocks", type=int, default=8, help="hottest blocks to print")
  args = ap.parse_args()
  qm, blob = blob_for(args.model, CLASSES)
  with tempfile.TemporaryDirectory() as tmp:
    work = Path(tmp)
    fw = firmware.build(blob, args.cpu, work / "fw", args.kernels)
    rng = np.random.default_rng(0)
    firmware.write_samples(work / "train.bin",
                           rng.integers(-128, 128, (1, *qm.input_shape), dtype=np.int8),
                           rng.integers(0, CLASSES, 1), fw.input_shape, fw.classes)
    infer, _ = profile(fw, work, 0)
    (work / "flash.bin").unlink(missing_ok=True)  # the second run starts fresh too
    both, blocks = profile(fw, work, 1)
  step = both - infer  # the training step alone (Counter subtraction drops what is <= 0)
  rows = []
  for name, n in step.most_common(args.top):
    rows.append([name, f"{infer[name] / 1e6:.2f}", f"{n / 1e6:.2f}"])
  rows.append(["all (inference run: boot, verifier, inference)", f"{sum(infer.values()) / 1e6:.2f}",
               f"{sum(step.values()) / 1e6:.2f}"])
  label = f"{args.model} {args.cpu} {args.kernels}"
  save("device_hotspots", ["function", "M instr, inference run", "M instr, training step"],
       {label: rows}, {"raw": {label: {"infer": dict(infer), "step": dict(step)}}})
  print("\nthe hottest blocks of the training run (inference, then one step):")
  hot = sorted(blocks.values(), key=lambda b: -b[1])[:args.blocks]
  for name, total, n, text in hot:
    print(f"\n{name}: {total / 1e6:.2f} M instructions, {n:,} executions of {len(text)}")
    print("\n".join(text))


if __name__ == "__main__":
  main()
