"""The README's workflow through the `jaxtiny` command on a user's own script: lower,
report, search, run (with a state that resumes), export (the exported example built and
run), firmware under QEMU; the losses agree bit for bit wherever the same samples train the
same blob; user errors are one line and exit status 2."""

import json
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lowering
from jaxtiny.cli import main

from helpers import need_tool

SCRIPT = '''
import flax.linen as nn
import jax
import numpy as np
import optax

import jaxtiny as jt


class Net(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(6, (3, 3))(x))
    x = nn.relu6(nn.Conv(8, (3, 3), strides=2)(x))
    return nn.Dense(3)(x.mean(axis=(1, 2)))


def _qm(model=Net()):
  x = np.random.default_rng(0).normal(size=(16, 6, 6, 2)).astype(np.float32)
  return jt.quantize(model, model.init(jax.random.key(0), x[:1]), x)


def trainer():
  loss = lambda z, y: optax.softmax_cross_entropy_with_integer_labels(z, y).mean()
  return jt.tiny_train(_qm(), optimizer=jt.sgd(0.05), update=jt.SparseUpdate(bias_last=2))(loss)


def pair():
  return _qm(), jt.SparseUpdate(weights={1: 0.5})


def raises():
  return {}["no such key"]


def wrong():
  return 42


class Leaky(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(nn.leaky_relu(nn.Conv(4, (3, 3))(x)).mean(axis=(1, 2)))


def leaky():
  return _qm(Leaky())
'''


def _call(capsys, *argv) -> tuple[int, str, str]:
  try:
    code = main([str(a) for a in argv])
  except SystemExit as e:  # argparse's own errors
    code = e.code
  out = capsys.readouterr()
  return code, out.out, out.err


def _user_error(capsys, *argv) -> str:
  code, _, err = _call(capsys, *argv)
  assert code == 2, (argv, err)
  assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
  return err


@pytest.fixture(scope="module")
def work(tmp_path_factory):
  d = tmp_path_factory.mktemp("cli")
  (d / "train.py").write_text(textwrap.dedent(SCRIPT))
  assert main(["lower", str(d / "train.py"), "-o", str(d / "step.jtb"), "--budget", "64KB"]) == 0
  rng = np.random.default_rng(1)
  x = rng.normal(size=(6, 6, 6, 2)).astype(np.float32)
  y = rng.integers(0, 3, 6)
  np.savez(d / "train.npz", x=x, y=y)
  np.savez(d / "test.npz", x=x[:3], y=y[:3])
  return d


def _losses(path) -> list[int]:
  return [struct.unpack("<I", struct.pack("<f", v))[0]
          for v in json.loads(path.read_text())["losses"]]


def test_lower_writes_a_blob_within_budget_and_refuses_one_over(work, capsys):
  program = lowering.load(work / "step.jtb")
  sram = program.arena_bytes + program.state_bytes
  err = _user_error(capsys, "lower", work / "train.py:trainer", "-o", work / "over.jtb",
                    "--budget", f"{sram - 1}B")
  assert "1 B over" in err and not (work / "over.jtb").exists()
  code, out, _ = _call(capsys, "lower", work / "train.py:pair", "-o", work / "pair.jtb")
  assert code == 0 and "total SRAM" in out and lowering.load(work / "pair.jtb")


@pytest.mark.parametrize("target, message", [
  ("missing.py", "does not exist"), ("train.py:nothing", "defines no 'nothing'"),
  ("train.py:raises", "KeyError"), ("train.py:wrong", "returned int"),
  ("train.py:leaky", "leaky_relu"),
])
def test_script_errors_are_one_line(work, capsys, target, message):
  err = _user_error(capsys, "lower", work / target, "-o", work / "x.jtb")
  assert message in err


def test_run_trains_the_c_runtime_and_resumes_its_state(work, capsys):
  blob = (work / "step.jtb").read_bytes()
  state, j1, j2 = work / "s.bin", work / "r1.json", work / "r2.json"
  state.unlink(missing_ok=True)
  assert main(["run", str(work / "step.jtb"), "--data", str(work / "train.npz"), "--test",
               str(work / "test.npz"), "--state", str(state), "--json", str(j1), "--quiet"]) == 0
  code, out, _ = _call(capsys, "run", work / "step.jtb", "--data", work / "train.npz",
                       "--state", state, "--json", j2, "--quiet")
  assert code == 0 and "resumed" in out and json.loads(j2.read_text())["start_step"] == 6
  # the same as the C runtime trained from Python on the quantized samples, in order
  rt = lowering.CRuntime(blob)
  with np.load(work / "train.npz") as d:
    x8, y = lowering.load(blob).quant.quantize_input(d["x"]), d["y"]
  want = [rt.train_step(x8[i % 6], int(y[i % 6])) for i in range(12)]
  got = [struct.unpack("<f", struct.pack("<I", b))[0] for b in _losses(j1) + _losses(j2)]
  assert got == want
  other = work / "other.jtb"
  assert main(["lower", str(work / "train.py:pair"), "-o", str(other)]) == 0
  assert "another blob" in _user_error(capsys, "run", other, "--data", work / "train.npz",
                                       "--state", state)


def test_run_user_errors(work, capsys, tmp_path):
  np.savez(tmp_path / "no_y.npz", x=np.zeros((2, 6, 6, 2), np.float32))
  np.savez(tmp_path / "shape.npz", x=np.zeros((2, 5, 6, 2), np.float32), y=[0, 1])
  np.savez(tmp_path / "label.npz", x=np.zeros((2, 6, 6, 2), np.float32), y=[0, 3])
  corrupt = bytearray((work / "step.jtb").read_bytes())
  corrupt[300] ^= 1
  (tmp_path / "bad.jtb").write_bytes(bytes(corrupt))
  blob = work / "step.jtb"
  for argv, message in [
    ((tmp_path / "none.jtb", "--data", work / "train.npz"), "does not exist"),
    ((tmp_path / "bad.jtb", "--data", work / "train.npz"), "CRC mismatch"),
    ((blob, "--data", tmp_path / "no_y.npz"), "lacks 'y'"),
    ((blob, "--data", tmp_path / "shape.npz"), "(N, 6, 6, 2)"),
    ((blob, "--data", tmp_path / "label.npz"), "y[1] = 3"),
    ((blob, "--data", work / "train.npz", "--epochs", "0"), "at least 1"),
  ]:
    assert message in _user_error(capsys, "run", *argv)


def test_report_dump_and_search(work, capsys):
  program = lowering.load(work / "step.jtb")
  code, out, _ = _call(capsys, "report", work / "step.jtb")
  assert code == 0 and out == lowering.report.report(program)
  code, out, _ = _call(capsys, "dump", work / "step.jtb")
  assert code == 0 and out == lowering.dump.disassemble((work / "step.jtb").read_bytes())
  code, out, _ = _call(capsys, "search", work / "train.py", "--data", work / "train.npz",
                       "--budget", "16KB", "--epochs", "1", "--generations", "2",
                       "--population", "4", "--quiet", "-o", work / "found.jtb")
  assert code == 0 and "scheme: jt.SparseUpdate(" in out and lowering.load(work / "found.jtb")
  assert "below the cost" in _user_error(capsys, "search", work / "train.py", "--data",
                                         work / "train.npz", "--budget", "8B")


def test_export_builds_and_trains_as_jaxtiny_run(work, capsys, tmp_path):
  need_tool("make")
  need_tool("cc")
  out = tmp_path / "board"
  code, _, err = _call(capsys, "export", work / "step.jtb", "-o", out, "--data",
                       work / "train.npz")
  assert code == 0, err
  subprocess.run(["make", "-s", "-C", str(out)], check=True, capture_output=True)
  run = subprocess.run(["./jaxtiny_example", "samples.jtd"], cwd=out, capture_output=True,
                       text=True, check=True)
  steps = [int(line.split("loss=")[1].split()[0], 16) for line in run.stdout.splitlines()
           if line.startswith("step ")]
  assert main(["run", str(work / "step.jtb"), "--data", str(work / "train.npz"), "--json",
               str(tmp_path / "r.json"), "--quiet"]) == 0
  assert steps == _losses(tmp_path / "r.json")


def test_firmware_trains_as_jaxtiny_run(work, capsys, tmp_path):
  for t in ("arm-none-eabi-gcc", "qemu-system-arm", "make"):
    need_tool(t)
  code, _, err = _call(capsys, "firmware", work / "step.jtb", "--cpu", "cortex-m4", "-o",
                       tmp_path / "fw", "--run", work / "train.npz", "--json", tmp_path / "f.json")
  assert code == 0, err
  fw = [struct.unpack("<I", struct.pack("<f", s["loss"]))[0]
        for s in json.loads((tmp_path / "f.json").read_text())["steps"]]
  assert main(["run", str(work / "step.jtb"), "--data", str(work / "train.npz"), "--json",
               str(tmp_path / "r.json"), "--quiet"]) == 0
  assert fw == _losses(tmp_path / "r.json")


def test_parser_errors_and_the_console_script(capsys):
  for argv in ([], ["nope"], ["run"], ["lower", "x.py", "-o", "y", "--budget", "12XB"]):
    _user_error(capsys, *argv)
  r = subprocess.run([sys.executable, "-m", "jaxtiny.cli", "report", "missing.jtb"],
                     capture_output=True, text=True)
  assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
