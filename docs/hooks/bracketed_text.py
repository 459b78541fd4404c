"""MkDocs hook: docstrings name BERT special tokens ([PAD], [SEP], ...) and optional table rows
("[, MBR]") in square brackets. Markdown reads those as shortcut references, and the autorefs
plugin reports each as a missing cross-reference target, which fails a --strict build.

This filter drops that warning only for bracketed text that cannot be a Python object path: an
all-capitals token or text starting with something other than a letter or underscore. A missing
target such as ``mambadiff.ssm.Mamba3`` still fails the build.
"""
from __future__ import annotations

import logging
import re

_NOT_AN_OBJECT = re.compile(r"[A-Z]+|[^A-Za-z_].*")
_TARGET = re.compile(r"Could not find cross-reference target '(?P<ref>.*)'$")


class _BracketedTextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        match = _TARGET.search(record.getMessage())
        return not (match and _NOT_AN_OBJECT.fullmatch(match["ref"]))


def on_startup(command, dirty):  # noqa: ARG001  (MkDocs hook signature)
    logging.getLogger("mkdocs.plugins.mkdocs_autorefs._internal.plugin").addFilter(_BracketedTextFilter())
