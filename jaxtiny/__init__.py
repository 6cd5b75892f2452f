"""jaxtiny: on-device training for microcontrollers, driven from JAX/Flax."""

from jaxtiny.errors import InputError, JaxtinyError, ModelFormatError, UnsupportedError
from jaxtiny.numerics import QParams
from jaxtiny.optim import adam, constant, cosine, sgd
from jaxtiny.qmodel import QModel
from jaxtiny.qmodel_file import load_qmodel
from jaxtiny.quantize import quantize
from jaxtiny.search import search_scheme
from jaxtiny.sparse import SparseUpdate, UpdateCost, update_cost
from jaxtiny.tinytraining import load_tinytraining
from jaxtiny.train import Trainer, softmax_cross_entropy, tiny_train

__all__ = [
  "InputError", "JaxtinyError", "ModelFormatError", "QModel", "QParams", "SparseUpdate",
  "Trainer", "UnsupportedError", "UpdateCost", "adam", "constant", "cosine", "load_qmodel",
  "load_tinytraining", "quantize", "search_scheme", "sgd", "softmax_cross_entropy", "tiny_train",
  "update_cost",
]
__version__ = "0.1.0"
