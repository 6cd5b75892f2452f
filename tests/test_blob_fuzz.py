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
import struct
import time
import warnings
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtiny as jt
from jaxtiny.errors import NonFiniteLossError
from lowering import blob
from lowering.blob import HEADER, HEADER_AT, OP, OP_AT, TENSOR, TENSOR_AT, BlobError
from lowering.cruntime import CRuntime, status_str
from lowering.ir import ITEMSIZE
from lowering.opset import DTYPES

from helpers import quantize_8x8x2

CASES = 1200  # mutants over all seeds (about 25 s on one core)
BOUNDARY = (0, -1, 1, 2, 2**31 - 1, -2**31, 3, 4, 7, 8, 16, 255, 65536)


class Block(nn.Module):
  """Strided conv, an inverted bottleneck (1x1, depthwise, 1x1), concat, residual add, max
  and average pool, dense."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu6(nn.Conv(4, (3, 3), strides=2)(x))
    y = nn.relu6(nn.Conv(8, (3, 3), feature_group_count=8)(nn.relu6(nn.Conv(8, (1, 1))(x))))
    x = jnp.concatenate([x, nn.Conv(4, (1, 1))(y)], axis=-1)
    x = nn.relu(nn.Conv(8, (1, 1))(x) + x)
    x = nn.max_pool(x, (2, 2), (1, 1))
    return nn.Dense(3)(x.mean(axis=(1, 2)))


class Mlp(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(nn.relu(nn.Dense(6)(x.reshape((x.shape[0], -1)))))


SEEDS = {  # name -> (module, update, optimizer, rounding)
  # the bottleneck's channel-by-channel backward updating expand rows; momentum, cosine
  "block-sparse": (Block, jt.SparseUpdate(bias_last=5, weights={1: 0.5, 4: 0.5}),
                   jt.sgd(jt.cosine(0.3, 10, final=0.01), momentum=0.9), "stochastic"),
  # a frozen prefix (banded bottleneck), depthwise channel subset, Adam
  "block-adam": (Block, jt.SparseUpdate(bias_last=3, weights={4: 0.5}, weights_last=2),
                 jt.adam(0.01), "nearest"),
  "mlp": (Mlp, jt.SparseUpdate.last_layers(1), jt.sgd(0.1), "stochastic"),
}


@pytest.fixture(scope="module")
def seeds() -> dict[str, bytes]:
  out = {}
  qms = {}
  for name, (module, update, optimizer, rounding) in SEEDS.items():
    if module not in qms:
      qms[module] = quantize_8x8x2(module())
    tr = jt.tiny_train(qms[module], optimizer=optimizer, update=update, rounding=rounding,
                       seed=5)(jt.softmax_cross_entropy)
    out[name] = blob.encode(tr.lower())
  return out


# --- mutations -----------------------------------------------------------------------------


def _u32(b: bytearray, at: int) -> int:
  return struct.unpack_from("<I", b, at)[0]


def _put(b: bytearray, at: int, value: int) -> None:
  struct.pack_into("<I", b, at, value & 0xFFFFFFFF)


def _pick(rng: np.random.Generator, values) -> int:
  return int(values[int(rng.integers(len(values)))])


def _boundary(rng: np.random.Generator, old: int) -> int:
  if rng.random() < 0.3:
    return old + _pick(rng, (-2, -1, 1, 2))
  return _pick(rng, BOUNDARY) if rng.random() < 0.8 else int(rng.integers(-8, 64))


def _records(h: dict, section: str) -> tuple[int, int, int]:
  """(offset, record size, count) of a counted section."""
  size = {"tensors": TENSOR.size, "train_ops": OP.size, "infer_ops": OP.size,
          "operands": 4, "attrs": 4}[section]
  return h[f"{section}_offset"], size, h[f"n_{section}"]


def _flip_byte(rng, b, h) -> str:
  at = int(rng.integers(HEADER.size, len(b)))
  b[at] ^= int(rng.integers(1, 256))
  return f"byte {at} flipped"


def _flip_bit(rng, b, h) -> str:
  at = int(rng.integers(HEADER_AT["crc"] + 4, len(b)))
  b[at] ^= 1 << int(rng.integers(8))
  return f"bit of byte {at} flipped"


def _int32_field(rng, b, h) -> str:
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


def _swap_records(rng, b, h) -> str:
  section = _pick(rng, ("train_ops", "infer_ops", "tensors"))
  start, size, n = _records(h, section)
  i, j = (int(v) for v in rng.integers(n, size=2))
  if i != j and rng.random() < 0.5:  # often neighbours: op order is what the plan checks
    j = min(i + 1, n - 1)
  a, c = start + i * size, start + j * size
  b[a:a + size], b[c:c + size] = b[c:c + size], b[a:a + size]
  return f"{section} records {i} and {j} swapped"


def _duplicate_record(rng, b, h) -> str:
  section = _pick(rng, ("train_ops", "infer_ops"))
  start, size, n = _records(h, section)
  i, j = (int(v) for v in rng.integers(n, size=2))
  b[start + j * size:start + (j + 1) * size] = b[start + i * size:start + (i + 1) * size]
  return f"{section} record {i} copied over {j}"


def _drop_records(rng, b, h) -> str:
  section = _pick(rng, ("train_ops", "infer_ops"))
  start, size, n = _records(h, section)
  k = int(rng.integers(1, max(2, n // 4)))
  if rng.random() < 0.5:  # drop from the front: move the section's start
    _put(b, HEADER_AT[f"{section}_offset"], start + k * size)
  _put(b, HEADER_AT[f"n_{section}"], n - k)
  _put(b, HEADER_AT[f"{section}_size"], (n - k) * size)
  return f"{section}: {k} records dropped"


def _swap_operands(rng, b, h) -> str:
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


def _change_dim(rng, b, h) -> str:
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


def _tensor_field(rng, b, h) -> str:
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


def _optimizer_float(rng, b, h) -> str:
  name = _pick(rng, blob.OPT_FLOATS)
  v = _pick(rng, (0.0, 1e-50, -1e-45, 1.0, np.nan, np.inf, 3.1e38, 0.5, -0.0, 1e30))
  struct.pack_into("<d", b, HEADER_AT[name], v)
  return f"{name} -> {v}"


MUTATIONS: dict[str, tuple[Callable, float]] = {  # name -> (mutation, weight)
  "flip byte": (_flip_byte, 2), "flip bit": (_flip_bit, 1), "int32 field": (_int32_field, 4),
  "swap records": (_swap_records, 1.5), "duplicate record": (_duplicate_record, 1),
  "drop records": (_drop_records, 0.5), "swap operands": (_swap_operands, 2),
  "change dim": (_change_dim, 2), "tensor field": (_tensor_field, 2),
  "optimizer float": (_optimizer_float, 0.5),
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
  rng = np.random.default_rng(2026)
  names = list(MUTATIONS)
  weights = np.array([MUTATIONS[k][1] for k in names])
  stats: collections.Counter = collections.Counter()
  statuses: collections.Counter = collections.Counter()
  findings = []
  t0 = time.time()
  for case in range(CASES):
    seed = list(seeds)[case % len(seeds)]
    data = seeds[seed]
    h = blob.read(data).header
    b = bytearray(data)
    what = []
    for _ in range(1 + int(rng.random() < 0.25)):  # sometimes two mutations
      kind = names[rng.choice(len(names), p=weights / weights.sum())]
      what.append(MUTATIONS[kind][0](rng, b, h))
      stats[kind] += 1
    mutant = _with_crc(b)
    label = f"case {case} ({seed}: {'; '.join(what)})"
    try:
      py, c = _verdicts(mutant)
    except Exception as e:  # noqa: BLE001: anything but BlobError is a finding
      findings.append(f"{label}: {type(e).__name__}: {e}")
      continue
    py_ok, c_ok = not isinstance(py, BlobError), not isinstance(c, BlobError)
    statuses["accepted" if py_ok and c_ok else "refused" if not (py_ok or c_ok)
             else "disagree"] += 1
    if not c_ok:
      statuses[f"C: {status_str(c.status) if hasattr(c, 'status') else c}"] += 1
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
