"""A Flax training script as the `jaxtiny` command line reads it: its `trainer()` returns
the training step to put on the board (a QModel, a sparse scheme, an optimizer, a loss).

The network is pretrained in fp32 on a third of scikit-learn's digits; the board then
keeps learning from the rest, one sample at a time. Run it once to write the sample files:

  python examples/digits_script.py           # digits_train.npz, digits_test.npz (float x)
  jaxtiny lower examples/digits_script.py -o digits.jtb --budget 64KB
  jaxtiny run digits.jtb --data digits_train.npz --test digits_test.npz --epochs 2
"""

from __future__ import annotations

import flax.linen as nn
import numpy as np
import optax

import jaxtiny as jt
from jaxtiny import datasets, pretrain


class TinyNet(nn.Module):
  """Conv, strided conv with BatchNorm, average pooling, a dense head on the flat map."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Conv(12, (3, 3))(x))
    x = nn.Conv(24, (3, 3), strides=2, use_bias=False)(x)
    x = nn.relu6(nn.BatchNorm(use_running_average=not train)(x))
    x = nn.avg_pool(x, (2, 2), (2, 2))
    return nn.Dense(10)(x.reshape((x.shape[0], -1)))


def split() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
  """(pretraining, on-device, test) samples: float 8x8x1 images and labels."""
  x_tr, y_tr, x_te, y_te = datasets.digits()
  n = len(x_tr) // 3
  return (x_tr[:n], y_tr[:n]), (x_tr[n:], y_tr[n:]), (x_te, y_te)


def loss(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def trainer() -> jt.Trainer:
  (x, y), _, _ = split()
  model = TinyNet()
  variables = pretrain.fit_fp32(model, x, y, epochs=6)
  qm = jt.quantize(model, variables, x)
  scheme = jt.SparseUpdate(bias_last=2, weights={1: 0.5})  # the classifier trains too
  return jt.tiny_train(qm, optimizer=jt.sgd(0.02), update=scheme)(loss)


if __name__ == "__main__":
  _, (x, y), (x_te, y_te) = split()
  np.savez("digits_train.npz", x=x, y=y)
  np.savez("digits_test.npz", x=x_te, y=y_te)
  print(f"wrote digits_train.npz ({len(x)} samples) and digits_test.npz ({len(x_te)})")
