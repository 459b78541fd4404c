"""PNG plots of a run: training curves, metrics per checkpoint, quality against training minutes,
classification accuracy, inference time.

Every function takes already-loaded data (see `mambadiff.report.summary` for the loaders), writes one
PNG atomically and returns its path, or returns None when the data holds nothing to plot. Matplotlib
runs on the Agg backend (no display needed).
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib import ticker  # noqa: E402
import numpy as np  # noqa: E402

from mambadiff.metrics.io import atomic_write_bytes  # noqa: E402

# metrics.jsonl key -> y-axis label (with units)
TRAINING_KEYS: dict[str, str] = {
    "loss": "total loss (MSE + NLL terms)",
    "mse": "MSE (per embedding dim)",
    "nll": "NLL (nats / token)",
    "decoder_nll": "decoder NLL (nats / token)",
    "tT": "prior term L_T (per embedding dim)",
}
SPLIT_STYLE = {"train": dict(color="tab:blue", lw=1.2, alpha=0.85),
               "eval": dict(color="tab:orange", lw=1.8, marker="o", ms=4)}

# evaluate_predictions key -> (panel title, y-axis label)
EVAL_KEYS: dict[str, tuple[str, str]] = {
    "bleu": ("BLEU (sentence-level, DiffuSeq)", "BLEU (0-1)"),
    "rouge_l": ("ROUGE-L F1", "ROUGE-L F1 (0-1)"),
    "bertscore_f1": ("BERTScore F1", "BERTScore F1 (0-1)"),
    "dist1": ("dist-1 (distinct unigrams)", "dist-1 (0-1)"),
    "ibleu": ("iBLEU (BLEU penalised for copying)", "iBLEU"),
    "copy_rate": ("copy rate (output = source)", "share of outputs (0-1)"),
}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _series(records: Sequence[dict], split: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = sorted((r["step"], r[key]) for r in records
                 if r.get("split") == split and _finite(r.get(key)) and _finite(r.get("step")))
    if not pts:
        return np.zeros(0), np.zeros(0)
    steps, vals = zip(*pts)
    return np.asarray(steps, dtype=float), np.asarray(vals, dtype=float)


class _PlainLogFormatter(ticker.LogFormatter):
    """matplotlib's choice of which log ticks to label, printed as plain numbers (0.6, 2, 1e-05)."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def _log_y_if_sensible(ax, values: np.ndarray, label: str) -> str:
    """Log scale when every value is positive and they span more than a factor of 3."""
    if values.size and np.all(values > 0) and values.max() / values.min() > 3:
        ax.set_yscale("log")
        # plain decimals ("0.6", "2") instead of "6x10^-1"; minor ticks labelled only on short ranges
        ax.yaxis.set_major_formatter(_PlainLogFormatter())
        ax.yaxis.set_minor_formatter(_PlainLogFormatter(minor_thresholds=(1, 0.5)))
        return f"{label}, log scale"
    return label


def _save(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _grid(n: int, width: float = 5.2, height: float = 3.6):
    cols = min(n, 2) if n <= 4 else 3
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def plot_training_curves(records: Sequence[dict], path: str | Path, title: str = "Training curves") -> Path | None:
    """Loss, MSE, NLL (whichever the log has) against step, train and eval in each panel."""
    keys = [k for k in TRAINING_KEYS if any(_finite(r.get(k)) for r in records)]
    if not keys:
        return None
    labels = dict(TRAINING_KEYS)
    if not any(k in keys for k in ("mse", "nll", "decoder_nll")):  # a classification run
        labels["loss"] = "cross-entropy loss (nats / example)"
    fig, axes = _grid(len(keys))
    for ax, key in zip(axes, keys):
        shown = []
        for split in ("train", "eval"):
            x, y = _series(records, split, key)
            if x.size:
                ax.plot(x, y, label=f"{split} ({x.size} points)", **SPLIT_STYLE[split])
                shown.append(y)
        ax.set_ylabel(_log_y_if_sensible(ax, np.concatenate(shown), labels[key]))
        ax.set_xlabel("training step")
        ax.set_title(key)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_optimizer(records: Sequence[dict], path: str | Path, title: str = "Learning rate and throughput") -> Path | None:
    panels = [(k, lab) for k, lab in (("lr", "learning rate"), ("tokens_per_s", "throughput (tokens / s)"))
              if any(_finite(r.get(k)) for r in records if r.get("split") == "train")]
    if not panels:
        return None
    fig, axes = _grid(len(panels), height=3.2)
    for ax, (key, label) in zip(axes, panels):
        x, y = _series(records, "train", key)
        ax.plot(x, y, label="train", **SPLIT_STYLE["train"])
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
        ax.set_title(key)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_accuracy(records: Sequence[dict], path: str | Path, title: str = "Classification accuracy") -> Path | None:
    if not any(_finite(r.get("accuracy")) for r in records):
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for split in ("train", "eval"):
        x, y = _series(records, split, "accuracy")
        if x.size:
            ax.plot(x, 100 * y, label=split, **SPLIT_STYLE[split])
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def _label_metric_axis(ax, key: str, xlabel: str) -> None:
    """Title, axis labels, grid and legend of one generation-metric panel (``EVAL_KEYS[key]``)."""
    ax.set_xlabel(xlabel)
    ax.set_title(EVAL_KEYS[key][0])
    ax.set_ylabel(EVAL_KEYS[key][1])
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def plot_eval_metrics(evals: Sequence[tuple[int, dict]], path: str | Path,
                      title: str = "Generation metrics per checkpoint") -> Path | None:
    """One panel per metric: the model (and its MBR selection) by step, copy-source baseline dashed."""
    evals = sorted(evals, key=lambda e: e[0])
    keys = [k for k in EVAL_KEYS if any(_finite((res.get("model") or {}).get(k)) for _, res in evals)]
    if not keys:
        return None
    fig, axes = _grid(len(keys), width=4.6, height=3.4)
    for ax, key in zip(axes, keys):
        for row, style in (("model", dict(color="tab:blue", marker="o", label="model")),
                           ("mbr", dict(color="tab:green", marker="s", label="model, MBR")),
                           ("copy_source", dict(color="tab:gray", ls="--", marker=".", label="copy source (baseline)"))):
            pts = [(s, (res.get(row) or {}).get(key)) for s, res in evals]
            pts = [(s, v) for s, v in pts if _finite(v)]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, **style)
        _label_metric_axis(ax, key, "training step of checkpoint")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_quality_vs_minutes(rows: Sequence[dict], copy_source: Sequence[dict], path: str | Path,
                            title: str = "Paraphrase quality against training time") -> Path | None:
    """BLEU and ROUGE-L (one panel each) against training minutes, one line per run, and the
    copy-source baseline of each run as a dashed horizontal line (one gray line when every run's is
    the same). ``rows`` / ``copy_source`` are quality-curve rows (`mambadiff.report.summary.curve_rows`);
    rows without minutes are left off. Returns None when no row has minutes and a metric."""
    keys = [k for k in ("bleu", "rouge_l")
            if any(_finite(r.get("minutes")) and _finite(r.get(k)) for r in rows)]
    if not keys:
        return None
    runs = list(dict.fromkeys(r["run"] for r in rows))
    colors = {run: f"C{i % 10}" for i, run in enumerate(runs)}
    fig, axes = _grid(len(keys), width=5.6, height=3.8)
    for ax, key in zip(axes, keys):
        for run in runs:
            pts = sorted((r["minutes"], r[key]) for r in rows
                         if r["run"] == run and _finite(r.get("minutes")) and _finite(r.get(key)))
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", ms=4, color=colors[run], label=run)
        baselines = [(c["run"], c[key]) for c in copy_source if _finite(c.get(key))]
        if len({round(v, 12) for _, v in baselines}) == 1:
            ax.axhline(baselines[0][1], color="tab:gray", ls="--", lw=1.2, label="copy source")
        else:
            for run, value in baselines:
                ax.axhline(value, color=colors.get(run, "tab:gray"), ls="--", lw=1.2, label=f"copy source ({run})")
        _label_metric_axis(ax, key, "training wall-clock (minutes)")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_bench(bench: Sequence[dict], path: str | Path,
               title: str = "Inference time vs sequence length") -> Path | None:
    """Log-log seconds against sequence length, one line per (model, batch), with the fitted slope."""
    groups: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for r in bench:
        groups.setdefault((str(r["model"]), int(r["batch"])), []).append((float(r["seq_len"]), float(r["seconds"])))
    if not groups:
        return None
    several_batches = len({b for _, b in groups}) > 1
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    for (model, batch), pts in sorted(groups.items()):
        pts = sorted(p for p in pts if p[0] > 0 and p[1] > 0)
        if not pts:
            continue
        x, y = map(np.asarray, zip(*pts))
        label = f"{model} (batch {batch})" if several_batches else model
        if len(pts) >= 2 and len(set(x.tolist())) >= 2:
            slope = np.polyfit(np.log(x), np.log(y), 1)[0]
            label += f", slope {slope:.2f}"
        ax.plot(x, y, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length (tokens, log scale)")
    batches = sorted({b for _, b in groups})
    ax.set_ylabel("inference time per batch (s, log scale)")
    ax.set_title(title + ("" if several_batches else f" (batch {batches[0]})"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, title="model, log-log slope" if any(len(v) > 1 for v in groups.values()) else None)
    fig.tight_layout()
    return _save(fig, path)
