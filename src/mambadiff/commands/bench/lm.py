"""`mambadiff bench lm`: language-model recipes at equal wall clock, nanoGPT beside them (mambadiff.bench.lm)."""
from __future__ import annotations

import click

from mambadiff.bench.lm import DEFAULT_RECIPES, run_lm_benchmark

from .options import click_errors, json_option, threads_option


@click.command("lm")
@click.option("--recipe", "recipes", multiple=True, default=DEFAULT_RECIPES, show_default=True,
              help='A shipped config name or YAML file with optional key=value overrides in the same quoted '
                   'string, e.g. "shakespeare-char model.backbone.name=transformer". Repeat for each recipe.')
@click.option("--minutes", default=0.0, show_default=True,
              help="Training clock per recipe; 0: nanoGPT's measured training clock (needs --nanogpt).")
@threads_option(1, "torch threads of every run (nanoGPT's too, through OMP_NUM_THREADS).")
@click.option("--nanogpt", type=click.Path(file_okay=False, exists=True),
              help="A checkout of karpathy/nanoGPT: train its README's CPU recipe for Tiny Shakespeare characters "
                   "on the same text and score it beside the recipes.")
@click.option("--text", "text_file", default="../shared/data/tinyshakespeare/input.txt", show_default=True,
              type=click.Path(dir_okay=False, exists=True), help="The Tiny Shakespeare file nanoGPT prepares.")
@click.option("--run-root", type=click.Path(file_okay=False), help="Keep each recipe's run folder here.")
@json_option("Write the rows here.")
def lm_bench_command(recipes, minutes, threads, nanogpt, text_file, run_root, json_path):
    """Train language-model recipes for the same clock and score the whole validation split (loss, bits/byte)."""
    with click_errors({"spec": "--recipe", "recipes": "--recipe", "nanogpt": "--nanogpt"}):
        run_lm_benchmark(recipes, minutes, threads, nanogpt, text_file, run_root, json_path)
