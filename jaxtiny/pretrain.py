"""Float32 training on the host: the pretraining that precedes quantization."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


def fit_fp32(module: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int = 30,
             batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
             variables: Any = None, progress: bool = False) -> Any:
  """Train a Flax module (called as `module(x, train=...)`) with Adam and cross-entropy.

  BatchNorm statistics are updated when the module has a `batch_stats` collection.
  Returns the trained variables; `progress` shows a bar over the epochs.
  """
  key = jax.random.key(seed)
  if variables is None:
    variables = module.init(key, jnp.asarray(x[:1]), train=False)
  params = variables["params"]
  rest = {k: v for k, v in variables.items() if k != "params"}
  tx = optax.adam(lr)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, rest, opt_state, xb, yb):
    def loss_fn(p):
      logits, updates = module.apply({"params": p, **rest}, xb, train=True,
                                     mutable=list(rest))
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
      return loss, updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    upd, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, upd), {**rest, **updates}, opt_state, loss

  rng = np.random.default_rng(seed)
  n = len(x)
  epoch_iter = range(epochs)
  if progress:
    from tqdm import tqdm

    epoch_iter = tqdm(epoch_iter, desc="fp32 training", unit="epoch")
  for _ in epoch_iter:
    order = rng.permutation(n)
    for i in range(0, n - batch_size + 1, batch_size):
      idx = order[i:i + batch_size]
      params, rest, opt_state, _ = step(params, rest, opt_state, jnp.asarray(x[idx]),
                                        jnp.asarray(y[idx]))
  return {"params": params, **rest}


def accuracy(logits: Any, labels: np.ndarray) -> float:
  return float(np.mean(np.argmax(np.asarray(logits), axis=-1) == np.asarray(labels)))
