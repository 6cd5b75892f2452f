"""The loss's small ops in C (runtime_c/src/jt_loss_ops.c: adapters, checks and kernels)
against the reference executor's definitions (lowering/executor.py, "small ops of the
loss"), bit for bit, on seeded random inputs with the edge cases spelled out there: NaN,
+-0, inf, integer wrap-around, division by zero, INT32_MIN / -1, out-of-range casts and
indices. Each op runs through its check and its adapter on tensor records in a fake
runtime, and through the executor's kernel on the same tensors; bad operands must be
refused by the check."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from lowering import executor as E
from lowering.ir import NUMPY, Graph, Op
from lowering.opset import BINARY, BY_NAME, REDUCE, UNARY

from c_structs import I32, I32P, OpView, Runtime

try:
  from lowering.cruntime import library
  LIB = library()
except (ImportError, OSError) as err:  # no build of the runtime
  pytest.skip(f"the C runtime is not built: {err}", allow_module_level=True)

CODE = {"i8": 0, "i32": 1, "f32": 2, "bit": 3, "bool": 4, "u32": 5}
OK, E_DTYPE, E_SHAPE, E_ATTR = 0, 13, 14, 15  # jt_status
F32_SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 0.5, -2.5, 1e-45, 3e38, -3e38,
                2.0**31, -(2.0**31), 2.0**32, 4294967040.0, 127.9, -128.9, 200.0, -0.7]
I32_SPECIALS = [0, 1, -1, 2, -2, 2**31 - 1, -(2**31), 7, -7, 255, -255, 65536]


NAMES = ("cast", "unary", "binary", "select", "reduce", "broadcast", "iota", "take_last",
         "scatter_add_last")
for _name in NAMES:
  for _fn in (f"jt_op_{_name}", f"jt_check_{_name}"):
    getattr(LIB, _fn).restype = ctypes.c_int
    getattr(LIB, _fn).argtypes = [ctypes.POINTER(Runtime), ctypes.POINTER(OpView)]


def slots(name: str, attrs: dict) -> list[int]:
  """The blob's int32 attribute slots of a small op (jt_opcodes.h)."""
  if name == "unary":
    return [UNARY.index(attrs["fn"])]
  if name == "binary":
    return [BINARY.index(attrs["fn"])]
  if name == "reduce":
    return [REDUCE.index(attrs["fn"]), len(attrs["axes"]), *attrs["axes"]]
  if name == "broadcast":
    return [len(attrs["dims"]), *attrs["dims"]]
  if name == "iota":
    return [attrs["axis"]]
  return []


Operand = tuple[np.ndarray, str]


def run_c(name: str, inputs: list[Operand], outputs: list[tuple[tuple, str]],
          attrs: dict, execute: bool = True) -> tuple[int, list[np.ndarray]]:
  """Check, then run, the op on tensors in a fake runtime's arena (outputs prefilled with
  0xA5 so that an element the kernel skips shows)."""
  arrays = [np.array(a, NUMPY[d], order="C") for a, d in inputs]
  arrays += [np.full(int(np.prod(s)) * np.dtype(NUMPY[d]).itemsize, 0xA5, np.uint8)
             .view(NUMPY[d]).reshape(s) for s, d in outputs]
  dtypes = [d for _, d in inputs] + [d for _, d in outputs]
  records, at, where = bytearray(), 0, []
  for a, d in zip(arrays, dtypes, strict=True):
    dims = list(a.shape) + [0] * (6 - a.ndim)
    where.append(at)
    records += np.array([CODE[d] | 3 << 8 | a.ndim << 16], np.uint32).tobytes()
    records += np.array(dims, np.uint32).tobytes()
    records += np.array([-1, a.nbytes, at, 0], np.int32).tobytes()
    at += (a.nbytes + 3) // 4 * 4
  arena = (ctypes.c_uint32 * max(1, at // 4))()
  for a, w in zip(arrays, where, strict=True):
    ctypes.memmove(ctypes.addressof(arena) + w, a.ctypes.data, a.nbytes)
  table = (ctypes.c_uint32 * (len(records) // 4)).from_buffer_copy(bytes(records))
  rt = Runtime(tensors=ctypes.addressof(table), arena=ctypes.addressof(arena),
               n_tensors=len(arrays), io_input=-1, io_label=-1, io_loss=-1, io_logits=-1,
               step_tensor=-1, ready=1)
  n_in, n_out = len(inputs), len(outputs)
  operands = (I32 * (n_in + n_out + 1))(*range(n_in + n_out))
  attr_slots = slots(name, attrs)
  attr = (I32 * (len(attr_slots) + 1))(*attr_slots)
  op = OpView(opcode=BY_NAME[name].id, inp=operands,
              out=ctypes.cast(ctypes.addressof(operands) + 4 * n_in, I32P), n_in=n_in,
              n_out=n_out, attr=attr, n_attr=len(attr_slots), index=0)
  status = getattr(LIB, f"jt_check_{name}")(ctypes.byref(rt), ctypes.byref(op))
  if status or not execute:
    return status, []
  assert getattr(LIB, f"jt_op_{name}")(ctypes.byref(rt), ctypes.byref(op)) == 0
  out = []
  for a, w in list(zip(arrays, where, strict=True))[n_in:]:
    raw = ctypes.string_at(ctypes.addressof(arena) + w, a.nbytes)
    out.append(np.frombuffer(raw, a.dtype).reshape(a.shape).copy())
  return status, out


def run_executor(name: str, inputs: list[Operand], outputs: list[tuple[tuple, str]],
                 attrs: dict) -> list[np.ndarray]:
  g = Graph()
  ins = [g.add(f"in{i}", np.shape(a), d, "io") for i, (a, d) in enumerate(inputs)]
  outs = [g.add(f"out{i}", s, d, "io") for i, (s, d) in enumerate(outputs)]
  op = Op(name, ins, outs, dict(attrs))
  ex = E.Executor(g, {}, "nearest", 0, {}, 0)
  ex.run([op], {t: np.array(a, NUMPY[d]) for t, (a, d) in zip(ins, inputs, strict=True)})
  return [ex.env[t] for t in outs]


def same(x: np.ndarray, y: np.ndarray) -> bool:
  """Equal shapes, dtypes and bits (bool as 0/1 bytes); NaN equal to any NaN."""
  x, y = np.asarray(x), np.asarray(y)
  if x.shape != y.shape or x.dtype != y.dtype:
    return False
  x, y = x.reshape(-1), y.reshape(-1)
  if x.dtype == np.float32:
    return bool(((x.view(np.uint32) == y.view(np.uint32)) | (np.isnan(x) & np.isnan(y))).all())
  return bool(np.array_equal(x.reshape(-1).view(np.uint8), y.reshape(-1).view(np.uint8)))


def agree(name: str, inputs: list[Operand], outputs: list[tuple[tuple, str]],
          attrs: dict | None = None) -> list[np.ndarray]:
  attrs = attrs or {}
  status, c = run_c(name, inputs, outputs, attrs)
  assert status == OK, (name, attrs, status)
  ref = run_executor(name, inputs, outputs, attrs)
  for cy, ry in zip(c, ref, strict=True):
    assert same(cy, ry), (name, attrs, [a for a, _ in inputs], cy, ry)
  return ref


def values(rng: np.random.Generator, dtype: str, shape: tuple) -> np.ndarray:
  """Random values with the dtype's edge cases mixed in."""
  n = int(np.prod(shape))
  if dtype == "f32":
    v = np.concatenate([np.array(F32_SPECIALS, np.float32),
                        rng.normal(0, 3, n).astype(np.float32),
                        rng.integers(-3, 4, n).astype(np.float32)])
  elif dtype in ("i32", "u32"):
    v = np.concatenate([np.array(I32_SPECIALS, np.int64),
                        rng.integers(-(2**31), 2**31, n), rng.integers(-3, 4, n)])
    v = (v & 0xFFFFFFFF).astype(np.uint32).view(np.int32 if dtype == "i32" else np.uint32)
  elif dtype == "i8":
    v = rng.integers(-128, 128, n).astype(np.int8)
  else:
    v = rng.integers(0, 2, n).astype(np.bool_)
  return rng.permutation(v)[:n].reshape(shape) if n <= v.size else v[:n].reshape(shape)


def all_values(dtype: str) -> np.ndarray:
  """Every special value of a dtype plus random ones (1-D)."""
  return values(np.random.default_rng(CODE[dtype]), dtype, (len(F32_SPECIALS) + 40,))


# --- cast --------------------------------------------------------------------------------

@pytest.mark.parametrize("src", ["i8", "i32", "f32", "bool", "u32"])
@pytest.mark.parametrize("dst", ["i8", "i32", "f32", "bool", "u32"])
def test_cast(src: str, dst: str) -> None:
  x = all_values(src)
  if src == "f32":
    x = np.concatenate([np.array(F32_SPECIALS, np.float32), x])
  (y,) = agree("cast", [(x, src)], [(x.shape, dst)])
  if src == "f32" and dst == "i32":  # the definition: truncate, saturate, NaN -> 0
    want = {np.inf: 2**31 - 1, -np.inf: -(2**31), 2.0**31: 2**31 - 1, -0.7: 0, -2.5: -2,
            127.9: 127}
    for v, w in want.items():
      assert y[list(x).index(np.float32(v))] == w
    assert y[np.isnan(x)].tolist() == [0] * int(np.isnan(x).sum())


# --- unary -------------------------------------------------------------------------------

UNARY_DTYPES = {"f32": [f for f in UNARY if f != "not"], "i32": ["neg", "abs", "sign", "not"],
                "u32": ["neg", "abs", "sign", "not"], "bool": ["not"]}


@pytest.mark.parametrize("dtype", list(UNARY_DTYPES))
def test_unary(dtype: str) -> None:
  rng = np.random.default_rng(5)
  x = np.concatenate([values(rng, dtype, (300,)), all_values(dtype)]).reshape(-1, 2)
  for fn in UNARY_DTYPES[dtype]:
    out = "bool" if fn == "is_finite" else dtype
    agree("unary", [(x, dtype)], [(x.shape, out)], {"fn": fn})
  if dtype == "i32":
    m = np.array([-(2**31)], np.int32)
    (y,) = agree("unary", [(m, "i32")], [((1,), "i32")], {"fn": "neg"})
    assert y[0] == -(2**31)  # wraps


def test_unary_float_special_values() -> None:
  x = np.array([-0.0, 0.0, np.nan, -3.0, 2.0], np.float32)
  (y,) = agree("unary", [(x, "f32")], [((5,), "f32")], {"fn": "sign"})
  assert y.view(np.uint32)[0] == 0x80000000 and y[1] == 0 and np.isnan(y[2])
  assert list(y[3:]) == [-1, 1]


# --- binary ------------------------------------------------------------------------------

BINARY_DTYPES = {"f32": [f for f in BINARY if f not in ("and", "or")],
                 "i32": [f for f in BINARY if f != "pow"], "u32": [f for f in BINARY if f != "pow"],
                 "bool": ["lt", "gt", "le", "ge", "eq", "ne", "and", "or"]}
COMPARE = ("lt", "gt", "le", "ge", "eq", "ne")


@pytest.mark.parametrize("dtype", list(BINARY_DTYPES))
def test_binary(dtype: str) -> None:
  rng = np.random.default_rng(6)
  base = all_values(dtype)
  # every pair of special values, then random pairs
  a = np.concatenate([np.repeat(base, base.size), values(rng, dtype, (500,))])
  b = np.concatenate([np.tile(base, base.size), values(rng, dtype, (500,))])
  for fn in BINARY_DTYPES[dtype]:
    out = "bool" if fn in COMPARE else dtype
    agree("binary", [(a, dtype), (b, dtype)], [(a.shape, out)], {"fn": fn})
    # a scalar operand on either side broadcasts
    s = np.array(b[3], NUMPY[dtype])
    m = a[:40].reshape(5, 8)
    agree("binary", [(s, dtype), (m, dtype)], [(m.shape, out)], {"fn": fn})
    agree("binary", [(m, dtype), (s, dtype)], [(m.shape, out)], {"fn": fn})
    # unit axes broadcast as in numpy (the lowering emits (1, C) - (1, 1))
    col, row = a[:5].reshape(5, 1), b[:8].reshape(1, 8)
    agree("binary", [(col, dtype), (row, dtype)], [((5, 8), out)], {"fn": fn})
    agree("binary", [(m, dtype), (col, dtype)], [((5, 8), out)], {"fn": fn})


def test_binary_definitions() -> None:
  """The edge cases the executor defines (numpy alone would warn, differ or crash)."""
  i = np.array([7, -7, 5, -(2**31), -(2**31), 2**31 - 1, 3], np.int32)
  j = np.array([2, 2, 0, -1, 1, 1, -2], np.int32)
  (q,) = agree("binary", [(i, "i32"), (j, "i32")], [((7,), "i32")], {"fn": "div"})
  assert q.tolist() == [3, -3, -1, -(2**31), -(2**31), 2**31 - 1, -1]
  (s,) = agree("binary", [(i, "i32"), (j, "i32")], [((7,), "i32")], {"fn": "add"})
  assert s[5] == -(2**31)  # wraps
  u = np.array([7, 5], np.uint32)
  (q,) = agree("binary", [(u, "u32"), (np.array([2, 0], np.uint32), "u32")], [((2,), "u32")],
               {"fn": "div"})
  assert q.tolist() == [3, 2**32 - 1]
  z = np.array([0.0, -0.0, np.nan, 1.0], np.float32)
  w = np.array([-0.0, 0.0, 1.0, np.nan], np.float32)
  (mx,) = agree("binary", [(z, "f32"), (w, "f32")], [((4,), "f32")], {"fn": "max"})
  (mn,) = agree("binary", [(z, "f32"), (w, "f32")], [((4,), "f32")], {"fn": "min"})
  assert mx.view(np.uint32)[:2].tolist() == [0, 0] and np.isnan(mx[2:]).all()
  assert mn.view(np.uint32)[:2].tolist() == [0x80000000] * 2 and np.isnan(mn[2:]).all()


# --- select ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["f32", "i32", "u32", "bool", "i8"])
def test_select(dtype: str) -> None:
  rng = np.random.default_rng(7)
  a, b = values(rng, dtype, (3, 7)), values(rng, dtype, (3, 7))
  p = rng.integers(0, 2, (3, 7)).astype(np.bool_)
  (y,) = agree("select", [(p, "bool"), (a, dtype), (b, dtype)], [((3, 7), dtype)])
  assert same(y, np.where(p, b, a))
  for v in (True, False):
    agree("select", [(np.array(v), "bool"), (a, dtype), (b, dtype)], [((3, 7), dtype)])


# --- reduce ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["f32", "i32", "u32"])
def test_reduce(dtype: str) -> None:
  rng = np.random.default_rng(8)
  for _ in range(25):
    rank = int(rng.integers(1, 5))
    shape = tuple(int(d) for d in rng.integers(1, 5, rank))
    x = values(rng, dtype, shape)
    if dtype == "f32" and rng.random() < 0.5:  # no NaN: sums whose order shows
      x = (rng.normal(0, 1, shape) * 10.0 ** rng.integers(-4, 5, shape)).astype(np.float32)
    k = int(rng.integers(0, rank + 1))
    axes = tuple(sorted(int(a) for a in rng.choice(rank, k, replace=False)))
    out = tuple(d for i, d in enumerate(shape) if i not in axes)
    for fn in REDUCE:
      agree("reduce", [(x, dtype)], [(out, dtype)], {"fn": fn, "axes": axes})


def test_reduce_sum_is_a_running_sum() -> None:
  """Row-major, from the first term: (((1e8 + 1) + 1) + ... ) stays 1e8 (pairwise would
  not); a sum of one -0 is -0."""
  x = np.array([[1e8] + [1.0] * 15, [-0.0] * 16], np.float32)
  (y,) = agree("reduce", [(x, "f32")], [((2,), "f32")], {"fn": "sum", "axes": (1,)})
  want = np.float32(1e8)
  for v in x[0, 1:]:
    want = np.float32(want + v)
  assert y[0] == want and y.view(np.uint32)[1] == 0x80000000
  x3 = np.random.default_rng(9).normal(0, 1, (3, 4, 5)).astype(np.float32)
  (y,) = agree("reduce", [(x3, "f32")], [((4,), "f32")], {"fn": "sum", "axes": (0, 2)})
  for j in range(4):  # the definition, element by element
    acc = x3[0, j, 0]
    for i in range(3):
      for k in range(5):
        if i or k:
          acc = np.float32(acc + x3[i, j, k])
    assert y[j] == acc


# --- broadcast, iota ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["f32", "i32", "bool", "u32", "i8"])
def test_broadcast(dtype: str) -> None:
  rng = np.random.default_rng(10)
  for _ in range(20):
    rank = int(rng.integers(0, 5))
    shape = tuple(int(d) for d in rng.integers(1, 5, rank))
    k = int(rng.integers(0, rank + 1))
    dims = tuple(sorted(int(a) for a in rng.choice(rank, k, replace=False)))
    xs = tuple(shape[d] if rng.random() < 0.7 else 1 for d in dims)
    x = values(rng, dtype, xs)
    agree("broadcast", [(x, dtype)], [(shape, dtype)], {"dims": dims})


@pytest.mark.parametrize("dtype", ["i32", "u32", "f32"])
def test_iota(dtype: str) -> None:
  for shape in ((5,), (2, 3), (3, 1, 4), (2, 2, 2, 3)):
    for axis in range(len(shape)):
      agree("iota", [], [(shape, dtype)], {"axis": axis})


# --- take_last, scatter_add_last ---------------------------------------------------------

@pytest.mark.parametrize("dtype", ["f32", "i32", "u32", "bool", "i8"])
def test_take_last(dtype: str) -> None:
  rng = np.random.default_rng(11)
  for shape in ((10,), (1, 10), (2, 3, 4)):
    x = values(rng, dtype, shape)
    for idx in (0, shape[-1] - 1, 2, -1, shape[-1], 2**31 - 1, -(2**31)):
      (y,) = agree("take_last", [(x, dtype), (np.array([idx], np.int32), "i32")],
                   [(shape[:-1], dtype)])
      if not 0 <= idx < shape[-1]:
        assert same(y, np.full(shape[:-1], E.FILL[dtype], NUMPY[dtype]))


@pytest.mark.parametrize("dtype", ["f32", "i32", "u32"])
def test_scatter_add_last(dtype: str) -> None:
  rng = np.random.default_rng(12)
  for shape in ((10,), (1, 10), (2, 3, 4)):
    x, v = values(rng, dtype, shape), values(rng, dtype, shape[:-1])
    for idx in (0, shape[-1] - 1, 1, -1, shape[-1], -(2**31)):
      (y,) = agree("scatter_add_last", [(x, dtype), (np.array(idx, np.int32), "i32"),
                                        (v, dtype)], [(shape, dtype)])
      if not 0 <= idx < shape[-1]:
        assert same(y, x)


# --- checks ------------------------------------------------------------------------------

def status(name: str, inputs: list[tuple[tuple, str]], outputs: list[tuple[tuple, str]],
           attrs: dict | None = None) -> int:
  ins = [(np.zeros(s, NUMPY[d]), d) for s, d in inputs]
  return run_c(name, ins, outputs, attrs or {}, execute=False)[0]


F, J, B = "f32", "i32", "bool"
REFUSED = [
  ("cast", [((3,), F)], [((4,), J)], {}, E_SHAPE),
  ("cast", [((3,), "bit")], [((3,), J)], {}, E_DTYPE),
  ("unary", [((3,), F)], [((3,), F)], {"fn": "not"}, E_ATTR),
  ("unary", [((3,), F)], [((3,), F)], {"fn": "is_finite"}, E_DTYPE),
  ("unary", [((3,), J)], [((3,), J)], {"fn": "exp"}, E_ATTR),
  ("unary", [((3,), J)], [((3,), F)], {"fn": "neg"}, E_DTYPE),
  ("unary", [((3,), F)], [((2,), F)], {"fn": "exp"}, E_SHAPE),
  ("unary", [((3,), B)], [((3,), B)], {"fn": "neg"}, E_ATTR),
  ("binary", [((3,), F), ((3,), J)], [((3,), F)], {"fn": "add"}, E_DTYPE),
  ("binary", [((3,), F), ((3,), F)], [((3,), F)], {"fn": "lt"}, E_DTYPE),
  ("binary", [((3,), F), ((4,), F)], [((3,), F)], {"fn": "add"}, E_SHAPE),
  ("binary", [((2,), F), ((4,), F)], [((4,), F)], {"fn": "add"}, E_SHAPE),
  ("binary", [((1, 4), F), ((3, 1), F)], [((3, 1), F)], {"fn": "add"}, E_SHAPE),
  ("binary", [((4,), F), ((1, 4), F)], [((1, 4), F)], {"fn": "add"}, E_SHAPE),
  ("binary", [((), F), ((4,), F)], [((3,), F)], {"fn": "add"}, E_SHAPE),
  ("binary", [((3,), J), ((3,), J)], [((3,), J)], {"fn": "pow"}, E_ATTR),
  ("binary", [((3,), F), ((3,), F)], [((3,), F)], {"fn": "and"}, E_ATTR),
  ("binary", [((3,), B), ((3,), B)], [((3,), B)], {"fn": "add"}, E_ATTR),
  ("select", [((3,), J), ((3,), F), ((3,), F)], [((3,), F)], {}, E_DTYPE),
  ("select", [((3,), B), ((3,), F), ((3,), J)], [((3,), F)], {}, E_DTYPE),
  ("select", [((2,), B), ((3,), F), ((3,), F)], [((3,), F)], {}, E_SHAPE),
  ("select", [((3,), B), ((3,), F), ((1,), F)], [((3,), F)], {}, E_SHAPE),
  ("reduce", [((2, 3), F)], [((2,), F)], {"fn": "sum", "axes": (1, 1)}, E_ATTR),
  ("reduce", [((2, 3), F)], [((2,), F)], {"fn": "sum", "axes": (2,)}, E_ATTR),
  ("reduce", [((2, 3), F)], [((2,), F)], {"fn": "sum", "axes": (-1,)}, E_ATTR),
  ("reduce", [((2, 3), F)], [((3,), F)], {"fn": "sum", "axes": (1,)}, E_SHAPE),
  ("reduce", [((2, 3), F)], [((2, 1), F)], {"fn": "sum", "axes": (1,)}, E_SHAPE),
  ("reduce", [((2, 3), B)], [((2,), B)], {"fn": "max", "axes": (1,)}, E_DTYPE),
  ("reduce", [((2, 3), F)], [((2,), J)], {"fn": "max", "axes": (1,)}, E_DTYPE),
  ("broadcast", [((3,), F)], [((3, 4), F)], {"dims": (1,)}, E_SHAPE),
  ("broadcast", [((3, 4), F)], [((4, 3), F)], {"dims": (1, 0)}, E_ATTR),
  ("broadcast", [((3,), F)], [((3,), F)], {"dims": (1,)}, E_ATTR),
  ("broadcast", [((3,), F)], [((3, 2), F)], {"dims": ()}, E_ATTR),
  ("broadcast", [((3,), F)], [((3, 2), J)], {"dims": (0,)}, E_DTYPE),
  ("iota", [], [((3,), J)], {"axis": 1}, E_ATTR),
  ("iota", [], [((3,), J)], {"axis": -1}, E_ATTR),
  ("iota", [], [((3,), B)], {"axis": 0}, E_DTYPE),
  ("take_last", [((2, 5), F), ((2,), J)], [((2,), F)], {}, E_DTYPE),
  ("take_last", [((2, 5), F), ((1,), F)], [((2,), F)], {}, E_DTYPE),
  ("take_last", [((2, 5), F), ((1,), J)], [((5,), F)], {}, E_SHAPE),
  ("take_last", [((), F), ((1,), J)], [((), F)], {}, E_SHAPE),
  ("take_last", [((2, 5), F), ((1,), J)], [((2,), J)], {}, E_DTYPE),
  ("scatter_add_last", [((2, 5), F), ((1,), J), ((5,), F)], [((2, 5), F)], {}, E_SHAPE),
  ("scatter_add_last", [((2, 5), F), ((1,), J), ((2,), F)], [((2, 4), F)], {}, E_SHAPE),
  ("scatter_add_last", [((2, 5), F), ((1,), J), ((2,), J)], [((2, 5), F)], {}, E_DTYPE),
  ("scatter_add_last", [((2, 5), B), ((1,), J), ((2,), B)], [((2, 5), B)], {}, E_DTYPE),
]


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: f"{c[0]}-{c[3]}-{c[4]}")
def test_check_refuses(case) -> None:
  name, ins, outs, attrs, want = case
  assert status(name, ins, outs, attrs) == want


def test_check_accepts_scalars() -> None:
  assert status("binary", [((), F), ((4,), F)], [((4,), F)], {"fn": "add"}) == OK
  assert status("binary", [((), F), ((), F)], [((), B)], {"fn": "lt"}) == OK
  assert status("take_last", [((2, 5), F), ((), J)], [((2,), F)]) == OK
  assert status("reduce", [((2, 3), F)], [((), F)], {"fn": "sum", "axes": (1, 0)}) == OK
