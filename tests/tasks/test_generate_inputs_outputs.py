"""What `mambadiff generate` reads and writes: a full disk stops it with one clean line and complete rows;
/dev/null and named pipes are read once; the rows keep the source and reference as given."""
import errno
import io
import json
import os
import threading
from pathlib import Path

import pytest

from mambadiff.metrics.generation import comparable_texts, generation_metrics


# ---- generate --out ------------------------------------------------------------------------------------
class FullDisk(io.RawIOBase):
    """An append-mode file with ``room`` bytes left: a write takes what fits, then fails with ENOSPC."""

    def __init__(self, path, room: int):
        self._file = io.FileIO(path, "a")
        self.room = room

    def writable(self):
        return True

    def fileno(self):
        return self._file.fileno()

    def seek(self, *args):
        return self._file.seek(*args)

    def write(self, data):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = self._file.write(bytes(data)[:self.room])
        self.room -= n
        return n

    def close(self):
        self._file.close()
        super().close()


def test_generate_out_on_a_full_disk_is_one_line_and_keeps_complete_rows(tiny_run, tmp_path, run_cli,
                                                                          assert_clean_error, monkeypatch):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(line + "\n" for line in (tiny_run / "data" / "valid.jsonl").read_text().splitlines()[:8]))
    out = tmp_path / "out.jsonl"
    opts = ["generate", "--checkpoint", tiny_run, "--data", data, "--batch-size", "2", "--workers", "1"]
    assert run_cli(*opts, "--out", tmp_path / "full.jsonl").exit_code == 0
    full = (tmp_path / "full.jsonl").read_bytes()
    real_open = Path.open

    def path_open(self, mode="r", buffering=-1, **kw):
        if self == out and "a" in mode:
            raw = FullDisk(self, room=len(full) // 2)
            return raw if buffering == 0 else io.BufferedWriter(raw)
        return real_open(self, mode, buffering, **kw)
    monkeypatch.setattr(Path, "open", path_open)
    line = assert_clean_error(run_cli(*opts, "--out", out), f"{out}: cannot write: no space left on device")
    kept = out.read_bytes()
    n = kept.count(b"\n")
    assert f"({n} complete rows kept; free some space and continue with --resume)" in line
    assert 0 < n < 8 and kept.endswith(b"\n") and full.startswith(kept)  # only whole rows, no torn line
    monkeypatch.undo()
    r = run_cli(*opts, "--out", out, "--resume")
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == full


# ---- inputs that can be read only once ---------------------------------------------------------------------
def test_dev_null_is_an_empty_input_named_as_such_and_nothing_is_written(tiny_run, tmp_path, run_cli,
                                                                         assert_clean_error):
    out = tmp_path / "out.jsonl"
    line = assert_clean_error(run_cli("generate", "--checkpoint", tiny_run, "--data", "/dev/null", "--out", out),
                              "/dev/null", "file is empty")
    assert "no such file" not in line
    assert not out.exists() and not (tmp_path / "out.jsonl.generate.json").exists()


@pytest.mark.timeout(120)
def test_a_named_pipe_is_read_once(tiny_run, tmp_path, run_cli):
    lines = (tiny_run / "data" / "valid.jsonl").read_text().splitlines()[:3]
    fifo = tmp_path / "pairs.fifo"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "w") as f:
            f.write("".join(line + "\n" for line in lines))
    writer = threading.Thread(target=feed, daemon=True)  # daemon: a reader that never comes cannot hang the run
    writer.start()
    out = tmp_path / "out.jsonl"
    r = run_cli("generate", "--checkpoint", tiny_run, "--data", fifo, "--out", out, "--workers", "1")
    writer.join(timeout=60)
    assert r.exit_code == 0, r.output
    assert [row["source"] for row in map(json.loads, out.read_text().splitlines())] == \
        [json.loads(line)["src"] for line in lines]


@pytest.mark.timeout(120)
def test_training_refuses_a_named_pipe_it_would_read_twice(tmp_path, run_cli, assert_clean_error):
    fifo = tmp_path / "train.fifo"
    os.mkfifo(fifo)  # nothing writes to it: the run must not block reading it
    assert_clean_error(run_cli("train", "--config", "demo", f"run_dir={tmp_path / 'run'}", f"data.path={fifo}"),
                       str(fifo), "not a regular file")


# ---- rows keep the texts as given -------------------------------------------------------------------------
def test_rows_hold_the_source_and_reference_as_given_with_words_the_vocabulary_lacks(tiny_run, tmp_path, run_cli):
    rows = [{"src": "How do I learn Python \u263a quickly?", "trg": "What's the FASTEST way to learn ਬਬਰ Python?"},
            {"src": "why is the sky blue", "trg": "what makes the sky blue " + " ".join(["word"] * 60)}]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    r = run_cli("generate", "--checkpoint", tiny_run, "--data", data, "--out", out, "--workers", "1")
    assert r.exit_code == 0, r.output
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(w["source"], w["reference"]) for w in written] == [(r["src"], r["trg"]) for r in rows]  # not cut
    assert all(w["recover"] == w["recover"].lower() for w in written)  # the model's output is decoded
    # scored in the form the model writes: every word of the reference counts, the casing does not
    assert comparable_texts([rows[0]["trg"]]) == ["what's the fastest way to learn ਬਬਰ python?"]


def test_the_dataset_generator_keeps_the_texts_as_given(tiny_run):
    from mambadiff.data.seq2seq import Seq2SeqDataset
    from mambadiff.tasks.paraphrase import generate
    from mambadiff.tasks.seq2seq import load_seq2seq_model

    model, tok, cfg = load_seq2seq_model(tiny_run)
    pairs = [("How do I learn Python \u263a?", "What's the BEST way \u263a?")]
    records = generate(model, tok, cfg, Seq2SeqDataset(pairs, tok, cfg.data.seq_len), limit=0, progress=False)
    assert (records[0]["source"], records[0]["reference"]) == pairs[0]


def test_a_file_of_decoded_rows_is_not_continued(tiny_run, tmp_path, run_cli):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(line + "\n" for line in (tiny_run / "data" / "valid.jsonl").read_text().splitlines()[:4]))
    out = tmp_path / "out.jsonl"
    opts = ["generate", "--checkpoint", tiny_run, "--data", data, "--out", out, "--workers", "1", "--batch-size", "2"]
    assert run_cli(*opts).exit_code == 0
    settings = tmp_path / "out.jsonl.generate.json"
    old = {**json.loads(settings.read_text()), "schema": "mambadiff.generate/1"}
    settings.write_text(json.dumps(old))
    r = run_cli(*opts, "--resume")
    assert r.exit_code == 1 and "other settings" in r.output and "mambadiff.generate/1" in r.output


def test_comparable_texts_keep_decoded_text_and_match_our_decoding(bert_tok):
    tok = bert_tok
    diffuseq = ["why don ' t you learn [UNK]? ", "how can i learn python?"]
    assert [t.split() for t in comparable_texts(diffuseq)] == [t.split() for t in diffuseq]
    raw = ["How can I learn Python?", "What's your VC/angel plan, e-mail me."]
    assert comparable_texts(raw) == [tok.decode(tok.encode(t)) for t in raw]
    m = generation_metrics(["how can i learn python?"], comparable_texts(["How can I learn Python?"]))
    assert m["bleu"] == pytest.approx(1.0)
