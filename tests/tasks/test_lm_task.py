"""The language-model task: tokenizers, splits, scoring, training, resume, eval and generate commands."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from click.testing import CliRunner

from mambadiff.cli import main
from mambadiff.config import load_config
from mambadiff.data.errors import DataError
from mambadiff.data.lm_tokenizers import (BPETokenizer, ByteTokenizer, CharTokenizer, build_lm_tokenizer,
                                          load_lm_tokenizer)
from mambadiff.models.backbones import BackboneConfig
from mambadiff.models.lm import CausalLM, CausalLMConfig
from mambadiff.tasks.lm import LMConfig, LMDataConfig, LMTask, load_lm, load_streams, score_stream, train_lm

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll: Speak, speak. Ça va? 日本\n" * 40


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", ["bytes", "chars", "bpe"])
def test_tokenizers_are_lossless_and_count_bytes(kind, tmp_path):
    tok = build_lm_tokenizer(kind, [TEXT], vocab_size=300)
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT
    assert sum(tok.token_bytes[i] for i in ids) == len(TEXT.encode("utf-8"))  # bits per byte are exact
    assert max(ids) < tok.vocab_size and tok.eos_id < tok.vocab_size
    back = load_lm_tokenizer(tok.save(tmp_path / kind))
    assert back.encode(TEXT) == ids and back.vocab_size == tok.vocab_size


def test_char_tokenizer_maps_unseen_characters_to_unk():
    tok = CharTokenizer.from_texts(["abc"])
    assert tok.encode("abz") == [2, 3, tok.unk_id]
    assert isinstance(ByteTokenizer().encode("z")[0], int) and BPETokenizer  # imported kinds exist


def test_text_file_splits_like_nanogpt(text_file):
    d = LMDataConfig(train=str(text_file), tokenizer="chars", block_size=16)
    streams, tok = load_streams(d)
    cut = int(len(TEXT) * 0.9)
    assert tok.decode(streams.train.tolist()) == TEXT[:cut]
    assert tok.decode(streams.valid.tolist()) == TEXT[cut:]


def test_jsonl_documents_are_separated_by_eos(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"review {i}"}) + "\n" for i in range(10)), encoding="utf-8")
    streams, tok = load_streams(LMDataConfig(train=str(path), block_size=4, valid_fraction=0.2))
    train = streams.train.tolist()
    assert train.count(tok.eos_id) == 8 and tok.decode(train[:8]) == "review 0"
    assert tok.decode(streams.valid.tolist()) == "review 8review 9"


def test_bad_jsonl_names_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"body": "no text"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl, line 2, field 'text': missing"):
        load_streams(LMDataConfig(train=str(path), block_size=2))


def test_score_stream_matches_a_direct_computation():
    torch.manual_seed(0)
    model = CausalLM(CausalLMConfig(vocab_size=11, backbone=BackboneConfig(name="mamba", d_model=16, n_layers=1)))
    stream = torch.randint(0, 11, (50,))
    scores = score_stream(model, stream, block_size=8, token_bytes=[2] * 11, batch_size=3)
    nats = 0.0
    for start in range(0, 49, 8):  # windows of 9 tokens overlapping by one; the last is shorter
        w = stream[start:start + 9]
        with torch.no_grad():
            logits = model(w[None, :-1])[0]
        nats += float(torch.nn.functional.cross_entropy(logits, w[1:], reduction="sum"))
    assert scores["tokens"] == 49
    assert scores["loss"] == pytest.approx(nats / 49, rel=1e-5)
    assert scores["bpb"] == pytest.approx(nats / math.log(2) / 98, rel=1e-5)


def _cfg(text_file, tmp_path, *overrides):
    return load_config(LMConfig, "shakespeare-char", [
        f"data.train={text_file}", f"run_dir={tmp_path / 'run'}", "data.block_size=16", "model.backbone.d_model=32",
        "model.backbone.n_layers=2", "train.batch_size=8", "train.steps=40", "train.eval_every=0",
        "train.warmup_steps=5", "train.progress=false", "train.lr=3e-3", *overrides])


def test_training_learns_and_resume_is_exact(text_file, tmp_path):
    cfg = _cfg(text_file, tmp_path, "train.save_every=20")
    result, model, tok, metrics = train_lm(cfg, verbose=False)
    uniform = math.log(tok.vocab_size)
    assert metrics["valid"]["loss"] < uniform - 0.8  # learnt the characters' frequencies at least
    saved = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert saved["valid"]["loss"] == pytest.approx(metrics["valid"]["loss"])
    # resume from the step-20 checkpoint of a copy: the same weights as the uninterrupted run
    copy = tmp_path / "run2"
    shutil.copytree(tmp_path / "run", copy)
    shutil.rmtree(copy / "checkpoints" / "step_00000040")
    _, model2, _, _ = train_lm(_cfg(text_file, tmp_path, f"run_dir={copy}"), resume=True, verbose=False)
    for (k, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert torch.equal(a, b), k


def test_resume_on_other_data_is_refused(text_file, tmp_path):
    train_lm(_cfg(text_file, tmp_path, "train.steps=5"), verbose=False)
    text_file.write_text(TEXT[: len(TEXT) // 2], encoding="utf-8")
    with pytest.raises(ValueError, match="trained on"):
        train_lm(_cfg(text_file, tmp_path, "train.steps=10"), resume=True, verbose=False)


def test_task_windows_follow_the_stride(text_file):
    cfg = LMConfig(data=LMDataConfig(train=str(text_file), tokenizer="bytes", block_size=8, stride=4))
    streams, tok = load_streams(cfg.data)
    task = LMTask(cfg, streams, tok.token_bytes)
    assert task.num_train_examples() == (len(streams.train) - 9) // 4 + 1
    batch = task.get_batch([0, 2], "cpu")["windows"]
    assert torch.equal(batch[1], streams.train[8:17])


def test_cli_train_eval_generate(text_file, tmp_path):
    run = tmp_path / "cli"
    runner = CliRunner()
    args = ["lm", "train", "--config", "shakespeare-char", f"data.train={text_file}", f"run_dir={run}",
            "data.block_size=16", "model.backbone.d_model=32", "model.backbone.n_layers=1", "train.steps=10",
            "train.batch_size=4", "train.eval_every=0", "train.progress=false"]
    out = runner.invoke(main, args)
    assert out.exit_code == 0, out.output
    assert "bits/byte" in out.output
    out = runner.invoke(main, ["lm", "eval", "--checkpoint", str(run), "--json", str(tmp_path / "e.json")])
    assert out.exit_code == 0, out.output
    scores = json.loads((tmp_path / "e.json").read_text())
    assert scores["bpb"] > 0 and scores["loss"] == pytest.approx(
        json.loads((run / "final_metrics.json").read_text())["valid"]["loss"], rel=1e-6)
    out = runner.invoke(main, ["lm", "generate", "--checkpoint", str(run), "--prompt", "First",
                               "--max-new-tokens", "12", "--temperature", "0"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("First") and len(out.output.rstrip("\n")) >= len("First")
    # greedy generation is the argmax of the parallel forward, token after token
    model, tok, _ = load_lm(run)
    ids = tok.encode("First")
    for _ in range(12):
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert out.output[:-1] == tok.decode(ids)


def test_cli_refuses_a_diffusion_run_and_bad_data(tmp_path):
    step = tmp_path / "fake"  # a checkpoint folder of a diffusion run
    step.mkdir()
    (step / "model.safetensors").write_bytes(b"")
    (step / "config.json").write_text(json.dumps({"data": {"train": "x.jsonl", "seq_len": 64}}))
    out = CliRunner().invoke(main, ["lm", "eval", "--checkpoint", str(tmp_path / "fake")])
    assert out.exit_code != 0 and "not a language-model run" in out.output
    out = CliRunner().invoke(main, ["lm", "train", "--config", "shakespeare-char", f"data.train={tmp_path}/none.txt",
                                    f"run_dir={tmp_path / 'r'}"])
    assert out.exit_code != 0 and "none.txt: no such file" in out.output
    assert not (tmp_path / "r" / "tokenizer").exists()
