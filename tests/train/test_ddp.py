"""Two torchrun processes (gloo) reproduce one process on the same global batch."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def _run(args, tmp, name):
    out = tmp / name
    r = subprocess.run([*args, str(WORKER), str(out), "1"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return torch.load(out / "final.pt")


@pytest.mark.timeout(300)
def test_two_processes_match_one(tmp_path):
    single = _run([sys.executable], tmp_path, "single")
    multi = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"],
                 tmp_path, "ddp")
    for k in single:
        torch.testing.assert_close(multi[k], single[k], rtol=1e-5, atol=1e-6)
