"""Corner cases of real models and of a user's calls: each is supported with the same answer
in the simulation and the executor, or refused at once with an error that names the
problem, the layer and the source line."""

import re
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxtiny as jt
from jaxtiny.numerics import BIAS_LIMIT, INT32_MAX, QuantizationWarning, quantize_bias
from lowering import report

from helpers import end_to_end


def _calib(shape, n=32, seed=0):
  return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def _labels(n, classes, seed=1):
  return np.random.default_rng(seed).integers(0, classes, n).astype(np.int32)


# --- a bias that would overflow int32 -----------------------------------------------------


class TinyGamma(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.BatchNorm(use_running_average=True)(nn.Conv(4, (3, 3))(x))
    return nn.Dense(2)(x.mean(axis=(1, 2)))


def test_a_bias_too_large_for_its_weight_scale_fits():
  """BN gamma 1e-7 on channel 3 (beta 0.5): the folded weights are ~1e-7 of the others, so
  the plain weight scale would need a bias beyond int32."""
  m = TinyGamma()
  x = _calib((8, 8, 3))
  v = m.init(jax.random.key(0), x[:1])
  v = jax.tree_util.tree_map(np.array, v)  # writable copies
  v["params"]["BatchNorm_0"]["scale"][3] = 1e-7
  v["params"]["BatchNorm_0"]["bias"][3] = 0.5
  with warnings.catch_warnings():
    warnings.simplefilter("error", QuantizationWarning)
    qm = jt.quantize(m, v, x)
  b = qm.params["Conv_0"]["bias"]
  # About half the int32 range (the float32 scale rounds), leaving room for training.
  assert np.abs(b.astype(np.int64)).max() <= 1.001 * BIAS_LIMIT
  ref = np.asarray(m.apply(v, x))
  got = qm.dequantize_output(qm.apply(qm.quantize_input(x)))
  # The usual int8 error of this model (a few output steps), not the 0.42 of a clipped bias.
  assert np.abs(got - ref).max() < 4 * qm.output_qparams.scale


def test_a_bias_that_still_saturates_is_named():
  with pytest.warns(QuantizationWarning, match=r"layer 'conv7'.*channel\(s\) \[1\]"):
    q = quantize_bias(np.array([0.1, 1e9], np.float32), 1e-3, np.array([1.0, 1e-3], np.float32),
                      "conv7")
  assert q[1] == INT32_MAX


# --- dense layers on the flattened model input ---------------------------------------------


class FlatDense(nn.Module):
  hidden: bool

  @nn.compact
  def __call__(self, x):
    x = x.reshape((x.shape[0], -1))
    if self.hidden:
      x = nn.relu(nn.Dense(8)(x))
    return nn.Dense(3)(x)


@pytest.mark.parametrize("hidden", [False, True], ids=["dense", "mlp"])
def test_dense_on_the_flattened_input(hidden, tmp_path):
  m = FlatDense(hidden)
  x = _calib((4, 5, 3))
  qm = jt.quantize(m, m.init(jax.random.key(0), x[:1]), x)
  update = jt.SparseUpdate.last_layers(1) if hidden else jt.SparseUpdate()
  end_to_end(qm, qm.quantize_input(x), _labels(32, 3), update, tmp_path=tmp_path)


# --- padding, clamps and means --------------------------------------------------------------


class Cropping(nn.Module):
  kind: str

  @nn.compact
  def __call__(self, x):
    if self.kind == "conv":
      x = nn.Conv(4, (3, 3), padding=((-1, 0), (0, 0)))(x)
    elif self.kind == "avg":
      x = nn.avg_pool(nn.Conv(4, (1, 1))(x), (2, 2), padding=((-1, 0), (0, 0)))
    elif self.kind == "max":
      x = nn.max_pool(nn.Conv(4, (1, 1))(x), (2, 2), padding=((0, 0), (0, -1)))
    else:
      x = nn.max_pool(nn.Conv(4, (1, 1))(x), (2, 2), padding=((2, 2), (0, 0)))
    return nn.Dense(2)(x.reshape((x.shape[0], -1)))


@pytest.mark.parametrize("kind, match", [
  ("conv", "convolution with negative .cropping. padding"),
  ("avg", "pooling with negative .cropping. padding"),
  ("max", "pooling with negative .cropping. padding"),
  ("window", "padding .* as large as its window"),
])
def test_cropping_padding_is_refused_at_quantize(kind, match):
  m = Cropping(kind)
  x = _calib((8, 8, 2))
  v = m.init(jax.random.key(0), x[:1])
  with pytest.raises(jt.UnsupportedError, match=match + r".*test_edge_cases.py:\d+"):
    jt.quantize(m, v, x)


class ImpossibleClamp(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = jnp.minimum(nn.relu(nn.Conv(4, (3, 3))(x)), -0.5)
    return nn.Dense(2)(x.mean(axis=(1, 2)))


def test_an_impossible_clamp_is_refused():
  m = ImpossibleClamp()
  x = _calib((6, 6, 1))
  with pytest.raises(jt.UnsupportedError,
                     match=r"clamping to \[0, -0.5\] leaves no value.*test_edge_cases.py"):
    jt.quantize(m, m.init(jax.random.key(0), x[:1]), x)


class KeepdimsMean(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(6, (3, 3))(x))
    x = x.mean(axis=(1, 2), keepdims=True)  # (N, 1, 1, C)
    x = nn.Conv(4, (1, 1))(x)
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def test_a_mean_with_keepdims_is_a_global_pool(tmp_path):
  m = KeepdimsMean()
  x = _calib((6, 6, 2))
  v = m.init(jax.random.key(0), x[:1])
  qm = jt.quantize(m, v, x)
  assert [n.op for n in qm.nodes].count("avgpool") == 1
  y = qm.dequantize_output(qm.apply(qm.quantize_input(x)))
  assert np.abs(y - np.asarray(m.apply(v, x))).max() < 4 * qm.output_qparams.scale
  end_to_end(qm, qm.quantize_input(x), _labels(32, 3), jt.SparseUpdate.last_layers(2),
             tmp_path=tmp_path)


# --- errors a newcomer meets ----------------------------------------------------------------


class Unsupported(nn.Module):
  kind: str

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(8, (3, 3))(x)
    if self.kind == "leaky":
      x = nn.leaky_relu(x)
    elif self.kind == "repeat":
      x = jnp.repeat(nn.relu(x), 2, axis=1)
    elif self.kind == "resize":
      x = jax.image.resize(nn.relu(x), (x.shape[0], 16, 16, 8), "nearest")
    x = x.reshape((x.shape[0], -1))
    x = nn.Dense(4)(x)
    return nn.softmax(x) if self.kind == "softmax" else x


@pytest.mark.parametrize("kind, match", [
  ("leaky", r"ge has no int8 rule \(inside jax's 'leaky_relu', applied to the output of "
            r"'Conv_0', at .*test_edge_cases.py:\d+"),
  ("repeat", r"\(N, 8, 8, 8\).*upsampling, jnp.repeat .*clamp \(ReLU\) of 'Conv_0'.*"
             r"test_edge_cases.py:\d+"),
  ("resize", r"gather has no int8 rule \(inside jax's '_resize'.*test_edge_cases.py:\d+"),
  ("softmax", r"\(N, 4\): a softmax .*leave the softmax to the loss.*'Dense_0'"),
])
def test_unsupported_operations_are_named_where_they_are(kind, match):
  m = Unsupported(kind)
  x = _calib((8, 8, 1), 4)
  with pytest.raises(jt.UnsupportedError, match=match) as e:
    jt.quantize(m, m.init(jax.random.key(0), x[:1]), x)
  assert "(2," not in str(e.value), "the trace's internal batch of 2 leaked into the message"


def test_calibration_data_without_a_batch_axis():
  m = Unsupported("none")
  x = _calib((8, 8, 1), 4)
  v = m.init(jax.random.key(0), x[:1])
  with pytest.raises(jt.InputError, match=r"(?s)each of shape \(8, 1\).*x\[None\]"):
    jt.quantize(m, v, x[0])


@pytest.fixture(scope="module")
def small():
  m = Unsupported("none")
  x = _calib((8, 8, 1), 16)
  return jt.quantize(m, m.init(jax.random.key(0), x[:1]), x), x


@pytest.mark.parametrize("make, match", [
  (lambda: jt.sgd(-0.01), "finite number > 0, got -0.01"),
  (lambda: jt.sgd(0.0), "> 0, got 0.0"),
  (lambda: jt.sgd(float("nan")), "finite"),
  (lambda: jt.adam(float("inf")), "finite"),
  (lambda: jt.sgd("0.1"), "must be a number, got str"),
  (lambda: jt.sgd(0.01, momentum=1.0), r"momentum must lie in \[0, 1\)"),
  (lambda: jt.cosine(0.1, 0), "steps > 0"),
  (lambda: jt.cosine(0.1, 10, final=-1.0), "final learning rate"),
  (lambda: jt.sgd(optax.cosine_decay_schedule(0.1, 10)), "an optax schedule"),
])
def test_bad_optimizer_arguments(make, match):
  with pytest.raises(jt.InputError, match=match):
    make()


def test_an_optax_optimizer_says_what_to_use(small):
  qm, _ = small
  with pytest.raises(jt.InputError, match=r"jt.sgd\(lr\).*jt.adam\(lr\).*GradientTransformation"
                     r"|jt.sgd\(lr\).*jt.adam\(lr\)"):
    jt.tiny_train(qm, optimizer=optax.sgd(0.01))(jt.softmax_cross_entropy)
  with pytest.raises(jt.InputError, match="rounding must be"):
    jt.tiny_train(qm, rounding="up")(jt.softmax_cross_entropy)


def test_labels_are_integers_as_step_takes_them(small):
  qm, x = small
  x8 = qm.quantize_input(x)
  prog = jt.tiny_train(qm)(jt.softmax_cross_entropy).lower()
  for good in (2, np.int64(3), np.array([1], np.int32), np.array(0)):
    assert np.isfinite(prog.train_step(x8[0], good))
  for bad, match in ((2.7, "integer scalar"), ("3", "integer scalar"),
                     (np.array([1, 2]), r"shape \(1,\)"), (True, "integer scalar"),
                     (4, r"\[0, 4\)"), (-1, r"\[0, 4\)")):
    with pytest.raises(jt.InputError, match=match):
      prog.train_step(x8[0], bad)


def test_defaults_are_stochastic_rounding_and_a_moderate_rate(small):
  qm, _ = small
  tr = jt.tiny_train(qm)(jt.softmax_cross_entropy)
  assert tr.rounding == "stochastic" and tr.optimizer == jt.sgd(0.01)


def test_report_plot_into_a_missing_folder(small, tmp_path, capsys):
  qm, _ = small
  blob = tmp_path / "m.jtb"
  jt.tiny_train(qm)(jt.softmax_cross_entropy).lower().save(blob)
  assert report.main([str(blob), "--plot", str(tmp_path / "nope" / "mem.png")]) == 2
  assert re.search(r"folder .*nope does not exist", capsys.readouterr().err)
  assert report.main([str(tmp_path / "missing.jtb")]) == 2
  assert "missing.jtb does not exist" in capsys.readouterr().err


def test_constants_take_a_device_dtype_when_their_values_fit():
  from lowering.ir import device_dtype

  assert device_dtype(np.asarray(3)) == "i32"  # a Python int literal arrives as int64
  assert device_dtype(np.float64(0.5)) == "f32"
  assert device_dtype(np.array([True])) == "bool"
  with pytest.raises(TypeError, match="does not fit the device's int32"):
    device_dtype(np.int64(2**40))
  with pytest.raises(TypeError, match="overflows the device's float32"):
    device_dtype(np.float64(1e300))


def test_errors_point_past_installed_libraries():
  """A virtualenv's flax is not the user's code (JAX's own summary took it for it)."""
  import os
  from types import SimpleNamespace as NS

  from jaxtiny.errors import source_line

  lib = os.path.join(os.sep, "home", "u", "venv", "lib", "python3.11", "site-packages")
  frames = [NS(file_name=os.path.join(lib, "jax", "_src", "core.py"), line_num=1,
               function_name="bind"),
            NS(file_name=os.path.join(lib, "flax", "linen", "linear.py"), line_num=700,
               function_name="_Conv.__call__"),
            NS(file_name="/home/u/model.py", line_num=12, function_name="Net.__call__")]
  assert source_line(NS(traceback=NS(frames=frames))) == "/home/u/model.py:12 (Net.__call__)"
  assert source_line(NS(traceback=NS(frames=frames[:2]))) == ""
