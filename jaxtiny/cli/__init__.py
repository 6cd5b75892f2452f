"""The `jaxtiny` command line: from a Flax training script to a blob, a scheme, a memory
report, training on the host C runtime, firmware under QEMU and an exported C project.

  jaxtiny lower train.py:trainer -o step.jtb --budget 256KB
  jaxtiny search model.jtq --data train.npz --budget 64KB
  jaxtiny report step.jtb | jaxtiny dump step.jtb
  jaxtiny run step.jtb --data train.npz --test test.npz --epochs 3 --plot loss.png --state s.bin
  jaxtiny firmware step.jtb --cpu cortex-m4 -o build/ --run train.npz
  jaxtiny export step.jtb -o board/

Exit status: 0 done, 2 a user error (one line on stderr: what is wrong and what to do).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from jaxtiny.cli.common import USER_ERROR, Parser, UsageError, fail

# subcommand -> the module holding its HELP, add_arguments(parser) and command(args)
COMMANDS = {
  "lower": "jaxtiny.cli.lower", "search": "jaxtiny.cli.search", "report": "lowering.report",
  "dump": "lowering.dump", "run": "jaxtiny.cli.run", "firmware": "lowering.firmware",
  "export": "lowering.export",
}
Command = Callable[[argparse.Namespace], int]


def guarded(command: Command, args: argparse.Namespace) -> int:
  """Run a command; a user error becomes one line and exit status 2, never a traceback."""
  from jaxtiny.errors import JaxtinyError

  try:
    return command(args)
  except (UsageError, JaxtinyError) as e:
    return fail(str(e))
  except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
    return fail(f"{e.strerror}: {e.filename}")
  except ImportError as e:  # the C runtime is not built, or an optional package is missing
    return fail(str(e))
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130


def run_command(prog: str, description: str | None, add_arguments: Callable, command: Command,
                argv: list[str] | None = None) -> int:
  """One command as its own program (`python -m lowering.report`, ...)."""
  p = Parser(prog=prog, description=description,
             formatter_class=argparse.RawDescriptionHelpFormatter)
  add_arguments(p)
  return guarded(command, p.parse_args(argv))


def parser() -> Parser:
  from jaxtiny import __version__

  p = Parser(prog="jaxtiny", description=__doc__,
             formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--version", action="version", version=f"jaxtiny {__version__}")
  sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
  for name, module_name in COMMANDS.items():
    module = importlib.import_module(module_name)
    sp = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(sp)
    sp.set_defaults(jaxtiny_command=module.command)  # a name no option takes
  return p


def main(argv: list[str] | None = None) -> int:
  args = parser().parse_args(argv)
  return guarded(args.jaxtiny_command, args)


__all__ = ["USER_ERROR", "main", "run_command"]
