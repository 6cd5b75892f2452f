"""jaxtiny: on-device training for microcontrollers, driven from JAX/Flax."""

from jaxtiny.errors import InputError, JaxtinyError, ModelFormatError, UnsupportedError
from jaxtiny.numerics import QParams
from jaxtiny.qmodel import QModel
from jaxtiny.quantize import quantize
from jaxtiny.tinytraining import load_tinytraining

__all__ = [
  "InputError", "JaxtinyError", "ModelFormatError", "QModel", "QParams", "UnsupportedError",
  "load_tinytraining", "quantize",
]
__version__ = "0.1.0"
