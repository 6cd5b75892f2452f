"""Shared pieces of the benchmarks: tasks, fp32 and int8 training of one scheme, tables."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxtiny as jt
from jaxtiny import datasets, models, pretrain
from jaxtiny.quantize import dequantized_graph, float_forward
from jaxtiny.search import prefix_outputs, split_before, train_and_evaluate
from jaxtiny.sparse import layer_plans

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Task:
  """A transfer-learning task: an int8 model with a new head, int8 data, a default scheme.

  `qm` may be a suffix of the network (its frozen prefix already applied to the data).
  """

  name: str
  qm: jt.QModel
  train: tuple[np.ndarray, np.ndarray]
  test: tuple[np.ndarray, np.ndarray]
  update: jt.SparseUpdate
  lr: float
  epochs: int


def _with_prefix_cached(name, qm, x_tr, y_tr, x_te, y_te, update, lr, epochs, earliest):
  prefix, suffix = split_before(qm, earliest)
  return Task(name, suffix, (prefix_outputs(prefix, x_tr, 64), y_tr),
              (prefix_outputs(prefix, x_te, 64), y_te),
              update, lr, epochs)


def digits_transfer(seed: int) -> Task:
  """Pretrain fp32 on digits 0-4, then learn all 10 classes on the int8 model."""
  x_tr, y_tr, x_te, y_te = datasets.digits(seed=seed)
  x5, y5 = datasets.split_classes(x_tr, y_tr, range(5))
  model = models.DigitsMobileNet(num_classes=5)
  variables = pretrain.fit_fp32(model, x5, y5, epochs=20, seed=seed)
  qm = jt.quantize(model, variables, x5).with_classifier(10, seed=seed)
  return Task("digits transfer (DigitsMobileNet, 0-4 -> 0-9)", qm,
              (qm.quantize_input(x_tr), y_tr), (qm.quantize_input(x_te), y_te),
              jt.SparseUpdate.last_layers(4), lr=0.02, epochs=6)


def faces(seed: int, models_dir: Path | None = None) -> Task:
  """MCUNet-5FPS (ImageNet int8) with a new 2-class head: faces vs background."""
  d = models_dir or datasets.shared_models_dir()
  if d is None:
    raise FileNotFoundError("the shared models are needed (set JAXTINY_MODELS)")
  qm = jt.load_tinytraining(d / "mcunet-5fps.pkl").with_classifier(2, seed=seed)
  x_tr, y_tr, x_te, y_te = datasets.lfw_faces(seed=seed)
  update = jt.SparseUpdate(bias_last=20, weights={24: 0.25, 27: 0.5, 30: 0.5})
  return _with_prefix_cached("faces vs background (MCUNet-5FPS, lfw_subset 128x128)", qm,
                             qm.quantize_input(x_tr), y_tr, qm.quantize_input(x_te), y_te,
                             update, lr=0.002, epochs=5, earliest=qm.num_layers - 20)


def motions(seed: int) -> Task:
  """BasicMotions: pretrain a 1-D CNN fp32 on 3 activities, then learn all 4 in int8."""
  x_tr, y_tr, x_te, y_te = datasets.basic_motions()
  mean, std = x_tr.mean(axis=(0, 1)), x_tr.std(axis=(0, 1))
  x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
  x3, y3 = datasets.split_classes(x_tr, y_tr, range(3))
  model = models.MotionCNN(num_classes=3)
  variables = pretrain.fit_fp32(model, x3, y3, epochs=60, batch_size=8, seed=seed)
  qm = jt.quantize(model, variables, x3).with_classifier(4, seed=seed)
  return Task("BasicMotions (1-D CNN, 3 -> 4 activities)", qm,
              (qm.quantize_input(x_tr), y_tr), (qm.quantize_input(x_te), y_te),
              jt.SparseUpdate.last_layers(2), lr=0.02, epochs=10)


TASKS = {"digits": digits_transfer, "faces": faces, "motions": motions}


# --- training one scheme ------------------------------------------------------------------


def int8_accuracy(task: Task, *, optimizer: jt.optim.Optimizer | None, qas: bool = True,
                  rounding: str = "stochastic", seed: int = 0,
                  update: jt.SparseUpdate | None = None) -> float:
  return train_and_evaluate(task.qm, update or task.update, task.train, task.test,
                            optimizer=optimizer, epochs=task.epochs, seed=seed, qas=qas,
                            rounding=rounding)


def fp32_accuracy(task: Task, *, lr: float | Callable, seed: int = 0,
                  update: jt.SparseUpdate | None = None, momentum: float = 0.0) -> float:
  """The same scheme trained in fp32 on the dequantized network (same channels, same
  data order), with SGD (lr: a number or a schedule of the step, as for `jt.sgd`;
  momentum as `jt.sgd`'s): the reference the int8 results are held against."""
  schedule = lr if callable(lr) else jt.constant(lr)
  qm = task.qm
  nodes, shapes = dequantized_graph(qm)
  plans = layer_plans(qm, update or task.update)
  params, masks = {}, {}
  by_name = {n.name: n for n in nodes}
  for name, plan in plans.items():
    w = jnp.asarray(by_name[name].arrays["weight"])
    mask = np.zeros(w.shape, np.float32)
    if plan.channels is not None:
      if plan.all_channels:
        mask[:] = 1
      else:
        idx = [slice(None)] * w.ndim
        idx[plan.axis] = list(plan.channels)
        mask[tuple(idx)] = 1
    params[name] = {"weight": w, "bias": jnp.asarray(by_name[name].arrays["bias"])}
    masks[name] = {"weight": jnp.asarray(mask),
                   "bias": jnp.full(w.shape[0], 1.0 if plan.bias else 0.0, jnp.float32)}
  deq = qm.input_qparams.dequantize

  def logits(p, x):
    return float_forward(nodes, shapes, qm.input_id, x, p)[qm.output_id]

  @jax.jit
  def step(p, v, x, y, t):
    g = jax.grad(lambda p: jt.softmax_cross_entropy(logits(p, x), y))(p)
    v = jax.tree_util.tree_map(lambda vv, gg: momentum * vv + gg, v, g)
    rate = schedule(t)
    return jax.tree_util.tree_map(lambda a, vv, m: a - rate * vv * m, p, v, masks), v

  x, y = task.train
  rng = np.random.default_rng(seed)
  t = 0
  velocity = jax.tree_util.tree_map(jnp.zeros_like, params)
  for _ in range(task.epochs):
    for i in rng.permutation(len(x)):
      params, velocity = step(params, velocity, jnp.asarray(deq(x[i:i + 1])),
                              jnp.asarray(y[i:i + 1]), t)
      t += 1
  xt, yt = task.test
  pred = np.concatenate([np.asarray(jax.jit(logits)(params, jnp.asarray(deq(xt[i:i + 256]))))
                         for i in range(0, len(xt), 256)]).argmax(-1)
  return float(np.mean(pred == yt))


def validation_task(task: Task, fraction: float = 0.7) -> Task:
  """The task with its training split cut in two: train on `fraction`, test on the rest
  (a fixed permutation, the same for every method)."""
  x, y = task.train
  order = np.random.default_rng(0).permutation(len(x))
  cut = int(fraction * len(x))
  fit, val = order[:cut], order[cut:]
  return replace(task, train=(x[fit], y[fit]), test=(x[val], y[val]))


def pick_lr(task: Task, grid: Sequence[float], accuracy: Callable[[Task, float], float],
            default: float | None = None) -> tuple[float, dict[float, float]]:
  """The learning rate of `grid` with the best validation accuracy (training on 70 % of
  the training split, scoring on the other 30 %); ties go to `default`, else the smallest."""
  val = validation_task(task)
  scores = {lr: accuracy(val, lr) for lr in grid}
  best = max(scores.values())
  tied = [lr for lr in sorted(grid) if scores[lr] == best]
  return (default if default in tied else tied[0]), scores


# --- reporting ------------------------------------------------------------------------------


def mean_std(values) -> str:
  v = 100 * np.asarray(values, float)
  return f"{v.mean():.1f} ± {v.std():.1f}"


def save(name: str, header: list[str], rows: dict[str, list[list[str]]], extra: dict) -> str:
  """Print a markdown table and save it with its raw numbers under benchmarks/results/.

  `rows` maps a task to its rows; tasks not run this time keep their earlier rows (and
  raw numbers), so one task can be re-run alone.
  """
  RESULTS.mkdir(exist_ok=True)
  path = RESULTS / f"{name}.json"
  old = json.loads(path.read_text()) if path.exists() else {}
  tasks = {**old.get("tasks", {}), **rows}
  raw = {**old.get("raw", {}), **extra.pop("raw", {})}
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(r) + " |" for task_rows in tasks.values() for r in task_rows]
  table = "\n".join(lines)
  meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.platform(),
          "jax": jax.__version__, **extra}
  (RESULTS / f"{name}.md").write_text(table + "\n")
  path.write_text(json.dumps({"tasks": tasks, "raw": raw, **meta}, indent=1))
  print(table)
  return table
