"""jaxtiny lowering: jaxpr -> op list -> blob, the numpy reference kernels, and the host
build of the C runtime (`CRuntime`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
  from lowering.blob import BlobError, load
  from lowering.cruntime import CRuntime

__all__ = ["BlobError", "CRuntime", "load"]
_HOME = {"BlobError": "blob", "load": "blob", "CRuntime": "cruntime"}


def __getattr__(name: str) -> Any:
  # Imported on first use: importing lowering.blob (and with it jax) here would make
  # `python -m lowering.opset` find its module already imported, which runpy warns about.
  if name in _HOME:
    import importlib

    return getattr(importlib.import_module(f"lowering.{_HOME[name]}"), name)
  raise AttributeError(f"module 'lowering' has no attribute {name!r}")
