"""Shared fixtures for the state-space layer tests: deterministic seeds, few threads.

``MAMBADIFF_TEST_ALL_THREADS=1`` makes every C kernel split its work over all torch threads however
small the inputs (test_kernel_isa.py runs the kernel tests that way at 2 threads), so the tiny test
shapes exercise the threaded task splits and reductions.
"""
from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    # The tests use tiny tensors; more threads than cores only adds contention.
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _all_threads(monkeypatch):
    if os.environ.get("MAMBADIFF_TEST_ALL_THREADS") == "1":
        import mambadiff.ssm.conv as conv
        import mambadiff.ssm.norm as norm
        import mambadiff.ssm.scan.cpu as scan_cpu  # the selective-scan wrapper
        import mambadiff.ssm.ssd as ssd

        for module in (conv, norm, scan_cpu, ssd):
            monkeypatch.setattr(module, "MIN_WORK_PER_THREAD", 1)
    yield
