"""Shared by the training and lowering tests: a small Flax model, quantized on random
8x8x2 inputs, and a labelled int8 batch for it."""

import os
import shutil
from functools import cache, partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtiny as jt

# Under CI a missing tool is a failure, not a skip (.ci/run installs them).
IN_CI = os.environ.get("JAXTINY_CI") == "1"


def need_tool(tool: str) -> str:
  """The path of a program the test needs; skip without it (fail under CI)."""
  path = shutil.which(tool)
  if path is None:
    if IN_CI:
      pytest.fail(f"{tool} is not installed (.ci/run should install it)")
    pytest.skip(f"{tool} is not installed")
  return path


class SmallNet(nn.Module):
  """Conv, depthwise, residual add, (optionally max pool,) average pool, dense: layers
  0-4 and a 4-class classifier."""

  max_pool: bool = False

  @nn.compact
  def __call__(self, x):
    x = nn.relu6(nn.Conv(8, (3, 3))(x))
    x = nn.relu6(nn.Conv(8, (3, 3), strides=2, feature_group_count=8)(x))
    y = nn.Conv(8, (1, 1))(nn.relu6(nn.Conv(8, (1, 1))(x)))
    x = nn.Conv(12, (1, 1))(nn.relu(y + x))
    if self.max_pool:
      x = nn.max_pool(x, (2, 2), (2, 2))
    return nn.Dense(4)(x.mean(axis=(1, 2)))


class BlockNet(nn.Module):
  """A stem and two inverted bottlenecks (expand 1x1, depthwise 3x3, project 1x1)."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu6(nn.Conv(8, (3, 3))(x))
    h = nn.relu6(nn.Conv(16, (3, 3), feature_group_count=16)(nn.relu6(nn.Conv(16, (1, 1))(x))))
    x = nn.Conv(8, (1, 1))(h) + x
    h = nn.relu6(nn.Conv(16, (1, 1))(x))
    h = nn.relu6(nn.Conv(16, (3, 3), strides=2, feature_group_count=16)(h))
    return nn.Dense(4)(nn.Conv(8, (1, 1))(h).mean(axis=(1, 2)))


def quantize_8x8x2(module: nn.Module) -> jt.QModel:
  v = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 2)))
  x = np.random.default_rng(0).normal(size=(32, 8, 8, 2)).astype(np.float32)
  return jt.quantize(module, v, x)


def labelled_batch(qm: jt.QModel, n: int, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(1)
  x = rng.normal(size=(n, 8, 8, 2)).astype(np.float32)
  return qm.quantize_input(x), rng.integers(0, classes, n).astype(np.int32)


# The reference executor sums float32 gradients in its own order (numpy) and XLA in
# another, so an update whose value sits within an ulp of a rounding boundary may round
# the other way. Allowed: at most this fraction of a step's trained elements, by one unit.
BOUNDARY_FRACTION = 0.01
# Executor loss vs simulation loss: float32 sums in another order. Relative to the loss or
# to 1, whichever is larger: a small cross-entropy is a difference of terms near 1 (log-sum-exp
# minus the label's logit), so its absolute error is an ulp of those terms (random-model
# seeds 245 and 864: 1.2e-7 absolute on a loss of 0.06-0.09).
LOSS_RTOL = 1e-6


def carry_state(prog, state) -> tuple[int, int]:
  """Check the executor's trained parameters against the simulation's (one unit at most,
  on few elements) and carry the simulation's over, so one boundary case does not compound.
  Returns (differing elements, trained elements)."""
  live = {prog.graph.tensors[t].name: v for t, v in prog.state_arrays().items()}
  differ = total = 0
  for group in ("weights", "biases"):
    for k, v in state[group].items():
      ref = live[f"{group}/{k}"]
      a = np.asarray(v).astype(ref.dtype)
      d = a.astype(np.int64) - ref
      assert np.abs(d).max() <= 1, f"{group}/{k} differs by more than one unit"
      differ += int(np.count_nonzero(d))
      total += d.size
      ref[...] = a
      assert np.array_equal(prog.state()[f"{group}/{k}"], a), "the state was not carried"
  return differ, total


def state_image(prog, rt) -> bytes:
  """The executor's state as the C runtime's state buffer (each state tensor at its
  location in the blob's state image)."""
  raw = bytearray(rt.state_len)
  for t, v in prog.state_arrays().items():
    at = rt.state_location(t)
    raw[at:at + v.nbytes] = v.tobytes()
  return bytes(raw)


def end_to_end(qm: jt.QModel, x8: np.ndarray, y: np.ndarray, update: jt.SparseUpdate,
               loss_fn=jt.softmax_cross_entropy, steps: int = 3, tmp_path=None, **train):
  """quantized model -> train in simulation -> lower -> save -> load -> executor steps:
  inference bit-exact with the simulation before and after, losses within LOSS_RTOL, trained
  parameters within the boundary allowance. The same blob on the C runtime beside the
  executor: every step's loss and state bit for bit (then both take the simulation's
  state). Returns the loaded program."""
  import lowering

  trainer = jt.tiny_train(qm, update=update, **train)(loss_fn)
  prog = trainer.lower()
  if tmp_path is not None:
    prog.save(tmp_path / "step.jtb")
    prog = lowering.load(tmp_path / "step.jtb")
  rt = prog.runtime()
  state = trainer.init()
  np.testing.assert_array_equal(prog.infer(x8[0]), np.asarray(qm.apply(x8[:1]))[0])
  np.testing.assert_array_equal(rt.infer(x8[0]), np.asarray(qm.apply(x8[:1]))[0])
  for i in range(steps):
    state, loss = trainer.step(state, x8[i:i + 1], y[i:i + 1])
    loss_ref = prog.train_step(x8[i], y[i:i + 1])
    loss_c = rt.train_step(x8[i], y[i:i + 1])
    assert np.float32(loss_c).tobytes() == np.float32(loss_ref).tobytes(), f"step {i}: C loss"
    assert rt.state_bytes() == state_image(prog, rt), f"step {i}: C state"
    assert np.isfinite(loss_ref)
    assert abs(loss_ref - float(loss)) <= LOSS_RTOL * max(abs(float(loss)), 1.0), (
      f"step {i}: executor loss {loss_ref} vs simulation {float(loss)}")
    differ, total = carry_state(prog, state)
    assert differ <= max(1, BOUNDARY_FRACTION * total)
    rt.set_state(state_image(prog, rt))
  trained = trainer.model(state)
  for i in range(min(len(x8), 4)):
    np.testing.assert_array_equal(prog.infer(x8[i]), np.asarray(trained.apply(x8[i:i + 1]))[0])
    np.testing.assert_array_equal(rt.infer(x8[i]), prog.infer(x8[i]))
  assert rt.guards_intact()
  return prog


class Tiny(nn.Module):
  """Every attribute encoding: strided and depthwise conv, an inverted bottleneck (1x1,
  depthwise, 1x1), concat, residual add, max and average pool, dense, and the loss's small
  ops (the golden disassembly's model, and with pool_stride=1 a fuzz seed)."""

  pool_stride: int = 2

  @nn.compact
  def __call__(self, x):
    x = nn.relu6(nn.Conv(4, (3, 3), strides=2)(x))
    y = nn.relu6(nn.Conv(8, (3, 3), feature_group_count=8)(nn.relu6(nn.Conv(8, (1, 1))(x))))
    x = jnp.concatenate([x, nn.Conv(4, (1, 1))(y)], axis=-1)
    x = nn.relu(nn.Conv(8, (1, 1))(x) + x)
    s = self.pool_stride
    x = nn.max_pool(x, (2, 2), (s, s))
    return nn.Dense(3)(x.mean(axis=(1, 2)))


FuzzBlock = partial(Tiny, pool_stride=1)


class FuzzMlp(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(nn.relu(nn.Dense(6)(x.reshape((x.shape[0], -1)))))


FUZZ_SEEDS = {  # name -> (module, update, optimizer, rounding)
  # the bottleneck's channel-by-channel backward updating expand rows; momentum, cosine
  "block-sparse": (FuzzBlock, jt.SparseUpdate(bias_last=5, weights={1: 0.5, 4: 0.5}),
                   jt.sgd(jt.cosine(0.3, 10, final=0.01), momentum=0.9), "stochastic"),
  # a frozen prefix (banded bottleneck), trained input channels of a 1x1 conv, Adam
  "block-adam": (FuzzBlock, jt.SparseUpdate(bias_last=2, weights={4: 0.5}), jt.adam(0.01),
                 "nearest"),
  # a depthwise channel subset, the block's backward op by op
  "block-dw": (FuzzBlock, jt.SparseUpdate(bias_last=3, weights={2: 0.5}, weights_last=2),
               jt.sgd(0.1), "nearest"),
  "mlp": (FuzzMlp, jt.SparseUpdate.last_layers(1), jt.sgd(0.1), "stochastic"),
}


@cache
def seed_blobs() -> dict[str, bytes]:
  """Small lowered steps covering every op family (the fuzzers' seeds), built once."""
  from lowering.blob import encode

  out = {}
  qms = {}
  for name, (module, update, optimizer, rounding) in FUZZ_SEEDS.items():
    if module not in qms:
      qms[module] = quantize_8x8x2(module())
    tr = jt.tiny_train(qms[module], optimizer=optimizer, update=update, rounding=rounding,
                       seed=5)(jt.softmax_cross_entropy)
    out[name] = encode(tr.lower())
  return out
