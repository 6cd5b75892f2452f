"""A user's training script as the command line reads it: `SCRIPT.py[:FUNCTION]`, whose
function (default `trainer`) returns a jt.Trainer, a QModel and a scheme, or a QModel; or a
saved QModel file (`qm.save`) where only a model is needed."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path
from typing import Any

from jaxtiny.cli.common import UsageError
from jaxtiny.errors import JaxtinyError
from jaxtiny.qmodel import QModel
from jaxtiny.sparse import SparseUpdate
from jaxtiny.train import Trainer, softmax_cross_entropy, tiny_train

DEFAULT_FUNCTION = "trainer"
RETURNS = ("a jt.Trainer (jt.tiny_train(qm, ...)(loss_fn)), a (QModel, jt.SparseUpdate) pair "
           "or a QModel")


def split_spec(spec: str) -> tuple[Path, str]:
  """'train.py:make' -> (train.py, 'make'); the function defaults to `trainer`. A colon in a
  Windows drive letter or a folder name is not a separator: only the last one after .py."""
  head, sep, tail = spec.rpartition(":")
  if sep and head.endswith(".py") and tail.isidentifier():
    return Path(head), tail
  return Path(spec), DEFAULT_FUNCTION


def _where(e: BaseException, script: Path) -> str:
  """The innermost frame of the user's script in e's traceback, as ' (at file:line)'."""
  frames = [f for f in traceback.extract_tb(e.__traceback__)
            if Path(f.filename).resolve() == script.resolve()]
  return f" (at {script}:{frames[-1].lineno})" if frames else ""


def _import(script: Path) -> Any:
  if not script.is_file():
    raise UsageError(f"the script {script} does not exist" if not script.exists() else
                     f"{script} is not a file")
  if script.suffix != ".py":
    raise UsageError(f"{script} is not a Python script (.py): give SCRIPT.py[:FUNCTION]")
  name = f"jaxtiny_user_{script.stem}"
  spec = importlib.util.spec_from_file_location(name, script)
  if spec is None or spec.loader is None:
    raise UsageError(f"cannot import {script}")
  module = importlib.util.module_from_spec(spec)
  folder = str(script.resolve().parent)
  sys.path.insert(0, folder)  # the script's own imports, as `python SCRIPT.py` finds them
  sys.modules[name] = module
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise UsageError(f"{script}:{e.lineno}: syntax error: {e.msg}") from None
  except Exception as e:
    raise UsageError(f"importing {script} raised {type(e).__name__}: {e}"
                     f"{_where(e, script)}") from None
  finally:
    sys.path.remove(folder)
  return module


def run_script(spec: str) -> Any:
  """What SCRIPT.py[:FUNCTION] gives: the function's return value (or the object itself
  when FUNCTION names a value, e.g. a module-level trainer)."""
  script, function = split_spec(spec)
  module = _import(script)
  if not hasattr(module, function):
    found = sorted(k for k, v in vars(module).items()
                   if callable(v) and getattr(v, "__module__", None) == module.__name__)
    raise UsageError(f"{script} defines no {function!r}: name the function that returns "
                     f"{RETURNS} as {script}:FUNCTION (it defines: {', '.join(found) or 'none'})")
  obj = getattr(module, function)
  if not callable(obj) or isinstance(obj, Trainer | QModel):
    return obj
  try:
    return obj()
  except JaxtinyError as e:
    raise UsageError(f"{script}:{function}() failed: {e}") from None
  except Exception as e:
    raise UsageError(f"{script}:{function}() raised {type(e).__name__}: {e}"
                     f"{_where(e, script)}") from None


def as_trainer(obj: Any, spec: str) -> Trainer:
  """A Trainer from what a script gave: a Trainer as is, a (QModel, SparseUpdate) pair or a
  QModel with the defaults (jt.sgd(0.01), QAS, softmax cross-entropy)."""
  if isinstance(obj, Trainer):
    return obj
  if isinstance(obj, QModel):
    return tiny_train(obj)(softmax_cross_entropy)
  if (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], QModel)
          and isinstance(obj[1], SparseUpdate)):
    return tiny_train(obj[0], update=obj[1])(softmax_cross_entropy)
  raise UsageError(f"{spec} returned {type(obj).__name__}; it must return {RETURNS}")


def load_model(spec: str) -> tuple[QModel, Trainer | None]:
  """The QModel of a saved model file or a script, and the script's Trainer if it gave one
  (its loss and optimizer are then the ones to keep)."""
  path = Path(spec)
  if path.suffix != ".py" and not split_spec(spec)[0].suffix == ".py":
    from jaxtiny.qmodel_file import load_qmodel

    if not path.is_file():
      raise UsageError(f"the model {path} does not exist (give a saved QModel file, from "
                       "qm.save(path), or SCRIPT.py[:FUNCTION])")
    return load_qmodel(path), None
  obj = run_script(spec)
  trainer = as_trainer(obj, spec)
  return trainer.qm, trainer if isinstance(obj, Trainer) else None
