"""Classification loaders, text cleaning, encoding/collate, stratified splits.

Small files are written into tmp_path; the real data sets under ../shared/data are only read by
the tests marked ``shared_data``.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from mambadiff.data.classification import labels as labels_mod
from mambadiff.data.classification import rows as rows_mod
from mambadiff.data.classification import (
    ClassificationDataset,
    LengthBucketBatchSampler,
    collate_classification,
    detect_format,
    load_classification,
    load_csv,
    load_imdb,
    load_jsonl,
    load_sentiment140,
    load_sst2,
    resolve_splits,
    stratified_split,
)
from mambadiff.data.errors import DataError
from mambadiff.data.text_clean import CleanConfig, TextCleanConfig, TextCleaner, clean_text


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


# ---------------------------------------------------------------------------------------------
# Sentiment140
# ---------------------------------------------------------------------------------------------

S140_6COL = (
    b'"0","1","Mon Apr 06 22:19:45 PDT 2009","NO_QUERY","alice","this is bad, really"\n'
    b'"4","2","Mon Apr 06 22:19:49 PDT 2009","NO_QUERY","bob","caf\xe9 au lait is great"\n'  # latin-1 byte
    b'"2","3","Mon Apr 06 22:19:53 PDT 2009","NO_QUERY","carol","na\xc3\xafve but fine"\n'  # utf-8 in the same file
    b'"4","4","Mon Apr 06 22:19:57 PDT 2009","NO_QUERY","dave","""quoted"" text"\n'
)


def test_sentiment140_six_columns_latin1_fallback(tmp_path):
    path = _write(tmp_path / "s140.csv", S140_6COL)
    data = load_sentiment140(path)
    assert data.format == "sentiment140"
    assert data.examples == [
        ("this is bad, really", 0),
        ("café au lait is great", 2),
        ("naïve but fine", 1),
        ('"quoted" text', 2),
    ]
    assert data.label_names == ["negative", "neutral", "positive"]
    assert data.n_latin1_fallback == 1
    assert data.label_counts() == [1, 1, 2]
    # auto-detection picks the same loader
    auto = load_classification(path)
    assert auto.format == "sentiment140" and auto.examples == data.examples


def test_sentiment140_two_columns(tmp_path):
    path = _write(tmp_path / "manual.csv", '4,"I love my kindle"\n0,hate it\n2,"meh, ok"\n\n')
    assert detect_format(path) == "sentiment140"
    data = load_classification(path)
    assert data.examples == [("I love my kindle", 2), ("hate it", 0), ("meh, ok", 1)]
    assert data.n_rows == 3  # the trailing blank line is not a row


def test_sentiment140_binary_map_and_drop_neutral(tmp_path, caplog):
    path = _write(tmp_path / "manual.csv", '4,good\n2,neutral one\n0,bad\n2,neutral two\n')
    # A binary map without dropping: the neutral row is an unknown label, never silently dropped.
    with pytest.raises(DataError) as e:
        load_classification(path, label_map={0: 0, 4: 1})
    assert (e.value.line, e.value.field) == (2, "polarity")
    assert "unknown label '2'" in str(e.value) and "manual.csv" in str(e.value)

    with caplog.at_level(logging.WARNING, logger="mambadiff.data.classification"):
        data = load_classification(path, format="sentiment140", drop_neutral=True)
    assert data.examples == [("good", 1), ("bad", 0)]
    assert data.label_names == ["negative", "positive"]
    assert data.n_dropped == 2
    assert "dropped 2 row(s)" in caplog.text

    custom = load_sentiment140(path, label_map={"0": 1, "4": 0}, label_names=["pos", "neg"], drop_neutral=True)
    assert custom.examples == [("good", 0), ("bad", 1)] and custom.label_names == ["pos", "neg"]


def test_sentiment140_strict_encoding_names_row_and_column(tmp_path):
    path = _write(tmp_path / "s140.csv", S140_6COL)
    with pytest.raises(DataError) as e:
        load_sentiment140(path, encoding="utf-8")
    assert (e.value.file, e.value.line, e.value.field) == (str(path), 2, "text")
    assert "0xe9" in str(e.value)


def test_sentiment140_ragged_row(tmp_path):
    path = _write(tmp_path / "s140.csv", '"0","1","d","q","u","fine"\n"4","2","d","q","u"\n')
    with pytest.raises(DataError) as e:
        load_sentiment140(path)
    assert (e.value.line, e.value.field) == (2, "text")
    assert "5 fields, expected 6" in str(e.value)


def test_sentiment140_unknown_layout(tmp_path):
    path = _write(tmp_path / "s140.csv", "0,a,b\n")
    with pytest.raises(DataError, match="6 .* or 2"):
        load_sentiment140(path)


# ---------------------------------------------------------------------------------------------
# SST-2, IMDB, generic CSV / JSONL
# ---------------------------------------------------------------------------------------------


def test_sst2_tsv(tmp_path):
    # TSV is not quoted: a double quote is literal text.
    path = _write(tmp_path / "train.tsv", 'sentence\tlabel\nit \'s a "charming" film \t1\nbleak \t0\n')
    assert detect_format(path) == "sst2"
    data = load_sst2(path)
    assert data.examples == [('it \'s a "charming" film ', 1), ("bleak ", 0)]
    assert data.label_names == ["negative", "positive"]
    assert load_classification(path).examples == data.examples


def test_imdb_jsonl_gz(tmp_path):
    rows = [{"text": "Great movie.<br /><br />Loved it", "label": 1, "id": "1_10"},
            {"text": "Terrible.", "label": 0, "id": "2_1"}]
    path = tmp_path / "train.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    assert detect_format(path) == "jsonl"
    data = load_imdb(path)
    assert data.examples == [("Great movie.<br /><br />Loved it", 1), ("Terrible.", 0)]
    assert data.label_names == ["negative", "positive"] and data.format == "imdb"
    cleaned = load_classification(path, format="imdb", clean=True)
    assert cleaned.examples[0][0] == "great movie. loved it"


def test_generic_csv_string_labels_discovered_and_listed(tmp_path):
    path = _write(
        tmp_path / "tweets.csv",
        'id,airline_sentiment,text\n1,neutral,"What @dhepburn said."\n'
        '2,positive,"multi\nline text"\n3,negative,"so, late"\n4,positive,nice\n',
    )
    data = load_classification(path, label_column="airline_sentiment")
    assert data.format == "csv"
    assert data.label_names == ["negative", "neutral", "positive"]  # discovered, sorted
    assert data.examples == [("What @dhepburn said.", 1), ("multi\nline text", 2), ("so, late", 0), ("nice", 2)]
    listed = load_csv(path, label_column="airline_sentiment", label_map=["positive", "negative", "neutral"])
    assert [y for _, y in listed.examples] == [2, 0, 1, 0]
    assert listed.label_names == ["positive", "negative", "neutral"]


def test_generic_csv_integer_labels_sorted_numerically(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\na,10\nb,2\nc,1\n")
    data = load_csv(path)
    assert data.label_names == ["1", "2", "10"]
    assert [y for _, y in data.examples] == [2, 1, 0]


def test_generic_csv_line_numbers_after_multiline_record(tmp_path):
    # The record on lines 2-3 spans two physical lines, so the bad row starts on line 4.
    path = _write(tmp_path / "d.csv", 'text,label\n"two\nlines",pos\n"",neg\n')
    with pytest.raises(DataError) as e:
        load_csv(path)
    assert (e.value.line, e.value.field) == (4, "text")


def test_generic_jsonl_string_labels(tmp_path, write_jsonl):
    lines = [{"review": "fine", "stars": "pos"}, {"review": "awful", "stars": "neg"}, {"review": "ok", "stars": "pos"}]
    path = write_jsonl(tmp_path / "d.jsonl", lines)
    data = load_classification(path, text_column="review", label_column="stars")
    assert data.format == "jsonl"
    assert data.label_names == ["neg", "pos"]
    assert data.examples == [("fine", 1), ("awful", 0), ("ok", 1)]
    mapped = load_jsonl(path, text_field="review", label_field="stars", label_map={"pos": 1, "neg": 0},
                        label_names=["bad", "good"])
    assert mapped.examples == data.examples and mapped.label_names == ["bad", "good"]
    # text_field is an alias of text_column in the entry point
    assert load_classification(path, text_field="review", label_field="stars").examples == data.examples


def test_label_map_validation():
    with pytest.raises(ValueError, match="cover 0..2"):
        labels_mod.normalise_label_spec({"a": 0, "b": 2}, None)
    with pytest.raises(ValueError, match="both"):
        labels_mod.normalise_label_spec({4: 0, "4": 1}, None)
    mapping, names = labels_mod.normalise_label_spec({0: 0, "4.0": 1}, None)
    assert mapping == {"0": 0, "4": 1} and names == ["0", "4"]


# ---------------------------------------------------------------------------------------------
# Bad input: every case names file, line and column; skip policy counts
# ---------------------------------------------------------------------------------------------

BAD_CASES = {
    # name: (file name, bytes, loader kwargs, expected line, expected field, message fragment)
    "unknown label": ("d.csv", b"text,label\ngood,pos\nbad,maybe\n", {"label_map": ["neg", "pos"]}, 3, "label",
                      "unknown label 'maybe'"),
    "empty text": ("d.csv", b"text,label\ngood,pos\n  ,neg\n", {}, 3, "text", "text is empty"),
    "empty label": ("d.csv", b"text,label\ngood,pos\nbad,\n", {}, 3, "label", "label is empty"),
    "ragged row": ("d.csv", b"text,label\ngood,pos\nbad\n", {}, 3, "label", "1 fields, expected 2"),
    "extra field": ("d.csv", b"text,label\ngood,pos\nbad,neg,x\n", {}, 3, "#3", "3 fields, expected 2"),
    "wrong encoding": ("d.csv", b"text,label\ngood,pos\ncaf\xe9,neg\n", {}, 3, "text", "not valid utf-8"),
    "missing column": ("d.csv", b"sentence,label\ngood,pos\n", {}, 1, "text", "missing text column 'text'"),
    "jsonl missing field": ("d.jsonl", b'{"text": "a", "label": 1}\n{"text": "b"}\n', {}, 2, "label",
                            "missing field 'label'"),
    "jsonl null text": ("d.jsonl", b'{"text": "a", "label": 1}\n{"text": null, "label": 0}\n', {}, 2, "text",
                        "text is null"),
    "jsonl bad json": ("d.jsonl", b'{"text": "a", "label": 1}\n{"text": "b", \n', {}, 2, None, "not valid JSON"),
    "jsonl wrong encoding": ("d.jsonl", b'{"text": "a", "label": 1}\n{"text": "\xff", "label": 0}\n', {}, 2, "text",
                             "0xff"),
    "empty after cleaning": ("d.csv", b"text,label\ngood,pos\n@someone #tag http://x.y,neg\n", {"clean": True}, 3,
                             "text", "empty after cleaning"),
    "sst2 unknown label": ("d.tsv", b"sentence\tlabel\ngood\t1\nbad\t2\n", {"format": "sst2"}, 3, "label",
                           "unknown label '2'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_names_file_line_column(tmp_path, case):
    name, content, kwargs, line, field, fragment = BAD_CASES[case]
    path = _write(tmp_path / name, content)
    with pytest.raises(DataError) as e:
        load_classification(path, **kwargs)
    err = e.value
    assert isinstance(err, ValueError)
    assert (err.file, err.line, err.field) == (str(path), line, field)
    msg = str(err)
    assert msg.startswith(f"{path}, line {line}")
    if field is not None:
        assert f"field '{field}'" in msg
    assert fragment in msg


@pytest.mark.parametrize("case", sorted(c for c in BAD_CASES if c != "missing column"))
def test_skip_policy_skips_and_counts(tmp_path, case, caplog):
    name, content, kwargs, *_ = BAD_CASES[case]
    path = _write(tmp_path / name, content)
    with caplog.at_level(logging.WARNING, logger="mambadiff.data.classification"):
        data = load_classification(path, on_bad_row="skip", **kwargs)
    assert len(data.examples) == 1 and data.n_skipped == 1 and data.n_rows == 2
    assert f"{path}: skipped 1 bad row(s) of 2" in caplog.text


def test_skip_policy_counts_per_reason_and_prints_without_logging(tmp_path, monkeypatch, capsys):
    path = _write(
        tmp_path / "d.csv",
        b"text,label\ngood,pos\n,neg\nx,maybe\nragged\ncaf\xe9,neg\nalso good,neg\n  ,pos\n",
    )
    # No logging configured (isolated logger without handlers): the summary goes to stderr.
    quiet = logging.getLogger("mambadiff.test.classification.isolated")
    quiet.propagate = False
    monkeypatch.setattr(rows_mod, "logger", quiet)
    data = load_csv(path, label_map=["neg", "pos"], on_bad_row="skip")
    assert data.examples == [("good", 1), ("also good", 0)]
    assert data.skipped == {"empty text": 2, "unknown label": 1, "ragged row": 1, "encoding": 1}
    assert data.n_skipped == 5 and data.n_rows == 7
    err = capsys.readouterr().err
    assert "skipped 5 bad row(s) of 7" in err and "line 3" in err
    load_csv(path, label_map=["neg", "pos"], on_bad_row="skip", verbose=False)
    assert capsys.readouterr().err == ""


def test_header_problems_raise_even_when_skipping(tmp_path):
    path = _write(tmp_path / "d.csv", "sentence,label\ngood,pos\n")
    with pytest.raises(DataError) as e:
        load_csv(path, on_bad_row="skip")
    assert (e.value.line, e.value.field) == (1, "text")


def test_headerless_csv_by_column_index(tmp_path):
    path = _write(tmp_path / "d.csv", "hello,1\nworld,0\nbad\n")
    with pytest.raises(DataError) as e:
        load_csv(path, has_header=False, text_column=0, label_column=1)
    assert (e.value.line, e.value.field) == (3, "#2")
    data = load_csv(path, has_header=False, text_column=0, label_column=1, on_bad_row="skip", verbose=False)
    assert data.examples == [("hello", 1), ("world", 0)] and data.skipped == {"ragged row": 1}


def test_all_rows_bad_raises_even_when_skipping(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\n,a\n ,b\n")
    with pytest.raises(DataError, match="no examples left"):
        load_csv(path, on_bad_row="skip", verbose=False)


def test_bad_arguments(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\na,b\n")
    with pytest.raises(ValueError, match="on_bad_row"):
        load_csv(path, on_bad_row="ignore")
    with pytest.raises(ValueError, match="format"):
        load_classification(path, format="parquet")
    with pytest.raises(ValueError, match="drop_neutral"):
        load_classification(path, drop_neutral=True)
    with pytest.raises(DataError, match="cannot read"):
        load_csv(tmp_path / "missing.csv")


# ---------------------------------------------------------------------------------------------
# Cleaning
# ---------------------------------------------------------------------------------------------

TWEET = "@Bob  Check   http://t.co/x1 &amp; www.site.org #Win<br />Now &#39;ok&#39; me@mail.com"
ALL_OFF = TextCleanConfig.none()


def test_clean_all_steps_default():
    assert clean_text(TWEET) == "check & now 'ok' me@mail.com"
    assert TextCleaner()(TWEET) == clean_text(TWEET, TextCleanConfig())


def test_clean_config_is_text_clean_config_with_a_switch():
    # The config-file form lists every cleaning step of TextCleanConfig, with the same defaults.
    steps = [f.name for f in dataclasses.fields(TextCleanConfig)]
    assert [f.name for f in dataclasses.fields(CleanConfig)] == ["enabled", *steps]
    assert CleanConfig().to_text_clean() == TextCleanConfig()
    partial = CleanConfig(lowercase=False, remove_html_tags=False)
    assert partial.to_text_clean() == TextCleanConfig(lowercase=False, remove_html_tags=False)
    assert CleanConfig(enabled=False).to_text_clean() is None


def test_clean_all_off_is_identity():
    assert clean_text(TWEET, ALL_OFF) == TWEET


@pytest.mark.parametrize(
    "step, expected",
    [
        ("remove_urls", "@Bob  Check     &amp;   #Win<br />Now &#39;ok&#39; me@mail.com"),
        ("remove_mentions", "   Check   http://t.co/x1 &amp; www.site.org #Win<br />Now &#39;ok&#39; me@mail.com"),
        ("remove_hashtags", "@Bob  Check   http://t.co/x1 &amp; www.site.org  <br />Now &#39;ok&#39; me@mail.com"),
        ("lowercase", TWEET.lower()),
        ("collapse_whitespace", "@Bob Check http://t.co/x1 &amp; www.site.org #Win<br />Now &#39;ok&#39; me@mail.com"),
        ("unescape_html", "@Bob  Check   http://t.co/x1 & www.site.org #Win<br />Now 'ok' me@mail.com"),
        ("remove_html_tags", "@Bob  Check   http://t.co/x1 &amp; www.site.org #Win Now &#39;ok&#39; me@mail.com"),
    ],
)
def test_clean_each_step_alone(step, expected):
    from dataclasses import replace

    assert clean_text(TWEET, replace(ALL_OFF, **{step: True})) == expected


def test_clean_hashtag_not_confused_with_entities_or_words():
    cfg = TextCleanConfig(unescape_html=False, lowercase=False)
    assert clean_text("it&#39;s C# #1 day", cfg) == "it&#39;s C# day"
    assert clean_text("i <3 this, a < b > c") == "i <3 this, a < b > c"


def test_loader_applies_clean_config(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\n@Bob GREAT http://x.io #yay,pos\n")
    assert load_csv(path, clean=TextCleanConfig()).examples == [("great", 0)]
    keep_case = TextCleanConfig(lowercase=False, remove_hashtags=False)
    assert load_classification(path, clean=keep_case).examples == [("GREAT #yay", 0)]
    assert load_classification(path).examples == [("@Bob GREAT http://x.io #yay", 0)]  # no cleaning by default


# ---------------------------------------------------------------------------------------------
# Dataset, collate, bucketing
# ---------------------------------------------------------------------------------------------


class WordTokenizer:
    """Whitespace tokenizer with the loader's interface (pad 0, cls 1, sep 2, words from 3)."""

    pad_id, cls_id, sep_id = 0, 1, 2

    def __init__(self):
        self.vocab: dict[str, int] = {}

    @property
    def vocab_size(self) -> int:
        return 3 + len(self.vocab)

    def encode(self, text: str) -> list[int]:
        return [self.vocab.setdefault(w, 3 + len(self.vocab)) for w in text.split()]


EXAMPLES = [("a b c", 0), ("d", 1), ("e f g h i j k", 2), ("a a", 1)]


def test_dataset_items_and_truncation():
    tok = WordTokenizer()
    ds = ClassificationDataset(EXAMPLES, tok, max_len=5)
    assert len(ds) == 4
    item = ds[0]
    assert item["input_ids"].tolist() == [1, 3, 4, 5, 2]
    assert item["input_ids"].dtype == torch.long and item["attention_mask"].dtype == torch.bool
    assert item["attention_mask"].all() and item["label"].shape == () and item["label"].item() == 0
    long_item = ds[2]["input_ids"].tolist()
    assert len(long_item) == 5 and long_item[0] == 1 and long_item[-1] == 2  # [SEP] survives truncation
    assert ds.lengths == [5, 3, 5, 4]

    plain = ClassificationDataset(EXAMPLES, tok, max_len=4, add_special_tokens=False)
    assert plain[0]["input_ids"].tolist() == [3, 4, 5]
    assert plain[2]["input_ids"].shape == (4,)


def test_collate_pads_right_with_pad_id():
    tok = WordTokenizer()
    tok.pad_id = 99
    ds = ClassificationDataset(EXAMPLES, tok, max_len=6)
    batch = ds.collate([ds[0], ds[1], ds[3]])
    assert batch["input_ids"].shape == (3, 5) and batch["attention_mask"].shape == (3, 5)
    assert batch["label"].tolist() == [0, 1, 1]
    assert batch["input_ids"][1].tolist() == [1, 6, 2, 99, 99]
    assert batch["attention_mask"].sum(1).tolist() == [5, 3, 4]
    assert (batch["input_ids"][~batch["attention_mask"]] == 99).all()

    fixed = ClassificationDataset(EXAMPLES, tok, max_len=6, pad_to_max_len=True)
    loader = DataLoader(fixed, batch_size=4, collate_fn=fixed.collate)
    (full,) = list(loader)
    assert full["input_ids"].shape == (4, 6) and full["label"].shape == (4,)
    with pytest.raises(ValueError, match="shorter"):
        collate_classification([ds[2]], pad_id=0, pad_to=2)


def test_dataset_rejects_bad_input():
    tok = WordTokenizer()
    with pytest.raises(ValueError, match="max_len"):
        ClassificationDataset(EXAMPLES, tok, max_len=2)
    with pytest.raises(ValueError, match=r"examples\[1\] label"):
        ClassificationDataset([("a", 0), ("b", -1)], tok)
    with pytest.raises(ValueError, match="lacks"):
        ClassificationDataset(EXAMPLES, object())


def test_dataset_with_bert_tokenizer():
    tokenizer_mod = pytest.importorskip("mambadiff.data.tokenizer")
    try:
        tok = tokenizer_mod.bert_tokenizer()
    except ValueError as e:  # the vocab package is not installed
        pytest.skip(str(e))
    ds = ClassificationDataset([("Hello world!", 1), ("A much longer sentence " * 20, 0)], tok, max_len=16)
    first = ds[0]["input_ids"].tolist()
    assert first[0] == tok.cls_id and first[-1] == tok.sep_id and len(first) == 2 + len(tok.encode("Hello world!"))
    batch = ds.collate([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, 16)
    assert (batch["input_ids"][0, len(first):] == tok.pad_id).all()

    # Pre-truncation (cut long texts at a whitespace before encoding) gives the same ids, also
    # when the cut text is too short in tokens (a long run of spaces) and must be re-encoded.
    long_texts = [("Unbelievably good acting, 10/10! " * 200, 1), (" " * 3000 + "late words here " * 50, 0),
                  ("x" * 5000 + " tail", 0)]
    fast = ClassificationDataset(long_texts, tok, max_len=64)
    slow = ClassificationDataset(long_texts, tok, max_len=64, pretruncate=False)
    assert fast.token_ids == slow.token_ids and fast.lengths[:2] == [64, 64]


def test_length_bucket_batch_sampler():
    lengths = [(i * 7) % 23 for i in range(103)]
    sampler = LengthBucketBatchSampler(lengths, batch_size=8, pool_batches=4, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert batches == list(sampler)  # deterministic for one epoch
    sampler.set_epoch(1)
    assert list(sampler) != batches
    # within a pool, batches are sorted by length, so padding is small
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 8
    dropped = LengthBucketBatchSampler(lengths, batch_size=8, pool_batches=4, drop_last=True)
    assert all(len(b) == 8 for b in dropped) and len(list(dropped)) == len(dropped)


# ---------------------------------------------------------------------------------------------
# Stratified split
# ---------------------------------------------------------------------------------------------


def _toy(n_per_label=(500, 300, 200)):
    return [(f"text {label} {i}", label) for label, n in enumerate(n_per_label) for i in range(n)]


def test_stratified_split_deterministic_disjoint_proportional():
    examples = _toy()
    train, valid, test = stratified_split(examples, fractions=(0.8, 0.1, 0.1), seed=7)
    assert (train, valid, test) == stratified_split(examples, fractions=(0.8, 0.1, 0.1), seed=7)
    assert stratified_split(examples, (0.8, 0.1, 0.1), seed=8)[1] != valid
    texts = [set(t for t, _ in part) for part in (train, valid, test)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert sum(map(len, texts)) == len(examples)
    for part, frac in ((train, 0.8), (valid, 0.1), (test, 0.1)):
        counts = Counter(y for _, y in part)
        for label, n in enumerate((500, 300, 200)):
            assert abs(counts[label] - frac * n) <= 1
    # original order is kept within a part
    order = {ex: i for i, ex in enumerate(examples)}
    assert [order[ex] for ex in valid] == sorted(order[ex] for ex in valid)


def test_stratified_split_default_fractions_and_validation():
    examples = _toy((1000, 1000))
    train, valid, test = stratified_split(examples, seed=0)
    assert (len(train), len(valid), len(test)) == (1960, 20, 20)
    assert Counter(y for _, y in valid) == {0: 10, 1: 10}
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(examples, (0.5, 0.4))
    with pytest.raises(ValueError, match=">= 0"):
        stratified_split(examples, (1.2, -0.2))


def test_resolve_splits_carves_missing_parts():
    train, given = _toy((100, 100)), [("t", 0)]
    tr, va, te = resolve_splits(train, fractions=(0.8, 0.1, 0.1))
    assert (len(tr), len(va), len(te)) == (160, 20, 20)
    tr, va, te = resolve_splits(train, test=given, fractions=(0.8, 0.1, 0.1))
    assert te == given and len(va) == 22 and len(tr) == 178  # 0.1 / 0.9 of each label, rounded
    tr, va, te = resolve_splits(train, valid=given, test=given)
    assert tr == train and va == te == given


# ---------------------------------------------------------------------------------------------
# Real data (../shared/data)
# ---------------------------------------------------------------------------------------------

SHARED_CASES = [
    # (relative path, kwargs, rows, label names, label counts or None)
    ("sentiment140/train_subset.csv", {}, 20_000, ["negative", "neutral", "positive"], [9_999, 0, 10_001]),
    ("sentiment140/train_subset.csv", {"drop_neutral": True}, 20_000, ["negative", "positive"], [9_999, 10_001]),
    ("sentiment140/test_manual.csv", {}, 498, ["negative", "neutral", "positive"], [177, 139, 182]),
    ("sst2/train.tsv", {}, 67_349, ["negative", "positive"], None),
    ("sst2/dev.tsv", {}, 872, ["negative", "positive"], [428, 444]),
    ("imdb/train.jsonl.gz", {"format": "imdb"}, 25_000, ["negative", "positive"], [12_500, 12_500]),
    ("imdb/test.jsonl.gz", {"format": "imdb"}, 25_000, ["negative", "positive"], [12_500, 12_500]),
    ("airline/Tweets.csv", {"label_column": "airline_sentiment"}, 14_640, ["negative", "neutral", "positive"], None),
]


@pytest.mark.shared_data
@pytest.mark.parametrize("rel, kwargs, rows, names, counts", SHARED_CASES, ids=[c[0] + str(c[1]) for c in SHARED_CASES])
def test_shared_data_loads(shared_data, rel, kwargs, rows, names, counts):
    data = load_classification(shared_data / rel, verbose=False, **kwargs)
    assert data.n_rows == rows and data.n_skipped == 0
    assert len(data.examples) == rows - data.n_dropped
    assert data.label_names == names
    if counts is not None:
        assert data.label_counts() == counts
    assert set(y for _, y in data.examples) == {i for i, c in enumerate(data.label_counts()) if c}
    assert all(isinstance(t, str) and t.strip() for t, _ in data.examples)


@pytest.mark.shared_data
def test_shared_data_detected_formats(shared_data):
    assert detect_format(shared_data / "sentiment140/train_subset.csv") == "sentiment140"
    assert detect_format(shared_data / "sentiment140/test_manual.csv") == "sentiment140"
    assert detect_format(shared_data / "sst2/dev.tsv") == "sst2"
    assert detect_format(shared_data / "imdb/test.jsonl.gz") == "jsonl"
    assert detect_format(shared_data / "airline/Tweets.csv") == "csv"


@pytest.mark.shared_data
def test_shared_sentiment140_cleaned_split_and_encoded(shared_data):
    data = load_classification(
        shared_data / "sentiment140/train_subset.csv", drop_neutral=True, clean=True, on_bad_row="skip", verbose=False
    )
    # Tweets that are only a mention/URL become empty: skipped and counted, not silently dropped.
    assert data.n_skipped == data.skipped.get("empty after cleaning", 0) > 0
    assert len(data.examples) + data.n_skipped == 20_000
    train, valid, test = stratified_split(data, seed=0)
    assert len(train) + len(valid) + len(test) == len(data.examples)
    assert abs(len(valid) - 0.01 * len(data.examples)) <= 2
    ds = ClassificationDataset(valid, WordTokenizer(), max_len=32)
    batch = ds.collate([ds[i] for i in range(8)])
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] <= 32
