"""The C runtime on whole programs (through ctypes): inference bit-exact with the simulation,
train steps bit-exact with the reference executor, the planned arena only, the state image
and its A/B slots, and the statuses of bad calls."""

import ctypes
import struct

import jax.numpy as jnp
import numpy as np
import pytest

import jaxtiny as jt
import lowering
from lowering import cruntime
from lowering.blob import HEADER_AT, crc

from helpers import BlockNet, SmallNet, labelled_batch, quantize_8x8x2, state_image

STEPS = 5


@pytest.fixture(scope="module")
def small_qm():
  return quantize_8x8x2(SmallNet(max_pool=True))


@pytest.fixture(scope="module")
def block_qm():
  return quantize_8x8x2(BlockNet())


def _program(qm, update, optimizer=None, rounding="stochastic", loss=jt.softmax_cross_entropy):
  tr = jt.tiny_train(qm, optimizer=optimizer or jt.sgd(0.2), update=update, rounding=rounding,
                     seed=3)(loss)
  return tr.lower()


CASES = [
  ("small", jt.SparseUpdate(bias_last=2, weights={1: 0.5, 3: 0.5}), jt.sgd(0.2), "stochastic"),
  ("small", jt.SparseUpdate.last_layers(5), jt.sgd(jt.cosine(0.3, 10), momentum=0.9), "nearest"),
  ("small", jt.SparseUpdate(bias_last=3, weights={2: 1}), jt.adam(0.01), "stochastic"),
  ("block", jt.SparseUpdate(bias_last=5, weights={1: 0.5, 4: 1}), jt.sgd(0.1), "stochastic"),
  ("block", jt.SparseUpdate(bias_last=6, weights={5: 0.5}), jt.sgd(0.1, momentum=0.9),
   "nearest"),
  ("block", jt.SparseUpdate(bias_last=3, weights={4: 0.5}), jt.adam(0.01), "stochastic"),
]


@pytest.mark.parametrize("net, update, optimizer, rounding", CASES,
                         ids=["sparse", "full-cosine-momentum", "adam", "block-sparse",
                              "block-depthwise-momentum", "block-adam"])
def test_c_matches_executor(net, update, optimizer, rounding, small_qm, block_qm):
  qm = small_qm if net == "small" else block_qm
  prog = _program(qm, update, optimizer, rounding)
  rt, rt2 = prog.runtime(), prog.runtime()
  x8, y = labelled_batch(qm, STEPS + 2)
  np.testing.assert_array_equal(rt.infer(x8[0]), np.asarray(qm.apply(x8[:1]))[0])
  for i in range(STEPS):
    loss_ref = prog.train_step(x8[i], int(y[i]))
    loss = rt.train_step(x8[i], int(y[i]))
    assert np.float32(loss).tobytes() == np.float32(loss_ref).tobytes(), (i, loss, loss_ref)
    assert rt2.train_step(x8[i], int(y[i])) == loss
    assert rt.state_bytes() == state_image(prog, rt), f"step {i}: C state"
  assert rt.state_bytes() == rt2.state_bytes()
  assert rt.steps == STEPS
  for i in range(len(x8)):
    np.testing.assert_array_equal(rt.infer(x8[i]), prog.infer(x8[i]))
  assert rt.guards_intact()


def test_buffers_one_byte_short_are_refused(small_qm):
  blob = lowering.blob.encode(_program(small_qm, jt.SparseUpdate()))
  full = lowering.CRuntime(blob)
  with pytest.raises(lowering.BlobError, match="arena buffer is too small"):
    lowering.CRuntime(blob, arena_len=full.arena_len - 1)
  with pytest.raises(lowering.BlobError, match="state buffer is too small"):
    lowering.CRuntime(blob, state_len=full.state_len - 1)


@pytest.fixture(scope="module")
def prog_and_data(small_qm):
  prog = _program(small_qm, jt.SparseUpdate(bias_last=2, weights={3: 0.5}),
                  jt.sgd(0.1, momentum=0.9))
  return prog, labelled_batch(small_qm, 6)


def test_state_survives_a_reset(prog_and_data):
  prog, (x8, y) = prog_and_data
  blob = lowering.blob.encode(prog, "initial")
  rt = lowering.CRuntime(blob)
  for i in range(3):
    rt.train_step(x8[i], int(y[i]))
  image = rt.save_state()
  fresh = lowering.CRuntime(blob)  # the reset: the blob's initial state again
  assert fresh.state_bytes() != rt.state_bytes()
  fresh.load_state(image)
  assert fresh.steps == 3
  assert fresh.train_step(x8[3], int(y[3])) == rt.train_step(x8[3], int(y[3]))
  assert fresh.state_bytes() == rt.state_bytes()


def test_state_image_refusals(prog_and_data, small_qm):
  prog, (x8, y) = prog_and_data
  rt = prog.runtime()
  rt.train_step(x8[0], int(y[0]))
  image = rt.save_state()
  before = rt.state_bytes()
  other = _program(small_qm, jt.SparseUpdate(bias_last=2, weights={3: 0.5}),
                   jt.sgd(0.05, momentum=0.9)).runtime()  # same shapes, another blob
  with pytest.raises(cruntime.StateImageError, match="another blob"):
    other.load_state(image)
  for n in range(len(image)):
    with pytest.raises(cruntime.StateImageError):
      rt.load_state(image[:n])
  flipped = np.frombuffer(image, np.uint8).copy()
  for bit in range(len(image) * 8):
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(cruntime.StateImageError):
      rt.load_state(flipped.tobytes())
    flipped[bit // 8] ^= 1 << (bit % 8)
  assert rt.state_bytes() == before
  rt.load_state(image)
  assert rt.state_bytes() == before


class Flash(ctypes.Structure):
  _fields_ = [("read", ctypes.c_void_p), ("write", ctypes.c_void_p), ("ctx", ctypes.c_void_p)]


READ = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p,
                        ctypes.c_uint32)
WRITE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p,
                         ctypes.c_uint32)


class SimulatedFlash:
  """Two slots in a bytearray; `budget` bytes may still be written before the power goes."""

  def __init__(self, size: int):
    self.mem, self.budget = bytearray(b"\xff" * size), None

  def struct(self) -> Flash:
    def read(_ctx, off, dst, n):
      ctypes.memmove(dst, bytes(self.mem[off:off + n]), n)
      return 0

    def write(_ctx, off, src, n):
      data = ctypes.string_at(src, n)
      if self.budget is not None:
        data = data[:self.budget]
        self.budget -= len(data)
      self.mem[off:off + len(data)] = data
      return 0 if len(data) == n else 1

    self._keep = (READ(read), WRITE(write))
    return Flash(ctypes.cast(self._keep[0], ctypes.c_void_p),
                 ctypes.cast(self._keep[1], ctypes.c_void_p), None)


def test_ab_slots_survive_a_power_cut_at_every_byte(prog_and_data):
  prog, (x8, y) = prog_and_data
  lib = cruntime.library()
  for f in ("jt_slots_save", "jt_slots_load"):
    getattr(lib, f).argtypes = [ctypes.c_void_p, ctypes.c_void_p]
  lib.jt_slot_size.restype, lib.jt_slot_size.argtypes = ctypes.c_uint32, [ctypes.c_void_p]
  rt = prog.runtime()
  slot = lib.jt_slot_size(rt._rt)
  flash = SimulatedFlash(2 * slot)
  fl = flash.struct()
  assert lib.jt_slots_load(rt._rt, ctypes.byref(fl)) != 0  # empty flash: no image
  states = []
  for i in range(2):  # two saves: both slots hold images
    rt.train_step(x8[i], int(y[i]))
    assert lib.jt_slots_save(rt._rt, ctypes.byref(fl)) == 0
    states.append(rt.state_bytes())
  rt.train_step(x8[2], int(y[2]))
  new = rt.state_bytes()
  good = bytes(flash.mem)
  restored = lowering.CRuntime(lowering.blob.encode(prog))
  for cut in range(slot + 1):
    flash.mem[:] = good
    flash.budget = cut
    status = lib.jt_slots_save(rt._rt, ctypes.byref(fl))
    flash.budget = None
    assert (status == 0) == (cut == slot)
    assert lib.jt_slots_load(restored._rt, ctypes.byref(fl)) == 0
    # Until the image is complete the previous one is loaded; once only (part of) the
    # sequence number is missing, either is (both are whole images).
    got = restored.state_bytes()
    assert got == states[-1] if cut < slot - 4 else got in (states[-1], new), cut
    assert cut < slot or got == new


def _raw_train(rt, x, label):
  loss = ctypes.c_float()
  return rt._lib.jt_train_step(rt._rt, x.ctypes.data, label, ctypes.byref(loss))


def test_bad_calls_get_statuses_and_change_nothing(prog_and_data):
  prog, (x8, y) = prog_and_data
  rt = prog.runtime()
  before = rt.state_bytes()
  x = np.ascontiguousarray(x8[0])
  for label in (-1, rt.classes, 2**31 - 1):
    assert _raw_train(rt, x, label) == cruntime.E_LABEL
  lib = rt._lib
  assert lib.jt_train_step(rt._rt, None, 0, None) == 1  # JT_E_NULL
  assert lib.jt_infer(rt._rt, x.ctypes.data, None) == 1
  assert lib.jt_infer(None, x.ctypes.data, x.ctypes.data) == 1
  assert rt.state_bytes() == before
  with pytest.raises(jt.InputError, match="label"):
    rt.train_step(x8[0], 4)
  with pytest.raises(jt.InputError, match="int8"):
    rt.infer(x8[0].astype(np.float32))
  # A blob whose base is not 4-byte aligned.
  blob = lowering.blob.encode(prog)
  buf = (ctypes.c_uint8 * (len(blob) + 4))()
  ctypes.memmove(ctypes.addressof(buf) + 1, blob, len(blob))
  arena, state = cruntime._aligned(rt.arena_len), cruntime._aligned(rt.state_len)
  r = cruntime._aligned(lib.jt_runtime_size())
  assert lib.jt_init(r, ctypes.addressof(buf) + 1, len(blob), arena, rt.arena_len, state,
                     rt.state_len) == 2  # JT_E_ALIGN
  assert lib.jt_train_step(r, x.ctypes.data, 0, ctypes.byref(ctypes.c_float())) == 21


def test_non_finite_loss_stops_before_any_update(small_qm):
  def loss(logits, labels):  # NaN whenever a logit is below 100
    return jnp.sqrt(logits.max() - 100.0).sum() + jt.softmax_cross_entropy(logits, labels)

  prog = _program(small_qm, jt.SparseUpdate(bias_last=2), loss=loss)
  rt = prog.runtime()
  x8, y = labelled_batch(small_qm, 1)
  before, state = rt.state_bytes(), {k: v.copy() for k, v in prog.state().items()}
  with pytest.raises(jt.errors.NonFiniteLossError, match="unchanged"):
    rt.train_step(x8[0], int(y[0]))
  with pytest.raises(jt.errors.NonFiniteLossError, match="unchanged"):
    prog.train_step(x8[0], int(y[0]))
  assert rt.state_bytes() == before and rt.steps == 0
  assert all(np.array_equal(v, state[k]) for k, v in prog.state().items())


def test_c_verifier_refuses_a_corrupt_blob(prog_and_data):
  prog, _ = prog_and_data
  blob = bytearray(lowering.blob.encode(prog))
  blob[100] ^= 1
  with pytest.raises(lowering.BlobError, match="CRC"):
    lowering.CRuntime(bytes(blob))
  blob[HEADER_AT["crc"]:HEADER_AT["crc"] + 4] = crc(blob).to_bytes(4, "little")
  with pytest.raises(lowering.BlobError):
    lowering.CRuntime(bytes(blob))


def test_io_quantization_is_the_models_bit_for_bit(prog_and_data, small_qm):
  """The blob carries the model's input and output quantization: the C runtime, the
  Program's IoQuant and QModel quantize and dequantize identically, ties and saturation
  included."""
  prog, (x8, _) = prog_and_data
  rt = lowering.CRuntime(lowering.blob.encode(prog))
  q = lowering.load(lowering.blob.encode(prog)).quant
  assert q == prog.quant
  rng = np.random.default_rng(0)
  qp = small_qm.input_qparams
  shape = small_qm.input_shape
  ties = (np.arange(np.prod(shape)) - 40.5).reshape(shape) * qp.scale  # halfway cases
  for x in [rng.normal(0, 2, shape), rng.normal(0, 1e6, shape), ties]:
    x = x.astype(np.float32)
    want = small_qm.quantize_input(x[None])[0]
    np.testing.assert_array_equal(q.quantize_input(x), want)
    np.testing.assert_array_equal(rt.quantize_input(x), want)
  bad = np.zeros(shape, np.float32)
  bad.flat[3] = np.nan
  with pytest.raises(jt.InputError, match="NaN or infinite"):
    rt.quantize_input(bad)
  y8 = np.arange(-128, 128, 64, dtype=np.int8)[:rt.classes]
  want = small_qm.dequantize_output(y8)
  assert rt.dequantize_output(y8).tobytes() == want.tobytes() == q.dequantize_output(y8).tobytes()


@pytest.mark.parametrize("field, value", [("input_inv_scale", 0.0), ("output_scale", -1.0),
                                          ("output_scale", float("inf")), ("input_zero", -129)])
def test_c_verifier_refuses_a_bad_io_quantization(prog_and_data, field, value):
  prog, _ = prog_and_data
  blob = bytearray(lowering.blob.encode(prog))
  struct.pack_into("<f" if field.endswith("scale") else "<i", blob, HEADER_AT[field], value)
  blob[HEADER_AT["crc"]:HEADER_AT["crc"] + 4] = crc(blob).to_bytes(4, "little")
  with pytest.raises(lowering.BlobError, match=f"a header field is out of range at header "
                     f"{HEADER_AT[field]} "):
    lowering.CRuntime(bytes(blob))
  with pytest.raises(lowering.BlobError, match=f"{field} = "):
    lowering.load(bytes(blob))
