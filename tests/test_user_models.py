"""Models as Flax users write them, each through the whole pipeline: quantize -> train in
simulation -> lower -> save -> load -> executor steps (inference bit-exact, losses equal)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxtiny as jt

from helpers import end_to_end


class MnistCNN(nn.Module):
  """The Flax MNIST example's CNN, scaled to 8x8 digits."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3))(x))
    x = nn.avg_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Conv(16, (3, 3))(x))
    x = nn.avg_pool(x, (2, 2), (2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(32)(x))
    return nn.Dense(10)(x)


class ResBlock(nn.Module):
  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    y = nn.relu(nn.BatchNorm(use_running_average=True)(
      nn.Conv(self.features, (3, 3), self.strides, use_bias=False)(x)))
    y = nn.BatchNorm(use_running_average=True)(nn.Conv(self.features, (3, 3),
                                                       use_bias=False)(y))
    if x.shape != y.shape:
      x = nn.Conv(self.features, (1, 1), self.strides)(x)
    return nn.relu(x + y)


class SmallResNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3))(x))
    x = ResBlock(8)(x)
    x = ResBlock(16, strides=2)(x)
    return nn.Dense(4)(jnp.mean(x, axis=(1, 2)))


class Signal1D(nn.Module):
  """A 1-D CNN in the (N, L, C) layout: strides, padding, max and average pooling, a
  residual add."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (5,), strides=2, padding=((1, 2),))(x))
    y = nn.relu(nn.Conv(8, (3,))(x))
    x = nn.relu(x + nn.Conv(8, (3,))(y))
    x = nn.max_pool(x, (2,), (2,))
    x = nn.avg_pool(x, (3,), (1,), padding="SAME", count_include_pad=False)
    x = nn.Conv(12, (3,), padding="VALID")(x)
    return nn.Dense(4)(x.mean(axis=1))


class InvertedResidual(nn.Module):
  """MobileNetV2's block: 1x1 expand, depthwise, linear 1x1 project, skip add."""

  features: int
  expand: int = 4

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    y = nn.relu6(nn.Conv(c * self.expand, (1, 1))(x))
    y = nn.relu6(nn.Conv(c * self.expand, (3, 3), feature_group_count=c * self.expand)(y))
    y = nn.Conv(self.features, (1, 1))(y)
    return x + y if c == self.features else y


class MobileNetLike(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu6(nn.Conv(8, (3, 3), strides=2)(x))
    x = InvertedResidual(8)(x)  # the project's output is read by the add only
    x = InvertedResidual(8)(x)  # its input (the previous add) has two readers
    x = InvertedResidual(12)(x)
    x = InvertedResidual(12)(x)  # the linear project output of the block before: two readers
    return nn.Dense(4)(x.mean(axis=(1, 2)))


class Inception(nn.Module):
  """Concatenated branches, one of them a max pool; a conv read by two branches."""

  @nn.compact
  def __call__(self, x):
    stem = nn.relu(nn.Conv(8, (3, 3))(x))
    a = nn.relu(nn.Conv(4, (1, 1))(stem))
    b = nn.relu(nn.Conv(6, (3, 3))(nn.relu(nn.Conv(4, (1, 1))(stem))))
    c = nn.relu(nn.Conv(4, (1, 1))(nn.max_pool(stem, (3, 3), (1, 1), padding="SAME")))
    x = jnp.concatenate([a, b, c], axis=-1)
    x = nn.max_pool(x, (2, 2), (2, 2))
    return nn.Dense(4)(x.reshape((x.shape[0], -1)))


class SharedConv(nn.Module):
  """The issue's repro: one conv output read by a conv and by an add."""

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(8, (1, 1))(x)
    z = nn.Conv(8, (1, 1))(y)
    return nn.Dense(3)((y + z).reshape((x.shape[0], -1)))


class FlatMLP(nn.Module):
  """A dense layer on the flattened model input (a sensor window)."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(16)(x.reshape((x.shape[0], -1))))
    return nn.Dense(3)(x)


def _setup(module, shape, classes, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(48, *shape)).astype(np.float32)
  v = module.init(jax.random.key(seed), x[:1])
  qm = jt.quantize(module, v, x)
  return qm, v, qm.quantize_input(x), rng.integers(0, classes, len(x)).astype(np.int32)


def _kernels(variables) -> int:
  """conv/dense layers of a Flax model: its parameters named kernel."""
  paths = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  return sum(1 for p, _ in paths if str(getattr(p[-1], "key", "")) == "kernel")


CASES = {
  "mnist_cnn": (MnistCNN(), (8, 8, 1), 10, jt.SparseUpdate.last_layers(3)),
  "resnet": (SmallResNet(), (8, 8, 2), 4,
             jt.SparseUpdate(bias_last=3, weights={3: 0.5, 4: 1.0})),
  "conv1d": (Signal1D(), (40, 6), 4, jt.SparseUpdate.last_layers(4)),
  "inverted_residuals": (MobileNetLike(), (16, 16, 3), 4,
                         jt.SparseUpdate(bias_last=6, weights={9: 0.5, 10: 1.0, 12: 0.25})),
  "inception": (Inception(), (8, 8, 2), 4, jt.SparseUpdate.last_layers(5)),
  "shared_conv": (SharedConv(), (4, 4, 2), 3, jt.SparseUpdate.last_layers(2)),
  "flat_mlp": (FlatMLP(), (4, 5, 3), 3, jt.SparseUpdate.last_layers(1)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_model_end_to_end(case, tmp_path):
  module, shape, classes, update = CASES[case]
  qm, variables, x8, y = _setup(module, shape, classes)
  assert len(qm.layers) == _kernels(variables), [n.name for n in qm.layers]
  end_to_end(qm, x8, y, update, tmp_path=tmp_path, optimizer=jt.sgd(0.05))


@pytest.mark.parametrize("module", [SharedConv(), MobileNetLike()], ids=["repro", "mbv2_skip"])
def test_a_layer_read_twice_is_one_layer_that_trains_once(module):
  qm, variables, x8, y = _setup(module, (16, 16, 3) if isinstance(module, MobileNetLike)
                                else (4, 4, 2), 4 if isinstance(module, MobileNetLike) else 3)
  names = [n.name for n in qm.layers]
  assert len(names) == _kernels(variables) and not any(n.endswith("_1") and n[:-2] in names
                                                       for n in names), names
  # The float graph computes what the Flax model computes (one copy, read twice).
  x = qm.input_qparams.dequantize(x8[:8])
  ref = module.apply(variables, x)
  got = qm.dequantize_output(qm.apply(x8[:8]))
  assert np.abs(np.asarray(got) - np.asarray(ref)).max() < 0.25 * np.abs(ref).max()
  trainer = jt.tiny_train(qm, update=jt.SparseUpdate(weights={0: 1.0}),
                          optimizer=jt.sgd(0.5))(jt.softmax_cross_entropy)
  state = trainer.init()
  for i in range(4):
    state, _ = trainer.step(state, x8[i:i + 1], y[i:i + 1])
  trained = trainer.model(state)
  changed = [k for k in qm.params
             if not np.array_equal(qm.params[k]["weight"], trained.params[k]["weight"])]
  assert sorted(changed) == sorted([qm.layer(0).name, qm.classifier.name])  # it always trains


def _one_hot(y, n):
  return jax.nn.one_hot(y, n)


def _focal(logits, y, gamma=2.0):
  logp = jax.nn.log_softmax(logits)
  p = jnp.exp(logp)
  return -(_one_hot(y, logits.shape[-1]) * (1 - p) ** gamma * logp).sum(-1).mean()


LOSSES = {
  "optax_integer_labels": lambda z, y: optax.softmax_cross_entropy_with_integer_labels(
    z, y).mean(),
  "optax_one_hot_smoothed": lambda z, y: optax.softmax_cross_entropy(
    z, optax.smooth_labels(_one_hot(y, z.shape[-1]), 0.1)).mean(),
  "optax_sigmoid_bce": lambda z, y: optax.sigmoid_binary_cross_entropy(
    z, _one_hot(y, z.shape[-1])).mean(),
  "optax_squared_error": lambda z, y: optax.squared_error(z, _one_hot(y, z.shape[-1])).mean(),
  "jt_softmax_cross_entropy": jt.softmax_cross_entropy,
  "focal": _focal,
  "sum_not_mean": lambda z, y: optax.softmax_cross_entropy_with_integer_labels(z, y).sum(),
  "logsumexp_clipped": lambda z, y: (jax.nn.logsumexp(jnp.clip(z, -4.0, 4.0), -1)
                                     - jnp.take_along_axis(z, y[:, None], -1)[:, 0]).mean(),
  "cubed_hinge": lambda z, y: jnp.maximum(
    0.0, 1.0 - (2 * _one_hot(y, z.shape[-1]) - 1) * jnp.tanh(z)).__pow__(3).mean(),
  "l1_log1p": lambda z, y: jnp.log1p(jnp.abs(jax.nn.sigmoid(z) - _one_hot(
    y, z.shape[-1]))).sum() + jnp.expm1(jnp.sign(z) * 0.0).sum(),
}


@pytest.fixture(scope="module")
def small():
  return _setup(SmallResNet(), (8, 8, 2), 4)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_losses_users_write_lower(small, loss):
  qm, _, x8, y = small
  end_to_end(qm, x8, y, jt.SparseUpdate(bias_last=2, weights={4: 0.5}), loss_fn=LOSSES[loss])


@pytest.mark.parametrize("loss, match", [
  (lambda logits, labels: jnp.zeros(()) * labels.sum(), "does not depend on the logits"),
  (lambda logits, labels: optax.softmax_cross_entropy_with_integer_labels(logits, labels),
   r"one float scalar .*float32\[1\]"),
  (lambda logits, labels: (logits @ jnp.ones((99,))).sum(), "failed with TypeError"),
], ids=["ignores_logits", "not_reduced", "raises"])
def test_a_loss_that_cannot_train_is_refused(small, loss, match):
  with pytest.raises(jt.InputError, match=match):
    jt.tiny_train(small[0])(loss)
