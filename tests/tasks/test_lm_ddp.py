"""`torchrun --nproc-per-node 2 -m mambadiff lm train` (gloo, CPU) matches one process on the same global batch."""
import subprocess
import sys

import pytest
from safetensors.torch import load_file
import torch

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13}.\n" for i in range(200))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backbone", ["mamba2", "transformer"])
def test_lm_ddp_two_processes_match_one(tmp_path, backbone):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    args = ["lm", "train", "--config", "shakespeare-char", f"data.train={text}", "data.block_size=32",
            "data.eval_batch_size=8", "data.max_valid_tokens=256", "train.steps=3", "train.batch_size=8",
            "train.warmup_steps=1", "train.eval_every=3", "train.progress=false", "train.num_threads=1",
            "train.device=cpu", "model.backbone.d_model=16", "model.backbone.n_layers=1", "model.backbone.dropout=0.0",
            f"model.backbone.name={backbone}"]
    outs = {}
    for name, launcher in (("single", [sys.executable, "-m", "mambadiff"]),
                           ("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc-per-node", "2", "-m", "mambadiff"])):
        run = tmp_path / name
        r = subprocess.run([*launcher, *args, f"run_dir={run}"], capture_output=True, text=True, timeout=500)
        assert r.returncode == 0, r.stderr[-3000:]
        outs[name] = load_file(str(run / "checkpoints" / "step_00000003" / "model.safetensors"))
    assert outs["single"] and outs["single"].keys() == outs["ddp"].keys()
    for k, v in outs["single"].items():
        torch.testing.assert_close(outs["ddp"][k], v, rtol=1e-4, atol=1e-5, msg=k)
