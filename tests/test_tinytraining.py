"""The importer of the tiny-training int8 models: structure, ImageNet check, bad files."""

import io
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest

import jaxtiny as jt
from jaxtiny.datasets import imagenet_preprocess
from jaxtiny.tinytraining import read_tinytraining

MODELS = {"mcunet-5fps": (42, 160), "mbv2-w0.35": (51, 112)}


@pytest.mark.parametrize("name", list(MODELS))
def test_structure(models_dir, name):
  qm = jt.load_tinytraining(models_dir / f"{name}.pkl")
  convs, cls_in = MODELS[name]
  assert len(qm.layers) == convs + 1
  assert [n.index for n in qm.layers[:-1]] == list(range(convs))
  assert qm.layer(0).name == "first_conv"
  assert qm.layer(1).name == "blocks.0.depthwise"  # the first block has no pointwise1
  assert qm.layer(2).name == "blocks.0.pointwise2"
  assert qm.layer(3).name == "blocks.1.pointwise1"
  assert qm.classifier.name == "classifier"
  assert qm.params["classifier"]["weight"].shape == (1000, cls_in)
  assert qm.input_shape == (128, 128, 3) and qm.output_shape == (1000,)
  assert qm.input_qparams.zero == 0 and qm.input_qparams.scale == pytest.approx(1 / 127.5)


@pytest.mark.e2e
@pytest.mark.parametrize("name", list(MODELS))
def test_imagenet_photos(models_dir, name):
  from skimage import data

  qm = jt.load_tinytraining(models_dir / f"{name}.pkl")
  x = np.stack([imagenet_preprocess(data.chelsea()), imagenet_preprocess(data.coffee())])
  y = np.asarray(qm.apply(qm.quantize_input(x))).astype(np.int32)
  cat, coffee = (np.argsort(-row, kind="stable") for row in y)
  assert cat[0] == 285  # Egyptian cat
  assert {281, 282} <= set(cat[:5])  # tabby, tiger cat
  assert coffee[0] == 967  # espresso


def _torch_style_archive(model: dict, monkeypatch) -> bytes:
  """Re-save a model dict the way torch.save does: a zip of data.pkl plus raw storages.

  Stand-in `torch` modules let the standard pickler write the same globals torch writes.
  """
  torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
  kinds = {}
  for dtype, kind in ((np.int8, "CharStorage"), (np.int32, "IntStorage"),
                      (np.float32, "FloatStorage")):
    cls = type(kind, (), {"__module__": "torch", "__qualname__": kind})
    setattr(torch, kind, cls)
    kinds[np.dtype(dtype)] = cls

  def _rebuild_tensor_v2(*args):
    raise AssertionError("only pickled here")

  _rebuild_tensor_v2.__module__ = "torch._utils"
  _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  monkeypatch.setitem(sys.modules, "torch", torch)
  monkeypatch.setitem(sys.modules, "torch._utils", utils)
  storages: dict[str, bytes] = {}

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      return obj if isinstance(obj, tuple) and obj and obj[0] == "storage" else None

    def reducer_override(self, obj):
      if not isinstance(obj, np.ndarray):
        return NotImplemented
      a = np.ascontiguousarray(obj)
      key = str(len(storages))
      storages[key] = a.astype(a.dtype.newbyteorder("<")).tobytes()
      strides = tuple(s // a.itemsize for s in a.strides)
      return (_rebuild_tensor_v2, (("storage", kinds[a.dtype], key, "cpu", a.size), 0,
                                   a.shape, strides, False, None))

  buf = io.BytesIO()
  Pickler(buf, protocol=2).dump(model)
  out = io.BytesIO()
  with zipfile.ZipFile(out, "w") as z:
    z.writestr("archive/data.pkl", buf.getvalue())
    for k, v in storages.items():
      z.writestr(f"archive/data/{k}", v)
  return out.getvalue()


def test_corrupt_and_foreign_files(models_dir, tmp_path):
  good = (models_dir / "mcunet-5fps.pkl").read_bytes()
  truncated = tmp_path / "truncated.pkl"
  truncated.write_bytes(good[: len(good) // 2])
  with pytest.raises(jt.ModelFormatError, match="truncated.pkl"):
    jt.load_tinytraining(truncated)
  flipped = bytearray(good)
  flipped[len(good) // 2] ^= 0xFF  # breaks the zip member's CRC
  bad = tmp_path / "flipped.pkl"
  bad.write_bytes(bytes(flipped))
  with pytest.raises(jt.ModelFormatError, match="not a readable"):
    jt.load_tinytraining(bad)
  with pytest.raises(jt.ModelFormatError, match="cannot read"):
    jt.load_tinytraining(tmp_path / "missing.pkl")

  class Evil:
    def __reduce__(self):
      return (print, ("pwned",))

  evil = tmp_path / "evil.pkl"
  evil.write_bytes(pickle.dumps({"first_conv": Evil()}))
  with pytest.raises(jt.ModelFormatError, match="builtins.print"):
    jt.load_tinytraining(evil)


def test_structural_errors_name_the_layer(models_dir, tmp_path):
  model = read_tinytraining(models_dir / "mcunet-5fps.pkl")
  model["blocks"][3]["depthwise"]["params"]["weight"] = np.zeros((2, 2), np.int8)
  path = tmp_path / "bad_shape.pkl"
  path.write_bytes(pickle.dumps(model, protocol=2))
  with pytest.raises(jt.ModelFormatError, match=r"blocks\.3\.depthwise\.weight: expected int8"):
    jt.load_tinytraining(path)
  model = read_tinytraining(models_dir / "mcunet-5fps.pkl")
  del model["blocks"][5]["pointwise2"]["params"]["y_scale"]
  path.write_bytes(pickle.dumps(model, protocol=2))
  with pytest.raises(jt.ModelFormatError, match=r"blocks\.5\.pointwise2: missing 'y_scale'"):
    jt.load_tinytraining(path)


def test_torch_zip_format_matches_numpy_pickle(models_dir, tmp_path, monkeypatch):
  """The README's torch.save layout (storages + _rebuild_tensor_v2) loads identically."""
  model = read_tinytraining(models_dir / "mbv2-w0.35.pkl")
  path = tmp_path / "torch_style.pkl"
  path.write_bytes(_torch_style_archive(model, monkeypatch))
  monkeypatch.undo()  # the reader must not need the stand-in modules
  a = jt.load_tinytraining(models_dir / "mbv2-w0.35.pkl")
  b = jt.load_tinytraining(path)
  for k in a.params:
    for key in ("weight", "bias"):
      np.testing.assert_array_equal(a.params[k][key], b.params[k][key])
