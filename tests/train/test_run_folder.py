"""A run claims only a new, empty or run folder; a bad setting found before training (the model, a batch
larger than the data) is a one-line error that leaves the run folder as it was."""
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mambadiff.config import load_config
from mambadiff.tasks.seq2seq import Seq2SeqConfig, train_seq2seq
from mambadiff.train import TrainConfig, Trainer
from mambadiff.train.run_folder import RunFolderError, check_run_folder, check_runs_root, is_run_folder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_loop import ToyTask  # noqa: E402

TINY = ["data.builtin_train=64", "data.builtin_valid=8", "data.builtin_test=8", "data.vocab_size=120",
        "data.seq_len=24", "data.eval_size=0", "model.emb_dim=16", "model.backbone.name=transformer",
        "model.backbone.attn_layers=[]", "diffusion.process=gaussian", "model.backbone.d_model=16",
        "model.backbone.n_layers=1", "train.batch_size=4", "diffusion.steps=20", "train.progress=false",
        "train.num_threads=1", "train.steps=1"]
SEQ2SEQ_KEYS = ["run_dir", "data", "model", "diffusion", "train", "sample"]


@pytest.fixture(autouse=True)
def _keep_thread_count():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def train_cli(run_cli, run_dir, *extra):
    return run_cli("train", "--config", "demo", f"run_dir={run_dir}", *TINY, *extra)


def a_source_tree(folder):
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "README.md").write_text("hello\n")
    return folder


# ---- which folder a run may take -------------------------------------------------------------------
def test_a_folder_that_is_not_a_run_folder_is_refused_before_anything_is_written(tmp_path, run_cli,
                                                                                 assert_clean_error):
    tree = a_source_tree(tmp_path / "src")
    before = sorted(p.name for p in tree.iterdir())
    line = assert_clean_error(train_cli(run_cli, tree), f"run_dir={tree}", "not a run folder", "README.md")
    assert "choose a new or empty folder" in line
    assert sorted(p.name for p in tree.iterdir()) == before  # no config.json, tokenizer/, .lock


def test_the_filesystem_root_is_refused():
    with pytest.raises(RunFolderError, match="run_dir=/: the folder is not empty and is not a run folder"):
        check_run_folder("/", SEQ2SEQ_KEYS, "seq2seq")


def test_a_file_is_refused(tmp_path, run_cli, assert_clean_error):
    path = tmp_path / "notes.txt"
    path.write_text("x")
    assert_clean_error(train_cli(run_cli, path), f"run_dir={path}: is a file, not a folder")
    assert path.read_text() == "x"


def test_new_empty_and_run_folders_are_taken(tmp_path):
    check_run_folder(tmp_path / "new" / "deeper", SEQ2SEQ_KEYS)
    (tmp_path / "empty").mkdir()
    check_run_folder(tmp_path / "empty", SEQ2SEQ_KEYS)
    for marker in (".lock", "metrics.jsonl"):
        (tmp_path / marker.strip(".")).mkdir()
        (tmp_path / marker.strip(".") / marker).write_text("")
        assert is_run_folder(tmp_path / marker.strip("."))
        check_run_folder(tmp_path / marker.strip("."), SEQ2SEQ_KEYS)
    (tmp_path / "ckpts" / "checkpoints").mkdir(parents=True)
    check_run_folder(tmp_path / "ckpts", SEQ2SEQ_KEYS)


def test_a_config_json_of_another_kind_of_run_is_refused(tmp_path):
    folder = tmp_path / "classify_run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"run_dir": str(folder), "data": {}, "model": {},
                                                    "param_match": {}, "train": {}}))
    with pytest.raises(RunFolderError, match="its config.json is not the config of a seq2seq run"):
        check_run_folder(folder, SEQ2SEQ_KEYS, "seq2seq")
    check_run_folder(folder, ["run_dir", "data", "model", "param_match", "train"], "classification")
    (folder / "config.json").write_text('{"compilerOptions": {}}')  # some other tool's config.json
    with pytest.raises(RunFolderError, match="config.json is not the config of a classification run"):
        check_run_folder(folder, ["run_dir", "data", "model", "param_match", "train"], "classification")


def test_classification_training_refuses_a_seq2seq_run_folder(tmp_path, run_cli, assert_clean_error):
    run = tmp_path / "seq2seq_run"
    assert train_cli(run_cli, run).exit_code == 0
    r = run_cli("classify", "train", f"run_dir={run}", "train.steps=1")
    assert_clean_error(r, f"run_dir={run}", "config.json is not the config of a classification run")


def test_the_shared_loop_refuses_a_foreign_folder(tmp_path):
    tree = a_source_tree(tmp_path / "tree")
    cfg = TrainConfig(steps=1, batch_size=8, progress=False, device="cpu")
    with pytest.raises(RunFolderError, match="not a run folder"):
        Trainer(nn.Linear(5, 1), ToyTask(), cfg, tree, {"task": {}, "train": {}})
    assert not (tree / ".lock").exists() and not (tree / "checkpoints").exists()


def test_the_synthetic_benchmark_refuses_a_root_without_run_folders(tmp_path):
    from mambadiff.bench.synthetic import run_synthetic_benchmark

    tree = a_source_tree(tmp_path / "tree")
    with pytest.raises(RunFolderError, match="holds no run folder"):
        run_synthetic_benchmark(tasks=("selective_copy",), models=("mamba",), steps=1, run_dir=tree, progress=False)
    assert sorted(p.name for p in tree.iterdir()) == ["README.md", "pkg"]
    check_runs_root(tmp_path / "new")
    (tree / "old_run" / "checkpoints").mkdir(parents=True)
    check_runs_root(tree)  # it holds a run folder now


# ---- a bad setting found before training leaves nothing behind ---------------------------------------
@pytest.mark.parametrize("override, fragments", [
    (["model.backbone.name=mamba2", "model.backbone.d_model=3"], ["model.backbone.mamba2", "headdim"]),
    (["data.seq_len=1"], ["data.seq_len must be >= 7"]),
])
def test_a_bad_model_or_length_is_refused_before_the_tokenizer_is_written(tmp_path, run_cli, assert_clean_error,
                                                                          override, fragments):
    run = tmp_path / "run"
    assert_clean_error(train_cli(run_cli, run, "data.tokenizer=trained", *override), *fragments)
    assert not run.exists()  # no tokenizer/, no data/, no .lock


def test_a_batch_larger_than_the_data_is_refused_with_the_numbers(tmp_path, run_cli, assert_clean_error):
    run = tmp_path / "run"
    r = train_cli(run_cli, run, "data.tokenizer=trained", "train.batch_size=10000000")
    assert_clean_error(r, "train.batch_size 10000000 exceeds the 64 training examples")
    assert not run.exists()  # the data and tokenizer it had written are gone with the folder it made
    cfg = TrainConfig(steps=1, batch_size=65, progress=False, device="cpu")
    with pytest.raises(ValueError, match="train.batch_size 65 exceeds the 64 training examples"):
        Trainer(nn.Linear(5, 1), ToyTask(), cfg, tmp_path / "toy", {})
    assert not (tmp_path / "toy").exists()


def test_a_start_that_fails_in_an_existing_run_folder_keeps_what_was_there(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("123\n")  # a run folder whose first start stopped early
    (run / "notes.md").write_text("mine\n")
    cfg = load_config(Seq2SeqConfig, "demo", [f"run_dir={run}", *TINY, "data.tokenizer=trained",
                                              "train.batch_size=1000"])
    with pytest.raises(ValueError, match="exceeds the 64 training examples"):
        train_seq2seq(cfg, progress=False)
    assert sorted(p.name for p in run.iterdir()) == [".lock", "notes.md"]  # data/ and tokenizer/ removed
