"""`mambadiff generate`: rows written batch by batch, --resume after a kill, stdin/stdout, errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mambadiff.cli import main
from mambadiff.diffusion.mbr import mbr_select

SRC = Path(__file__).resolve().parents[2] / "src"


def gen(run, *args, input=None):
    return CliRunner().invoke(main, ["generate", "--checkpoint", str(run), *map(str, args)], input=input)


def rows_of(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def many_pairs(run, tmp_path, n):
    """n pairs (the validation pairs repeated) in a jsonl file."""
    lines = (run / "data" / "valid.jsonl").read_text().splitlines()
    path = tmp_path / f"pairs{n}.jsonl"
    path.write_text("".join(lines[i % len(lines)] + "\n" for i in range(n)))
    return path


def test_killed_run_resumes_to_the_uninterrupted_file(tiny_run, tmp_path):
    data = many_pairs(tiny_run, tmp_path, 24)
    opts = ["--data", data, "--steps", "5", "--samples", "2", "--no-mbr", "--batch-size", "2", "--seed", "7"]
    full = tmp_path / "full.jsonl"
    r = gen(tiny_run, *opts, "--out", full)
    assert r.exit_code == 0, r.output
    assert len(rows_of(full)) == 24

    part = tmp_path / "part.jsonl"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "MAMBADIFF_PROGRESS": "off"}
    proc = subprocess.Popen([sys.executable, "-m", "mambadiff", "generate", "--checkpoint", str(tiny_run),
                             *map(str, opts), "--out", str(part)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if part.exists() and part.read_bytes().count(b"\n") >= 4:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    written = part.read_bytes()
    assert 4 <= written.count(b"\n") < 24
    # rows so far are a prefix of the uninterrupted file (written batch by batch, nothing held back)
    assert full.read_bytes().startswith(written[:written.rfind(b"\n") + 1])
    with part.open("ab") as f:  # a crash in the middle of a write leaves a partial last line
        f.write(b'{"source": "cut sh')
    r = gen(tiny_run, *opts, "--out", part, "--resume")
    assert r.exit_code == 0, r.output
    assert "kept from before" in r.output
    assert part.read_bytes() == full.read_bytes()


def test_resume_checks_settings_and_rows(tiny_run, tmp_path):
    data = many_pairs(tiny_run, tmp_path, 6)
    out = tmp_path / "out.jsonl"
    opts = ["--data", data, "--steps", "2", "--batch-size", "4"]
    assert gen(tiny_run, *opts, "--out", out).exit_code == 0
    good = out.read_bytes()
    assert gen(tiny_run, *opts, "--out", out, "--resume").exit_code == 0  # nothing left to do
    assert out.read_bytes() == good

    r = gen(tiny_run, "--data", data, "--steps", "3", "--batch-size", "4", "--out", out, "--resume")
    assert r.exit_code != 0 and isinstance(r.exception, SystemExit)
    assert "other settings" in r.output and "steps" in r.output
    assert out.read_bytes() == good  # refused before touching the file

    lines = good.splitlines(keepends=True)
    out.write_bytes(lines[0] + b"not json\n" + b"".join(lines[2:]))
    r = gen(tiny_run, *opts, "--out", out, "--resume")
    assert r.exit_code != 0 and "line 2" in r.output and "out.jsonl" in r.output

    other = tmp_path / "other.jsonl"
    other.write_text('{"src": "a completely different question", "trg": "x"}\n' * 6)
    out.write_bytes(good)
    r = gen(tiny_run, "--data", other, "--steps", "2", "--batch-size", "4", "--out", out, "--resume")
    assert r.exit_code != 0 and "line 1" in r.output and "other data" in r.output


def test_mbr_rows_pick_among_their_samples(tiny_run, tmp_path):
    out = tmp_path / "mbr.jsonl"
    r = gen(tiny_run, "--data", tiny_run / "data" / "valid.jsonl", "--limit", "5", "--steps", "3",
            "--samples", "3", "--mbr", "--batch-size", "2", "--out", out)
    assert r.exit_code == 0, r.output
    rows = rows_of(out)
    assert len(rows) == 5
    picks = mbr_select([row["samples"] for row in rows])
    assert [row["recover"] for row in rows] == [row["samples"][k] for row, k in zip(rows, picks)]
    assert all(len(row["samples"]) == 3 and row["reference"] for row in rows)


def test_text_and_stdin_sources_print_one_line_each(tiny_run):
    texts = ["how do i learn python?", "what is the best way to lose weight?"]
    r = gen(tiny_run, "--text", texts[0], "--text", texts[1], "--steps", "3")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    piped = gen(tiny_run, "--text", "-", "--steps", "3", input="".join(t + "\n" for t in texts))
    assert piped.exit_code == 0, piped.output
    assert piped.stdout.splitlines() == lines
    jsonl = gen(tiny_run, "--data", "-", "--steps", "3", input="".join(json.dumps({"src": t}) + "\n" for t in texts))
    assert jsonl.exit_code == 0, jsonl.output
    assert jsonl.stdout.splitlines() == lines
    from mambadiff import Paraphraser
    assert Paraphraser.from_pretrained(tiny_run)(texts, steps=3) == lines

    bad = gen(tiny_run, "--data", "-", input='{"src": "ok"}\n{"trg": "no src"}\n')
    assert bad.exit_code != 0 and "<stdin>, line 2, field 'src'" in bad.output
    both = gen(tiny_run, "--text", "a", "--data", tiny_run / "data" / "valid.jsonl")
    assert both.exit_code == 2 and "either --data or --text" in both.output


@pytest.mark.parametrize("args, message", [
    (["--samples", "0"], "--samples"),
    (["--batch-size", "-4"], "--batch-size"),
    (["--steps", "5000"], "the maximum is 100"),
])
def test_bad_sampling_arguments_are_errors(tiny_run, tmp_path, args, message):
    out = tmp_path / "out.jsonl"
    r = gen(tiny_run, "--data", tiny_run / "data" / "valid.jsonl", "--limit", "2", "--out", out, *args)
    assert r.exit_code != 0 and isinstance(r.exception, SystemExit), r.exception
    assert message in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_truncated_weights_name_the_file(tiny_run, tmp_path):
    import shutil
    ckpt = tmp_path / "ckpt"
    src = sorted((tiny_run / "checkpoints").glob("step_*"))[-1]
    shutil.copytree(src, ckpt)
    for name in ("model.safetensors", "ema.safetensors"):
        data = (ckpt / name).read_bytes()
        (ckpt / name).write_bytes(data[:len(data) * 2 // 3])
    args = ["generate", "--checkpoint", str(ckpt), "--data", str(tiny_run / "data" / "valid.jsonl"),
            "--out", str(tmp_path / "out.jsonl")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0 and isinstance(r.exception, SystemExit), r.exception
    assert "ema.safetensors" in r.output and "truncated" in r.output
    r = CliRunner().invoke(main, [*args, "--no-ema"])
    assert r.exit_code != 0 and "model.safetensors" in r.output
    assert not (tmp_path / "out.jsonl").exists()


def test_jsonl_rows_are_read_strictly_and_lazily():
    import io

    from mambadiff.data.errors import DataError
    from mambadiff.tasks.generation_io import iter_jsonl_rows, iter_text_rows

    def rows(data: bytes):
        return list(iter_jsonl_rows(io.BytesIO(data), "in.jsonl"))

    got = rows(b'\xef\xbb\xbf{"src": " a b ", "trg": "c"}\n{"src": "d", "extra": 1}\n\n\n')
    assert [(r.source, r.reference, r.line) for r in got] == [("a b", "c", 1), ("d", None, 2)]
    for data, where in [(b'{"src": "a"}\n\n{"src": "b"}\n', "line 2"),
                        (b'{"src": "a"}\n{"src": 3}\n', "line 2, field 'src'"),
                        (b'{"trg": "a"}\n', "line 1, field 'src'"),
                        (b'{"src": "a", "trg": " "}\n', "line 1, field 'trg'"),
                        (b'{"src": "a", "trg": null}\n', "line 1, field 'trg'"),
                        (b'{"src": "\xff"}\n', "line 1"), (b'[1]\n', "line 1"), (b'{"src": \n', "line 1"),
                        (b'', "empty"), (b'\n\n', "empty")]:
        with pytest.raises(DataError, match=where):
            rows(data)
    lazy = iter_jsonl_rows(io.BytesIO(b'{"src": "a"}\nnot json\n'), "in.jsonl")
    assert next(lazy).source == "a"  # rows before a bad line are handed out as they are read
    assert [r.source for r in iter_text_rows([" x \n", "y"], "<stdin>")] == ["x", "y"]
    with pytest.raises(DataError, match="<stdin>, line 2"):
        list(iter_text_rows(["x\n", "\n"], "<stdin>"))


def test_weights_that_do_not_fit_the_config_name_the_file(tiny_run, tmp_path):
    import shutil

    from mambadiff.tasks.seq2seq import load_seq2seq_model
    ckpt = tmp_path / "ckpt"
    shutil.copytree(sorted((tiny_run / "checkpoints").glob("step_*"))[-1], ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model"]["emb_dim"] = 16
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"ema.safetensors: does not fit .*shape"):
        load_seq2seq_model(ckpt)


def test_a_classification_run_is_named_as_such(tiny_run, tmp_path):
    import shutil

    from mambadiff.train.checkpoint import resolve_checkpoint
    folder = tmp_path / "classify_ckpt"
    shutil.copytree(resolve_checkpoint(tiny_run), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["param_match"] = {"enabled": True}  # what a classification run's config.json holds
    (folder / "config.json").write_text(json.dumps(cfg))
    r = gen(folder, "--text", "how do i learn python?")
    assert r.exit_code != 0 and "a classification run" in r.output and "classify eval" in r.output
    assert "Traceback" not in r.output


def test_sources_from_a_closed_stdin_are_a_clear_error(tiny_run):
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "MAMBADIFF_PROGRESS": "off"}
    for args in (["--text", "-"], ["--data", "-"]):
        r = subprocess.run([sys.executable, "-m", "mambadiff", "generate", "--checkpoint", str(tiny_run), *args],
                           env=env, capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.close(0))
        assert r.returncode == 2 and "stdin is closed" in r.stderr and "Traceback" not in r.stderr, r.stderr
