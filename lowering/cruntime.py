"""The host build of the C runtime (runtime_c/), loaded with ctypes.

`CRuntime(blob_bytes)` runs a blob as a board would: verified by the C verifier alone (a
refusal raises BlobError naming the C status and the tensor or op at fault), then train
steps and inference in C, bit for bit what the Cortex-M build computes. `program.runtime()`
gives the same object for a Program, from its current state.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from jaxtiny.errors import InputError, ModelFormatError, NonFiniteLossError
from lowering.blob import HEADER_AT, BlobError
from lowering.program import check_input, check_label

EXTENSION = "lowering._jaxtiny_c"  # built by `pip install -e .` (setup.py)
ENV = "JAXTINY_RUNTIME_LIB"  # a path to another build (the sanitizer build, a fresh `make`)
SOURCES = Path(__file__).resolve().parent.parent / "runtime_c"
MAX_RANK = 6
GUARD = 64  # bytes after the arena and the state that the runtime must never touch
GUARD_BYTE = 0xA5

# jt_status values (runtime_c/include/jaxtiny.h)
OK, E_LABEL, E_NONFINITE, E_INPUT = 0, 22, 23, 29


class StateImageError(ModelFormatError):
  """A saved state image that is corrupt, truncated or of another blob."""


def _stale(lib_path: str) -> bool:
  built = os.path.getmtime(lib_path)
  # the extension's own sources (setup.py), not the ctest or the examples
  return any(p.stat().st_mtime > built for d in ("include", "src", "python")
             for p in (SOURCES / d).glob("*.[ch]"))


@cache
def library() -> ctypes.CDLL:
  """The runtime's shared library: $JAXTINY_RUNTIME_LIB, else the extension built by pip."""
  path = os.environ.get(ENV)
  if not path:
    spec = importlib.util.find_spec(EXTENSION)
    if spec is None or spec.origin is None:
      raise ImportError("the C runtime is not built: run `pip install -e .` (it needs a C "
                        f"compiler), or point ${ENV} at a build of runtime_c/")
    path = spec.origin
    if SOURCES.is_dir() and _stale(path):
      warnings.warn("runtime_c/ changed since the C runtime was built: run `pip install -e .` "
                    "again to rebuild it", RuntimeWarning, stacklevel=2)
  lib = ctypes.CDLL(path)
  p, u32, i32, size = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int32, ctypes.c_size_t
  signatures = {
    "jt_runtime_size": (size, []), "jt_arena_size": (u32, [p, size]),
    "jt_state_size": (u32, [p, size]), "jt_init": (ctypes.c_int, [p, p, size, p, size, p, size]),
    "jt_input_size": (u32, [p]), "jt_output_size": (u32, [p]),
    "jt_input_shape": (u32, [p, p]), "jt_step_count": (u32, [p]),
    "jt_train_step": (ctypes.c_int, [p, p, i32, p]), "jt_infer": (ctypes.c_int, [p, p, p]),
    "jt_quantize_input": (ctypes.c_int, [p, p, p]),
    "jt_dequantize_output": (ctypes.c_int, [p, p, p]),
    "jt_state_image_size": (u32, [p]),
    "jt_state_save": (ctypes.c_int, [p, p, size, p]),
    "jt_state_load": (ctypes.c_int, [p, p, size]),
    "jt_status_str": (ctypes.c_char_p, [ctypes.c_int]),
    "jt_where_str": (ctypes.c_char_p, [u32]), "jt_error_where": (u32, [p]),
    "jt_error_index": (i32, [p]), "jt_crc32": (u32, [u32, p, size]),
  }
  for name, (res, args) in signatures.items():
    f = getattr(lib, name)
    f.restype, f.argtypes = res, args
  return lib


def status_str(status: int) -> str:
  return library().jt_status_str(status).decode()


def _aligned(n: int) -> ctypes.Array:
  """n zero bytes (at least 4), 8-byte aligned."""
  return (ctypes.c_uint64 * max(1, (n + 7) // 8))()


class CRuntime:
  """A blob on the host C runtime: `train_step(x8, label) -> loss`, `infer(x8) -> int8
  logits`, `save_state() -> bytes`, `load_state(bytes)`, as the reference executor.

  arena_len / state_len (tests): the buffer sizes handed to jt_init, default what the blob
  asks for; `guards_intact()` checks that nothing past the plan's arena or the state image
  was written after init.
  """

  def __init__(self, blob: bytes | bytearray | memoryview, arena_len: int | None = None,
               state_len: int | None = None):
    self._lib = lib = library()
    data = self._raw = bytes(blob)
    self._blob = _aligned(len(data))
    ctypes.memmove(self._blob, data, len(data))
    self.arena_len = lib.jt_arena_size(self._blob, len(data)) if arena_len is None else arena_len
    self.state_len = lib.jt_state_size(self._blob, len(data)) if state_len is None else state_len
    self._arena = _aligned(self.arena_len + GUARD)
    self._state = _aligned(self.state_len + GUARD)
    self._rt = _aligned(lib.jt_runtime_size())
    s = lib.jt_init(self._rt, self._blob, len(data), self._arena, self.arena_len, self._state,
                    self.state_len)
    if s != OK:
      where = lib.jt_where_str(lib.jt_error_where(self._rt)).decode()
      index = lib.jt_error_index(self._rt)
      at = f" at {where} {index}" if where and index >= 0 else ""
      self.status, self.where, self.index = s, where, index
      raise BlobError(f"the C runtime refused the blob: {status_str(s)}{at} (status {s})")
    # Guards: after init (whose verifier may use more of the arena as scratch) the runtime
    # may touch only the plan's arena_bytes and the state image.
    planned = int.from_bytes(data[HEADER_AT["arena_bytes"]:HEADER_AT["arena_bytes"] + 4],
                             "little")
    self._guards = [(self._arena, planned, self.arena_len + GUARD - planned),
                    (self._state, self.state_len, GUARD)]
    for buf, start, n in self._guards:
      ctypes.memset(ctypes.addressof(buf) + start, GUARD_BYTE, n)
    dims = (ctypes.c_uint32 * MAX_RANK)()
    rank = lib.jt_input_shape(self._rt, dims)
    self.input_shape = tuple(dims[1:rank])
    self.classes = lib.jt_output_size(self._rt)

  @property
  def steps(self) -> int:
    """Training steps run so far (the state's step counter)."""
    return self._lib.jt_step_count(self._rt)

  def train_step(self, x8: Any, label: Any) -> float:
    """One training step in C; returns the loss. A loss that is not finite raises
    NonFiniteLossError and leaves the state as it was."""
    x = np.ascontiguousarray(check_input(x8, self.input_shape))
    y = int(check_label(label, self.classes)[0])
    loss = ctypes.c_float()
    s = self._lib.jt_train_step(self._rt, x.ctypes.data, y, ctypes.byref(loss))
    if s == E_NONFINITE:
      raise NonFiniteLossError(f"the loss is {loss.value}: the step stopped before any "
                               "update, the state is unchanged")
    if s != OK:
      raise RuntimeError(f"jt_train_step: {status_str(s)} (status {s})")
    return float(np.float32(loss.value))

  def infer(self, x8: Any) -> np.ndarray:
    """int8 logits of one input, with the current state."""
    x = np.ascontiguousarray(check_input(x8, self.input_shape))
    out = np.zeros(self.classes, np.int8)
    s = self._lib.jt_infer(self._rt, x.ctypes.data, out.ctypes.data)
    if s != OK:
      raise RuntimeError(f"jt_infer: {status_str(s)} (status {s})")
    return out

  def quantize_input(self, x: Any) -> np.ndarray:
    """One float input -> int8 in C (jt_quantize_input), with the blob's input quantization."""
    x = np.ascontiguousarray(x, np.float32)
    if x.shape != self.input_shape:
      raise InputError(f"the program takes one input of shape {self.input_shape}, got "
                       f"{x.shape}")
    out = np.zeros(self.input_shape, np.int8)
    s = self._lib.jt_quantize_input(self._rt, x.ctypes.data, out.ctypes.data)
    if s == E_INPUT:
      raise InputError("the input holds NaN or infinite values")
    if s != OK:
      raise RuntimeError(f"jt_quantize_input: {status_str(s)} (status {s})")
    return out

  def dequantize_output(self, y8: Any) -> np.ndarray:
    """int8 logits -> float32 in C (jt_dequantize_output)."""
    y = np.ascontiguousarray(y8, np.int8)
    if y.shape != (self.classes,):
      raise InputError(f"the program has {self.classes} outputs, got shape {y.shape}")
    out = np.zeros(self.classes, np.float32)
    s = self._lib.jt_dequantize_output(self._rt, y.ctypes.data, out.ctypes.data)
    if s != OK:
      raise RuntimeError(f"jt_dequantize_output: {status_str(s)} (status {s})")
    return out

  def save_state(self) -> bytes:
    """The learned state as a CRC-protected image (jt_state_save)."""
    n = self._lib.jt_state_image_size(self._rt)
    buf = _aligned(n)
    s = self._lib.jt_state_save(self._rt, buf, n, None)
    if s != OK:
      raise RuntimeError(f"jt_state_save: {status_str(s)} (status {s})")
    return ctypes.string_at(buf, n)

  def load_state(self, image: bytes | bytearray | memoryview) -> None:
    """Replace the state by a saved image; another blob's, a truncated or a corrupt image
    raises StateImageError and changes nothing."""
    raw = bytes(image)
    buf = _aligned(len(raw))
    ctypes.memmove(buf, raw, len(raw))
    s = self._lib.jt_state_load(self._rt, buf, len(raw))
    if s != OK:
      raise StateImageError(f"state image refused: {status_str(s)} (status {s})")

  def state_bytes(self) -> bytes:
    """The raw state buffer (what jt_state_save wraps)."""
    return ctypes.string_at(self._state, self.state_len)

  def set_state(self, raw: bytes) -> None:
    """Replace the raw state buffer (tests: carry another engine's state over)."""
    if len(raw) != self.state_len:
      raise ValueError(f"{len(raw)} bytes for a state of {self.state_len}")
    ctypes.memmove(self._state, raw, len(raw))

  def state_location(self, tensor: int) -> int:
    """Offset of a state tensor in the state buffer (its record's location)."""
    return int.from_bytes(self._record(tensor)[36:40], "little", signed=True)

  def _record(self, tensor: int) -> bytes:
    base = int.from_bytes(self._raw[HEADER_AT["tensors_offset"]:HEADER_AT["tensors_offset"] + 4],
                          "little")
    return self._raw[base + 44 * tensor:base + 44 * (tensor + 1)]

  def guards_intact(self) -> bool:
    """Whether the bytes after the plan's arena and after the state image (GUARD more than
    the buffers handed to jt_init) still hold the pattern written after init."""
    return all(ctypes.string_at(ctypes.addressof(buf) + start, n) == bytes([GUARD_BYTE]) * n
               for buf, start, n in self._guards)
