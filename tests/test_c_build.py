"""The C runtime's builds: the library references no allocator, stdio or exit and holds no
mutable globals; the host tests pass against the AddressSanitizer + UBSan build; a bounded
libFuzzer session on jt_init finds no crash."""

import os
import subprocess
import sys
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
