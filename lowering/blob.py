"""The blob: a lowered Program as one little-endian byte string (layout: docs/blob.md).

A C99 runtime keeps the blob in flash, verifies it once at load and then runs it, reading
the constants in place. `read` verifies what that runtime must, so a corrupt or hostile
blob raises BlobError, naming what is wrong and where, and never any other error.
Op attributes follow the schema of lowering/opset.py: an op added to that table needs no
code here as long as it uses known encodings.
"""

from __future__ import annotations

import math
import operator
import struct
import zlib
from dataclasses import asdict, dataclass
from itertools import accumulate
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from jaxtiny.errors import ModelFormatError
from lowering import opset, rules
from lowering.ir import ITEMSIZE, NUMPY, Graph, Op, Tensor
from lowering.planner import ALIGN, Buffer, Plan, buffer_bytes, buffer_size, lifetimes
from lowering.program import IoQuant, Program

MAGIC = b"JTB1"
VERSION = 2  # bumped by any change of the layout, an enum or an existing op's schema
SENTINEL = 0x01020304  # a reader of the wrong byte order sees 0x04030201
MAX_RANK = 6
MAX_ALIAS_DEPTH = 16  # JT_MAX_ALIAS_DEPTH: the longest chain of views a reader accepts
MAX_BUFFER_BYTES = 1 << 26  # JT_MAX_BUFFER_BYTES: the largest arena or state a blob may ask
MAX_ELEMENTS = 2**31 - 1  # of a tensor, its zero dims counted as 1 (so numpy can shape it)
SECTIONS = ("tensors", "train_ops", "infer_ops", "operands", "attrs", "strings", "consts")
COUNTED = SECTIONS[:5]  # the sections of fixed-size records, with a count in the header
STORAGES = ("const", "state", "io", "arena")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine")
ROUNDINGS = ("nearest", "stochastic")
IO_DTYPES = {"input": "i8", "label": "i32", "loss": "f32", "logits": "i8"}
OPT_FLOATS = ("lr", "final", "momentum", "b1", "b2", "eps")  # stored as float64
QUANT_FIELDS = ("input_inv_scale", "input_zero", "output_scale", "output_zero")

Fields = tuple[tuple[str, str], ...]


def _layout(fields: Fields) -> tuple[struct.Struct, dict[str, int]]:
  """A little-endian record of `fields` (name, struct code) and each field's byte offset."""
  sizes = [struct.calcsize("<" + code) for _, code in fields]
  return (struct.Struct("<" + "".join(code for _, code in fields)),
          dict(zip((name for name, _ in fields), accumulate(sizes, initial=0))))


HEADER_FIELDS: Fields = (
  ("magic", "4s"), ("sentinel", "I"), ("version", "I"), ("header_size", "I"),
  ("blob_size", "I"), ("crc", "I"),
  *((f"{s}_{k}", "I") for s in SECTIONS for k in ("offset", "size")),
  *((f"n_{s}", "I") for s in COUNTED),
  ("arena_bytes", "I"), ("state_bytes", "I"),
  *((k, "i") for k in IO_DTYPES),
  # float64: the executor (and the JAX step) compute the cosine schedule's amplitude
  # 0.5 * (lr - final) in float64 before rounding it to float32; so must a runtime, once.
  ("optimizer", "I"), ("schedule", "I"), ("steps", "I"), *((k, "d") for k in OPT_FLOATS),
  ("rounding", "I"), ("seed", "I"), ("name", "I"),
  # float32: how the int8 input and logits relate to real values (IoQuant), so a board (or
  # the command line) can quantize sensor floats and read real outputs from the blob alone.
  *((k, "f" if k.endswith("scale") else "i") for k in QUANT_FIELDS),
)
TENSOR_FIELDS: Fields = (
  ("dtype", "B"), ("storage", "B"), ("rank", "B"), ("reserved", "B"), ("dims", f"{MAX_RANK}I"),
  ("alias", "i"), ("nbytes", "I"), ("location", "i"), ("name", "I"),
)
OP_FIELDS: Fields = (
  ("opcode", "I"), ("operand_start", "I"), ("operand_count", "I"), ("inputs", "I"),
  ("attr_start", "I"), ("attr_count", "I"),
)
HEADER, HEADER_AT = _layout(HEADER_FIELDS)
TENSOR, TENSOR_AT = _layout(TENSOR_FIELDS)
OP, OP_AT = _layout(OP_FIELDS)
RECORD_BYTES = dict(zip(COUNTED, (TENSOR.size, OP.size, OP.size, 4, 4), strict=True))


class BlobError(ModelFormatError):
  """A blob that is corrupt, truncated, of another format version or inconsistent."""


def crc(data: bytes | bytearray) -> int:
  """zlib's CRC32 of the whole blob, its crc field read as zero."""
  at = HEADER_AT["crc"]
  view = memoryview(data)
  return zlib.crc32(view[at + 4:], zlib.crc32(bytes(4), zlib.crc32(view[:at])))


def _index(table: tuple[str, ...], value: Any, what: str) -> int:
  if value not in table:
    raise ValueError(f"{what} {value!r} is not one of {table}")
  return table.index(value)


def _enum(table: tuple[str, ...], i: int, where: str) -> str:
  if not 0 <= i < len(table):
    raise BlobError(f"{where}: {i} is out of range (0..{len(table) - 1})")
  return table[i]


# --- attributes: the opset schema, int32 slots ----------------------------------------------


def _i32(v: Any) -> int:
  if isinstance(v, bool | np.bool_):
    raise TypeError(f"{v!r} is a bool, not an int")
  n = operator.index(v)  # an int, never a silently truncated float
  if not -2**31 <= n < 2**31:
    raise ValueError(f"{n} does not fit in an int32")
  return n


def _f32_bits(v: Any) -> int:
  # The kernels compute with float32(v): rounding here changes no result.
  return int(np.array(float(v), np.float32).view(np.int32))


def _scalar_slots(scalar: str, v: Any) -> list[int]:
  if scalar.startswith("enum:"):
    return [_index(opset.ENUMS[scalar.removeprefix("enum:")], v, "name")]
  if scalar == "f32":
    return [_f32_bits(v)]
  if scalar == "bool":
    if not isinstance(v, bool | np.bool_):
      raise TypeError(f"{v!r} is not a bool")
    return [int(v)]
  if scalar == "pad4":
    (top, bottom), (left, right) = v
    v = (top, bottom, left, right)
  values = [v] if scalar == "i32" else list(v)
  if len(values) != opset.scalar_slots(scalar):
    raise ValueError(f"{v!r} is not an {scalar}")
  return [_i32(x) for x in values]


def _attr_slots(op: Op, where: str) -> list[int]:
  """The op's attribute dict as int32 slots, entry by entry of its schema."""
  schema = opset.BY_NAME[op.name].attrs
  unknown = set(op.attrs) - {key.removesuffix("?") for key, _ in schema}
  if unknown:
    raise ValueError(f"{where}: attributes {sorted(unknown)} have no encoding in "
                     "lowering/opset.py")
  slots: list[int] = []
  for key, enc in schema:
    name = key.removesuffix("?")
    scalar, array, nullable = opset.parse_encoding(enc)
    try:
      if key.endswith("?"):
        present = name in op.attrs
        slots.append(int(present))
        slots += (_scalar_slots(scalar, op.attrs[name]) if present
                  else [0] * opset.scalar_slots(scalar))
        continue
      if name not in op.attrs:
        raise ValueError("missing")
      v = op.attrs[name]
      if not array:
        slots += _scalar_slots(scalar, v)
      elif v is None and nullable:
        slots.append(-1)
      else:
        items = list(v)
        slots.append(len(items))
        for item in items:
          slots += _scalar_slots(scalar, item)
    except (TypeError, ValueError) as e:
      raise ValueError(f"{where}: attribute {name} ({enc}): {e}") from None
  return slots


def _scalar_value(scalar: str, s: list[int], where: str) -> Any:
  if scalar.startswith("enum:"):
    return _enum(opset.ENUMS[scalar.removeprefix("enum:")], s[0], where)
  if scalar == "f32":
    v = float(np.array(s[0], np.int32).view(np.float32))
    if not math.isfinite(v):
      raise BlobError(f"{where}: a multiplier of {v}")
    return v
  if scalar == "bool":
    if s[0] not in (0, 1):
      raise BlobError(f"{where}: bool slot holds {s[0]}")
    return bool(s[0])
  if scalar == "pad4":
    return ((s[0], s[1]), (s[2], s[3]))
  return s[0] if scalar == "i32" else tuple(s)


class _Slots:
  """An op's attribute slots, read front to back."""

  def __init__(self, slots: list[int], where: str):
    self.slots, self.pos, self.where = slots, 0, where

  def take(self, n: int) -> list[int]:
    if self.pos + n > len(self.slots):
      raise BlobError(f"{self.where}: attr count mismatch: {len(self.slots)} slots stored, "
                      "the schema needs more")
    self.pos += n
    return self.slots[self.pos - n:self.pos]


def _decode_attrs(d: opset.OpDef, slots: list[int], where: str) -> dict[str, Any]:
  """The inverse of _attr_slots, with the Python types the executor expects."""
  r = _Slots(slots, where)
  attrs: dict[str, Any] = {}
  for key, enc in d.attrs:
    name = key.removesuffix("?")
    at = f"{where}: attribute {name}"
    scalar, array, nullable = opset.parse_encoding(enc)
    k = opset.scalar_slots(scalar)
    if key.endswith("?"):
      present, *value = r.take(1 + k)
      if present not in (0, 1):
        raise BlobError(f"{at}: presence slot holds {present}")
      if present:
        attrs[name] = _scalar_value(scalar, value, at)
      elif any(value):
        raise BlobError(f"{at}: absent, but its slots are not zeros")
    elif not array:
      attrs[name] = _scalar_value(scalar, r.take(k), at)
    else:
      (count,) = r.take(1)
      if count == -1 and nullable:
        attrs[name] = None
        continue
      if count < 0:
        raise BlobError(f"{at}: array count {count}")
      values = r.take(count * k)
      attrs[name] = tuple(_scalar_value(scalar, values[i:i + k], at)
                          for i in range(0, len(values), k))
  if r.pos != len(slots):
    raise BlobError(f"{where}: attr count mismatch: {len(slots)} slots stored, the schema "
                    f"of {d.name} takes {r.pos}")
  return attrs


# --- writing --------------------------------------------------------------------------------


def _padded(b: bytes | bytearray) -> bytes:
  return bytes(b) + bytes(-len(b) % ALIGN)


def _tensor_bytes(t: Tensor, data: np.ndarray | None = None) -> bytes:
  data = t.data if data is None else data
  want = np.dtype(NUMPY[t.dtype])
  if data is None or data.dtype != want:
    raise ValueError(f"tensor {t.id} ({t.name}): {t.storage} data must be {want}, got "
                     f"{None if data is None else data.dtype}")
  raw = np.ascontiguousarray(data, want.newbyteorder("<")).tobytes()
  if len(raw) != t.nbytes:
    raise ValueError(f"tensor {t.id} ({t.name}): {len(raw)} bytes of data, {t.nbytes} expected")
  return _padded(raw)


def encode(program: Program, state: str = "current") -> bytes:
  """The blob of `program`: what Program.save writes. Its state image holds the state as
  trained so far ("current") or as lowered ("initial")."""
  if state not in ("current", "initial"):
    raise ValueError(f"state must be 'current' or 'initial', got {state!r}")
  values = program.state_arrays() if state == "current" else {}
  g = program.graph
  strings = bytearray()

  def string(s: str) -> int:
    raw = s.encode()
    if b"\0" in raw:
      raise ValueError(f"name {s!r} holds a NUL byte")
    strings.extend(raw + b"\0")
    return len(strings) - len(raw) - 1

  name = string(program.name)
  # The constants section starts with the state image (its initial values, copied to SRAM
  # at init; a state tensor's location is its offset in both), then each constant.
  location = [-1] * len(g.tensors)
  consts = bytearray()

  def place(storage: str) -> None:
    for t in g.tensors:
      if t.storage == storage:
        location[t.id] = len(consts)
        consts.extend(_tensor_bytes(t, values.get(t.id)))

  place("state")
  state_bytes = len(consts)
  place("const")
  for plan in (program.infer_plan, program.plan):  # a loaded blob's infer-only buffers too
    for tid, b in (plan.buffers if plan is not None else {}).items():
      location[tid] = b.offset

  tensors = bytearray()
  for t in g.tensors:
    if len(t.shape) > MAX_RANK:
      raise ValueError(f"tensor {t.id} ({t.name}): rank {len(t.shape)} > {MAX_RANK}")
    tensors += TENSOR.pack(_index(opset.DTYPES, t.dtype, f"tensor {t.id} dtype"),
                           _index(STORAGES, t.storage, f"tensor {t.id} storage"), len(t.shape),
                           0, *t.shape, *[0] * (MAX_RANK - len(t.shape)),
                           -1 if t.alias is None else t.alias, t.nbytes, location[t.id],
                           string(t.name))

  operands: list[int] = []
  attrs: list[int] = []
  records: dict[int, bytes] = {}  # an infer op that is a train op shares its record

  def op_table(ops: list[Op], which: str) -> bytes:
    out = bytearray()
    for i, op in enumerate(ops):
      if id(op) not in records:
        slots = _attr_slots(op, f"{which} op {i} ({op.name})")
        records[id(op)] = OP.pack(opset.BY_NAME[op.name].id, len(operands),
                                  len(op.inputs) + len(op.outputs), len(op.inputs), len(attrs),
                                  len(slots))
        operands.extend(op.inputs + op.outputs)
        attrs.extend(slots)
      out += records[id(op)]
    return bytes(out)

  train, infer = op_table(program.train_ops, "train"), op_table(program.infer_ops, "infer")
  body = {"tensors": bytes(tensors), "train_ops": train, "infer_ops": infer,
          "operands": np.array(operands, "<i4").tobytes(),
          "attrs": np.array(attrs, "<i4").tobytes(), "strings": _padded(strings),
          "consts": bytes(consts)}
  sections: dict[str, int] = {}
  offset = HEADER.size
  for s in SECTIONS:
    sections[f"{s}_offset"], sections[f"{s}_size"] = offset, len(body[s])
    offset += len(body[s])
  opt = program.optimizer
  if not 0 <= program.seed < 2**32:
    raise ValueError(f"seed {program.seed} does not fit in a uint32")
  h = {"magic": MAGIC, "sentinel": SENTINEL, "version": VERSION, "header_size": HEADER.size,
       "blob_size": offset, "crc": 0, **sections,
       "n_tensors": len(g.tensors), "n_train_ops": len(train) // OP.size,
       "n_infer_ops": len(infer) // OP.size, "n_operands": len(operands),
       "n_attrs": len(attrs), "arena_bytes": program.arena_bytes, "state_bytes": state_bytes,
       **program.io, "optimizer": _index(OPTIMIZERS, opt["kind"], "optimizer"),
       "schedule": _index(SCHEDULES, opt["schedule"], "schedule"), "steps": opt["steps"],
       **{k: opt[k] for k in OPT_FLOATS},
       "rounding": _index(ROUNDINGS, program.rounding, "rounding"), "seed": program.seed,
       "name": name, **asdict(program.quant)}
  data = bytearray(HEADER.pack(*(h[k] for k, _ in HEADER_FIELDS)))
  for s in SECTIONS:
    data += body[s]
  struct.pack_into("<I", data, HEADER_AT["crc"], crc(data))
  return bytes(data)


# --- reading and verifying ------------------------------------------------------------------


@dataclass
class Blob:
  """A verified blob: the parts of its Program, its header and the tensors' locations."""

  header: dict[str, Any]
  name: str
  graph: Graph
  train_ops: list[Op]
  infer_ops: list[Op]
  io: dict[str, int]
  optimizer: dict[str, Any]
  rounding: str
  seed: int
  plan: Plan
  locations: list[int]  # const: offset in consts; state: in the state image; arena; -1
  infer_plan: Plan | None = None  # the inference ops' buffers (lifetimes in that list)
  quant: IoQuant = IoQuant()

  def program(self) -> Program:
    return Program(self.graph, self.train_ops, self.infer_ops, self.io, self.optimizer,
                   self.rounding, self.seed, self.name, plan=self.plan,
                   infer_plan=self.infer_plan, quant=self.quant)


def _header(data: bytes) -> dict[str, Any]:
  """The header, after the checks that come before the CRC's (so their message is exact)."""
  if data[:4] != MAGIC[:len(data)]:
    raise BlobError(f"not a jaxtiny blob: bytes 0-3 are {data[:4]!r}, not {MAGIC!r}")
  if len(data) < HEADER.size:
    raise BlobError(f"truncated: {len(data)} bytes, a version {VERSION} header alone takes "
                    f"{HEADER.size}")
  h = dict(zip((name for name, _ in HEADER_FIELDS), HEADER.unpack_from(data)))
  if h["sentinel"] == int.from_bytes(SENTINEL.to_bytes(4, "little"), "big"):
    raise BlobError(f"wrong byte order: the sentinel at byte {HEADER_AT['sentinel']} reads "
                    f"0x{h['sentinel']:08x}; blobs are little-endian (0x{SENTINEL:08x})")
  if h["sentinel"] != SENTINEL:
    raise BlobError(f"bad byte-order sentinel 0x{h['sentinel']:08x} at byte "
                    f"{HEADER_AT['sentinel']} (expected 0x{SENTINEL:08x})")
  if h["version"] != VERSION:
    raise BlobError(f"unsupported blob version {h['version']} at byte {HEADER_AT['version']} "
                    f"(this reader reads version {VERSION})")
  if h["header_size"] != HEADER.size:
    raise BlobError(f"header size {h['header_size']} at byte {HEADER_AT['header_size']}: a "
                    f"version {VERSION} header takes {HEADER.size}")
  if h["blob_size"] != len(data):
    what = "truncated" if len(data) < h["blob_size"] else "trailing bytes"
    raise BlobError(f"{what}: the header (byte {HEADER_AT['blob_size']}) gives "
                    f"{h['blob_size']} bytes, the data has {len(data)}")
  if crc(data) != h["crc"]:
    raise BlobError(f"CRC mismatch: 0x{h['crc']:08x} stored at byte {HEADER_AT['crc']}, "
                    f"0x{crc(data):08x} computed: the blob is corrupt")
  return h


def _sections(data: bytes, h: dict[str, Any]) -> dict[str, bytes]:
  spans = []
  for s in SECTIONS:
    start, size = h[f"{s}_offset"], h[f"{s}_size"]
    where = f"section {s} (header byte {HEADER_AT[s + '_offset']})"
    if start % ALIGN or size % ALIGN:
      raise BlobError(f"{where}: offset {start} and size {size} must be 4-byte aligned")
    if start < HEADER.size or start + size > len(data):
      raise BlobError(f"{where}: [{start}, {start + size}) lies outside the blob's "
                      f"[{HEADER.size}, {len(data)})")
    if s in COUNTED and size != h[f"n_{s}"] * RECORD_BYTES[s]:
      raise BlobError(f"{where}: {size} bytes for {h[f'n_{s}']} records of "
                      f"{RECORD_BYTES[s]} bytes")
    spans.append((start, size, s))
  spans.sort()
  nonempty = [span for span in spans if span[1]]  # an empty section shares no byte
  for (a, size, s), (b, _, t) in zip(nonempty, nonempty[1:]):
    if a + size > b:
      raise BlobError(f"sections {s} and {t} overlap at byte {b}")
  return {s: data[start:start + size] for start, size, s in spans}


def _string(strings: bytes, offset: int, where: str) -> str:
  end = strings.find(b"\0", offset) if offset < len(strings) else -1
  if end < 0:
    raise BlobError(f"{where}: name at string offset {offset} is outside the string table "
                    f"({len(strings)} bytes) or not NUL-terminated")
  try:
    return strings[offset:end].decode()
  except UnicodeDecodeError as e:
    raise BlobError(f"{where}: name is not UTF-8 ({e.reason})") from None


def _tensor_data(consts: bytes, dtype: str, shape: tuple[int, ...], start: int,
                 nbytes: int, where: str) -> np.ndarray:
  raw = consts[start:start + nbytes]
  if dtype == "bit":
    return np.frombuffer(raw, np.uint8).copy()
  if dtype == "bool" and any(b > 1 for b in raw):
    raise BlobError(f"{where}: bool data holds a byte other than 0 or 1")
  want = np.dtype(NUMPY[dtype])
  return np.frombuffer(raw, want.newbyteorder("<")).astype(want).reshape(shape)


def _tensors(sec: dict[str, bytes], h: dict[str, Any]) -> tuple[Graph, list[int]]:
  n, consts, strings = h["n_tensors"], sec["consts"], sec["strings"]
  state_end, arena = h["state_bytes"], h["arena_bytes"]
  if arena > MAX_BUFFER_BYTES:
    raise BlobError(f"an arena of {arena} bytes (header byte {HEADER_AT['arena_bytes']}): "
                    f"at most {MAX_BUFFER_BYTES}")
  if 8 * n > MAX_BUFFER_BYTES:  # jt_arena_size: the C verifier's scratch, 8 bytes a tensor
    raise BlobError(f"{n} tensors: at most {MAX_BUFFER_BYTES // 8}")
  if state_end % ALIGN or state_end > len(consts) or state_end > MAX_BUFFER_BYTES:
    raise BlobError(f"state image of {state_end} bytes (header byte "
                    f"{HEADER_AT['state_bytes']}) does not fit the {len(consts)}-byte "
                    f"constants section (or is over {MAX_BUFFER_BYTES}, or misaligned)")
  g, locations = Graph(), []
  for i, rec in enumerate(TENSOR.iter_unpack(sec["tensors"])):
    dt, st, rank, reserved, *dims, alias, nbytes, loc, name = rec
    where = f"tensor {i} (byte {h['tensors_offset'] + i * TENSOR.size})"
    dtype = _enum(opset.DTYPES, dt, f"{where}: dtype")
    storage = _enum(STORAGES, st, f"{where}: storage")
    if rank > MAX_RANK or reserved or any(dims[rank:]):
      raise BlobError(f"{where}: rank {rank} (at most {MAX_RANK}, unused dims and the "
                      "reserved byte zero)")
    shape = tuple(dims[:rank])
    elements = math.prod(shape)
    if math.prod(d or 1 for d in shape) > MAX_ELEMENTS:
      raise BlobError(f"{where}: shape {list(shape)} has more than {MAX_ELEMENTS} elements "
                      "(zero dims counted as one)")
    want = (elements + 7) // 8 if dtype == "bit" else elements * ITEMSIZE[dtype]
    if nbytes != want:
      raise BlobError(f"{where}: byte size {nbytes}, but {dtype}{list(shape)} takes {want}")
    if not -1 <= alias < n or alias == i:
      raise BlobError(f"{where}: alias {alias} out of range (-1, or another of {n} tensors)")
    if alias >= 0 and (storage in ("const", "state") or loc != -1):
      raise BlobError(f"{where}: an alias has no data or location of its own")
    data = None
    if storage in ("const", "state"):
      end = state_end if storage == "state" else len(consts)
      if loc < 0 or loc % ALIGN or loc + nbytes > end:
        raise BlobError(f"{where}: {storage} data [{loc}, {loc + nbytes}) lies outside "
                        f"[0, {end}) of the {'state image' if storage == 'state' else 'consts'}")
      data = _tensor_data(consts, dtype, shape, loc, nbytes, where)
    elif storage == "io" and loc != -1:
      raise BlobError(f"{where}: an io tensor has location {loc}, not -1")
    elif storage == "arena" and loc != -1 and (loc < 0 or loc % ALIGN
                                               or loc + buffer_bytes(nbytes) > arena):
      raise BlobError(f"{where}: arena tensor at [{loc}, {loc + nbytes}) lies beyond the "
                      f"arena of {arena} bytes (or is misaligned)")
    g.tensors.append(Tensor(i, _string(strings, name, where), shape, dtype, storage, data,
                            None if alias < 0 else alias))
    locations.append(loc)
  for t in g.tensors:  # aliases: short chains of one dtype and size, of their base's storage
    a, depth = t, 0
    while a.alias is not None:
      b = g.tensors[a.alias]
      if depth == MAX_ALIAS_DEPTH:
        raise BlobError(f"tensor {t.id}: a chain of more than {MAX_ALIAS_DEPTH} aliases (or "
                        "a cycle)")
      if (b.dtype, b.nbytes) != (a.dtype, a.nbytes):
        raise BlobError(f"tensor {a.id}: alias of tensor {b.id} with another dtype or size")
      a, depth = b, depth + 1
    if a.storage != t.storage:
      raise BlobError(f"tensor {t.id}: a {t.storage} alias of tensor {a.id}, a {a.storage} "
                      "tensor")
  planned = [locations[t.id] + buffer_bytes(t.nbytes) for t in g.tensors
             if t.storage == "arena" and locations[t.id] >= 0]
  if max(planned, default=0) != arena:
    raise BlobError(f"arena of {arena} bytes (header byte {HEADER_AT['arena_bytes']}), but "
                    f"its buffers reach byte {max(planned, default=0)}")
  _check_state_disjoint(g, locations)
  return g, locations


def _check_state_disjoint(g: Graph, locations: list[int]) -> None:
  """State tensors are written at run time: no two may share bytes of the state image."""
  spans = sorted((locations[t.id], t.nbytes, t.id) for t in g.tensors
                 if t.storage == "state" and t.nbytes)  # an empty tensor shares no byte
  for (a, size, s), (b, _, t) in zip(spans, spans[1:]):
    if a + size > b:
      raise BlobError(f"state tensors {s} and {t} overlap in the state image at byte {b}")


def _ops(which: str, table: bytes, base: int, operands: list[int], attrs: list[int], g: Graph,
         io: dict[str, int], memo: dict[tuple, Op], slots: int) -> list[Op]:
  # Train ops never see the logits buffer, inference never the label or the loss; no op
  # writes the caller's input or label.
  unseen = {io["logits"]} if which == "train" else {io["label"], io["loss"]}
  read_only = {io["input"], io["label"]}
  ops = []
  for i, rec in enumerate(OP.iter_unpack(table)):
    code, o0, on, nin, a0, an = rec
    where = f"{which} op {i} (byte {base + i * OP.size})"
    d = opset.BY_ID.get(code)
    if d is None:
      raise BlobError(f"{where}: unknown opcode {code}")
    where = f"{which} op {i} ({d.name}, byte {base + i * OP.size})"
    if rec in memo:  # the same record in both lists: the same op, as lower() makes them;
      op = memo[rec]  # its rule holds, but not necessarily this list's io rules
      _check_io_use(op.inputs, op.outputs, g, unseen, read_only, which, where)
      ops.append(op)
      continue
    if o0 + on > len(operands) or nin > on or a0 + an > len(attrs):
      raise BlobError(f"{where}: operands [{o0}, {o0 + on}) or attrs [{a0}, {a0 + an}) "
                      f"beyond the {len(operands)} operands and {len(attrs)} attr slots")
    ins, outs = operands[o0:o0 + nin], operands[o0 + nin:o0 + on]
    for kind, spec, got in (("inputs", d.inputs, ins), ("outputs", d.outputs, outs)):
      least, most = opset.arity(spec)
      if len(got) < least or (most != opset.ANY and len(got) > most):
        takes = (f"at least {least}" if most == opset.ANY else str(least) if least == most
                 else f"{least} to {most}")
        raise BlobError(f"{where}: {len(got)} {kind}, {d.name} takes {takes} "
                        f"({' '.join(spec)})")
    for k, t in enumerate(ins + outs):
      if not 0 <= t < len(g.tensors):
        raise BlobError(f"{where}: operand {k} is tensor {t}, out of range "
                        f"({len(g.tensors)} tensors)")
    _check_io_use(ins, outs, g, unseen, read_only, which, where)
    op = Op(d.name, ins, outs, _decode_attrs(d, attrs[a0:a0 + an], where))
    try:
      rules.check(g, op, slots)
    except rules.RuleError as e:
      raise BlobError(f"{where}: {e}") from None
    memo[rec] = op
    ops.append(op)
  return ops


def _check_io_use(ins: list[int], outs: list[int], g: Graph, unseen: set[int],
                  read_only: set[int], which: str, where: str) -> None:
  for t in ins + outs:
    if g.base(t) in unseen:
      raise BlobError(f"{where}: operand tensor {t} is an io buffer {which} ops never see")
  for t in outs:
    if g.tensors[g.base(t)].storage == "const" or g.base(t) in read_only:
      raise BlobError(f"{where}: writes tensor {t}, a constant or the caller's input")
    if g.tensors[t].storage == "io" and g.base(t) != t:  # the executor keeps io by tensor
      raise BlobError(f"{where}: writes tensor {t}, a view of an io buffer")


def _buffers(g: Graph, ops: list[Op], which: str, locations: list[int]) -> dict[int, Buffer]:
  """The arena buffers of one op list: lifetimes with the stored offsets."""
  try:
    spans = lifetimes(g, ops)
  except ValueError as e:
    raise BlobError(f"{which} ops: {e}") from None
  buffers = {}
  for t, (first, last) in spans.items():
    if locations[t] < 0:
      raise BlobError(f"tensor {t} ({g.tensors[t].name}): the {which} ops use it but it has "
                      "no arena offset")
    buffers[t] = Buffer(t, buffer_size(g.tensors[t]), first, last, locations[t])
  return buffers


def _plan(g: Graph, train: list[Op], infer: list[Op], locations: list[int], arena: int,
          io: dict[str, int]) -> tuple[Plan, Plan]:
  """The stored arena offsets, checked for overlaps over the lifetimes of both op lists;
  the loss is written before any op writes the state, the logits by inference."""
  plans = {which: Plan(_buffers(g, ops, which, locations), arena, len(ops))
           for which, ops in (("train", train), ("infer", infer))}
  for which, p in plans.items():
    try:
      p.check()
    except AssertionError as e:
      raise BlobError(f"memory plan of the {which} ops: {e}") from None
  loss_at = next((i for i, op in enumerate(train) if io["loss"] in map(g.base, op.outputs)),
                 None)
  if loss_at is None:
    raise BlobError("no train op writes the loss")
  for i, op in enumerate(train[:loss_at + 1]):  # the step stops after the loss's op
    if any(g.tensors[g.base(t)].storage == "state" for t in op.outputs):
      raise BlobError(f"train op {i} ({op.name}) writes the state before the loss is known "
                      f"(train op {loss_at}): a non-finite loss could not stop the step")
  if not any(io["logits"] in map(g.base, op.outputs) for op in infer):
    raise BlobError("no infer op writes the logits")
  return plans["train"], plans["infer"]


def _quant(h: dict[str, Any]) -> IoQuant:
  """The io quantization, as the C verifier checks it: finite positive scales, int8 zeros."""
  for k in QUANT_FIELDS:
    v = h[k]
    ok = (-128 <= v <= 127) if k.endswith("zero") else (math.isfinite(v) and v > 0)
    if not ok:
      what = "an int8 zero point" if k.endswith("zero") else "a finite positive float32"
      raise BlobError(f"{k} = {v} (header byte {HEADER_AT[k]}) is not {what}")
  return IoQuant(**{k: h[k] for k in QUANT_FIELDS})


def read(data: bytes | bytearray | memoryview) -> Blob:
  """Parse and verify a blob; every problem raises BlobError."""
  data = bytes(data)
  h = _header(data)
  sec = _sections(data, h)
  g, locations = _tensors(sec, h)
  operands = np.frombuffer(sec["operands"], "<i4").tolist()
  attrs = np.frombuffer(sec["attrs"], "<i4").tolist()
  io = {}
  for k, dtype in IO_DTYPES.items():
    t = h[k]
    if not (0 <= t < len(g.tensors) and g.tensors[t].storage == "io"
            and g.tensors[t].dtype == dtype and g.tensors[t].alias is None
            and t not in io.values() and g.tensors[t].nbytes <= MAX_BUFFER_BYTES):
      raise BlobError(f"io {k}: tensor {t} (header byte {HEADER_AT[k]}) is not an {dtype} "
                      f"io tensor of its own (of at most {MAX_BUFFER_BYTES} bytes)")
    io[k] = t
  shapes = {k: g.tensors[t].shape for k, t in io.items()}
  if (shapes["input"][:1] != (1,) or shapes["logits"][:1] != (1,) or shapes["logits"][-1] < 1
          or math.prod(shapes["loss"]) != 1 or math.prod(shapes["label"]) != 1):
    raise BlobError(f"io shapes {shapes}: input and logits lead with a batch axis of 1, loss "
                    "and label hold one element")
  for t in g.tensors:
    if t.storage == "io" and g.base(t.id) not in io.values():
      raise BlobError(f"tensor {t.id}: an io tensor that is none of {sorted(io)}")
  # The optimizer before the ops (as the C verifier): an update op's rule needs it.
  opt = {"kind": _enum(OPTIMIZERS, h["optimizer"], "optimizer"), "momentum": h["momentum"],
         "b1": h["b1"], "b2": h["b2"], "eps": h["eps"],
         "schedule": _enum(SCHEDULES, h["schedule"], "schedule"), "lr": h["lr"],
         "steps": h["steps"], "final": h["final"]}
  if opt["schedule"] == "cosine" and opt["steps"] == 0:
    raise BlobError(f"a cosine schedule over 0 steps (header byte {HEADER_AT['steps']})")
  rounding = _enum(ROUNDINGS, h["rounding"], "rounding")
  for k in OPT_FLOATS:
    if not -3.0e38 <= h[k] <= 3.0e38:
      raise BlobError(f"optimizer {k} = {h[k]} (header byte {HEADER_AT[k]}): not a finite "
                      "float32")
  # The runtime holds the momentum as a float32 and keeps a slot when that is not zero; the
  # executor asks the float64: they must agree.
  if h["momentum"] != 0 and np.float32(h["momentum"]) == 0:
    raise BlobError(f"momentum {h['momentum']} (header byte {HEADER_AT['momentum']}) is zero "
                    "as a float32")
  name = _string(sec["strings"], h["name"], "program name")
  quant = _quant(h)
  slots = rules.optimizer_slots(opt["kind"], opt["momentum"])
  memo: dict[tuple, Op] = {}
  train = _ops("train", sec["train_ops"], h["train_ops_offset"], operands, attrs, g, io, memo,
               slots)
  infer = _ops("infer", sec["infer_ops"], h["infer_ops_offset"], operands, attrs, g, io, memo,
               slots)
  plan, infer_plan = _plan(g, train, infer, locations, h["arena_bytes"], io)
  return Blob(h, name, g, train, infer, io, opt, rounding, h["seed"], plan, locations,
              infer_plan, quant)


def load(src: str | PathLike | bytes | bytearray | memoryview) -> Program:
  """The Program of a blob file (or of its bytes), verified; it runs like the saved one."""
  data = src if isinstance(src, bytes | bytearray | memoryview) else Path(src).read_bytes()
  return read(data).program()
