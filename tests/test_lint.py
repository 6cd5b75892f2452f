"""The code stays ruff-clean (configuration in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
  if shutil.which("ruff") is None and subprocess.run(
      [sys.executable, "-m", "ruff", "--version"], capture_output=True).returncode:
    pytest.skip("ruff is not installed")
  r = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT,
                     capture_output=True, text=True)
  assert r.returncode == 0, r.stdout + r.stderr
