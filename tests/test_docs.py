"""The documentation: README length, relative links that resolve, and a strict MkDocs build.

The build runs ``mkdocs build --strict``, so a mkdocstrings reference to a module or object that no
longer exists, a page missing from the nav, or a link to a missing page or anchor fails the test.
It is skipped when the ``docs`` extra (mkdocs-material, mkdocstrings-python) is not installed.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 150

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target); the target stops at whitespace or ')' (an optional "title" follows)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...


def markdown_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    return [f for f in files if f.exists()]


def relative_links(text: str) -> list[str]:
    """Targets of the Markdown links and images in ``text`` that point into the repository."""
    text = INLINE_CODE.sub("", FENCE.sub("", text))
    return [t for t in LINK.findall(text) if not EXTERNAL.match(t) and not t.startswith("#")]


def test_link_parser_finds_relative_links_only():
    text = ("See [a](docs/a.md#x), ![p](img/p.png \"title\"), [w](https://x.org), [s](#top), "
            "`[c](code.md)`\n```\n[f](fenced.md)\n```\n")
    assert relative_links(text) == ["docs/a.md#x", "img/p.png"]


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def test_readme_keeps_the_two_commands_first():
    # .ci/run runs command 2 exactly; both must stay the first lines of the README's first code block.
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = FENCE.search(text)
    assert block is not None
    commands = [ln.split("#")[0].strip() for ln in block.group(0).splitlines()[1:3]]
    assert commands == ["./scripts/setup.sh && .venv/bin/mambadiff demo",
                        "./scripts/setup.sh && .venv/bin/python -m pytest -q"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    missing = []
    for target in relative_links(path.read_text(encoding="utf-8")):
        file_part = target.split("#", 1)[0]
        if file_part and not (path.parent / file_part).exists():
            missing.append(target)
    assert not missing, f"{path.relative_to(ROOT)}: links to missing files: {missing}"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None
                    or importlib.util.find_spec("mkdocstrings_handlers") is None,
                    reason="the docs extra (mkdocs-material, mkdocstrings-python) is not installed")
def test_site_builds_strict(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "site" / "reference" / "ssm" / "index.html").exists()
