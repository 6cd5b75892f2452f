"""tiny_train: device-faithful int8 updates, QAS, sparse update, optimizers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtiny as jt
from jaxtiny.autodiff import train_forward
from jaxtiny.optim import apply_bias, apply_weight, hash_uniform
from jaxtiny.qmodel import RUNNERS

from helpers import SmallNet, labelled_batch, quantize_8x8x2


@pytest.fixture(scope="module")
def qm():
  return quantize_8x8x2(SmallNet())


@pytest.fixture(scope="module")
def data(qm):
  return labelled_batch(qm, 16)


def test_layers_of_the_fixture(qm):
  assert [n.index for n in qm.layers] == [0, 1, 2, 3, 4, None]


def test_frozen_parameters_bit_identical(qm, data):
  x8, y = data
  update = jt.SparseUpdate(bias_last=1, weights={2: 0.5})
  tr = jt.tiny_train(qm, optimizer=jt.sgd(0.5), update=update)(jt.softmax_cross_entropy)
  state = tr.init()
  for i in range(6):
    state, _ = tr.step(state, x8[i:i + 2], y[i:i + 2])
  after = tr.model(state)
  for n in qm.layers:
    w0, w1 = qm.params[n.name]["weight"], after.params[n.name]["weight"]
    b0, b1 = qm.params[n.name]["bias"], after.params[n.name]["bias"]
    if n.index in (0, 1, 3):  # frozen layers
      np.testing.assert_array_equal(w0, w1)
      np.testing.assert_array_equal(b0, b1)
  # Layer 2: only the selected input channels moved; its bias is frozen (bias_last=1).
  n2 = qm.layer(2)
  plan = tr.plans[n2.name]
  assert len(plan.channels) == 4
  frozen = [c for c in range(8) if c not in plan.channels]
  np.testing.assert_array_equal(qm.params[n2.name]["weight"][..., frozen],
                                after.params[n2.name]["weight"][..., frozen])
  assert not np.array_equal(qm.params[n2.name]["weight"], after.params[n2.name]["weight"])
  np.testing.assert_array_equal(qm.params[n2.name]["bias"], after.params[n2.name]["bias"])
  assert not np.array_equal(qm.params[qm.layer(4).name]["bias"],
                            after.params[qm.layer(4).name]["bias"])


def test_trained_weights_stay_int8(qm, data):
  x8, y = data
  tr = jt.tiny_train(qm, optimizer=jt.sgd(50.0), update=jt.SparseUpdate.last_layers(2),
                     rounding="stochastic")(jt.softmax_cross_entropy)
  state = tr.init()
  for i in range(5):
    state, loss = tr.step(state, x8[i:i + 4], y[i:i + 4])
  for w in state["weights"].values():
    w = np.asarray(w)
    assert np.array_equal(w, np.rint(w)) and w.min() >= -127 and w.max() <= 127
  for b in state["biases"].values():
    assert np.asarray(b).dtype == np.int32
  assert any(np.abs(np.asarray(w)).max() == 127 for w in state["weights"].values())


def test_qas_scales_the_update_per_channel(qm, data):
  """One SGD step moves an int8 weight by lr * g / s_w**2 (QAS) or lr * g (no QAS)."""
  x8, y = data
  cls = qm.classifier
  for qas in (True, False):
    tr = jt.tiny_train(qm, optimizer=jt.sgd(0.01), qas=qas,
                       rounding="nearest")(jt.softmax_cross_entropy)
    state = tr.init()

    def loss_of(weights, handles, state=state, tr=tr):
      yq = train_forward(qm, tr.plans, weights, handles, state["biases"],
                         jnp.asarray(x8[:4], jnp.float32))
      qp = qm.output_qparams
      return jt.softmax_cross_entropy(qp.scale * (yq - qp.zero), y[:4])

    handles = {k: jnp.zeros(b.shape) for k, b in state["biases"].items()}
    g_w, g_b = jax.grad(loss_of, argnums=(0, 1))(state["weights"], handles)
    new, _ = tr.step(state, x8[:4], y[:4])
    s_w = cls.arrays["w_scale"].astype(np.float64)[:, None]
    s_b = qm.tensors[cls.inputs[0]].qparams.scale * s_w[:, 0]
    w0 = np.asarray(state["weights"][cls.name], np.float64)
    factor_w = 1 / s_w**2 if qas else 1.0
    factor_b = 1 / s_b**2 if qas else 1.0
    expect_w = np.clip(np.rint(w0 - 0.01 * np.asarray(g_w[cls.name]) * factor_w), -127, 127)
    got_w = np.asarray(new["weights"][cls.name])
    # fp32 vs float64 arithmetic may differ where w - delta sits at a rounding boundary.
    assert np.mean(got_w == expect_w) > 0.99
    expect_b = np.asarray(state["biases"][cls.name]) + np.rint(
      -0.01 * np.asarray(g_b[cls.name]) * factor_b)
    assert np.mean(np.asarray(new["biases"][cls.name]) == expect_b) > 0.99
    if not qas:  # without QAS the int8 step is far too small: nothing moves
      np.testing.assert_array_equal(got_w, w0)
    else:
      assert np.abs(got_w - w0).max() >= 1


def test_stochastic_rounding_is_unbiased():
  w = jnp.zeros((4096,), jnp.float32)
  delta = jnp.full((4096,), 0.3, jnp.float32)
  u = hash_uniform(7, jnp.int32(3), 2, w.shape)
  assert 0.0 <= float(u.min()) and float(u.max()) < 1.0
  moved = np.asarray(apply_weight(w, delta, u))
  assert set(np.unique(moved)) == {-1.0, 0.0}
  assert abs(moved.mean() + 0.3) < 0.03  # E[round(-0.3)] = -0.3
  assert float(apply_weight(w, delta, None)[0]) == 0.0  # nearest: lost
  b = jnp.full((4096,), 10, jnp.int32)
  mb = np.asarray(apply_bias(b, jnp.full((4096,), -2.25, jnp.float32), u))
  assert abs(mb.mean() - 12.25) < 0.03
  # Saturation instead of wrap-around at the int32 limits.
  top = apply_bias(jnp.array([2**31 - 10], jnp.int32), jnp.array([-1e9], jnp.float32), None)
  assert int(top[0]) == 2**31 - 1
  # The hash depends on seed, step and parameter.
  assert not np.array_equal(u, hash_uniform(8, jnp.int32(3), 2, w.shape))
  assert not np.array_equal(u, hash_uniform(7, jnp.int32(4), 2, w.shape))


def test_optimizer_state_only_for_trained_parameters(qm, data):
  x8, y = data
  update = jt.SparseUpdate(bias_last=1, weights={2: 0.25})
  for opt, slots in ((jt.sgd(0.1), 0), (jt.sgd(0.1, momentum=0.9), 1), (jt.adam(1e-3), 2)):
    tr = jt.tiny_train(qm, optimizer=opt, update=update)(jt.softmax_cross_entropy)
    state = tr.init()
    for kind in ("weights", "biases"):
      assert set(state["opt"][kind]) == set(state[kind])
      for k, s in state["opt"][kind].items():
        assert len(s) == slots
        for a in s.values():
          assert a.shape == state[kind][k].shape and a.dtype == jnp.float32
    assert set(state["weights"]) == {qm.layer(2).name, qm.classifier.name}
    assert state["weights"][qm.layer(2).name].shape == (8, 1, 1, 2)
    n_elems = sum(a.size for a in state["weights"].values()) + sum(
      a.size for a in state["biases"].values())
    assert tr.cost.optimizer_state == 4 * slots * n_elems + 4  # + the step counter
    state, loss = tr.step(state, x8[:2], y[:2])
    assert np.isfinite(float(loss))


def test_model_of_state_matches_the_simulation(qm, data):
  x8, y = data
  tr = jt.tiny_train(qm, optimizer=jt.adam(0.5), update=jt.SparseUpdate(
    bias_last=2, weights={1: 0.5, 3: 1.0}))(jt.softmax_cross_entropy)
  state = tr.init()
  for i in range(4):
    state, _ = tr.step(state, x8[i:i + 1], y[i:i + 1])
  logits = np.asarray(tr.logits(state, x8))
  qm2 = tr.model(state)
  np.testing.assert_array_equal(qm2.dequantize_output(qm2.apply(x8)), logits)


def _classifier_input(q, x8):
  env = {q.input_id: jnp.asarray(x8, jnp.float32)}
  for n in q.nodes[:-1]:
    env[n.output] = RUNNERS[n.op](n, [env[i] for i in n.inputs], q.device_params().get(n.name),
                                  q.tensors)
  t = q.classifier.inputs[0]
  return q.tensors[t].qparams.dequantize(np.asarray(env[t]))


def test_int8_head_tracks_fp32(qm, data):
  """A new int8 head trained with QAS and stochastic rounding follows fp32 SGD on the same
  features (logistic regression from zero), step for step in loss."""
  x8, y = data
  q4 = qm.with_classifier(4)
  feats = jnp.asarray(_classifier_input(q4, x8))

  def fp32_loss(w, b):
    return jt.softmax_cross_entropy(feats @ w + b, y)

  grad = jax.jit(jax.grad(fp32_loss, argnums=(0, 1)))
  w, b = jnp.zeros((feats.shape[1], 4)), jnp.zeros(4)
  tr = jt.tiny_train(q4, optimizer=jt.sgd(0.1), rounding="stochastic")(jt.softmax_cross_entropy)
  state = tr.init()
  losses = []
  for _ in range(150):
    gw, gb = grad(w, b)
    w, b = w - 0.1 * gw, b - 0.1 * gb
    state, loss = tr.step(state, x8, y)
    losses.append(float(loss))
  assert losses[-1] < losses[0] - 0.2
  assert abs(losses[-1] - float(fp32_loss(w, b))) < 0.03


def test_split_and_with_classifier(qm, data):
  x8, _ = data
  prefix, suffix = qm.split(2)
  np.testing.assert_array_equal(np.asarray(suffix.apply(np.asarray(prefix.apply(x8)))),
                                np.asarray(qm.apply(x8)))
  assert suffix.layer(2).name == qm.layer(2).name and suffix.num_layers == qm.num_layers
  with pytest.raises(ValueError, match="residual crosses"):
    qm.split(3)
  q6 = qm.with_classifier(6, seed=3)
  assert q6.output_shape == (6,) and q6.params[q6.classifier.name]["weight"].shape == (6, 12)
  assert q6.params[q6.classifier.name]["weight"].dtype == np.int8
  assert np.asarray(q6.apply(x8)).shape == (16, 6)
  # Training the suffix on cached prefix outputs is training the whole model.
  update = jt.SparseUpdate(bias_last=2, weights={2: 0.5})
  whole = jt.tiny_train(q6, update=update)(jt.softmax_cross_entropy)
  part = jt.tiny_train(q6.split(2)[1], update=update)(jt.softmax_cross_entropy)
  sw, sp = whole.init(), part.init()
  feats = np.asarray(q6.split(2)[0].apply(x8))
  labels = np.arange(16) % 6
  for i in range(3):
    sw, lw = whole.step(sw, x8[i:i + 2], labels[i:i + 2])
    sp, lp = part.step(sp, feats[i:i + 2], labels[i:i + 2])
    assert float(lw) == float(lp)
  for k in sw["weights"]:
    np.testing.assert_array_equal(sw["weights"][k], sp["weights"][k])


def test_bad_arguments(qm, data):
  x8, y = data
  tr = jt.tiny_train(qm)(jt.softmax_cross_entropy)
  state = tr.init()
  with pytest.raises(jt.InputError, match="int8"):
    tr.step(state, x8.astype(np.float32), y)
  with pytest.raises(jt.InputError, match="labels must lie"):
    tr.step(state, x8[:2], np.array([0, 9]))
  with pytest.raises(jt.InputError, match="labels must be integers"):
    tr.step(state, x8[:2], np.array([0.0, 1.0]))
  with pytest.raises(ValueError, match="outside model"):
    jt.tiny_train(qm, update=jt.SparseUpdate(weights={7: 0.5}))(jt.softmax_cross_entropy)
  with pytest.raises(ValueError, match="ratio"):
    jt.SparseUpdate(weights={1: 1.5})
  with pytest.raises(ValueError, match="rounding"):
    jt.tiny_train(qm, rounding="up")(jt.softmax_cross_entropy)
