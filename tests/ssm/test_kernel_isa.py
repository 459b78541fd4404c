"""The C kernels as other machines build them: each instruction-set path x OpenMP thread counts 1, 2.

``-march=native`` picks the vector paths of the machine running the tests; CI and users' machines may
have AVX-512, only AVX2 (the AVX2 paths of the SSD backward) or no AVX at all (the generic loops,
which also serve float64). Each path is built with ``$MAMBADIFF_CFLAGS`` into its own fresh cache
(once, shared by both thread counts; the path this process already loaded reuses its library), then a child pytest runs a fast representative subset of the
kernel parity tests against it with ``OMP_NUM_THREADS`` = 1 or 2 and every kernel splitting its work
over all threads however small the inputs (``MAMBADIFF_TEST_ALL_THREADS``, see conftest.py).
Paths the CPU cannot run are skipped.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from mambadiff import kernels

REPO = Path(__file__).resolve().parents[2]
# path -> (words of $MAMBADIFF_CFLAGS, CPU flags it needs)
ISA_PATHS = {
    "generic": ("-march=x86-64 -fopenmp", ()),
    "avx2": ("-march=x86-64 -mavx2 -mfma -fopenmp", ("avx2", "fma")),
    "avx512": ("-march=native -mprefer-vector-width=512 -fopenmp", ("avx512f",)),
}
# A fast representative subset: each kernel's float32 parity draws or vector-path shapes (blocks,
# tails, chunk seams), float64 chunk seams, the same-kernel 1 vs 2 thread checks and the SSD
# backward's float32 accuracy under large and underflowing decays (p = 16, 8, 3: the AVX-512, AVX2
# and generic steps). About 10 s of CPU per child.
KERNEL_TESTS = [
    "tests/ssm/test_scan.py::test_matches_reference[cpu-f32]",
    "tests/ssm/test_scan.py::test_cpu_threads_and_batch_do_not_change_results[1]",
    "tests/ssm/test_ssd.py::test_float32_vector_paths",
    "tests/ssm/test_ssd.py::test_chunk_seams",
    "tests/ssm/test_ssd.py::test_two_threads_match_one",
    "tests/ssm/test_ssd.py::test_final_state_with_unequal_lengths",
    "tests/ssm/test_conv.py::test_chunk_seams_float64",
    "tests/ssm/test_conv.py::test_two_threads_match_one",
    "tests/ssm/test_norm.py::test_kernel_matches_torch",
    "tests/ssm/test_norm.py::test_two_threads_match_one",
    "tests/ssm/test_kernel_accuracy.py::test_ssd_float32_matches_float64",
]
KERNEL_FILTER = "not chunked and not moderate and not wide"  # -k: in test_kernel_accuracy.py

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="x86 instruction-set variants")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@pytest.fixture(scope="module")
def built_paths(tmp_path_factory):
    """path name -> cache folder holding the library built with that path's flags (built on first
    request; a skip reason string when this CPU or compiler cannot run it)."""
    cache = {}

    def get(name):
        if name not in cache:
            cflags, needs = ISA_PATHS[name]
            missing = [f for f in needs if f not in _cpu_flags()]
            if missing:
                cache[name] = f"this CPU lacks {', '.join(missing)}"
                return cache[name]
            info = kernels.build_info()
            if info and list(info["flags"])[-len(cflags.split()):] == cflags.split():
                cache[name] = Path(info["path"]).parent  # same flags, same cache key: no rebuild
                return cache[name]
            folder = tmp_path_factory.mktemp(f"kernels-{name}")
            env = {**os.environ, "MAMBADIFF_CFLAGS": cflags, "MAMBADIFF_CACHE": str(folder)}
            probe = subprocess.run(
                [sys.executable, "-c", "import mambadiff.kernels as k\n"
                                       "assert k.load() is not None, k.unavailable_reason()\n"
                                       "print(' '.join(k.build_info()['flags']))"],
                env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
            if probe.returncode != 0 and "could not build" in probe.stderr:
                cache[name] = f"this compiler cannot build with {cflags!r}"
                return cache[name]
            assert probe.returncode == 0, probe.stderr[-2000:]
            assert probe.stdout.split()[-len(cflags.split()):] == cflags.split()  # the library under test
            cache[name] = folder
        return cache[name]

    return get


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("isa", list(ISA_PATHS))
def test_kernel_parity_per_isa_and_threads(isa, threads, built_paths):
    folder = built_paths(isa)
    if isinstance(folder, str):
        pytest.skip(folder)
    env = {**os.environ, "MAMBADIFF_CFLAGS": ISA_PATHS[isa][0], "MAMBADIFF_CACHE": str(folder),
           "OMP_NUM_THREADS": str(threads), "MAMBADIFF_TEST_ALL_THREADS": "1",
           # idle OpenMP threads sleep instead of spinning: with every tiny call split over two
           # threads, spinning on a busy machine made a child several times slower (same results)
           "OMP_WAIT_POLICY": "PASSIVE"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          "-k", KERNEL_FILTER, *KERNEL_TESTS],
                         env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary, summary
