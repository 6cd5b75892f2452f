"""Scheme search: contribution analysis, then an evolutionary search under a memory budget.

The paper's method (its code was never released): measure the accuracy gain of
(a) updating the biases of the last k layers and (b) updating layer i's weights at a
channel ratio r, each on top of training the classifier alone; assume the gains add up,
and search for the scheme with the largest summed gain whose memory cost
(`update_cost(...).total`) fits the budget.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxtiny.errors import InputError
from jaxtiny.optim import Optimizer, sgd
from jaxtiny.qmodel import QModel
from jaxtiny.sparse import RATIOS, SparseUpdate, update_cost
from jaxtiny.train import DEFAULT_LR, DEFAULT_ROUNDING, LossFn, softmax_cross_entropy, tiny_train

Data = tuple[np.ndarray, np.ndarray]


def _progress(total: int, desc: str, enabled: bool):
  if not enabled:
    return None
  from tqdm import tqdm

  return tqdm(total=total, desc=desc)


def split_before(qm: QModel, earliest: int) -> tuple[QModel | None, QModel]:
  """Split at the latest layer <= earliest where no residual crosses (None: no split)."""
  for i in range(earliest, -1, -1):
    try:
      return qm.split(i)
    except (ValueError, IndexError):
      continue
  return None, qm


def prefix_outputs(prefix: QModel | None, x: np.ndarray, batch: int = 256) -> np.ndarray:
  """The int8 outputs of a model prefix on a dataset, in batches (None: x itself)."""
  if prefix is None:
    return x
  return np.concatenate([np.asarray(prefix.apply(x[i:i + batch]))
                         for i in range(0, len(x), batch)])


def train_and_evaluate(qm: QModel, update: SparseUpdate, train: Data, val: Data, *,
                       optimizer: Optimizer | None = None,
                       loss_fn: LossFn = softmax_cross_entropy, epochs: int = 3,
                       batch_size: int = 1, seed: int = 0,
                       rounding: str = DEFAULT_ROUNDING, qas: bool = True) -> float:
  """Validation accuracy after training `update` for `epochs` on `train` (int8 inputs);
  optimizer None: `tiny_train`'s default."""
  trainer = tiny_train(qm, optimizer=optimizer, update=update, qas=qas, rounding=rounding,
                       seed=seed)(loss_fn)
  state = trainer.init()
  x, y = train
  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    order = rng.permutation(len(x))
    for i in range(0, len(x) - batch_size + 1, batch_size):
      idx = order[i:i + batch_size]
      state, _ = trainer.step(state, x[idx], y[idx])
  xv, yv = val
  correct = 0
  for i in range(0, len(xv), 256):
    logits = np.asarray(trainer.logits(state, xv[i:i + 256]))
    correct += int(np.sum(logits.argmax(-1) == yv[i:i + 256]))
  return correct / len(xv)


@dataclass
class Contributions:
  """Accuracy gains over training the classifier alone."""

  baseline: float
  bias: dict[int, float]  # k -> gain of bias_last=k
  weights: dict[tuple[int, float], float]  # (layer, ratio) -> gain

  def to_json(self) -> dict:
    return {"baseline": self.baseline, "bias": {str(k): v for k, v in self.bias.items()},
            "weights": [[i, r, g] for (i, r), g in self.weights.items()]}

  @classmethod
  def from_json(cls, d: dict) -> Contributions:
    return cls(d["baseline"], {int(k): v for k, v in d["bias"].items()},
               {(int(i), float(r)): g for i, r, g in d["weights"]})


def _fingerprint(qm: QModel, train: Data, val: Data, settings: dict) -> str:
  h = hashlib.sha256()
  for k in sorted(qm.params):
    h.update(k.encode())
    h.update(qm.params[k]["weight"].tobytes())
    h.update(qm.params[k]["bias"].tobytes())
  for a in (*train, *val):
    h.update(np.ascontiguousarray(a).tobytes())
  h.update(json.dumps(settings, sort_keys=True).encode())
  return h.hexdigest()[:16]


def contribution_analysis(qm: QModel, train: Data, val: Data, *, layers: Sequence[int],
                          bias_grid: Sequence[int], ratios: Sequence[float] = RATIOS,
                          optimizer: Optimizer, epochs: int = 3, batch_size: int = 1,
                          seed: int = 0, cache: str | Path | None = None,
                          progress: bool = True) -> Contributions:
  """Gains of bias-only updates of the last k layers (k in bias_grid) and of each layer's
  weights at each ratio, measured by training on `train` and evaluating on `val`.

  Training runs on cached outputs of the frozen prefix (exactly equivalent, much faster).
  Results are cached in the JSON file `cache`, keyed by model, data and settings.
  """
  settings = {"layers": list(layers), "bias_grid": list(bias_grid), "ratios": list(ratios),
              "optimizer": optimizer.name, "lr": float(optimizer.lr(0)), "epochs": epochs,
              "batch_size": batch_size, "seed": seed}
  key = _fingerprint(qm, train, val, settings)
  store: dict = {}
  if cache is not None and Path(cache).exists():
    store = json.loads(Path(cache).read_text())
    if key in store:
      return Contributions.from_json(store[key])
  earliest = min([*layers, *(qm.num_layers - k for k in bias_grid if k > 0)],
                 default=qm.num_layers)
  prefix, suffix = split_before(qm, earliest)

  tr = (prefix_outputs(prefix, train[0]), train[1])
  va = (prefix_outputs(prefix, val[0]), val[1])
  runs = [SparseUpdate()] + [SparseUpdate(bias_last=k) for k in bias_grid if k > 0] + [
    SparseUpdate(weights={i: r}) for i in layers for r in ratios]
  bar = _progress(len(runs), "contribution analysis", progress)
  acc: dict[SparseUpdate, float] = {}
  for u in runs:
    acc[u] = train_and_evaluate(suffix, u, tr, va, optimizer=optimizer, epochs=epochs,
                                batch_size=batch_size, seed=seed)
    if bar is not None:
      bar.update(1)
      bar.set_postfix_str(f"{u.describe()}: {acc[u]:.3f}")
  if bar is not None:
    bar.close()
  base = acc[runs[0]]
  result = Contributions(
    base, {0: 0.0, **{k: acc[SparseUpdate(bias_last=k)] - base for k in bias_grid if k > 0}},
    {(i, r): acc[SparseUpdate(weights={i: r})] - base for i in layers for r in ratios})
  if cache is not None:
    store[key] = result.to_json()
    Path(cache).write_text(json.dumps(store, indent=1))
  return result


@dataclass
class SearchResult:
  update: SparseUpdate
  estimated_gain: float
  cost_bytes: int
  contributions: Contributions
  history: list[float] = field(default_factory=list)  # best fitness per generation


def _check_budget(qm: QModel, budget_bytes: int, optimizer: Optimizer | None) -> None:
  """The smallest scheme (the classifier alone) must fit, or no search can succeed."""
  least = update_cost(qm, SparseUpdate(), optimizer).total
  if least > budget_bytes:
    raise InputError(f"budget {budget_bytes:,} B is below the cost of training the classifier "
                     f"alone ({least:,} B): raise the budget to at least that")


def evolutionary_search(qm: QModel, contributions: Contributions, budget_bytes: int, *,
                        optimizer: Optimizer | None = None, population: int = 64,
                        generations: int = 40, mutation: float = 0.15, seed: int = 0,
                        progress: bool = True) -> SearchResult:
  """Maximize the summed gains of a scheme under `update_cost(...).total <= budget_bytes`."""
  rng = np.random.default_rng(seed)
  ks = sorted(contributions.bias)
  layers = sorted({i for i, _ in contributions.weights})
  ratios = sorted({r for _, r in contributions.weights})
  cost_cache: dict[tuple, int] = {}

  def scheme(genome: tuple) -> SparseUpdate:
    k = ks[genome[0]]
    w = {i: ratios[g - 1] for i, g in zip(layers, genome[1:]) if g > 0}
    return SparseUpdate(bias_last=k, weights=w)

  def cost(genome: tuple) -> int:
    if genome not in cost_cache:
      cost_cache[genome] = update_cost(qm, scheme(genome), optimizer).total
    return cost_cache[genome]

  def fitness(genome: tuple) -> float:
    if cost(genome) > budget_bytes:
      return -np.inf
    gain = contributions.bias[ks[genome[0]]]
    gain += sum(contributions.weights[(i, ratios[g - 1])] for i, g in zip(layers, genome[1:])
                if g > 0)
    return gain

  def random_genome() -> tuple:
    density = rng.uniform(0.0, 0.5)
    w = [int(rng.integers(1, len(ratios) + 1)) if rng.random() < density else 0
         for _ in layers]
    return (int(rng.integers(len(ks))), *w)

  smallest = (0,) + (0,) * len(layers)
  if cost(smallest) > budget_bytes:
    raise InputError(f"budget {budget_bytes:,} B is below the cost of the smallest scheme "
                     f"measured (bias_last={ks[0]}: {cost(smallest):,} B)")
  pop = [smallest] + [random_genome() for _ in range(population - 1)]
  history = []
  bar = _progress(generations, "evolutionary search", progress)
  for _ in range(generations):
    scored = sorted(pop, key=fitness, reverse=True)
    history.append(float(fitness(scored[0])))
    parents = scored[:max(2, population // 4)]
    children = list(parents)
    while len(children) < population:
      a, b = (parents[j] for j in rng.choice(len(parents), 2, replace=False))
      child = [x if rng.random() < 0.5 else y for x, y in zip(a, b)]
      for j in range(len(child)):
        if rng.random() < mutation:
          child[j] = int(rng.integers(len(ks) if j == 0 else len(ratios) + 1))
      children.append(tuple(child))
    pop = children
    if bar is not None:
      bar.update(1)
      bar.set_postfix_str(f"best gain {history[-1]:+.3f}")
  if bar is not None:
    bar.close()
  best = max(pop, key=fitness)
  return SearchResult(scheme(best), float(fitness(best)), cost(best), contributions, history)


def search_scheme(qm: QModel, train: Data, val: Data, budget_bytes: int, *,
                  optimizer: Optimizer | None = None, layers: Sequence[int] | None = None,
                  bias_grid: Sequence[int] | None = None, ratios: Sequence[float] = RATIOS,
                  epochs: int = 3, batch_size: int = 1, seed: int = 0,
                  cache: str | Path | None = None, population: int = 64,
                  generations: int = 40, progress: bool = True) -> SearchResult:
  """Find a sparse-update scheme for `qm` under a memory budget (bytes a step adds).

  train, val: (int8 inputs, integer labels). layers: the candidate layers for weight
  updates (default: the last 12); bias_grid: the k of bias_last to measure (default: 0,
  then steps of about an eighth of the network).
  """
  opt = optimizer if optimizer is not None else sgd(DEFAULT_LR)
  _check_budget(qm, budget_bytes, opt)  # before the costly measurements
  n = qm.num_layers
  if layers is None:
    layers = list(range(max(0, n - 12), n))
  if bias_grid is None:
    step = max(1, n // 8)
    bias_grid = sorted({0, *range(step, n + 1, step), n})
  contributions = contribution_analysis(
    qm, train, val, layers=layers, bias_grid=bias_grid, ratios=ratios, optimizer=opt,
    epochs=epochs, batch_size=batch_size, seed=seed, cache=cache, progress=progress)
  return evolutionary_search(qm, contributions, budget_bytes, optimizer=opt,
                             population=population, generations=generations, seed=seed,
                             progress=progress)
