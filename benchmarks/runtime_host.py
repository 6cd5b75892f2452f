"""The C runtime on the host: steps per second at batch 1 beside the numpy reference executor
and the JAX simulation, its worst-path stack and its static footprint.

Speed: MCUNet-5FPS with the paper's "49kb" scheme (biases of the last 20 layers, weights of
layers 24 at 1/4, 27 and 30 at 1/2 of their input channels, a new 2-class head), 128x128x3,
SGD, stochastic rounding; the same blob on each engine, wall clock on this machine (the
first step of each engine is warm-up and not counted).
Stack: gcc -fcallgraph-info=su over the runtime's sources (-O2, x86-64): the deepest path
from each entry point, the dispatcher's indirect calls expanded to every op adapter / check.
Footprint: `size` of the host objects (text, data, bss). The Cortex-M figures come with the
firmware (issue 12).

Run: python benchmarks/runtime_host.py [--steps 20]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import jaxtiny as jt
from jaxtiny.datasets import shared_models_dir

from common import save

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "runtime_c"
SCHEME = jt.SparseUpdate(bias_last=20, weights={24: 0.25, 27: 0.5, 30: 0.5})
ENTRIES = ("jt_init", "jt_train_step", "jt_infer", "jt_state_save", "jt_slots_save")


def _rate(step, n: int) -> float:
  step(0)  # warm-up: JIT compilation, caches
  t0 = time.perf_counter()
  for i in range(n):
    step(i + 1)
  return n / (time.perf_counter() - t0)


def speed(steps: int) -> dict[str, dict[str, float]]:
  qm = jt.load_tinytraining(shared_models_dir() / "mcunet-5fps.pkl").with_classifier(2)
  tr = jt.tiny_train(qm, optimizer=jt.sgd(0.01), update=SCHEME)(jt.softmax_cross_entropy)
  prog = tr.lower()
  rt = prog.runtime()
  rng = np.random.default_rng(0)
  x8 = rng.integers(-128, 128, (steps + 1, *qm.input_shape), dtype=np.int8)
  y = rng.integers(0, 2, steps + 1).astype(np.int32)
  state = [tr.init()]

  def sim(i):
    state[0], loss = tr.step(state[0], x8[i:i + 1], y[i:i + 1])
    float(loss)  # wait for the result

  out = {}
  for name, step, infer in (
      ("C runtime (host, -O2)", lambda i: rt.train_step(x8[i], int(y[i])), rt.infer),
      ("reference executor (numpy)", lambda i: prog.train_step(x8[i], int(y[i])), prog.infer),
      ("JAX simulation (jit, CPU)", sim, lambda x: np.asarray(qm.apply(x[None])))):
    n = steps if "C runtime" in name else max(3, steps // 4)
    out[name] = {"train_steps_per_s": _rate(step, n),
                 "inferences_per_s": _rate(lambda i, f=infer: f(x8[i % len(x8)]), n)}
    print(name, {k: round(v, 2) for k, v in out[name].items()}, flush=True)
  out["plan"] = {"arena_bytes": prog.arena_bytes, "state_bytes": prog.state_bytes,
                 "flash_bytes": prog.flash_bytes, "train_ops": len(prog.train_ops)}
  return out


def _callgraph(tmp: Path) -> tuple[dict[str, int], dict[str, set[str]]]:
  """Per function its own stack bytes and its direct callees, from gcc's .ci files."""
  frames: dict[str, int] = {}
  calls: dict[str, set[str]] = {}
  for src in sorted((RUNTIME / "src").glob("*.c")):
    subprocess.run(["gcc", "-std=c99", "-O2", "-ffp-contract=off", "-I", RUNTIME / "include",
                    "-I", RUNTIME / "src", "-fcallgraph-info=su", "-c", src, "-o",
                    tmp / (src.stem + ".o")], check=True, cwd=tmp)
    text = (tmp / (src.stem + ".ci")).read_text()
    for title, label in re.findall(r'node: \{ title: "([^"]+)" label: "([^"]*)"', text):
      m = re.search(r"(\d+) bytes? \((static|dynamic)", label)
      name = title.split(":")[-1]
      if m:
        frames[name] = max(frames.get(name, 0), int(m.group(1)))
      else:
        frames.setdefault(name, 0)
    for a, b in re.findall(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"', text):
      calls.setdefault(a.split(":")[-1], set()).add(b.split(":")[-1])
  # Indirect calls: the dispatcher's tables and the bottleneck backward's update callback.
  adapters = {f for f in frames if f.startswith("jt_op_")}
  checks = {f for f in frames if f.startswith("jt_check_") and f != "jt_check_table"}
  for f, callees in list(calls.items()):
    if "run" == f:
      callees |= adapters
    if f == "check_op":
      callees |= checks
  calls.setdefault("jt_bottleneck_bw_f32", set()).add("jt_update_apply")
  return frames, calls


def stack() -> dict[str, dict]:
  with tempfile.TemporaryDirectory() as d:
    frames, calls = _callgraph(Path(d))

  def deepest(f: str, seen: frozenset) -> tuple[int, list[str]]:
    best: tuple[int, list[str]] = (0, [])
    for g in calls.get(f, ()):
      if g in frames and g not in seen:
        best = max(best, deepest(g, seen | {g}), key=lambda t: t[0])
    return frames.get(f, 0) + best[0], [f, *best[1]]

  return {e: dict(zip(("bytes", "path"), deepest(e, frozenset({e})), strict=True))
          for e in ENTRIES}


def footprint() -> dict[str, int]:
  subprocess.run(["make", "-C", str(RUNTIME), "-s"], check=True)
  objs = sorted(str(p) for p in (RUNTIME / "build" / "obj").glob("*.o"))
  out = subprocess.run(["size", "-t", *objs], capture_output=True, text=True, check=True).stdout
  text, data, bss = (int(v) for v in out.strip().splitlines()[-1].split()[:3])
  return {"text": text, "data": data, "bss": bss}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--steps", type=int, default=20)
  args = ap.parse_args()
  sp, st, fp = speed(args.steps), stack(), footprint()
  rows = [[name, f"{r['train_steps_per_s']:.2f}", f"{r['inferences_per_s']:.2f}"]
          for name, r in sp.items() if name != "plan"]
  save("runtime_host", ["engine (MCUNet-5FPS 49kb, batch 1, 128x128)", "train steps/s",
                        "inferences/s"], {"speed": rows},
       {"raw": {"speed": sp, "stack": st, "footprint": fp}})
  print("\nworst-path stack (host x86-64, -O2):")
  for e, r in st.items():
    print(f"  {e}: {r['bytes']} B via {' -> '.join(r['path'])}")
  print(f"static footprint of the host objects: text {fp['text']:,} B, data {fp['data']:,} B, "
        f"bss {fp['bss']:,} B")


if __name__ == "__main__":
  main()
