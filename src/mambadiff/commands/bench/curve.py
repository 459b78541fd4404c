"""`mambadiff bench curve`: paraphrase quality of every checkpoint of one or more runs against training
minutes (the logic lives in mambadiff.bench.curve)."""
from __future__ import annotations

import click

from mambadiff.commands.config_options import sampling_flags
from mambadiff.commands.seq2seq import workers_option


@click.command("curve")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False),
              help="A jsonl file of {src, trg}; every checkpoint samples its first --limit pairs.")
@click.option("--limit", type=click.IntRange(min=0), default=512, show_default=True, help="Only the first N pairs (0: all).")
@click.option("--label", "labels", multiple=True, help="Name of each run in the table and plot (repeat, in RUN order; "
                                                       "default: the run folder's name).")
@sampling_flags(exclude=("limit",))
@click.option("--bertscore/--no-bertscore", default=True, show_default=True, help="Score BERTScore F1 (MiniLM).")
@click.option("--device", default="cpu", show_default=True, help="torch device for sampling, e.g. cuda.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the rows here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write the BLEU / ROUGE-L vs minutes PNG here.")
@workers_option
def curve_command(runs, data_path, limit, labels, bertscore, device, json_path, plot_path, workers, **sampling):
    """Score every checkpoint of each RUN on the same pairs (RUN/eval/step_*.json, reused when the data and
    settings match) and plot BLEU and ROUGE-L against training minutes, with the copy-source baseline.
    Sampling options default to each checkpoint's own `sample` config."""
    from mambadiff.bench.curve import run_curve_benchmark
    from mambadiff.metrics.bertscore import BertScoreUnavailableError
    try:
        run_curve_benchmark(runs, data_path, limit, labels, sampling=sampling, bertscore=bertscore, device=device, json_path=json_path,
                            workers=workers,
                            plot_path=plot_path, progress=True, say=lambda msg: click.echo(msg, err=True))
    except (ValueError, BertScoreUnavailableError, ImportError) as e:  # DataError, CheckpointError are ValueErrors
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot read or write {e.filename}: {e.strerror}") from None
