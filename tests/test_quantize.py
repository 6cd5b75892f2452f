"""The Flax front end: the float graph equals the model; int8 follows it closely."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtiny as jt
from jaxtiny.quantize import float_forward, fuse_clamps
from jaxtiny.trace import trace_float_graph


class Mixed(nn.Module):
  """Every layer kind the front end reads, with BatchNorm in inference mode."""

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(8, (3, 3), strides=2)(x)
    x = nn.relu6(nn.BatchNorm(use_running_average=True)(x))
    y = nn.Conv(8, (3, 3), feature_group_count=8, padding="SAME")(x)
    x = nn.relu(y) + x
    x = nn.avg_pool(x, (2, 2), (2, 2))
    x = nn.max_pool(x, (2, 2), (1, 1), padding="SAME")
    x = jnp.concatenate([x, nn.Conv(4, (1, 1))(x)], -1)
    x = nn.avg_pool(x, (3, 3), padding="SAME", count_include_pad=False)
    x = nn.Dense(6)(x)  # dense over channels: a 1x1 convolution
    x = x.mean(axis=(1, 2))
    return nn.Dense(5)(x)


class Signal1D(nn.Module):
  """A 1-D CNN for sensor data: (N, L, C)."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (5,), strides=2, padding="SAME")(x))
    x = nn.relu(nn.Conv(8, (3,), feature_group_count=8)(x))
    x = nn.max_pool(x, (2,), (2,))
    x = x.reshape((x.shape[0], -1))
    return nn.Dense(4)(x)


def _perturbed(model, shape, seed=0):
  v = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, *shape)))
  # Non-trivial BatchNorm statistics so the fold is really exercised.
  leaves, tree = jax.tree_util.tree_flatten(v)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  leaves = [a + 0.2 * jnp.abs(jax.random.normal(k, a.shape)) for a, k in zip(leaves, keys)]
  return jax.tree_util.tree_unflatten(tree, leaves)


@pytest.mark.parametrize("model,shape", [(Mixed(), (16, 16, 3)), (Signal1D(), (32, 3))])
def test_float_graph_equals_flax(model, shape):
  v = _perturbed(model, shape)
  x = np.random.default_rng(0).normal(size=(8, *shape)).astype(np.float32)
  b, i, o = trace_float_graph(lambda x: model.apply(v, x), x[:2])
  nodes = fuse_clamps(b.nodes, o)
  assert not any(n.op == "clamp" for n in nodes)  # ReLU/ReLU6 fused into producers
  got = jax.jit(lambda x: float_forward(nodes, b.shapes, i, x)[o])(jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(got), np.asarray(model.apply(v, x)), atol=1e-4)


@pytest.mark.parametrize("model,shape", [(Mixed(), (16, 16, 3)), (Signal1D(), (32, 3))])
def test_int8_follows_float(model, shape):
  v = _perturbed(model, shape)
  x = np.random.default_rng(1).normal(size=(64, *shape)).astype(np.float32)
  qm = jt.quantize(model, v, x)
  ref = np.asarray(model.apply(v, x))
  y8 = qm.apply(qm.quantize_input(x))
  assert y8.dtype == jnp.int8 and y8.shape == ref.shape
  y = qm.dequantize_output(y8)
  # int8 error budget: a few output quantization steps on this random network.
  assert np.abs(y - ref).max() < 8 * qm.output_qparams.scale + 0.05 * np.abs(ref).max()
  assert np.mean(y.argmax(1) == ref.argmax(1)) > 0.85


def test_batch_independent_and_jit_consistent():
  model = Mixed()
  v = _perturbed(model, (16, 16, 3))
  x = np.random.default_rng(2).normal(size=(6, 16, 16, 3)).astype(np.float32)
  qm = jt.quantize(model, v, x)
  x8 = qm.quantize_input(x)
  full = np.asarray(qm.apply(x8))
  one = np.concatenate([np.asarray(qm.apply(x8[i:i + 1])) for i in range(6)])
  np.testing.assert_array_equal(full, one)
  eager = np.asarray(qm.forward(qm.device_params(), jnp.asarray(x8, jnp.float32)))
  np.testing.assert_array_equal(full, eager.astype(np.int8))


def test_layer_indices_and_classifier():
  model = Mixed()
  v = _perturbed(model, (16, 16, 3))
  qm = jt.quantize(model, v, np.ones((2, 16, 16, 3), np.float32))
  assert [n.index for n in qm.layers] == [0, 1, 2, 3, None]
  assert qm.classifier.name == "Dense_1" and qm.layer(1).name == "Conv_1"
  with pytest.raises(IndexError, match="classifier"):
    qm.layer(4)
  s = qm.summary()
  assert "flash" in s and "Conv_1" in s and "cls" in s


def test_quantized_parameters_follow_the_contract():
  model = Mixed()
  v = _perturbed(model, (16, 16, 3))
  qm = jt.quantize(model, v, np.random.default_rng(0).normal(size=(8, 16, 16, 3)))
  for n in qm.layers:
    w, b = qm.params[n.name]["weight"], qm.params[n.name]["bias"]
    assert w.dtype == np.int8 and w.min() >= -127 and b.dtype == np.int32
    assert n.arrays["multiplier"].dtype == np.float32
    sx = qm.tensors[n.inputs[0]].qparams.scale
    sy = qm.tensors[n.output].qparams.scale
    expect = (sx * n.arrays["w_scale"].astype(np.float64) / sy).astype(np.float32)
    np.testing.assert_array_equal(n.arrays["multiplier"], expect)
  # ReLU6 after the first conv: the output range is [0, 6].
  first = qm.layers[0]
  assert qm.tensors[first.output].qparams.zero == -128


def test_nnx_module():
  from flax import nnx

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
      self.bn = nnx.BatchNorm(4, use_running_average=True, rngs=rngs)
      self.fc = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
      x = nnx.relu(self.bn(self.conv(x)))
      return self.fc(x.mean(axis=(1, 2)))

  net = Net(nnx.Rngs(0))
  x = np.random.default_rng(0).normal(size=(16, 6, 6, 1)).astype(np.float32)
  qm = jt.quantize(net, None, x)
  assert len(qm.layers) == 2
  y = qm.dequantize_output(qm.apply(qm.quantize_input(x)))
  ref = np.asarray(net(jnp.asarray(x)))
  assert np.abs(y - ref).max() < 8 * qm.output_qparams.scale


# --- clear errors -------------------------------------------------------------------------


class WithSigmoid(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.sigmoid(nn.Conv(4, (3, 3), name="gate")(x))
    return nn.Dense(2)(x.mean(axis=(1, 2)))


class WithDilation(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Conv(4, (3, 3), kernel_dilation=2, name="dilated")(x)
    return nn.Dense(2)(x.mean(axis=(1, 2)))


class InputScaling(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = x / 255.0
    return nn.Dense(2)(nn.Conv(4, (3, 3))(x).mean(axis=(1, 2)))


@pytest.mark.parametrize("model,match", [
  (WithSigmoid(), r"logistic has no int8 rule .*output of 'gate'.*test_quantize.py"),
  (WithDilation(), r"dilated.*in layer 'dilated'"),
  (InputScaling(), r"normalize inputs outside the model"),
])
def test_unsupported_layers_are_named(model, match):
  v = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  with pytest.raises(jt.UnsupportedError, match=match):
    jt.quantize(model, v, np.zeros((4, 8, 8, 1), np.float32))


def test_bad_inputs():
  model = Mixed()
  v = _perturbed(model, (16, 16, 3))
  with pytest.raises(jt.InputError, match="floating point"):
    jt.quantize(model, v, np.zeros((4, 16, 16, 3), np.int32))
  with pytest.raises(jt.InputError, match="NaN"):
    jt.quantize(model, v, np.full((4, 16, 16, 3), np.nan, np.float32))
  qm = jt.quantize(model, v, np.ones((4, 16, 16, 3), np.float32))
  x = np.zeros((2, 16, 16, 3), np.float32)
  with pytest.raises(jt.InputError, match="int8"):
    qm.apply(x)
  with pytest.raises(jt.InputError, match=r"expected a batch of shape \(N, 16, 16, 3\)"):
    qm.apply(np.zeros((2, 16, 16, 1), np.int8))
  with pytest.raises(jt.InputError, match="expected a batch"):
    qm.apply(np.zeros((16, 16, 3), np.int8))
  with pytest.raises(jt.InputError, match="NaN"):
    qm.quantize_input(np.full((1, 16, 16, 3), np.inf, np.float32))
  with pytest.raises(jt.InputError, match="floating-point"):
    qm.quantize_input(np.zeros((2, 16, 16, 3), np.int8))
