"""``mambadiff data ...``: prepare DiffuSeq data folders. Thin: parses options, calls the library.

    mambadiff data qqp quora_duplicate_questions.tsv --out data/qqp
    mambadiff data builtin --out data/builtin
"""
from __future__ import annotations

import click

from mambadiff.data.errors import DataError

__all__ = ["data_group", "qqp_command", "builtin_command"]


@click.command("qqp")
@click.argument("input_tsv", type=click.Path(dir_okay=False, path_type=str))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Folder to write train.jsonl / valid.jsonl / test.jsonl into.")
@click.option("--valid-fraction", default=0.05, show_default=True, type=float, help="Share of pairs for valid.jsonl (0: none).")
@click.option("--test-fraction", default=0.05, show_default=True, type=float, help="Share of pairs for test.jsonl (0: none).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the split shuffle.")
@click.option("--quoting", default="csv", show_default=True, type=click.Choice(["csv", "none"]),
              help="csv: quoted TSV (raw Quora file); none: quotes are plain characters (GLUE files).")
def qqp_command(input_tsv, out_dir, valid_fraction, test_fraction, seed, quoting):
    """Convert a QQP tsv (raw Quora file or GLUE train/dev) into a DiffuSeq folder of duplicate pairs."""
    from mambadiff.data.qqp import convert_qqp

    try:
        result = convert_qqp(input_tsv, out_dir, valid_fraction=valid_fraction, test_fraction=test_fraction,
                             seed=seed, quoting=quoting)
    except (DataError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(result.summary())
    for split, path in result.paths.items():
        click.echo(f"wrote {path}")


@click.command("builtin")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Folder to write train.jsonl / valid.jsonl / test.jsonl into.")
@click.option("--n-train", default=10000, show_default=True, type=int, help="Training pairs to write.")
@click.option("--n-valid", default=500, show_default=True, type=int, help="Validation pairs to write.")
@click.option("--n-test", default=500, show_default=True, type=int, help="Test pairs to write.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the generated corpus.")
def builtin_command(out_dir, n_train, n_valid, n_test, seed):
    """Write the built-in procedurally generated paraphrase corpus as a DiffuSeq folder."""
    from mambadiff.data.builtin_corpus import write_builtin_corpus

    try:
        paths = write_builtin_corpus(out_dir, n_train=n_train, n_valid=n_valid, n_test=n_test, seed=seed)
    except (DataError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    for split, path in paths.items():
        click.echo(f"wrote {path} ({sizes[split]} pairs)")


@click.group("data")
def data_group():
    """Prepare data folders (QQP converter, built-in corpus)."""


data_group.add_command(qqp_command)
data_group.add_command(builtin_command)
