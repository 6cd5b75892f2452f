"""The C runtime's fused updates (runtime_c/src/jt_update.c) against the numpy reference, bit
for bit: the weight / bias gradients (kernels.conv2d_bw_weight, dense_bw_weight, bias_bw),
the learning-rate schedule, the stochastic-rounding hash and the optimizer step with its
rounding (executor._step: learning_rate, optimizer_step, hash_uniform, apply_update and the
non-finite rule)."""

from __future__ import annotations

import ctypes
import types
import zlib
from typing import Any

import numpy as np
import pytest

from lowering import executor as E
from lowering import kernels as K

from c_structs import I32, I32P, U32, OpView, Runtime

try:
  from lowering.cruntime import library
  LIB = library()
except (ImportError, OSError) as err:  # no build of the runtime
  pytest.skip(f"the C runtime is not built: {err}", allow_module_level=True)

F32P = ctypes.POINTER(ctypes.c_float)
I8P = ctypes.POINTER(ctypes.c_int8)


class OptimParams(ctypes.Structure):
  _fields_ = [("optimizer", U32), ("schedule", U32), ("steps", U32), ("rounding", U32),
              ("seed", U32), ("lr", ctypes.c_float), ("final_lr", ctypes.c_float),
              ("amplitude", ctypes.c_float), ("momentum", ctypes.c_float),
              ("b1", ctypes.c_float), ("b2", ctypes.c_float), ("eps", ctypes.c_float)]


class ConvParams(ctypes.Structure):
  _fields_ = [(k, U32) for k in ("n", "h", "w", "c", "ho", "wo", "gc", "o", "kh", "kw", "ci",
                                 "og", "stride_h", "stride_w", "pad_top", "pad_left")] + [
    ("x_zero", ctypes.c_int32), ("g_channel", I32P)]


LIB.jt_learning_rate_f32.restype = ctypes.c_float
LIB.jt_learning_rate_f32.argtypes = [ctypes.POINTER(OptimParams), ctypes.c_int32]
LIB.jt_hash_uniform_f32.restype = ctypes.c_float
LIB.jt_hash_uniform_f32.argtypes = [U32, U32, U32, U32]
for name, pt in (("jt_update_s8", I8P), ("jt_update_i32", I32P)):
  getattr(LIB, name).restype = ctypes.c_int
  getattr(LIB, name).argtypes = [pt, F32P, F32P, F32P, F32P, U32, U32, U32, ctypes.c_int32,
                                 ctypes.c_int32, ctypes.POINTER(OptimParams)]
LIB.jt_optimizer_step_f32.restype = ctypes.c_int
LIB.jt_optimizer_step_f32.argtypes = [F32P, F32P, F32P, F32P, U32, U32, ctypes.c_int32,
                                      ctypes.POINTER(OptimParams)]
LIB.jt_conv2d_bw_weight_f32_row.restype = ctypes.c_int
LIB.jt_conv2d_bw_weight_f32_row.argtypes = [F32P, I8P, ctypes.POINTER(ConvParams), U32, F32P]
LIB.jt_dense_bw_weight_f32_row.restype = ctypes.c_int
LIB.jt_dense_bw_weight_f32_row.argtypes = [F32P, I8P, U32, U32, U32, ctypes.c_int32, U32, F32P]
LIB.jt_bias_bw_f32.restype = ctypes.c_int
LIB.jt_bias_bw_f32.argtypes = [F32P, U32, U32, F32P]


def ptr(a: np.ndarray | None, kind: Any) -> Any:
  if a is None:
    return ctypes.cast(None, kind)
  assert a.flags.c_contiguous
  return a.ctypes.data_as(kind)


def assert_bits(c: np.ndarray, ref: np.ndarray) -> None:
  """Equal bit for bit (float32 compared as their bits: -0.0 != +0.0, NaN == NaN)."""
  ref = np.asarray(ref)
  assert c.shape == ref.shape and c.dtype == ref.dtype
  if c.dtype == np.float32:
    c, ref = c.view(np.uint32), ref.view(np.uint32)
  bad = np.flatnonzero(c != ref)
  assert bad.size == 0, f"{bad.size} of {c.size} differ, first at {bad[:5]}: " \
                        f"{c.reshape(-1)[bad[:5]]} != {ref.reshape(-1)[bad[:5]]}"


def gradient(rng: np.random.Generator, shape: tuple[int, ...], special: bool = False
             ) -> np.ndarray:
  """float32 values of mixed magnitude and sign, some exact zeros of either sign."""
  g = (rng.standard_normal(shape) * 10.0 ** rng.integers(-6, 3, shape)).astype(np.float32)
  g[rng.random(shape) < 0.15] = np.float32(0)
  g[rng.random(shape) < 0.1] = np.float32(-0.0)
  if special:
    g[rng.random(shape) < 0.03] = np.float32(np.inf)
    g[rng.random(shape) < 0.03] = np.float32(-np.inf)
    g[rng.random(shape) < 0.03] = np.float32(np.nan)
    g[rng.random(shape) < 0.03] = np.float32(3e38)
  return g


# --- gradients ---------------------------------------------------------------------------

CONV_CASES = [  # (n, h, w, c, o, kernel, strides, padding, groups, channels)
  (1, 5, 6, 3, 4, (3, 3), (1, 1), ((1, 1), (1, 1)), 1, None),
  (2, 7, 5, 4, 6, (3, 2), (2, 1), ((0, 2), (1, 0)), 2, None),
  (1, 6, 6, 5, 5, (3, 3), (2, 2), ((1, 1), (1, 1)), 5, None),
  (1, 4, 9, 3, 2, (1, 4), (1, 3), ((2, 3), (0, 4)), 1, None),
  (1, 1, 8, 2, 3, (1, 3), (1, 1), ((0, 0), (1, 1)), 1, None),
  (1, 5, 5, 6, 3, (1, 1), (1, 1), ((0, 0), (0, 0)), 1, (0, 2, 5)),  # gathered input channels
  (1, 6, 5, 8, 8, (3, 3), (1, 2), ((1, 1), (1, 1)), 8, (1, 4, 7)),  # depthwise subset
  (2, 5, 4, 4, 4, (2, 2), (1, 1), ((1, 0), (0, 1)), 4, (0, 1, 2, 3)),
]


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv2d_bw_weight_rows(case: int) -> None:
  n, h, w, c, o, kernel, strides, padding, groups, channels = CONV_CASES[case]
  rng = np.random.default_rng(100 + case)
  for trial in range(3):
    x_zero = int(rng.integers(-128, 128))
    x = rng.integers(-128, 128, (n, h, w, c)).astype(np.int8)
    x[rng.random(x.shape) < 0.2] = x_zero  # x - z = +0.0, like a padded tap
    ho = K.out_size(h, kernel[0], strides[0], padding[0])
    wo = K.out_size(w, kernel[1], strides[1], padding[1])
    g = gradient(rng, (n, ho, wo, o), special=trial == 2)
    if trial == 1:
      g = -np.abs(g)  # all-negative g: sums of -0.0 terms keep their sign
    g_ref, x_in, groups_ref, sel = g, x, groups, None
    if channels is not None:
      if groups > 1:  # executor._conv_update: g's selected channels over the saved input
        x_in = np.ascontiguousarray(x[..., list(channels)])
        g_ref, groups_ref = g[..., list(channels)], len(channels)
        sel = np.asarray(channels, np.int32)
      else:
        x_in = np.ascontiguousarray(x[..., list(channels)])
    with np.errstate(invalid="ignore", over="ignore"):
      ref = K.conv2d_bw_weight(g_ref, x_in, strides, padding, groups_ref, x_zero, kernel)
    oo, kh, kw, ci = ref.shape
    q = ConvParams(n=n, h=h, w=w, c=x_in.shape[3], ho=ho, wo=wo, gc=o, o=oo, kh=kh, kw=kw,
                   ci=ci, og=oo // groups_ref, stride_h=strides[0], stride_w=strides[1],
                   pad_top=padding[0][0], pad_left=padding[1][0], x_zero=x_zero,
                   g_channel=ptr(sel, I32P))
    out = np.full(ref.shape, np.nan, np.float32)
    for r in range(oo):
      row = np.zeros((kh, kw, ci), np.float32)
      assert LIB.jt_conv2d_bw_weight_f32_row(ptr(g, F32P), ptr(x_in, I8P), ctypes.byref(q),
                                             r, ptr(row, F32P)) == 0
      out[r] = row
    assert_bits(out, ref)


def test_conv2d_bw_weight_padding_sign_of_zero() -> None:
  """A gradient that only meets padding and x == z: every term is g * 0.0, so the sum is
  -0.0 exactly when all g are negative (padded taps must be counted, not skipped)."""
  g = np.full((1, 3, 3, 1), -1.5, np.float32)
  x = np.full((1, 3, 3, 1), 7, np.int8)
  ref = K.conv2d_bw_weight(g, x, (1, 1), ((1, 1), (1, 1)), 1, 7, (3, 3))
  q = ConvParams(n=1, h=3, w=3, c=1, ho=3, wo=3, gc=1, o=1, kh=3, kw=3, ci=1, og=1,
                 stride_h=1, stride_w=1, pad_top=1, pad_left=1, x_zero=7,
                 g_channel=ptr(None, I32P))
  row = np.zeros((1, 3, 3, 1), np.float32)
  assert LIB.jt_conv2d_bw_weight_f32_row(ptr(g, F32P), ptr(x, I8P), ctypes.byref(q), 0,
                                         ptr(row, F32P)) == 0
  assert np.all(np.signbit(ref))
  assert_bits(row, ref)


@pytest.mark.parametrize("n,o,k", [(1, 5, 7), (3, 4, 6), (2, 1, 1)])
def test_dense_bw_weight_rows(n: int, o: int, k: int) -> None:
  rng = np.random.default_rng(n * 100 + o * 10 + k)
  for trial in range(3):
    x_zero = int(rng.integers(-128, 128))
    x = rng.integers(-128, 128, (n, k)).astype(np.int8)
    x[rng.random(x.shape) < 0.2] = x_zero
    g = gradient(rng, (n, o), special=trial == 2)
    with np.errstate(invalid="ignore", over="ignore"):
      ref = K.dense_bw_weight(g, x, x_zero)
    out = np.zeros((o, k), np.float32)
    for r in range(o):
      row = np.zeros(k, np.float32)
      assert LIB.jt_dense_bw_weight_f32_row(ptr(g, F32P), ptr(x, I8P), n, o, k, x_zero, r,
                                            ptr(row, F32P)) == 0
      out[r] = row
    assert_bits(out, ref)


@pytest.mark.parametrize("shape", [(1, 4, 5, 3), (1, 7), (6,), (2, 3, 1, 4)])
def test_bias_bw(shape: tuple[int, ...]) -> None:
  rng = np.random.default_rng(len(shape) * 7 + shape[-1])
  for trial in range(3):
    g = gradient(rng, shape, special=trial == 2)
    if trial == 1:
      g = -np.abs(g)
    with np.errstate(invalid="ignore", over="ignore"):
      ref = K.bias_bw(g)
    c = shape[-1]
    out = np.zeros(c, np.float32)
    assert LIB.jt_bias_bw_f32(ptr(g, F32P), g.size // c, c, ptr(out, F32P)) == 0
    assert_bits(out, ref)


# --- schedule and hash -------------------------------------------------------------------


def params(opt: dict, rounding: str, seed: int) -> OptimParams:
  cosine = opt["schedule"] == "cosine"
  return OptimParams(optimizer=int(opt["kind"] == "adam"), schedule=int(cosine),
                     steps=opt["steps"], rounding=int(rounding == "stochastic"), seed=seed,
                     lr=float(np.float32(opt["lr"])), final_lr=float(np.float32(opt["final"])),
                     amplitude=float(np.float32(0.5 * (opt["lr"] - opt["final"]))),
                     momentum=float(np.float32(opt["momentum"])),
                     b1=float(np.float32(opt["b1"])), b2=float(np.float32(opt["b2"])),
                     eps=float(np.float32(opt["eps"])))


def optimizer(kind: str = "sgd", schedule: str = "constant", lr: float = 0.01,
              momentum: float = 0.0, steps: int = 0, final: float = 0.0) -> dict:
  return {"kind": kind, "schedule": schedule, "lr": lr, "steps": steps, "final": final,
          "momentum": momentum, "b1": 0.9, "b2": 0.999, "eps": 1e-8}


@pytest.mark.parametrize("lr,final,steps", [(0.1, 0.0, 100), (0.05, 0.001, 7), (1e-3, 1e-4, 1),
                                            (0.3, 0.3, 50)])
def test_learning_rate(lr: float, final: float, steps: int) -> None:
  for schedule in ("constant", "cosine"):
    opt = optimizer(schedule=schedule, lr=lr, steps=steps, final=final)
    prm = params(opt, "nearest", 0)
    for step in [*range(0, 2 * steps + 3), 12345, 2**31 - 1]:
      ref = K.learning_rate(schedule, lr, steps, final, step)
      got = np.float32(LIB.jt_learning_rate_f32(ctypes.byref(prm), step))
      assert_bits(np.asarray(got), np.asarray(ref))


def test_hash_uniform() -> None:
  rng = np.random.default_rng(5)
  for _ in range(20):
    seed, step, pid = (int(v) for v in rng.integers(0, 2**32, 3, dtype=np.uint64))
    step, pid = step % 2**31, pid % 2**31
    start = int(rng.integers(0, 10**6))
    ref = K.hash_uniform(seed, step, pid, 16, start)
    got = np.array([LIB.jt_hash_uniform_f32(seed, step, pid, start + i) for i in range(16)],
                   np.float32)
    assert_bits(got, ref)
    assert np.all((ref >= 0) & (ref < 1))


# --- the optimizer step ---------------------------------------------------------------------


OPTIMIZERS = {
  "sgd": optimizer(lr=0.05),
  "momentum": optimizer(lr=0.02, momentum=0.9),
  "adam": optimizer("adam", lr=0.01),
  "sgd_cosine": optimizer(schedule="cosine", lr=0.2, steps=10, final=0.01),
  "adam_cosine": optimizer("adam", schedule="cosine", lr=0.05, steps=6, final=0.0),
}
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_step(name: str) -> None:
  """The real step and new slots of every element, bit for bit (before any rounding)."""
  opt = OPTIMIZERS[name]
  rng = np.random.default_rng(zlib.crc32(name.encode()))
  n_slots = 2 if opt["kind"] == "adam" else int(opt["momentum"] != 0)
  for step in (0, 1, 4, 9, 1000):
    g = gradient(rng, (3000,), special=step == 9)
    slots = [(rng.standard_normal(3000) * 10.0 ** rng.integers(-8, 2, 3000)).astype(np.float32)
             for _ in range(n_slots)]
    if n_slots == 2:
      slots[1] = np.abs(slots[1])
    lr = K.learning_rate(opt["schedule"], opt["lr"], opt["steps"], opt["final"], step)
    with np.errstate(over="ignore", invalid="ignore"):
      d_ref, new_ref = K.optimizer_step(opt["kind"], g, [s.copy() for s in slots], lr, step,
                                        opt["momentum"], opt["b1"], opt["b2"], opt["eps"])
    d = np.zeros_like(g)
    prm = params(opt, "nearest", 0)
    m, v = (slots + [None, None])[:2]
    assert LIB.jt_optimizer_step_f32(ptr(g, F32P), ptr(m, F32P), ptr(v, F32P), ptr(d, F32P),
                                     g.size, n_slots, step, ctypes.byref(prm)) == 0
    assert_bits(d, np.asarray(d_ref, np.float32))
    for got, ref in zip(slots, new_ref, strict=True):
      assert_bits(got, ref)


class FakeExecutor:
  """What executor._step reads: the optimizer, rounding, seed and tensors by id."""

  def __init__(self, opt: dict, rounding: str, seed: int, tensors: dict[int, np.ndarray]):
    self.optimizer, self.rounding, self.seed = opt, rounding, seed
    self.t = tensors

  def get(self, tid: int) -> np.ndarray:
    return self.t[tid]

  def set(self, tid: int, value: np.ndarray) -> None:
    assert value.shape == self.t[tid].shape and value.dtype == self.t[tid].dtype
    self.t[tid] = value


P, INV, STEP, SLOT0 = 0, 1, 2, 3


def problem(rng: np.random.Generator, dtype: str, opt: dict, special: bool
            ) -> tuple[dict[int, np.ndarray], np.ndarray, int]:
  shape = (4, 3, 2, 3) if dtype == "i8" else (9,)
  if dtype == "i8":
    p = rng.integers(-128, 128, shape).astype(np.int8)
  else:
    p = rng.integers(-2**31, 2**31, shape, dtype=np.int64).astype(np.int32)
    p[:2] = [2**31 - 1, -2**31]  # saturation
    p[2:4] = [2**31 - 5, -2**31 + 5]
  inv = (10.0 ** rng.uniform(-2, 3, shape[0])).astype(np.float32)
  grad = gradient(rng, shape, special)
  with np.errstate(over="ignore"):
    grad *= np.float32(10.0 ** rng.integers(-2, 5))  # large steps hit the clamps
  n_slots = 2 if opt["kind"] == "adam" else int(opt["momentum"] != 0)
  t = {P: p, INV: inv, STEP: np.asarray(int(rng.integers(0, 12)), np.int32)}
  for k in range(n_slots):
    s = (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 2)).astype(np.float32)
    t[SLOT0 + k] = np.abs(s) if k == 1 else s  # Adam's v >= 0
    if special and k == 0:
      t[SLOT0][rng.random(shape) < 0.05] = np.float32(3e38)  # m' overflows
  return t, grad, n_slots


def reference(opt: dict, rounding: str, seed: int, pid: int, t: dict[int, np.ndarray],
              grad: np.ndarray, n_slots: int, by_row: bool) -> dict[int, np.ndarray]:
  ex = FakeExecutor(opt, rounding, seed, {k: v.copy() for k, v in t.items()})
  slot_ids = [SLOT0 + k for k in range(n_slots)]
  if by_row:  # as the fused bottleneck backward calls it: one output channel at a time
    for r in range(grad.shape[0]):
      E._step(ex, pid, P, INV, slot_ids, STEP, grad[r:r + 1], row=r)
  else:
    E._step(ex, pid, P, INV, slot_ids, STEP, grad)
  return ex.t


def run_c(opt: dict, rounding: str, seed: int, pid: int, t: dict[int, np.ndarray],
          grad: np.ndarray, n_slots: int) -> dict[int, np.ndarray]:
  out = {k: v.copy() for k, v in t.items()}
  p = out[P]
  rows = p.shape[0]
  fn = LIB.jt_update_s8 if p.dtype == np.int8 else LIB.jt_update_i32
  m, v = out.get(SLOT0), out.get(SLOT0 + 1)
  prm = params(opt, rounding, seed)
  status = fn(ptr(p, I8P if p.dtype == np.int8 else I32P), ptr(m, F32P), ptr(v, F32P),
              ptr(grad, F32P), ptr(out[INV], F32P), rows, p.size // rows, n_slots, pid,
              int(out[STEP]), ctypes.byref(prm))
  assert status == 0
  return out


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("dtype", ["i8", "i32"])
def test_update_matches_executor(name: str, rounding: str, dtype: str) -> None:
  opt = OPTIMIZERS[name]
  rng = np.random.default_rng(zlib.crc32(f"{name} {rounding} {dtype}".encode()))
  moved = 0
  for trial in range(4):
    special = trial >= 2
    t, grad, n_slots = problem(rng, dtype, opt, special)
    seed, pid = int(rng.integers(0, 2**32)), int(rng.integers(0, 50))
    ref = reference(opt, rounding, seed, pid, t, grad, n_slots, by_row=False)
    got = run_c(opt, rounding, seed, pid, t, grad, n_slots)
    for k in ref:
      assert_bits(got[k], ref[k])
    if dtype == "i8":  # the per-row form (fused bottleneck backward) agrees with the whole
      by_row = reference(opt, rounding, seed, pid, t, grad, n_slots, by_row=True)
      for k in ref:
        assert_bits(by_row[k], ref[k])
    moved += int(np.sum(ref[P] != t[P]))
    for k in ref:  # no NaN or infinity ever reaches the stored state
      if ref[k].dtype == np.float32:
        assert np.all(np.isfinite(ref[k]))
  assert moved > 0  # the problems are not trivial


def test_non_finite_keeps_the_old_values() -> None:
  """Where the delta or a slot is not finite the element and its slots keep their values;
  the others update as usual."""
  p = np.array([10, -20, 30, 40], np.int8)
  grad = np.array([np.nan, np.inf, 1.0, 2.0], np.float32)
  m = np.array([0.5, 0.5, 3e38, 0.5], np.float32)
  t = {P: p, INV: np.ones(4, np.float32), STEP: np.asarray(3, np.int32), SLOT0: m}
  # momentum 2: 2 * 3e38 overflows, so element 2 keeps its values too
  opt = optimizer(lr=1.0, momentum=2.0)
  ref = reference(opt, "nearest", 0, 1, t, grad, 1, by_row=False)
  got = run_c(opt, "nearest", 0, 1, t, grad, 1)
  for k in ref:
    assert_bits(got[k], ref[k])
  np.testing.assert_array_equal(ref[P][:3], p[:3])
  assert_bits(ref[SLOT0][:3], m[:3])
  assert ref[P][3] != p[3] and ref[SLOT0][3] != m[3]


def test_weight_clamp_and_bias_saturation() -> None:
  opt = optimizer(lr=1.0)
  w = np.array([[120, -120, 0, 5]], np.int8)
  gw = np.array([[-1e9, 1e9, 0.5, 1.5]], np.float32)
  t = {P: w, INV: np.ones(1, np.float32), STEP: np.asarray(0, np.int32)}
  ref = reference(opt, "nearest", 0, 0, t, gw, 0, by_row=False)
  assert ref[P].tolist() == [[127, -127, 0, 4]]  # rint(-0.5) = -0.0, rint(3.5) = 4
  assert_bits(run_c(opt, "nearest", 0, 0, t, gw, 0)[P], ref[P])
  b = np.array([2**31 - 3, -2**31 + 3, 0, 7], np.int32)
  gb = np.array([-1e12, 1e12, 2.5, -1e20], np.float32)
  t = {P: b, INV: np.ones(4, np.float32), STEP: np.asarray(0, np.int32)}
  ref = reference(opt, "nearest", 0, 0, t, gb, 0, by_row=False)
  assert ref[P].tolist() == [2**31 - 1, -2**31, -2, 7 + 2**30]
  assert_bits(run_c(opt, "nearest", 0, 0, t, gb, 0)[P], ref[P])


# --- the ops: adapters and checks on a hand-made runtime ----------------------------------
# A jt_runtime whose tensor table and buffers are built here (no blob): the checks see what
# the verifier hands them, the adapters run on the state buffer, and the result is compared
# with the executor's kernel on the same tensors.

DTYPES = {np.dtype(np.int8): 0, np.dtype(np.int32): 1, np.dtype(np.float32): 2}
STORAGE = {"const": 0, "state": 1, "arena": 3}
KINDS = {"weight": 0, "bias": 1}


OPS = {"conv2d_update_s8": 23, "dense_update_s8": 24, "bias_update_i32": 25}
for _name in OPS:
  for _fn, _rt in ((f"jt_op_{_name}", ctypes.POINTER(Runtime)),
                   (f"jt_check_{_name}", ctypes.POINTER(Runtime))):
    getattr(LIB, _fn).restype = ctypes.c_int
    getattr(LIB, _fn).argtypes = [_rt, ctypes.POINTER(OpView)]


class Program:
  """Tensors (id -> array, storage) laid out in const / state / arena buffers, and one op."""

  def __init__(self) -> None:
    self.arrays: list[np.ndarray] = []
    self.storage: list[str] = []

  def add(self, a: np.ndarray, storage: str) -> int:
    self.arrays.append(np.array(a, order="C"))  # (ascontiguousarray makes () (1,))
    self.storage.append(storage)
    return len(self.arrays) - 1

  def run(self, opt: dict, rounding: str, seed: int, name: str, inputs: list[int],
          outputs: list[int], attrs: list[int], execute: bool = True
          ) -> tuple[int, dict[int, np.ndarray]]:
    records = bytearray()
    sizes = {s: 0 for s in STORAGE}
    where = []
    for a, s in zip(self.arrays, self.storage, strict=True):
      dims = list(a.shape) + [0] * (6 - a.ndim)
      where.append(sizes[s])
      records += np.array([DTYPES[a.dtype] | STORAGE[s] << 8 | a.ndim << 16], np.uint32).tobytes()
      records += np.array(dims, np.uint32).tobytes()
      records += np.array([-1, a.nbytes, sizes[s], 0], np.int32).tobytes()
      sizes[s] += (a.nbytes + 3) // 4 * 4
    bufs = {s: (ctypes.c_uint32 * max(1, n // 4))() for s, n in sizes.items()}
    for a, s, at in zip(self.arrays, self.storage, where, strict=True):
      ctypes.memmove(ctypes.addressof(bufs[s]) + at, a.ctypes.data, a.nbytes)
    table = (ctypes.c_uint32 * (len(records) // 4)).from_buffer_copy(bytes(records))
    prm = params(opt, rounding, seed)
    rt = Runtime(tensors=ctypes.addressof(table), consts=ctypes.addressof(bufs["const"]),
                 state=ctypes.addressof(bufs["state"]), arena=ctypes.addressof(bufs["arena"]),
                 n_tensors=len(self.arrays), io_input=-1, io_label=-1, io_loss=-1,
                 io_logits=-1, step_tensor=-1, ready=1,
                 **{k: getattr(prm, k) for k, _ in OptimParams._fields_})
    operands = (I32 * (len(inputs) + len(outputs) + 1))(*inputs, *outputs)
    attr = (I32 * (len(attrs) + 1))(*attrs)
    op = OpView(opcode=OPS[name], inp=operands, out=ctypes.cast(
      ctypes.addressof(operands) + 4 * len(inputs), I32P), n_in=len(inputs),
      n_out=len(outputs), attr=attr, n_attr=len(attrs), index=0)
    status = getattr(LIB, f"jt_check_{name}")(ctypes.byref(rt), ctypes.byref(op))
    if status or not execute:
      return status, {}
    assert getattr(LIB, f"jt_op_{name}")(ctypes.byref(rt), ctypes.byref(op)) == 0
    out = {}
    for i, (a, s, at) in enumerate(zip(self.arrays, self.storage, where, strict=True)):
      raw = ctypes.string_at(ctypes.addressof(bufs[s]) + at, a.nbytes)
      out[i] = np.frombuffer(raw, a.dtype).reshape(a.shape).copy()
    return status, out


def _conv_attrs(strides, padding, groups, kernel, x_zero, pid, channels) -> list[int]:
  (pt, pb), (pl, pr) = padding
  ch = [-1] if channels is None else [len(channels), *channels]
  return [*strides, pt, pb, pl, pr, groups, *kernel, x_zero, pid, KINDS["weight"], *ch]


def _with_update(prog: Program, rng: np.random.Generator, p: np.ndarray, opt: dict
                 ) -> tuple[list[int], list[int]]:
  """Adds p (state), inv (const), the slots (state) and the step (state): their ids as the
  op's trailing inputs and its outputs."""
  n_slots = 2 if opt["kind"] == "adam" else int(opt["momentum"] != 0)
  pid_ = prog.add(p, "state")
  inv = prog.add((10.0 ** rng.uniform(-1, 2, p.shape[0])).astype(np.float32), "const")
  slots = [prog.add(np.abs(rng.standard_normal(p.shape)).astype(np.float32) * 0.01, "state")
           for _ in range(n_slots)]
  step = prog.add(np.asarray(int(rng.integers(0, 6)), np.int32), "state")  # lr > 0
  return [pid_, inv, *slots, step], [pid_, *slots]


def _op_case(kind: str, rng: np.random.Generator, opt: dict
             ) -> tuple[Program, str, list[int], list[int], dict, list[int]]:
  prog = Program()
  if kind == "dense":
    n, o, k = 1, 5, 7
    x_zero = int(rng.integers(-128, 128))
    g = prog.add(gradient(rng, (n, o)) * np.float32(1e3), "arena")
    x = prog.add(rng.integers(-128, 128, (n, k)).astype(np.int8), "arena")
    ins, outs = _with_update(prog, rng, rng.integers(-127, 128, (o, k)).astype(np.int8), opt)
    attrs = {"x_zero": x_zero, "pid": 3, "kind": "weight", "channels": None}
    return prog, "dense_update_s8", [g, x, *ins], outs, attrs, [x_zero, 3, 0, -1]
  if kind.startswith("bias"):
    c = 6
    shape = (1, 3, 4, c) if kind == "bias4" else (c,)
    g = prog.add(gradient(rng, shape) * np.float32(1e4), "arena")
    ins, outs = _with_update(prog, rng, rng.integers(-2**20, 2**20, c).astype(np.int32), opt)
    return prog, "bias_update_i32", [g, *ins], outs, {"pid": 5, "kind": "bias"}, [5, 1]
  # conv: plain, grouped, depthwise subset, gathered input channels
  h, w, c = 6, 5, 4
  strides, padding, kernel = (2, 1), ((1, 1), (0, 2)), (3, 3)
  groups, channels, o = {"conv": (1, None, 3), "grouped": (2, None, 4),
                         "depthwise": (4, (0, 2, 3), 4), "gathered": (1, (1, 3), 3)}[kind]
  x_zero = int(rng.integers(-128, 128))
  ho, wo = K.out_size(h, 3, 2, (1, 1)), K.out_size(w, 3, 1, (0, 2))
  g = prog.add(gradient(rng, (1, ho, wo, o)) * np.float32(1e3), "arena")
  cx = len(channels) if channels is not None else c
  x = prog.add(rng.integers(-128, 128, (1, h, w, cx)).astype(np.int8), "arena")
  if channels is not None and groups > 1:
    wshape = (len(channels), 3, 3, 1)
  else:
    wshape = (o, 3, 3, cx // groups)
  ins, outs = _with_update(prog, rng, rng.integers(-127, 128, wshape).astype(np.int8), opt)
  attrs = {"strides": strides, "padding": padding, "groups": groups, "kernel": kernel,
           "x_zero": x_zero, "pid": 2, "kind": "weight", "channels": channels}
  return (prog, "conv2d_update_s8", [g, x, *ins], outs, attrs,
          _conv_attrs(strides, padding, groups, kernel, x_zero, 2, channels))


OP_KINDS = ["conv", "grouped", "depthwise", "gathered", "dense", "bias", "bias4"]


@pytest.mark.parametrize("kind", OP_KINDS)
@pytest.mark.parametrize("name", ["sgd", "momentum", "adam_cosine"])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_op_matches_executor(kind: str, name: str, rounding: str) -> None:
  opt = dict(OPTIMIZERS[name], lr=OPTIMIZERS[name]["lr"] * 20)  # steps that move int8 values
  rng = np.random.default_rng(zlib.crc32(f"{kind} {name} {rounding}".encode()))
  moved = 0
  for _ in range(3):
    prog, op_name, ins, outs, attrs, slots = _op_case(kind, rng, opt)
    status, got = prog.run(opt, rounding, 77, op_name, ins, outs, slots)
    assert status == 0
    ex = FakeExecutor(opt, rounding, 77, {i: a.copy() for i, a in enumerate(prog.arrays)})
    E.KERNELS[op_name](ex, types.SimpleNamespace(inputs=ins, outputs=outs, attrs=attrs))
    for i in ex.t:
      assert_bits(got[i], ex.t[i])
    moved += int(np.sum(got[outs[0]] != prog.arrays[outs[0]]))
  assert moved > 0  # the cases are not trivial


def _mutations(kind: str) -> list[tuple[str, Any]]:
  """(what, f(prog, ins, outs, attrs) -> (ins, outs, attrs)) each making the op invalid."""
  def attr(i: int, v: int) -> Any:
    return lambda prog, ins, outs, a: (ins, outs, [*a[:i], v, *a[i + 1:]])

  def tensor(k: int, value: Any, storage: str | None = None) -> Any:
    def f(prog: Program, ins: list[int], outs: list[int], a: list[int]) -> Any:
      t = ins[k]
      prog.arrays[t] = value(prog.arrays[t])
      if storage:
        prog.storage[t] = storage
      return ins, outs, a
    return f

  common = [
    ("one slot too many", lambda prog, ins, outs, a: (
      [*ins[:-1], prog.add(np.zeros(prog.arrays[outs[0]].shape, np.float32), "state"),
       ins[-1]], [*outs, len(prog.arrays) - 1], a)),
    ("outputs not in place", lambda prog, ins, outs, a: (
      ins, [prog.add(prog.arrays[outs[0]].copy(), "state"), *outs[1:]], a)),
    ("step int8", lambda prog, ins, outs, a: (
      [*ins[:-1], prog.add(np.zeros((), np.int8), "state")], outs, a)),
    ("step of two", lambda prog, ins, outs, a: (
      [*ins[:-1], prog.add(np.zeros(2, np.int32), "state")], outs, a)),
    ("step in the arena", lambda prog, ins, outs, a: (
      [*ins[:-1], prog.add(np.zeros((), np.int32), "arena")], outs, a)),
  ]
  if kind == "bias":
    return common + [
      ("pid < 0", attr(0, -1)), ("kind weight", attr(1, 0)),
      ("g of another width", tensor(0, lambda v: v[:-1])),
      ("g int32", tensor(0, lambda v: v.astype(np.int32))),
      ("bias int8", tensor(1, lambda v: v.astype(np.int8))),
      ("bias in the arena", tensor(1, lambda v: v, "arena")),
      ("inv per element of another length", tensor(2, lambda v: v[:-1])),
    ]
  if kind == "dense":
    return common + [
      ("x_zero 128", attr(0, 128)), ("pid < 0", attr(1, -1)), ("kind bias", attr(2, 1)),
      ("g of another batch", tensor(0, lambda v: np.concatenate([v, v]))),
      ("x of another width", tensor(1, lambda v: v[:, :-1])),
      ("w not in state", tensor(2, lambda v: v, "arena")),
    ]
  return common + [
    ("stride 0", attr(0, 0)), ("padding < 0", attr(3, -1)), ("groups 0", attr(6, 0)),
    ("kernel attribute disagrees", attr(7, 2)), ("x_zero -129", attr(9, -129)),
    ("pid < 0", attr(10, -1)), ("kind bias", attr(11, 1)),
    ("g of another height", tensor(0, lambda v: v[:, :-1])),
    ("g int8", tensor(0, lambda v: v.astype(np.int8))),
    ("x of another width", tensor(1, lambda v: v[:, :, :-1])),
    ("w of another kernel", tensor(2, lambda v: v[:, :2])),
    ("w of another channel count", tensor(2, lambda v: v[:-1])),
    ("inv of rank 2", tensor(3, lambda v: v[:, None])),
  ]


@pytest.mark.parametrize("kind", ["conv", "depthwise", "dense", "bias"])
def test_checks_refuse(kind: str) -> None:
  opt = OPTIMIZERS["momentum"]
  cases = _mutations(kind)
  if kind == "depthwise":
    cases = cases + [
      ("channels not ascending", lambda prog, ins, outs, a: (ins, outs, [*a[:13], 2, 0, 3])),
      ("channel out of range", lambda prog, ins, outs, a: (ins, outs, [*a[:15], 4])),
      ("channel count differs from the saved input",
       lambda prog, ins, outs, a: (ins, outs, [*a[:12], 2, 0, 2])),
    ]
  for what, mutate in cases:
    rng = np.random.default_rng(1)
    prog, op_name, ins, outs, _, attrs = _op_case(kind, rng, opt)
    assert prog.run(opt, "nearest", 0, op_name, ins, outs, attrs, execute=False)[0] == 0
    ins, outs, attrs = mutate(prog, list(ins), list(outs), list(attrs))
    status = prog.run(opt, "nearest", 0, op_name, ins, outs, attrs, execute=False)[0]
    assert status != 0, f"{kind}: {what} accepted"


def test_slot_count_follows_the_optimizer() -> None:
  rng = np.random.default_rng(2)
  prog, op_name, ins, outs, _, attrs = _op_case("bias", rng, OPTIMIZERS["momentum"])
  for name in ("sgd", "adam"):  # one slot: right for momentum only
    assert prog.run(OPTIMIZERS[name], "nearest", 0, op_name, ins, outs, attrs,
                    execute=False)[0] != 0
