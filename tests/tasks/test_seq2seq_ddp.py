"""`torchrun --nproc-per-node 2 -m mambadiff train` (gloo, CPU) matches one process on the same global batch."""
import subprocess
import sys

import pytest
from safetensors.torch import load_file
import torch

ARGS = ["train", "--config", "demo", "train.steps=3", "train.batch_size=8", "train.progress=false",
        "data.builtin_train=200", "data.builtin_valid=20", "data.builtin_test=20", "data.vocab_size=200",
        "data.seq_len=32", "data.eval_size=8", "model.emb_dim=16", "model.backbone.d_model=16",
        "model.backbone.n_layers=1", "model.dropout=0.0", "diffusion.steps=50", "train.num_threads=1",
        "train.device=cpu", "diffusion.process=gaussian", "model.backbone.attn_layers=[]"]  # gloo on CPU, also on a machine with (fewer) GPUs


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backbone", ["mamba", "transformer"])
def test_ddp_two_processes_match_one(tmp_path, backbone):
    outs = {}
    for name, launcher in (("single", [sys.executable, "-m", "mambadiff"]),
                           ("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc-per-node", "2", "-m", "mambadiff"])):
        run = tmp_path / name
        r = subprocess.run([*launcher, *ARGS, f"run_dir={run}", f"model.backbone.name={backbone}"],
                           capture_output=True, text=True, timeout=500)
        assert r.returncode == 0, r.stderr[-3000:]
        outs[name] = load_file(str(run / "checkpoints" / "step_00000003" / "model.safetensors"))
    for k, v in outs["single"].items():
        torch.testing.assert_close(outs["ddp"][k], v, rtol=1e-4, atol=1e-5, msg=k)
