"""`mambadiff evaluate` on many rows: worker processes score chunks of rows with results identical to the
serial ones, and the scoring shows its progress."""
import json
import random

import pytest

from mambadiff.metrics import parallel
from mambadiff.metrics.generation import evaluate_predictions

WORDS = "how what why can i do learn python the best way to is a quick fast sky blue".split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))


@pytest.fixture
def prediction_files(tmp_path, write_jsonl):
    """Two aligned files (two seeds) of 60 rows, each with 2 samples; cased, punctuated references."""
    rng = random.Random(0)
    rows = [(sentence(rng).capitalize() + "?", sentence(rng).upper() + ".") for _ in range(60)]
    paths = []
    for seed in (0, 1):
        recs = [{"source": src, "reference": ref, "recover": sentence(rng), "samples": [sentence(rng), sentence(rng)]}
                for src, ref in rows]
        paths.append(str(write_jsonl(tmp_path / f"seed{seed}.jsonl", recs)))
    return paths


def test_worker_processes_give_the_serial_results(prediction_files, monkeypatch):
    monkeypatch.setattr(parallel, "PARALLEL_MIN_ROWS", 10)  # the parent decides and cuts: 60 rows in chunks
    monkeypatch.setattr(parallel, "CHUNK_ROWS", 7)
    used = []
    real_pool = parallel.RowPool._pool
    monkeypatch.setattr(parallel.RowPool, "_pool", lambda self: used.append(self.workers) or real_pool(self))
    serial = evaluate_predictions(prediction_files, bertscore=False, workers=1)
    assert used == []
    pooled = evaluate_predictions(prediction_files, bertscore=False, workers=2)
    assert used and set(used) == {2}  # the rows were scored in two worker processes
    for result in (serial, pooled):
        result.pop("seconds")
    assert json.dumps(pooled, sort_keys=True) == json.dumps(serial, sort_keys=True)
    assert serial["mbr"] is not None and serial["diversity"] is not None


def test_the_pool_keeps_row_order_and_checks_its_workers():
    with parallel.RowPool(workers=1) as pool:
        assert pool.map(_double, list(range(2500))) == [2 * i for i in range(2500)]
    with pytest.raises(ValueError, match="workers"):
        parallel.RowPool(workers=0)


def _double(chunk):
    return [2 * x for x in chunk]


def test_the_cli_shows_the_progress_of_its_scoring(prediction_files, run_cli, monkeypatch):
    monkeypatch.setenv("MAMBADIFF_PROGRESS", "lines")
    r = run_cli("evaluate", "--predictions", *prediction_files, "--no-bertscore", "--workers", "1")
    assert r.exit_code == 0, r.output
    out = r.output
    for what in (prediction_files[0], prediction_files[1], "MBR selection", "copy-source baseline"):
        assert f"{what}: 60/60 (100%)" in out, out
