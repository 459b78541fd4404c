"""MkDocs hook: generated reference, so the docs cannot drift from the code.

* ``<!-- options: package.module.Class -->`` becomes the Markdown table of that dataclass's declared
  options (`mambadiff.options.options_table`): the one declaration of each option;
* ``<!-- cli: generate -->`` (a command path) becomes that command's ``--help`` text.
"""
from __future__ import annotations

import importlib
import re

_MARKER = re.compile(r"^<!-- options: (?P<path>[\w.]+) -->$", re.M)
_CLI = re.compile(r"^<!-- cli: (?P<command>[\w -]+?) -->$", re.M)


def _table(match: re.Match) -> str:
    from mambadiff.options import options_table
    module, _, name = match["path"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return options_table(cls, getattr(cls, "prefix", ""))


def _help(match: re.Match) -> str:
    from click.testing import CliRunner

    from mambadiff.cli import main
    words = match["command"].split()
    result = CliRunner().invoke(main, [*words, "--help"], terminal_width=100)
    if result.exit_code != 0:
        raise RuntimeError(f"mambadiff {match['command']} --help failed: {result.output}")
    return f"```text\n{result.output.rstrip()}\n```"


def on_page_markdown(markdown, page, config, files):  # noqa: ARG001  (MkDocs hook signature)
    return _CLI.sub(_help, _MARKER.sub(_table, markdown))
