"""`mambadiff bench quality`: paraphrase quality of training recipes at an equal wall-clock budget.

Each recipe (a config name or YAML file plus ``key=value`` overrides) is trained as ``mambadiff train``
trains it for ``--minutes`` of wall-clock on ``--threads`` threads (``train.max_minutes``; its step
limit lifted), then samples ``--split`` (the first ``--limit`` pairs) with the recipe's own ``sample``
settings. Reported per recipe: BLEU, ROUGE-L, BERTScore F1 (MiniLM), iBLEU, exact-copy rate, the
rate of outputs that repeat a word twice in a row, mean length in words, training steps, training
tokens/s, and sampling seconds per 1,000 sentences (all samples and MBR included) and
sentence-samples/s; plus the copy-source row (the output is the source sentence).
Recipes run one after the other, so on a shared machine their budgets may see different loads.
"""
from __future__ import annotations

import json
import shlex
import tempfile
import time
from pathlib import Path

import click
import torch

from .common import print_table, write_json

DEFAULT_RECIPES = ("qqp-cpu", "qqp-mamba2-hybrid-cpu")
COLUMNS = ["recipe", "bleu", "rouge_l", "bertscore", "ibleu", "copy_rate", "repeat_rate", "len_words",
           "train_steps", "tokens_per_s", "sample_s_per_1k", "sentence_samples_per_s"]


def score_outputs(outputs, references, sources, bertscore: bool) -> dict:
    """The quality columns of one row."""
    from mambadiff.metrics.generation import generation_metrics
    m = generation_metrics(outputs, references, sources)
    row = {k: m[k] for k in ("bleu", "rouge_l", "ibleu", "copy_rate", "repeat_rate", "len_words")}
    if bertscore:  # empty outputs score 0
        from mambadiff.metrics.bertscore import bertscore_f1
        row["bertscore"] = float(bertscore_f1(outputs, references)[0].mean()) if outputs else 0.0
    return row


def run_recipe(spec: str, run_dir: Path, minutes: float, threads: int, split: str, limit: int,
               bertscore: bool, progress: bool = False) -> tuple[dict, list[dict]]:
    """Train and sample one recipe; returns (its row, the generated records)."""
    from mambadiff.config import load_config
    from mambadiff.data.seq2seq import load_seq2seq_split
    from mambadiff.tasks.paraphrase import generate
    from mambadiff.tasks.seq2seq import Seq2SeqConfig, prepare_data_folder, train_seq2seq

    parts = shlex.split(spec)
    if not parts:
        raise click.BadParameter("an empty --recipe", param_hint="--recipe")
    forced = [f"run_dir={run_dir}", f"train.max_minutes={minutes}", "train.steps=100000000",
              f"train.num_threads={threads}", f"train.progress={str(progress).lower()}"]
    cfg = load_config(Seq2SeqConfig, parts[0], [*parts[1:], *forced])
    result, model, tok = train_seq2seq(cfg, progress=progress)
    cfg = load_config(Seq2SeqConfig, run_dir / "config.json")
    data = load_seq2seq_split(prepare_data_folder(cfg), split, tok, cfg.data.seq_len, layout=cfg.data.layout,
                              on_overflow=cfg.data.on_overflow, limit=limit or None)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    records = generate(model.eval(), tok, cfg, data, limit=0, progress=progress)
    seconds = time.perf_counter() - t0
    n = len(records)
    row = {"recipe": spec, "train_steps": result.step, "tokens_per_s": result.tokens_per_s,
           "train_seconds": result.seconds, "sample_seconds": seconds, "n": n,
           "sample_steps": cfg.sample.steps, "samples": cfg.sample.samples, "process": cfg.diffusion.process,
           "sample_s_per_1k": 1000 * seconds / max(n, 1),
           "sentence_samples_per_s": n * cfg.sample.samples / max(seconds, 1e-9)}
    row.update(score_outputs([r["recover"] for r in records], [r["reference"] for r in records],
                             [r["source"] for r in records], bertscore))
    return row, records


def run_quality_benchmark(recipes=DEFAULT_RECIPES, minutes: float = 10.0, threads: int = 1, split: str = "valid",
                          limit: int = 512, bertscore: bool = True, run_root: str | None = None,
                          json_path=None, progress: bool = False) -> list[dict]:
    """Every recipe's row and the copy-source row (printed as a table, written to ``json_path``).
    With ``run_root``, each recipe's run folder (and its ``samples_<split>.jsonl``) is kept there."""
    for name, value, least in (("minutes", minutes, 1e-9), ("threads", threads, 1), ("limit", limit, 0)):
        if value < least:
            raise click.BadParameter(f"must be > 0, got {value}" if name == "minutes" else
                                     f"must be >= {least}, got {value}", param_hint=f"--{name}")
    if not recipes:
        raise click.BadParameter("give at least one recipe", param_hint="--recipe")
    rows, copy_inputs = [], None
    with tempfile.TemporaryDirectory(prefix="mambadiff-quality-") as tmp:
        root = Path(run_root) if run_root else Path(tmp)
        for i, spec in enumerate(recipes):
            run_dir = root / f"recipe{i}"
            row, records = run_recipe(spec, run_dir, minutes, threads, split, limit, bertscore, progress)
            rows.append(row)
            if run_root:
                from mambadiff.fileio import atomic_write_text
                atomic_write_text(run_dir / f"samples_{split}.jsonl",
                                  "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            if copy_inputs is None:
                copy_inputs = ([r["source"] for r in records], [r["reference"] for r in records])
    sources, references = copy_inputs
    copy_row = {"recipe": "copy source", "n": len(sources)}
    copy_row.update(score_outputs(sources, references, sources, bertscore))
    rows.append(copy_row)
    print_table([{**r, "recipe": r["recipe"][:60]} for r in rows], [c for c in COLUMNS if bertscore or c != "bertscore"],
                floatfmt=".4f")
    write_json(json_path, {"minutes": minutes, "threads": threads, "split": split, "limit": limit, "rows": rows})
    return rows


@click.command("quality")
@click.option("--recipe", "recipes", multiple=True, default=DEFAULT_RECIPES, show_default=True,
              help='A shipped config name or YAML file with optional key=value overrides in the same quoted '
                   'string, e.g. "qqp-cpu model.self_condition=false". Repeat for each recipe.')
@click.option("--minutes", default=10.0, show_default=True, help="Training wall-clock per recipe.")
@click.option("--threads", default=1, show_default=True, help="torch / kernel threads for training and sampling.")
@click.option("--split", default="valid", show_default=True, help="Split of each recipe's data folder to sample.")
@click.option("--limit", default=512, show_default=True, help="Only the first N pairs of the split (0: all).")
@click.option("--bertscore/--no-bertscore", default=True, show_default=True, help="Score BERTScore F1 (MiniLM).")
@click.option("--run-root", type=click.Path(file_okay=False), help="Keep each recipe's run folder and samples here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the rows here.")
def quality_command(recipes, minutes, threads, split, limit, bertscore, run_root, json_path):
    """Train recipes for the same wall-clock, sample, score: BLEU, ROUGE-L, BERTScore, iBLEU, copies, repeats."""
    from mambadiff.config import ConfigError
    from mambadiff.data.errors import DataError
    try:
        run_quality_benchmark(recipes, minutes, threads, split, limit, bertscore, run_root, json_path)
    except (ConfigError, DataError, FileNotFoundError, FileExistsError, ValueError) as e:
        raise click.ClickException(str(e)) from None
