"""`mambadiff bench layers`: whole stacks, training step and inference, side by side (mambadiff.bench.layers)."""
from __future__ import annotations

import click

from mambadiff.bench.layers import DEFAULT_MODELS, run_layers_benchmark
from mambadiff.models.backbones import BACKBONES

from .options import device_option, json_option, parse_int_pairs, split_names, timing_options


@click.command("layers")
@click.option("--model", "models", multiple=True, default=DEFAULT_MODELS, show_default=True,
              help="Stacks to time (repeat the option or separate by commas); Mamba-1 may name a "
                   "scan backend, e.g. mamba:reference.")
@click.option("--train", "train", default="64x128,64x1024", show_default=True, help="Training cases BxL.")
@click.option("--infer", "infer", default="8x128,8x1024,8x2048,8x4096", show_default=True, help="Inference cases BxL.")
@click.option("--d-model", default=128, show_default=True, help="Model width d of every stack.")
@click.option("--layers", "n_layers", default=6, show_default=True, help="Layers per stack.")
@timing_options(repeats=3, warmup=1)
@device_option()
@json_option()
def layers_command(models, train, infer, d_model, n_layers, repeats, warmup, device, json_path):
    """Time whole 6-layer stacks (training step and inference) side by side."""
    models = split_names(models)
    unknown = [m for m in models if m.partition(":")[0] not in BACKBONES]
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; expected some of {sorted(BACKBONES)}", param_hint="--model")
    run_layers_benchmark(models, parse_int_pairs(train, "BxL, e.g. 64x128"), parse_int_pairs(infer, "BxL, e.g. 64x128"),
                         d_model, n_layers, repeats, warmup, device, json_path)
