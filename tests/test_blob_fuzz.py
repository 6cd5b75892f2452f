"""Differential fuzzing of the two blob verifiers: lowering.blob.read (Python) and jt_init
(the C runtime, through lowering.CRuntime) must accept exactly the same blobs, and a blob
both accept must run on the reference executor and on the C runtime without an error
(other than a non-finite loss) and with the same int8 logits, loss bits and state bytes.

The mutants come from a few small lowered steps (every op family) by seeded structured
mutations: byte and bit flips, int32 fields set to boundary values, swapped, duplicated or
dropped op records, swapped operand ids, changed dims (with the byte size fixed up), tensor
fields, attribute slots and optimizer floats; each gets its CRC recomputed so that it
reaches the checks behind it. Then targeted cases for the findings of earlier fuzz runs.
"""

from __future__ import annotations

import collections
import re
import struct
import time
import warnings
from collections.abc import Callable

import numpy as np
import pytest

from jaxtiny.errors import NonFiniteLossError
from lowering import blob, planner
from lowering.blob import HEADER, HEADER_AT, OP, OP_AT, TENSOR, TENSOR_AT, BlobError
from lowering.cruntime import CRuntime, status_str
from lowering.ir import ITEMSIZE, Op
from lowering.opset import DTYPES
from lowering.planner import Buffer, buffer_size

from helpers import seed_blobs

CASES = 1500  # mutants over all seeds (about 20 s on one core)
RNG_SEED = 2026
BOUNDARY = (0, -1, 1, 2, 2**31 - 1, -2**31, 3, 4, 7, 8, 16, 255, 65536)


@pytest.fixture(scope="module")
def seeds() -> dict[str, bytes]:
  return seed_blobs()


# --- mutations -----------------------------------------------------------------------------


def _u32(b: bytearray, at: int) -> int:
  return struct.unpack_from("<I", b, at)[0]


def _put(b: bytearray, at: int, value: int) -> None:
  struct.pack_into("<I", b, at, value & 0xFFFFFFFF)


def _pick(rng: np.random.Generator, values):
  return values[int(rng.integers(len(values)))]


def _boundary(rng: np.random.Generator, old: int) -> int:
  if rng.random() < 0.3:
    return old + _pick(rng, (-2, -1, 1, 2))
  return _pick(rng, BOUNDARY) if rng.random() < 0.8 else int(rng.integers(-8, 64))


def _records(h: dict, section: str) -> tuple[int, int, int]:
  """(offset, record size, count) of a counted section."""
  size = {"tensors": TENSOR.size, "train_ops": OP.size, "infer_ops": OP.size,
          "operands": 4, "attrs": 4}[section]
  return h[f"{section}_offset"], size, h[f"n_{section}"]


def _flip_byte(rng, b, h, r) -> str:
  at = int(rng.integers(HEADER.size, len(b)))
  b[at] ^= int(rng.integers(1, 256))
  return f"byte {at} flipped"


def _flip_bit(rng, b, h, r) -> str:
  at = int(rng.integers(HEADER_AT["crc"] + 4, len(b)))
  b[at] ^= 1 << int(rng.integers(8))
  return f"bit of byte {at} flipped"


def _int32_field(rng, b, h, r) -> str:
  section = _pick(rng, ("tensors", "train_ops", "infer_ops", "operands", "attrs", "header"))
  if section == "header":
    name = _pick(rng, [k for k, code in blob.HEADER_FIELDS if code in ("I", "i")
                       and k not in ("magic", "crc", "sentinel", "version", "header_size",
                                     "blob_size")])
    at = HEADER_AT[name]
  else:
    start, size, n = _records(h, section)
    if n == 0:
      return "nothing"
    at = start + 4 * int(rng.integers(n * size // 4))
    name = f"{section} byte {at - start}"
  old = struct.unpack_from("<i", b, at)[0]
  new = _boundary(rng, old)
  _put(b, at, new)
  return f"{name}: {old} -> {new}"


def _swap_records(rng, b, h, r) -> str:
  section = _pick(rng, ("train_ops", "infer_ops", "tensors"))
  start, size, n = _records(h, section)
  i, j = (int(v) for v in rng.integers(n, size=2))
  if i != j and rng.random() < 0.5:  # often neighbours: op order is what the plan checks
    j = min(i + 1, n - 1)
  a, c = start + i * size, start + j * size
  b[a:a + size], b[c:c + size] = b[c:c + size], b[a:a + size]
  return f"{section} records {i} and {j} swapped"


def _duplicate_record(rng, b, h, r) -> str:
  section = _pick(rng, ("train_ops", "infer_ops"))
  start, size, n = _records(h, section)
  i, j = (int(v) for v in rng.integers(n, size=2))
  b[start + j * size:start + (j + 1) * size] = b[start + i * size:start + (i + 1) * size]
  return f"{section} record {i} copied over {j}"


def _drop_records(rng, b, h, r) -> str:
  section = _pick(rng, ("train_ops", "infer_ops"))
  start, size, n = _records(h, section)
  k = int(rng.integers(1, max(2, n // 4)))
  if rng.random() < 0.5:  # drop from the front: move the section's start
    _put(b, HEADER_AT[f"{section}_offset"], start + k * size)
  _put(b, HEADER_AT[f"n_{section}"], n - k)
  _put(b, HEADER_AT[f"{section}_size"], (n - k) * size)
  return f"{section}: {k} records dropped"


def _swap_operands(rng, b, h, r) -> str:
  start, _, n = _records(h, "operands")
  i = int(rng.integers(n))
  j = min(n - 1, i + int(rng.integers(1, 6))) if rng.random() < 0.7 else int(rng.integers(n))
  a, c = start + 4 * i, start + 4 * j
  b[a:a + 4], b[c:c + 4] = b[c:c + 4], b[a:a + 4]
  return f"operands {i} and {j} swapped"


def _fix_nbytes(b: bytearray, at: int) -> None:
  dtype, rank = DTYPES[b[at + TENSOR_AT["dtype"]] % len(DTYPES)], b[at + TENSOR_AT["rank"]]
  dims = struct.unpack_from("<6I", b, at + TENSOR_AT["dims"])[:min(rank, 6)]
  n = int(np.prod(dims, dtype=object)) if dims else 1
  _put(b, at + TENSOR_AT["nbytes"], (n + 7) // 8 if dtype == "bit" else n * ITEMSIZE[dtype])


def _change_dim(rng, b, h, r) -> str:
  start, size, n = _records(h, "tensors")
  t = int(rng.integers(n))
  at = start + t * size
  rank = b[at + TENSOR_AT["rank"]]
  if rank == 0 or rank > 6:
    return "nothing"
  k = int(rng.integers(rank))
  d_at = at + TENSOR_AT["dims"] + 4 * k
  old = _u32(b, d_at)
  new = _pick(rng, (0, 1, old + 1, max(old - 1, 0), 2 * old, 2**31 - 1, 2**16, 2**32 - 1))
  _put(b, d_at, new)
  if rng.random() < 0.5:  # a zero dim elsewhere keeps the byte size small
    _put(b, at + TENSOR_AT["dims"] + 4 * int(rng.integers(rank)), 0)
  _fix_nbytes(b, at)
  return f"tensor {t} dim {k}: {old} -> {new} (nbytes fixed)"


def _tensor_field(rng, b, h, r) -> str:
  start, size, n = _records(h, "tensors")
  t = int(rng.integers(n))
  at = start + t * size
  field = _pick(rng, ("dtype", "storage", "alias", "location", "rank"))
  if field in ("dtype", "storage", "rank"):
    b[at + TENSOR_AT[field]] = int(rng.integers({"dtype": 6, "storage": 4, "rank": 7}[field]))
    _fix_nbytes(b, at)
    return f"tensor {t} {field} -> {b[at + TENSOR_AT[field]]}"
  if field == "alias":
    new = -1 if rng.random() < 0.3 else int(rng.integers(n))
  else:  # another tensor's location, or near its own
    other = start + int(rng.integers(n)) * size + TENSOR_AT["location"]
    new = struct.unpack_from("<i", b, other)[0] if rng.random() < 0.6 else _boundary(
      rng, struct.unpack_from("<i", b, at + TENSOR_AT["location"])[0])
  _put(b, at + TENSOR_AT[field], new)
  return f"tensor {t} {field} -> {new}"


def _optimizer_float(rng, b, h, r) -> str:
  name = _pick(rng, blob.OPT_FLOATS)
  v = _pick(rng, (0.0, 1e-50, -1e-45, 1.0, np.nan, np.inf, 3.1e38, 0.5, -0.0, 1e30))
  struct.pack_into("<d", b, HEADER_AT[name], v)
  return f"{name} -> {v}"


def _slot(op: Op, key: str) -> int | None:
  """The attribute slot of a fixed-position entry of op's schema (None past an array)."""
  at = 0
  for k, enc in blob.opset.BY_NAME[op.name].attrs:
    scalar, array, _ = blob.opset.parse_encoding(enc)
    if k.removesuffix("?") == key:
      return at + k.endswith("?")
    if array:
      return None
    at += k.endswith("?") + blob.opset.scalar_slots(scalar)
  return None


def _op_with(rng, r, keys: tuple[str, ...]) -> tuple[str, int, Op, str] | None:
  """A random op (of either list) with one of these attributes, and that attribute."""
  found = [(which, i, op, k) for which, ops in (("train", r.train_ops), ("infer", r.infer_ops))
           for i, op in enumerate(ops) for k in keys if k in op.attrs and _slot(op, k) is not None]
  return _pick(rng, found) if found else None


def _enum_attr(rng, b, h, r) -> str:
  """Another function of a small op (the shapes stay valid: often accepted)."""
  hit = _op_with(rng, r, ("fn",))
  if hit is None:
    return "nothing"
  which, i, op, key = hit
  table = blob.opset.ENUMS[blob.opset.BY_NAME[op.name].attrs[0][1].removeprefix("enum:")]
  new = int(rng.integers(len(table)))
  _put(b, _attr(bytes(b), h, which, i, _slot(op, key)), new)
  return f"{which} op {i} ({op.name}) fn {op.attrs[key]} -> {table[new]}"


def _int8_attr(rng, b, h, r) -> str:
  """A zero point or clamp bound set to another int8 value."""
  hit = _op_with(rng, r, ("x_zero", "y_zero", "lo", "hi", "a_zero", "b_zero", "e_x_zero",
                          "e_y_zero", "d_y_zero", "p_y_zero", "e_lo", "d_hi", "p_lo"))
  if hit is None:
    return "nothing"
  which, i, op, key = hit
  new = _pick(rng, (-128, 127, 0, int(rng.integers(-128, 128))))
  _put(b, _attr(bytes(b), h, which, i, _slot(op, key)), new)
  return f"{which} op {i} ({op.name}) {key} {op.attrs[key]} -> {new}"


SPECIAL = {"f32": (np.nan, np.inf, -np.inf, -0.0, 3e38, 1e-45, 1e6, -1e-3),
           "i32": (-2**31, 2**31 - 1, 0, -1, 1 << 20), "i8": (-128, 127, 0), "u32": (0, 2**32 - 1)}


def _data_value(rng, b, h, r) -> str:
  """An element of a constant or of the initial state set to a special value."""
  ts = [t for t in r.graph.tensors if t.storage in ("const", "state") and t.dtype in SPECIAL
        and t.nbytes]
  t = _pick(rng, ts)
  k = int(rng.integers(t.nbytes // ITEMSIZE[t.dtype]))
  v = _pick(rng, SPECIAL[t.dtype])
  code = {"f32": "<f", "i32": "<i", "i8": "<b", "u32": "<I"}[t.dtype]
  struct.pack_into(code, b, h["consts_offset"] + r.locations[t.id] + k * ITEMSIZE[t.dtype], v)
  return f"{t.storage} tensor {t.id} ({t.name}) element {k} -> {v}"


MUTATIONS: dict[str, tuple[Callable, float]] = {  # name -> (mutation, weight)
  "flip byte": (_flip_byte, 2), "flip bit": (_flip_bit, 1), "int32 field": (_int32_field, 4),
  "swap records": (_swap_records, 1.5), "duplicate record": (_duplicate_record, 1),
  "drop records": (_drop_records, 0.5), "swap operands": (_swap_operands, 2),
  "change dim": (_change_dim, 2), "tensor field": (_tensor_field, 2),
  "optimizer float": (_optimizer_float, 0.5), "enum attr": (_enum_attr, 1),
  "int8 attr": (_int8_attr, 1), "data value": (_data_value, 1.5),
}


def _with_crc(b: bytearray) -> bytes:
  _put(b, HEADER_AT["crc"], blob.crc(b))
  return bytes(b)


# --- running both --------------------------------------------------------------------------


def _verdicts(data: bytes) -> tuple[blob.Blob | BlobError, CRuntime | BlobError]:
  try:
    py: blob.Blob | BlobError = blob.read(data)
  except BlobError as e:
    py = e
  try:
    c: CRuntime | BlobError = CRuntime(data)
  except BlobError as e:
    c = e
  return py, c


def _c_status(e: BlobError) -> int:
  m = re.search(r"\(status (\d+)\)", str(e))
  return int(m[1]) if m else -1


def _state_bytes(b: blob.Blob, prog) -> dict[int, bytes]:
  return {t: v.tobytes() for t, v in prog.state_arrays().items()}


def _c_state(b: blob.Blob, rt: CRuntime) -> dict[int, bytes]:
  raw = rt.state_bytes()
  return {t.id: raw[b.locations[t.id]:b.locations[t.id] + t.nbytes]
          for t in b.graph.tensors if t.storage == "state"}


def _run_both(b: blob.Blob, rt: CRuntime, rng: np.random.Generator) -> list[str]:
  """Inference and two train steps on both; the differences found (empty: none)."""
  prog = b.program()
  shape, classes = prog.input_shape, prog.classes
  problems = []
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # a numpy warning is a finding too
    for step in range(2):
      x8 = rng.integers(-128, 128, size=shape).astype(np.int8)
      label = int(rng.integers(classes))
      if not np.array_equal(prog.infer(x8), rt.infer(x8)):
        problems.append(f"step {step}: logits differ")
      out = []
      for run in (prog.train_step, rt.train_step):
        try:
          out.append(np.float32(run(x8, label)).tobytes())
        except NonFiniteLossError:
          out.append(b"non-finite")
      if out[0] != out[1]:
        problems.append(f"step {step}: loss {out[0]!r} vs {out[1]!r}")
      if _state_bytes(b, prog) != _c_state(b, rt):
        problems.append(f"step {step}: state differs")
  if not rt.guards_intact():
    problems.append("the C runtime wrote past its arena or state")
  return problems


def test_verifiers_agree_on_mutants(seeds):
  rng = np.random.default_rng(RNG_SEED)
  names = list(MUTATIONS)
  weights = np.array([MUTATIONS[k][1] for k in names])
  stats: collections.Counter = collections.Counter()
  statuses: collections.Counter = collections.Counter()
  findings = []
  t0 = time.time()
  parsed = {k: blob.read(v) for k, v in seeds.items()}
  for case in range(CASES):
    seed = list(seeds)[case % len(seeds)]
    data, r = seeds[seed], parsed[seed]
    b = bytearray(data)
    what = []
    for _ in range(1 + int(rng.random() < 0.25)):  # sometimes two mutations
      kind = names[rng.choice(len(names), p=weights / weights.sum())]
      what.append(MUTATIONS[kind][0](rng, b, r.header, r))
      stats[kind] += 1
    mutant = _with_crc(b)
    label = f"case {case} ({seed}: {'; '.join(what)})"
    try:
      py, c = _verdicts(mutant)
    except Exception as e:  # noqa: BLE001 (anything but BlobError is a finding)
      findings.append(f"{label}: {type(e).__name__}: {e}")
      continue
    py_ok, c_ok = not isinstance(py, BlobError), not isinstance(c, BlobError)
    statuses["accepted" if py_ok and c_ok else "refused" if not (py_ok or c_ok)
             else "disagree"] += 1
    if not c_ok:
      statuses[f"C {status_str(_c_status(c))}"] += 1
    if py_ok != c_ok:
      findings.append(f"{label}: Python says {'ok' if py_ok else py}, C says "
                      f"{'ok' if c_ok else c}")
    elif py_ok:
      try:
        findings += [f"{label}: {p}" for p in _run_both(py, c, rng)]
      except Exception as e:  # noqa: BLE001
        findings.append(f"{label}: running raised {type(e).__name__}: {e}")
  seconds = time.time() - t0
  print(f"\n{CASES} mutants in {seconds:.1f} s; mutations {dict(stats)}")
  print("verdicts:", dict(statuses.most_common()))
  assert not findings, f"{len(findings)} findings:\n" + "\n".join(findings[:30])
  assert statuses["accepted"] > CASES // 20 and statuses["refused"] > CASES // 3, statuses



# --- the findings of earlier fuzz runs: each refused by both ---------------------------------


def _refused_by_both(b: bytearray, message: str) -> None:
  data = _with_crc(b)
  t0 = time.time()
  with pytest.raises(BlobError, match=message):
    blob.read(data)
  with pytest.raises(BlobError, match="the C runtime refused"):
    CRuntime(data)
  assert time.time() - t0 < 2, "a refusal should be quick"


def _tensor(h: dict, t: int, field: str) -> int:
  return h["tensors_offset"] + t * TENSOR.size + TENSOR_AT[field]


def _operand(data: bytes, h: dict, which: str, i: int, k: int) -> int:
  """Byte offset of operand k (inputs, then outputs) of op i of a list."""
  start = _u32(bytearray(data), h[f"{which}_ops_offset"] + i * OP.size + OP_AT["operand_start"])
  return h["operands_offset"] + 4 * (start + k)


def _attr(data: bytes, h: dict, which: str, i: int, slot: int) -> int:
  start = _u32(bytearray(data), h[f"{which}_ops_offset"] + i * OP.size + OP_AT["attr_start"])
  return h["attrs_offset"] + 4 * (start + slot)


@pytest.fixture(scope="module")
def sparse(seeds):
  data = seeds["block-sparse"]
  return data, blob.read(data)


def test_zero_dim_beside_huge_dims(sparse):
  data, r = sparse
  for storage in ("const", "state"):
    t = next(t for t in r.graph.tensors if t.storage == storage)
    b = bytearray(data)
    b[_tensor(r.header, t.id, "rank")] = 3
    struct.pack_into("<6I", b, _tensor(r.header, t.id, "dims"), 0, 1 << 16, 1 << 16, 0, 0, 0)
    _put(b, _tensor(r.header, t.id, "nbytes"), 0)
    _refused_by_both(b, r"has more than 2147483647 elements \(zero dims counted as one\)")


def test_unbounded_arena_or_state(sparse):
  data, r = sparse
  for field in ("arena_bytes", "state_bytes"):
    b = bytearray(data)
    _put(b, HEADER_AT[field], 0xFFFFFFFC)
    _refused_by_both(b, f"header byte {HEADER_AT[field]}")


def test_long_alias_chain_is_refused_quickly(sparse):
  """4000 views chained onto an arena tensor (and a cycle): refused at depth 16, fast."""
  _, r = sparse
  prog = r.program()
  g = prog.graph
  base = next(iter(prog.plan.buffers))
  t = g.tensors[base]
  for cycle in (False, True):
    first = len(g.tensors)
    prev = base
    for _ in range(4000):
      prev = g.add("view", t.shape, t.dtype, "arena", alias=prev)
    if cycle:
      g.tensors[first].alias = prev
    b = bytearray(blob.encode(prog))
    del g.tensors[first:]
    _refused_by_both(b, r"a chain of more than 16 aliases \(or a cycle\)")


def test_infer_ops_in_another_order(sparse):
  data, r = sparse
  b = bytearray(data)
  at = r.header["infer_ops_offset"]
  b[at:at + OP.size], b[at + OP.size:at + 2 * OP.size] = (b[at + OP.size:at + 2 * OP.size],
                                                          b[at:at + OP.size])
  _refused_by_both(b, r"infer ops: tensor .* is read by op 0 .* before any op writes it")


def test_live_infer_tensors_sharing_bytes(sparse):
  """Two arena tensors live at once in inference (not in the train step) on one offset."""
  data, r = sparse
  g, ops = r.graph, r.infer_ops
  # the input and the output of the second infer op are live together there
  x, y = g.base(ops[1].inputs[0]), g.base(ops[1].outputs[0])
  b = bytearray(data)
  struct.pack_into("<i", b, _tensor(r.header, y, "location"), r.locations[x])
  _refused_by_both(b, r"memory plan of the (train|infer) ops: tensors \d+ and \d+ overlap")


@pytest.mark.parametrize("value", [-1, 1 << 20])
def test_channel_list_out_of_range(sparse, value):
  data, r = sparse
  op = next(op for op in r.train_ops if op.name == "gather_channels_s8")
  sel = op.inputs[1]
  b = bytearray(data)
  struct.pack_into("<i", b, r.header["consts_offset"] + r.locations[sel], value)
  _refused_by_both(b, r"gather_channels_s8.*channel list .* strictly ascending")


def test_huge_padding(seeds):
  """Padding 2**31-1: of a conv, and of a weight update whose stride keeps its gradient's
  shape (the reference would pad the saved input by 2**31 rows)."""
  data = seeds["block-sparse"]
  r = blob.read(data)
  i = next(i for i, op in enumerate(r.train_ops) if op.name == "conv2d_s8")
  b = bytearray(data)
  _put(b, _attr(data, r.header, "train", i, 2), 2**31 - 1)
  _refused_by_both(b, r"conv2d_s8.*rows: padding \(2147483647, \d+\) makes a padded size")
  i, op = next((i, op) for i, op in enumerate(r.train_ops) if op.name == "conv2d_update_s8")
  x, grad = r.graph.tensors[op.inputs[1]], r.graph.tensors[op.inputs[0]]
  kh, ho, pb = r.graph.tensors[op.inputs[2]].shape[1], grad.shape[1], op.attrs["padding"][0][1]
  span = x.shape[1] + 2**31 - 1 + pb - kh
  stride = span // (ho - 1) if ho > 1 else span + 1
  b = bytearray(data)
  _put(b, _attr(data, r.header, "train", i, 0), stride)
  _put(b, _attr(data, r.header, "train", i, 2), 2**31 - 1)
  _refused_by_both(b, r"conv2d_update_s8.*rows: padding \(2147483647, \d+\) makes a padded")


def test_per_op_mismatches(sparse):
  """A dtype, a shape and an attribute that the generic checks accept, each against one
  op's rule."""
  data, r = sparse
  g = r.graph
  i, op = next((i, op) for i, op in enumerate(r.train_ops) if op.name == "dense_s8")
  b = bytearray(data)  # the bias as float32 (same size)
  b[_tensor(r.header, op.inputs[2], "dtype")] = DTYPES.index("f32")
  _refused_by_both(b, r"dense_s8.*the bias \(tensor \d+\) must be i32, not f32")
  b = bytearray(data)  # the output one class short
  y = g.tensors[op.outputs[0]]
  _put(b, _tensor(r.header, y.id, "dims") + 4, y.shape[1] - 1)
  _fix_nbytes(b, _tensor(r.header, y.id, "dtype"))
  with pytest.raises(BlobError):  # which check speaks first does not matter here
    blob.read(_with_crc(b))
  b = bytearray(data)  # x_zero outside int8
  _put(b, _attr(data, r.header, "train", i, 0), 200)
  _refused_by_both(b, r"dense_s8.*x_zero 200 is not an int8 value")


def test_arena_view_of_another_storage(sparse):
  """An arena view (of the dtype and size it claims) of an io, const or state tensor."""
  data, r = sparse
  view = next(t for t in r.graph.tensors if t.alias is not None and t.storage == "arena")
  for storage in ("io", "const", "state"):
    other = next(t for t in r.graph.tensors if t.storage == storage)
    b = bytearray(data)
    at, to = _tensor(r.header, view.id, "dtype"), _tensor(r.header, other.id, "dtype")
    n = TENSOR_AT["alias"]  # dtype, storage, rank, reserved, dims
    b[at:at + n] = b[to:to + n]
    b[at + TENSOR_AT["storage"]] = blob.STORAGES.index("arena")
    struct.pack_into("<i", b, at + n, other.id)
    _put(b, _tensor(r.header, view.id, "nbytes"), other.nbytes)
    _refused_by_both(b, rf"tensor {view.id}: a arena alias of tensor {other.id}, a {storage}")


def test_infer_op_reading_the_label(sparse):
  """An infer op that is a train op's record (as lower() shares them) reading the label."""
  data, r = sparse
  i = next(i for i, op in enumerate(r.train_ops) if r.io["label"] in op.inputs)
  b = bytearray(data)
  at, rec = r.header["infer_ops_offset"], r.header["train_ops_offset"] + i * OP.size
  b[at:at + OP.size] = b[rec:rec + OP.size]
  _refused_by_both(b, r"infer op 0 .*an io buffer infer ops never see")


def test_momentum_that_vanishes_in_float32(sparse):
  data, _ = sparse
  b = bytearray(data)
  struct.pack_into("<d", b, HEADER_AT["momentum"], 1e-50)
  _refused_by_both(b, r"momentum 1e-50 .* is zero as a float32")


def test_infer_only_arena_tensor_runs_on_both(sparse):
  """A blob whose inference writes an arena tensor the train step never uses (a valid plan
  lower() does not make): both load it and infer alike."""
  _, r = sparse
  prog = r.program()
  g, infer = prog.graph, list(prog.infer_ops)
  y = infer[0].outputs[0]
  u = g.add("infer_only", g.tensors[y].shape, g.tensors[y].dtype, "arena")
  infer = [Op(op.name, [u if t == y else t for t in op.inputs],
              [u if t == y else t for t in op.outputs], dict(op.attrs)) for op in infer]
  prog.infer_ops = infer
  offset = prog.plan.arena_bytes
  prog.plan.buffers[u] = Buffer(u, buffer_size(g.tensors[u]), 0, 0, offset)
  prog.plan.arena_bytes = offset + buffer_size(g.tensors[u])
  data = blob.encode(prog)
  loaded, rt = blob.load(data), CRuntime(data)
  x8 = np.random.default_rng(0).integers(-128, 128, loaded.input_shape).astype(np.int8)
  np.testing.assert_array_equal(loaded.infer(x8), rt.infer(x8))
  assert blob.encode(loaded) == data  # and it saves back as it was


def test_write_through_an_io_view(sparse):
  """The loss written through a view of it: the executor keeps io buffers by tensor."""
  _, r = sparse
  prog = r.program()
  g, loss = prog.graph, prog.io["loss"]
  view = g.add("loss_view", (1,), "f32", "io", alias=loss)
  op = next(op for op in prog.train_ops if loss in op.outputs)
  op.outputs[op.outputs.index(loss)] = view
  _refused_by_both(bytearray(blob.encode(prog)), r"writes tensor \d+, a view of an io buffer")


def test_forward_op_in_place(seeds):
  """A conv whose output is a view of its input, with a valid plan: the C kernel would
  overwrite input rows it still reads (the executor computes the whole result first, so
  they differ): refused by both."""
  name = "conv2d_s8"
  r = blob.read(seeds["block-dw"])
  prog = r.program()
  g = prog.graph
  op = next(op for op in prog.train_ops if op.name == name
            and g.tensors[op.inputs[0]].nbytes == g.tensors[op.outputs[0]].nbytes
            and g.tensors[g.base(op.inputs[0])].storage == "arena")
  g.tensors[op.outputs[0]].alias = g.base(op.inputs[0])
  prog.plan, prog.infer_plan = planner.plan(g, prog.train_ops), None
  _refused_by_both(bytearray(blob.encode(prog)), rf"{name} cannot run in place")


def test_step_counter_counting_down(seeds):
  """The step counter's add made a sub (the counter goes negative): stochastic rounding
  hashes the counter's uint32 bits in both."""
  data = seeds["mlp"]
  r = blob.read(data)
  i = next(i for i, op in enumerate(r.train_ops) if op.name == "binary" and any(
    r.graph.tensors[t].name == "step" for t in op.inputs))
  b = bytearray(data)
  _put(b, _attr(data, r.header, "train", i, 0), blob.opset.BINARY.index("sub"))
  data = _with_crc(b)
  assert not _run_both(blob.read(data), CRuntime(data), np.random.default_rng(0))
