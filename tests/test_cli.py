"""The `mambadiff` command tree: every command is documented and listed where a user looks for it."""
from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from mambadiff.cli import main


def _walk(group: click.Group, path: tuple[str, ...] = ()):
    """(path, command, parent group) for every command below `group`, depth first."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield (*path, name), command, group
        if isinstance(command, click.Group):
            yield from _walk(command, (*path, name))


COMMANDS = list(_walk(main))
HELP = {}  # path -> --help output


def _help(path: tuple[str, ...]) -> str:
    if path not in HELP:
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        HELP[path] = result.output
    return HELP[path]


def test_tree_is_complete():
    paths = {" ".join(p) for p, _, _ in COMMANDS}
    for expected in ("train", "generate", "evaluate", "report", "data qqp", "data builtin", "classify train",
                     "classify eval", "bench scan", "bench layers", "bench synthetic", "bench classify",
                     "bench denoiser"):
        assert expected in paths


@pytest.mark.parametrize("path", [p for p, _, _ in COMMANDS], ids=lambda p: " ".join(p))
def test_command_has_help_and_is_listed_by_its_parent(path):
    command = next(c for p, c, _ in COMMANDS if p == path)
    assert command is not None
    assert (command.help or "").strip(), f"{' '.join(path)} has no help text"
    own = _help(path)
    assert "Usage: " in own and path[-1] in own.splitlines()[0]
    parent = _help(path[:-1])
    listed = [line.split()[0] for line in parent.split("Commands:", 1)[1].splitlines() if line.startswith("  ")
              and not line.startswith("   ")]
    assert path[-1] in listed, f"{path[-1]!r} missing from `{' '.join(('mambadiff', *path[:-1]))} --help`"


@pytest.mark.parametrize("path", [p for p, c, _ in COMMANDS if not isinstance(c, click.Group)], ids=" ".join)
def test_every_option_has_help_text(path):
    command = next(c for p, c, _ in COMMANDS if p == path)
    bare = [p.opts[0] for p in command.params if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert not bare, f"`mambadiff {' '.join(path)}`: options without help: {', '.join(bare)}"


def test_top_level_help_names_every_subcommand():
    # `mambadiff --help` is the overview: a group's line names each of its subcommands.
    top = _help(())
    for path, command, parent in COMMANDS:
        if len(path) == 2:
            # the group's entry runs until the next entry (a line indented by exactly two spaces)
            line = " ".join(re.split(r"\n  (?=\S)", top.split(f"  {path[0]} ", 1)[1])[0].split())
            assert path[1] in line, f"`mambadiff --help` does not mention {' '.join(path)}: {line!r}"


def test_a_command_whose_module_cannot_be_imported_says_why(monkeypatch):
    """An optional extra that is missing: the command exists, and running it names the import error."""
    import importlib

    from click.testing import CliRunner

    from mambadiff import cli
    real = importlib.import_module

    def fail(name, *args):
        if name == "mambadiff.commands.metrics":  # the module of `evaluate`
            raise ImportError("No module named 'nltk'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fail)
    r = CliRunner().invoke(cli.main, ["evaluate"])
    assert r.exit_code != 0 and "unavailable: No module named 'nltk'" in r.output and "NameError" not in r.output
