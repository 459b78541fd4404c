"""A multi-megabyte line is cut before it is tokenized (only its first seq_len tokens reach a layout): it
is laid out in milliseconds, with the ids the whole text gives, and normal lines are untouched."""
import json
import random
import time

import pytest

from mambadiff.data.errors import DataError
from mambadiff.data.seq2seq import Seq2SeqDataset, build_example, encode_for_layout

WORDS = ["how", "can", "i", "learn", "python", "quickly", "tokenization", "?", "don't", "naïve", "ਬਬਰ", "e-mail"]


def long_text(n_words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def test_normal_texts_give_the_ids_of_the_whole_text(bert_tok):
    texts = ["How do I learn Python?", "what's the best e-mail client", long_text(200, 1), "a"]
    ids, cut = encode_for_layout(bert_tok, texts, seq_len=64)
    assert ids == bert_tok.encode_batch(texts) and cut == [False] * 4


@pytest.mark.parametrize("text, same_start", [
    (long_text(1_000_000), long_text(2_000)),  # the same first 2,000 words
    ("a." * 2_000_000, "a." * 1_000),          # no space at all: cut inside a word
    ("x" + "  \n " * 1_000_000 + " y z", "x y z"),  # runs of spaces count as one
])
def test_a_multi_megabyte_text_is_fast_and_exact_where_a_layout_reads_it(bert_tok, text, same_start):
    seq_len = 32
    t0 = time.perf_counter()
    (ids,), _ = encode_for_layout(bert_tok, [text], seq_len)
    assert time.perf_counter() - t0 < 1.0  # whole: seconds and gigabytes
    assert ids[:seq_len] == bert_tok.encode(same_start)[:seq_len]


def test_a_dataset_with_a_huge_line_lays_it_out_as_the_whole_text_would(bert_tok):
    pairs = [("how do i learn python?", "what is the best way to learn python?"),
             (long_text(1_200_000), "a short target"), ("why is the sky blue", "what makes the sky blue")]
    t0 = time.perf_counter()
    ds = Seq2SeqDataset(pairs, bert_tok, seq_len=32)
    assert time.perf_counter() - t0 < 2.0
    assert ds.pairs == pairs  # the texts themselves are kept whole
    small = Seq2SeqDataset([pairs[0], (long_text(2_000), pairs[1][1]), pairs[2]], bert_tok, seq_len=32)
    for k in ("input_ids", "input_mask", "attention_mask"):
        assert ds.tensors()[k].equal(small.tensors()[k])  # the same first 2,000 words: the same layout
    assert ds.n_truncated == 1


def test_the_overflow_error_gives_the_count_of_a_cut_text_as_a_lower_bound(bert_tok):
    text = long_text(100_000)
    (ids,), (cut,) = encode_for_layout(bert_tok, [text], 16)
    with pytest.raises(DataError, match=r"src has at least \d+ tokens and trg 1"):
        build_example(ids, [2000], bert_tok, 16, on_overflow="error", where={"cut": ("src",) if cut else ()})


def test_the_trained_vocabulary_is_learnt_from_what_the_model_reads(tmp_path):
    from mambadiff.config import load_config
    from mambadiff.tasks.seq2seq import Seq2SeqConfig, prepare_tokenizer

    rows = [{"src": "how do i learn python?", "trg": "what is the best way to learn python?"}] * 20
    rows.append({"src": long_text(1_000_000), "trg": "short"})
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(Seq2SeqConfig, "demo", [f"run_dir={tmp_path / 'run'}", f"data.path={tmp_path / 'data'}",
                                              "data.tokenizer=trained", "data.vocab_size=200", "data.seq_len=32"])
    t0 = time.perf_counter()
    tok = prepare_tokenizer(cfg, tmp_path / "data")
    assert time.perf_counter() - t0 < 3.0
    assert tok.token_to_id("python") is not None and tok.token_to_id("tokenization") is not None
