"""The saved QModel (jaxtiny/qmodel_file.py): round trips that compute bit for bit what the
saved model did (inference, training steps, the lowered blob), deterministic bytes, and
every kind of damaged, foreign, newer or inconsistent file refused with a message that says
what and where."""

import hashlib
import io
import json
import struct
import zipfile
from dataclasses import replace
from functools import cache

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtiny as jt
from jaxtiny.qmodel import RUNNERS, QModel
from jaxtiny.qmodel_file import MANIFEST, NODE_KINDS, save_qmodel
from lowering.blob import encode

from helpers import FuzzMlp, SmallNet, labelled_batch, quantize_8x8x2


class Signal(nn.Module):
  """1-D: a strided conv, a max pool, a ReLU after it (a standalone clamp: a max pool takes
  no fused activation), an average pool with a per-position multiplier, a concat of the two,
  a dense layer on the flattened map."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.max_pool(nn.Conv(4, (3,), strides=2)(x), (2,), (2,)))
    x = jnp.concatenate(
      [x, nn.avg_pool(x, (3,), (1,), padding="SAME", count_include_pad=False)], axis=-1)
    return nn.Dense(3)(x.reshape((x.shape[0], -1)))


@cache
def _model(name: str) -> QModel:
  """The test models, each quantized once (a quantization takes seconds)."""
  if name == "signal-1d":
    m = Signal()
    x = np.random.default_rng(0).normal(size=(32, 16, 2)).astype(np.float32)
    return jt.quantize(m, m.init(jax.random.key(0), x[:1]), x)
  return quantize_8x8x2({"smallnet": SmallNet, "mlp": FuzzMlp}[name]())


def _content(qm: QModel) -> tuple:
  """Everything a QModel holds, with the types: repr tells 1 from 1.0 from True and a tuple
  from a list, and arrays compare by dtype, shape and bytes."""
  def arrays(d):
    return [(k, a.dtype.str, a.shape, a.tobytes()) for k, a in d.items()]

  nodes = [(n.op, n.name, repr(n.inputs), n.output, repr(n.index), repr(n.attrs),
            arrays(n.arrays)) for n in qm.nodes]
  return (type(qm), qm.name, repr(qm.input_shape), qm.input_id, qm.output_id,
          repr(list(qm.tensors.items())), nodes,
          [(k, arrays(p)) for k, p in qm.params.items()])


def _round_trip(qm: QModel, tmp_path, run: bool = True) -> QModel:
  """Save, load, compare; saving the loaded model again gives the same bytes. run=False
  compares the lowered computations instead of running them (the same StableHLO on the same
  params computes the same int8 outputs; for a large model compiling twice takes seconds)."""
  qm.save(tmp_path / "model.jtq")
  loaded = jt.load_qmodel(tmp_path / "model.jtq")
  assert _content(loaded) == _content(qm)
  assert loaded.summary() == qm.summary()
  if run:
    x8 = np.random.default_rng(0).integers(-128, 128, (1, *qm.input_shape)).astype(np.int8)
    np.testing.assert_array_equal(loaded.apply(x8), qm.apply(x8))
  else:
    x = jax.ShapeDtypeStruct((1, *qm.input_shape), jnp.float32)
    hlo = [jax.jit(m.forward).lower(m.device_params(), x).as_text() for m in (qm, loaded)]
    assert hlo[0] == hlo[1]
  loaded.save(tmp_path / "again.jtq")
  assert (tmp_path / "again.jtq").read_bytes() == (tmp_path / "model.jtq").read_bytes()
  return loaded


@pytest.fixture(scope="module")
def small() -> QModel:
  return _model("smallnet")


# smallnet: conv, depthwise, residual add, average pool, dense; mlp: a dense layer on the
# flattened model input
@pytest.mark.parametrize("name", ["smallnet", "mlp", "signal-1d"])
def test_round_trip(name, tmp_path):
  _round_trip(_model(name), tmp_path)


def test_the_models_cover_every_node_kind():
  ops = {n.op for name in ("smallnet", "signal-1d") for n in _model(name).nodes}
  assert ops == set(RUNNERS)
  assert set(NODE_KINDS) == set(RUNNERS)  # a new node kind needs its entry in the checks
  pool = next(n for n in _model("signal-1d").nodes if n.op == "avgpool")
  assert pool.arrays["multiplier"].shape == (1, 4)  # per position


def test_with_classifier_and_a_split_suffix(small, tmp_path):
  _round_trip(small.with_classifier(5, seed=3), tmp_path)
  prefix, suffix = small.split(4)
  assert _round_trip(suffix, tmp_path).num_layers == small.num_layers
  with pytest.raises(jt.InputError, match="prefix of a split model"):
    prefix.save(tmp_path / "prefix.jtq")


def test_training_and_lowering_are_identical(small, tmp_path):
  small.save(tmp_path / "small.jtq")
  loaded = jt.load_qmodel(tmp_path / "small.jtq")
  x8, y = labelled_batch(small, 2)
  trainers = [jt.tiny_train(qm, update=jt.SparseUpdate(bias_last=3, weights={3: 0.5}),
                            optimizer=jt.sgd(0.05, momentum=0.9), seed=7)(
    jt.softmax_cross_entropy) for qm in (small, loaded)]
  states = [tr.init() for tr in trainers]
  for i in range(2):
    steps = [tr.step(s, x8[i:i + 1], y[i:i + 1]) for tr, s in zip(trainers, states)]
    states = [s for s, _ in steps]
    assert np.float32(steps[0][1]).tobytes() == np.float32(steps[1][1]).tobytes()
    for a, b in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1])):
      np.testing.assert_array_equal(a, b)
  assert encode(trainers[0].lower()) == encode(trainers[1].lower())


@pytest.mark.e2e
def test_tinytraining_model_round_trip(models_dir, tmp_path):
  _round_trip(jt.load_tinytraining(models_dir / "mcunet-5fps.pkl"), tmp_path, run=False)


def test_attribute_values_keep_their_types(small, tmp_path):
  note = (1, [2.5, (None, True)], "s", 1e-300, -0.0, [], ((1, 1), (0, 2)))
  qm = _with_node(small, 0, attrs={**small.nodes[0].attrs, "note": note})
  qm.save(tmp_path / "m.jtq")
  loaded = jt.load_qmodel(tmp_path / "m.jtq")
  assert repr(loaded.nodes[0].attrs["note"]) == repr(note)
  assert _content(loaded) == _content(qm)


# --- what save refuses ------------------------------------------------------------------


def _with_node(qm: QModel, pos: int, **changes) -> QModel:
  nodes = list(qm.nodes)
  nodes[pos] = replace(nodes[pos], **changes)
  return QModel(nodes, qm.tensors, qm.input_id, qm.output_id, qm.params, qm.input_shape,
                qm.name)


@pytest.mark.parametrize("attrs, message", [
  ({"note": np.int64(3)}, "'note' is a numpy int64 scalar .* convert it with int"),
  ({"lo": np.float32(0.0)}, "'lo' is a numpy float32 scalar"),
  ({"note": float("nan")}, "finite floats only"),
  ({"note": {"a": 1}}, "a dict .* cannot hold"),
])
def test_save_refuses_what_it_cannot_store(small, tmp_path, attrs, message):
  qm = _with_node(small, 0, attrs={**small.nodes[0].attrs, **attrs})
  with pytest.raises(jt.InputError, match=message):
    qm.save(tmp_path / "m.jtq")
  assert not (tmp_path / "m.jtq").exists()


def test_save_refuses_what_load_would(small, tmp_path):
  bad = {**small.nodes[0].arrays, "multiplier": np.full_like(small.nodes[0].arrays["multiplier"],
                                                             np.inf)}
  with pytest.raises(jt.InputError, match="cannot save model 'SmallNet': node 0 .*infinite"):
    _with_node(small, 0, arrays=bad).save(tmp_path / "m.jtq")
  with pytest.raises(jt.InputError, match="saves a QModel"):
    save_qmodel("model", tmp_path / "m.jtq")


# --- what load refuses ------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(small, tmp_path_factory) -> bytes:
  path = tmp_path_factory.mktemp("saved") / "small.jtq"
  small.save(path)
  return path.read_bytes()


def _members(data: bytes) -> dict[str, bytes]:
  with zipfile.ZipFile(io.BytesIO(data)) as zf:
    return {k: zf.read(k) for k in zf.namelist()}


def _edit(data: bytes, manifest=None, members=None, fix_sums: bool = True) -> bytes:
  """A valid zip of edited members: `manifest(m)` edits the parsed manifest in place,
  `members` replaces (or, with None, drops) members; with fix_sums the manifest records
  the new members' SHA-256, so the load reaches its structural checks."""
  files = _members(data)
  for k, v in (members or {}).items():
    if v is None:
      del files[k]
    else:
      files[k] = v
  m = json.loads(files[MANIFEST])
  if manifest is not None:
    manifest(m)
  if fix_sums:
    m["members"] = {k: hashlib.sha256(v).hexdigest() for k, v in files.items() if k != MANIFEST}
  files[MANIFEST] = json.dumps(m).encode()
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as zf:
    for k, v in files.items():
      zf.writestr(k, v)
  return buf.getvalue()


def _npy(a: np.ndarray) -> bytes:
  buf = io.BytesIO()
  np.save(buf, a)
  return buf.getvalue()


def _stored(data: bytes, info: zipfile.ZipInfo) -> range:
  """Where member `info`'s data lies in the archive (after its local header)."""
  name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
  start = info.header_offset + 30 + name_len + extra_len
  return range(start, start + info.compress_size)


def _flip_in_member(data: bytes, name: str) -> bytes:
  """data with the last byte of member `name` inverted (its CRC-32 no longer holds)."""
  at = _stored(data, zipfile.ZipFile(io.BytesIO(data)).getinfo(name))[-1]
  return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def _set(path: str, value):
  """A manifest edit: the value at a path of keys and indices ('nodes.0.attrs.groups')."""
  def edit(m):
    *head, last = (int(k) if k.isdigit() else k for k in path.split("."))
    for k in head:
      m = m[k]
    if value is _DELETE:
      del m[last]
    else:
      m[last] = value
  return edit


_DELETE = object()
W0 = "params/0/weight.npy"  # layer 0 (Conv_0, 3x3, 2 -> 8 channels)
B0 = "params/0/bias.npy"
M0 = "nodes/0/multiplier.npy"

CASES = {  # name -> (bytes from the saved file and its parsed manifest, message)
  "not-a-zip": (lambda d, m: b"conv2d weights, honest", "not a jaxtiny model file .*not a zip"),
  "npz": (lambda d, m: _npz(), "has no manifest.json"),
  "truncated": (lambda d, m: d[:len(d) // 2], "damaged or truncated"),
  "flipped-array-byte": (lambda d, m: _flip_in_member(d, W0),
                         "member 'params/0/weight.npy' cannot be read .*CRC.*damaged"),
  "flipped-manifest-byte": (lambda d, m: _flip_in_member(d, MANIFEST),
                            "member 'manifest.json' cannot be read"),
  "checksum": (lambda d, m: _edit(d, members={W0: _npy(np.zeros((8, 3, 3, 2), np.int8))},
                                  fix_sums=False), "'params/0/weight.npy': checksum mismatch"),
  "bad-json": (lambda d, m: _edit_raw(d, b'{"format": "jaxtiny-qmodel",'), "not valid JSON"),
  "nan-in-json": (lambda d, m: _edit(d, _set("tensors.0.scale", float("nan"))),
                  "not valid JSON .*NaN is not a finite number"),
  "foreign-json": (lambda d, m: _edit(d, _set("format", "onnx")), "not a jaxtiny model file"),
  "newer": (lambda d, m: _edit(d, _set("version", 2)),
            "saved by a newer jaxtiny .*version 2.*upgrade jaxtiny"),
  "version-0": (lambda d, m: _edit(d, _set("version", 0)), "version 0 .* is not a version"),
  "missing-member": (lambda d, m: _edit(d, members={B0: None}, fix_sums=False),
                     r"the archive lacks \['params/0/bias.npy'\]"),
  "extra-member": (lambda d, m: _edit(d, members={"notes.txt": b"hi"}, fix_sums=False),
                   r"has unexpected \['notes.txt'\]"),
  "unrecorded-member": (lambda d, m: _edit(d, lambda m: m["members"].pop(B0), fix_sums=False),
                        r"records do not match its nodes and params: it lacks \['params/0/bi"),
  "type-input-shape": (lambda d, m: _edit(d, _set("input_shape", "8x8x2")),
                       "'input_shape' is \"8x8x2\", expected list"),
  "type-zero": (lambda d, m: _edit(d, _set("tensors.1.zero", 1.5)), "tensor 3: 'zero' is 1.5"),
  "type-index": (lambda d, m: _edit(d, _set("nodes.0.index", True)),
                 "node 0: 'index' is true, expected int or null"),
  "bad-tuple": (lambda d, m: _edit(d, _set("nodes.0.attrs.strides", {"tup": [1, 1]})),
                "is no encoded value"),
  "list-not-tuple": (lambda d, m: _edit(d, _set("nodes.0.attrs.strides", [1, 1])),
                     r"attribute 'strides' is \[1, 1\], expected \(int, int\)"),
  "missing-attr": (lambda d, m: _edit(d, _set("nodes.1.attrs.groups", _DELETE)),
                   r"node 1 \('Conv_1', conv2d\): missing attribute 'groups'"),
  "unknown-op": (lambda d, m: _edit(d, _set("nodes.2.op", "softmax")),
                 "unknown op 'softmax' .*runs conv2d, dense"),
  "not-topological": (lambda d, m: _edit(d, _set("nodes.1.inputs", [m["nodes"][2]["output"]])),
                      "reads tensor 9, which neither .* topological order"),
  "duplicate-output": (lambda d, m: _edit(d, _set("nodes.1.output", m["nodes"][0]["output"])),
                       "writes tensor 3, which node 'Conv_0' already produces"),
  "no-input": (lambda d, m: _edit(d, _set("input", 99)), "input tensor 99 is not among"),
  "no-output": (lambda d, m: _edit(d, _set("output", 0)), "output tensor 0 is produced by no"),
  "weight-dtype": (lambda d, m: _edit(d, members={W0: _npy(np.zeros((8, 3, 3, 2), np.int16))}),
                   r"weight is int16\[8, 3, 3, 2\], expected an int8 OHWI"),
  "weight-shape": (lambda d, m: _edit(d, members={W0: _npy(np.zeros((8, 3, 3, 3), np.int8))}),
                   "Conv_0', conv2d\\) does not run on its inputs .*input channels 2"),
  "bias-shape": (lambda d, m: _edit(d, members={B0: _npy(np.zeros(7, np.int32))}),
                 r"bias is int32\[7\], expected int32\[8\]"),
  "multiplier-nan": (lambda d, m: _edit(d, members={M0: _npy(np.full(8, np.nan, np.float32))}),
                     "array 'multiplier' holds NaN"),
  "multiplier-dtype": (lambda d, m: _edit(d, members={M0: _npy(np.ones(8))}),
                       "array 'multiplier' is float64, expected float32"),
  "not-npy": (lambda d, m: _edit(d, members={M0: b"\x93NUMPY junk"}), "is not a .npy array"),
  "bad-scale": (lambda d, m: _edit(d, _set("tensors.0.scale", -1.0)),
                "tensor 0: quantization scale must be finite and > 0"),
  "bad-zero": (lambda d, m: _edit(d, _set("tensors.0.zero", 300)), "zero point 300 outside int8"),
  "shape": (lambda d, m: _edit(d, _set("tensors.1.shape", [8, 8, 9])),
            "node 0 .* computes shape \\[8, 8, 8\\], but its output tensor 3 has shape "
            "\\[8, 8, 9\\]"),
  "index": (lambda d, m: _edit(d, _set("nodes.1.index", 3)), "layer index 3, expected 1"),
  "classifier-index": (lambda d, m: _edit(d, _set(f"nodes.{len(m['nodes']) - 1}.index", 5)),
                       "'Dense_0', dense\\): layer index 5, expected None"),
  "duplicate-param": (lambda d, m: _edit(d, _set("params.1", m["params"][0])),
                      "'params' must list distinct layer names"),
}


def _npz() -> bytes:
  buf = io.BytesIO()
  np.savez(buf, weight=np.zeros(3, np.int8))
  return buf.getvalue()


def _edit_raw(data: bytes, manifest: bytes) -> bytes:
  files = {**_members(data), MANIFEST: manifest}
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as zf:
    for k, v in files.items():
      zf.writestr(k, v)
  return buf.getvalue()


@pytest.mark.parametrize("case", CASES)
def test_load_refuses(case, saved, tmp_path):
  make, message = CASES[case]
  path = tmp_path / "bad.jtq"
  path.write_bytes(make(saved, json.loads(_members(saved)[MANIFEST])))
  with pytest.raises(jt.ModelFormatError, match=message) as e:
    jt.load_qmodel(path)
  assert str(e.value).startswith(f"{path}: ")  # names the file


def test_load_of_a_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.jtq"):
    jt.load_qmodel(tmp_path / "missing.jtq")


def test_every_damaged_byte_is_refused_or_harmless(tmp_path):
  """A byte inverted anywhere in a small file: the load refuses it, or gives back the very
  same model, which happens only outside the members' data (zip metadata no reader uses,
  such as a local header's time stamp)."""
  qm = _model("mlp")
  qm.save(tmp_path / "m.jtq")
  data = (tmp_path / "m.jtq").read_bytes()
  stored = {at for info in zipfile.ZipFile(io.BytesIO(data)).infolist()
            for at in _stored(data, info)}
  want = _content(qm)
  path = tmp_path / "flipped.jtq"
  for at in range(len(data)):
    path.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:])
    try:
      loaded = jt.load_qmodel(path)
    except jt.ModelFormatError:
      continue
    assert at not in stored, f"byte {at}, in a member's data, changed undetected"
    assert _content(loaded) == want, f"byte {at} changed the model undetected"
