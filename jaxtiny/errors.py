"""Exceptions that name what went wrong and where."""


class JaxtinyError(Exception):
  """Base class of jaxtiny's own errors."""


class UnsupportedError(JaxtinyError, NotImplementedError):
  """A primitive, layer or pattern that has no int8 rule."""


class ModelFormatError(JaxtinyError, ValueError):
  """A model file that is corrupt, truncated or not of the expected format."""


class InputError(JaxtinyError, ValueError):
  """An input of the wrong dtype or shape."""
