"""Exceptions that name what went wrong and where, and the source line they point to."""

import os
import sys
from typing import Any

# Frames of installed libraries (jax, flax, optax, the standard library) are not where a
# user looks: an error points to the first frame outside them.
_LIBRARY_DIRS = tuple({os.path.dirname(os.__file__) + os.sep, sys.prefix + os.sep,
                       sys.base_prefix + os.sep} - {os.sep})
_LIBRARY_PARTS = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")


def _is_library(path: str) -> bool:
  return path.startswith(_LIBRARY_DIRS) or any(p in path for p in _LIBRARY_PARTS)


def source_line(source_info: Any) -> str:
  """`file:line (function)` of the innermost frame of an equation's traceback that is not in
  an installed library (JAX's own summary treats a virtualenv's flax as user code)."""
  tb = getattr(source_info, "traceback", None)
  for f in getattr(tb, "frames", ()):
    if not _is_library(f.file_name):
      return f"{f.file_name}:{f.line_num} ({f.function_name})"
  return ""


class JaxtinyError(Exception):
  """Base class of jaxtiny's own errors."""


class UnsupportedError(JaxtinyError, NotImplementedError):
  """A primitive, layer or pattern that has no int8 rule."""


class ModelFormatError(JaxtinyError, ValueError):
  """A model file that is corrupt, truncated or not of the expected format."""


class InputError(JaxtinyError, ValueError):
  """An input of the wrong dtype or shape."""


class NonFiniteLossError(JaxtinyError, FloatingPointError):
  """A training step whose loss is not finite: it stopped before any update."""
