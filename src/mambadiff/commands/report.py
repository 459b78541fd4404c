"""`mambadiff report RUN_DIR`: PNG plots and a Markdown summary of a run folder."""
from __future__ import annotations

import click


@click.command(name="report", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--bench", type=click.Path(dir_okay=False), default=None,
              help="Inference-time bench JSON (list of {model, seq_len, seconds, batch}); "
                   "default: RUN_DIR/bench_classify.json if present.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where to write report.md and the PNGs (default: RUN_DIR/report).")
@click.option("--samples", "max_samples", type=click.IntRange(min=0), default=5, show_default=True,
              help="Sample rows shown per samples*.jsonl file.")
def report_command(run_dir, bench, out_dir, max_samples):
    """Plot training curves (loss, MSE, NLL; accuracy), metrics per evaluated checkpoint
    (RUN_DIR/eval/step_*.json; against training minutes too when they hold train_seconds), sample rows and inference time vs length; write report.md."""
    try:
        from mambadiff.report.summary import build_report
    except ImportError as e:
        raise click.ClickException(f"reports need matplotlib and tabulate ({e}); pip install -e '.[plot]'") from None
    try:
        rep = build_report(run_dir, out_dir=out_dir, bench=bench, max_samples=max_samples)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot write {e.filename}: {e.strerror}") from None
    for p in rep.plots:
        click.echo(f"wrote {p}")
    click.echo(f"wrote {rep.markdown}")
