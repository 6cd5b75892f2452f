"""Builds the host C runtime (runtime_c/src) as the extension lowering._jaxtiny_c.

`pip install -e .` compiles it in place; lowering/cruntime.py loads it with ctypes. An
editable install does not rebuild it when the C sources change: reinstall then (the
loader warns when the sources are newer than the build).
"""

from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

FLAGS = ["-std=c99", "-O2", "-ffp-contract=off", "-fno-fast-math", "-Wall", "-Wextra",
         "-Wshadow", "-Wconversion"]


class BuildRuntime(build_ext):
  """build_ext with a clear message when there is no working C compiler."""

  def run(self):
    try:
      super().run()
    except Exception as e:  # setuptools raises several types (CompileError, PlatformError...)
      raise SystemExit(
        "jaxtiny: building the C runtime (runtime_c/) failed. It needs a C99 compiler "
        "(e.g. `apt-get install gcc`, or Xcode's command line tools); the compiler said: "
        f"{e}") from None


runtime = Extension(
  "lowering._jaxtiny_c",
  sources=sorted(glob("runtime_c/src/*.c")) + ["runtime_c/python/module.c"],
  include_dirs=["runtime_c/include", "runtime_c/src"],
  extra_compile_args=FLAGS,
  libraries=["m"],
)

setup(ext_modules=[runtime], cmdclass={"build_ext": BuildRuntime})
