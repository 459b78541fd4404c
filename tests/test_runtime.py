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


FLUSH_CODE = """
import torch
from mambadiff.runtime import flush_denormals
torch.set_num_threads(2)
x = torch.full((1 << 20,), 1e-39)  # a float32 denormal; big enough to run on the pool
before = float(torch.tensor(1e-39) * 1.0)
ok = flush_denormals()
after_main = float(torch.tensor(1e-39) * 1.0)
big = (x * 1.0).sum().item()  # parallel elementwise: worker threads too
print(ok, before > 0, after_main == 0.0, big == 0.0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="x86 FTZ/DAZ")
def test_flush_denormals_sets_main_and_worker_threads():
    out = subprocess.run([sys.executable, "-c", FLUSH_CODE], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    if out[0] != "True":
        pytest.skip("CPU without denormals-are-zero support")
    assert out[1:] == ["True", "True", "True"]
