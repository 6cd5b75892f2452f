"""Scheme search: contribution analysis (cached) and the evolutionary search under a budget."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtiny as jt
from jaxtiny import search


class Net(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu6(nn.Conv(8, (3, 3), strides=2)(x))
    x = nn.relu6(nn.Conv(8, (3, 3), feature_group_count=8)(x))
    x = nn.relu6(nn.Conv(16, (1, 1))(x))
    x = nn.relu6(nn.Conv(16, (1, 1))(x))
    return nn.Dense(3)(x.mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def setup():
  m = Net()
  v = jax.jit(m.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(60, 8, 8, 1)).astype(np.float32)
  y = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype(np.int32) + (x[:, 4:].mean(
    axis=(1, 2, 3)) > 0).astype(np.int32)
  qm = jt.quantize(m, v, x).with_classifier(3)
  x8 = qm.quantize_input(x)
  return qm, (x8[:40], y[:40]), (x8[40:], y[40:])


def test_contributions_are_measured_and_cached(setup, tmp_path, monkeypatch):
  qm, train, val = setup
  cache = tmp_path / "analysis.json"
  kw = dict(layers=[2, 3], bias_grid=[0, 2], ratios=(0.5, 1.0), optimizer=jt.sgd(0.05),
            epochs=1, cache=cache, progress=False)
  calls = []
  real = search.train_and_evaluate
  monkeypatch.setattr(search, "train_and_evaluate",
                      lambda *a, **k: calls.append(a[1]) or real(*a, **k))
  c = search.contribution_analysis(qm, train, val, **kw)
  assert len(calls) == 1 + 1 + 4  # baseline, bias_last=2, 2 layers x 2 ratios
  assert set(c.weights) == {(2, 0.5), (2, 1.0), (3, 0.5), (3, 1.0)}
  assert set(c.bias) == {0, 2} and c.bias[0] == 0.0
  assert 0.0 <= c.baseline <= 1.0
  again = search.contribution_analysis(qm, train, val, **kw)
  assert len(calls) == 6  # served from the cache
  assert again.weights == c.weights and again.baseline == c.baseline


def test_evolutionary_search_respects_the_budget(setup):
  qm, _, _ = setup
  # Made-up gains: layer 3 helps most, layer 2 a little, biases some.
  contributions = search.Contributions(
    0.5, {0: 0.0, 2: 0.02, 4: 0.03},
    {(2, 0.5): 0.01, (2, 1.0): 0.015, (3, 0.5): 0.04, (3, 1.0): 0.06})
  cheapest = jt.update_cost(qm, jt.SparseUpdate()).total
  everything = jt.update_cost(qm, jt.SparseUpdate(bias_last=4, weights={2: 1.0, 3: 1.0})).total
  big = search.evolutionary_search(qm, contributions, everything, population=24,
                                   generations=15, progress=False)
  assert big.update.weights == {2: 1.0, 3: 1.0} and big.update.bias_last == 4
  assert big.estimated_gain == pytest.approx(0.105)
  budget = (cheapest + everything) // 2
  mid = search.evolutionary_search(qm, contributions, budget, population=24, generations=15,
                                   progress=False)
  assert mid.cost_bytes <= budget
  assert mid.cost_bytes == jt.update_cost(qm, mid.update).total
  assert mid.estimated_gain < big.estimated_gain
  assert mid.history == sorted(mid.history)  # elitism: the best never gets worse
  with pytest.raises(ValueError, match="below the cost"):
    search.evolutionary_search(qm, contributions, cheapest - 1, progress=False)


def test_search_scheme_end_to_end(setup):
  qm, train, val = setup
  budget = jt.update_cost(qm, jt.SparseUpdate.last_layers(2)).total
  result = jt.search_scheme(qm, train, val, budget, layers=[2, 3], bias_grid=[0, 2],
                            ratios=(0.5, 1.0), epochs=1, population=16, generations=5,
                            progress=False)
  assert result.cost_bytes <= budget
  assert isinstance(result.update, jt.SparseUpdate)
  trainer = jt.tiny_train(qm, update=result.update)(jt.softmax_cross_entropy)
  trainer.step(trainer.init(), train[0][:1], train[1][:1])


def test_update_cost_breakdown(setup):
  qm, _, _ = setup
  only_head = jt.update_cost(qm, jt.SparseUpdate())
  assert only_head.trainable_weights == 3 * 16 and only_head.trainable_biases == 4 * 3
  assert only_head.saved_activations == 16  # the classifier's input
  sparse = jt.update_cost(qm, jt.SparseUpdate(bias_last=1, weights={3: 0.25}))
  assert sparse.trainable_weights == 3 * 16 + 16 * 4  # 4 of 16 input channels
  assert sparse.saved_activations == 16 + 4 * 4 * 4  # layer 3 input: 4x4, 4 channels
  assert sparse.trainable_biases == 4 * (3 + 16)
  adam = jt.update_cost(qm, jt.SparseUpdate(bias_last=1, weights={3: 0.25}), jt.adam(1e-3))
  assert adam.optimizer_state == 8 * (3 * 16 + 16 * 4 + 3 + 16) + 4  # + the step counter
  assert "total" in sparse.table()
