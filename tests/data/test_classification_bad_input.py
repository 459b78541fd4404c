"""Malformed classification files, every format, through `mambadiff classify train`: exit code 1, one
error line naming the file, the line and the column / field, no traceback, nothing written."""
from __future__ import annotations

import pytest

GOOD_S140 = '"0","1","Mon","NO_QUERY","u","sad day"\n"4","2","Mon","NO_QUERY","u","great day"\n'
SST2_HEAD = "sentence\tlabel\n"
IMDB_OK = '{"text": "a fine film", "label": 1, "id": 1}\n{"text": "a dull film", "label": 0, "id": 2}\n'

# name -> (format, file name, content, line, field or None, words of the reason)
CASES = {
    "sentiment140 unknown polarity": (
        "sentiment140", "s.csv", GOOD_S140 + '"5","3","Mon","NO_QUERY","u","odd"\n', 3, "polarity", "unknown label"),
    "sentiment140 ragged row": (
        "sentiment140", "s.csv", GOOD_S140 + '"0","3","Mon","NO_QUERY"\n', 3, "user", "row has 4 fields, expected 6"),
    "sentiment140 empty text": (
        "sentiment140", "s.csv", GOOD_S140 + '"4","3","Mon","NO_QUERY","u","  "\n', 3, "text", "text is empty"),
    "sentiment140 wrong layout": (
        "sentiment140", "s.csv", '"0","1","sad"\n', 1, None, "Sentiment140 files have 6"),
    "sst2 missing label column": ("sst2", "d.tsv", "sentence\tpolarity\nok\t1\n", 1, "label", "missing label column"),
    "sst2 unknown label": ("sst2", "d.tsv", SST2_HEAD + "good\t1\nbad\tx\n", 3, "label", "unknown label 'x'"),
    "sst2 ragged row": ("sst2", "d.tsv", SST2_HEAD + "good\t1\nbad\t0\textra\n", 3, "#3", "row has 3 fields"),
    "imdb invalid json": ("imdb", "r.jsonl", IMDB_OK + '{"text": "x", "label": \n', 3, None, "not valid JSON"),
    "imdb missing label": ("imdb", "r.jsonl", IMDB_OK + '{"text": "x", "id": 3}\n', 3, "label", "missing field"),
    "imdb null label": ("imdb", "r.jsonl", IMDB_OK + '{"text": "x", "label": null}\n', 3, "label", "label is null"),
    "imdb text not a string": ("imdb", "r.jsonl", IMDB_OK + '{"text": 7, "label": 1}\n', 3, "text", "text is int"),
    "csv missing text column": ("csv", "t.csv", "body,label\nhi,a\n", 1, "text", "missing text column"),
    "csv empty label": ("csv", "t.csv", "text,label\nhi,a\nyo,b\nhey, \n", 4, "label", "label is empty"),
    "csv undecodable text": ("csv", "t.csv", b"text,label\nhi,a\nh\xe9llo,b\n", 3, "text", "not valid utf-8"),
    "csv unclosed quote": ("csv", "t.csv", 'text,label\nhi,a\n"oops,b\n' + "x" * 140_000 + ",a\nyo,b\n", 3, None,
                           "unclosed quote"),
    "jsonl not an object": ("jsonl", "d.jsonl", '{"text": "a", "label": 0}\n[1, 2]\n', 2, None, "expected a JSON object"),
    "jsonl missing text": ("jsonl", "d.jsonl", '{"text": "a", "label": 0}\n{"label": 1}\n', 2, "text", "missing field"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_names_file_line_and_field(tmp_path, run_cli, assert_clean_error, name):
    fmt, file_name, content, line, field, reason = CASES[name]
    path = tmp_path / file_name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    run = tmp_path / "run"
    result = run_cli("classify", "train", f"data.train={path}", f"data.format={fmt}", f"run_dir={run}",
                     "data.tokenizer=trained")
    where = [f"Error: {path}, line {line}"] + ([f"field '{field}'"] if field else [])
    error = assert_clean_error(result, *where)
    assert reason in error
    assert not run.exists()  # nothing half-written


@pytest.mark.parametrize("fmt,file_name,content", [
    ("sentiment140", "s.csv", GOOD_S140), ("sst2", "d.tsv", SST2_HEAD + "good\t1\nbad\t0\n"),
    ("imdb", "r.jsonl", IMDB_OK), ("csv", "t.csv", "text,label\nhi,a\nyo,b\n"),
    ("jsonl", "d.jsonl", '{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n'),
])
def test_the_same_files_without_the_bad_row_load(tmp_path, fmt, file_name, content):
    # The cases above fail because of the row they add, not because of the rest of the file.
    from mambadiff.data.classification import load_classification
    path = tmp_path / file_name
    path.write_text(content, encoding="utf-8")
    data = load_classification(path, fmt)
    assert len(data) == 2 and data.num_labels == (3 if fmt == "sentiment140" else 2)  # 0/2/4 polarities
