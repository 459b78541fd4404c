"""`mambadiff bench quality`: paraphrase quality of training recipes at an equal wall-clock budget.

Each recipe (a config name or YAML file plus ``key=value`` overrides) is trained as ``mambadiff train``
trains it for ``--minutes`` of wall-clock on ``--threads`` threads (``train.max_minutes``; its step
limit lifted), then samples ``--split`` (the first ``--limit`` pairs) with the recipe's own ``sample``
settings. Reported per recipe: BLEU, ROUGE-L, BERTScore F1 (MiniLM), iBLEU, exact-copy rate, the
rate of outputs that repeat a word twice in a row and of those that repeat a phrase (a word n-gram,
n >= 2), mean length in words, training steps, training tokens/s, and sampling seconds per 1,000
sentences (all samples and MBR included) and sentence-samples/s; plus the copy-source row (the output
is the source sentence) and the references row (their own repeat rates and length).
Recipes run one after the other, or ``jobs`` at a time, each in its own process with ``threads``
threads (``--jobs 2 --threads 1`` on two cores: two recipes side by side, one core each, so that
their budgets see the same load).
"""
from __future__ import annotations

import json
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from .common import BenchArgumentError, check_at_least, print_table, split_spec, write_json

DEFAULT_RECIPES = ("qqp-cpu", "qqp-mamba2-hybrid-cpu")
COLUMNS = ["recipe", "bleu", "rouge_l", "bertscore", "ibleu", "copy_rate", "repeat_rate", "ngram_repeat_rate",
           "len_words", "train_steps", "tokens_per_s", "sample_s_per_1k", "sentence_samples_per_s"]


def score_outputs(outputs, references, sources, bertscore: bool) -> dict:
    """The quality columns of one row; the references and sources (the data's texts) are scored in the
    form the models write (`comparable_texts`), as `mambadiff evaluate` does."""
    from mambadiff.metrics.generation import comparable_texts, generation_metrics
    references, sources = comparable_texts(references), comparable_texts(sources)
    m = generation_metrics(outputs, references, sources)
    row = {k: m[k] for k in ("bleu", "rouge_l", "ibleu", "copy_rate", "repeat_rate", "ngram_repeat_rate",
                             "len_words")}
    if bertscore:  # empty outputs score 0
        from mambadiff.metrics.bertscore import bertscore_f1
        row["bertscore"] = float(bertscore_f1(outputs, references)[0].mean()) if outputs else 0.0
    return row


def run_recipe(spec: str, run_dir: Path, minutes: float, threads: int, split: str, limit: int,
               bertscore: bool, progress: bool = False) -> tuple[dict, list[dict]]:
    """Train and sample one recipe (diffusion, or autoregressive: `ar_recipe`); returns (its row, the
    generated records)."""
    from .ar_recipe import is_ar_recipe, run_ar_recipe
    if is_ar_recipe(spec):
        row, records = run_ar_recipe(spec, run_dir, minutes, threads, split, limit, progress)
        row.update(score_outputs([r["recover"] for r in records], [r["reference"] for r in records],
                                 [r["source"] for r in records], bertscore))
        return row, records
    from mambadiff.config import load_config
    from mambadiff.data.seq2seq import load_seq2seq_split
    from mambadiff.tasks.paraphrase import generate
    from mambadiff.tasks.seq2seq import Seq2SeqConfig, prepare_data_folder, train_seq2seq

    name, overrides = split_spec(spec)
    forced = [f"run_dir={run_dir}", f"train.max_minutes={minutes}", "train.steps=100000000",
              f"train.num_threads={threads}", f"train.progress={str(progress).lower()}"]
    cfg = load_config(Seq2SeqConfig, name, [*overrides, *forced])
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
           "sample_steps": cfg.sample.for_process(cfg.diffusion.process).steps, "samples": cfg.sample.samples, "process": cfg.diffusion.process,
           "sample_s_per_1k": 1000 * seconds / max(n, 1),
           "sentence_samples_per_s": n * cfg.sample.samples / max(seconds, 1e-9)}
    row.update(score_outputs([r["recover"] for r in records], [r["reference"] for r in records],
                             [r["source"] for r in records], bertscore))
    return row, records


def run_quality_benchmark(recipes=DEFAULT_RECIPES, minutes: float = 10.0, threads: int = 1, split: str = "valid",
                          limit: int = 512, bertscore: bool = True, run_root: str | None = None,
                          json_path=None, progress: bool = False, jobs: int = 1) -> list[dict]:
    """Every recipe's row and the copy-source row (printed as a table, written to ``json_path``).
    With ``run_root``, each recipe's run folder (and its ``samples_<split>.jsonl``) is kept there.
    ``jobs > 1`` runs that many recipes at once, each in a process of its own (no progress bars).
    A bad number, no recipe or an empty one raises ``BenchArgumentError``."""
    if minutes < 1e-9:
        raise BenchArgumentError("minutes", f"must be > 0, got {minutes}")
    check_at_least(threads=(threads, 1), limit=(limit, 0), jobs=(jobs, 1))
    if not recipes:
        raise BenchArgumentError("recipes", "give at least one recipe")
    for spec in recipes:  # an empty or malformed recipe fails before any training
        split_spec(spec)
    rows, copy_inputs = [], None
    with tempfile.TemporaryDirectory(prefix="mambadiff-quality-") as tmp:
        root = Path(run_root) if run_root else Path(tmp)
        args = [(spec, root / f"recipe{i}", minutes, threads, split, limit, bertscore) for i, spec in enumerate(recipes)]
        if jobs > 1:
            # spawn: a fresh interpreter per worker (torch's thread pools do not survive fork), with the
            # allocator settings the CLI process has (mambadiff.runtime: training is slower without)
            from mambadiff.runtime import tune_cpu_allocator
            with ProcessPoolExecutor(min(jobs, len(args)), mp_context=multiprocessing.get_context("spawn"),
                                     initializer=tune_cpu_allocator) as pool:
                results = [f.result() for f in [pool.submit(run_recipe, *a) for a in args]]
        else:
            results = [run_recipe(*a, progress) for a in args]
        for (spec, run_dir, *_), (row, records) in zip(args, results):
            rows.append(row)
            if run_root:
                from mambadiff.fileio import atomic_write_text
                atomic_write_text(run_dir / f"samples_{split}.jsonl",
                                  "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            if copy_inputs is None:
                copy_inputs = ([r["source"] for r in records], [r["reference"] for r in records])
    sources, references = copy_inputs
    copy_row = {"recipe": "copy source", "n": len(sources)}
    from mambadiff.metrics.generation import comparable_texts
    copy_row.update(score_outputs(comparable_texts(sources), references, sources, bertscore))
    reference_row = {"recipe": "references", "n": len(references)}
    reference_row.update(score_outputs(comparable_texts(references), references, sources, bertscore=False))
    rows += [copy_row, reference_row]
    print_table([{**r, "recipe": r["recipe"][:60]} for r in rows], [c for c in COLUMNS if bertscore or c != "bertscore"],
                floatfmt=".4f")
    write_json(json_path, {"minutes": minutes, "threads": threads, "jobs": jobs, "split": split, "limit": limit,
                           "rows": rows})
    return rows
