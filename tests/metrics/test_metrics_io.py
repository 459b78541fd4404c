"""Reading prediction files: DiffuSeq token stripping, and every bad input names file, line and field."""
import json

import pytest

from mambadiff.metrics.io import (PredictionFileError, atomic_write_json, clean_output, clean_reference,
                                  clean_source, read_prediction_files, read_predictions)


ROW = {"source": "how are you", "reference": "how do you do", "recover": "how are you doing"}


def test_reads_mambadiff_and_diffuseq_files(tmp_path, write_jsonl):
    ours = write_jsonl(tmp_path / "ours.jsonl", [{**ROW, "extra": 1}])
    recs = read_predictions(ours)
    assert (recs[0].source, recs[0].reference, recs[0].recover, recs[0].samples) == (
        "how are you", "how do you do", "how are you doing", None)
    ds = write_jsonl(tmp_path / "seed1.json", [{"source": "[CLS] how are you [SEP]", "reference": "how do you do [SEP]",
                                           "recover": "[CLS] how are you doing [SEP] [PAD] [PAD]"}])
    r = read_predictions(ds)[0]
    assert r.source.split() == ["how", "are", "you"]
    assert r.reference.split() == ["how", "do", "you", "do"]
    assert r.recover == " how are you doing   "  # DiffuSeq: strip first, then delete tokens
    assert r.candidates == (r.recover,)


def test_field_specific_cleaning_as_diffuseq():
    assert clean_source(" [CLS] a [PAD] [SEP] ") == " a [PAD] "       # sources keep [PAD]
    assert clean_reference("[CLS] a [SEP] [PAD]") == " a  [PAD]"       # references too
    assert clean_output("[CLS] a [SEP] [PAD]") == " a  "


def test_samples_are_candidates(tmp_path, write_jsonl):
    p = write_jsonl(tmp_path / "s.jsonl", [{**ROW, "samples": ["x [PAD]", "y"]}, {**ROW, "samples": ["z"]}])
    recs = read_predictions(p)
    assert recs[0].candidates == ("x ", "y")
    assert recs[1].candidates == ("z",)


@pytest.mark.parametrize("lines,line,field,msg", [
    ([ROW, {"source": "a", "reference": "b"}], 2, "recover", "missing"),
    ([ROW, {**ROW, "reference": 3}], 2, "reference", "expected a string"),
    ([ROW, ["not", "an", "object"]], 2, None, "expected a JSON object"),
    ([ROW, {**ROW, "samples": "one string"}], 2, "samples", "non-empty list"),
    ([ROW, {**ROW, "samples": []}], 2, "samples", "non-empty list"),
    ([{**ROW, "samples": ["a"]}, ROW], 2, "samples", "present on some lines"),
])
def test_bad_records(tmp_path, lines, line, field, msg, write_jsonl):
    p = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(PredictionFileError, match=msg) as e:
        read_predictions(p)
    assert isinstance(e.value, ValueError)
    assert (e.value.line, e.value.field) == (line, field)
    assert str(p) in str(e.value) and f"line {line}" in str(e.value)
    if field:
        assert f"field '{field}'" in str(e.value)


@pytest.mark.parametrize("data,line,msg", [
    (json.dumps(ROW).encode() + b"\n\n" + json.dumps(ROW).encode() + b"\n", 2, "empty line"),
    (json.dumps(ROW).encode() + b"\n   \n", 2, "empty line"),
    (json.dumps(ROW).encode() + b"\n" + json.dumps(ROW).encode()[:-1].replace(b"how", b"h\xffw") + b"}\n", 2,
     "not valid UTF-8"),
    (json.dumps(ROW).encode() + b"\n{\"source\": \"a\", \n", 2, "invalid JSON"),
    (json.dumps(ROW).encode() + b"\n" + json.dumps(ROW).encode()[:-2] + b"\n", 2, "invalid JSON"),
])
def test_bad_bytes(tmp_path, data, line, msg):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(data)
    with pytest.raises(PredictionFileError, match=msg) as e:
        read_predictions(p)
    assert e.value.line == line and "bad.jsonl, line 2" in str(e.value)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(PredictionFileError, match="no records"):
        read_predictions(tmp_path / "empty.jsonl")
    with pytest.raises(PredictionFileError, match="not found"):
        read_predictions(tmp_path / "nope.jsonl")
    # no trailing newline and CRLF line ends are fine
    (tmp_path / "crlf.jsonl").write_bytes(json.dumps(ROW).encode() + b"\r\n" + json.dumps(ROW).encode())
    assert len(read_predictions(tmp_path / "crlf.jsonl")) == 2


def test_sample_files_must_line_up(tmp_path, write_jsonl):
    a = write_jsonl(tmp_path / "a.jsonl", [ROW, ROW])
    b = write_jsonl(tmp_path / "b.jsonl", [ROW])
    with pytest.raises(PredictionFileError, match="has 1 lines but") as e:
        read_prediction_files([a, b])
    assert "b.jsonl" in str(e.value)
    c = write_jsonl(tmp_path / "c.jsonl", [ROW, {**ROW, "source": "something else"}])
    with pytest.raises(PredictionFileError, match="not aligned") as e:
        read_prediction_files([a, c])
    assert (e.value.line, e.value.field) == (2, "source")
    d = write_jsonl(tmp_path / "d.jsonl", [ROW, {**ROW, "recover": "other"}])
    s = read_prediction_files([a, d])
    assert s.candidates()[1] == ["how are you doing", "other"]


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "x" / "r.json", {"a": 1})
    assert json.loads((tmp_path / "x" / "r.json").read_text()) == {"a": 1}
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["r.json"]
