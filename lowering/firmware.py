"""Cortex-M4F / M7 firmware from a blob, built with arm-none-eabi-gcc, and runs of it under
QEMU (mps2-an386 / mps2-an500, -icount shift=0: one instruction per virtual nanosecond).

  python -m lowering.firmware step.jtb --cpu cortex-m7 -o build/          build, print the map
  python -m lowering.firmware step.jtb --run data.npz [--test held.npz] [--json out.json]

The firmware (runtime_c/ports/cortex-m/) holds the blob in flash and the arena, the state
and the input buffer as static RAM; it streams samples from a host file over semihosting,
trains one step per sample, and keeps the learned state in A/B slots of a flash-like host
file (`flash.bin` in the run directory), so a second run resumes where the first stopped.
RAM and flash come from the ELF; the stack from painting it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jaxtiny.errors import InputError, JaxtinyError
from lowering.program import check_input, check_label

PORT = Path(__file__).resolve().parent.parent / "runtime_c" / "ports" / "cortex-m"
BOARDS = {"cortex-m4": "mps2-an386", "cortex-m7": "mps2-an500"}
KERNELS = ("dsp", "portable")
FLASH_BYTES, RAM_BYTES = 1 << 20, 256 << 10
MIN_STACK = 8192  # the linker keeps at least this much RAM for the stack
APT = "apt-get install --no-install-recommends gcc-arm-none-eabi libnewlib-arm-none-eabi " \
      "qemu-system-arm"
FLASH_SECTIONS = (".isr_vector", ".text", ".rodata", ".ARM.exidx", ".data")
SAMPLES_MAGIC = b"JTD1"
IMAGE_OVERHEAD = 24  # JT_IMAGE_OVERHEAD: a slot is a sequence number and an image


class FirmwareError(JaxtinyError, RuntimeError):
  """The firmware could not be built or its run failed."""


class ToolchainMissingError(FirmwareError):
  """arm-none-eabi-gcc, make or qemu-system-arm is not installed."""


class DoesNotFitError(FirmwareError):
  """The program needs more RAM or flash than the part has."""


def tool(name: str) -> str:
  """The path of a toolchain program, or ToolchainMissingError saying how to install it."""
  path = shutil.which(name)
  if path is None:
    raise ToolchainMissingError(f"{name} is not installed: the firmware needs the Arm "
                                f"toolchain and QEMU (Debian/Ubuntu: {APT})")
  return path


@dataclass
class Firmware:
  """A built ELF and what it holds."""
  elf: Path
  cpu: str
  kernels: str
  input_shape: tuple[int, ...]
  classes: int
  sizes: dict[str, int]     # arena, state, input, output, slot (bytes)
  sections: dict[str, int]  # allocated ELF sections (bytes)
  # profiled builds: per op list, each op's (opcode, first output's name)
  ops: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

  @property
  def flash_bytes(self) -> int:
    """Bytes the ELF puts in flash (vectors, code, constants with the blob, .data's image)."""
    return sum(self.sections.get(s, 0) for s in FLASH_SECTIONS)

  @property
  def static_ram_bytes(self) -> int:
    """.data + .bss: the arena, the state, the input buffer, the runtime's structures."""
    return self.sections.get(".data", 0) + self.sections.get(".bss", 0)

  def memory_map(self) -> str:
    z = self.sizes
    blob = z["blob"]
    code = self.flash_bytes - blob
    rows = [
      ("flash", "code, constants and vectors", code),
      ("flash", "the blob (weights, op lists, plan)", blob),
      ("flash", "total", self.flash_bytes),
      ("RAM", "arena (activations, gradients, scratch)", z["arena"]),
      ("RAM", "trainable state", z["state"]),
      ("RAM", "input buffer", z["input"]),
      ("RAM", "other .data + .bss (runtime object, logits, port)",
       self.static_ram_bytes - z["arena"] - z["state"] - z["input"]),
      ("RAM", ".data + .bss", self.static_ram_bytes),
      ("RAM", f"free for the stack (at least {MIN_STACK} B reserved)",
       RAM_BYTES - self.static_ram_bytes),
      ("storage", "A/B state slots (outside the image)", 2 * z["slot"]),
    ]
    out = [f"{self.elf} ({self.cpu}, {self.kernels} kernels; flash {FLASH_BYTES // 1024} KB, "
           f"RAM {RAM_BYTES // 1024} KB)"]
    out += [f"  {region:<8} {what:<52} {n:>9,} B" for region, what, n in rows]
    return "\n".join(out)


def _ops(blob: bytes) -> dict[str, list[tuple[str, str]]]:
  from lowering.blob import read

  prog = read(blob)
  t = prog.graph.tensors
  return {phase: [(op.name, t[op.outputs[0]].name if op.outputs else "") for op in ops]
          for phase, ops in (("train", prog.train_ops), ("infer", prog.infer_ops))}


def _ops_used(blob: bytes) -> str:
  """The header that links only the kernels the blob runs (jt_dispatch.c's JT_OPS_USED)."""
  from lowering.blob import read
  from lowering.opset import OPS

  prog = read(blob)
  used = {op.name for op in (*prog.train_ops, *prog.infer_ops)}
  lines = [f"#define JT_USES_{d.name.upper()} {int(d.name in used)}" for d in OPS]
  return "/* generated by lowering/firmware.py: the blob's opcodes */\n" + "\n".join(lines) + "\n"


def _sizes(blob: bytes) -> tuple[dict[str, int], tuple[int, ...], int]:
  from lowering.cruntime import CRuntime

  rt = CRuntime(blob)  # the C verifier: a blob it refuses never reaches a board
  return ({"arena": rt.arena_len, "state": rt.state_len, "input": int(np.prod(rt.input_shape)),
           "output": rt.classes, "slot": 4 + IMAGE_OVERHEAD + rt.state_len, "blob": len(blob)},
          rt.input_shape, rt.classes)


def _sections(elf: Path) -> dict[str, int]:
  out = subprocess.run([tool("arm-none-eabi-size"), "-A", str(elf)], capture_output=True,
                       text=True, check=True).stdout
  return {m[1]: int(m[2]) for m in re.finditer(r"^(\.\S+)\s+(\d+)\s+\d+", out, re.M)
          if m[1] not in (".stack",) and not m[1].startswith((".debug", ".comment", ".ARM.att"))}


def _fit_error(log: str, sizes: dict[str, int]) -> str | None:
  m = re.search(r"region `(RAM|FLASH)' overflowed by (\d+) bytes", log)
  if m is None:
    return None
  region, over = m[1], int(m[2])
  if region == "RAM":
    return (f"the program does not fit in {RAM_BYTES // 1024} KB of RAM: it is {over:,} B "
            f"over (arena {sizes['arena']:,} B + state {sizes['state']:,} B + input "
            f"{sizes['input']:,} B + the runtime's structures + {MIN_STACK:,} B kept for the "
            "stack). Lower it with a smaller update scheme or memory budget "
            "(jt.SparseUpdate, tiny_train(..., budget=...)), or a smaller input")
  return (f"the program does not fit in {FLASH_BYTES // 1024} KB of flash: it is {over:,} B "
          f"over (the blob alone is {sizes['blob']:,} B): use a smaller model")


def build(blob: bytes | Path, cpu: str = "cortex-m7", out: Path | str = "build",
          kernels: str = "dsp", lib_dir: Path | str | None = None,
          min_stack: int = MIN_STACK, profile: bool = False) -> Firmware:
  """Build the training firmware for a blob; `lib_dir` shares the runtime's objects
  between builds of one cpu, kernel choice and profile flag. `profile`: count the
  instructions of each opcode (Run.profile)."""
  if cpu not in BOARDS:
    raise InputError(f"cpu must be one of {sorted(BOARDS)}, got {cpu!r}")
  if kernels not in KERNELS:
    raise InputError(f"kernels must be one of {KERNELS}, got {kernels!r}")
  data = Path(blob).read_bytes() if isinstance(blob, Path) else bytes(blob)
  sizes, input_shape, classes = _sizes(data)
  out = Path(out).resolve()
  out.mkdir(parents=True, exist_ok=True)
  (out / "step.jtb").write_bytes(data)
  ops_used, text = out / "ops_used.h", _ops_used(data)
  if not ops_used.exists() or ops_used.read_text() != text:  # same text: no rebuild
    ops_used.write_text(text)
  tool("arm-none-eabi-gcc")
  cmd = [tool("make"), "-C", str(PORT), "-s", f"CPU={cpu}", f"KERNELS={kernels}",
         f"BUILD={out}", f"BLOB={out / 'step.jtb'}", f"MIN_STACK={min_stack}",
         f"PROFILE={int(profile)}", f"OPS_USED={ops_used}",
         f"ARENA_BYTES={sizes['arena']}", f"STATE_BYTES={sizes['state']}",
         f"INPUT_BYTES={sizes['input']}", f"OUTPUT_BYTES={sizes['output']}"]
  if lib_dir is not None:
    cmd.append(f"LIB_DIR={Path(lib_dir).resolve()}")
  r = subprocess.run(cmd, capture_output=True, text=True)
  if r.returncode != 0:
    log = r.stdout + r.stderr
    raise (DoesNotFitError(msg) if (msg := _fit_error(log, sizes)) else
           FirmwareError(f"the firmware build failed:\n{log[-4000:]}"))
  elf = out / "fw.elf"
  return Firmware(elf, cpu, kernels, input_shape, classes, sizes, _sections(elf),
                  _ops(data) if profile else {})


# --- runs ----------------------------------------------------------------------------------


@dataclass
class Run:
  """What one QEMU run printed, parsed."""
  resumed_at: int | None                 # the step count loaded from flash, None if fresh
  inference: dict[str, Any]              # sample 0 before this run's training
  steps: list[dict[str, Any]] = field(default_factory=list)
  tests: list[dict[str, Any]] = field(default_factory=list)
  stack_bytes: int = 0
  profile: dict[str, dict[int, int]] = field(default_factory=dict)  # list -> op -> instructions
  output: str = ""

  def profile_by_opcode(self, fw: Firmware, phase: str) -> dict[str, dict[str, int]]:
    """Instructions per opcode (summed over this run's calls) of "train" or "infer"."""
    out: dict[str, dict[str, int]] = {}
    for k, n in self.profile.get(phase, {}).items():
      row = out.setdefault(fw.ops[phase][k][0], {"ops": 0, "instructions": 0})
      row["ops"] += 1
      row["instructions"] += n
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["instructions"]))

  def summary(self, fw: Firmware) -> dict[str, Any]:
    """The fixed JSON of `--json`."""
    return {"steps": [{"loss": s["loss"], "instructions": s["instructions"]} for s in self.steps],
            "inference": {"instructions": self.inference["instructions"],
                          "logits": self.inference["logits"]},
            "ram_bytes": fw.static_ram_bytes + self.stack_bytes, "stack_bytes": self.stack_bytes,
            "flash_bytes": fw.flash_bytes}


def write_samples(path: Path, x8: Any, y: Any, fw: Firmware) -> int:
  """The samples file the firmware streams: int8 inputs of the model's input shape with a
  leading sample axis, integer labels in [0, classes)."""
  x8, y = np.asarray(x8), np.asarray(y)
  if x8.ndim != len(fw.input_shape) + 1 or tuple(x8.shape[1:]) != fw.input_shape:
    raise InputError(f"x must hold samples of the model's input shape {fw.input_shape} "
                     f"behind a sample axis, got shape {x8.shape}")
  if y.shape != (len(x8),):
    raise InputError(f"y must hold one integer label per sample ({len(x8)}), got shape "
                     f"{y.shape}")
  record = -(-int(np.prod(fw.input_shape)) // 4) * 4 + 4
  with open(path, "wb") as f:
    f.write(SAMPLES_MAGIC + struct.pack("<III", len(x8), fw.sizes["input"], record))
    for i, (xi, yi) in enumerate(zip(x8, y)):
      try:
        raw = check_input(xi, fw.input_shape).tobytes()
        label = int(check_label(yi, fw.classes)[0])
      except InputError as e:
        raise InputError(f"sample {i}: {e}") from None
      f.write(raw.ljust(record - 4, b"\0") + struct.pack("<i", label))
  return len(x8)


def _float(bits: str) -> float:
  return struct.unpack("<f", struct.pack("<I", int(bits, 16)))[0]


def _parse(text: str) -> Run:
  run = Run(None, {})
  for line in text.splitlines():
    key, _, rest = line.partition(" ")
    kv = dict(p.split("=", 1) for p in rest.split() if "=" in p)
    if key == "resume":
      run.resumed_at = int(kv["step"])
    elif key == "infer0":
      run.inference = {"instructions": int(kv["instructions"]),
                       "logits": [int(v) for v in kv["logits"].split(",")]}
    elif key == "step":
      run.steps.append({"step": int(rest.split()[0]), "label": int(kv["label"]),
                        "loss": _float(kv["loss"]), "loss_bits": int(kv["loss"], 16),
                        "instructions": int(kv["instructions"]), "finite": "nonfinite" not in rest})
    elif key == "test":
      run.tests.append({"label": int(kv["label"]),
                        "logits": [int(v) for v in kv["logits"].split(",")]})
    elif key == "stack":
      run.stack_bytes = int(kv["bytes"])
    elif key == "profile":
      run.profile.setdefault(rest.split()[0], {})[int(kv["op"])] = int(kv["instructions"])
  run.output = text
  return run


def run(fw: Firmware, x8: Any, y: Any, workdir: Path | str, steps: int | None = None,
        test: tuple[Any, Any] | None = None, resume: bool = False, save_every: int = 0,
        timeout: float = 600.0, echo: bool = False) -> Run:
  """Train `steps` steps (default one per sample) under QEMU, then infer the `test`
  samples. The state slots live in `workdir`/flash.bin: `resume=True` keeps them (the
  board was reset), otherwise the run starts from the blob's state."""
  work = Path(workdir)
  work.mkdir(parents=True, exist_ok=True)
  n = write_samples(work / "train.bin", x8, y, fw)
  (work / "test.bin").unlink(missing_ok=True)
  if test is not None:
    write_samples(work / "test.bin", *test, fw)
  if not resume:
    (work / "flash.bin").unlink(missing_ok=True)
  steps = n if steps is None else steps
  cmd = [tool("qemu-system-arm"), "-M", BOARDS[fw.cpu], "-cpu", fw.cpu, "-nographic",
         "-monitor", "none", "-serial", "none", "-icount", "shift=0",
         "-semihosting-config", f"enable=on,target=native,arg=fw,arg={steps},arg={save_every}",
         "-kernel", str(fw.elf)]
  lines = []
  with subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True) as p:
    try:
      assert p.stdout is not None
      for line in p.stdout:
        lines.append(line)
        if echo and line.startswith(("step", "infer0", "resume", "fresh", "error", "fault")):
          print(line.rstrip()[:160], file=sys.stderr)
      p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      p.kill()
      raise FirmwareError(f"QEMU did not finish within {timeout:.0f} s") from None
  text = "".join(lines)
  if p.returncode != 0 or "done" not in text.split():
    last = lines[-1] if lines else "(no output)"
    err = next((ln for ln in lines if ln.startswith(("error", "fault"))), last)
    raise FirmwareError(f"the firmware stopped with status {p.returncode}: {err.strip()}")
  return _parse(text)


def saved_image(fw: Firmware, workdir: Path | str) -> bytes | None:
  """The newest valid state image in the run's flash.bin (what a reset resumes from)."""
  raw = (Path(workdir) / "flash.bin").read_bytes()
  slot = fw.sizes["slot"]
  best = None
  for k in range(2):
    part = raw[k * slot:(k + 1) * slot]
    if len(part) < slot:
      continue
    seq, image = struct.unpack_from("<I", part)[0], part[4:]
    if zlib.crc32(image[:-4]) != struct.unpack_from("<I", image, len(image) - 4)[0]:
      continue
    if best is None or ((seq - best[0]) & 0xFFFFFFFF) < 1 << 31:
      best = (seq, image)
  return None if best is None else best[1]


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
  with np.load(path) as d:
    missing = {"x", "y"} - set(d.files)
    if missing:
      raise InputError(f"{path} must hold arrays 'x' (int8 samples) and 'y' (labels); "
                       f"it lacks {sorted(missing)}")
    return d["x"], d["y"]


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(prog="python -m lowering.firmware", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("blob", type=Path, help="a lowered step (.jtb)")
  ap.add_argument("--cpu", choices=sorted(BOARDS), default="cortex-m7")
  ap.add_argument("-o", "--out", type=Path, default=Path("build"), help="build directory")
  ap.add_argument("--kernels", choices=KERNELS, default="dsp",
                  help="DSP-extension kernels or the portable C (bit-identical)")
  ap.add_argument("--run", type=Path, metavar="DATA.npz",
                  help="train under QEMU, one step per sample (arrays x int8, y labels)")
  ap.add_argument("--test", type=Path, metavar="HELD.npz", help="infer these after training")
  ap.add_argument("--resume", action="store_true",
                  help="keep the state slots of the last run (a reset, not a fresh board)")
  ap.add_argument("--save-every", type=int, default=0, metavar="K",
                  help="save the state every K steps (always at the end)")
  ap.add_argument("--profile", action="store_true",
                  help="count the instructions of each opcode (training and inference)")
  ap.add_argument("--json", type=Path, metavar="OUT.json", help="write what was measured")
  ap.add_argument("--timeout", type=float, default=3600.0, help="seconds QEMU may run")
  args = ap.parse_args(argv)
  try:
    if not args.blob.is_file():
      raise InputError(f"no blob at {args.blob}: write one with lowering.save(program, path)")
    fw = build(args.blob, args.cpu, args.out, args.kernels, profile=args.profile)
    print(fw.memory_map())
    if args.run is None:
      if args.json:
        args.json.write_text(json.dumps({"ram_bytes": fw.static_ram_bytes,
                                         "flash_bytes": fw.flash_bytes}, indent=1))
      return 0
    x, y = _npz(args.run)
    test = _npz(args.test) if args.test else None
    r = run(fw, x, y, args.out / "run", test=test, resume=args.resume,
            save_every=args.save_every, timeout=args.timeout, echo=True)
    summary = r.summary(fw)
    per_step = [s["instructions"] for s in r.steps]
    if per_step:
      print(f"{len(per_step)} steps: loss {r.steps[0]['loss']:.4f} -> {r.steps[-1]['loss']:.4f}, "
            f"{np.mean(per_step) / 1e6:.2f} M instructions per step")
    print(f"inference: {r.inference['instructions'] / 1e6:.2f} M instructions; RAM "
          f"{summary['ram_bytes']:,} B (stack {r.stack_bytes:,} B); flash {fw.flash_bytes:,} B")
    for phase in r.profile:
      by_op = r.profile_by_opcode(fw, phase)
      total = sum(v["instructions"] for v in by_op.values())
      print(f"instructions per opcode, {phase} (all of this run's calls):")
      for name, v in by_op.items():
        print(f"  {name:<24} {v['ops']:>4} ops {v['instructions'] / 1e6:>9.2f} M "
              f"{v['instructions'] / max(total, 1):>6.1%}")
      top = sorted(r.profile[phase].items(), key=lambda kv: -kv[1])[:10]
      print("  the costliest ops: " + "; ".join(
        f"#{k} {fw.ops[phase][k][0]} -> {fw.ops[phase][k][1]} {n / 1e6:.2f} M" for k, n in top))
      summary.setdefault("profile", {})[phase] = by_op
    if r.tests:
      hits = sum(int(np.argmax(t["logits"])) == t["label"] for t in r.tests)
      print(f"held-out accuracy: {hits}/{len(r.tests)} = {hits / len(r.tests):.1%}")
      summary["test_accuracy"] = hits / len(r.tests)
    if args.json:
      args.json.write_text(json.dumps(summary, indent=1))
    return 0
  except JaxtinyError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
