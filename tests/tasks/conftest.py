"""A tiny trained diffusion checkpoint shared by the generation tests (trained once per session)."""
import pytest

from mambadiff.config import load_config

TINY_SEQ2SEQ = ["data.builtin_train=400", "data.builtin_valid=40", "data.builtin_test=40", "data.vocab_size=300",
                "data.seq_len=40", "data.eval_size=0", "model.emb_dim=32", "model.backbone.d_model=32",
                "model.backbone.n_layers=1", "train.batch_size=16", "train.log_every=5", "train.progress=false",
                "diffusion.steps=100", "sample.gaussian.steps=5", "sample.limit=0", "sample.batch_size=8",
                "model.backbone.name=mamba", "model.backbone.attn_layers=[]", "diffusion.process=gaussian",
                "train.steps=2"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The run folder of a 2-step mamba model (T = 100) on the built-in corpus (valid.jsonl has 40 pairs)."""
    from mambadiff.tasks.seq2seq import Seq2SeqConfig, train_seq2seq
    run_dir = tmp_path_factory.mktemp("tiny_seq2seq") / "run"
    cfg = load_config(Seq2SeqConfig, "demo", [f"run_dir={run_dir}", *TINY_SEQ2SEQ])
    train_seq2seq(cfg, progress=False)
    return run_dir
