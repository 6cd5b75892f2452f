"""Random small models through the whole pipeline, for thousands of seeds.

Each seed's model (tests/random_models.py: conv/dense/BN/pool/add/concat models in 2-D,
1-D and flat layouts) is quantized on random calibration data, its int8 output compared
with the float model (bound: ERROR_BOUND of the output range), then a seed-drawn sparse
update is trained in simulation, lowered, saved, loaded and stepped by the reference
executor (tests/helpers.end_to_end: inference bit-exact, losses equal). Every failure is
recorded with its seed, stage, exception type and message; the table sums them up.

Run: python benchmarks/random_models.py [--seeds 1000] [--start 0] [--jobs 1]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
import traceback
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import jax
from tqdm import tqdm

import jaxtiny as jt

# tests/ first: its random_models (the generator) shadows this script's own name.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from random_models import (  # noqa: E402
  ERROR_BOUND,
  describe,
  int8_error,
  random_data,
  random_model,
  random_update,
  random_variables,
)

from common import save  # noqa: E402
from helpers import end_to_end  # noqa: E402

# The statement of helpers.end_to_end / carry_state that failed -> the stage it is.
_E2E_STAGES = (
  ("tiny_train(", "train setup"), (".lower()", "lower"), (".save(", "save"),
  ("lowering.load", "load"), ("trainer.init", "train init"),
  ("trained.apply", "inference after training"), ("prog.infer", "inference before training"),
  ("trainer.step", "simulation step"), ("prog.train_step", "executor step"),
  ("isfinite", "executor loss not finite"), ("loss_ref", "loss mismatch"),
  ("carry_state", "trained parameters"), ("differ", "trained parameters"),
  ("trainer.model", "trained model"),
)


def _where(e: BaseException) -> str:
  """The innermost frame in jaxtiny/ or lowering/ (else the innermost one)."""
  frames = traceback.extract_tb(e.__traceback__)
  ours = [f for f in frames if "/jaxtiny/" in f.filename or "/lowering/" in f.filename]
  f = (ours or frames)[-1]
  return f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno} {f.name}"


def _e2e_stage(e: BaseException) -> str:
  frames = [f for f in traceback.extract_tb(e.__traceback__)
            if f.name in ("end_to_end", "carry_state")]
  if not frames:
    return "end to end"
  f = frames[-1]
  if f.name == "carry_state":
    return "trained parameters"
  for key, stage in _E2E_STAGES:
    if key in (f.line or ""):
      return stage
  return f"end to end: {(f.line or '?').strip()[:60]}"


def run_seed(seed: int) -> dict:
  """One seed through the pipeline: its int8 error, failures and time."""
  t0 = time.time()
  out: dict = {"seed": seed, "error": None, "failures": [], "layers": None}

  def fail(stage: str, e: BaseException | None, kind: str = "", msg: str = "") -> None:
    if e is not None:
      text = str(e).strip()
      kind = type(e).__name__
      msg = f"{text.splitlines()[0][:300] if text else ''} [{_where(e)}]"
    out["failures"].append({"seed": seed, "stage": stage, "type": kind, "message": msg})

  stage = "generate"
  try:
    module, shape, classes = random_model(seed)
    out["model"] = describe(module.spec, shape)
    variables = random_variables(module, shape, seed)
    x, y = random_data(shape, classes, seed)
    stage = "quantize"
    qm = jt.quantize(module, variables, x)
    out["layers"] = qm.num_layers
    stage = "int8 vs float"
    out["error"] = err = int8_error(qm, module, variables, x)
    if not err <= ERROR_BOUND:  # recorded; the pipeline still runs
      fail(stage, None, "ErrorBound", f"{err:.4f} of the output range > {ERROR_BOUND}")
    stage = "update"
    update = random_update(qm, seed)
    out["update"] = update.describe()
    stage = "end to end"
    with tempfile.TemporaryDirectory() as d:
      end_to_end(qm, qm.quantize_input(x), y, update, tmp_path=Path(d),
                 optimizer=jt.sgd(0.05))
  except Exception as e:  # every failure is a result, not the end of the run
    fail(_e2e_stage(e) if stage == "end to end" else stage, e)
  out["seconds"] = time.time() - t0
  return out


CHUNK = 100  # seeds per worker process before it is replaced


def _run_all(seeds: range, jobs: int) -> list[dict]:
  results = []
  bar = tqdm(total=len(seeds), unit="seed")

  def done(r: dict) -> None:
    results.append(r)
    bar.update()
    bar.set_postfix(failed=sum(1 for r in results if r["failures"]))

  if jobs <= 1:
    for seed in seeds:
      done(run_seed(seed))
  else:
    # spawn: jax is not fork-safe. A fresh pool every CHUNK seeds a worker keeps compile
    # caches small (max_tasks_per_child hangs the pool on Python 3.11 once workers retire).
    ctx = multiprocessing.get_context("spawn")
    chunk = jobs * CHUNK
    for i in range(0, len(seeds), chunk):
      with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        for f in as_completed([pool.submit(run_seed, s) for s in seeds[i:i + chunk]]):
          done(f.result())
  bar.close()
  return sorted(results, key=lambda r: r["seed"])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--seeds", type=int, default=1000, help="how many seeds")
  p.add_argument("--start", type=int, default=0, help="the first seed")
  p.add_argument("--jobs", type=int, default=1, help="worker processes")
  args = p.parse_args()
  seeds = range(args.start, args.start + args.seeds)
  t0 = time.time()
  results = _run_all(seeds, args.jobs)
  wall = time.time() - t0

  failures = [f for r in results for f in r["failures"]]
  failed = sorted({f["seed"] for f in failures})
  by_stage = Counter(f["stage"] for f in failures)
  errors = [r["error"] for r in results if r["error"] is not None]
  worst = max(results, key=lambda r: r["error"] or 0.0)
  for f in failures:
    print(f"seed {f['seed']}: {f['stage']}: {f['type']}: {f['message']}")
  key = f"seeds {seeds.start}-{seeds.stop - 1}"
  stages = ", ".join(f"{s}: {n}" for s, n in by_stage.most_common()) or "-"
  shown = ", ".join(map(str, failed[:30])) + (f" (+{len(failed) - 30})" if len(failed) > 30
                                              else "")
  rows = {key: [[key, str(len(results)), str(len(results) - len(failed)), str(len(failed)),
                 stages, f"{max(errors, default=0):.4f} (seed {worst['seed']})",
                 f"{sum(errors) / max(len(errors), 1):.4f}", shown or "-"]]}
  raw = {key: {"failures": failures,
               "error": {r["seed"]: r["error"] for r in results},
               "seconds": {r["seed"]: round(r["seconds"], 2) for r in results},
               "models": {r["seed"]: r.get("model") for r in results if r["failures"]}}}
  save("random_models", ["seeds", "run", "passed", "failed", "failed by stage",
                         "max int8 error (of output range)", "mean int8 error",
                         "failing seeds"],
       rows, {"raw": raw, "error_bound": ERROR_BOUND, "wall_seconds": round(wall, 1),
              "jobs": args.jobs, "jax_backend": jax.default_backend()})
  print(f"{len(results)} seeds in {wall:.0f} s ({args.jobs} job(s)); "
        f"{len(failed)} failed", flush=True)


if __name__ == "__main__":
  main()
