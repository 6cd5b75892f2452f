"""Reader of the int8 models of mit-han-lab/tiny-training (no PyTorch needed).

The files are `torch.save` zip archives (`<prefix>/data.pkl` plus raw storages under
`<prefix>/data/`), or plain pickles; tensors are either torch tensors rebuilt from
storages or pickled numpy arrays. A restricted unpickler admits only the few globals
these need, so a hostile file cannot run code, and every malformed part is reported
with where it sits in the model.
"""

from __future__ import annotations

import codecs
import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from jaxtiny.errors import ModelFormatError
from jaxtiny.graph import Node, assign_layer_indices
from jaxtiny.numerics import (
  INT8_MAX,
  INT8_MIN,
  QParams,
  add_multipliers,
  clamp_bounds,
  multiplier,
)
from jaxtiny.qmodel import QModel, TensorSpec

_STORAGE_DTYPES = {
  "FloatStorage": np.float32, "CharStorage": np.int8, "IntStorage": np.int32,
  "LongStorage": np.int64, "ByteStorage": np.uint8, "ShortStorage": np.int16,
  "DoubleStorage": np.float64, "HalfStorage": np.float16, "BoolStorage": np.bool_,
}


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *_unused) -> np.ndarray:
  size, stride = tuple(size), tuple(stride)
  if not size:
    return storage[offset].copy()
  end = offset + sum((d - 1) * s for d, s in zip(size, stride)) + 1
  if offset < 0 or end > storage.size or any(s < 0 for s in stride):
    raise ModelFormatError(f"tensor of size {size} runs past its storage of {storage.size}")
  return np.lib.stride_tricks.as_strided(
    storage[offset:], size, [s * storage.itemsize for s in stride]).copy()


class _Unpickler(pickle.Unpickler):
  def __init__(self, file, storages: zipfile.ZipFile | None, prefix: str):
    super().__init__(file)
    self._zip, self._prefix = storages, prefix

  def find_class(self, module: str, name: str) -> Any:
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
      return np._core.multiarray._reconstruct
    if module == "numpy" and name in ("ndarray", "dtype"):
      return getattr(np, name)
    if module.startswith("numpy") and name == "scalar":
      return np._core.multiarray.scalar
    if module.startswith("numpy.dtypes"):
      return type(np.dtype(name.replace("DType", "").lower()))
    if (module, name) == ("_codecs", "encode"):
      return codecs.encode
    if (module, name) == ("collections", "OrderedDict"):
      return OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if module == "torch" and name in _STORAGE_DTYPES:
      return name
    raise ModelFormatError(f"the model file refers to {module}.{name}, which a "
                           "tiny-training model does not contain")

  def persistent_load(self, pid: Any) -> np.ndarray:
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
      raise ModelFormatError(f"unknown persistent id {pid!r}")
    kind, key, numel = pid[1], pid[2], int(pid[4])
    if kind not in _STORAGE_DTYPES or self._zip is None:
      raise ModelFormatError(f"unsupported storage {kind!r}")
    try:
      raw = self._zip.read(f"{self._prefix}data/{key}")
    except KeyError as e:
      raise ModelFormatError(f"storage {key} is missing from the archive") from e
    dtype = np.dtype(_STORAGE_DTYPES[kind]).newbyteorder("<")
    if len(raw) < numel * dtype.itemsize:
      raise ModelFormatError(f"storage {key} holds {len(raw)} bytes, needs "
                             f"{numel * dtype.itemsize}")
    return np.frombuffer(raw, dtype, numel).astype(dtype.newbyteorder("="))


def read_tinytraining(path: str | Path) -> dict:
  """The model dict of a tiny-training file, with every tensor as a numpy array."""
  path = Path(path)
  try:
    data = path.read_bytes()
  except OSError as e:
    raise ModelFormatError(f"cannot read model file {path}: {e.strerror}") from e
  try:
    if zipfile.is_zipfile(io.BytesIO(data)):
      zf = zipfile.ZipFile(io.BytesIO(data))
      pkl = [n for n in zf.namelist() if n.endswith("data.pkl")]
      if len(pkl) != 1:
        raise ModelFormatError(f"{path}: a torch archive has one data.pkl, found {len(pkl)}")
      prefix = pkl[0][: -len("data.pkl")]
      obj = _Unpickler(io.BytesIO(zf.read(pkl[0])), zf, prefix).load()
    else:
      obj = _Unpickler(io.BytesIO(data), None, "").load()
  except ModelFormatError as e:
    raise ModelFormatError(f"{path}: {e}") from None
  except Exception as e:  # truncated zip, bad CRC, broken pickle stream ...
    raise ModelFormatError(f"{path} is not a readable tiny-training model "
                           f"({type(e).__name__}: {e})") from None
  if not isinstance(obj, dict) or not {"first_conv", "blocks", "classifier"} <= set(obj):
    raise ModelFormatError(f"{path}: expected a dict with first_conv, blocks and classifier")
  return obj


class _Builder:
  """Turns the tiny-training dict into QModel nodes, checking each part on the way."""

  def __init__(self) -> None:
    self.nodes: list[Node] = []
    self.tensors: dict[int, TensorSpec] = {}
    self.params: dict[str, dict[str, np.ndarray]] = {}

  def tensor(self, shape: tuple[int, ...], qp: QParams) -> int:
    tid = len(self.tensors)
    self.tensors[tid] = TensorSpec(tuple(int(d) for d in shape), qp)
    return tid

  @staticmethod
  def _get(d: Any, key: str, where: str, kind: type | tuple = object) -> Any:
    if not isinstance(d, dict) or key not in d:
      raise ModelFormatError(f"{where}: missing '{key}'")
    v = d[key]
    if not isinstance(v, kind):
      raise ModelFormatError(f"{where}.{key}: expected {kind}, got {type(v).__name__}")
    return v

  def _array(self, params: dict, key: str, where: str, dtype, shape) -> np.ndarray:
    a = self._get(params, key, where, np.ndarray)
    if a.dtype != dtype or a.shape != tuple(shape):
      raise ModelFormatError(f"{where}.{key}: expected {np.dtype(dtype)}{list(shape)}, "
                             f"got {a.dtype}{list(a.shape)}")
    return a

  def _qparams(self, params: dict, prefix: str, where: str) -> QParams:
    scale = float(self._get(params, f"{prefix}_scale", where, (float, int, np.floating)))
    zero = int(self._get(params, f"{prefix}_zero", where, (int, float, np.integer, np.floating)))
    try:
      return QParams(scale, zero)
    except ValueError as e:
      raise ModelFormatError(f"{where}.{prefix}_scale/{prefix}_zero: {e}") from None

  def _check_input(self, x: int, qp: QParams, where: str) -> None:
    have = self.tensors[x].qparams
    if have.zero != qp.zero or not np.isclose(have.scale, qp.scale, rtol=1e-5):
      raise ModelFormatError(f"{where}: input quantization ({qp.scale:.6g}, {qp.zero}) does "
                             f"not match its producer's ({have.scale:.6g}, {have.zero})")

  def conv(self, c: Any, x: int, where: str) -> int:
    params = self._get(c, "params", where, dict)
    h, w, cin = self.tensors[x].shape
    ks = self._get(c, "kernel_size", where, (tuple, list, int))
    kh, kw = (ks, ks) if isinstance(ks, int) else tuple(ks)
    s = self._get(c, "stride", where, (int, tuple, list))
    stride = int(s[0] if isinstance(s, tuple | list) else s)
    groups = int(self._get(c, "groups", where, int))
    cout = int(self._get(c, "out_channel", where, int))
    if cin % groups or cout % groups:
      raise ModelFormatError(f"{where}: {cin} input / {cout} output channels and "
                             f"groups={groups} do not agree")
    weight = self._array(params, "weight", where, np.int8, (cout, cin // groups, kh, kw))
    bias = self._array(params, "bias", where, np.int32, (cout,))
    w_scales = self._array(params, "w_scales", where, np.float32, (cout,))
    xq, yq = self._qparams(params, "x", where), self._qparams(params, "y", where)
    self._check_input(x, xq, where)
    act = c.get("act")
    if act not in (None, "relu", "relu6"):
      raise ModelFormatError(f"{where}: activation {act!r} is not supported")
    lo, hi = (INT8_MIN, INT8_MAX) if act is None else clamp_bounds(
      yq, 0.0, 6.0 if act == "relu6" else None)
    pad = ((kh // 2, kh // 2), (kw // 2, kw // 2))
    ho, wo = ((h + 2 * (kh // 2) - kh) // stride + 1, (w + 2 * (kw // 2) - kw) // stride + 1)
    y = self.tensor((ho, wo, cout), yq)
    name = where
    self.params[name] = {"weight": weight.transpose(0, 2, 3, 1).copy(), "bias": bias}
    m = multiplier(xq.scale * w_scales.astype(np.float64) / yq.scale)
    self.nodes.append(Node("conv2d", name, (x,), y,
                           {"strides": (stride, stride), "padding": pad, "groups": groups,
                            "lo": lo, "hi": hi},
                           {"multiplier": m, "w_scale": w_scales.copy()}))
    return y

  def residual(self, r: Any, a: int, b: int, where: str) -> int:
    params = self._get(r, "params", where, dict)
    yq = self._qparams(params, "y", where)
    self._check_input(a, self._qparams(params, "x", where), where)
    am, bm, m = add_multipliers(self.tensors[a].qparams.scale, self.tensors[b].qparams.scale,
                                yq.scale)
    y = self.tensor(self.tensors[b].shape, yq)
    self.nodes.append(Node("add", where, (a, b), y, {"a_mult": am, "b_mult": bm, "m": m,
                                                    "lo": INT8_MIN, "hi": INT8_MAX}))
    return y

  def head(self, cls: Any, x: int) -> int:
    h, w, c = self.tensors[x].shape
    xq = self.tensors[x].qparams
    # The global average pool keeps its input's quantization: M = 1 / (H * W).
    pooled = self.tensor((1, 1, c), xq)
    self.nodes.append(Node("avgpool", "global_pool", (x,), pooled,
                           {"window": (h, w), "strides": (1, 1), "padding": ((0, 0), (0, 0)),
                            "lo": INT8_MIN, "hi": INT8_MAX},
                           {"multiplier": multiplier(1.0 / (h * w))}))
    flat = self.tensor((c,), xq)
    self.nodes.append(Node("reshape", "flatten", (pooled,), flat))
    where = "classifier"
    params = self._get(cls, "params", where, dict)
    cout = int(self._get(cls, "out_channel", where, int))
    weight = self._array(params, "weight", where, np.int8, (cout, c, 1, 1))
    bias = self._array(params, "bias", where, np.int32, (cout,))
    w_scales = self._array(params, "w_scales", where, np.float32, (cout,))
    cxq, yq = self._qparams(params, "x", where), self._qparams(params, "y", where)
    self._check_input(flat, cxq, where)
    y = self.tensor((cout,), yq)
    self.params[where] = {"weight": weight.reshape(cout, c).copy(), "bias": bias}
    self.nodes.append(Node("dense", where, (flat,), y, {"lo": INT8_MIN, "hi": INT8_MAX}, {
      "multiplier": multiplier(xq.scale * w_scales.astype(np.float64) / yq.scale),
      "w_scale": w_scales.copy()}))
    return y


def load_tinytraining(path: str | Path) -> QModel:
  """Load an int8 model of tiny-training (e.g. `mcunet-5fps.pkl`) as a QModel."""
  d = read_tinytraining(path)
  b = _Builder()
  first = d["first_conv"]
  where = "first_conv"
  params = b._get(first, "params", where, dict)
  size = int(b._get(first, "in_shape", where, int))
  cin = int(b._get(first, "in_channel", where, int))
  x_in = b.tensor((size, size, cin), b._qparams(params, "x", where))
  x = b.conv(first, x_in, where)
  blocks = d["blocks"]
  if not isinstance(blocks, list):
    raise ModelFormatError(f"{path}: 'blocks' must be a list")
  for i, blk in enumerate(blocks):
    where = f"blocks.{i}"
    if not isinstance(blk, dict):
      raise ModelFormatError(f"{where}: expected a dict, got {type(blk).__name__}")
    if blk.get("se") is not None:
      raise ModelFormatError(f"{where}: squeeze-and-excitation blocks are not supported")
    block_in = x
    for part in ("pointwise1", "depthwise", "pointwise2"):
      if blk.get(part) is not None:
        x = b.conv(blk[part], x, f"{where}.{part}")
      elif part != "pointwise1":
        raise ModelFormatError(f"{where}: missing '{part}'")
    if blk.get("residual") is not None:
      x = b.residual(blk["residual"], block_in, x, f"{where}.residual")
  if d.get("feature_mix") is not None:
    x = b.conv(d["feature_mix"], x, "feature_mix")
  out = b.head(d["classifier"], x)
  assign_layer_indices(b.nodes)
  return QModel(b.nodes, b.tensors, x_in, out, b.params, name=Path(path).stem)
