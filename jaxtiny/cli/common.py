"""What every command of the `jaxtiny` command line shares: one-line user errors with exit
status 2, size and path arguments, the parser that reports a bad argument on one line."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import NoReturn

KB = 1024
_UNITS = {"": 1, "b": 1, "kb": KB, "kib": KB, "mb": KB * KB, "mib": KB * KB}
USER_ERROR = 2  # the exit status of a user error (a bad argument, file or budget)


class UsageError(Exception):
  """A user error a command reports as one line (exit status 2), never as a traceback."""


def fail(message: str) -> int:
  """Print `error: message` on one line to stderr; the exit status of a user error."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  return USER_ERROR


def parse_size(text: str | int) -> int:
  """'256KB' -> 262144. Units B, KB/KiB, MB/MiB (KB = 1024 bytes) or none (bytes)."""
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", str(text).lower())
  if m is None or m.group(2) not in _UNITS:
    raise ValueError(f"not a size: {text!r} (examples: 262144, 256KB, 256KiB, 1.5MB; "
                     "KB = 1024 bytes)")
  n = float(m.group(1)) * _UNITS[m.group(2)]
  if n != int(n):
    raise ValueError(f"not a whole number of bytes: {text!r}")
  return int(n)


def size_arg(text: str) -> int:
  """argparse type of a byte size (parse_size)."""
  try:
    return parse_size(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def positive_int(text: str) -> int:
  try:
    n = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
  if n < 1:
    raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
  return n


def existing_file(path: Path, what: str) -> Path:
  """`path` if it is a file, else a UsageError naming `what` it should be."""
  if not path.exists():
    raise UsageError(f"{what} {path} does not exist")
  if not path.is_file():
    raise UsageError(f"{what} {path} is not a file")
  return path


def output_file(path: Path, what: str) -> Path:
  """`path` if a file can be written there (its folder exists), else a UsageError."""
  folder = path.resolve().parent
  if not folder.is_dir():
    raise UsageError(f"{what} {path}: the folder {folder} does not exist")
  if path.is_dir():
    raise UsageError(f"{what} {path} is a folder, not a file")
  return path


class Parser(argparse.ArgumentParser):
  """An ArgumentParser whose errors are one line and exit status 2 (argparse's status)."""

  def error(self, message: str) -> NoReturn:
    print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
    sys.exit(USER_ERROR)
