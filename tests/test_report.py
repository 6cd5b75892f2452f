"""The memory report: sizes as the Program reports them, the per-op timeline, the budget
check, the plot and the command line."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import jaxtiny as jt
import lowering
from jaxtiny.cli.common import parse_size
from lowering.program import Program
from lowering.report import BudgetError, check_budget, main, plot, report

from helpers import SmallNet, quantize_8x8x2

ROOT = Path(__file__).resolve().parents[1]
HAS_BLOB = hasattr(lowering, "load") and hasattr(Program, "save")
# One op line of the timeline: index, opcode, live bytes.
OP_LINE = re.compile(r"^\s+(\d+)\s+([a-z0-9_]+)\s+(\d+)\b")


@pytest.fixture(scope="module")
def program() -> Program:
  # Momentum, so that the state has all four groups (weights, biases, opt, step).
  tr = jt.tiny_train(quantize_8x8x2(SmallNet(max_pool=True)), optimizer=jt.sgd(0.1, momentum=0.9),
                     update=jt.SparseUpdate(bias_last=2, weights={1: 0.5, 3: 0.5}))
  return tr(jt.softmax_cross_entropy).lower()


def _sram(p: Program) -> int:
  return p.arena_bytes + p.state_bytes


def _timeline(text: str) -> list[tuple[int, str, int]]:
  body = text.split("timeline of the training step")[1].split("largest live tensors")[0]
  return [(int(m[1]), m[2], int(m[3])) for m in map(OP_LINE.match, body.splitlines()) if m]


def test_report_states_the_program_numbers(program):
  text = report(program)
  assert program.name in text
  for label, n in [("arena peak", program.arena_bytes), ("persistent state", program.state_bytes),
                   ("total SRAM", _sram(program)), ("flash", program.flash_bytes)]:
    assert re.search(rf"{label}.*\b{n} B\b", text), (label, n)
  # The state breakdown adds up.
  groups = dict(re.findall(r"^\s+(weights|biases|opt|step)\s+\d+ tensors?\s+(\d+) B ", text,
                           re.M))
  assert set(groups) == {"weights", "biases", "opt", "step"}
  assert sum(map(int, groups.values())) == program.state_bytes
  for role, tid in program.io.items():
    assert re.search(rf"^\s+{role}\s.*\b{program.graph.tensors[tid].nbytes} B ", text, re.M)
  assert not re.search(r"^\s+budget", text, re.M)


def test_timeline_has_one_line_per_op_and_the_plan_peak(program):
  text = report(program)
  rows = _timeline(text)
  live = program.plan.live_bytes()
  assert [i for i, _, _ in rows] == list(range(len(program.train_ops)))
  assert [name for _, name, _ in rows] == [op.name for op in program.train_ops]
  assert [n for _, _, n in rows] == live
  peak = live.index(max(live))
  (marked,) = [line for line in text.splitlines() if line.endswith("<- peak")]
  assert OP_LINE.match(marked)[1] == str(peak)
  assert f"peak {max(live)} B" in text
  for phase in ("forward", "loss", "backward"):
    assert f"---- {phase}" in text
  # The biggest live tensor at the peak comes first in the table below the timeline.
  table = text.split("largest live tensors")[1].splitlines()[2]
  live_at_peak = [b for b in program.plan.buffers.values() if b.first <= peak <= b.last]
  biggest = max(live_at_peak, key=lambda b: b.size)
  assert table.split()[0] == program.graph.tensors[biggest.tensor].name


def test_check_budget_at_the_boundary(program):
  total = _sram(program)
  check_budget(program, total)
  with pytest.raises(BudgetError) as err:
    check_budget(program, total - 1)
  msg = str(err.value)
  for n in (total - 1, total, program.arena_bytes, program.state_bytes):
    assert f"{n} B" in msg
  assert "1 B over" in msg and "peaks at op" in msg
  assert isinstance(err.value, jt.JaxtinyError) and isinstance(err.value, ValueError)
  assert "OVER by 1 B" in report(program, total - 1)
  assert "fits, 0 B free" in report(program, total)


@pytest.mark.parametrize("text, n", [("256KB", 262144), ("256 kib", 262144), ("1MB", 1048576),
                                     ("1.5MB", 1572864), ("100B", 100), ("4096", 4096),
                                     (512, 512), ("0.5KB", 512)])
def test_parse_size(text, n):
  assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "KB", "12XB", "-4KB", "1.5", "256 K B", "1e3"])
def test_parse_size_rejects_garbage(text):
  with pytest.raises(ValueError, match="size|whole number"):
    parse_size(text)


def test_plot_writes_a_png(program, tmp_path):
  pytest.importorskip("matplotlib")
  path = tmp_path / "mem.png"
  plot(program, path, budget=_sram(program) - 1)
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_over_budget_exits_2(program, capsys, tmp_path):
  blob = tmp_path / "model.jtb"
  program.save(blob)
  assert main([str(blob), "--budget", str(_sram(program))]) == 0
  assert f"{program.arena_bytes} B" in capsys.readouterr().out
  assert main([str(blob), "--budget", f"{_sram(program) - 1}B"]) == 2
  err = capsys.readouterr().err
  assert "1 B over" in err and "Traceback" not in err and err.count("\n") == 1
  with pytest.raises(SystemExit) as exit_:
    main([str(blob), "--budget", "12XB"])
  assert exit_.value.code == 2 and "not a size" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_BLOB, reason="lowering.load / Program.save (lowering/blob.py) are "
                    "not in yet: the CLI cannot read a blob")
def test_cli_end_to_end(program, tmp_path):
  blob, png = tmp_path / "model.jtb", tmp_path / "mem.png"
  program.save(blob)
  cmd = [sys.executable, "-m", "lowering.report", str(blob), "--plot", str(png)]
  ok = subprocess.run([*cmd, "--budget", f"{_sram(program)}B"], cwd=ROOT,
                      capture_output=True, text=True)
  assert ok.returncode == 0, ok.stderr
  assert len(_timeline(ok.stdout)) == len(program.train_ops)
  assert f"{program.arena_bytes} B" in ok.stdout
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  over = subprocess.run([*cmd, "--budget", str(_sram(program) - 1)], cwd=ROOT,
                        capture_output=True, text=True)
  assert over.returncode == 2
  assert "1 B over" in over.stderr and "Traceback" not in over.stderr
