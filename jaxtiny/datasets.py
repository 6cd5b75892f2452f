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
