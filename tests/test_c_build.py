"""The C runtime's builds: the library references no allocator, stdio or exit and holds no
mutable globals; the host tests pass against the AddressSanitizer + UBSan build; a bounded
libFuzzer session on jt_init finds no crash; CMake builds the library (static and shared),
runs its C tests, installs it for find_package; the PlatformIO manifest matches the
layout."""

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from helpers import need_tool, seed_blobs

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "runtime_c"

def _make(*targets: str, **env: str) -> None:
  need_tool("make")
  r = subprocess.run(["make", "-C", str(RUNTIME), "-s", *targets], capture_output=True,
                     text=True, env={**os.environ, **env})
  assert r.returncode == 0, r.stdout + r.stderr


def test_library_has_no_allocator_stdio_exit_or_mutable_globals():
  need_tool("nm")
  _make("check-symbols")


def test_host_tests_pass_under_address_and_undefined_sanitizers(tmp_path):
  need_tool("gcc")
  _make("asan", CC="gcc")
  # ASan's runtime must come first; libstdc++ with it, or its __cxa_throw interceptor
  # finds nothing to wrap when jaxlib throws.
  preload = [subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True
                            ).stdout.strip() for lib in ("libasan.so", "libstdc++.so")]
  env = {**os.environ, "JAXTINY_RUNTIME_LIB": str(RUNTIME / "build/asan/libjaxtiny.so"),
         "LD_PRELOAD": " ".join(preload), "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
         "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
  tests = sorted(str(p) for p in (ROOT / "tests").glob("test_c_*.py") if p.name != Path(
    __file__).name)
  # Every kernel test, and of the whole programs one of each model with momentum and Adam
  # (the other cases run the same kernels; the suite's time is kept short).
  r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                      "-k", "not c_matches_executor or adam or cosine-momentum", *tests],
                     capture_output=True, text=True, env=env, cwd=ROOT)
  assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]


def test_bounded_fuzz_session_finds_no_crash(tmp_path):
  need_tool("clang")
  _make("fuzz")
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  for name, data in seed_blobs().items():
    (corpus / f"{name}.jtb").write_bytes(data)
  r = subprocess.run([str(RUNTIME / "build/fuzz_init"), str(corpus), "-max_total_time=15",
                      "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/"],
                     capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-4000:]
  assert "Done" in r.stderr


def run_ok(*cmd: str | Path, cwd: Path | None = None) -> str:
  r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd)
  assert r.returncode == 0, f"{cmd}:\n{r.stdout[-4000:]}{r.stderr[-4000:]}"
  return r.stdout


CONSUMER = """\
cmake_minimum_required(VERSION 3.16)
project(consumer LANGUAGES C)
find_package(jaxtiny 0.1 REQUIRED CONFIG)
add_executable(consumer consumer.c)
target_link_libraries(consumer PRIVATE jaxtiny::jaxtiny)
"""
CONSUMER_C = """\
#include <stdio.h>
#include "jaxtiny.h"
int main(void) { return puts(jt_status_str(JT_E_CRC)) < 0; }
"""


def test_cmake_builds_tests_and_installs_the_library(tmp_path):
  for tool in ("cmake", "ctest", "cc"):
    need_tool(tool)
  build, prefix = tmp_path / "build", tmp_path / "prefix"
  run_ok("cmake", "-S", RUNTIME, "-B", build, f"-DCMAKE_INSTALL_PREFIX={prefix}")
  run_ok("cmake", "--build", build, "-j", "2")
  assert (build / "libjaxtiny.a").is_file()
  assert "100% tests passed" in run_ok("ctest", "--output-on-failure", cwd=build)
  run_ok("cmake", "--install", build)
  assert (prefix / "include/jaxtiny.h").is_file() and list(prefix.glob("**/libjaxtiny.a"))
  # a project that finds the installed library
  (tmp_path / "consumer").mkdir()
  (tmp_path / "consumer/CMakeLists.txt").write_text(CONSUMER)
  (tmp_path / "consumer/consumer.c").write_text(CONSUMER_C)
  run_ok("cmake", "-S", tmp_path / "consumer", "-B", tmp_path / "cbuild",
         f"-DCMAKE_PREFIX_PATH={prefix}")
  run_ok("cmake", "--build", tmp_path / "cbuild")
  assert "CRC mismatch" in run_ok(tmp_path / "cbuild/consumer")
  # BUILD_SHARED_LIBS: a shared library exporting the API
  shared = tmp_path / "shared"
  run_ok("cmake", "-S", RUNTIME, "-B", shared, "-DBUILD_SHARED_LIBS=ON",
         "-DJAXTINY_BUILD_TESTS=OFF")
  run_ok("cmake", "--build", shared, "-j", "2")
  lib = next(shared.glob("libjaxtiny.so*"))
  need_tool("nm")
  assert " T jt_init" in run_ok("nm", "-D", "--defined-only", lib)


def _src_filter(src: Path, patterns: list[str]) -> set[str]:
  """The files of `src` a PlatformIO srcFilter selects ("+<glob>" adds, "-<glob>" removes,
  in order; a directory stands for all its files), relative to `src`."""
  chosen: set[str] = set()
  for sign, pattern in re.findall(r"([+-])<([^>]*)>", " ".join(patterns)):
    hits = set()
    for p in src.glob(pattern):
      hits |= {q for q in p.rglob("*") if q.is_file()} if p.is_dir() else {p}
    names = {p.relative_to(src).as_posix() for p in hits}
    chosen = chosen | names if sign == "+" else chosen - names
  return chosen


def test_platformio_manifest_matches_the_layout():
  manifest = json.loads((RUNTIME / "library.json").read_text())
  version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
  cmake_version = re.search(r"project\(jaxtiny VERSION (\S+)", (RUNTIME / "CMakeLists.txt"
                                                                ).read_text())
  assert manifest["name"] == "jaxtiny" and manifest["license"] == "MIT"
  assert manifest["version"] == version and cmake_version and cmake_version[1] == version
  build = manifest["build"]
  src = RUNTIME / build.get("srcDir", "src")
  assert _src_filter(src, build["srcFilter"]) == {p.name for p in RUNTIME.glob("src/*.c")}
  assert (RUNTIME / build.get("includeDir", "include") / manifest["headers"]).is_file()
  # the Makefile's numeric flags (bit-exact results depend on them) and the C standard
  numeric = re.search(r"^NUM := (.*)$", (RUNTIME / "Makefile").read_text(), re.M)
  assert numeric and {"-std=c99", *numeric[1].split()} <= set(build["flags"])
  assert all((RUNTIME / p).exists() for p in manifest["export"]["include"])
