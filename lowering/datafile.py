"""Sample files for the command line, the firmware and the exported example: an `.npz` with
`x` (a sample axis, then the model's input shape; float values, quantized here with the
model's input parameters, or int8 values already quantized) and `y` (integer labels)."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxtiny.errors import InputError

LAYOUT = ("an .npz with arrays 'x' (samples: float, or int8 already quantized) and 'y' "
          "(integer labels), e.g. np.savez(path, x=x, y=y)")


def load_samples(path: Path | str, input_shape: tuple[int, ...], classes: int,
                 quantize: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """(int8 inputs (N, *input_shape), int32 labels (N,)) from `path`; every problem is an
  InputError that names the file, what is wrong and the layout expected. `quantize` turns a
  float batch into int8 (the model's or the blob's input quantization)."""
  path = Path(path)
  if not path.is_file():
    raise InputError(f"{path}: no such file ({LAYOUT})")
  try:
    d = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise InputError(f"{path} is not a readable .npz ({type(e).__name__}: {e}); expected "
                     f"{LAYOUT}") from None
  if not isinstance(d, np.lib.npyio.NpzFile):
    raise InputError(f"{path} holds a single array, not {LAYOUT}")
  with d:
    missing = [k for k in ("x", "y") if k not in d.files]
    if missing:
      raise InputError(f"{path} lacks {' and '.join(map(repr, missing))} (it holds "
                       f"{sorted(d.files) or 'nothing'}); expected {LAYOUT}")
    try:
      x, y = d["x"], d["y"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise InputError(f"{path}: its arrays cannot be read ({type(e).__name__}: {e}); "
                       f"expected {LAYOUT}") from None
  return _inputs(path, x, input_shape, quantize), _labels(path, y, len(x), classes)


def _inputs(path: Path, x: np.ndarray, shape: tuple[int, ...],
            quantize: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
  dims = ", ".join(map(str, shape))
  if x.shape == shape:
    raise InputError(f"{path}: x has the shape of one sample {shape}; give a sample axis "
                     f"first: (N, {dims}) (for one sample, x[None])")
  if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
    raise InputError(f"{path}: x has shape {x.shape}; the model takes samples of shape "
                     f"{shape}, so x must be (N, {dims})")
  if len(x) == 0:
    raise InputError(f"{path}: x holds no samples")
  if x.dtype == np.int8:
    return x
  if not np.issubdtype(x.dtype, np.floating):
    raise InputError(f"{path}: x has dtype {x.dtype}; give float values (quantized with the "
                     "model's input parameters) or int8 values already quantized")
  bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
  if bad.any():
    raise InputError(f"{path}: x sample {int(np.argmax(bad))} holds NaN or infinite values "
                     f"({int(bad.sum())} such samples)")
  return quantize(x)


def _labels(path: Path, y: np.ndarray, n: int, classes: int) -> np.ndarray:
  if y.dtype.kind not in "iu":
    raise InputError(f"{path}: y has dtype {y.dtype}; labels must be integers (class "
                     "indices), e.g. y.astype(np.int32)")
  if y.shape != (n,):
    raise InputError(f"{path}: y has shape {y.shape}; it must hold one label per sample of "
                     f"x: ({n},)")
  out_of_range = (y < 0) | (y >= classes)
  if out_of_range.any():
    i = int(np.argmax(out_of_range))
    raise InputError(f"{path}: y[{i}] = {int(y[i])} is not a class of this model: labels lie "
                     f"in [0, {classes})")
  return y.astype(np.int32)


def load_blob_samples(path: Path | str, blob: bytes) -> tuple[np.ndarray, np.ndarray]:
  """load_samples for a blob: its input shape, classes and stored input quantization."""
  from lowering.blob import read

  b = read(blob)
  g = b.graph
  return load_samples(path, g.tensors[b.io["input"]].shape[1:],
                      g.tensors[b.io["logits"]].shape[-1], b.quant.quantize_input)
