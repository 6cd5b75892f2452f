"""The lowering's program representation: tensors with a storage class, and a linear op list.

A tensor's dtype is what the device stores (int8 activations and weights, int32 biases,
float32 gradients, packed 1-bit masks), not the JAX carrier. Storage classes:
- const: read-only, in flash (weights, biases, multipliers, channel lists);
- state: persistent SRAM (trained weights and biases, optimizer state, the step counter);
- io: the caller's buffers (input image, label, loss, logits);
- arena: scratch, placed by the memory planner.
An alias shares its base tensor's bytes (a reshape).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowering.opset import BY_NAME

ITEMSIZE = {"i8": 1, "bool": 1, "i32": 4, "u32": 4, "f32": 4}
NUMPY = {"i8": np.int8, "bool": np.bool_, "i32": np.int32, "u32": np.uint32, "f32": np.float32,
         "bit": np.uint8}  # bit: 8 elements per byte, little-endian bit order


def dtype_of(a: np.dtype) -> str:
  for k, v in NUMPY.items():
    if k != "bit" and np.dtype(v) == np.dtype(a):
      return k
  raise TypeError(f"no device dtype for {a}")


def device_dtype(a: np.ndarray) -> str:
  """The device dtype a constant is stored in: its own, or the 32-bit one of its kind when
  every value fits (a Python int literal arrives as int64, a numpy float as float64)."""
  a = np.asarray(a)
  if a.dtype.kind == "b":
    return "bool"
  if a.dtype.kind in "iu":
    if a.dtype in (np.int8, np.uint32):
      return dtype_of(a.dtype)
    if a.size == 0 or (a.min() >= np.iinfo(np.int32).min and a.max() <= np.iinfo(np.int32).max):
      return "i32"
    raise TypeError(f"an integer constant of {a.dtype} with values up to {a.max()} does not "
                    "fit the device's int32")
  if a.dtype.kind == "f":
    with np.errstate(over="ignore"):
      if np.all(np.isfinite(a.astype(np.float32)) == np.isfinite(a)):
        return "f32"
    raise TypeError(f"a {a.dtype} constant overflows the device's float32")
  raise TypeError(f"no device dtype for {a.dtype} constants")


@dataclass
class Tensor:
  id: int
  name: str
  shape: tuple[int, ...]
  dtype: str
  storage: str  # const | state | io | arena
  data: np.ndarray | None = None  # const initial values, state initial values
  alias: int | None = None  # shares the bytes of this tensor

  @property
  def elements(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))

  @property
  def nbytes(self) -> int:
    if self.dtype == "bit":
      return (self.elements + 7) // 8
    return self.elements * ITEMSIZE[self.dtype]


@dataclass
class Op:
  name: str
  inputs: list[int]
  outputs: list[int]
  attrs: dict[str, Any] = field(default_factory=dict)

  def __post_init__(self) -> None:
    if self.name not in BY_NAME:
      raise KeyError(f"{self.name} is not an opcode of lowering/opset.py")


@dataclass
class Graph:
  """Tensors and one op list (the train step, or inference)."""

  tensors: list[Tensor] = field(default_factory=list)
  ops: list[Op] = field(default_factory=list)

  def add(self, name: str, shape, dtype: str, storage: str = "arena",
          data: np.ndarray | None = None, alias: int | None = None) -> int:
    t = Tensor(len(self.tensors), name, tuple(int(d) for d in shape), dtype, storage, data,
               alias)
    self.tensors.append(t)
    return t.id

  def const(self, name: str, value: np.ndarray, dtype: str) -> int:
    a = np.array(value, dtype=NUMPY[dtype], order="C")  # keeps 0-d arrays 0-d
    return self.add(name, a.shape, dtype, "const", a)

  def base(self, tid: int) -> int:
    while self.tensors[tid].alias is not None:
      tid = self.tensors[tid].alias
    return tid
