"""Lowering the shared ImageNet models with the paper's schemes: the memory goals of the
lowering (exact plan sizes, deterministic), the cost model against the plan, one executor
step against the JAX simulation, and the C runtime against both: inference bit-exact with
the simulation, train steps bit-exact with the executor."""

import numpy as np
import pytest

import jaxtiny as jt

KB = 1024
CASES = {  # model file: (scheme, goal for arena + state, fused bottleneck backwards)
  "mcunet-5fps.pkl": (jt.SparseUpdate(bias_last=20, weights={24: 0.25, 27: 0.5, 30: 0.5}),
                      128 * KB, 6),
  "mbv2-w0.35.pkl": (jt.SparseUpdate(bias_last=25, weights={27: 1, 30: 1, 33: 1, 36: 1, 39: 1,
                                                            42: 0.125, 45: 0.5, 48: 1}),
                     141 * KB, 8),
}


@pytest.mark.e2e
@pytest.mark.parametrize("model", list(CASES))
def test_paper_scheme_fits_and_runs(models_dir, model):
  scheme, goal, fused = CASES[model]
  qm = jt.load_tinytraining(models_dir / model).with_classifier(2)
  tr = jt.tiny_train(qm, optimizer=jt.sgd(0.01), update=scheme,
                     rounding="stochastic")(jt.softmax_cross_entropy)
  prog = tr.lower()
  assert prog.arena_bytes + prog.state_bytes <= goal
  assert [op.name for op in prog.train_ops].count("bottleneck_bw_f32") == fused
  model_cost, plan_cost = tr.cost, prog.cost()
  for item in ("trainable_weights", "trainable_biases", "optimizer_state",
               "saved_activations", "masks"):
    assert getattr(model_cost, item) == getattr(plan_cost, item), item
  assert 0 <= plan_cost.gradient_buffers - model_cost.gradient_buffers <= 64
  x8 = np.random.default_rng(0).integers(-128, 128, (1, *qm.input_shape), dtype=np.int8)
  np.testing.assert_array_equal(prog.infer(x8[0]), np.asarray(qm.apply(x8))[0])
  rt = prog.runtime()
  np.testing.assert_array_equal(rt.infer(x8[0]), np.asarray(qm.apply(x8))[0])
  _, loss = tr.step(tr.init(), x8, np.array([1], np.int32))
  loss_ref = prog.train_step(x8[0], 1)
  assert loss_ref == pytest.approx(float(loss), rel=1e-5)
  for step in range(2):
    if step:
      loss_ref = prog.train_step(x8[0], 0)
    loss_c = rt.train_step(x8[0], 1 - step)
    assert np.float32(loss_c).tobytes() == np.float32(loss_ref).tobytes()
  assert rt.state_bytes() == prog.runtime().state_bytes()  # the executor's state, through C
  assert rt.guards_intact()
  np.testing.assert_array_equal(rt.infer(x8[0]), prog.infer(x8[0]))


@pytest.mark.e2e
def test_mcunet_steps_on_the_m7_firmware(models_dir, tmp_path):
  """MCUNet-5FPS with the 49kb scheme on the emulated Cortex-M7 (DSP kernels): inference
  bit-exact with the simulation, two steps and the saved state bit for bit the host build,
  and everything the board needs (input buffer, arena, state, stack, runtime) within 160 KB."""
  from lowering import firmware
  from lowering.blob import encode
  from lowering.cruntime import CRuntime

  from helpers import need_tool

  for tool in ("arm-none-eabi-gcc", "qemu-system-arm"):
    need_tool(tool)
  scheme = CASES["mcunet-5fps.pkl"][0]
  qm = jt.load_tinytraining(models_dir / "mcunet-5fps.pkl").with_classifier(2)
  tr = jt.tiny_train(qm, optimizer=jt.sgd(0.01), update=scheme,
                     rounding="stochastic")(jt.softmax_cross_entropy)
  blob = encode(tr.lower())
  x8 = np.random.default_rng(0).integers(-128, 128, (2, *qm.input_shape), dtype=np.int8)
  y = np.array([1, 0])
  fw = firmware.build(blob, "cortex-m7", tmp_path / "fw", "dsp")
  r = firmware.run(fw, x8, y, tmp_path / "run", timeout=300)
  assert r.inference["logits"] == np.asarray(qm.apply(x8[:1]))[0].tolist()
  rt = CRuntime(blob)
  want = [np.float32(rt.train_step(x, int(t))).tobytes() for x, t in zip(x8, y)]
  assert [np.uint32(s["loss_bits"]).tobytes() for s in r.steps] == want
  assert firmware.saved_image(fw, tmp_path / "run") == rt.save_state()
  assert r.summary(fw)["ram_bytes"] <= 160 * KB
