"""`mambadiff bench classify`: classifier inference time vs length at matched parameter counts, or whole
LRA tasks at equal wall-clock (mambadiff.bench.classify)."""
from __future__ import annotations

import click

from mambadiff.bench.classify import (DEFAULT_MODELS, DEFAULT_SEQ_LENS, TASK_MODELS, TASKS, run_classify_benchmark,
                                      run_task_benchmark)
from mambadiff.models.backbones import BACKBONES

from .options import click_errors, device_option, json_option, threads_option, timing_options


def parse_lengths(text: str) -> tuple[int, ...]:
    """``"64,128"`` -> (64, 128); anything else is a click error."""
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated lengths, e.g. 64,128,256") from None
    if not out or min(out) <= 0:
        raise click.BadParameter(f"{text!r}: expected positive lengths")
    return out


@click.command("classify")
@click.option("--task", type=click.Choice(TASKS), default=None,
              help="Train each model on this task for --minutes (equal wall-clock, equal parameters) and "
                   "record accuracy, tokens/s and inference ms per example, instead of timing inference vs length.")
@click.option("--model", "models", multiple=True, type=click.Choice(tuple(BACKBONES)),
              help=f"Classifiers (repeat the option); default: {', '.join(DEFAULT_MODELS)}; with --task: the "
                   f"registered ones of {', '.join(TASK_MODELS)}.")
@click.option("--minutes", default=10.0, show_default=True, help="--task: training minutes per model.")
@click.option("--override", "overrides", multiple=True,
              help="--task: a config override key=value for every model (repeat), e.g. data.listops.n_train=20000.")
@click.option("--out-dir", default=None, help="--task: run folders go here (default runs/bench-classify-TASK).")
@click.option("--infer-examples", default=256, show_default=True, help="--task: test examples timed for inference.")
@click.option("--seq-lens", default=",".join(map(str, DEFAULT_SEQ_LENS)), show_default=True,
              help="Comma-separated sequence lengths.")
@click.option("--batch", default=8, show_default=True, help="Batch size (--task: of the timed inference).")
@timing_options(repeats=3, warmup=1)
@click.option("--d-model", default=128, show_default=True, help="Mamba reference width (sets the parameter target).")
@click.option("--layers", "n_layers", default=2, show_default=True, help="Layers of every backbone's stack.")
@click.option("--bidirectional", is_flag=True, help="Bidirectional backbones (non-causal Transformer).")
@device_option()
@threads_option(0, "torch intra-op threads for the run; 0: torch's default (--task: 1). Use 1 on a busy shared CPU.")
@json_option()
def classify_bench_command(task, models, minutes, overrides, out_dir, infer_examples, seq_lens, batch, repeats, warmup,
                           d_model, n_layers, bidirectional, device, threads, json_path):
    """Classifier inference seconds per batch vs sequence length at matched parameter counts, or (--task)
    whole LRA tasks trained at equal wall-clock and parameter count."""
    with click_errors(one_line=True):
        if task is not None:
            run_task_benchmark(task, models, minutes, overrides, out_dir, json_path, infer_examples=infer_examples,
                               infer_batch=batch, threads=threads or 1)
        else:
            run_classify_benchmark(models or DEFAULT_MODELS, parse_lengths(seq_lens), batch, repeats, warmup,
                                   json_path, d_model=d_model, n_layers=n_layers, bidirectional=bidirectional,
                                   device=device, threads=threads)
