"""The saved QModel: `qm.save(path)` and `jt.load_qmodel(path)` (docs/qmodel_file.md).

A file (suggested extension `.jtq`, any path is accepted) is a zip archive of stored
members: `manifest.json` (the graph, the tensors' shapes and quantization, every node's
attributes, the SHA-256 of every other member) and one `.npy` array per weight, bias and
node array, with its exact dtype. Nothing is pickled, nothing evaluated. Loading checks
the archive, the checksums and the graph's structure before it builds the QModel, so a
loaded model computes what the saved one did, bit for bit, or the load fails naming the
file, the problem, where it sits and what to do.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtiny.errors import InputError, ModelFormatError
from jaxtiny.graph import LINEAR_OPS, Node
from jaxtiny.numerics import INT8_MAX, INT8_MIN, QParams
from jaxtiny.qmodel import RUNNERS, Params, QModel, TensorSpec, _Prefix

FORMAT = "jaxtiny-qmodel"
VERSION = 1  # bumped by any change a version-1 reader would misread; older ones stay readable
MANIFEST = "manifest.json"
# Fixed member metadata: the same model always gives the same bytes.
_EPOCH = (1980, 1, 1, 0, 0, 0)

_DAMAGED = "the file is damaged: save the model again with qm.save"
_FOREIGN = ("jt.load_qmodel reads the files qm.save writes (a tiny-training model loads with "
            "jt.load_tinytraining)")
_EDITED = ("its checksums hold, so it was written wrongly or edited after saving: save the "
           "model again with qm.save")

# --- what each node kind carries -------------------------------------------------------
# As the builders make them (quantize.quantize_graph, tinytraining._Builder,
# QModel.with_classifier) and the runners read them: the input count (None: one or more),
# the attributes with their types, the float32 arrays. A type pattern is a type (matched
# exactly: a bool is no int), a tuple of patterns, or (pattern, ...) for a tuple of any length.
_PAIR = (int, int)
_WINDOW = {"window": _PAIR, "strides": _PAIR, "padding": (_PAIR, _PAIR)}
_CLAMP = {"lo": int, "hi": int}
_SCALES = ("multiplier", "w_scale")
NODE_KINDS: dict[str, tuple[int | None, dict[str, Any], tuple[str, ...]]] = {
  "conv2d": (1, {"strides": _PAIR, "padding": (_PAIR, _PAIR), "groups": int, **_CLAMP},
             _SCALES),
  "dense": (1, _CLAMP, _SCALES),
  "add": (2, {"a_mult": int, "b_mult": int, "m": float, **_CLAMP}, ()),
  "avgpool": (1, {**_WINDOW, **_CLAMP}, ("multiplier",)),
  "maxpool": (1, _WINDOW, ()),
  "clamp": (1, _CLAMP, ()),
  "concat": (None, {"axis": int, "mults": (float, ...)}, ()),
  "reshape": (1, {}, ()),
}


def _fits(v: Any, pattern: Any) -> bool:
  if isinstance(pattern, type):
    return type(v) is pattern
  if type(v) is not tuple:
    return False
  if pattern[-1] is Ellipsis:
    return all(_fits(x, pattern[0]) for x in v)
  return len(v) == len(pattern) and all(_fits(x, p) for x, p in zip(v, pattern))


def _describe(pattern: Any) -> str:
  if isinstance(pattern, type):
    return pattern.__name__
  return "(" + ", ".join("..." if p is Ellipsis else _describe(p) for p in pattern) + ")"


# --- the checks shared by save and load ------------------------------------------------


def _member(kind: str, pos: int, key: str) -> str:
  """The member holding array `key` of param entry or node `pos`."""
  return f"{kind}/{pos}/{key}.npy"


def _check_node_arrays(n: Node, where: str, params: Params) -> None:
  _, _, arrays = NODE_KINDS[n.op]
  for key in arrays:
    if key not in n.arrays:
      raise ModelFormatError(f"{where}: missing array '{key}'")
    if n.arrays[key].dtype != np.float32:
      raise ModelFormatError(f"{where}: array '{key}' is {n.arrays[key].dtype}, expected "
                             "float32")
  for key, a in n.arrays.items():
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
      raise ModelFormatError(f"{where}: array '{key}' holds NaN or infinite values")
  if n.op not in LINEAR_OPS:
    return
  if n.name not in params:
    raise ModelFormatError(f"{where}: no params (weight and bias) for this layer")
  w, b = params[n.name]["weight"], params[n.name]["bias"]
  layout = "OHWI" if n.op == "conv2d" else "(O, K)"
  if w.dtype != np.int8 or w.ndim != (4 if n.op == "conv2d" else 2):
    raise ModelFormatError(f"{where}: weight is {w.dtype}{list(w.shape)}, expected an int8 "
                           f"{layout} array")
  if b.dtype != np.int32 or b.shape != w.shape[:1]:
    raise ModelFormatError(f"{where}: bias is {b.dtype}{list(b.shape)}, expected "
                           f"int32[{w.shape[0]}] (one per output channel of the {layout} "
                           f"weight {list(w.shape)})")
  if n.arrays["w_scale"].shape != w.shape[:1]:
    raise ModelFormatError(f"{where}: w_scale has shape {list(n.arrays['w_scale'].shape)}, "
                           f"expected [{w.shape[0]}]")


def _check_node_runs(n: Node, where: str, tensors: dict[int, TensorSpec],
                     params: Params) -> None:
  """The node's runner, traced on shapes alone, accepts its inputs and gives its output
  tensor's shape: the primitives' own shape rules, applied to every node once."""
  ins = [jax.ShapeDtypeStruct((1, *tensors[t].shape), jnp.float32) for t in n.inputs]
  p = params.get(n.name)
  if p is not None:  # as QModel.device_params carries them
    p = {"weight": jax.ShapeDtypeStruct(p["weight"].shape, jnp.float32),
         "bias": jax.ShapeDtypeStruct(p["bias"].shape, jnp.int32)}
  try:
    out = jax.eval_shape(lambda ins, p: RUNNERS[n.op](n, ins, p, tensors), ins, p)
  except Exception as e:  # any rule of any primitive: each says what does not agree
    raise ModelFormatError(f"{where} does not run on its inputs "
                           f"{[list(tensors[t].shape) for t in n.inputs]}: "
                           f"{type(e).__name__}: {e}") from None
  want = (1, *tensors[n.output].shape)
  if out.shape != want:
    raise ModelFormatError(f"{where} computes shape {list(out.shape[1:])}, but its output "
                           f"tensor {n.output} has shape {list(want[1:])}")


def _check_graph(nodes: list[Node], tensors: dict[int, TensorSpec], input_id: int,
                 output_id: int, params: Params, input_shape: tuple[int, ...]) -> None:
  """Everything a QModel relies on, each failure a ModelFormatError naming where."""
  for t, spec in tensors.items():
    if not spec.shape or min(spec.shape) < 1:
      raise ModelFormatError(f"tensor {t}: shape {list(spec.shape)}, expected dims >= 1")
  for what, t in (("input", input_id), ("output", output_id)):
    if t not in tensors:
      raise ModelFormatError(f"the {what} tensor {t} is not among the tensors")
  if not input_shape or min(input_shape) < 1 or \
      math.prod(input_shape) != math.prod(tensors[input_id].shape):
    raise ModelFormatError(f"input_shape {list(input_shape)} does not hold the "
                           f"{list(tensors[input_id].shape)} elements of input tensor "
                           f"{input_id}")
  producer = {input_id: "the model input"}
  names: set[str] = set()
  for pos, n in enumerate(nodes):
    where = f"node {pos} ('{n.name}', {n.op})"
    if n.op not in RUNNERS:
      raise ModelFormatError(f"node {pos} ('{n.name}'): unknown op '{n.op}' (this jaxtiny "
                             f"runs {', '.join(RUNNERS)})")
    if n.name in names:
      raise ModelFormatError(f"{where}: another node has the same name")
    names.add(n.name)
    arity, attrs, _ = NODE_KINDS[n.op]
    if (len(n.inputs) != arity) if arity else not n.inputs:
      raise ModelFormatError(f"{where}: {len(n.inputs)} inputs, expected "
                             f"{arity or 'one or more'}")
    for t in n.inputs:
      if t not in producer:
        raise ModelFormatError(f"{where}: reads tensor {t}, which neither the input nor an "
                               "earlier node produces (nodes must be in topological order)")
    if n.output not in tensors:
      raise ModelFormatError(f"{where}: writes tensor {n.output}, which is not among the "
                             "tensors")
    if n.output in producer:
      raise ModelFormatError(f"{where}: writes tensor {n.output}, which "
                             f"{producer[n.output]} already produces")
    producer[n.output] = f"node '{n.name}'"
    for key, pattern in attrs.items():
      if key not in n.attrs:
        raise ModelFormatError(f"{where}: missing attribute '{key}'")
      if not _fits(n.attrs[key], pattern):
        raise ModelFormatError(f"{where}: attribute '{key}' is {n.attrs[key]!r}, expected "
                               f"{_describe(pattern)}")
    for key in ("lo", "hi"):
      if key in attrs and not INT8_MIN <= n.attrs[key] <= INT8_MAX:
        raise ModelFormatError(f"{where}: clamp bound {key}={n.attrs[key]} is outside int8")
    if n.op == "concat" and len(n.attrs["mults"]) != len(n.inputs):
      raise ModelFormatError(f"{where}: {len(n.attrs['mults'])} multipliers for "
                             f"{len(n.inputs)} inputs")
    _check_node_arrays(n, where, params)
    _check_node_runs(n, where, tensors, params)
  if output_id not in producer or output_id == input_id:
    raise ModelFormatError(f"the output tensor {output_id} is produced by no node")
  extra = set(params) - {n.name for n in nodes if n.op in LINEAR_OPS}
  if extra:
    raise ModelFormatError(f"params of {sorted(extra)}, which are no conv/dense node")
  _check_indices(nodes)


def _check_indices(nodes: list[Node]) -> None:
  """Conv/dense layers numbered in network order, the last (the classifier) unnumbered,
  as assign_layer_indices does; numbering starts at 0, or where a split-off suffix was
  cut (QModel.split keeps the whole network's indices)."""
  numbered = [n for n in nodes if n.op in LINEAR_OPS][:-1]
  start = numbered[0].index if numbered else None
  start = start if type(start) is int and start >= 0 else 0
  want = {id(n): start + i for i, n in enumerate(numbered)}
  for pos, n in enumerate(nodes):
    if n.index != want.get(id(n)):
      raise ModelFormatError(
        f"node {pos} ('{n.name}', {n.op}): layer index {n.index}, expected "
        f"{want.get(id(n))} (conv/dense layers are numbered in network order; the "
        "classifier, the last of them, and other nodes have none)")


# --- save ------------------------------------------------------------------------------


def _int(v: Any, where: str) -> int:
  """A shape, id or index: numpy integers are stored as the ints they equal."""
  if isinstance(v, bool) or not isinstance(v, int | np.integer):
    raise InputError(f"{where} is {v!r}, not an integer")
  return int(v)


def _to_json(v: Any, where: str) -> Any:
  """An attribute value as JSON; tuples as {"tuple": [...]} so they come back as tuples.

  Only Python's own types: a numpy scalar is refused rather than converted, because an
  attribute reaches arithmetic (a rule, the lowering) where numpy's types compute
  differently from Python's.
  """
  if v is None or type(v) in (bool, int, str):
    return v
  if type(v) is float:
    if not math.isfinite(v):
      raise InputError(f"{where} is {v}: JSON holds finite floats only")
    return v
  if type(v) is tuple:
    return {"tuple": [_to_json(x, where) for x in v]}
  if type(v) is list:
    return [_to_json(x, where) for x in v]
  numpy = isinstance(v, np.generic)
  what = f"a numpy {type(v).__name__} scalar" if numpy else f"a {type(v).__name__}"
  hint = ": convert it with int() or float() (or v.item())" if numpy else ""
  raise InputError(f"{where} is {what} ({v!r}), which a QModel file cannot hold (None, bool, "
                   f"int, float, str and tuples or lists of them){hint}")


def _npy(a: np.ndarray, where: str) -> bytes:
  if a.dtype.hasobject:
    raise InputError(f"{where}: an array of Python objects ({a.dtype}) cannot be saved")
  buf = io.BytesIO()
  np.lib.format.write_array(buf, a, allow_pickle=False)
  return buf.getvalue()


def _encode(qm: QModel) -> tuple[dict[str, Any], dict[str, bytes]]:
  """The manifest (without its member checksums) and the array members of qm."""
  if not isinstance(qm.name, str):
    raise InputError(f"the model name is {qm.name!r}, not a string")
  tensors = []
  for t, spec in qm.tensors.items():
    where = f"tensor {t}"
    if not isinstance(spec.qparams.scale, float):  # a float32 scale would divide differently
      raise InputError(f"{where}: scale {spec.qparams.scale!r} is a "
                       f"{type(spec.qparams.scale).__name__}, not a Python float")
    tensors.append({"id": _int(t, where), "shape": [_int(d, f"{where}: a dim")
                                                    for d in spec.shape],
                    "scale": float(spec.qparams.scale),
                    "zero": _int(spec.qparams.zero, f"{where}: the zero point")})
  members: dict[str, bytes] = {}
  nodes = []
  for pos, n in enumerate(qm.nodes):
    where = f"node {pos} ('{n.name}')"
    if not isinstance(n.name, str) or not isinstance(n.op, str):
      raise InputError(f"{where}: the name and op must be strings")
    attrs = {}
    for k, v in n.attrs.items():
      if not isinstance(k, str):
        raise InputError(f"{where}: attribute name {k!r} is not a string")
      attrs[k] = _to_json(v, f"{where}: attribute '{k}'")
    for k, a in n.arrays.items():
      if not isinstance(k, str) or not isinstance(a, np.ndarray):
        raise InputError(f"{where}: array {k!r} must be a numpy array under a string name")
      members[_member("nodes", pos, k)] = _npy(a, f"{where}: array '{k}'")
    nodes.append({"op": n.op, "name": n.name,
                  "inputs": [_int(t, f"{where}: an input") for t in n.inputs],
                  "output": _int(n.output, f"{where}: the output"),
                  "index": None if n.index is None else _int(n.index, f"{where}: the index"),
                  "attrs": attrs, "arrays": list(n.arrays)})
  for pos, (name, p) in enumerate(qm.params.items()):
    for key in ("weight", "bias"):
      members[_member("params", pos, key)] = _npy(p[key], f"params '{name}' {key}")
  from jaxtiny import __version__  # the package is fully imported by the time a model saves

  manifest = {"format": FORMAT, "version": VERSION, "jaxtiny": __version__, "name": qm.name,
              "input_shape": [_int(d, "input_shape") for d in qm.input_shape],
              "input": _int(qm.input_id, "the input id"),
              "output": _int(qm.output_id, "the output id"),
              "tensors": tensors, "nodes": nodes, "params": list(qm.params)}
  return manifest, members


def _zip(members: list[tuple[str, bytes]]) -> bytes:
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
    for name, data in members:
      info = zipfile.ZipInfo(name, date_time=_EPOCH)
      info.create_system = 3  # Unix, on every platform: the bytes do not depend on where
      info.external_attr = 0o644 << 16
      zf.writestr(info, data)
  return buf.getvalue()


def save_qmodel(qm: QModel, path: str | PathLike) -> None:
  """Write qm to `path` (suggested extension `.jtq`); `load_qmodel(path)` reads it back.

  Refused with InputError: what the file could not give back exactly (numpy scalars or
  other objects in node attributes, non-finite floats), a model that would not pass the
  load's checks, and the prefix of a split model (save the whole model and split the
  loaded one). A split-off suffix is a plain QModel and saves as one.
  """
  if not isinstance(qm, QModel):
    raise InputError(f"save_qmodel saves a QModel, got {type(qm).__name__}")
  if isinstance(qm, _Prefix):
    raise InputError(f"model '{qm.name}' is the prefix of a split model (QModel.split): it has "
                     "no classifier and carries the whole model's params; save the whole "
                     "model and split the loaded one")
  manifest, members = _encode(qm)
  try:  # what load would refuse is refused now
    _check_graph(qm.nodes, qm.tensors, qm.input_id, qm.output_id, qm.params, qm.input_shape)
  except ModelFormatError as e:
    raise InputError(f"cannot save model '{qm.name}': {e}") from None
  manifest["members"] = {k: hashlib.sha256(v).hexdigest() for k, v in members.items()}
  text = json.dumps(manifest, allow_nan=False).encode()
  Path(path).write_bytes(_zip([(MANIFEST, text), *members.items()]))


# --- load ------------------------------------------------------------------------------


def _get(d: dict, key: str, kinds: tuple[type, ...], where: str) -> Any:
  """d[key] of one of the JSON types `kinds` (exactly: JSON's true is no integer)."""
  if key not in d:
    raise ModelFormatError(f"{where}: missing '{key}'")
  v = d[key]
  if type(v) not in kinds:
    text = json.dumps(v)
    text = text if len(text) <= 60 else text[:57] + "..."
    names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
    raise ModelFormatError(f"{where}: '{key}' is {text}, expected {names}")
  return v


def _ints(d: dict, key: str, where: str) -> tuple[int, ...]:
  v = _get(d, key, (list,), where)
  if not all(type(x) is int for x in v):
    raise ModelFormatError(f"{where}: '{key}' is {json.dumps(v)[:60]}, expected a list of "
                           "integers")
  return tuple(v)


def _from_json(v: Any, where: str) -> Any:
  if isinstance(v, dict):
    if list(v) != ["tuple"] or not isinstance(v["tuple"], list):
      raise ModelFormatError(f"{where}: {json.dumps(v)[:60]} is no encoded value (a tuple is "
                             '{"tuple": [...]})')
    return tuple(_from_json(x, where) for x in v["tuple"])
  if isinstance(v, list):
    return [_from_json(x, where) for x in v]
  return v


def _no_constant(name: str) -> None:
  raise ValueError(f"{name} is not a finite number")


def _difference(want: set[str], have: set[str]) -> str:
  parts = [f"lacks {sorted(want - have)}" if want - have else "",
           f"has unexpected {sorted(have - want)}" if have - want else ""]
  return " and ".join(p for p in parts if p)


@dataclass
class _Manifest:
  """The manifest's graph, its types checked; the nodes' arrays and the params are read
  after their members' checksums."""

  name: str
  input_shape: tuple[int, ...]
  input_id: int
  output_id: int
  tensors: dict[int, TensorSpec]
  nodes: list[Node]
  array_keys: list[list[str]]
  param_names: list[str]

  def members(self) -> set[str]:
    return ({_member("params", pos, k) for pos in range(len(self.param_names))
             for k in ("weight", "bias")}
            | {_member("nodes", pos, k) for pos, keys in enumerate(self.array_keys)
               for k in keys})

  def attach(self, arrays: dict[str, np.ndarray]) -> Params:
    """Give each node its arrays; the params."""
    for pos, (n, keys) in enumerate(zip(self.nodes, self.array_keys)):
      n.arrays = {k: arrays[_member("nodes", pos, k)] for k in keys}
    return {k: {key: arrays[_member("params", pos, key)] for key in ("weight", "bias")}
            for pos, k in enumerate(self.param_names)}


def _parse(m: dict) -> _Manifest:
  tensors: dict[int, TensorSpec] = {}
  for i, t in enumerate(_get(m, "tensors", (list,), MANIFEST)):
    if not isinstance(t, dict):
      raise ModelFormatError(f"tensor entry {i} is not an object")
    tid = _get(t, "id", (int,), f"tensor entry {i}")
    where = f"tensor {tid}"
    if tid in tensors:
      raise ModelFormatError(f"{where} is listed twice")
    scale, zero = _get(t, "scale", (float,), where), _get(t, "zero", (int,), where)
    try:
      qp = QParams(scale, zero)
    except ValueError as e:
      raise ModelFormatError(f"{where}: {e}") from None
    tensors[tid] = TensorSpec(_ints(t, "shape", where), qp)
  nodes, array_keys = [], []
  for pos, e in enumerate(_get(m, "nodes", (list,), MANIFEST)):
    where = f"node {pos}"
    if not isinstance(e, dict):
      raise ModelFormatError(f"{where} is not an object")
    keys = _get(e, "arrays", (list,), where)
    if not all(type(k) is str for k in keys) or len(set(keys)) != len(keys):
      raise ModelFormatError(f"{where}: 'arrays' must list distinct names")
    attrs = {k: _from_json(v, f"{where}: attribute '{k}'")
             for k, v in _get(e, "attrs", (dict,), where).items()}
    nodes.append(Node(_get(e, "op", (str,), where), _get(e, "name", (str,), where),
                      _ints(e, "inputs", where), _get(e, "output", (int,), where), attrs,
                      {}, _get(e, "index", (int, type(None)), where)))
    array_keys.append(keys)
  names = _get(m, "params", (list,), MANIFEST)
  if not all(type(k) is str for k in names) or len(set(names)) != len(names):
    raise ModelFormatError(f"{MANIFEST}: 'params' must list distinct layer names")
  return _Manifest(_get(m, "name", (str,), MANIFEST), _ints(m, "input_shape", MANIFEST),
                   _get(m, "input", (int,), MANIFEST), _get(m, "output", (int,), MANIFEST),
                   tensors, nodes, array_keys, names)


class _Reader:
  """One file being loaded: every failure names the file and says what to do."""

  def __init__(self, path: str | PathLike):
    self.path = Path(path)

  def fail(self, problem: str, advice: str) -> ModelFormatError:
    return ModelFormatError(f"{self.path}: {problem}; {advice}")

  def edited(self, check: Callable, *args: Any) -> Any:
    """check(*args), its ModelFormatError told as a file whose checksums hold."""
    try:
      return check(*args)
    except ModelFormatError as e:
      raise self.fail(str(e), _EDITED) from None

  def read(self, zf: zipfile.ZipFile, name: str) -> bytes:
    try:
      return zf.read(name)
    except Exception as e:  # zipfile reports damage as BadZipFile, EOFError, zlib.error ...
      raise self.fail(f"member '{name}' cannot be read ({type(e).__name__}: {e})",
                      _DAMAGED) from None

  def archive(self) -> tuple[zipfile.ZipFile, dict[str, Any]]:
    """The open archive and its manifest, of a format and version this jaxtiny reads."""
    data = self.path.read_bytes()  # a missing file raises FileNotFoundError, as open() does
    if not data.startswith(b"PK\x03\x04"):
      raise self.fail(f"not a jaxtiny model file (not a zip archive: it starts with "
                      f"{data[:8]!r})", _FOREIGN)
    try:
      zf = zipfile.ZipFile(io.BytesIO(data))
      names = zf.namelist()
    except Exception as e:
      raise self.fail(f"a damaged or truncated zip archive ({type(e).__name__}: {e})",
                      _DAMAGED) from None
    if len(set(names)) != len(names):
      raise self.fail("the archive holds a member twice", _DAMAGED)
    if MANIFEST not in names:
      raise self.fail(f"not a jaxtiny model file (the archive has no {MANIFEST})", _FOREIGN)
    text = self.read(zf, MANIFEST)
    try:
      manifest = json.loads(text, parse_constant=_no_constant)
    except ValueError as e:  # JSONDecodeError and a bad UTF-8 byte are ValueErrors
      raise self.fail(f"{MANIFEST} is not valid JSON ({e})", _DAMAGED) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
      raise self.fail(f"not a jaxtiny model file ({MANIFEST} does not declare format "
                      f"'{FORMAT}')", _FOREIGN)
    version = manifest.get("version")
    if type(version) is not int or version < 1:
      raise self.fail(f"format version {version!r} in {MANIFEST} is not a version (1, 2, ...)",
                      _EDITED)
    if version > VERSION:
      raise self.fail(f"saved by a newer jaxtiny ({manifest.get('jaxtiny')}, format version "
                      f"{version}); this one reads versions up to {VERSION}",
                      "upgrade jaxtiny to load it")
    return zf, manifest

  def arrays(self, zf: zipfile.ZipFile, sums: dict, expected: set[str]
             ) -> dict[str, np.ndarray]:
    """Every array member, its checksum verified before it is parsed."""
    if set(sums) != expected:
      raise self.fail(f"the members {MANIFEST} records do not match its nodes and params: "
                      f"it {_difference(expected, set(sums))}", _EDITED)
    present = set(zf.namelist()) - {MANIFEST}
    if present != expected:
      raise self.fail(f"the archive {_difference(expected, present)} members", _DAMAGED)
    out = {}
    for name in sorted(expected):
      raw = self.read(zf, name)
      if hashlib.sha256(raw).hexdigest() != sums[name]:
        raise self.fail(f"member '{name}': checksum mismatch (its SHA-256 is not the one "
                        f"{MANIFEST} records)", _DAMAGED)
      try:
        out[name] = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
      except Exception as e:  # a bad header, a short payload, an object array
        raise self.fail(f"member '{name}' is not a .npy array ({type(e).__name__}: {e})",
                        _EDITED) from None
    return out

  def load(self) -> QModel:
    zf, m = self.archive()
    parsed = self.edited(_parse, m)
    sums = self.edited(_get, m, "members", (dict,), MANIFEST)
    params = parsed.attach(self.arrays(zf, sums, parsed.members()))
    graph = (parsed.nodes, parsed.tensors, parsed.input_id, parsed.output_id, params,
             parsed.input_shape)
    self.edited(_check_graph, *graph)
    return QModel(*graph, parsed.name)


def load_qmodel(path: str | PathLike) -> QModel:
  """The QModel that `qm.save(path)` wrote, verified (docs/qmodel_file.md).

  Every problem raises ModelFormatError naming the file, what is wrong and where: not a
  model file, a newer format version, missing or extra members, a checksum mismatch, a
  malformed manifest, a graph a QModel cannot run. A missing file raises FileNotFoundError.
  """
  return _Reader(path).load()
