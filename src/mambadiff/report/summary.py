"""Markdown summary of a run folder, with its plots.

A run folder may hold (each optional, at least one needed):
    metrics.jsonl         one JSON object per line: {"split": "train"|"eval", "step": int, <metric>: number...}
    eval/step_*.json      results of `evaluate_predictions` (schema in mambadiff.metrics.generation); with
                          `train_seconds` (as `mambadiff bench curve` writes them) also plotted against minutes
    samples*.jsonl        prediction files (source, reference, recover)
    bench_classify.json   a list of {"model", "seq_len", "seconds", "batch"} (or given with --bench)
`build_report` writes the PNGs and report.md into RUN_DIR/report/ (or `out_dir`).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from mambadiff.metrics.generation import METRIC_LABELS, SCHEMA
from mambadiff.metrics.io import atomic_write_text, read_predictions

SPLITS = ("train", "eval")
_STEP_FILE = re.compile(r"step_(\d+)\.json$")


class RunFileError(ValueError):
    """A file of a run folder that cannot be read; names the file and line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path, self.line = str(path), line
        super().__init__(f"{path}{f', line {line}' if line is not None else ''}: {message}")


@dataclass
class MetricsLog:
    records: list[dict]
    notes: list[str] = field(default_factory=list)


def load_metrics_log(path: str | Path) -> MetricsLog:
    """Read metrics.jsonl strictly, except for a torn last line (a run killed mid-write), which is
    skipped with a note."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RunFileError(path, f"cannot read ({e.strerror})") from None
    ends_with_newline = raw.endswith(b"\n")
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    log = MetricsLog(records=[])
    for lineno, line in enumerate(lines, start=1):
        last_torn = lineno == len(lines) and not ends_with_newline
        try:
            text = line.decode("utf-8")
            if not text.strip():
                raise RunFileError(path, "empty line, expected a JSON object", lineno)
            obj = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if last_torn:
                log.notes.append(f"{path.name}: skipped a torn last line (line {lineno}); the run was "
                                 "probably interrupted while writing it")
                continue
            reason = "not valid UTF-8" if isinstance(e, UnicodeDecodeError) else f"invalid JSON ({e.msg})"
            raise RunFileError(path, reason, lineno) from None
        if not isinstance(obj, dict):
            raise RunFileError(path, f"expected a JSON object, got {type(obj).__name__}", lineno)
        if obj.get("split") not in SPLITS:
            raise RunFileError(path, f"field 'split': expected 'train' or 'eval', got {obj.get('split')!r}", lineno)
        step = obj.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise RunFileError(path, f"field 'step': expected a non-negative integer, got {step!r}", lineno)
        log.records.append(obj)
    return log


def load_eval_results(run_dir: str | Path) -> list[tuple[int, dict]]:
    """(step, result) for every RUN_DIR/eval/step_*.json, sorted by step."""
    out = []
    for p in sorted(Path(run_dir, "eval").glob("step_*.json")):
        m = _STEP_FILE.search(p.name)
        try:
            res = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunFileError(p, f"cannot read as JSON ({e})") from None
        if not isinstance(res, dict) or res.get("schema") != SCHEMA or not isinstance(res.get("model"), dict):
            raise RunFileError(p, f"expected the JSON of `mambadiff evaluate` (schema {SCHEMA!r})")
        step = res.get("step")
        if not isinstance(step, int):
            if m is None:
                raise RunFileError(p, "no 'step' in the JSON and none in the name (expected step_<N>.json)")
            step = int(m.group(1))
        out.append((step, res))
    return sorted(out, key=lambda e: e[0])


# metric keys of a quality-curve row (see `curve_rows`), in table order
CURVE_METRICS = ("bleu", "rouge_l", "bertscore_f1", "ibleu", "copy_rate", "repeat_rate", "ngram_repeat_rate", "len_words")


def train_minutes(result: dict) -> float | None:
    """Training wall-clock minutes of the checkpoint an eval result scored (None when not recorded)."""
    seconds = result.get("train_seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return None
    return seconds / 60.0


def curve_rows(label: str, evals: Sequence[tuple[int, dict]]) -> tuple[list[dict], dict | None]:
    """Quality against training time of one run: (one row per eval result, in step order; the
    copy-source row of the last one, or None when there is none). A row holds ``run`` (the label),
    ``step``, ``train_seconds`` and ``minutes`` (None for checkpoints written before the training clock
    was recorded), the model's metrics (`CURVE_METRICS` that the result has) and ``n``."""
    rows = []
    for step, res in sorted(evals, key=lambda e: e[0]):
        minutes = train_minutes(res)
        model = res.get("model") or {}
        rows.append({"run": label, "step": step, "train_seconds": None if minutes is None else res["train_seconds"],
                     "minutes": minutes, **{k: model[k] for k in CURVE_METRICS if k in model}, "n": model.get("n")})
    copy = None
    if evals and isinstance(evals[-1][1].get("copy_source"), dict):
        source = evals[-1][1]["copy_source"]
        copy = {"run": label, **{k: source[k] for k in CURVE_METRICS if k in source}, "n": source.get("n")}
    return rows, copy


def load_bench(path: str | Path) -> list[dict]:
    """A bench JSON: a list of {"model", "seq_len", "seconds", "batch"} (or {"records": [...]})."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFileError(path, f"cannot read as JSON ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        data = data["records"]
    if not isinstance(data, list):
        raise RunFileError(path, "expected a list of {model, seq_len, seconds, batch} records")
    for i, r in enumerate(data):
        if not isinstance(r, dict):
            raise RunFileError(path, f"record {i}: expected an object, got {type(r).__name__}")
        for key, kind in (("model", str), ("seq_len", int), ("seconds", (int, float)), ("batch", int)):
            if key not in r:
                raise RunFileError(path, f"record {i}: field '{key}' is missing")
            if not isinstance(r[key], kind) or isinstance(r[key], bool):
                raise RunFileError(path, f"record {i}: field '{key}' has the wrong type ({r[key]!r})")
    return data


# ---- Markdown -------------------------------------------------------------------------------------

def _md_cell(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _num(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "-"
    if isinstance(v, int):
        return str(v)
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    from tabulate import tabulate

    return tabulate([list(r) for r in rows], headers=list(headers), tablefmt="github", disable_numparse=True)


_LOWER_IS_BETTER = {"loss", "mse", "nll", "decoder_nll", "tT"}


def _training_section(log: MetricsLog) -> list[str]:
    recs = log.records
    keys = []
    for r in recs:
        for k, v in r.items():
            if k not in ("split", "step") and k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.append(k)
    last = {s: next((r for r in reversed(recs) if r["split"] == s), None) for s in SPLITS}
    rows = []
    for k in keys:
        evals = [(r["step"], r[k]) for r in recs if r["split"] == "eval" and isinstance(r.get(k), (int, float))
                 and math.isfinite(r[k])]
        best = "-"
        if evals and (k in _LOWER_IS_BETTER or k == "accuracy"):
            pick = min if k in _LOWER_IS_BETTER else max
            s, v = pick(evals, key=lambda e: e[1])
            best = f"{_num(v)} (step {s})"
        rows.append([k, *(_num(last[s].get(k)) if last[s] else "-" for s in SPLITS), best])
    steps = max(r["step"] for r in recs)
    n = {s: sum(r["split"] == s for r in recs) for s in SPLITS}
    out = [f"{n['train']} train and {n['eval']} eval records, last step {steps}.", ""]
    out += [f"> {note}" for note in log.notes]
    if log.notes:
        out.append("")
    out += [_table(["metric", f"last train (step {last['train']['step'] if last['train'] else '-'})",
                    f"last eval (step {last['eval']['step'] if last['eval'] else '-'})", "best eval"], rows), ""]
    return out


def _eval_section(evals: list[tuple[int, dict]]) -> list[str]:
    keys = [k for k in ("bleu", "rouge_l", "bertscore_f1", "dist1", "len_diffuseq", "ibleu", "copy_rate",
                        "self_bleu", "div4") if any(k in (r.get("model") or {}) or k in (r.get("diversity") or {})
                                                   for _, r in evals)]
    rows = []
    for step, r in evals:
        model = {**(r.get("model") or {}), **(r.get("diversity") or {})}
        rows.append([str(step), "model", *(_num(model.get(k)) for k in keys)])
        if r.get("mbr"):
            rows.append([str(step), f"MBR of {r['candidates']['max']}", *(_num(r["mbr"].get(k)) for k in keys)])
    last = evals[-1][1]
    rows.append(["-", "copy source (baseline)", *(_num(last["copy_source"].get(k)) for k in keys)])
    models = {(r.get("bertscore") or {}).get("name") for _, r in evals} - {None}
    out = [_table(["step", "output", *(METRIC_LABELS[k][0] for k in keys)], rows), ""]
    if models:
        out += [f"BERTScore model: {', '.join(sorted(models))}.", ""]
    return out


def _samples_section(run_dir: Path, max_samples: int) -> list[str]:
    out = []
    for p in sorted(run_dir.glob("samples*.jsonl")):
        recs = read_predictions(p)
        out += [f"### `{p.name}` (first {min(max_samples, len(recs))} of {len(recs)})", ""]
        out += [_table(["#", "source", "reference", "output"],
                       [[str(i + 1), _md_cell(r.source), _md_cell(r.reference), _md_cell(r.recover)]
                        for i, r in enumerate(recs[:max_samples])]), ""]
    return out


def _bench_section(bench: list[dict]) -> list[str]:
    rows = [[_md_cell(r["model"]), str(r["batch"]), str(r["seq_len"]), _num(float(r["seconds"]))]
            for r in sorted(bench, key=lambda r: (str(r["model"]), r["batch"], r["seq_len"]))]
    return [_table(["model", "batch", "seq_len (tokens)", "seconds"], rows), ""]


@dataclass
class Report:
    markdown: Path
    plots: list[Path]


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, bench: str | Path | None = None,
                 max_samples: int = 5) -> Report:
    """Write the plots and report.md of a run folder; returns their paths. Raises ValueError on bad files."""
    from mambadiff.report import plots

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run_dir: {run_dir} is not a folder")
    if max_samples < 0:
        raise ValueError(f"max_samples: expected >= 0, got {max_samples}")
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    log_path = run_dir / "metrics.jsonl"
    log = load_metrics_log(log_path) if log_path.is_file() else None
    evals = load_eval_results(run_dir)
    if bench is not None:
        bench_path = Path(bench)
        if not bench_path.is_file():
            raise ValueError(f"bench: {bench_path} does not exist")
    else:
        bench_path = run_dir / "bench_classify.json"
    bench_recs = load_bench(bench_path) if bench_path.is_file() else []
    has_samples = any(run_dir.glob("samples*.jsonl"))
    if log is None and not evals and not bench_recs and not has_samples:
        raise ValueError(f"run_dir: {run_dir} has none of metrics.jsonl, eval/step_*.json, samples*.jsonl, "
                         "bench_classify.json")

    written: list[Path] = []
    md = [f"# Run report: `{run_dir.resolve().name}`", "", f"Run folder: `{run_dir}`", ""]

    def img(p: Path | None, alt: str) -> None:
        if p is not None:
            written.append(p)
            md.extend([f"![{alt}]({p.relative_to(out_dir).as_posix()})", ""])

    if log is not None:
        md += ["## Training", ""]
        if log.records:
            md += _training_section(log)
            img(plots.plot_training_curves(log.records, out_dir / "training_curves.png"), "training curves")
            img(plots.plot_accuracy(log.records, out_dir / "accuracy.png"), "accuracy")
            img(plots.plot_optimizer(log.records, out_dir / "lr_throughput.png"), "learning rate and throughput")
        else:
            md += ["metrics.jsonl has no records yet.", ""]
    if evals:
        md += ["## Generation metrics per checkpoint", ""]
        md += _eval_section(evals)
        img(plots.plot_eval_metrics(evals, out_dir / "eval_metrics.png"), "generation metrics per checkpoint")
        rows, copy = curve_rows(run_dir.resolve().name, evals)
        timed = sum(r["minutes"] is not None for r in rows)
        if timed:  # the checkpoints' training clock is recorded (`mambadiff bench curve` writes it)
            if timed < len(rows):
                md += [f"{len(rows) - timed} of {len(rows)} evaluated checkpoints have no `train_seconds`; "
                       "they are left off the minutes plot.", ""]
            img(plots.plot_quality_vs_minutes(rows, [copy] if copy else [], out_dir / "quality_vs_minutes.png"),
                "BLEU and ROUGE-L against training minutes")
    if has_samples and max_samples > 0:
        md += ["## Samples", ""]
        md += _samples_section(run_dir, max_samples)
    if bench_recs:
        md += [f"## Inference time (`{bench_path.name}`)", ""]
        md += _bench_section(bench_recs)
        img(plots.plot_bench(bench_recs, out_dir / "bench_inference_time.png"), "inference time vs sequence length")
    md_path = out_dir / "report.md"
    atomic_write_text(md_path, "\n".join(md).rstrip() + "\n")
    return Report(markdown=md_path, plots=written)
