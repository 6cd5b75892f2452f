"""jaxtiny lowering: jaxpr -> op list -> blob, and the numpy reference kernels."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
  from lowering.blob import BlobError, load

__all__ = ["BlobError", "load"]


def __getattr__(name: str) -> Any:
  # Imported on first use: importing lowering.blob (and with it jax) here would make
  # `python -m lowering.opset` find its module already imported, which runpy warns about.
  if name in __all__:
    from lowering import blob

    return getattr(blob, name)
  raise AttributeError(f"module 'lowering' has no attribute {name!r}")
