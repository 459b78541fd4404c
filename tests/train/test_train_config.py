"""Config values out of range are errors naming the key, at construction, and from the CLI."""
import pytest
import torch
from click.testing import CliRunner

from mambadiff.cli import main
from mambadiff.config import load_config
from mambadiff.train import TrainConfig
from mambadiff.train.distributed import setup_distributed


@pytest.mark.parametrize("key, value", [
    ("log_every", 0), ("save_every", -1), ("eval_every", -2), ("keep_checkpoints", -1), ("warmup_steps", -1),
    ("grad_clip", -0.5), ("ema_decay", 1.5), ("ema_decay", -0.1), ("max_minutes", -1.0), ("lr", 0.0),
    ("lr", float("nan")), ("weight_decay", -1e-3), ("steps", 0), ("batch_size", -8), ("num_threads", -1),
    ("device", "tpu"), ("precision", "fp8"), ("lr_decay", "step"),
])
def test_bad_train_value_names_the_key(key, value):
    with pytest.raises(ValueError, match=rf"train\.{key}\b"):
        TrainConfig(**{key: value})


def test_good_values_are_accepted():
    TrainConfig(save_every=0, eval_every=0, keep_checkpoints=0, warmup_steps=0, grad_clip=0.0, ema_decay=0.0,
                max_minutes=0.0, device="cuda:1")


def test_config_files_and_overrides_are_checked():
    from mambadiff.tasks.classify import ClassifyConfig
    from mambadiff.tasks.seq2seq import Seq2SeqConfig

    for schema in (Seq2SeqConfig, ClassifyConfig):
        with pytest.raises(ValueError, match=r"train\.ema_decay"):
            load_config(schema, None, ["train.ema_decay=1.5"])
    for override, key in [("data.vocab_size=3", "data.vocab_size"), ("data.eval_size=-1", "data.eval_size"),
                          ("data.max_train=-5", "data.max_train"), ("data.seq_len=0", "data.seq_len"),
                          ("data.builtin_train=0", "data.builtin_train"), ("data.layout=wide", "data.layout")]:
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            load_config(Seq2SeqConfig, None, [override])
    for override, key in [("data.vocab_size=2", "data.vocab_size"), ("data.max_train=-1", "data.max_train")]:
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            load_config(ClassifyConfig, None, [override])


@pytest.mark.parametrize("override, key", [("train.log_every=0", "train.log_every"),
                                           ("train.device=tpu", "train.device"),
                                           ("train.max_minutes=-1", "train.max_minutes")])
def test_cli_reports_bad_train_values_without_traceback(tmp_path, override, key):
    tiny = ["train.steps=1", "data.builtin_train=40", "data.builtin_valid=8", "data.builtin_test=8",
            "data.vocab_size=100", "model.emb_dim=16", "model.backbone.d_model=16", "model.backbone.n_layers=1",
            "train.batch_size=4", "diffusion.steps=10"]
    r = CliRunner().invoke(main, ["train", "--config", "demo", f"run_dir={tmp_path / 'run'}", *tiny, override])
    assert r.exit_code != 0 and key in r.output
    assert "Traceback" not in r.output and not isinstance(r.exception, (ZeroDivisionError, RuntimeError))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="train.device"):
        setup_distributed("cuda")
