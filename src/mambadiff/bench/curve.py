"""Paraphrase quality against training wall-clock: every checkpoint of a run, scored on the same rows.

`score_run` samples the first ``limit`` pairs of a ``{src, trg}`` jsonl file with each checkpoint of
``RUN/checkpoints/step_*`` (its own ``sample`` settings, with ``steps`` / ``samples`` / ``seed`` /
``batch_size`` replaced when given), writes the outputs to ``RUN/eval/step_XXXXXXXX.jsonl`` and their
scores to ``RUN/eval/step_XXXXXXXX.json``: the JSON of `mambadiff evaluate`
(`mambadiff.metrics.generation.SCHEMA`, scored by `evaluate_predictions`) plus

    "step": int, "train_seconds": float | null,   the checkpoint's (from its trainer_state.json)
    "data": str, "limit": int,                     the jsonl file and the row limit (0: all rows)
    "curve": {"data", "data_sha256", "limit", "rows", "settings", "device", "ema", "bertscore",
              "checkpoint", "train_seconds"}       what was sampled and how (the reuse key)

A score file whose ``curve`` block matches (same rows of the data, limit, settings, device and the
checkpoint's training clock; BERTScore scored, or not asked for) is reused, not regenerated; one
scored without the BERTScore now asked for is scored again from its outputs (not sampled again); any
other is replaced. Score files of checkpoints pruned since (``train.keep_checkpoints``) that match stay in
the curve, so calling it during a long run builds the whole curve.

Checkpoints written before the training clock was recorded have no ``train_seconds``: their rows get
``minutes`` None, one warning per run, and are left off the minutes plot.

`run_curve_benchmark` does this for several runs and prints a table (run, step, minutes, BLEU,
ROUGE-L, iBLEU, repeat rate, mean length), writes the rows as JSON and plots BLEU and ROUGE-L
against training minutes, with each run's copy-source baseline dashed.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from mambadiff.data.errors import DataError, notify
from mambadiff.fileio import atomic_open, atomic_write_jsonl
from mambadiff.report.summary import curve_rows

__all__ = ["CurveData", "read_curve_data", "checkpoint_clock", "score_run", "run_curve_benchmark", "TABLE_COLUMNS"]

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["run", "step", "minutes", "bleu", "rouge_l", "bertscore_f1", "ibleu", "repeat_rate",
                 "ngram_repeat_rate", "len_words"]


@dataclass(frozen=True)
class CurveData:
    """The rows every checkpoint is scored on (read once, checked strictly)."""

    path: Path
    limit: int            # 0: all rows
    rows: tuple           # SourceRow, each with a reference
    sha256: str           # of the (src, trg) pairs used: the data part of the reuse key


def read_curve_data(path: str | Path, limit: int) -> CurveData:
    """The first ``limit`` (0: all) ``{src, trg}`` pairs of a jsonl file; DataError names the file,
    line and field of a bad line (lines after the limit are not read)."""
    from mambadiff.data.seq2seq import iter_seq2seq_jsonl
    from mambadiff.tasks.paraphrase import SourceRow

    path = Path(path)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit: expected an int >= 0 (0: all rows), got {limit!r}")
    if not path.is_file():
        raise DataError("is a folder, expected a jsonl file of {src, trg}" if path.is_dir() else "file not found",
                        file=path)
    digest = hashlib.sha256()
    rows = []
    with open(path, "rb") as f:
        for lineno, src, trg in itertools.islice(iter_seq2seq_jsonl(f, str(path)), limit or None):
            rows.append(SourceRow(src, trg, str(path), lineno))
            digest.update(json.dumps([src, trg], ensure_ascii=False).encode("utf-8") + b"\n")
    return CurveData(path, limit, tuple(rows), digest.hexdigest())


def checkpoint_clock(folder: Path) -> tuple[int, float | None]:
    """(step, train_seconds or None) of a checkpoint folder, from its trainer_state.json."""
    from mambadiff.train.checkpoint import CheckpointError, read_json

    path = folder / "trainer_state.json"
    try:
        state = read_json(path)
    except (FileNotFoundError, ValueError) as e:
        raise CheckpointError(path, str(e).split(": ", 1)[-1]) from None
    step = state.get("step") if isinstance(state, dict) else None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(path, f"'step' must be an int >= 0, got {step!r}")
    seconds = state.get("train_seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        seconds = None
    return step, seconds


def run_checkpoints(run_dir: str | Path) -> list[Path]:
    """The step checkpoints of a run folder, oldest first; ValueError naming the folder when there are none."""
    from mambadiff.train.checkpoint import step_checkpoints

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run folder")
    found = step_checkpoints(run_dir)
    if not found:
        raise ValueError(f"{run_dir}: holds no checkpoints (expected {run_dir / 'checkpoints'}/step_*)")
    return found[::-1]


def _read_existing(path: Path) -> dict | None:
    try:
        res = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return res if isinstance(res, dict) else None


def _match(existing: dict | None, key: dict) -> str | None:
    """How a score file relates to the reuse key: "same" (reuse it; scored with BERTScore also does
    when it is not asked for), "sampled" (the same outputs, scored without the BERTScore now asked
    for) or None."""
    from mambadiff.metrics.generation import SCHEMA

    if not existing or existing.get("schema") != SCHEMA or not isinstance(existing.get("model"), dict):
        return None
    old = existing.get("curve")
    if not isinstance(old, dict) or any(old.get(k) != key[k] for k in key if k not in ("checkpoint", "bertscore")):
        return None
    return "same" if old.get("bertscore") or not key["bertscore"] else "sampled"


def score_run(run_dir: str | Path, data: CurveData, *, sampling: dict | None = None, bertscore: bool = True,
              device: str = "cpu", progress: bool = False, say: Callable[[str], None] | None = None,
              workers: int = 0) -> list[tuple[int, dict]]:
    """(step, score JSON) for every checkpoint of ``run_dir`` (see the module docstring), step order.
    ``sampling``: `Paraphraser.settings` keywords replacing the checkpoints' own (None values ignored);
    ``workers``: batches sampled at once (0: `sampling_workers`'s choice)."""
    from mambadiff.metrics.generation import evaluate_predictions
    from mambadiff.tasks.paraphrase import Paraphraser, sampling_workers

    say = say or (lambda msg: None)
    run_dir = Path(run_dir)
    eval_dir = run_dir / "eval"
    base_key = None  # the reuse key without the clock: the same for every checkpoint of a run
    out: dict[int, dict] = {}
    for folder in run_checkpoints(run_dir):
        step, seconds = checkpoint_clock(folder)
        para = Paraphraser.from_pretrained(folder, device=device)
        settings = para.settings(**{k: v for k, v in (sampling or {}).items() if v is not None})
        base_key = {"data_sha256": data.sha256, "limit": data.limit, "rows": len(data.rows),
                    "settings": settings.to_dict(), "device": para.device.type, "ema": True, "bertscore": bertscore}
        key = {**base_key, "train_seconds": seconds, "checkpoint": str(folder)}
        score_path = eval_dir / f"{folder.name}.json"
        pred_path = eval_dir / f"{folder.name}.jsonl"
        existing = _read_existing(score_path)
        match = _match(existing, key)
        if match == "same":
            say(f"{run_dir}: step {step}: reusing {score_path}")
            out[step] = existing
            continue
        if match == "sampled" and pred_path.is_file():
            say(f"{run_dir}: step {step}: scoring {pred_path} again, with BERTScore")
        else:
            replacing = f" (replacing {score_path}: other data or settings)" if score_path.exists() else ""
            say(f"{run_dir}: step {step}: sampling {len(data.rows)} rows{replacing}")
            n_workers = sampling_workers(workers, para.device, len(data.rows), settings.batch_size)
            records = [r for batch in para.generate_rows(data.rows, settings, progress=progress, total=len(data.rows),
                                                         workers=n_workers)
                       for r in batch]
            atomic_write_jsonl(pred_path, records)
        result = evaluate_predictions([str(pred_path)], bertscore=bertscore, step=step)
        result.update({"train_seconds": seconds, "data": str(data.path), "limit": data.limit,
                       "curve": {"data": str(data.path.resolve()), **key}})
        with atomic_open(score_path, "w", encoding="utf-8") as f:
            f.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        out[step] = result
    for path in sorted(eval_dir.glob("step_*.json")):  # checkpoints pruned since they were scored
        existing = _read_existing(path)
        step = existing.get("step") if existing else None
        if isinstance(step, int) and step not in out:
            clock = (existing.get("curve") or {}).get("train_seconds")
            if _match(existing, {**base_key, "train_seconds": clock}) == "same" and existing.get("files"):
                out[step] = existing
    return sorted(out.items())


def run_curve_benchmark(runs: Sequence[str | Path], data: str | Path, limit: int = 512,
                        labels: Sequence[str] = (), sampling: dict | None = None, bertscore: bool = True,
                        device: str = "cpu", json_path: str | Path | None = None,
                        plot_path: str | Path | None = None, progress: bool = False,
                        say: Callable[[str], None] | None = None, workers: int = 0) -> dict:
    """Score every checkpoint of each run (`score_run`), print the table, write ``json_path``
    ({"data", "limit", "rows", "copy_source"}) and the plot at ``plot_path``; returns that dict."""
    from mambadiff.report.plots import plot_quality_vs_minutes

    from .common import print_table, write_json

    if not runs:
        raise ValueError("give at least one run folder")
    if labels and len(labels) != len(runs):
        raise ValueError(f"--label: expected one per run ({len(runs)}), got {len(labels)}")
    names = list(labels) or [Path(r).resolve().name for r in runs]
    if not labels and len(set(names)) < len(names):  # two runs/NAME folders: their paths tell them apart
        names = [str(r) for r in runs]
    if len(set(names)) < len(names):
        raise ValueError(f"--label: each run needs its own label, got {names}")
    for run in runs:  # every folder checked before any sampling
        run_checkpoints(run)
    curve_data = read_curve_data(data, limit)
    rows, copies = [], []
    for run, name in zip(runs, names):
        evals = score_run(run, curve_data, sampling=sampling, bertscore=bertscore, device=device, progress=progress,
                          say=say, workers=workers)
        run_rows, copy = curve_rows(name, evals)
        for row, (_, res) in zip(run_rows, evals):
            row["predictions"] = res["files"][0]  # RUN/eval/step_XXXXXXXX.jsonl, scored in step_XXXXXXXX.json
        missing = [r["step"] for r in run_rows if r["minutes"] is None]
        if missing:
            notify(log, f"{run}: {len(missing)} of {len(run_rows)} checkpoints (step{'s' * (len(missing) > 1)} "
                        f"{', '.join(map(str, missing[:5]))}"
                        f"{', ...' if len(missing) > 5 else ''}) have no train_seconds (written before the training "
                        "clock was recorded); their minutes are null and they are left off the minutes plot")
        rows += run_rows
        if copy is not None:
            copies.append(copy)
    columns = [c for c in TABLE_COLUMNS if c != "bertscore_f1" or bertscore]
    table = [*rows, *({**c, "run": f"copy source ({c['run']})", "step": "", "minutes": ""} for c in copies)]
    print_table(table, columns, floatfmt=".4f")
    result = {"data": str(curve_data.path), "limit": limit, "rows": rows, "copy_source": copies}
    write_json(json_path, result)
    if plot_path:
        if plot_quality_vs_minutes(rows, copies, plot_path) is None:
            notify(log, f"{plot_path}: not written (no checkpoint has train_seconds)")
    return result

