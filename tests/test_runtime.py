"""Allocator tuning (``mambadiff.runtime``): applied in a fresh process, opt-out honoured."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = ("from mambadiff.runtime import tune_cpu_allocator; import torch; "
        "ok = tune_cpu_allocator(); x = torch.ones(64, 1024, 256); y = (x * 2).sum(); "
        "print(ok, float(y))")


def _run(env_extra):
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env,
                         timeout=120, check=True).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tuning_applies_and_large_tensors_still_work():
    ok, total = _run({})
    assert ok and total == 2.0 * 64 * 1024 * 256


def test_opt_out_leaves_allocator_alone():
    ok, total = _run({"MAMBADIFF_MALLOC_TUNING": "0"})
    assert not ok and total == 2.0 * 64 * 1024 * 256
