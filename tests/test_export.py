"""lowering.export: an exported blob builds with CMake and with its Makefile, and the example
application computes on the host what the C runtime computes from Python, bit for bit
(every step's loss, the logits after training), resuming from its flash file on a second
run; an export refuses what it cannot use and replaces an earlier export; the command line
reports user errors in one line with exit status 2."""

import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import jaxtiny as jt
import lowering.blob
from jaxtiny.errors import InputError
from lowering import export
from lowering.cruntime import CRuntime

from helpers import SmallNet, labelled_batch, need_tool, quantize_8x8x2

SAMPLES = 5


@pytest.fixture(scope="module")
def small() -> tuple[bytes, np.ndarray, np.ndarray]:
  """A SmallNet step (blob) and a few labelled int8 samples."""
  qm = quantize_8x8x2(SmallNet())
  step = jt.tiny_train(qm, update=jt.SparseUpdate.last_layers(2))(jt.softmax_cross_entropy)
  x8, y = labelled_batch(qm, SAMPLES)
  return lowering.blob.encode(step.lower()), x8, y


def run_ok(*cmd: str | Path, cwd: Path | None = None) -> str:
  r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd)
  assert r.returncode == 0, f"{cmd}:\n{r.stdout[-4000:]}{r.stderr[-4000:]}"
  return r.stdout


def parse(text: str) -> dict:
  """The example's console: resumed step (None if fresh), steps, logits."""
  out: dict = {"resumed": None, "steps": [], "logits": None, "done": False}
  for line in text.splitlines():
    key, _, rest = line.partition(" ")
    kv = dict(p.split("=", 1) for p in rest.split() if "=" in p)
    if key == "resume":
      out["resumed"] = int(kv["step"])
    elif key == "step":
      out["steps"].append((int(rest.split()[0]), int(kv["label"]), int(kv["loss"], 16)))
    elif key == "infer":
      out["logits"] = [int(v) for v in kv["logits"].split(",")]
    elif key == "done":
      out["done"] = True
  return out


def bits(loss: float) -> int:
  return struct.unpack("<I", struct.pack("<f", loss))[0]


def test_exported_example_matches_the_c_runtime_and_resumes(small, tmp_path):
  for tool in ("cmake", "make", "cc"):
    need_tool(tool)
  blob, x8, y = small
  out = tmp_path / "out"
  files = export.export(blob, out, data=(x8, y))
  assert {out / "jaxtiny_blob.h", out / "step.jtb", out / "samples.jtd", out / "jaxtiny.mk",
          out / "jaxtiny/include/jaxtiny.h", out / "jaxtiny/CMakeLists.txt"} <= set(files)
  assert (out / "step.jtb").read_bytes() == blob
  run_ok("cmake", "-S", out, "-B", out / "build")
  run_ok("cmake", "--build", out / "build", "-j", "2")
  run_ok("make", "-C", out, "-s", "-j", "2", "CC=cc", "CFLAGS=-O1")

  rt = CRuntime(blob)
  want = [[bits(rt.train_step(xi, yi)) for xi, yi in zip(x8, y)] for _ in range(2)]
  logits = rt.infer(x8[-1]).tolist()
  labels = [int(v) for v in y]

  first = parse(run_ok(out / "build/jaxtiny_example", "samples.jtd", cwd=out))
  assert first["resumed"] is None and first["done"]
  assert first["steps"] == [(i, labels[i], want[0][i]) for i in range(SAMPLES)]
  second = parse(run_ok(out / "build/jaxtiny_example", "samples.jtd", cwd=out))
  assert second["resumed"] == SAMPLES
  assert second["steps"] == [(SAMPLES + i, labels[i], want[1][i]) for i in range(SAMPLES)]
  assert second["logits"] == logits

  # the Makefile's build, from a fresh flash file: the same run as CMake's first
  made = run_ok(out / "jaxtiny_example", "samples.jtd", "flash-make.bin", cwd=out)
  assert parse(made) == first


def test_export_refuses_what_it_cannot_use_and_replaces_an_earlier_export(small, tmp_path):
  blob, x8, y = small
  with pytest.raises(lowering.BlobError, match="refused the blob"):
    export.export(blob[:-8] + bytes(8), tmp_path / "bad")
  with pytest.raises(InputError, match=r"sample 1: label must lie in \[0, 4\)"):
    export.export(blob, tmp_path / "bad", data=(x8[:2], np.array([0, 9])))
  assert not (tmp_path / "bad").exists()  # nothing written before the checks pass
  (tmp_path / "file").write_text("x")
  with pytest.raises(InputError, match="is a file"):
    export.export(blob, tmp_path / "file")

  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.txt").write_text("mine")
  with pytest.raises(InputError, match="holds no earlier export"):
    export.export(blob, mine)
  export.export(blob, mine, force=True)
  assert (mine / "notes.txt").read_text() == "mine" and (mine / "main.c").is_file()

  out = tmp_path / "out"
  # real values are quantized with the blob's input parameters: the same samples as int8
  q = lowering.load(blob).quant
  real = (x8.astype(np.float32) - q.input_zero) / np.float32(q.input_inv_scale)
  export.export(blob, out, data=(real, y))
  from_real = (out / "samples.jtd").read_bytes()
  export.export(blob, out, data=(x8, y))
  assert (out / "samples.jtd").read_bytes() == from_real
  (out / "build").mkdir()  # a build directory beside the export does not stop a new one
  files = export.export(blob, out)
  assert not (out / "samples.jtd").exists() and (out / "build").is_dir()
  assert sorted(p.relative_to(out).as_posix() for p in files) == sorted(
    json.loads((out / export.MARKER).read_text())["files"])


def test_command_line_user_errors_are_one_line(small, tmp_path, capsys):
  blob, x8, y = small
  good = tmp_path / "step.jtb"
  good.write_bytes(blob)
  corrupt = tmp_path / "corrupt.jtb"
  corrupt.write_bytes(blob[:100] + bytes([blob[100] ^ 1]) + blob[101:])
  np.savez(tmp_path / "no_y.npz", x=x8)
  np.savez(tmp_path / "shape.npz", x=x8[:, :4], y=y)
  nan = x8.astype(np.float32)
  nan[1, 0, 0, 0] = np.nan
  np.savez(tmp_path / "nan.npz", x=nan, y=y)
  (tmp_path / "junk.npz").write_bytes(b"not a zip")
  (tmp_path / "a_file").write_text("x")
  out = str(tmp_path / "out")
  cases = [
    ([str(tmp_path / "missing.jtb"), "-o", out], "no blob at"),
    ([str(corrupt), "-o", out], "CRC mismatch"),
    ([str(good), "-o", out, "--data", str(tmp_path / "no_y.npz")], "lacks 'y'"),
    ([str(good), "-o", out, "--data", str(tmp_path / "shape.npz")], "model takes samples of"),
    ([str(good), "-o", out, "--data", str(tmp_path / "nan.npz")], "x sample 1 holds NaN"),
    ([str(good), "-o", out, "--data", str(tmp_path / "junk.npz")], "not a readable .npz"),
    ([str(good), "-o", out, "--data", str(tmp_path / "none.npz")], "no such file"),
    ([str(good), "-o", str(tmp_path / "a_file")], "is a file"),
  ]
  for argv, message in cases:
    assert export.main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (argv, err)
  assert not Path(out).exists()

  np.savez(tmp_path / "data.npz", x=x8, y=y)
  assert export.main([str(good), "-o", out, "--data", str(tmp_path / "data.npz")]) == 0
  printed = capsys.readouterr().out
  assert "cmake -S" in printed and "samples.jtd" in printed
  with pytest.raises(SystemExit) as e:
    export.main(["--help"])
  assert e.value.code == 0 and "DATA.npz" in capsys.readouterr().out
