"""process=masked end to end on tiny built-in data: every backbone trains and generates; MBR; options."""
import json

import pytest
import torch

from mambadiff.config import ConfigError, load_config
from mambadiff.data.seq2seq import load_seq2seq_split
from mambadiff.diffusion.mbr import mbr_select
from mambadiff.tasks.paraphrase import Paraphraser, generate
from mambadiff.tasks.seq2seq import Seq2SeqConfig, load_seq2seq_model, train_seq2seq

TINY = ["data.builtin_train=300", "data.builtin_valid=40", "data.builtin_test=40", "data.vocab_size=300",
        "data.seq_len=40", "data.eval_size=16", "model.emb_dim=32", "model.backbone.d_model=32",
        "model.backbone.n_layers=2", "train.batch_size=16", "train.log_every=2", "train.progress=false",
        "diffusion.steps=100", "diffusion.process=masked", "sample.masked.steps=4", "sample.batch_size=8"]
NO_ATTN = ["model.backbone.attn_layers=[]"]
BACKBONES = {"mamba": NO_ATTN, "mamba2": ["model.backbone.mamba2.headdim=16", *NO_ATTN], "s4d": NO_ATTN, "transformer": NO_ATTN,
             "hybrid": ["model.backbone.name=mamba2", "model.backbone.mamba2.headdim=16", "model.backbone.attn_layers=[1]",
                        "model.backbone.n_heads=2", "model.backbone.ff_dim=64"]}


def tiny_masked(run_dir, backbone, extra=()):
    name = "mamba2" if backbone == "hybrid" else backbone
    return load_config(Seq2SeqConfig, "demo", [f"run_dir={run_dir}", f"model.backbone.name={name}",
                                               "train.steps=2", *TINY, *BACKBONES[backbone], *extra])


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_masked_train_and_generate_every_backbone(tmp_path, backbone):
    cfg = tiny_masked(tmp_path, backbone, ["model.self_condition=true", "sample.masked.forbid_adjacent_repeat=true",
                                           "sample.masked.temperature=0.5", "sample.masked.remask=true"])
    result, _, _ = train_seq2seq(cfg, progress=False)
    assert result.step == 2
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(k in r for r in log if r["split"] == "train" for k in ("loss", "ce", "mask_frac"))
    assert any(r["split"] == "eval" and "ce" in r for r in log)
    model, tok, cfg2 = load_seq2seq_model(tmp_path)
    assert cfg2.diffusion.process == "masked" and cfg2.model.self_condition
    ds = load_seq2seq_split(tmp_path / "data", "test", tok, cfg2.data.seq_len, limit=5)
    recs = generate(model, tok, cfg2, ds, samples=3, mbr=True, progress=False)
    assert len(recs) == 5
    picks = mbr_select([r["samples"] for r in recs])
    for r, pick in zip(recs, picks):
        assert len(r["samples"]) == 3 and r["recover"] == r["samples"][pick]
        assert "[MASK]" not in r["recover"] and r["source"]
    data = ds.tensors()
    para = Paraphraser(model, tok, cfg2)
    draw = lambda settings: para.sample_targets(data["input_ids"], data["input_mask"], settings,  # noqa: E731
                                                torch.Generator().manual_seed(0))  # (b, l)
    ids = draw(para.settings(steps=4))
    target = data["input_mask"].bool()
    same = (ids[:, 1:] == ids[:, :-1]) & target[:, 1:] & target[:, :-1]  # forbid_adjacent_repeat
    assert not (same & (ids[:, 1:] != tok.pad_id) & (ids[:, 1:] != tok.sep_id)).any()
    assert not (ids[target] == tok.mask_id).any()
    # one commit per step (40 steps >= target length, no remasking): no word pair twice in an output
    ids = draw(para.settings(steps=40, forbid_repeat_bigram=True, remask=False))
    special = {tok.pad_id, tok.sep_id, tok.cls_id}
    for row, keep in zip(ids.tolist(), target.tolist()):
        words = [t for t, k in zip(row, keep) if k]
        pairs = [p for p in zip(words[:-1], words[1:]) if not special & set(p)]
        assert len(pairs) == len(set(pairs)), words
    # a length beam of 3 keeps one of the lengths n - 1, n, n + 1 of the plain fixed-length decode
    ends = lambda ids: (ids.masked_fill(~target, -1) == tok.sep_id).long().argmax(-1)  # noqa: E731  (b,)
    plain, beam = (draw(para.settings(steps=4, predict_length=True, length_beam=width, temperature=0.0))
                   for width in (1, 3))
    assert ((ends(beam) - ends(plain)).abs() <= 1).all()
    assert not (beam[target] == tok.mask_id).any()


def test_masked_generation_is_deterministic_under_a_seed(tmp_path):
    cfg = tiny_masked(tmp_path, "transformer", ["sample.masked.temperature=1.0"])
    _, model, tok = train_seq2seq(cfg, progress=False)
    ds = load_seq2seq_split(tmp_path / "data", "test", tok, cfg.data.seq_len, limit=6)
    runs = [generate(model, tok, cfg, ds, seed=s, progress=False) for s in (5, 5)]
    assert runs[0] == runs[1]


def test_process_options_are_checked():
    with pytest.raises((ConfigError, ValueError), match="diffusion.process"):
        load_config(Seq2SeqConfig, "demo", ["diffusion.process=absorbing"])
    with pytest.raises((ConfigError, ValueError), match="masked_weighting"):
        load_config(Seq2SeqConfig, "demo", ["diffusion.masked_weighting=nope"])
    with pytest.raises((ConfigError, ValueError), match="embedding_init"):
        load_config(Seq2SeqConfig, "demo", ["model.embedding_init=glove"])
