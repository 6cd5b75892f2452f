"""Lowering the training step: op list, fusions, and the reference executor vs the JAX
simulation (inference bit-exact; trained parameters identical up to rounding boundaries)."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxtiny as jt
from lowering import kernels as K
from lowering import opset

from helpers import (
  BOUNDARY_FRACTION,
  BlockNet,
  SmallNet,
  carry_state,
  labelled_batch,
  quantize_8x8x2,
)


@pytest.fixture(scope="module")
def qm():
  # Every op kind of the small models: conv, depthwise, residual add, max/avg pool, dense.
  return quantize_8x8x2(SmallNet(max_pool=True))


@pytest.fixture(scope="module")
def data(qm):
  return labelled_batch(qm, 12)


def _trainer(qm, update, optimizer=None, rounding="stochastic"):
  return jt.tiny_train(qm, optimizer=optimizer or jt.sgd(0.2), update=update,
                       rounding=rounding, seed=3)(jt.softmax_cross_entropy)


def _run_both(tr, data, steps):
  """Train `steps` examples in JAX and in the lowered program; returns the per-step
  (loss pair, differing elements, trained elements)."""
  prog = tr.lower()
  state = tr.init()
  x8, y = data
  out = []
  for i in range(steps):
    state, loss = tr.step(state, x8[i:i + 1], y[i:i + 1])
    loss_ref = prog.train_step(x8[i], int(y[i]))
    out.append(((float(loss), loss_ref), *carry_state(prog, state)))
  return prog, out


@pytest.mark.parametrize("update", [
  jt.SparseUpdate(bias_last=2, weights={1: 0.5, 3: 0.5}),
  jt.SparseUpdate.last_layers(5),
  jt.SparseUpdate(),
], ids=["sparse", "full", "classifier"])
def test_executor_matches_simulation(qm, data, update):
  _, steps = _run_both(_trainer(qm, update), data, 6)
  for (loss, loss_ref), differ, total in steps:
    assert loss_ref == pytest.approx(loss, rel=1e-5)
    assert differ <= max(1, BOUNDARY_FRACTION * total)


@pytest.mark.parametrize("optimizer", [jt.sgd(jt.cosine(0.3, 10), momentum=0.9),
                                       jt.adam(jt.constant(0.01))], ids=["momentum", "adam"])
def test_executor_optimizers(qm, data, optimizer):
  _, steps = _run_both(_trainer(qm, jt.SparseUpdate(bias_last=1, weights={4: 0.5}), optimizer),
                       data, 5)
  for (loss, loss_ref), differ, total in steps:
    assert loss_ref == pytest.approx(loss, rel=1e-5)
    assert differ <= max(1, BOUNDARY_FRACTION * total)


def test_inference_bit_exact_after_training(qm, data):
  tr = _trainer(qm, jt.SparseUpdate(bias_last=2, weights={3: 0.5}), rounding="nearest")
  prog = tr.lower()
  x8, y = data
  for i in range(4):
    prog.train_step(x8[i], int(y[i]))
  ref = prog.state()
  trained = tr.model({group: {k: ref[f"{group}/{k}"] for k in tr.init()[group]}
                      for group in ("weights", "biases")})
  assert any(not np.array_equal(qm.params[k]["weight"], trained.params[k]["weight"])
             for k in tr.plans), "training moved no weight: the test would prove nothing"
  for i in range(len(x8)):
    np.testing.assert_array_equal(prog.infer(x8[i]), np.asarray(trained.apply(x8[i:i + 1]))[0])


def test_op_list_is_pruned_and_fused(qm):
  prog = _trainer(qm, jt.SparseUpdate(bias_last=1, weights={3: 0.5})).lower()
  names = [op.name for op in prog.train_ops]
  # Layers 0-2 are frozen and before every trained layer: no backward op reaches them.
  assert names.count("conv2d_update_s8") == 1 and names.count("dense_update_s8") == 1
  assert names.count("bias_update_i32") == 2
  bw_inputs = [op for op in prog.train_ops if op.name == "conv2d_bw_input_f32"]
  layer3_out = {op.outputs[0] for op in prog.train_ops if op.name == "conv2d_s8"}
  assert len(bw_inputs) == 1 and layer3_out  # only layer 4's input gradient
  # The layer input saved for the weight gradient holds only the trained channels.
  (gather,) = [op for op in prog.train_ops if op.name == "gather_channels_s8"]
  assert prog.graph.tensors[gather.outputs[0]].shape[-1] == 4
  # No full fp32 weight gradient: no op output has a weight's shape in f32.
  weights = {prog.graph.tensors[op.inputs[1]].shape for op in prog.train_ops
             if op.name == "conv2d_s8"}
  assert not any(t.dtype == "f32" and t.shape in weights for t in prog.graph.tensors)
  # Masks are bits, one per element.
  masks = [t for t in prog.graph.tensors if t.dtype == "bit"]
  assert masks and all(t.nbytes == (t.elements + 7) // 8 for t in masks)


def test_unsupported_loss_names_the_primitive(qm):
  def loss(logits, labels):
    return jnp.sum(jnp.sort(logits)[:, :1]) + 0 * labels.sum()

  tr = jt.tiny_train(qm, update=jt.SparseUpdate())(loss)
  with pytest.raises(jt.UnsupportedError, match="sort"):
    tr.lower()


def test_program_checks_its_input(qm, data):
  prog = _trainer(qm, jt.SparseUpdate()).lower()
  x8, _ = data
  with pytest.raises(jt.InputError, match="int8"):
    prog.infer(x8[0].astype(np.float32))
  with pytest.raises(jt.InputError, match="shape"):
    prog.infer(x8[:2])
  with pytest.raises(jt.InputError, match="label"):
    prog.train_step(x8[0], 7)


def test_opcode_header_is_generated_from_the_table():
  assert opset.RULES.read_text() == opset.c_rules()
  assert opset.HEADER.read_text() == opset.c_header()
  ids = [op.id for op in opset.OPS]
  assert len(set(ids)) == len(ids) and max(ids) <= opset.LAST_USED_ID


def test_memory_plan(qm, data):
  tr = _trainer(qm, jt.SparseUpdate(bias_last=2, weights={3: 0.5}))
  prog = tr.lower()
  p = prog.plan
  p.check()
  sizes = [b.size for b in p.buffers.values()]
  assert max(sizes) <= prog.arena_bytes <= sum(sizes)
  assert max(p.live_bytes()) <= prog.arena_bytes
  # Persistent state: the trained int8 weights, int32 biases and the step counter.
  assert prog.state_bytes == tr.cost.persistent
  # Updates run as soon as their gradient exists, before the backward pass goes on.
  names = [op.name for op in prog.train_ops]
  first_update = min(i for i, n in enumerate(names) if n.endswith(("update_s8", "update_i32")))
  last_bw = max(i for i, n in enumerate(names) if n.endswith("bw_input_f32"))
  assert first_update < last_bw
  # The checker catches two live buffers sharing bytes.
  a, b = sorted(p.buffers.values(), key=lambda x: -x.size)[:2]
  clash = dict(p.buffers)
  clash[b.tensor] = type(b)(b.tensor, b.size, a.first, a.last, a.offset)
  with pytest.raises(AssertionError, match="overlap"):
    type(p)(clash, p.arena_bytes, p.ops).check()


def _conv_args(rng, cin, cout, k, stride, padding, groups=1):
  return dict(w=rng.integers(-127, 128, (cout, k, k, cin // groups), dtype=np.int8),
              b=rng.integers(-900, 900, cout).astype(np.int32),
              m=rng.uniform(0.001, 0.004, cout).astype(np.float32), strides=(stride, stride),
              padding=padding, x_zero=int(rng.integers(-20, 20)),
              y_zero=int(rng.integers(-20, 20)), lo=-128, hi=127)


@pytest.mark.parametrize("h, w, k1, s1, p1, kd, sd, pd", [
  (9, 7, 1, 1, 0, 3, 1, 1),  # expand 1x1, depthwise 3x3 same
  (10, 10, 3, 2, 1, 3, 2, 1),  # a strided stem conv as the first stage, strided depthwise
  (11, 9, 3, 2, 1, 5, 2, 2),
  (8, 8, 1, 1, 0, 7, 1, 3),  # a band taller than the image
  (12, 6, 1, 1, 0, 3, 2, 0),  # asymmetric output size, no padding
])
def test_banded_bottleneck_equals_three_convs(h, w, k1, s1, p1, kd, sd, pd):
  rng = np.random.default_rng(h * w + kd)
  x = rng.integers(-128, 128, (1, h, w, 4), dtype=np.int8)
  expand = _conv_args(rng, 4, 12, k1, s1, ((p1, p1), (p1, p1)))
  dw = _conv_args(rng, 12, 12, kd, sd, ((pd, pd), (pd, pd)), groups=12)
  dw["x_zero"] = expand["y_zero"]
  project = _conv_args(rng, 12, 5, 1, 1, ((0, 0), (0, 0)))
  project["x_zero"] = dw["y_zero"]
  whole = K.conv2d(K.conv2d(K.conv2d(x, **expand, groups=1), **dw, groups=12), **project,
                   groups=1)
  np.testing.assert_array_equal(K.bottleneck(x, expand, dw, project), whole)


@pytest.fixture(scope="module")
def block_qm():
  return quantize_8x8x2(BlockNet())


def test_prefix_bottleneck_runs_band_by_band(block_qm):
  qm = block_qm
  x8, y = labelled_batch(qm, 4)
  tr = _trainer(qm, jt.SparseUpdate(bias_last=2, weights={6: 0.5}))
  banded, whole = tr.lower(), tr.lower(band=False)
  # The first block (layers 1-3) is frozen; the second has a trained depthwise bias.
  (op,) = [op for op in banded.train_ops if op.name == "bottleneck_s8"]
  assert [o.name for o in whole.train_ops].count("bottleneck_s8") == 0
  # The expanded tensor (1, 8, 8, 16) of the first block and its depthwise output never
  # exist: only a band of 3 expanded rows and one depthwise row.
  assert banded.graph.tensors[op.outputs[1]].nbytes == 3 * 8 * 16 + 8 * 16
  expanded = [t for t in whole.plan.buffers if whole.graph.tensors[t].shape == (1, 8, 8, 16)]
  assert len(expanded) == 3  # block 1: expanded + depthwise output; block 2: expanded
  assert len([t for t in banded.plan.buffers
              if banded.graph.tensors[t].shape == (1, 8, 8, 16)]) == 1  # the second block's
  assert banded.arena_bytes < whole.arena_bytes
  for i in range(len(x8)):
    np.testing.assert_array_equal(banded.infer(x8[i]), np.asarray(qm.apply(x8[i:i + 1]))[0])
  for i in range(2):
    assert banded.train_step(x8[i], int(y[i])) == whole.train_step(x8[i], int(y[i]))
  for k, v in banded.state().items():
    np.testing.assert_array_equal(v, whole.state()[k])


def test_in_place_ops_share_their_input(block_qm):
  # Depthwise weights frozen, as in the paper's schemes: a trained depthwise weight's update
  # reads g after the input gradient (which needs the old weight), so g could not be reused.
  # The blocks' backward op by op (channel by channel, no depthwise gradient op is left).
  tr = _trainer(block_qm, jt.SparseUpdate(bias_last=6, weights={1: 1, 4: 1, 6: 1}))
  prog, apart = tr.lower(channelwise=False), tr.lower(in_place=False, channelwise=False)
  g = prog.graph
  shared = [op for op in prog.train_ops
            if op.name in ("requant_bw_f32", "conv2d_bw_input_f32")
            and g.base(op.outputs[0]) == g.base(op.inputs[0])]
  kinds = {op.name for op in shared}
  assert kinds == {"requant_bw_f32", "conv2d_bw_input_f32"}
  for op in shared:  # a depthwise input gradient in place works through a channel scratch
    if op.name == "conv2d_bw_input_f32":
      assert g.tensors[op.outputs[1]].shape == g.tensors[op.inputs[0]].shape[1:-1]
  assert prog.arena_bytes < apart.arena_bytes
  x8, y = labelled_batch(block_qm, 3)
  for i in range(3):  # the executor runs in the planned arena: sharing must not corrupt
    assert prog.train_step(x8[i], int(y[i])) == apart.train_step(x8[i], int(y[i]))
  for k, v in prog.state().items():
    np.testing.assert_array_equal(v, apart.state()[k])


@pytest.mark.parametrize("h, w, kd, sd, pd, per_channel", [
  (6, 5, 3, 1, ((1, 1), (1, 1)), True),
  (8, 8, 3, 2, ((0, 1), (0, 1)), False),  # strided, asymmetric padding (TF "same")
  (7, 9, 5, 2, ((2, 2), (2, 2)), True),
])
def test_bottleneck_backward_equals_op_by_op(h, w, kd, sd, pd, per_channel):
  """kernels.bottleneck_bw, one expanded channel at a time, against the whole-tensor
  kernels: every float bit equal (the same sums in the same order)."""
  rng = np.random.default_rng(h * w + kd)
  k, c, o = 4, 6, 5
  w1, w2, w3 = (rng.integers(-127, 128, s, dtype=np.int8)
                for s in ((c, 1, 1, k), (c, kd, kd, 1), (o, 1, 1, c)))
  ho, wo = (K.out_size(n, kd, sd, p) for n, p in zip((h, w), pd, strict=True))
  ye, yd = (rng.integers(-128, 128, (1, *s, c), dtype=np.int8) for s in ((h, w), (ho, wo)))
  m_e, m_d = (rng.uniform(0.5, 2, c).astype(np.float32) if per_channel
              else np.float32(rng.uniform(0.5, 2)) for _ in range(2))
  g = rng.normal(size=(1, ho, wo, o)).astype(np.float32)
  gd = K.requant_bw(K.conv2d_bw_input(g, w3, (1, 1), ((0, 0), (0, 0)), 1, (ho, wo, c)), yd,
                    m_d, -128, 127)
  ge = K.requant_bw(K.conv2d_bw_input(gd, w2, (sd, sd), pd, c, (h, w, c)), ye, m_e, -128, 127)
  gx_whole = K.conv2d_bw_input(ge, w1, (1, 1), ((0, 0), (0, 0)), 1, (h, w, k))
  rows = {}
  gx = np.full((1, h, w, k), np.nan, np.float32)  # overwritten, not accumulated into
  gb_d, gb_e = K.bottleneck_bw(
    g, {"w": w3}, {"w": w2, "strides": (sd, sd), "padding": pd, "y": yd, "m": m_d, "lo": -128,
                   "hi": 127}, {"w": w1, "y": ye, "m": m_e, "lo": -128, "hi": 127}, gx,
    lambda ch, ge_c: rows.setdefault(ch, ge_c.copy()))
  assert gx.tobytes() == np.ascontiguousarray(gx_whole).tobytes()
  assert gb_d.tobytes() == K.bias_bw(gd).tobytes() and gb_e.tobytes() == K.bias_bw(ge).tobytes()
  assert sorted(rows) == list(range(c))
  assert np.concatenate([rows[ch] for ch in range(c)], axis=-1).tobytes() == ge.tobytes()


@pytest.mark.parametrize("update, optimizer, fused", [
  (jt.SparseUpdate(bias_last=6, weights={1: 1, 4: 1, 6: 1}), jt.sgd(0.2), 2),
  (jt.SparseUpdate(bias_last=5, weights={1: 0.5, 4: 0.25}), jt.sgd(0.1, momentum=0.9), 2),
  (jt.SparseUpdate(bias_last=3, weights={4: 0.5}), jt.adam(0.01), 1),  # expand is first
  (jt.SparseUpdate(bias_last=6, weights={5: 0.5}), jt.sgd(0.1), 1),  # depthwise trained
], ids=["whole", "selected-momentum", "first-adam", "depthwise-trained"])
def test_bottleneck_backward_runs_channel_by_channel(block_qm, update, optimizer, fused):
  tr = _trainer(block_qm, update, optimizer)
  prog, apart = tr.lower(), tr.lower(channelwise=False)
  g = prog.graph
  ops = [op for op in prog.train_ops if op.name == "bottleneck_bw_f32"]
  assert len(ops) == fused
  # With both blocks fused, no float32 gradient of an expanded tensor (16 channels) exists,
  # only channel planes.
  expanded = {t for op in prog.train_ops for t in op.outputs
              if g.tensors[t].dtype == "f32" and g.tensors[t].shape[::3] == (1, 16)}
  assert fused < 2 or not expanded
  assert prog.arena_bytes < apart.arena_bytes if fused == 2 else \
    prog.arena_bytes <= apart.arena_bytes
  x8, y = labelled_batch(block_qm, 4)
  for i in range(4):  # bit-identical to the op-by-op backward, in the planned arena
    assert prog.train_step(x8[i], int(y[i])) == apart.train_step(x8[i], int(y[i]))
  for k, v in prog.state().items():
    assert v.tobytes() == apart.state()[k].tobytes(), k
  assert any(not np.array_equal(v, tr.init()["biases"][k.split("/", 1)[1]])
             for k, v in prog.state().items() if k.startswith("biases/"))


def test_bottleneck_backward_matches_simulation(block_qm):
  _, steps = _run_both(_trainer(block_qm, jt.SparseUpdate(bias_last=5, weights={1: 0.5, 4: 1})),
                       labelled_batch(block_qm, 5), 5)
  for (loss, loss_ref), differ, total in steps:
    assert loss_ref == pytest.approx(loss, rel=1e-5)
    assert differ <= max(1, BOUNDARY_FRACTION * total)


@pytest.mark.parametrize("net", ["SmallNet", "BlockNet"])
@pytest.mark.parametrize("update, optimizer", [
  (jt.SparseUpdate(), jt.sgd(0.1)),
  (jt.SparseUpdate(bias_last=2, weights={3: 0.5}), jt.sgd(0.1, momentum=0.9)),
  (jt.SparseUpdate.last_layers(4), jt.adam(0.01)),
  (jt.SparseUpdate(bias_last=5, weights={1: 1, 4: 0.25}), jt.sgd(0.1)),
], ids=["classifier", "sparse-momentum", "last4-adam", "mixed"])
def test_update_cost_agrees_with_plan(net, update, optimizer, qm, block_qm):
  """The search's cost model (`jt.update_cost`) against what the lowered plan spends: every
  item equal, except the float32 gradient buffers. The model counts the largest set of
  gradients one backward op holds (residual gradients waiting included; a bottleneck's
  channel-by-channel backward as one op); the plan also holds the loss's few logits-sized
  floats, so its peak lies in [model, model + 64 B]."""
  tr = _trainer(qm if net == "SmallNet" else block_qm, update, optimizer)
  model, plan = tr.cost, tr.lower().cost()
  for item in ("trainable_weights", "trainable_biases", "optimizer_state",
               "saved_activations", "masks"):
    assert getattr(model, item) == getattr(plan, item), item
  assert model.gradient_buffers <= plan.gradient_buffers <= model.gradient_buffers + 64
