"""`mambadiff bench generation`: tokens/s and memory of recurrent generation per backbone and length
(mambadiff.bench.generation)."""
from __future__ import annotations

import click

from mambadiff.bench.generation import DEFAULT_MODELS, run_generation_benchmark
from mambadiff.models.backbones import BACKBONES

from .options import json_option, split_names, threads_option


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=option) from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"expected integers >= 1, got {text!r}", param_hint=option)
    return values


@click.command("generation")
@click.option("--model", "models", multiple=True, default=DEFAULT_MODELS, show_default=True,
              help="Backbones (repeat the option or separate by commas).")
@click.option("--batch", "batches", default="1,16,64", show_default=True, help="Batch sizes.")
@click.option("--lengths", default="256,1024,4096,8192", show_default=True,
              help="Generated lengths at which the speed is reported (one generation of the longest).")
@click.option("--d-model", default=512, show_default=True, help="Model width.")
@click.option("--layers", "n_layers", default=6, show_default=True, help="Layers.")
@click.option("--prefill", default=4096, show_default=True, help="Prompt length of the prefill timing (0: skip).")
@click.option("--hf/--no-hf", default=False, show_default=True,
              help="Also time transformers' MambaForCausalLM / Mamba2ForCausalLM on the same weights.")
@click.option("--hf-prompt", default=1024, show_default=True, help="Prompt length of the transformers comparison.")
@threads_option(0, "torch threads (0: torch's default).")
@json_option("Write the records here.")
def generation_command(models, batches, lengths, d_model, n_layers, prefill, hf, hf_prompt, threads, json_path):
    """Generation speed (tokens/s at each length), memory and prefill time of every backbone, side by side."""
    models = split_names(models)
    unknown = [m for m in models if m not in BACKBONES]
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; expected some of {sorted(BACKBONES)}", param_hint="--model")
    run_generation_benchmark(models, _ints(batches, "--batch"), _ints(lengths, "--lengths"), d_model, n_layers,
                             prefill=prefill, threads=threads, hf=hf, hf_prompt=hf_prompt, json_path=json_path)
