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


@pytest.mark.timeout(300)
def test_ranks_stop_together_when_their_clocks_disagree_on_the_time_budget(tmp_path):
    """One rank past train.max_minutes, the other not: both stop at the same step (no rank waits alone
    in a collective) and the run saves."""
    out = tmp_path / "skewed"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(WORKER), str(out), "1", "skewed-clock"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    steps = [int((out / f"stopped_at_rank{rank}").read_text()) for rank in (0, 1)]
    assert steps[0] == steps[1] < 50
    assert (out / "final.pt").is_file()
