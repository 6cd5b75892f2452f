"""Band-by-band inverted bottlenecks in the frozen prefix.

In the inference-only prefix a conv -> depthwise -> 1x1 block writes an expanded tensor
(and a depthwise output) that only the next conv of the block reads. Such a triple becomes
one `bottleneck_s8` op that computes the block one output row at a time in a small band
scratch (`kernels.bottleneck`), so the expanded tensor never exists in full: in MCUNet's
first blocks it is the largest tensor of the whole training step.

A triple is fused only when the expanded tensor and the depthwise output have exactly one
reader each: a layer on the backward path has its clamp mask or saved input read too.
"""

from __future__ import annotations

from lowering.bottleneck_bw import pointwise
from lowering.ir import Graph, Op
from lowering.kernels import bottleneck_band_bytes, bottleneck_rows_ok

CONV = ("strides", "padding", "x_zero", "y_zero", "lo", "hi")


def _readers(g: Graph, ops: list[Op]) -> dict[int, list[int]]:
  readers: dict[int, list[int]] = {}
  for i, op in enumerate(ops):
    for t in op.inputs:
      readers.setdefault(g.base(t), []).append(i)
  return readers


def _plain(op: Op, groups: int | None = None) -> bool:
  """A conv2d_s8 with all its weights in flash (no trained channels merged in)."""
  return (op.name == "conv2d_s8" and "sel_axis" not in op.attrs
          and (groups is None or op.attrs["groups"] == groups))


def _only_reader(g: Graph, readers: dict[int, list[int]], t: int) -> int | None:
  if g.base(t) != t or g.tensors[t].storage != "arena":
    return None
  r = readers.get(t, [])
  return r[0] if len(r) == 1 else None


def fuse_bottlenecks(g: Graph, ops: list[Op]) -> list[Op]:
  """The op list with every inference-only conv -> depthwise -> 1x1 triple fused."""
  producer = {t: i for i, op in enumerate(ops) for t in op.outputs}
  readers = _readers(g, ops)
  fused: dict[int, Op] = {}  # index of the triple's last op -> the fused op
  dropped: set[int] = set()
  for j, dw in enumerate(ops):
    if not _plain(dw):
      continue
    e, d = dw.inputs[0], dw.outputs[0]
    ch = g.tensors[e].shape[-1]
    if dw.attrs["groups"] != ch or g.tensors[dw.inputs[1]].shape[0] != ch or e not in producer:
      continue
    i, k = producer[e], _only_reader(g, readers, d)
    if _only_reader(g, readers, e) != j or k is None or i in dropped or i in fused:
      continue
    ex, pr = ops[i], ops[k]
    if not (_plain(ex, 1) and _plain(pr) and pointwise(g, pr, pr.inputs[1])
            and dw.attrs["x_zero"] == ex.attrs["y_zero"]
            and pr.attrs["x_zero"] == dw.attrs["y_zero"]):
      continue
    kd = g.tensors[dw.inputs[1]].shape[1]
    if not bottleneck_rows_ok(g.tensors[ex.inputs[0]].shape[1], g.tensors[ex.inputs[1]].shape[1],
                              ex.attrs["strides"][0], ex.attrs["padding"][0], kd,
                              dw.attrs["strides"][0], dw.attrs["padding"][0]):
      continue
    scratch = g.add(f"band{len(g.tensors)}",
                    (bottleneck_band_bytes(g.tensors[e].shape, g.tensors[d].shape, kd),), "i8")
    attrs = {f"e_{a}": ex.attrs[a] for a in CONV}
    attrs |= {f"d_{a}": dw.attrs[a] for a in CONV if a != "x_zero"}
    attrs |= {f"p_{a}": pr.attrs[a] for a in ("y_zero", "lo", "hi")}
    fused[k] = Op("bottleneck_s8", [ex.inputs[0], *ex.inputs[1:4], *dw.inputs[1:4],
                                    *pr.inputs[1:4]], [pr.outputs[0], scratch], attrs)
    dropped.update((i, j))
  return [fused.get(i, op) for i, op in enumerate(ops) if i not in dropped]
