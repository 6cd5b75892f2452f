"""The blob format: save/load round trip, golden disassembly, verification of corrupt blobs."""

import difflib
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxtiny as jt
import lowering
from lowering import blob
from lowering.dump import disassemble

from helpers import Tiny, labelled_batch, quantize_8x8x2

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).parent.parent


CONFIGS = {
  # Trained channels of the expand conv, inside the bottleneck's channel-by-channel
  # backward, and of a 1x1 conv; momentum, cosine decay, stochastic rounding.
  "sparse": (jt.SparseUpdate(bias_last=5, weights={1: 0.5, 4: 0.5}),
             jt.sgd(jt.cosine(0.3, 10, final=0.01), momentum=0.9), "stochastic"),
  # Trained channels of the depthwise conv (the block's backward then runs op by op).
  "adam": (jt.SparseUpdate(bias_last=3, weights={2: 0.5}, weights_last=2),
           jt.adam(jt.constant(0.01)), "nearest"),
}


@pytest.fixture(scope="module")
def qm():
  return quantize_8x8x2(Tiny())


@pytest.fixture(scope="module")
def data(qm):
  return labelled_batch(qm, 8, classes=3)


@pytest.fixture(scope="module", params=list(CONFIGS))
def trainer(request, qm):
  update, optimizer, rounding = CONFIGS[request.param]
  return jt.tiny_train(qm, optimizer=optimizer, update=update, rounding=rounding,
                       seed=3)(jt.softmax_cross_entropy)


@pytest.fixture(scope="module")
def sparse_blob(qm):
  update, optimizer, rounding = CONFIGS["sparse"]
  tr = jt.tiny_train(qm, optimizer=optimizer, update=update, rounding=rounding,
                     seed=3)(jt.softmax_cross_entropy)
  prog = tr.lower()
  return prog, blob.encode(prog)


def test_round_trip_keeps_the_program(trainer, tmp_path):
  prog = trainer.lower()
  prog.save(tmp_path / "model.jtb")
  data = (tmp_path / "model.jtb").read_bytes()
  loaded = lowering.load(tmp_path / "model.jtb")
  for a, b in zip(prog.graph.tensors, loaded.graph.tensors, strict=True):
    assert (a.id, a.name, a.shape, a.dtype, a.storage, a.alias) == \
           (b.id, b.name, b.shape, b.dtype, b.storage, b.alias)
    assert (a.data is None) == (b.data is None)
    if a.data is not None:
      assert a.data.dtype == b.data.dtype and np.array_equal(a.data, b.data), a.name
  assert loaded.train_ops == prog.train_ops and loaded.infer_ops == prog.infer_ops
  for a, b in zip(prog.train_ops, loaded.train_ops, strict=True):
    # Same Python types as lower() makes (tuples, nested padding, None, float); equal
    # floats prove they were float32 values already.
    assert {k: type(v) for k, v in a.attrs.items()} == {k: type(v) for k, v in b.attrs.items()}
  assert (loaded.io, loaded.optimizer, loaded.rounding, loaded.seed, loaded.name) == \
         (prog.io, prog.optimizer, prog.rounding, prog.seed, prog.name)
  assert loaded.plan == prog.plan
  assert (loaded.arena_bytes, loaded.state_bytes, loaded.flash_bytes) == \
         (prog.arena_bytes, prog.state_bytes, prog.flash_bytes)
  # One canonical encoding; the constants section is exactly the program's flash bytes.
  assert blob.encode(loaded) == data == blob.encode(lowering.load(data))
  assert blob.read(data).header["consts_size"] == prog.flash_bytes


def test_loaded_program_runs_identically(trainer, data):
  prog = trainer.lower()
  loaded = lowering.load(blob.encode(prog))
  x8, y = data
  for i in range(3):
    np.testing.assert_array_equal(loaded.infer(x8[i]), prog.infer(x8[i]))
  for i in range(6):
    assert loaded.train_step(x8[i], int(y[i])) == prog.train_step(x8[i], int(y[i]))
  before, after = trainer.init(), prog.state()
  assert any(not np.array_equal(before["biases"][k], after[f"biases/{k}"])
             for k in before["biases"]), "training moved nothing: the test would prove nothing"
  ref, got = prog.state(), loaded.state()
  assert ref.keys() == got.keys()
  for k in ref:
    np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
  for i in range(len(x8)):
    np.testing.assert_array_equal(loaded.infer(x8[i]), prog.infer(x8[i]))


def test_save_after_training_keeps_what_was_learned(trainer, data, tmp_path):
  x8, y = data
  prog = trainer.lower()
  for i in range(4):
    prog.train_step(x8[i], int(y[i]))
  prog.save(tmp_path / "trained.jtb")
  prog.save(tmp_path / "initial.jtb", state="initial")
  trained = lowering.load(tmp_path / "trained.jtb")
  initial = lowering.load(tmp_path / "initial.jtb")
  for k, v in prog.state().items():
    np.testing.assert_array_equal(trained.state()[k], v, err_msg=k)
  assert initial.state()["step"] == 0 and trained.state()["step"] == 4
  # The next step goes on from the learned state: the same loss as the program that trained.
  assert trained.train_step(x8[4], int(y[4])) == prog.train_step(x8[4], int(y[4]))
  fresh = trainer.lower()
  assert initial.train_step(x8[0], int(y[0])) == fresh.train_step(x8[0], int(y[0]))
  with pytest.raises(ValueError, match="current"):
    prog.save(tmp_path / "x.jtb", state="latest")


def test_golden_disassembly(sparse_blob):
  prog, data = sparse_blob
  text = disassemble(prog)
  assert text == disassemble(data)
  path = GOLDEN / "tiny_sparse_step.txt"
  if os.environ.get("JT_UPDATE_GOLDEN") == "1":
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
  want = path.read_text() if path.exists() else ""
  if text != want:
    diff = "".join(list(difflib.unified_diff(want.splitlines(True), text.splitlines(True),
                                             str(path.name), "now"))[:60])
    pytest.fail(f"the disassembly differs from tests/golden/{path.name}; if the change is "
                "intended, regenerate it with JT_UPDATE_GOLDEN=1 python -m pytest "
                f"tests/test_blob.py -k golden\n{diff}", pytrace=False)


# --- corrupt blobs ----------------------------------------------------------------------------


def _put(b: bytearray, at: int, fmt: str, value) -> None:
  struct.pack_into("<" + fmt, b, at, value)


def _with_crc(b: bytearray) -> bytearray:
  _put(b, blob.HEADER_AT["crc"], "I", blob.crc(b))
  return b


def _tensor_at(h: dict, tid: int, field: str) -> int:
  return h["tensors_offset"] + tid * blob.TENSOR.size + blob.TENSOR_AT[field]


def _flip(prog, h, b):
  b[h["consts_offset"] + 5] ^= 0x40


def _truncate(prog, h, b):
  del b[-8:]


def _truncate_header(prog, h, b):
  del b[100:]


def _magic(prog, h, b):
  b[:4] = b"PK\x03\x04"


def _swap_sentinel(prog, h, b):
  at = blob.HEADER_AT["sentinel"]
  b[at:at + 4] = b[at:at + 4][::-1]


def _version(prog, h, b):
  _put(b, blob.HEADER_AT["version"], "I", blob.VERSION + 1)


def _input_scale(prog, h, b):
  _put(b, blob.HEADER_AT["input_inv_scale"], "f", float("nan"))


def _output_zero(prog, h, b):
  _put(b, blob.HEADER_AT["output_zero"], "i", 128)


def _opcode(prog, h, b):
  _put(b, h["train_ops_offset"] + blob.OP_AT["opcode"], "I", 99)


def _operand(prog, h, b):
  _put(b, h["operands_offset"] + 4, "i", 1 << 20)


def _conv_record(prog, h) -> int:
  """Byte offset of the first conv2d_s8 train op's record."""
  i = next(i for i, op in enumerate(prog.train_ops) if op.name == "conv2d_s8")
  return h["train_ops_offset"] + i * blob.OP.size


def _operand_count(prog, h, b):  # the first conv: all its operands read as inputs
  at = _conv_record(prog, h)
  count = struct.unpack_from("<I", b, at + blob.OP_AT["operand_count"])[0]
  _put(b, at + blob.OP_AT["inputs"], "I", count)


def _attr_count(prog, h, b):
  at = _conv_record(prog, h) + blob.OP_AT["attr_count"]
  _put(b, at, "I", struct.unpack_from("<I", b, at)[0] - 1)


def _dtype(prog, h, b):
  b[_tensor_at(h, 0, "dtype")] = 17


def _alias_cycle(prog, h, b):
  view = next(t for t in prog.graph.tensors if t.alias is not None)
  _put(b, _tensor_at(h, view.alias, "alias"), "i", view.id)
  _put(b, _tensor_at(h, view.alias, "location"), "i", -1)


def _const_beyond(prog, h, b):
  const = next(t for t in prog.graph.tensors if t.storage == "const")
  _put(b, _tensor_at(h, const.id, "location"), "i", h["consts_size"])


def _arena_beyond(prog, h, b):
  tid = next(iter(prog.plan.buffers))
  _put(b, _tensor_at(h, tid, "location"), "i", (prog.arena_bytes + 3) // 4 * 4)


def _overlap(prog, h, b):
  bufs = list(prog.plan.buffers.values())
  a, c = next((a, c) for a in bufs for c in bufs if a is not c and c.size <= a.size
              and a.first <= c.last and c.first <= a.last)
  _put(b, _tensor_at(h, c.tensor, "location"), "i", a.offset)


CORRUPT = {  # case -> (tamper, recompute the CRC, what the error must say)
  "flipped byte": (_flip, False, r"CRC mismatch: .* at byte 20"),
  "truncated": (_truncate, False, r"truncated: .* gives \d+ bytes, the data has \d+"),
  "truncated header": (_truncate_header, False, r"truncated: 100 bytes"),
  "wrong magic": (_magic, False, r"not a jaxtiny blob"),
  "byte-swapped sentinel": (_swap_sentinel, False, r"wrong byte order: .* byte 4"),
  "bad version": (_version, False, rf"unsupported blob version {blob.VERSION + 1} at byte 8"),
  "input scale": (_input_scale, True, r"input_inv_scale = nan \(header byte 196\) is not a "
                                      r"finite positive"),
  "output zero": (_output_zero, True, r"output_zero = 128 \(header byte 208\) is not an int8"),
  "unknown opcode": (_opcode, True, r"train op 0 \(byte \d+\): unknown opcode 99"),
  "operand out of range": (_operand, True, r"train op 0 .*operand 1 is tensor 1048576, out of"),
  "operand count": (_operand_count, True, r"train op \d+ \(conv2d_s8.*: 0 outputs, "
                                          r"conv2d_s8 takes 1"),
  "attr count": (_attr_count, True, r"train op \d+ \(conv2d_s8.*attr count mismatch"),
  "dtype enum": (_dtype, True, r"tensor 0 \(byte \d+\): dtype: 17 is out of range"),
  "alias cycle": (_alias_cycle, True, r"tensor \d+: a chain of more than 16 aliases \(or a "
                                      r"cycle\)"),
  "const beyond consts": (_const_beyond, True, r"tensor \d+ .*: const data .* lies outside"),
  "arena beyond arena": (_arena_beyond, True, r"tensor \d+ .*: arena tensor .* beyond the arena"),
  "overlapping plan": (_overlap, True, r"memory plan of the train ops: tensors \d+ and \d+ "
                                      r"overlap"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_blob_is_rejected(sparse_blob, case):
  prog, data = sparse_blob
  tamper, fix_crc, message = CORRUPT[case]
  b = bytearray(data)
  tamper(prog, blob.read(data).header, b)
  if fix_crc:
    _with_crc(b)
  with pytest.raises(lowering.BlobError, match=message):
    lowering.load(bytes(b))


def test_fuzzed_blobs_raise_only_blob_errors(sparse_blob):
  _, data = sparse_blob
  rng = np.random.default_rng(7)
  outcomes = {"loaded": 0, "rejected": 0}
  for _ in range(200):
    b = bytearray(data)
    pos = int(rng.integers(len(b)))
    b[pos] ^= int(rng.integers(1, 256))
    try:
      blob.read(_with_crc(b)).program()
      outcomes["loaded"] += 1
    except lowering.BlobError:
      outcomes["rejected"] += 1
  assert outcomes["rejected"] > 50, outcomes


def test_encoder_refuses_what_it_cannot_store(sparse_blob):
  prog, _ = sparse_blob
  op = next(op for op in prog.train_ops if op.name == "conv2d_s8")
  saved = dict(op.attrs)
  try:
    op.attrs["dilation"] = (1, 1)
    with pytest.raises(ValueError, match=r"\['dilation'\] have no encoding"):
      blob.encode(prog)
    del op.attrs["dilation"]
    op.attrs["groups"] = 1.5
    with pytest.raises(ValueError, match="attribute groups"):
      blob.encode(prog)
  finally:
    op.attrs.clear()
    op.attrs.update(saved)


def test_dump_command(sparse_blob, tmp_path):
  prog, data = sparse_blob
  path = tmp_path / "tiny.jtb"
  path.write_bytes(data)
  run = subprocess.run([sys.executable, "-m", "lowering.dump", str(path)], cwd=ROOT,
                       capture_output=True, text=True, check=False)
  assert run.returncode == 0, run.stderr
  assert run.stdout == disassemble(data)
  for name in {op.name for op in prog.train_ops}:
    assert f" {name} " in run.stdout
  path.write_bytes(data[:-1])
  run = subprocess.run([sys.executable, "-m", "lowering.dump", str(path)], cwd=ROOT,
                       capture_output=True, text=True, check=False)
  assert run.returncode == 2 and "truncated" in run.stderr


@pytest.mark.e2e
def test_imported_model_round_trip(models_dir):
  """MCUNet-5FPS with the published "49kb" scheme: every op kind the importer produces
  (band-by-band bottlenecks, in-place outputs) survives the blob."""
  qm = jt.load_tinytraining(models_dir / "mcunet-5fps.pkl").with_classifier(2)
  tr = jt.tiny_train(qm, optimizer=jt.sgd(0.002), rounding="stochastic",
                     update=jt.SparseUpdate(bias_last=20, weights={24: 0.25, 27: 0.5, 30: 0.5})
                     )(jt.softmax_cross_entropy)
  prog = tr.lower()
  data = blob.encode(prog)
  loaded = lowering.load(data)
  assert loaded.train_ops == prog.train_ops and loaded.plan == prog.plan
  assert blob.encode(loaded) == data
  x8 = np.random.default_rng(0).integers(-128, 128, prog.input_shape, dtype=np.int8)
  np.testing.assert_array_equal(loaded.infer(x8), prog.infer(x8))
  assert loaded.train_step(x8, 1) == prog.train_step(x8, 1)
  got = loaded.state()
  for k, v in prog.state().items():
    np.testing.assert_array_equal(got[k], v, err_msg=k)
