"""`mambadiff classify train` and `mambadiff classify eval`."""
from __future__ import annotations

import click

from mambadiff.config import ConfigError, load_config

from .training import run_training, train_arguments

FORMATS = ("auto", "sentiment140", "sst2", "imdb", "csv", "jsonl", "listops")


def _fail(err: Exception) -> None:
    if isinstance(err, OSError):  # a full disk, a missing permission: the file and the reason
        from mambadiff.fileio import describe_os_error
        err = describe_os_error(err)
    raise click.ClickException(" ".join(str(err).split()))  # one line


@click.group("classify")
def classify_group():
    """Sequence classification (sentiment): Mamba, Mamba-2, S4D, Transformer and LSTM classifiers.

    Shipped configs: sentiment140-mamba, sst2-mamba, imdb-mamba, lra-listops, lra-text. Data paths are relative
    (../shared/data/...) and resolved against the current directory: run from the repository root.
    """


@classify_group.command("train")
@train_arguments("sentiment140-mamba, sst2-mamba, imdb-mamba, lra-listops, lra-text")
def train_command(config, resume, overrides):
    """Train a classifier. OVERRIDES are key=value, e.g. model.backbone.name=transformer train.max_minutes=8."""
    from mambadiff.tasks.classify import ClassifyConfig, train_classifier

    def train():
        result, _, _, metrics = train_classifier(load_config(ClassifyConfig, config, overrides), resume=resume)
        lines = [f"{split}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} (n={m['n']})"
                 for split, m in ((s, metrics[s]) for s in ("valid", "test") if s in metrics)]
        return result, "\n".join(lines)

    run_training(train)


def format_report(metrics: dict, names: list[str] | None = None) -> str:
    """Accuracy, macro-F1 and the confusion matrix (rows: true label, columns: predicted) as text."""
    from tabulate import tabulate
    labels = names or [str(x) for x in metrics["labels"]]
    rows = [[f"true {lab}", *counts] for lab, counts in zip(labels, metrics["confusion_matrix"])]
    table = tabulate(rows, headers=["", *[f"pred {lab}" for lab in labels]])
    return (f"n {metrics['n']}\naccuracy {metrics['accuracy']:.4f}\nmacro-F1 {metrics['macro_f1']:.4f}\n"
            f"confusion matrix (rows true, columns predicted):\n{table}")


@classify_group.command("eval")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False),
              help="A run folder (its latest checkpoint) or a checkpoint folder.")
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False),
              help="A labelled file (read with the run's label map, cleaning and max_len).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="File format; default: the training config's.")
@click.option("--text-column", default=None, help="Text column / field; default: the config's (same format) or the format's.")
@click.option("--label-column", default=None, help="Label column / field.")
@click.option("--batch-size", default=256, show_default=True, help="Examples per evaluation batch.")
@click.option("--no-ema", is_flag=True, help="Use the raw weights instead of the EMA weights.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the metrics here.")
def eval_command(checkpoint, data_path, fmt, text_column, label_column, batch_size, no_ema, json_path):
    """Score a trained classifier on a labelled file: accuracy, macro-F1, confusion matrix."""
    from mambadiff.data.errors import DataError
    from mambadiff.tasks.classify import describe_parameters, evaluate_classifier, load_classifier, load_eval_data
    from mambadiff.train.checkpoint import atomic_write_json
    try:
        model, tok, cfg = load_classifier(checkpoint, ema=not no_ema)
        ds = load_eval_data(cfg, tok, data_path, format=fmt, text_column=text_column, label_column=label_column)
        if len(ds) == 0:
            raise DataError("no examples to evaluate", file=data_path)
        metrics = evaluate_classifier(model, ds, batch_size, cfg.data.label_names)
    except (DataError, ConfigError, FileNotFoundError, ValueError) as e:
        _fail(e)
    click.echo(describe_parameters(model))
    click.echo(format_report(metrics, metrics.get("label_names")))
    if json_path:
        atomic_write_json(json_path, {"checkpoint": str(checkpoint), "data": str(data_path), **metrics})
