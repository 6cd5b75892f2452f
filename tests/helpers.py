"""Shared by the training and lowering tests: a small Flax model, quantized on random
8x8x2 inputs, and a labelled int8 batch for it."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxtiny as jt


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


def quantize_8x8x2(module: nn.Module) -> jt.QModel:
  v = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 2)))
  x = np.random.default_rng(0).normal(size=(32, 8, 8, 2)).astype(np.float32)
  return jt.quantize(module, v, x)


def labelled_batch(qm: jt.QModel, n: int, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(1)
  x = rng.normal(size=(n, 8, 8, 2)).astype(np.float32)
  return qm.quantize_input(x), rng.integers(0, classes, n).astype(np.int32)
