"""Classifier inference time against sequence length: Mamba, Mamba-2, S4D, Transformer, LSTM.

Glossary: b batch, l length, d model width, v vocab.

Each model is a full ``SequenceClassifier`` (embedding -> 2-layer backbone -> mean pooling -> head)
sized to the same non-embedding parameter count as the Mamba classifier at ``d_model``
(``mambadiff.tasks.classify.match_backbone``). The Transformer uses sinusoidal positions so that
any length runs and no position table enters the count. Inputs are random token ids (b, l) with no
padding; a forward pass runs under ``torch.inference_mode`` in eval mode. ``seconds`` is the median
over ``repeats`` runs after ``warmup`` runs; ``speedup_vs_transformer`` is the Transformer's seconds
at the same length divided by the model's.
"""
from __future__ import annotations

import time

import click
import torch

from mambadiff.models.backbones import BackboneConfig
from mambadiff.models.classifier import ClassifierConfig, SequenceClassifier

from .common import print_table, time_and_peak, write_json

DEFAULT_MODELS = ("mamba", "mamba2", "s4d", "transformer", "lstm")
DEFAULT_SEQ_LENS = (64, 128, 256, 512, 1024, 2048, 4096)


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
    unknown = [m for m in models if m not in DEFAULT_MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {DEFAULT_MODELS}")
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


def _lengths(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated lengths, e.g. 64,128,256") from None
    if not out or min(out) <= 0:
        raise click.BadParameter(f"{text!r}: expected positive lengths")
    return out


@click.command("classify")
@click.option("--model", "models", multiple=True, type=click.Choice(DEFAULT_MODELS), default=DEFAULT_MODELS,
              show_default=True, help="Classifiers to time (repeat the option).")
@click.option("--seq-lens", default=",".join(map(str, DEFAULT_SEQ_LENS)), show_default=True,
              help="Comma-separated sequence lengths.")
@click.option("--batch", default=8, show_default=True)
@click.option("--repeats", default=3, show_default=True)
@click.option("--warmup", default=1, show_default=True)
@click.option("--d-model", default=128, show_default=True, help="Mamba reference width (sets the parameter target).")
@click.option("--layers", "n_layers", default=2, show_default=True)
@click.option("--bidirectional", is_flag=True, help="Bidirectional backbones (non-causal Transformer).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", default=0, show_default=True,
              help="torch intra-op threads for the run; 0: torch's default. Use 1 on a busy shared CPU.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the records here.")
def classify_bench_command(models, seq_lens, batch, repeats, warmup, d_model, n_layers, bidirectional, device,
                           threads, json_path):
    """Classifier inference seconds per batch vs sequence length, at matched parameter counts."""
    try:
        run_classify_benchmark(models, _lengths(seq_lens), batch, repeats, warmup, json_path, d_model=d_model,
                               n_layers=n_layers, bidirectional=bidirectional, device=device, threads=threads)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
