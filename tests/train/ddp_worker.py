"""Run by tests/train/test_ddp.py under torchrun (2 CPU processes, gloo) or as a single process."""
import sys

import torch
from torch import nn

from mambadiff.train import TrainConfig, Trainer
from mambadiff.train.distributed import cleanup, setup_distributed

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from test_loop import ToyTask  # noqa: E402

if __name__ == "__main__":
    out, accum = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    info = setup_distributed("cpu")
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))  # no dropout: ranks differ there
    cfg = TrainConfig(steps=5, batch_size=8, grad_accum=accum, lr=1e-2, warmup_steps=1, ema_decay=0.5,
                      progress=False, seed=3, device="cpu")
    trainer = Trainer(model, ToyTask(), cfg, out, {}, dist_info=info)
    trainer.fit()
    if info.is_main:
        torch.save(trainer.model.state_dict(), f"{out}/final.pt")
    cleanup()
