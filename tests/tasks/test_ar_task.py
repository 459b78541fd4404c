"""The autoregressive paraphraser: target-only loss, training end to end on a copy task, decoding
(greedy and beam) into the records `mambadiff generate` writes, and its commands."""
from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from mambadiff.cli import main
from mambadiff.config import load_config
from mambadiff.data.seq2seq import collate, load_seq2seq_split
from mambadiff.data.tokenizer import train_tokenizer
from mambadiff.tasks.ar import ARConfig, ARDecodeConfig, build_ar_model, load_ar_model, paraphrase_dataset, \
    prompt_ids, target_loss, train_ar

WORDS = "red green blue cat dog bird sun moon tree lake".split()


@pytest.fixture(scope="module")
def copy_folder(tmp_path_factory):
    """A data folder whose targets copy their sources: 4-6 words of a 10-word vocabulary."""
    folder = tmp_path_factory.mktemp("copy")
    rng = random.Random(0)
    for split, n in (("train", 600), ("valid", 40), ("test", 40)):
        rows = []
        for _ in range(n):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 6)))
            rows.append(json.dumps({"src": text, "trg": text}))
        (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def _cfg(folder, run_dir, *overrides) -> ARConfig:
    return load_config(ARConfig, "qqp-ar-mamba2-cpu", [
        f"data.path={folder}", f"run_dir={run_dir}", "data.seq_len=20", "data.vocab_size=64", "data.eval_size=32",
        "embedding_init=random", "model.backbone.d_model=64", "model.backbone.n_layers=2", "model.backbone.dropout=0",
        "train.batch_size=32", "train.steps=600", "train.max_minutes=0", "train.lr_decay_clock=steps",
        "train.eval_every=0", "train.save_every=0", "train.ema_decay=0", "train.warmup_steps=20",
        "train.progress=false", "train.lr=3e-3", *overrides])


def test_loss_is_the_target_side_cross_entropy(copy_folder, tmp_path):
    cfg = _cfg(copy_folder, tmp_path / "r")
    tok = train_tokenizer(WORDS, vocab_size=64)
    model = build_ar_model(cfg, tok)
    data = load_seq2seq_split(copy_folder, "valid", tok, 20, layout="compact")
    batch = collate([data[i] for i in range(5)])
    loss, n = target_loss(model, batch)
    logits = model(batch["input_ids"], batch["attention_mask"].bool())  # (b, l, v)
    nats, count = 0.0, 0
    for row in range(5):
        ids, inp, att = batch["input_ids"][row], batch["input_mask"][row], batch["attention_mask"][row]
        for p in range(1, len(ids)):
            if inp[p] and att[p]:  # a target token or the closing [SEP]
                nats += float(F.cross_entropy(logits[row, p - 1][None], ids[p][None]))
                count += 1
    assert n == count and float(loss) == pytest.approx(nats / count, rel=1e-5)
    prompts, targets = prompt_ids(data)
    assert tok.decode(prompts[0], skip_special=True) == data.sources[0]
    assert prompts[0][0] == tok.cls_id and prompts[0][-1] == tok.sep_id and targets[0] == prompts[0][1:-1]


def test_learns_to_copy_and_decodes_greedy_and_beam(copy_folder, tmp_path):
    result, model, tok = train_ar(_cfg(copy_folder, tmp_path / "run"), verbose=False)
    assert result.last_eval["loss"] < 0.1
    data = load_seq2seq_split(copy_folder, "test", tok, 20, layout="compact")
    for beam in (1, 3):
        records = [r for b in paraphrase_dataset(model, tok, data, ARDecodeConfig(beam=beam, batch_size=16), 20)
                   for r in b]
        assert len(records) == 40 and set(records[0]) == {"source", "reference", "recover"}
        exact = sum(r["recover"] == r["source"] for r in records) / len(records)
        assert exact >= 0.9, (beam, records[:3])


def test_cli_train_and_generate(copy_folder, tmp_path):
    run = tmp_path / "cli"
    runner = CliRunner()
    out = runner.invoke(main, ["ar", "train", "--config", "qqp-ar-mamba2-cpu", f"data.path={copy_folder}",
                               f"run_dir={run}", "data.seq_len=20", "data.vocab_size=64", "embedding_init=random",
                               "model.backbone.d_model=32", "model.backbone.n_layers=1", "train.steps=5",
                               "train.max_minutes=0", "train.lr_decay_clock=steps", "train.batch_size=8",
                               "train.progress=false", "train.eval_every=0", "train.save_every=0"])
    assert out.exit_code == 0, out.output
    dest = tmp_path / "out.jsonl"
    out = runner.invoke(main, ["ar", "generate", "--checkpoint", str(run), "--data", str(copy_folder), "--split",
                               "valid", "--out", str(dest), "--beam", "2", "--limit", "5"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in dest.read_text().splitlines()]
    assert len(rows) == 5 and all(set(r) == {"source", "reference", "recover"} for r in rows)
    model, _, cfg = load_ar_model(run)
    assert cfg.decode.beam == 4 and not model.training
    out = runner.invoke(main, ["ar", "generate", "--checkpoint", str(run), "--data", str(copy_folder), "--out",
                               str(dest), "--beam", "0"])
    assert out.exit_code != 0 and "--beam" in out.output


def test_config_refuses_the_diffuseq_layout():
    with pytest.raises(ValueError, match="data.layout must be compact"):
        load_config(ARConfig, "qqp-ar-transformer-cpu", ["data.layout=diffuseq"]).validate()
