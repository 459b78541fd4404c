"""DiffuSeq jsonl reading, sequence layout, truncation, dataset/collate."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from mambadiff.data import DataError
from mambadiff.data.seq2seq import (
    Seq2SeqDataset,
    build_example,
    collate,
    load_seq2seq_split,
    read_seq2seq_jsonl,
    source_length,
    truncated_lengths,
)
from mambadiff.data.tokenizer import bert_tokenizer


# ------------------------------------------------------------------------------------------
# Layout
# ------------------------------------------------------------------------------------------
def test_layout_hand_example(tok):
    src, trg = tok.encode("how are you ?"), tok.encode("what is up ?")
    assert src == [2129, 2024, 2017, 1029] and trg == [2054, 2003, 2039, 1029]
    ex = build_example(src, trg, tok, seq_len=16)
    # DiffuSeq: [CLS] x [SEP] [SEP] [CLS] y [SEP] [PAD]...
    assert ex.input_ids == [101, 2129, 2024, 2017, 1029, 102, 102, 101, 2054, 2003, 2039, 1029, 102, 0, 0, 0]
    # 0 over [CLS] x [SEP] [SEP]; 1 from the target [CLS] through the padding.
    assert ex.input_mask == [0] * 7 + [1] * 9
    assert ex.attention_mask == [1] * 13 + [0] * 3
    assert not ex.truncated
    assert tok.decode(ex.input_ids[:7]) == "[CLS] how are you? [SEP] [SEP]"
    assert tok.decode(ex.input_ids[7:]) == "[CLS] what is up? [SEP] [PAD] [PAD] [PAD]"


def test_layout_compact(tok):
    ex = build_example([5000, 5001], [6000], tok, seq_len=8, layout="compact")
    assert ex.input_ids == [101, 5000, 5001, 102, 6000, 102, 0, 0]
    assert ex.input_mask == [0, 0, 0, 0, 1, 1, 1, 1]
    assert ex.attention_mask == [1, 1, 1, 1, 1, 1, 0, 0]


def test_exact_fit_is_not_truncated(tok):
    # 4 + 4 tokens + 5 specials = 13 positions.
    ex = build_example(list(range(2000, 2004)), list(range(3000, 3004)), tok, seq_len=13)
    assert not ex.truncated and ex.attention_mask == [1] * 13
    ex = build_example(list(range(2000, 2004)), list(range(3000, 3004)), tok, seq_len=12)
    assert ex.truncated


def test_truncation_rule_examples(tok):
    src, trg = list(range(2000, 2010)), [3000, 3001]  # 10 and 2 tokens
    # seq_len 12: budget 9 for the two bodies ([CLS]+tokens): trg body 3 kept, src body 11 -> 6.
    ex = build_example(src, trg, tok, seq_len=12)
    assert ex.truncated
    assert ex.input_ids == [101, 2000, 2001, 2002, 2003, 2004, 102, 102, 101, 3000, 3001, 102]
    assert ex.input_mask == [0] * 8 + [1] * 4
    # Both long: both bodies cut to budget // 2 = 4 -> 3 tokens each, one position left as pad.
    ex = build_example(src, list(range(3000, 3010)), tok, seq_len=12)
    assert ex.input_ids == [101, 2000, 2001, 2002, 102, 102, 101, 3000, 3001, 3002, 102, 0]
    assert ex.input_mask == [0] * 6 + [1] * 6
    assert ex.attention_mask == [1] * 11 + [0]


def _diffuseq_pop_loop(a, b, budget):
    """An independent simulation of the documented rule: pop the longer, both when equal."""
    while a + b > budget:
        if a > b:
            a -= 1
        elif b > a:
            b -= 1
        else:
            a, b = a - 1, b - 1
    return a, b


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 80), st.integers(1, 80), st.integers(4, 60))
def test_truncated_lengths_matches_pop_loop(a, b, budget):
    assert truncated_lengths(a, b, budget) == _diffuseq_pop_loop(a, b, budget)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1000, 29999), min_size=1, max_size=40),
       st.lists(st.integers(1000, 29999), min_size=1, max_size=40),
       st.integers(7, 48), st.sampled_from(["diffuseq", "compact"]))
def test_layout_invariants(src, trg, seq_len, layout):
    tok = _TOK
    ex = build_example(src, trg, tok, seq_len=seq_len, layout=layout)
    ids, m, a = ex.input_ids, ex.input_mask, ex.attention_mask
    assert len(ids) == len(m) == len(a) == seq_len
    n_real = sum(a)
    assert a == [1] * n_real + [0] * (seq_len - n_real)
    assert all(i == tok.pad_id for i in ids[n_real:])
    n_cond = seq_len - sum(m)
    assert m == [0] * n_cond + [1] * (seq_len - n_cond)
    assert ids[0] == tok.cls_id and ids[n_real - 1] == tok.sep_id
    if layout == "diffuseq":
        kept_src, kept_trg = ids[1:n_cond - 2], ids[n_cond + 1:n_real - 1]
        assert ids[n_cond - 2:n_cond + 1] == [tok.sep_id, tok.sep_id, tok.cls_id]
        a_len, b_len = truncated_lengths(len(src) + 1, len(trg) + 1, seq_len - 3)
        assert (len(kept_src) + 1, len(kept_trg) + 1) == (a_len, b_len)
    else:
        kept_src, kept_trg = ids[1:n_cond - 1], ids[n_cond:n_real - 1]
        assert ids[n_cond - 1] == tok.sep_id
        assert (len(kept_src), len(kept_trg)) == truncated_lengths(len(src), len(trg), seq_len - 3)
    assert kept_src == src[:len(kept_src)] and kept_trg == trg[:len(kept_trg)]  # cut from the end
    assert ex.truncated == (len(kept_src) < len(src) or len(kept_trg) < len(trg))


_TOK = bert_tokenizer()


def test_on_overflow_error(tmp_path, tok, write_jsonl):
    f = write_jsonl(tmp_path / "train.jsonl", [
        {"src": "short one", "trg": "short two"},
        {"src": "this source sentence is far too long for a tiny sequence length", "trg": "ok"},
    ])
    with pytest.raises(DataError) as e:
        load_seq2seq_split(tmp_path, "train", tok, seq_len=10, on_overflow="error")
    msg = str(e.value)
    assert "train.jsonl" in msg and "line 2" in msg and "field 'src'" in msg and "seq_len=10" in msg
    assert e.value.line == 2 and e.value.field == "src"
    ds = load_seq2seq_split(tmp_path, "train", tok, seq_len=10)  # default: truncate
    assert ds.n_truncated == 1 and len(ds) == 2


LONG_ROWS = [
    {"src": "this source sentence is far too long for a tiny sequence length", "trg": "ok"},
    {"src": "short one", "trg": "short two"},
    {"src": "fine", "trg": "and this target is also much longer than ten tokens allow"},
]
NOTICE = "2 of 3 pairs are longer than seq_len=10 and were truncated (DiffuSeq's rule; on_overflow='error' refuses them)"


def test_truncation_is_one_warning_per_file_with_the_count(tmp_path, tok, write_jsonl, caplog):
    train = write_jsonl(tmp_path / "train.jsonl", LONG_ROWS)
    valid = write_jsonl(tmp_path / "valid.jsonl", LONG_ROWS[1:2])
    with caplog.at_level("WARNING", logger="mambadiff.data.seq2seq"):
        assert load_seq2seq_split(tmp_path, "train", tok, seq_len=10).n_truncated == 2
        assert load_seq2seq_split(tmp_path, "valid", tok, seq_len=10).n_truncated == 0
    notices = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "mambadiff.data.seq2seq"]
    assert notices == [("WARNING", f"{train}: {NOTICE}")]
    assert str(valid) not in caplog.text


def test_truncation_warning_reaches_stderr_without_logging(tmp_path, tok, write_jsonl, monkeypatch, capsys):
    import logging

    from mambadiff.data import seq2seq
    monkeypatch.setattr(seq2seq, "log", logging.Logger("isolated"))  # no handlers: nothing configured logging
    path = write_jsonl(tmp_path / "train.jsonl", LONG_ROWS)
    load_seq2seq_split(path, None, tok, seq_len=10)
    assert capsys.readouterr().err == f"{path}: {NOTICE}\n"


def test_bad_options(tok):
    with pytest.raises(ValueError, match="layout"):
        build_example([1], [2], tok, layout="other")
    with pytest.raises(ValueError, match="on_overflow"):
        build_example([1], [2], tok, on_overflow="drop")
    with pytest.raises(ValueError, match="seq_len"):
        build_example([1], [2], tok, seq_len=6)


# ------------------------------------------------------------------------------------------
# Strict reading
# ------------------------------------------------------------------------------------------
GOOD = '{"src": "how are you ?", "trg": "what is up ?"}\n'

BAD_CASES = {
    # name: (file content bytes, line, field or None)
    "malformed_json": ((GOOD + '{"src": "a", "trg": "b"\n').encode(), 2, None),
    "malformed_json_in_trg": ((GOOD + GOOD + '{"src": "a", "trg": "b}\n').encode(), 3, "trg"),
    "missing_src": ((GOOD + '{"trg": "b"}\n').encode(), 2, "src"),
    "missing_trg": ((GOOD + GOOD + '{"src": "a", "target": "b"}\n').encode(), 3, "trg"),
    "non_string_src": ((GOOD + '{"src": 3, "trg": "b"}\n').encode(), 2, "src"),
    "null_trg": (('{"src": "a", "trg": null}\n').encode(), 1, "trg"),
    "list_trg": ((GOOD + '{"src": "a", "trg": ["b"]}\n').encode(), 2, "trg"),
    "empty_src": ((GOOD + '{"src": "", "trg": "b"}\n').encode(), 2, "src"),
    "whitespace_trg": ((GOOD + '{"src": "a", "trg": "  \\t "}\n').encode(), 2, "trg"),
    "non_utf8_trg": (GOOD.encode() + b'{"src": "a", "trg": "caf\xe9"}\n', 2, "trg"),
    "non_utf8_src": (b'{"src": "\xff\xfe", "trg": "b"}\n', 1, "src"),
    "not_an_object": ((GOOD + '["a", "b"]\n').encode(), 2, None),
    "blank_line_between": ((GOOD + "\n" + GOOD).encode(), 2, None),
    "empty_file": (b"", 1, None),
    "only_newlines": (b"\n\n", 1, None),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_raises_data_error_with_location(tmp_path, case):
    content, line, field = BAD_CASES[case]
    f = tmp_path / "valid.jsonl"
    f.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_seq2seq_jsonl(f)
    msg = str(e.value)
    assert str(f) in msg and "valid.jsonl" in msg
    assert f"line {line}" in msg and e.value.line == line
    if field is not None:
        assert f"field '{field}'" in msg and e.value.field == field
    assert "\n" not in msg
    assert isinstance(e.value, ValueError)


def test_text_without_tokens_is_an_error(tmp_path, tok, write_jsonl):
    f = write_jsonl(tmp_path / "test.jsonl", [{"src": "ok", "trg": "fine"}, {"src": "a", "trg": "\u200b"}])
    with pytest.raises(DataError) as e:
        load_seq2seq_split(f, None, tok, seq_len=16)
    assert "test.jsonl" in str(e.value) and "line 2" in str(e.value) and "field 'trg'" in str(e.value)


def test_reading_details(tmp_path):
    f = tmp_path / "x.jsonl"
    # BOM, surrounding whitespace stripped, extra keys ignored, trailing blank lines allowed.
    f.write_bytes(b"\xef\xbb\xbf" + b'{"src": "  a b ", "trg": "c", "id": 3}\n{"src": "d", "trg": "e"}\n\n\n')
    assert read_seq2seq_jsonl(f) == [("a b", "c"), ("d", "e")]
    f.write_text('{"src": "a", "trg": "b"}')  # no final newline
    assert read_seq2seq_jsonl(f) == [("a", "b")]
    with pytest.raises(DataError, match="file not found"):
        read_seq2seq_jsonl(tmp_path / "nope.jsonl")


def test_missing_split_file(tmp_path, tok, write_jsonl):
    write_jsonl(tmp_path / "train.jsonl", [{"src": "a", "trg": "b"}])
    with pytest.raises(DataError, match="no valid.jsonl"):
        load_seq2seq_split(tmp_path, "valid", tok)
    with pytest.raises(ValueError, match="split"):
        load_seq2seq_split(tmp_path, "dev", tok)


# ------------------------------------------------------------------------------------------
# Dataset
# ------------------------------------------------------------------------------------------
ROWS = [
    {"src": "How can I learn Python quickly?", "trg": "What is the fastest way to learn Python?"},
    {"src": "Why is Tokyo so expensive?", "trg": "What makes Tokyo so costly?"},
    {"src": "how do i become a doctor ?", "trg": "what does it take to be a doctor ?"},
]


def test_dataset_folder_and_file(tmp_path, tok, write_jsonl):
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    ds = load_seq2seq_split(tmp_path, "train", tok, seq_len=32)
    ds_file = load_seq2seq_split(tmp_path / "train.jsonl", None, tok, seq_len=32)
    assert len(ds) == len(ds_file) == 3
    assert ds.sources[1] == "Why is Tokyo so expensive?" and ds.targets[2] == ROWS[2]["trg"]
    item = ds[1]
    assert set(item) == {"input_ids", "input_mask", "attention_mask", "index"}
    for k in ("input_ids", "input_mask", "attention_mask"):
        assert item[k].shape == (32,) and item[k].dtype == torch.long
        assert torch.equal(item[k], ds_file[1][k])
    assert int(item["index"]) == 1
    x, y = tok.encode(ROWS[1]["src"]), tok.encode(ROWS[1]["trg"])
    ex = build_example(x, y, tok, 32)
    assert item["input_ids"].tolist() == ex.input_ids and item["input_mask"].tolist() == ex.input_mask
    # DiffuSeq's len_x recovers the condition; decoding the rest gives the reference.
    len_x = int(source_length(item["input_mask"]))
    assert len_x == len(x) + 3  # [CLS] x [SEP] [SEP]
    assert tok.decode(item["input_ids"][len_x:], skip_special=True) == "what makes tokyo so costly?"
    assert load_seq2seq_split(tmp_path, "train", tok, seq_len=32, limit=2).pairs == ds.pairs[:2]


def test_collate_and_dataloader(tmp_path, tok):
    ds = Seq2SeqDataset([(r["src"], r["trg"]) for r in ROWS], tok, seq_len=24)
    batch = collate([ds[0], ds[2]])
    assert batch["input_ids"].shape == (2, 24) and batch["index"].tolist() == [0, 2]
    batches = list(DataLoader(ds, batch_size=2, collate_fn=collate))
    assert [b["input_ids"].shape[0] for b in batches] == [2, 1]
    full = ds.tensors()
    assert torch.equal(torch.cat([b["input_ids"] for b in batches]), full["input_ids"])
    assert source_length(full["input_mask"]).shape == (3,)
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    with pytest.raises(DataError, match="no pairs"):
        Seq2SeqDataset([], tok)


@pytest.mark.shared_data
def test_shared_qqp_valid(shared_data, tok):
    ds = load_seq2seq_split(shared_data / "qqp" / "valid.jsonl", None, tok, seq_len=128)
    assert len(ds) == 2048
    t = ds.tensors()
    assert (t["input_ids"][:, 0] == tok.cls_id).all()
    assert ds.n_truncated < 20
    len_x = source_length(t["input_mask"])
    for i in (0, 1, 1000, 2047):
        x, y = ds.pairs[i]
        assert tok.decode(t["input_ids"][i, : int(len_x[i])], skip_special=True) == tok.decode(tok.encode(x))
        assert tok.decode(t["input_ids"][i, int(len_x[i]):], skip_special=True) == tok.decode(tok.encode(y))
