"""Small Flax reference networks for the examples, tests and benchmarks."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class DigitsCNN(nn.Module):
  """A MobileNet-style CNN for 8x8 images: conv, BatchNorm, ReLU6, depthwise, pooling."""

  num_classes: int = 10
  width: int = 16

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    def bn(h):
      return nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)

    x = nn.relu6(bn(nn.Conv(self.width, (3, 3), use_bias=False)(x)))
    x = nn.relu6(bn(nn.Conv(self.width, (3, 3), strides=2, feature_group_count=self.width,
                            use_bias=False)(x)))
    x = nn.relu6(bn(nn.Conv(2 * self.width, (1, 1), use_bias=False)(x)))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)


class MotionCNN(nn.Module):
  """A small 1-D CNN for multichannel sensor signals (N, L, C)."""

  num_classes: int = 4
  width: int = 16

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    def bn(h):
      return nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)

    x = nn.relu6(bn(nn.Conv(self.width, (5,), strides=2, use_bias=False)(x)))
    x = nn.relu6(bn(nn.Conv(self.width, (5,), strides=2, feature_group_count=self.width,
                            use_bias=False)(x)))
    x = nn.relu6(bn(nn.Conv(2 * self.width, (1,), use_bias=False)(x)))
    x = jnp.mean(x, axis=1)
    return nn.Dense(self.num_classes)(x)


class DigitsMobileNet(nn.Module):
  """A deeper MobileNet-style CNN for 8x8 images: a 3x3 stem, then four depthwise-separable
  blocks (8x8 -> 4x4 -> 2x2, up to 128 channels). Most of its weights sit in the last
  layers, as in the ImageNet models, which is where sparse update pays off."""

  num_classes: int = 10
  blocks: tuple[tuple[int, int], ...] = ((32, 2), (64, 1), (96, 2), (128, 1))

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    def bn(h):
      return nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)

    x = nn.relu6(bn(nn.Conv(16, (3, 3), use_bias=False)(x)))
    for channels, stride in self.blocks:
      c = x.shape[-1]
      x = nn.relu6(bn(nn.Conv(c, (3, 3), strides=stride, feature_group_count=c,
                              use_bias=False)(x)))
      x = nn.relu6(bn(nn.Conv(channels, (1, 1), use_bias=False)(x)))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)
