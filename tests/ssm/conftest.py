"""Shared fixtures for the state-space layer tests: deterministic seeds, few threads."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    # The tests use tiny tensors; more threads than cores only adds contention.
    torch.set_num_threads(min(2, torch.get_num_threads()))
