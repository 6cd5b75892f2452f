"""Seeded random small models (tests/random_models.py) through the whole pipeline: quantize
-> int8 output close to the float model -> a seed-drawn sparse update trained in
simulation -> lower -> save -> load -> executor steps (inference bit-exact, losses equal).
benchmarks/random_models.py runs the same check on thousands of seeds."""

import jax
import pytest
from random_models import (
  ERROR_BOUND,
  MAX_PARAMS,
  describe,
  int8_error,
  model_tags,
  parameter_count,
  random_data,
  random_model,
  random_update,
  random_variables,
)

import jaxtiny as jt

from helpers import end_to_end

# ~6 s a seed on 2 cores, the C runtime beside the executor; benchmarks/random_models.py runs
# 1000. Seed 18 brings grouped convs and count_include_pad=False (the coverage test below).
SEEDS = (*range(11), 18)


def _kernels(variables) -> int:
  paths = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  return sum(1 for p, _ in paths if str(getattr(p[-1], "key", "")) == "kernel")


@pytest.mark.parametrize("seed", SEEDS)
def test_random_model_end_to_end(seed, tmp_path):
  module, shape, classes = random_model(seed)
  variables = random_variables(module, shape, seed)
  why = describe(module.spec, shape)
  assert parameter_count(variables) <= MAX_PARAMS, why
  x, y = random_data(shape, classes, seed)
  qm = jt.quantize(module, variables, x)
  assert len(qm.layers) == _kernels(variables), why  # a conv read twice is still one layer
  err = int8_error(qm, module, variables, x)
  assert err <= ERROR_BOUND, f"int8 vs float: {err:.3f} of the output range\n{why}"
  end_to_end(qm, qm.quantize_input(x), y, random_update(qm, seed), tmp_path=tmp_path,
             optimizer=jt.sgd(0.05))


def test_the_generator_covers_the_layers():
  """Over the CI seeds, every kind of op, block, layout and padding shows up (a generator
  change that drops one fails here, not silently)."""
  seen = set().union(*(model_tags(seed) for seed in SEEDS))
  want = {"2d", "1d", "flat", "conv", "dense", "add", "concat", "maxpool", "avgpool", "mean",
          "max", "flatten", "keepdims", "bn", "act:relu", "act:relu6", "act:none", "pad:SAME",
          "pad:VALID", "pad:explicit", "stride2", "non-square", "grouped", "depthwise",
          "count_include_pad:True", "count_include_pad:False", "block:residual",
          "block:branches", "block:shared", "block:pool"}
  assert want <= seen, sorted(want - seen)
