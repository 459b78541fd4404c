"""run_dir/tokenizer is reused only for the training file's content it was trained on (SHA-256), wherever
that file lies: a rewritten file at the same path rebuilds it, a moved run keeps it."""
import os

import pytest

from mambadiff.data.tokenizer import build_tokenizer
from mambadiff.train.run_tokenizer import prepare_run_tokenizer


def prepare(run_dir, source, builds):
    def build():
        builds.append(source)
        return build_tokenizer("trained", [line for line in source.read_text().splitlines()], 60)
    return prepare_run_tokenizer(run_dir, "trained", 60, source, build)


def test_new_content_at_the_same_path_rebuilds_the_tokenizer(tmp_path, capsys):
    source, builds = tmp_path / "train.txt", []
    source.write_text("the cat sat on the mat\nthe dog ate the bone\n" * 5)
    prepare(tmp_path / "run", source, builds)
    prepare(tmp_path / "run", source, builds)
    assert len(builds) == 1  # same content: reused
    source.write_text("zebras quietly graze beside rivers\nowls hunt mice at night\n" * 5)
    prepare(tmp_path / "run", source, builds)
    assert len(builds) == 2 and "whose content has changed" in capsys.readouterr().out
    (tmp_path / "run" / "checkpoints" / "step_00000001").mkdir(parents=True)  # now the run depends on it
    (tmp_path / "run" / "checkpoints" / "step_00000001" / "trainer_state.json").write_text("{}")
    source.write_text("something else entirely\n" * 5)
    with pytest.raises(ValueError, match="train.txt, whose content has changed since"):
        prepare(tmp_path / "run", source, builds)


def test_a_moved_run_keeps_its_tokenizer(tmp_path):
    (tmp_path / "a" / "data").mkdir(parents=True)
    source, builds = tmp_path / "a" / "data" / "train.txt", []
    source.write_text("the cat sat on the mat\n" * 5)
    prepare(tmp_path / "a", source, builds)
    os.replace(tmp_path / "a", tmp_path / "b")
    prepare(tmp_path / "b", tmp_path / "b" / "data" / "train.txt", builds)
    assert len(builds) == 1
