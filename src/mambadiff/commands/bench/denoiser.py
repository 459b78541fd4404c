"""`mambadiff bench denoiser`: training steps of whole diffusion seq2seq configs side by side
(mambadiff.bench.denoiser)."""
from __future__ import annotations

import click

from mambadiff.bench.denoiser import DEFAULT_CONFIGS, run_denoiser_benchmark

from .options import click_errors, json_option, threads_option


@click.command("denoiser")
@click.option("--config", "configs", multiple=True, default=DEFAULT_CONFIGS, show_default=True,
              help='A shipped config name or YAML file, optionally with key=value overrides in the same '
                   'quoted string, e.g. "qqp-mamba2-cpu model.backbone.mamba2.d_state=32". Repeat for each '
                   'config; the first is the reference of speed_vs_first.')
@click.option("--steps", default=20, show_default=True,
              help="Timed slots per round; in each slot every config runs one training step.")
@click.option("--rounds", default=5, show_default=True, help="Rounds (each starts with --warmup steps per config).")
@click.option("--warmup", default=2, show_default=True, help="Untimed steps before each config's turn.")
@threads_option(1, "torch / kernel threads (train.num_threads).")
@click.option("--train-pairs", default=2048, show_default=True, help="Training pairs loaded per config.")
@json_option()
def denoiser_command(configs, steps, rounds, warmup, threads, train_pairs, json_path):
    """Training steps of whole denoiser configs side by side: ms/step, tokens/s, speed vs the first."""
    with click_errors({"spec": "--config"}):
        run_denoiser_benchmark(configs, steps, rounds, warmup, threads, train_pairs, json_path)
