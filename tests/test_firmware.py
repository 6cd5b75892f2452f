"""The Cortex-M4F / M7 firmware under QEMU: built from the fuzz seeds' blobs (every op
family) with the DSP kernels and with the portable C, it computes bit for bit what the
host build computes (losses, the saved state image, logits before and after training);
a reset resumes from the A/B slots as if there had been none; a plan that does not fit
fails at link time with the numbers; the command line writes the fixed JSON."""

import json
import struct
import subprocess

import flax.linen as nn
import jax
import numpy as np
import pytest
from random_models import random_data, random_model, random_update, random_variables

import jaxtiny as jt
import lowering
from jaxtiny.errors import InputError
from lowering import firmware
from lowering.blob import read
from lowering.cruntime import CRuntime
from lowering.opset import OPS

from helpers import FuzzBlock, labelled_batch, need_tool, quantize_8x8x2, seed_blobs

BUILDS = [(cpu, kernels) for cpu in ("cortex-m4", "cortex-m7") for kernels in firmware.KERNELS]
STEPS = 6


@pytest.fixture(scope="module", autouse=True)
def toolchain():
  for tool in ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm", "make"):
    need_tool(tool)


@pytest.fixture(scope="module")
def lib_dirs(tmp_path_factory):
  """The runtime's objects, compiled once per cpu and kernel choice."""
  return {b: tmp_path_factory.mktemp(f"lib-{b[0]}-{b[1]}") for b in BUILDS}


def samples(rt: CRuntime, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  x = rng.integers(-128, 128, size=(n, *rt.input_shape), dtype=np.int8)
  return x, rng.integers(0, rt.classes, n).astype(np.int32)


def host_run(blob: bytes, x, y, test_x):
  """The host build's losses (as bits), final state image and logits."""
  rt = CRuntime(blob)
  first = rt.infer(x[0])
  bits = [struct.unpack("<I", struct.pack("<f", rt.train_step(xi, yi)))[0]
          for xi, yi in zip(x, y)]
  return first, bits, rt.save_state(), [rt.infer(t) for t in test_x]


def assert_same_as_host(fw, r, work, host) -> None:
  """A firmware run against host_run's results: logits before and after, loss bits, the
  saved state image."""
  first, bits, image, test_logits = host
  assert r.inference["logits"] == first.tolist()
  assert [s["loss_bits"] for s in r.steps] == bits
  assert [t["logits"] for t in r.tests] == [t.tolist() for t in test_logits]
  assert firmware.saved_image(fw, work) == image


@pytest.mark.parametrize("name", sorted(seed_blobs()))
@pytest.mark.parametrize("cpu,kernels", BUILDS)
def test_firmware_matches_host_build(name, cpu, kernels, lib_dirs, tmp_path):
  blob = seed_blobs()[name]
  fw = firmware.build(blob, cpu, tmp_path / "fw", kernels, lib_dir=lib_dirs[cpu, kernels])
  rt = CRuntime(blob)
  x, y = samples(rt, STEPS, 0)
  tx, ty = samples(rt, 3, 1)
  r = firmware.run(fw, x, y, tmp_path / "run", test=(tx, ty), timeout=60)
  assert r.resumed_at is None
  assert_same_as_host(fw, r, tmp_path / "run", host_run(blob, x, y, tx))
  assert all(s["instructions"] > 0 for s in r.steps) and r.inference["instructions"] > 0
  assert 0 < r.stack_bytes < firmware.RAM_BYTES - fw.static_ram_bytes
  # only the kernels (adapter and check) of the blob's own opcodes are linked
  prog = read(blob)
  used = {op.name for op in (*prog.train_ops, *prog.infer_ops)}
  nm = subprocess.run([firmware.tool("arm-none-eabi-nm"), str(fw.elf)], capture_output=True,
                      text=True, check=True).stdout.split()
  for d in OPS:
    assert (f"jt_op_{d.name}" in nm, f"jt_check_{d.name}" in nm) == (d.name in used,) * 2, d.name


def test_reset_resumes_from_the_saved_state(lib_dirs, tmp_path):
  """Train 4 steps, "power off", train 4 more: the same losses and state as 8 in one run;
  instruction counts are deterministic."""
  blob = seed_blobs()["block-sparse"]
  cpu, kernels = BUILDS[-2]
  fw = firmware.build(blob, cpu, tmp_path / "fw", kernels, lib_dir=lib_dirs[cpu, kernels])
  x, y = samples(CRuntime(blob), 8, 2)
  one = firmware.run(fw, x, y, tmp_path / "one", steps=8, save_every=3)
  first = firmware.run(fw, x, y, tmp_path / "two", steps=4)
  second = firmware.run(fw, x, y, tmp_path / "two", steps=4, resume=True)
  assert second.resumed_at == 4
  assert [s["step"] for s in second.steps] == [4, 5, 6, 7]
  assert [s["loss_bits"] for s in first.steps + second.steps] == \
      [s["loss_bits"] for s in one.steps]
  assert firmware.saved_image(fw, tmp_path / "two") == firmware.saved_image(fw, tmp_path / "one")
  again = firmware.run(fw, x, y, tmp_path / "three", steps=8, save_every=3)
  assert [s["instructions"] for s in again.steps] == [s["instructions"] for s in one.steps]
  assert again.stack_bytes == one.stack_bytes


def test_inference_matches_the_simulation(lib_dirs, tmp_path):
  qm = quantize_8x8x2(FuzzBlock())
  step = jt.tiny_train(qm, update=jt.SparseUpdate.last_layers(2))(jt.softmax_cross_entropy)
  prog = step.lower()
  blob = lowering.blob.encode(prog)
  x8, y = labelled_batch(qm, 4, classes=3)
  cpu, kernels = BUILDS[0]
  fw = firmware.build(blob, cpu, tmp_path / "fw", kernels, lib_dir=lib_dirs[cpu, kernels])
  r = firmware.run(fw, x8[:1], y[:1], tmp_path / "run", steps=0, test=(x8, y))
  want = np.asarray(qm.apply(x8))
  assert r.inference["logits"] == want[0].tolist()
  assert [t["logits"] for t in r.tests] == want.tolist()


def test_a_plan_too_large_fails_at_link_time(tmp_path):
  with pytest.raises(firmware.DoesNotFitError, match=r"256 KB of RAM: it is [\d,]+ B over"):
    firmware.build(seed_blobs()["mlp"], "cortex-m4", tmp_path, "portable",
                   min_stack=firmware.RAM_BYTES)


def test_bad_input_is_named(tmp_path):
  blob = seed_blobs()["mlp"]
  with pytest.raises(lowering.BlobError, match="refused the blob"):
    firmware.build(blob[:-8] + bytes(8), "cortex-m4", tmp_path)
  with pytest.raises(InputError, match="cpu must be one of"):
    firmware.build(blob, "cortex-m0", tmp_path)
  fw = firmware.build(blob, "cortex-m4", tmp_path / "fw", "portable")
  x, y = samples(CRuntime(blob), 2, 0)
  with pytest.raises(InputError, match="input shape"):
    firmware.run(fw, x[:, :1], y, tmp_path / "run")
  with pytest.raises(InputError, match=r"sample 1: label must lie in \[0, 3\)"):
    firmware.run(fw, x, np.array([0, 7]), tmp_path / "run")
  with pytest.raises(InputError, match="int8"):
    firmware.run(fw, x.astype(np.float32), y, tmp_path / "run")


def test_missing_toolchain_says_how_to_install(monkeypatch, tmp_path):
  monkeypatch.setattr(firmware.shutil, "which", lambda name: None)
  with pytest.raises(firmware.ToolchainMissingError, match="apt-get install"):
    firmware.build(seed_blobs()["mlp"], "cortex-m7", tmp_path)


def test_command_line_writes_the_json(tmp_path, capsys):
  blob = seed_blobs()["block-adam"]
  (tmp_path / "step.jtb").write_bytes(blob)
  x, y = samples(CRuntime(blob), 3, 4)
  np.savez(tmp_path / "data.npz", x=x, y=y)
  code = firmware.main([str(tmp_path / "step.jtb"), "--cpu", "cortex-m7", "-o",
                        str(tmp_path / "build"), "--run", str(tmp_path / "data.npz"),
                        "--json", str(tmp_path / "out.json")])
  assert code == 0
  out = json.loads((tmp_path / "out.json").read_text())
  assert len(out["steps"]) == 3
  assert all(isinstance(s["loss"], float) and s["instructions"] > 0 for s in out["steps"])
  assert out["inference"]["instructions"] > 0 and len(out["inference"]["logits"]) == 3
  assert out["ram_bytes"] > out["stack_bytes"] > 0 and out["flash_bytes"] > len(blob)
  printed = capsys.readouterr().out
  assert "the blob (weights, op lists, plan)" in printed and "M instructions per step" in printed
  assert firmware.main([str(tmp_path / "missing.jtb")]) == 2
  assert "no blob at" in capsys.readouterr().err


@pytest.mark.parametrize("seed", (1, 3, 7, 18))
def test_random_models_on_the_dsp_build(seed, lib_dirs, tmp_path):
  """Shapes nobody chose (tests/random_models.py: grouped, depthwise, strided, padded,
  1-d, odd channel counts) on the M4 DSP kernels: bit for bit the host build."""
  module, shape, classes = random_model(seed)
  x, y = random_data(shape, classes, seed)
  qm = jt.quantize(module, random_variables(module, shape, seed), x)
  step = jt.tiny_train(qm, optimizer=jt.sgd(0.05), update=random_update(qm, seed))
  blob = lowering.blob.encode(step(jt.softmax_cross_entropy).lower())
  x8 = qm.quantize_input(x)
  cpu, kernels = BUILDS[0]
  fw = firmware.build(blob, cpu, tmp_path / "fw", kernels, lib_dir=lib_dirs[cpu, kernels])
  r = firmware.run(fw, x8[:4], y[:4], tmp_path / "run", test=(x8[4:8], y[4:8]), timeout=60)
  assert_same_as_host(fw, r, tmp_path / "run", host_run(blob, x8[:4], y[:4], x8[4:8]))


class FastPaths(nn.Module):
  """The DSP kernels' fast paths and their limits: 1x1 convs with channel counts that are
  not multiples of 4 and an odd width (the first, of 8 inputs over 17 pixels, takes the
  widened weight), one wider than the 2x2 kernel's buffer (640), a
  depthwise conv of 5 channels and one of 81 taps (over the 64 of the fast path); im2col
  convs: 3x3 of 45 patch bytes over 17 pixels (a weight widened, padded to 48), 3x3 stride
  2 of 63 (a weight padded to 64), one of 360 (over the 320 of the path), one of 63 whose
  padded weight would not fit (1,600 bytes over 1,536); a depthwise conv whose windows
  the top and both sides cut (one run of taps each); biases too big to start the sums."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(7, (1, 1))(x))
    x = nn.relu6(nn.Conv(7, (3, 3), feature_group_count=7, padding="SAME")(x))
    x = nn.relu(nn.Conv(650, (1, 1))(x))
    x = nn.relu(nn.Conv(5, (1, 1))(x))
    x = nn.Conv(5, (9, 9), feature_group_count=5, padding="SAME")(x)
    x = nn.relu(nn.Conv(7, (3, 3), padding="SAME")(x))
    x = nn.relu(nn.Conv(7, (3, 3), feature_group_count=7, padding=((1, 0), (1, 1)))(x))
    x = nn.relu(nn.Conv(6, (3, 3), strides=2, padding="SAME")(x))
    x = nn.relu(nn.Conv(40, (1, 1))(x))
    x = nn.relu(nn.Conv(7, (3, 3), padding="SAME")(x))
    x = nn.relu(nn.Conv(25, (3, 3), padding=((1, 0), (0, 1)))(x))
    return nn.Dense(3)(x.mean(axis=(1, 2)))


def test_fast_paths_and_their_limits(lib_dirs, tmp_path):
  module = FastPaths()
  x = np.random.default_rng(0).normal(size=(16, 4, 17, 8)).astype(np.float32)
  v = module.init(jax.random.key(0), x[:1])
  qm = jt.quantize(module, v, x)
  # biases at the int32 limits (of a 1x1, the depthwise and a 3x3 conv): their sums add
  # them last, saturating, where the others' start from them
  for name in ("Conv_0", "Conv_1", "Conv_5"):
    qm.params[name]["bias"][:2] = (2**31 - 1000, -2**31 + 5)
  # trained input channels of the 1x1 convs and a 3x3 one (merged along axis 3), and a
  # whole depthwise
  update = jt.SparseUpdate(bias_last=5, weights={0: 0.5, 2: 0.25, 3: 0.5, 4: 1, 8: 0.5, 9: 0.5})
  blob = lowering.blob.encode(jt.tiny_train(qm, optimizer=jt.sgd(0.05), update=update)(
    jt.softmax_cross_entropy).lower())
  x8 = qm.quantize_input(x)
  y = np.arange(16) % 3
  host = host_run(blob, x8[:4], y[:4], x8[4:8])
  assert host[0].tolist() == np.asarray(qm.apply(x8[:1]))[0].tolist()
  for cpu in ("cortex-m4", "cortex-m7"):
    fw = firmware.build(blob, cpu, tmp_path / cpu, "dsp", lib_dir=lib_dirs[cpu, "dsp"])
    r = firmware.run(fw, x8[:4], y[:4], tmp_path / f"run-{cpu}", test=(x8[4:8], y[4:8]))
    assert_same_as_host(fw, r, tmp_path / f"run-{cpu}", host)
