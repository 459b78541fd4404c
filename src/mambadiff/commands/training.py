"""What the `train` subcommands share: the ``--config`` / ``--resume`` / ``key=value`` arguments, one-line
errors, and the closing line (or, after Ctrl-C / SIGTERM, the exit code 130 / 143 with a hint)."""
from __future__ import annotations

import sys
from typing import Callable

import click


def train_arguments(configs: str):
    """``--config`` (help naming the shipped ``configs``), ``--resume`` and the ``OVERRIDES`` argument."""
    def decorate(command):
        command = click.argument("overrides", nargs=-1)(command)
        command = click.option("--resume", is_flag=True, help="Continue the run folder's latest checkpoint.")(command)
        return click.option("--config", "config", default=None,
                            help=f"YAML file or shipped config name ({configs}).")(command)
    return decorate


def run_training(train: Callable[[], tuple[object, str]]) -> None:
    """Run ``train`` (returning the TrainResult and the lines that describe it), report it. Bad input
    (a config, data, a run folder, a full disk) is one line and exit 1."""
    from mambadiff.config import ConfigError
    from mambadiff.data.errors import DataError
    try:
        result, summary = train()
    except (DataError, ConfigError, OSError, ValueError) as e:
        raise click.ClickException(" ".join(str(e).split())) from None
    msg = (f"step {result.step} in {result.seconds:.0f}s ({result.tokens_per_s:,.0f} tokens/s); checkpoint "
           f"{result.checkpoint}" + (f"\n{summary}" if summary else ""))
    if result.interrupted:  # 130 after Ctrl-C, 143 after SIGTERM (128 + the signal number)
        from mambadiff.train.interrupt import exit_code
        click.echo(f"interrupted: {msg}; resume with --resume", err=True)
        sys.exit(exit_code(result.stop_signal))
    click.echo(msg)
