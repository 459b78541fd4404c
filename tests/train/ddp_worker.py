"""Run by tests/train/test_ddp.py under torchrun (2 CPU processes, gloo) or as a single process."""
import sys
from pathlib import Path

import torch
from torch import nn

from mambadiff.train import TrainConfig, Trainer
from mambadiff.train.distributed import cleanup, setup_distributed

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from test_loop import ToyTask  # noqa: E402

class SkewedClock:
    """Rank 0's clock runs 30 s per reading, the others' stand still: the ranks disagree on the deadline."""

    def __init__(self, rank: int):
        self.rank, self.now = rank, 0.0

    def __call__(self) -> float:
        self.now += 30.0 if self.rank == 0 else 0.0
        return self.now


if __name__ == "__main__":
    out, accum = sys.argv[1], int(sys.argv[2])
    skewed = len(sys.argv) > 3 and sys.argv[3] == "skewed-clock"
    torch.set_num_threads(1)
    info = setup_distributed("cpu")
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))  # no dropout: ranks differ there
    cfg = TrainConfig(steps=50 if skewed else 5, batch_size=8, grad_accum=accum, lr=1e-2, warmup_steps=1,
                      ema_decay=0.5, progress=False, seed=3, device="cpu", max_minutes=2.0 if skewed else 0.0)
    extra = {"clock": SkewedClock(info.rank)} if skewed else {}
    trainer = Trainer(model, ToyTask(), cfg, out, {}, dist_info=info, **extra)
    result = trainer.fit()
    if skewed:
        (Path(out) / f"stopped_at_rank{info.rank}").write_text(str(result.step))
    if info.is_main:
        torch.save(trainer.model.state_dict(), f"{out}/final.pt")
    cleanup()
