"""The long fuzz run of the C runtime's verifier: libFuzzer on jt_init (then one inference
and one train step when a blob is accepted), built with AddressSanitizer and UBSan.

The seed corpus is a handful of small lowered steps (every op family: conv, depthwise,
residual add, pools, dense, banded and channel-by-channel bottlenecks, the loss's small
ops, SGD / momentum / Adam updates); libFuzzer mutates them (the harness patches each
mutant's size and CRC fields so that mutations reach the structural checks).

Run:  python benchmarks/fuzz.py [--runs 10000000] [--jobs 2] [--seconds N]
      python benchmarks/fuzz.py --corpus-only DIR   (write the seed corpus, used by the tests)
Needs clang (libFuzzer); `make -C runtime_c fuzz` builds the target.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "runtime_c" / "build" / "fuzz_init"


def corpus(out: Path) -> list[Path]:
  """Write the seed blobs to `out`; returns their paths."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  import jaxtiny as jt
  from lowering.blob import encode

  class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu6(nn.Conv(4, (3, 3), strides=2)(x))
      h = nn.relu6(nn.Conv(8, (1, 1))(x))
      h = nn.relu6(nn.Conv(8, (3, 3), feature_group_count=8)(h))
      x = nn.Conv(4, (1, 1))(h) + x
      x = nn.max_pool(x, (2, 2), (1, 1))
      return nn.Dense(3)(x.mean(axis=(1, 2)))

  class Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(3)(nn.relu(nn.Dense(6)(x.reshape((x.shape[0], -1)))))

  rng = np.random.default_rng(0)
  x = rng.normal(size=(16, 6, 6, 2)).astype(np.float32)
  schemes = [
    (Tiny(), jt.SparseUpdate(bias_last=2, weights={1: 0.5}), jt.sgd(0.1), jt.softmax_cross_entropy),
    (Tiny(), jt.SparseUpdate.last_layers(4), jt.sgd(0.1, momentum=0.9), jt.softmax_cross_entropy),
    (Tiny(), jt.SparseUpdate(bias_last=3, weights={2: 0.5}), jt.adam(0.01),
     lambda z, y: optax.sigmoid_binary_cross_entropy(z, jax.nn.one_hot(y, 3)).mean()),
    (Mlp(), jt.SparseUpdate.last_layers(1), jt.sgd(jt.cosine(0.1, 20)), jt.softmax_cross_entropy),
  ]
  out.mkdir(parents=True, exist_ok=True)
  paths = []
  for k, (module, update, opt, loss) in enumerate(schemes):
    v = module.init(jax.random.key(k), jnp.zeros((1, 6, 6, 2)))
    qm = jt.quantize(module, v, x)
    prog = jt.tiny_train(qm, optimizer=opt, update=update)(loss).lower()
    paths.append(out / f"seed{k}.jtb")
    paths[-1].write_bytes(encode(prog))
  return paths


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--runs", type=int, default=10_000_000)
  ap.add_argument("--jobs", type=int, default=2)
  ap.add_argument("--seconds", type=int, default=0, help="stop each job after this long "
                  "(libFuzzer's -max_total_time; 0: no limit)")
  ap.add_argument("--corpus-only", type=Path, metavar="DIR")
  args = ap.parse_args()
  if args.corpus_only:
    corpus(args.corpus_only)
    return
  subprocess.run(["make", "-C", str(ROOT / "runtime_c"), "-s", "fuzz"], check=True)
  from common import save

  with tempfile.TemporaryDirectory() as tmp:
    seeds = Path(tmp) / "corpus"
    corpus(seeds)
    runs = args.runs // args.jobs
    t0 = time.time()
    procs = [subprocess.Popen([str(TARGET), str(seeds), f"-runs={runs}", "-rss_limit_mb=2048",
                               f"-artifact_prefix={tmp}/crash{j}-", f"-seed={j + 1}",
                               "-print_final_stats=1", f"-max_total_time={args.seconds}"],
                              stderr=subprocess.PIPE, text=True) for j in range(args.jobs)]
    logs = [p.communicate()[1] for p in procs]
    seconds = time.time() - t0
    crashes = sum(p.returncode != 0 for p in procs)
    execs = sum(int(m[-1]) for log in logs if (m := re.findall(r"stat::number_of_executed_units:"
                                                               r"\s*(\d+)", log)))
    if not execs:  # older libFuzzer: read the last "#N DONE" line
      execs = sum(int(m[-1]) for log in logs if (m := re.findall(r"#(\d+)\s+DONE", log)))
    cov = max((int(m[-1]) for log in logs if (m := re.findall(r"cov: (\d+)", log))), default=0)
  row = [f"{execs:,}", str(args.jobs), f"{seconds:.0f}", f"{execs / seconds:,.0f}", str(cov),
         str(crashes)]
  save("fuzz", ["executions", "jobs", "seconds", "exec/s", "coverage (edges)", "crashes"],
       {"jt_init + infer + train_step (ASan+UBSan)": [row]},
       {"runs": args.runs, "seconds_limit": args.seconds,
        "raw": {"logs_tail": [log[-2000:] for log in logs]}})
  if crashes:
    raise SystemExit(f"{crashes} fuzz job(s) crashed: see the logs above")


if __name__ == "__main__":
  main()
