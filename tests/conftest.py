import os
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Property tests draw the same examples on every run (CI included): a failure found by a random draw
# on one machine must not come and go between runs. HYPOTHESIS_PROFILE=explore draws new ones.
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config, items):
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"shared data folder {SHARED_DATA} is absent")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def shared_data() -> Path:
    return SHARED_DATA


# ---- shared helpers (fixtures, so that test modules need no imports from here) ----------------------

def _write_jsonl(path: Path, rows) -> Path:
    """One JSON object per line (UTF-8, a final newline); returns `path`."""
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def write_jsonl():
    """``write_jsonl(path, rows) -> path``: rows (dicts) as JSON lines."""
    return _write_jsonl


@pytest.fixture(scope="session")
def bert_tok():
    """The offline bert-base-uncased WordPiece tokenizer (loaded once per session)."""
    from mambadiff.data.tokenizer import bert_tokenizer

    return bert_tokenizer()


def _run_cli(*args, command=None):
    """Run the `mambadiff` command (or `command`) in-process with string arguments; returns the click Result."""
    from click.testing import CliRunner

    from mambadiff.cli import main

    return CliRunner().invoke(command if command is not None else main, [str(a) for a in args])


@pytest.fixture
def run_cli():
    """``run_cli(*args, command=None) -> click Result`` (``mambadiff ARGS`` in-process)."""
    return _run_cli


def _assert_clean_error(result, *fragments: str) -> str:
    """A bad-input failure as users should see it: exit code 1, no traceback, one ``Error: ...`` line
    holding every fragment (e.g. the file, ``line 3``, ``field 'trg'``). Returns that line."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


@pytest.fixture
def assert_clean_error():
    """``assert_clean_error(result, *fragments) -> the error line`` (see `_assert_clean_error`)."""
    return _assert_clean_error
