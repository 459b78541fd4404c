"""`mambadiff bench quality`: paraphrase quality of recipes trained for the same wall-clock
(mambadiff.bench.quality)."""
from __future__ import annotations

import click

from mambadiff.bench.quality import DEFAULT_RECIPES, run_quality_benchmark

from .options import click_errors, json_option, threads_option


@click.command("quality")
@click.option("--recipe", "recipes", multiple=True, default=DEFAULT_RECIPES, show_default=True,
              help='A shipped config name or YAML file with optional key=value overrides in the same quoted '
                   'string, e.g. "qqp-cpu model.self_condition=false". Repeat for each recipe.')
@click.option("--minutes", default=10.0, show_default=True, help="Training wall-clock per recipe.")
@threads_option(1, "torch / kernel threads for training and sampling.")
@click.option("--split", default="valid", show_default=True, help="Split of each recipe's data folder to sample.")
@click.option("--limit", default=512, show_default=True, help="Only the first N pairs of the split (0: all).")
@click.option("--bertscore/--no-bertscore", default=True, show_default=True, help="Score BERTScore F1 (MiniLM).")
@click.option("--run-root", type=click.Path(file_okay=False), help="Keep each recipe's run folder and samples here.")
@click.option("--jobs", default=1, show_default=True,
              help="Recipes run at once, each in its own process with --threads threads (2 with --threads 1 "
                   "on two cores: side by side under the same load).")
@json_option("Write the rows here.")
def quality_command(recipes, minutes, threads, split, limit, bertscore, run_root, jobs, json_path):
    """Train recipes for the same wall-clock, sample, score: BLEU, ROUGE-L, BERTScore, iBLEU, copies, repeats."""
    with click_errors({"spec": "--recipe", "recipes": "--recipe"}):
        run_quality_benchmark(recipes, minutes, threads, split, limit, bertscore, run_root, json_path, jobs=jobs)
