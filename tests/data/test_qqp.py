"""QQP converter and the `data` CLI group."""
import json
import random

import pytest

from mambadiff.data import DataError
from mambadiff.data.qqp import convert_qqp
from mambadiff.data.seq2seq import read_seq2seq_jsonl

HEADER = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"


def make_tsv(path, n=300, seed=0):
    """A Quora-like file: clusters of duplicate questions plus non-duplicates."""
    rng = random.Random(seed)
    lines = [HEADER]
    qid = 0
    rid = 0
    expected = []
    for c in range(n // 3):
        size = rng.choice([2, 2, 2, 3, 4])
        qs = [f"What is question {c} variant {v}?" for v in range(size)]
        ids = list(range(qid, qid + size))
        qid += size
        for a in range(size - 1):  # a chain: all of a cluster connected
            lines.append(f"{rid}\t{ids[a]}\t{ids[a + 1]}\t{qs[a]}\t{qs[a + 1]}\t1\n")
            expected.append((qs[a], qs[a + 1]))
            rid += 1
        lines.append(f"{rid}\t{ids[0]}\t{qid + 10_000}\t{qs[0]}\tUnrelated question {c}?\t0\n")
        rid += 1
    path.write_text("".join(lines), encoding="utf-8")
    return expected


def test_convert_splits_and_content(tmp_path):
    src = tmp_path / "quora_duplicate_questions.tsv"
    expected = make_tsv(src)
    res = convert_qqp(src, tmp_path / "out", valid_fraction=0.1, test_fraction=0.1, seed=1)
    assert res.duplicates == len(expected) and res.skipped_empty == 0 and res.repeated == 0
    got = {k: read_seq2seq_jsonl(tmp_path / "out" / f"{k}.jsonl") for k in ("train", "valid", "test")}
    assert sorted(p for v in got.values() for p in v) == sorted(expected)
    n = len(expected)
    for k in ("valid", "test"):
        assert 0.07 * n <= len(got[k]) <= round(0.1 * n)  # fits under the target, never over
        assert res.split_sizes[k] == len(got[k])
    # No question in two splits.
    qs = {k: {q for p in v for q in p} for k, v in got.items()}
    assert not (qs["train"] & qs["valid"]) and not (qs["train"] & qs["test"]) and not (qs["valid"] & qs["test"])
    # Input order kept within a split.
    order = {p: i for i, p in enumerate(expected)}
    for v in got.values():
        assert [order[p] for p in v] == sorted(order[p] for p in v)
    # Deterministic; another seed gives another split.
    convert_qqp(src, tmp_path / "again", valid_fraction=0.1, test_fraction=0.1, seed=1)
    convert_qqp(src, tmp_path / "other", valid_fraction=0.1, test_fraction=0.1, seed=2)
    for k in ("train", "valid", "test"):
        assert (tmp_path / "again" / f"{k}.jsonl").read_bytes() == (tmp_path / "out" / f"{k}.jsonl").read_bytes()
    assert (tmp_path / "other" / "test.jsonl").read_bytes() != (tmp_path / "out" / "test.jsonl").read_bytes()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_quoting_empty_and_repeated(tmp_path):
    src = tmp_path / "q.tsv"
    src.write_text(
        HEADER
        + '0\t1\t2\t"A ""quoted""\tquestion\nover two lines?"\tSame question?\t1\n'
        + "1\t3\t4\tEmpty partner?\t \t1\n"
        + '2\t1\t2\t"A ""quoted""\tquestion\nover two lines?"\tSame question?\t1\n'
        + "\n"
        + "3\t5\t6\tCafé naïve?\tCafé naïf?\t1\n",
        encoding="utf-8",
    )
    res = convert_qqp(src, tmp_path / "o", valid_fraction=0, test_fraction=0)
    assert (res.rows, res.duplicates, res.skipped_empty, res.repeated) == (4, 4, 1, 1)
    assert sorted(res.paths) == ["train"]
    assert not (tmp_path / "o" / "valid.jsonl").exists()
    pairs = read_seq2seq_jsonl(tmp_path / "o" / "train.jsonl")
    assert pairs == [('A "quoted"\tquestion\nover two lines?', "Same question?"), ("Café naïve?", "Café naïf?")]
    assert len((tmp_path / "o" / "train.jsonl").read_text(encoding="utf-8").splitlines()) == 2

    glue = tmp_path / "glue.tsv"  # GLUE files: quotes are ordinary characters
    glue.write_text(HEADER + '0\t1\t2\t"Hi" she said?\tShe said "hi"?\t1\n', encoding="utf-8")
    convert_qqp(glue, tmp_path / "g", valid_fraction=0, test_fraction=0, quoting="none")
    assert read_seq2seq_jsonl(tmp_path / "g" / "train.jsonl") == [('"Hi" she said?', 'She said "hi"?')]


BAD = {
    # name: (content bytes, line, column or None, message fragment)
    "glue_test_split": (b"id\tquestion1\tquestion2\n0\ta?\tb?\n", 1, "is_duplicate", "GLUE QQP test split"),
    "missing_question2": (b"id\tquestion1\tis_duplicate\n0\ta?\t1\n", 1, "question2", "no column"),
    "ragged_short": ((HEADER + "0\t1\t2\ta?\tb?\t1\n1\t3\t4\tc?\t1\n").encode(), 3, "is_duplicate", "got 5"),
    "ragged_long": ((HEADER + "0\t1\t2\ta?\tb?\t1\textra\n").encode(), 2, "<extra column 7>", "got 7"),
    "bad_label": ((HEADER + "0\t1\t2\ta?\tb?\tyes\n").encode(), 2, "is_duplicate", "expected 0 or 1"),
    "non_utf8": ((HEADER + "0\t1\t2\ta?\tb?\t1\n").encode() + b"1\t3\t4\tcaf\xe9?\tb?\t1\n", 3, None, "UTF-8"),
    "empty_file": (b"", None, None, "empty"),
    "no_duplicates": ((HEADER + "0\t1\t2\ta?\tb?\t0\n").encode(), None, None, "no duplicate pairs"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(tmp_path, case):
    content, line, column, fragment = BAD[case]
    src = tmp_path / "bad.tsv"
    src.write_bytes(content)
    with pytest.raises(DataError) as e:
        convert_qqp(src, tmp_path / "out", valid_fraction=0, test_fraction=0)
    msg = str(e.value)
    assert "bad.tsv" in msg and fragment in msg and "\n" not in msg
    if line is not None:
        assert f"line {line}" in msg
    if column is not None:
        assert f"field '{column}'" in msg and e.value.field == column
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_bad_arguments(tmp_path):
    src = tmp_path / "q.tsv"
    make_tsv(src, n=30)
    with pytest.raises(ValueError, match="valid_fraction"):
        convert_qqp(src, tmp_path / "o", valid_fraction=1.5)
    with pytest.raises(ValueError, match="< 1"):
        convert_qqp(src, tmp_path / "o", valid_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="quoting"):
        convert_qqp(src, tmp_path / "o", quoting="auto")
    with pytest.raises(DataError, match="file not found"):
        convert_qqp(tmp_path / "missing.tsv", tmp_path / "o")
    one = tmp_path / "one.tsv"
    one.write_text(HEADER + "0\t1\t2\ta?\tb?\t1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="too few"):
        convert_qqp(one, tmp_path / "o", valid_fraction=0.1, test_fraction=0.1)


def test_cli_qqp(tmp_path, run_cli):
    src = tmp_path / "quora_duplicate_questions.tsv"
    expected = make_tsv(src, n=60)
    r = run_cli("data", "qqp", str(src), "--out", str(tmp_path / "d"), "--valid-fraction", "0.1",
                "--test-fraction", "0.1", "--seed", "3")
    assert r.exit_code == 0, r.output
    assert "duplicate pairs" in r.output and "train.jsonl" in r.output
    total = sum(len(read_seq2seq_jsonl(tmp_path / "d" / f"{k}.jsonl")) for k in ("train", "valid", "test"))
    assert total == len(expected)

    bad = tmp_path / "glue_test.tsv"
    bad.write_text("id\tquestion1\tquestion2\n0\ta?\tb?\n", encoding="utf-8")
    r = run_cli("data", "qqp", str(bad), "--out", str(tmp_path / "e"))
    assert r.exit_code == 1
    assert r.output.startswith("Error: ") and "glue_test.tsv, line 1, field 'is_duplicate'" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_cli_builtin(tmp_path, run_cli):
    r = run_cli("data", "builtin", "--out", str(tmp_path / "b"), "--n-train", "100",
                "--n-valid", "10", "--n-test", "10", "--seed", "4")
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "b" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 100 and all(set(x) == {"src", "trg"} for x in rows)
    r = run_cli("data", "builtin", "--out", str(tmp_path / "c"), "--n-train", "-5")
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "n_train" in r.output
