"""`mambadiff bench layers`: whole stacks, training step and inference, side by side (mambadiff.bench.layers)."""
from __future__ import annotations

import click

from mambadiff.bench.layers import DEFAULT_MODELS, run_layers_benchmark
from mambadiff.models.backbones import BACKBONES

from .options import click_errors, device_option, json_option, parse_int_pairs, split_names, threads_option, timing_options


@click.command("layers")
@click.option("--model", "models", multiple=True, default=DEFAULT_MODELS, show_default=True,
              help="Stacks to time (repeat the option or separate by commas); Mamba-1 may name a "
                   "scan backend, e.g. mamba:reference.")
@click.option("--train", "train", default="64x128,64x1024", show_default=True, help="Training cases BxL.")
@click.option("--infer", "infer", default="8x128,8x1024,8x2048,8x4096", show_default=True, help="Inference cases BxL.")
@click.option("--d-model", default=128, show_default=True, help="Model width d of every stack.")
@click.option("--layers", "n_layers", default=6, show_default=True, help="Layers per stack.")
@click.option("--bidirectional", is_flag=True,
              help="Bidirectional stacks, as the classifiers and denoisers use them (non-causal Transformer).")
@click.option("--match", default=None,
              help="Size every stack to this model's parameter count (d_model; the Transformer's ff_dim), "
                   "within 5%, and report tokens/s against it; e.g. --match mamba2.")
@timing_options(repeats=3, warmup=1)
@device_option()
@threads_option(0, "torch intra-op threads for the run; 0: torch's default. Use 1 on a busy shared CPU.")
@json_option()
def layers_command(models, train, infer, d_model, n_layers, bidirectional, match, repeats, warmup, device, threads,
                   json_path):
    """Time whole 6-layer stacks (training step and inference) side by side."""
    models = split_names(models)
    unknown = [m for m in models if m.partition(":")[0] not in BACKBONES]
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; expected some of {sorted(BACKBONES)}", param_hint="--model")
    if match is not None and match not in models:
        raise click.BadParameter(f"{match!r} is not one of the timed models {list(models)}", param_hint="--match")
    with click_errors(one_line=True):
        run_layers_benchmark(models, parse_int_pairs(train, "BxL, e.g. 64x128"),
                             parse_int_pairs(infer, "BxL, e.g. 64x128"), d_model, n_layers, repeats, warmup, device,
                             json_path, bidirectional=bidirectional, match=match, threads=threads)
