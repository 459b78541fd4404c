"""LRA data: the ListOps generator against an independent parser/evaluator of the TSV it writes, the
TSV reader (round trip, LRA's CRLF files, one error per malformed case), fixed tokenizers, bytes."""
import csv
import math
import statistics

import pytest

from mambadiff.data.classification import ClassificationDataset
from mambadiff.data.errors import DataError
from mambadiff.data.lra import (LISTOPS_VOCAB, ByteTokenizer, ListOpsGenerateConfig, ListOpsRules,
                                ListOpsTokenizer, generate_listops, generate_listops_splits,
                                is_fixed_tokenizer_dir, listops_folder_name, listops_source, listops_value,
                                load_fixed_tokenizer, read_listops_tsv, write_listops_tsv)

OPS = {"[MAX": max, "[MIN": min, "[MED": lambda a: math.floor(statistics.median(a)), "[SM": lambda a: sum(a) % 10}


def parse_pairs(tokens):
    """LRA's printed form: every parenthesised group holds exactly two items (atoms or groups)."""
    pos = 0

    def item():
        nonlocal pos
        t = tokens[pos]
        pos += 1
        if t != "(":
            assert t != ")", "unbalanced ')'"
            return t
        a, b = item(), item()
        assert tokens[pos] == ")", f"a group with more than two items at token {pos}"
        pos += 1
        return (a, b)

    tree = item()
    assert pos == len(tokens), "tokens after the root"
    return tree


def evaluate(source):
    """(value, depth in levels, argument counts, length without parentheses) of a printed source,
    read as prefix notation with a stack (independent of the generator's tree type)."""
    tokens = [t for t in source.split() if t not in "()"]
    stack, result, depth, arg_counts = [], None, 0, []
    for t in tokens:
        if t in OPS:
            stack.append([t])
            depth = max(depth, len(stack))
        elif t == "]":
            op, *args = stack.pop()
            arg_counts.append(len(args))
            v = OPS[op](args)
            if stack:
                stack[-1].append(v)
            else:
                result = v
        else:
            assert t.isdigit() and len(t) == 1
            depth = max(depth, len(stack) + 1)
            if stack:
                stack[-1].append(int(t))
            else:
                result = int(t)
    assert not stack and result is not None
    return result, depth, arg_counts, len(tokens)


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["Source", "Target"]
    return rows[1:]


def test_generator_follows_lra_rules(tmp_path):
    path = tmp_path / "g.tsv"
    assert write_listops_tsv(path, generate_listops(24, seed=3)) == 24
    rows = read_rows(path)
    assert len({s for s, _ in rows}) == 24
    for source, target in rows:
        parse_pairs(source.split())
        value, depth, args, length = evaluate(source)
        assert value == int(target)
        assert depth <= 10 and 500 <= length <= 2000
        assert all(2 <= a <= 10 for a in args)


def test_generator_small_rules_and_seed():
    rules = ListOpsRules(max_depth=3, max_args=3, min_length=5, max_length=20)
    rows = list(generate_listops(300, seed=1, rules=rules))
    seen_depths, seen_args = set(), set()
    for tree, value in rows:
        v, depth, args, length = evaluate(listops_source(tree))
        assert v == value and depth <= 3 and 5 <= length <= 20 and all(2 <= a <= 3 for a in args)
        seen_depths.add(depth)
        seen_args.update(args)
    assert seen_depths == {2, 3} and seen_args == {2, 3}  # the bounds are reached, not only respected
    again = [listops_source(t) for t, _ in generate_listops(300, seed=1, rules=rules)]
    assert again == [listops_source(t) for t, _ in rows]
    other = [listops_source(t) for t, _ in generate_listops(300, seed=2, rules=rules)]
    assert other != again


def test_operators():
    assert listops_value(("[MED", [3, 8, 1, 6])) == 4  # (3 + 6) / 2 rounded down
    assert listops_value(("[MED", [1, 2])) == 1 and listops_value(("[MED", [7, 2, 5])) == 5
    assert listops_value(("[SM", [9, 9, 5])) == 3
    assert listops_value(("[MAX", [2, ("[MIN", [4, 7]), 1])) == 4


def test_reader_round_trip_and_lra_crlf(tmp_path):
    rules = ListOpsRules(max_depth=4, max_args=4, min_length=5, max_length=60)
    examples = list(generate_listops(40, seed=0, rules=rules))
    path = tmp_path / "x.tsv"
    write_listops_tsv(path, examples)
    data = read_listops_tsv(path, verbose=False)
    assert data.examples == [(listops_source(t, parens=False), v) for t, v in examples]
    assert data.label_names == [str(d) for d in range(10)] and data.n_rows == 40
    # LRA's generator writes with csv's default "\r\n" line ends
    crlf = tmp_path / "lra.tsv"
    with open(crlf, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["Source", "Target"])
        w.writerow(["( ( ( [MAX 2 ) 9 ) ] )", "9"])
        w.writerow(["( ( [SM 4 ) ] )", "4"])
    assert crlf.read_bytes().count(b"\r\n") == 3
    assert read_listops_tsv(crlf, verbose=False).examples == [("[MAX 2 9 ]", 9), ("[SM 4 ]", 4)]
    assert read_listops_tsv(crlf, max_tokens=2, verbose=False).examples[0] == ("[MAX 2", 9)


BAD_ROWS = [
    ("Input\tOutput\n( [MAX 1 ] )\t1\n", 1, None, "expected the header"),
    ("Source\tTarget\n[MAX 1 2 ]\t2\n[MAX 1 ]\n", 3, None, "expected 2 tab-separated fields"),
    ("Source\tTarget\n[MAX 1 2 ]\t2\t7\n", 2, None, "expected 2 tab-separated fields"),
    ("Source\tTarget\n( )\t2\n", 2, "Source", "empty source"),
    ("Source\tTarget\n[MAX 1 [FOO 2 ] ]\t2\n", 2, "Source", "unknown token '[FOO'"),
    ("Source\tTarget\n[MAX 1 2 ]\ttwo\n", 2, "Target", "expected an integer 0-9"),
    ("Source\tTarget\n[MAX 1 2 ]\t10\n", 2, "Target", "expected an integer 0-9"),
    ("Source\tTarget\n[MAX 1 2 ]\t-1\n", 2, "Target", "expected an integer 0-9"),
    ("Source\tTarget\n[MAX 1 ]\t1\n\"[MIN 2 ]\t2\n[SM 3 ]\t3\n", 3, "Source", "unknown token '\"[MIN'"),
]


@pytest.mark.parametrize("text,line,field,message", BAD_ROWS)
def test_reader_errors_name_file_line_field(tmp_path, text, line, field, message):
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        read_listops_tsv(path, verbose=False)
    e = err.value
    assert e.file == str(path) and e.line == line and e.field == field and message in str(e)
    assert str(e).startswith(f"{path}, line {line}")


def test_reader_empty_missing_skip(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        read_listops_tsv(empty)
    with pytest.raises(DataError, match="cannot read the file"):
        read_listops_tsv(tmp_path / "missing.tsv")
    latin1 = tmp_path / "latin1.tsv"
    latin1.write_bytes(b"Source\tTarget\n[MAX 1 \xff ]\t1\n")
    with pytest.raises(DataError, match="not UTF-8 text"):
        read_listops_tsv(latin1)
    mixed = tmp_path / "mixed.tsv"
    mixed.write_text("Source\tTarget\n[MAX 1 2 ]\t2\n\n[MIN 1 ]\tx\n[SM 5 6 ]\t1\n")
    data = read_listops_tsv(mixed, on_bad_row="skip", verbose=False)
    assert data.examples == [("[MAX 1 2 ]", 2), ("[SM 5 6 ]", 1)] and data.skipped == {"bad Target": 1}


def test_listops_tokenizer(tmp_path):
    tok = ListOpsTokenizer()
    assert tok.vocab_size == 16 == len(LISTOPS_VOCAB) and tok.pad_id == 15
    ids = tok.encode("( ( [MAX 2 ) 9 ) ] )")
    assert ids == [10, 2, 9, 14] and tok.decode(ids + [tok.pad_id]) == "[MAX 2 9 ]"
    with pytest.raises(ValueError, match="unknown ListOps token 'x'"):
        tok.encode("[MAX x ]")
    tok.save(tmp_path / "tok")
    assert is_fixed_tokenizer_dir(tmp_path / "tok") and not is_fixed_tokenizer_dir(tmp_path)
    assert load_fixed_tokenizer(tmp_path / "tok").encode("[SM 1 ]") == [13, 1, 14]


def test_bytes_non_ascii_and_truncation():
    tok = ByteTokenizer()
    text = "café ☃ naïve"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and len(ids) == len(text) + 1 + 2 + 1  # é, ☃ (3 bytes), ï
    assert tok.decode(ids) == text and tok.vocab_size == 257 and tok.pad_id == 256
    long = "ü" * 3000  # 6,000 bytes
    ds = ClassificationDataset([(long, 1), ("ok", 0)], tok, 4096, add_special_tokens=False)
    assert ds.lengths == [4096, 2] and ds.token_ids[0][:2] == [0xC3, 0xBC]
    batch = ds.collate([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, 4096) and int(batch["input_ids"][1, 2]) == 256


def test_generate_splits_folder_reuse_and_stable_test_set(tmp_path, capsys):
    small = dict(root=str(tmp_path), max_depth=3, max_args=3, min_length=5, max_length=20, n_valid=4, n_test=6)
    cfg = ListOpsGenerateConfig(generate=True, n_train=10, **small)
    paths = generate_listops_splits(cfg)
    assert paths["train"].parent.name == listops_folder_name(cfg) == \
        "listops-depth3-args3-len5-20-seed0-train10-valid4-test6"
    assert "generating ListOps data into" in capsys.readouterr().out
    rows = {s: read_rows(p) for s, p in paths.items()}
    assert [len(rows[s]) for s in ("train", "valid", "test")] == [10, 4, 6]
    sources = [r[0] for s in rows for r in rows[s]]
    assert len(set(sources)) == 20  # distinct across splits
    mtime = paths["train"].stat().st_mtime_ns
    assert generate_listops_splits(cfg) == paths and paths["train"].stat().st_mtime_ns == mtime
    assert capsys.readouterr().out == ""  # reused, not regenerated
    bigger = generate_listops_splits(ListOpsGenerateConfig(generate=True, n_train=30, **small), verbose=False)
    assert read_rows(bigger["test"]) == rows["test"] and read_rows(bigger["valid"]) == rows["valid"]


def test_train_split_with_its_own_length_range(tmp_path):
    small = dict(root=str(tmp_path), max_depth=4, max_args=3, min_length=15, max_length=30, n_valid=5, n_test=5)
    plain = generate_listops_splits(ListOpsGenerateConfig(generate=True, n_train=8, **small), verbose=False)
    cfg = ListOpsGenerateConfig(generate=True, n_train=40, train_min_length=3, train_max_length=12, **small)
    paths = generate_listops_splits(cfg, verbose=False)
    assert paths["train"].parent.name == listops_folder_name(cfg) == \
        "listops-depth4-args3-len15-30-seed0-train40-valid5-test5-trainlen3-12"
    for split in ("valid", "test"):  # the same rows as without a train range
        assert read_rows(paths[split]) == read_rows(plain[split])
    train = read_rows(paths["train"])
    lengths = [sum(t not in "()" for t in src.split()) for src, _ in train]  # values, operators and ']'
    assert len(train) == 40 and all(3 <= n <= 12 for n in lengths)
    held_out = {r[0] for s in ("valid", "test") for r in read_rows(paths[s])}
    assert len({r[0] for r in train} | held_out) == 50  # distinct across splits
    with pytest.raises(ValueError, match="min_length"):
        generate_listops_splits(ListOpsGenerateConfig(generate=True, train_min_length=50, train_max_length=10, **small))
