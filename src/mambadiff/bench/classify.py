"""Classifier benchmarks: inference time against sequence length, and whole tasks at equal wall-clock.

Inference vs length (``run_classify_benchmark``):

Glossary: b batch, l length, d model width, v vocab.

Each model is a full ``SequenceClassifier`` (embedding -> 2-layer backbone -> mean pooling -> head)
sized to the same non-embedding parameter count as the Mamba classifier at ``d_model``
(``mambadiff.tasks.classify.match_backbone``). The Transformer uses sinusoidal positions so that
any length runs and no position table enters the count. Inputs are random token ids (b, l) with no
padding; a forward pass runs under ``torch.inference_mode`` in eval mode. ``seconds`` is the median
over ``repeats`` runs after ``warmup`` runs; ``speedup_vs_transformer`` is the Transformer's seconds
at the same length divided by the model's.

Tasks at equal parameter count and equal wall-clock (``run_task_benchmark``, ``--task``): each backbone
is trained by the task's shipped config (``lra-listops``, ``lra-text``) with ``model.backbone.name``
set to it, sized by the config's ``param_match`` to the reference SSM's non-embedding parameter count,
for the same ``train.max_minutes``; then its test accuracy, ``train_minutes`` (the training loop's wall
time: steps until the budget, then its final valid pass and save), ``tokens_per_s`` (real tokens, no
padding, over that time), ``step_tokens_per_s`` (the median of the loop's logged training windows:
steps only) and its inference time per example (the first ``infer_examples`` test examples, batches of
``infer_batch``, eval mode, no gradients) are recorded. Any registered backbone name works (s4, h3, ...).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from mambadiff.models.backbones import BACKBONES, BackboneConfig
from mambadiff.models.classifier import ClassifierConfig, SequenceClassifier

from .common import print_table, time_and_peak, write_json

DEFAULT_MODELS = ("mamba", "mamba2", "s4d", "transformer", "lstm")
DEFAULT_SEQ_LENS = (64, 128, 256, 512, 1024, 2048, 4096)
TASKS = ("lra-listops", "lra-text")  # task name = shipped config name
# the task benchmark's default models: those of these that are registered
TASK_MODELS = ("mamba", "mamba2", "s4", "s4d", "h3", "transformer")


def matched_classifier_configs(models=DEFAULT_MODELS, d_model: int = 128, n_layers: int = 2,
                               vocab_size: int = 30522, num_classes: int = 2, bidirectional: bool = False,
                               tolerance: float = 0.10) -> dict[str, tuple[ClassifierConfig, dict]]:
    """{model: (ClassifierConfig, match report)} with matched non-embedding parameter counts."""
    from mambadiff.tasks.classify import match_backbone
    ref = BackboneConfig(name="mamba", d_model=d_model, n_layers=n_layers, bidirectional=bidirectional,
                         pos_encoding="sinusoidal")
    out = {}
    for name in models:
        bb, report = match_backbone(name, ref, num_classes, tolerance=tolerance)
        out[name] = (ClassifierConfig(vocab_size=vocab_size, num_classes=num_classes, dropout=0.0, backbone=bb), report)
    return out


def run_classify_benchmark(models=DEFAULT_MODELS, seq_lens=DEFAULT_SEQ_LENS, batch: int = 8, repeats: int = 3,
                           warmup: int = 1, json_path=None, d_model: int = 128, n_layers: int = 2,
                           vocab_size: int = 30522, num_classes: int = 2, bidirectional: bool = False,
                           device: str = "cpu", seed: int = 0, threads: int = 0,
                           print_results: bool = True) -> list[dict]:
    """Time one inference forward per (model, seq_len); returns the records (also printed / written).

    ``threads`` > 0 sets torch's intra-op threads (the C scan kernel follows it) for the run: on a
    CPU shared with other jobs, 1 thread gives far steadier timings than oversubscribed threads.
    """
    if batch <= 0 or repeats <= 0 or warmup < 0:
        raise ValueError(f"batch and repeats must be > 0 and warmup >= 0, got {batch}, {repeats}, {warmup}")
    if not seq_lens or any(int(l) <= 0 for l in seq_lens):
        raise ValueError(f"seq_lens must be positive lengths, got {tuple(seq_lens)}")
    _check_models(models)
    dev = torch.device(device)
    old_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        records = _run(models, seq_lens, batch, repeats, warmup, d_model, n_layers, vocab_size, num_classes,
                       bidirectional, dev, seed)
    finally:
        torch.set_num_threads(old_threads)
    ref = {r["seq_len"]: r["seconds"] for r in records if r["model"] == "transformer" and "seconds" in r}
    for r in records:
        if "seconds" in r and r["seq_len"] in ref:
            r["speedup_vs_transformer"] = ref[r["seq_len"]] / r["seconds"]
    if print_results:
        print_table(records, ["model", "seq_len", "batch", "params", "non_embedding_params", "seconds",
                              "tokens_per_s", "peak_mem_mb", "speedup_vs_transformer"])
    write_json(json_path, records)
    return records


def _run(models, seq_lens, batch, repeats, warmup, d_model, n_layers, vocab_size, num_classes, bidirectional,
         dev, seed) -> list[dict]:
    from mambadiff.tasks.classify import parameter_counts
    configs = matched_classifier_configs(models, d_model, n_layers, vocab_size, num_classes, bidirectional)
    records: list[dict] = []
    for name in models:
        cfg, report = configs[name]
        torch.manual_seed(seed)
        model = SequenceClassifier(cfg).to(dev).eval()
        counts = parameter_counts(model)
        bb = cfg.backbone
        for l in seq_lens:
            g = torch.Generator().manual_seed(seed + int(l))
            ids = torch.randint(0, vocab_size, (batch, int(l)), generator=g).to(dev)  # (b, l)

            def infer(model=model, ids=ids):
                with torch.inference_mode():
                    model(ids)

            base = {"model": name, "seq_len": int(l), "batch": batch, "d_model": bb.d_model, "n_layers": bb.n_layers,
                    "ff_dim": (bb.ff_dim or 4 * bb.d_model) if name == "transformer" else None,
                    "params": counts["total"], "non_embedding_params": counts["non_embedding"],
                    "match_rel_error": report["rel_error"], "threads": torch.get_num_threads(),
                    "device": str(dev)}
            t0 = time.perf_counter()
            try:
                seconds, peak = time_and_peak(infer, dev, repeats=repeats, warmup=warmup)
            except (RuntimeError, MemoryError) as e:  # e.g. out of memory at long l
                records.append({**base, "error": str(e).splitlines()[0][:120]})
                continue
            records.append({**base, "seconds": seconds, "tokens_per_s": batch * int(l) / seconds,
                            "peak_mem_mb": peak, "bench_wall_s": time.perf_counter() - t0})
    return records


def _check_models(models) -> None:
    unknown = [m for m in models if m not in BACKBONES]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from the registered backbones {tuple(BACKBONES)}")


def default_task_models() -> tuple[str, ...]:
    return tuple(m for m in TASK_MODELS if m in BACKBONES)


def run_task_benchmark(task: str, models=None, minutes: float = 10.0, overrides=(), out_dir=None,
                       json_path=None, infer_examples: int = 256, infer_batch: int = 16, threads: int = 1,
                       verbose: bool = True, print_results: bool = True) -> list[dict]:
    """Train each model on ``task`` for ``minutes`` (its shipped config plus ``overrides``) and record
    accuracy, training minutes, tokens/s and inference ms per example; runs go to ``out_dir/<model>``
    (default ``runs/bench-classify-<task>``). A model that fails (e.g. out of memory) gets an ``error``."""
    from mambadiff.config import load_config
    from mambadiff.tasks.classify import ClassifyConfig, train_classifier
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    models = tuple(models) if models else default_task_models()
    _check_models(models)
    if minutes <= 0 or infer_examples <= 0 or infer_batch <= 0:
        raise ValueError(f"minutes, infer_examples and infer_batch must be > 0, got {minutes}, {infer_examples}, "
                         f"{infer_batch}")
    out = Path(out_dir or f"runs/bench-classify-{task}")
    records = []
    for name in models:
        cfg = load_config(ClassifyConfig, task, [*overrides, f"model.backbone.name={name}",
                                                 f"train.max_minutes={minutes}", f"train.num_threads={threads}",
                                                 f"run_dir={out / name}"])
        base = {"task": task, "model": name, "minutes_budget": minutes, "threads": threads, "run_dir": str(out / name)}
        try:
            result, model, tok, metrics = train_classifier(cfg, progress=False, verbose=verbose)
            infer = _inference_ms_per_example(cfg, model, tok, infer_examples, infer_batch)
        except (RuntimeError, MemoryError) as e:  # e.g. attention out of memory at long l
            records.append({**base, "error": str(e).splitlines()[0][:120]})
            write_json(json_path, records)
            continue
        bb, counts = cfg.model.backbone, metrics["parameters"]
        split = "test" if "test" in metrics else "valid"
        target = cfg.param_match.target or counts["non_embedding"]
        records.append({**base, "accuracy": metrics[split]["accuracy"], "accuracy_split": split,
                        "n_eval": metrics[split]["n"], "valid_accuracy": metrics.get("valid", {}).get("accuracy"),
                        "train_minutes": result.seconds / 60, "steps": result.step,
                        "tokens_per_s": result.tokens_per_s, "step_tokens_per_s": _step_tokens_per_s(out / name),
                        **infer, "params": counts["total"],
                        "non_embedding_params": counts["non_embedding"],
                        "match_rel_error": (counts["non_embedding"] - target) / target, "d_model": bb.d_model,
                        "n_layers": bb.n_layers, "ff_dim": (bb.ff_dim or 4 * bb.d_model) if name == "transformer" else None})
        write_json(json_path, records)  # after every model: a process killed later keeps the finished ones
    if print_results:
        print_table(records, ["model", "accuracy", "train_minutes", "steps", "tokens_per_s", "step_tokens_per_s",
                              "infer_ms_per_example", "non_embedding_params", "error"])
    return records


def _step_tokens_per_s(run_dir: Path) -> float | None:
    """Median training tokens/s over the logged windows of a run's metrics.jsonl (no evaluation time)."""
    import json
    import statistics
    rates = [r["tokens_per_s"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
             if r.get("split") == "train" and r.get("tokens_per_s")]
    return statistics.median(rates) if rates else None


def _inference_ms_per_example(cfg, model, tok, n: int, batch: int) -> dict:
    """Milliseconds per example of ``predict`` over the first n test (else valid) examples."""
    from mambadiff.tasks.classify import encode_examples, load_splits, predict
    splits = load_splits(cfg, verbose=False)
    examples = (splits.test or splits.valid or splits.train)[:n]
    ds = encode_examples(examples, tok, cfg.data.max_len)
    model.eval()
    t0 = time.perf_counter()
    predict(model, ds, batch)
    seconds = time.perf_counter() - t0
    return {"infer_ms_per_example": 1000 * seconds / len(ds), "infer_examples": len(ds), "infer_batch": batch,
            "infer_mean_len": sum(ds.lengths) / len(ds)}
