"""Small Flax reference networks for the examples, tests and benchmarks."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def _conv_bn_relu6(x: jax.Array, features: int, kernel: tuple[int, ...], train: bool,
                   strides: int = 1, groups: int = 1) -> jax.Array:
  """Conv (no bias), BatchNorm, ReLU6: the unit all the reference networks are built of."""
  x = nn.Conv(features, kernel, strides=strides, feature_group_count=groups,
              use_bias=False)(x)
  return nn.relu6(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))


class DigitsCNN(nn.Module):
  """A MobileNet-style CNN for 8x8 images: conv, BatchNorm, ReLU6, depthwise, pooling."""

  num_classes: int = 10
  width: int = 16

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = _conv_bn_relu6(x, self.width, (3, 3), train)
    x = _conv_bn_relu6(x, self.width, (3, 3), train, strides=2, groups=self.width)
    x = _conv_bn_relu6(x, 2 * self.width, (1, 1), train)
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)


class MotionCNN(nn.Module):
  """A small 1-D CNN for multichannel sensor signals (N, L, C)."""

  num_classes: int = 4
  width: int = 16

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = _conv_bn_relu6(x, self.width, (5,), train, strides=2)
    x = _conv_bn_relu6(x, self.width, (5,), train, strides=2, groups=self.width)
    x = _conv_bn_relu6(x, 2 * self.width, (1,), train)
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
    x = _conv_bn_relu6(x, 16, (3, 3), train)
    for channels, stride in self.blocks:
      c = x.shape[-1]
      x = _conv_bn_relu6(x, c, (3, 3), train, strides=stride, groups=c)
      x = _conv_bn_relu6(x, channels, (1, 1), train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)
