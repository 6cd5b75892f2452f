"""What a full-update fp32 training step costs under XLA (CPU), for the shared models.

The baseline a microcontroller engine is held against: the float32 twin of each int8
model (`jaxtiny.quantize.dequantized_graph`, run by `float_forward`), one SGD step on every
weight and bias with softmax cross-entropy, batch 1, 128x128x3 input, jitted with the
parameters donated (updated in place, as a training loop runs it). Reported:
(a) XLA's compiled memory analysis of the step (arguments, outputs, the outputs aliased to
    donated arguments, temporaries, generated code); total = argument + output - alias +
    temp + code, i.e. the donated parameters counted once;
(b) the peak RSS (VmHWM) of a fresh Python process that imports jax and jaxtiny, compiles
    the step and runs it 3 times: the whole process, nothing subtracted (and its resident
    set after the runs, once compilation is over). The floor row is such a process that
    compiles and runs only a one-element add. Sizes in KB = 1024 bytes.

Run: python benchmarks/xla_fp32.py [--models mcunet-5fps.pkl mbv2-w0.35.pkl]
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

import jaxtiny as jt
from jaxtiny.datasets import shared_models_dir
from jaxtiny.graph import Node
from jaxtiny.quantize import dequantized_graph, float_forward

MODELS = ("mcunet-5fps.pkl", "mbv2-w0.35.pkl")
PAPER_FULL_UPDATE_KB = {"mcunet-5fps.pkl": 3650, "mbv2-w0.35.pkl": 2939}  # DESIGN.md figures
RUNS = 3
LR = 0.01
XLA_FIELDS = ("argument", "output", "alias", "temp", "generated_code")

# nodes, tensor shapes, input id, output id: all a child process needs to rebuild the step.
FloatGraph = tuple[list[Node], dict[int, tuple[int, ...]], int, int]


def float_graph(qm: jt.QModel) -> FloatGraph:
  nodes, shapes = dequantized_graph(qm)
  return nodes, shapes, qm.input_id, qm.output_id


def compiled_step(graph: FloatGraph, batch: int) -> tuple[jax.stages.Compiled, tuple]:
  """The compiled full-update SGD step (params, x, labels) -> (params, loss) and its
  initial arguments."""
  nodes, shapes, input_id, output_id = graph
  params = {n.name: {k: jnp.asarray(n.arrays[k]) for k in ("weight", "bias")}
            for n in nodes if n.op in ("conv2d", "dense")}

  def step(p, x, y):
    def loss(p):
      logits = float_forward(nodes, shapes, input_id, x, p)[output_id]
      return jt.softmax_cross_entropy(logits, y)

    value, g = jax.value_and_grad(loss)(p)
    return jax.tree_util.tree_map(lambda w, gw: w - LR * gw, p, g), value

  x = jnp.zeros((batch, *shapes[input_id]), jnp.float32)
  y = jnp.zeros((batch,), jnp.int32)
  return jax.jit(step, donate_argnums=0).lower(params, x, y).compile(), (params, x, y)


def _rss() -> dict[str, int]:
  """This process's peak and current resident set (Linux: VmHWM, VmRSS)."""
  status = dict(line.split(":", 1) for line in
                Path("/proc/self/status").read_text().splitlines())
  return {"peak_rss_bytes": int(status["VmHWM"].split()[0]) * 1024,
          "rss_after_bytes": int(status["VmRSS"].split()[0]) * 1024}


def _child(graph_path: Path | None, batch: int) -> None:
  """Body of the fresh process of (b); prints its peak and final RSS as JSON."""
  if graph_path is None:
    jax.jit(lambda a: a + 1)(jnp.zeros(1)).block_until_ready()
  else:
    compiled, (params, x, y) = compiled_step(pickle.loads(graph_path.read_bytes()), batch)
    for _ in range(RUNS):
      params, loss = compiled(params, x, y)  # the donated params come back updated
    loss.block_until_ready()
  print(json.dumps(_rss()))


def _fresh_process_rss(graph: FloatGraph | None, batch: int = 1) -> dict[str, int]:
  with tempfile.TemporaryDirectory() as d:
    cmd = [sys.executable, __file__, "--child", "--batch", str(batch)]
    if graph is not None:
      path = Path(d) / "graph.pkl"
      path.write_bytes(pickle.dumps(graph))
      cmd += ["--graph", str(path)]
    r = subprocess.run(cmd, capture_output=True, text=True)
  if r.returncode:
    raise RuntimeError(f"the measuring process failed:\n{r.stderr}")
  return json.loads(r.stdout.splitlines()[-1])


def measure(qm: jt.QModel, batch: int = 1) -> dict:
  """XLA's compiled memory of the fp32 full-update step of `qm`'s float twin, and the
  peak RSS of a fresh process running it; all in bytes."""
  graph = float_graph(qm)
  compiled, (params, _, _) = compiled_step(graph, batch)
  m = compiled.memory_analysis()
  xla = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in XLA_FIELDS}
  xla["total"] = (xla["argument"] + xla["output"] - xla["alias"] + xla["temp"]
                  + xla["generated_code"])
  leaves = jax.tree_util.tree_leaves(params)
  return {"batch": batch, "input_shape": list(qm.input_shape),
          "parameters": sum(a.size for a in leaves),
          "parameter_bytes": sum(a.nbytes for a in leaves),
          "xla": xla, "process": _fresh_process_rss(graph, batch)}


def _kb(n: int) -> str:
  return f"{n / 1024:,.0f}"


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", nargs="+", default=list(MODELS))
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--graph", type=Path, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    _child(args.graph, args.batch)
    return
  # Imported here, not at the top: the child processes above stay as lean as possible.
  from common import save

  d = shared_models_dir()
  if d is None:
    sys.exit("the shared models are needed (set JAXTINY_MODELS)")
  header = ["model (sizes in KB = 1024 B)", "fp32 params", "XLA argument", "output",
            "alias (donated)", "temp", "code", "XLA total", "process peak RSS",
            "RSS after the runs", "paper, full update"]
  rows, raw = {}, {}
  for name in args.models:
    qm = jt.load_tinytraining(d / name).with_classifier(2)
    r = raw[name] = measure(qm, args.batch)
    x = r["xla"]
    rows[name] = [[name, _kb(r["parameter_bytes"]), *(_kb(x[k]) for k in XLA_FIELDS),
                   _kb(x["total"]), _kb(r["process"]["peak_rss_bytes"]),
                   _kb(r["process"]["rss_after_bytes"]), str(PAPER_FULL_UPDATE_KB.get(name, "-"))]]
  floor = _fresh_process_rss(None)
  rows["floor"] = [["(floor: import jax + jaxtiny, a one-element add)", *["-"] * 7,
                    _kb(floor["peak_rss_bytes"]), _kb(floor["rss_after_bytes"]), "-"]]
  save("xla_fp32", header, rows, {"raw": raw, "floor": floor, "unit": "KB = 1024 B",
                                  "note": __doc__.split("Run:")[0].strip()})


if __name__ == "__main__":
  main()
