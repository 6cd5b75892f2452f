"""Small datasets that ship inside installed packages (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def digits(test_fraction: float = 0.2, seed: int = 0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """scikit-learn's 8x8 digits as NHWC float32 in [0, 1]: x_train, y_train, x_test, y_test."""
  from sklearn.datasets import load_digits

  d = load_digits()
  x = (d.images.astype(np.float32) / 16.0)[..., None]
  y = d.target.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(x))
  n_test = int(round(len(x) * test_fraction))
  test, train = order[:n_test], order[n_test:]
  return x[train], y[train], x[test], y[test]


def imagenet_preprocess(rgb: np.ndarray, size: int = 128) -> np.ndarray:
  """An RGB image (uint8, or float in [0, 1]) -> the tiny-training models' float input.

  Bilinear resize to size x size (Pillow's, as torchvision applies to PIL images), then
  (x - 0.5) / 0.5 so values lie in [-1, 1].
  """
  from PIL import Image

  img = np.asarray(rgb)
  if img.ndim != 3 or img.shape[-1] != 3:
    raise ValueError(f"expected an RGB image (H, W, 3), got {img.shape}")
  if img.dtype != np.uint8:
    img = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
  small = Image.fromarray(img).resize((size, size), Image.BILINEAR)
  x = np.asarray(small, np.float32) / 255.0
  return (x - 0.5) / 0.5


def shared_models_dir() -> Path | None:
  """The folder of the shared int8 ImageNet models, if it can be found.

  Looked up in $JAXTINY_MODELS, then in ../shared/models beside the checkout.
  """
  import os

  env = os.environ.get("JAXTINY_MODELS")
  candidates = [Path(env)] if env else []
  here = Path(__file__).resolve().parents[1]
  candidates += [here.parent / "shared" / "models", here / "shared" / "models"]
  for c in candidates:
    if (c / "mcunet-5fps.pkl").exists():
      return c
  return None


def split_classes(x: np.ndarray, y: np.ndarray, classes) -> tuple[np.ndarray, np.ndarray]:
  """The examples of the given classes (labels unchanged)."""
  keep = np.isin(y, list(classes))
  return x[keep], y[keep]


def lfw_faces(size: int = 128, test_fraction: float = 0.5, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """scikit-image's lfw_subset: faces (label 1) vs background crops (label 0).

  The 25x25 gray images are resized (bilinear) to size x size, repeated to RGB and
  normalized to [-1, 1] as the tiny-training models expect. Returns x_train, y_train,
  x_test, y_test with classes balanced in both halves.
  """
  from skimage import data

  imgs = data.lfw_subset()
  labels = np.r_[np.ones(100, np.int32), np.zeros(100, np.int32)]
  rgb = (np.repeat(imgs[..., None], 3, axis=-1) * 255).round().astype(np.uint8)
  x = np.stack([imagenet_preprocess(im, size) for im in rgb])
  rng = np.random.default_rng(seed)
  test = np.zeros(len(x), bool)
  for c in (0, 1):
    idx = np.flatnonzero(labels == c)
    test[rng.choice(idx, int(round(len(idx) * test_fraction)), replace=False)] = True
  return x[~test], labels[~test], x[test], labels[test]


def _read_ts(path: Path) -> tuple[np.ndarray, np.ndarray]:
  """A multivariate, equal-length .ts file -> (N, length, dims) float32, labels."""
  classes: list[str] = []
  rows, labels = [], []
  in_data = False
  for line in path.read_text().splitlines():
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    if not in_data:
      if line.lower().startswith("@classlabel"):
        classes = line.split()[2:]
      in_data = line.lower() == "@data"
      continue
    *dims, label = line.split(":")
    rows.append([[float(v) for v in d.split(",")] for d in dims])
    labels.append(classes.index(label))
  x = np.asarray(rows, np.float32).transpose(0, 2, 1)
  return x, np.asarray(labels, np.int32)


def basic_motions() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """UEA BasicMotions (smartwatch accelerometer + gyroscope, 100 steps x 6 channels,
  4 activities), read from the .ts files bundled in the `aeon` package without importing
  it. Returns x_train, y_train, x_test, y_test with x as (N, 100, 6)."""
  import importlib.util

  spec = importlib.util.find_spec("aeon")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("BasicMotions ships with the aeon package: pip install --no-deps "
                            "aeon (only its bundled data files are read)")
  folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "BasicMotions"
  x_train, y_train = _read_ts(folder / "BasicMotions_TRAIN.ts")
  x_test, y_test = _read_ts(folder / "BasicMotions_TEST.ts")
  return x_train, y_train, x_test, y_test
