"""Training the imported MCUNet-5FPS with the published engine's "49kb" scheme."""

import numpy as np
import pytest

import jaxtiny as jt
from jaxtiny.datasets import lfw_faces

SCHEME = jt.SparseUpdate(bias_last=20, weights={24: 0.25, 27: 0.5, 30: 0.5})


@pytest.mark.e2e
def test_mcunet_49kb_scheme(models_dir):
  qm = jt.load_tinytraining(models_dir / "mcunet-5fps.pkl").with_classifier(2)
  trainer = jt.tiny_train(qm, optimizer=jt.sgd(0.002), update=SCHEME,
                          rounding="stochastic")(jt.softmax_cross_entropy)
  # The scheme's layers: biases of 22..41, weights of 24 (1/4), 27 and 30 (1/2), the head.
  trained = {qm.layer(i).name for i in range(22, 42)} | {qm.classifier.name}
  assert set(trainer.plans) == trained
  in_channels = {i: qm.params[qm.layer(i).name]["weight"].shape[3] for i in (24, 27, 30)}
  for i, r in SCHEME.weights.items():
    assert len(trainer.plans[qm.layer(i).name].channels) == int(np.ceil(r * in_channels[i]))
  cost = trainer.cost
  weights = sum(qm.params[qm.layer(i).name]["weight"].size * r
                for i, r in SCHEME.weights.items()) + 2 * 160
  assert cost.trainable_weights == weights
  assert cost.trainable_biases == 4 * (sum(qm.params[qm.layer(i).name]["bias"].size
                                           for i in range(22, 42)) + 2)
  x_tr, y_tr, _, _ = lfw_faces()
  x8 = qm.quantize_input(x_tr[:4])
  state = trainer.init()
  for i in range(4):
    state, loss = trainer.step(state, x8[i:i + 1], y_tr[i:i + 1])
    assert np.isfinite(float(loss))
  after = trainer.model(state)
  for n in qm.layers:
    same_w = np.array_equal(qm.params[n.name]["weight"], after.params[n.name]["weight"])
    same_b = np.array_equal(qm.params[n.name]["bias"], after.params[n.name]["bias"])
    if n.name not in trained:
      assert same_w and same_b, n.name
  assert not np.array_equal(qm.params["classifier"]["weight"],
                            after.params["classifier"]["weight"])
