"""The C kernels as machines without AVX-512 build them.

``-march=native`` picks the vector paths of the machine running the tests; CI and users' machines may
have only AVX2 (the AVX2 paths of the SSD backward) or no AVX at all (the generic loops, which also
serve float64). Each case builds the library with ``$MAMBADIFF_CFLAGS`` into a fresh cache and runs the
kernel parity tests against it in a child pytest.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# the kernels with instruction-set specific paths (SSD backward steps, conv + SiLU) and the block
# that runs them together
KERNEL_TESTS = ["tests/ssm/test_ssd.py", "tests/ssm/test_conv.py", "tests/ssm/test_norm.py",
                "tests/ssm/test_mamba2.py"]

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="x86 instruction-set variants")


@pytest.mark.parametrize("cflags", ["-march=native -mno-avx512f -fopenmp", "-march=x86-64 -fopenmp"],
                         ids=["avx2-or-less", "no-avx"])
def test_kernel_parity_without_avx512(cflags, tmp_path):
    env = {**os.environ, "MAMBADIFF_CFLAGS": cflags, "MAMBADIFF_CACHE": str(tmp_path)}
    probe = subprocess.run(
        [sys.executable, "-c", "import mambadiff.kernels as c\n"
                               "assert c.load() is not None, c.unavailable_reason()\n"
                               "print(' '.join(c.build_info()['flags']))"],
        env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    if probe.returncode != 0 and "could not build" in probe.stderr:
        pytest.skip(f"this compiler cannot build with {cflags!r}")
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.split()[-len(cflags.split()):] == cflags.split()  # the library under test
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *KERNEL_TESTS],
                         env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.splitlines()[-1]
