"""Quantization arithmetic shared by the front end: scales, zero points, multipliers.

Everything here runs once at quantization time (host side, numpy). The per-element
device arithmetic lives in `jaxtiny.primitives` (JAX) and `lowering.kernels` (numpy).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


class QuantizationWarning(UserWarning):
  """A value that int8 / int32 quantization cannot represent as asked."""


INT8_MIN, INT8_MAX = -128, 127
WEIGHT_MAX = 127  # weights are symmetric: q in [-127, 127]
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# Residual add: both inputs are scaled to integers by multipliers of at most 2**ADD_SHIFT.
# With |x - z| <= 255 the sum of two terms stays below 2**24, so f32(acc) is exact.
ADD_SHIFT = 15


@dataclass(frozen=True)
class QParams:
  """Per-tensor asymmetric int8 quantization: real = scale * (q - zero)."""

  scale: float
  zero: int

  def __post_init__(self) -> None:
    if not (np.isfinite(self.scale) and self.scale > 0):
      raise ValueError(f"quantization scale must be finite and > 0, got {self.scale}")
    if not INT8_MIN <= self.zero <= INT8_MAX:
      raise ValueError(f"zero point {self.zero} outside int8 range")

  def quantize(self, x: np.ndarray) -> np.ndarray:
    """float -> int8: clamp(rne(f32(x) * f32(1/scale)) + zero)."""
    return quantize_with(x, np.float32(1.0 / self.scale), self.zero)

  def dequantize(self, q: np.ndarray) -> np.ndarray:
    return (np.float32(self.scale) * (np.asarray(q, np.float32) - np.float32(self.zero))).astype(
      np.float32
    )


def quantize_with(x: np.ndarray, inv_scale: np.float32, zero: int) -> np.ndarray:
  """clamp(rne(f32(x) * inv_scale) + zero) in float32, then int8 (the C runtime's
  jt_quantize_input does the same operations)."""
  q = np.rint(np.asarray(x, np.float32) * inv_scale)
  return np.clip(q + np.float32(zero), INT8_MIN, INT8_MAX).astype(np.int8)


def qparams_from_range(lo: float, hi: float) -> QParams:
  """Asymmetric int8 parameters covering [lo, hi] (the range is widened to include 0)."""
  lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
  if not (np.isfinite(lo) and np.isfinite(hi)):
    raise ValueError(f"calibration range [{lo}, {hi}] is not finite")
  if hi - lo < 1e-12:
    return QParams(1.0, 0)
  scale = (hi - lo) / (INT8_MAX - INT8_MIN)
  zero = int(np.clip(np.rint(INT8_MIN - lo / scale), INT8_MIN, INT8_MAX))
  return QParams(scale, zero)


# A quantized bias is kept within about half the int32 range (the float32 weight scale
# rounds), leaving room for training updates.
BIAS_LIMIT = 2**30


def weight_scales(w: np.ndarray, bias: np.ndarray | None = None,
                  x_scale: float | None = None) -> np.ndarray:
  """Symmetric per-output-channel scales (axis 0 is the output channel), float32.

  With the bias and the input scale: a channel whose weights are tiny beside its bias (a
  BatchNorm gamma near 0 folded in) gets the scale floor |b| / (x_scale * BIAS_LIMIT), so
  its int32 bias `b / (x_scale * s_w)` fits instead of saturating; its weights then use
  fewer int8 levels, which for such a channel carry almost nothing.
  """
  amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float64)
  scales = amax / WEIGHT_MAX
  if bias is not None:
    scales = np.maximum(scales, np.abs(bias.astype(np.float64)) / (x_scale * BIAS_LIMIT))
  scales = np.where(scales > 0, scales, 1.0)
  return scales.astype(np.float32)


def quantize_weight(w: np.ndarray, scales: np.ndarray) -> np.ndarray:
  shape = (-1,) + (1,) * (w.ndim - 1)
  q = np.rint(w.astype(np.float64) / scales.astype(np.float64).reshape(shape))
  return np.clip(q, -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)


def quantize_bias(b: np.ndarray, x_scale: float, w_scales: np.ndarray,
                  layer: str = "") -> np.ndarray:
  """int32 bias with scale x_scale * w_scales[c]; a value outside int32 saturates, with a
  warning naming the layer and the channels (never silently)."""
  q = np.rint(b.astype(np.float64) / (x_scale * w_scales.astype(np.float64)))
  clipped = np.flatnonzero((q < INT32_MIN) | (q > INT32_MAX))
  if clipped.size:
    warnings.warn(f"layer '{layer}': the int32 bias of channel(s) {clipped.tolist()[:8]} "
                  "saturates; those channels' outputs are off (their weight scale is too "
                  "small for their bias)", QuantizationWarning, stacklevel=2)
  return np.clip(q, INT32_MIN, INT32_MAX).astype(np.int32)


def multiplier(real: float | np.ndarray) -> np.ndarray:
  """A requantization multiplier: computed in float64, rounded to float32 once."""
  return np.asarray(np.asarray(real, np.float64), np.float32)


def clamp_bounds(qp: QParams, lo: float | None, hi: float | None) -> tuple[int, int]:
  """Integer clamp bounds of a fused activation with real bounds [lo, hi] (None: open)."""
  qlo, qhi = INT8_MIN, INT8_MAX
  if lo is not None:
    qlo = max(qlo, min(INT8_MAX, qp.zero + int(np.rint(lo / qp.scale))))
  if hi is not None:
    qhi = min(qhi, max(INT8_MIN, qp.zero + int(np.rint(hi / qp.scale))))
  return qlo, qhi


def add_multipliers(sa: float, sb: float, sy: float) -> tuple[int, int, float]:
  """Integer input multipliers and the float32 output multiplier of a residual add.

  y = clamp(rne(f32((a - za) * ma + (b - zb) * mb) * m) + zy); the larger input scale gets
  2**ADD_SHIFT, the other its exact ratio rounded to an integer.
  """
  big = max(sa, sb)
  ma = int(np.rint(2**ADD_SHIFT * sa / big))
  mb = int(np.rint(2**ADD_SHIFT * sb / big))
  m = float(multiplier(big / (2**ADD_SHIFT * sy)))
  return ma, mb, m
