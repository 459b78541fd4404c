"""What the `mambadiff bench` subcommands share: their common options, the parsing of list-valued
options, and turning the benchmarks' bad-input errors into click errors (one line, no traceback).
Light to import: nothing here loads torch."""
from __future__ import annotations

import contextlib

import click

JSON_HELP = "Write the records here."


def json_option(help: str = JSON_HELP):
    """``--json FILE`` into ``json_path``: where the benchmark writes its records (atomically)."""
    return click.option("--json", "json_path", type=click.Path(dir_okay=False), help=help)


def threads_option(default: int, help: str, dest: str = "threads", type: click.ParamType | type = int):
    """``--threads N``: torch (and C kernel) threads of the run."""
    return click.option("--threads", dest, type=type, default=default, show_default=True, help=help)


def timing_options(repeats: int, warmup: int):
    """``--repeats`` timed runs after ``--warmup`` untimed ones (the median is reported)."""
    def decorate(command):
        command = click.option("--warmup", default=warmup, show_default=True, help="Untimed runs before the timed ones.")(command)
        return click.option("--repeats", default=repeats, show_default=True, help="Timed runs; the median is reported.")(command)
    return decorate


def device_option():
    return click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda.")


def split_names(values) -> tuple[str, ...]:
    """A repeatable option whose values may also be comma separated: ("mamba,s4d", "lstm") ->
    ("mamba", "s4d", "lstm")."""
    return tuple(name.strip() for item in values for name in item.split(",") if name.strip())


def parse_int_pairs(text: str, expected: str, param_hint: str | None = None) -> tuple[tuple[int, int], ...]:
    """``"64x128,8x256"`` -> ((64, 128), (8, 256)); a malformed item is a click error naming ``expected``."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            a, b = item.lower().split("x")
            out.append((int(a), int(b)))
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected {expected}", param_hint=param_hint) from None
    return tuple(out)


@contextlib.contextmanager
def click_errors(options: dict[str, str] | None = None, *, one_line: bool = False):
    """Runs a benchmark with its bad-input errors shown as click errors: a ``BenchArgumentError`` as an
    invalid value of the option that set the argument (``options`` maps argument names to options;
    by default ``--argument-name``; an empty spec is named as "an empty OPTION"), any other
    ``ValueError`` (ConfigError, DataError, ...) or a missing / existing file as ``Error: message``
    (``one_line``: its whitespace collapsed)."""
    from mambadiff.bench.common import BenchArgumentError

    try:
        yield
    except BenchArgumentError as e:
        option = (options or {}).get(e.argument, "--" + e.argument.replace("_", "-"))
        message = f"an empty {option}" if e.argument == "spec" else e.message
        raise click.BadParameter(message, param_hint=option) from None
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        raise click.ClickException(" ".join(str(e).split()) if one_line else str(e)) from None
