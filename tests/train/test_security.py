"""Run folders are data, never code: no file of a checkpoint can make loading run anything.

A payload that would create a marker file is planted in each file of a checkpoint folder; loading
either ignores it or fails with an error naming the file, and the marker never appears. A scan of
``src/`` keeps unsafe calls (eval, exec, pickle, torch.load without weights_only, yaml.load without a
safe loader, shell=True) out of the code base.
"""
import ast
import json
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch

from mambadiff.train import Trainer
from mambadiff.train.checkpoint import CheckpointError, latest_checkpoint, load_state

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tasks")]
from test_loop import ToyTask, cfg, make_model  # noqa: E402

SRC = HERE.parents[1] / "src"


class _Payload:
    """Unpickling this calls open(marker, "w"): the file appears iff the pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _eval_payload(marker: Path) -> str:
    # escapes eval(..., {"__builtins__": {}}) through object's subclasses
    return ("[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'catch_warnings'][0]()"
            f"._module.__builtins__['open']({str(marker)!r}, 'w')")


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("toy")
    Trainer(make_model(), ToyTask(), cfg(steps=2), run, {"note": "toy"}).fit()
    return latest_checkpoint(run)


def _resume(folder: Path) -> Exception | None:
    trainer = Trainer(make_model(), ToyTask(), cfg(steps=2), folder.parent.parent / "elsewhere", {})
    try:
        trainer.resume(folder)
    except (CheckpointError, ValueError) as e:
        return e
    return None


def _copy(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run" / "checkpoints" / folder.name
    shutil.copytree(folder, dst)
    return dst


def _optimizer_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("optimizer"))


@pytest.mark.parametrize("target", ["optimizer", "legacy_optimizer_pt", "model.safetensors",
                                    "ema.safetensors", "trainer_state.json"])
def test_payload_in_checkpoint_file_does_not_run(toy_checkpoint, tmp_path, target):
    folder = _copy(toy_checkpoint, tmp_path)
    marker = tmp_path / "PWNED"
    if target == "trainer_state.json":
        state = json.loads((folder / target).read_text())
        state["rng"]["python"] = _eval_payload(marker)
        (folder / target).write_text(json.dumps(state))
        names = [target]
    elif target == "legacy_optimizer_pt":
        for name in _optimizer_files(folder):
            (folder / name).unlink()
        torch.save({"optimizer": _Payload(marker)}, folder / "optimizer.pt")
        names = ["optimizer.pt"]
    elif target == "optimizer":
        names = _optimizer_files(folder)
        assert names
        for name in names:
            (folder / name).write_bytes(pickle.dumps(_Payload(marker)))
    else:
        torch.save({"w": _Payload(marker)}, folder / target)
        names = [target]
    err = _resume(folder)
    assert not marker.exists(), f"a payload in {target} ran"
    assert err is not None and any(n in str(err) for n in names), err


def test_payloads_in_config_and_tokenizer_do_not_run(tmp_path):
    from mambadiff.tasks.seq2seq import load_seq2seq_model, train_seq2seq

    from test_seq2seq_task import tiny_cfg

    train_seq2seq(tiny_cfg(tmp_path / "run", "transformer", steps=1), progress=False)
    good = latest_checkpoint(tmp_path / "run")
    marker = tmp_path / "PWNED"

    def planted(name: str, edit) -> Exception | None:
        folder = tmp_path / name
        shutil.copytree(good, folder)
        edit(folder)
        try:
            load_seq2seq_model(folder)
        except ValueError as e:
            return e
        return None

    def edit_config(folder):
        config = json.loads((folder / "config.json").read_text())
        config["run_dir"] = f"!!python/object/apply:builtins.open [{str(marker)!r}, 'w']"
        config["data"]["path"] = _eval_payload(marker)
        (folder / "config.json").write_text(json.dumps(config))

    def pickled_config(folder):
        (folder / "config.json").write_bytes(pickle.dumps(_Payload(marker)))

    def edit_tokenizer(folder):
        (folder / "tokenizer" / "tokenizer.json").write_bytes(pickle.dumps(_Payload(marker)))

    def edit_tokenizer_meta(folder):
        (folder / "tokenizer" / "mambadiff_tokenizer.json").write_text(json.dumps({"kind": _eval_payload(marker)}))

    assert planted("config", edit_config) is None  # strings stay strings
    assert "config.json" in str(planted("config_pickle", pickled_config))
    assert "tokenizer.json" in str(planted("tokenizer", edit_tokenizer))
    assert "tokenizer" in str(planted("tokenizer_meta", edit_tokenizer_meta))
    assert not marker.exists()


def test_truncated_weights_name_the_file(toy_checkpoint, tmp_path):
    folder = _copy(toy_checkpoint, tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_state(folder, ema=False)


# ---- the code base holds no unsafe call ----------------------------------------------------------
def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def unsafe_calls(source: str) -> list[tuple[int, str]]:
    """(line, why) for each call in ``source`` that could run code from data."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        tail = name.rsplit(".", 1)[-1]
        why = None
        if name in ("eval", "exec", "builtins.eval", "builtins.exec", "os.system", "os.popen"):
            why = name
        elif tail in ("load", "loads") and name.split(".")[0] in ("pickle", "cPickle", "dill", "marshal", "shelve"):
            why = name
        elif name in ("torch.load",):
            flag = _keyword(node, "weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                why = "torch.load without weights_only=True"
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _keyword(node, "Loader")
            if loader is None or "Safe" not in _dotted(loader):
                why = f"{name} without a safe loader"
        elif name in ("yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all"):
            why = name
        shell = _keyword(node, "shell")
        if isinstance(shell, ast.Constant) and shell.value is True:
            why = f"{name}(shell=True)"
        if why:
            found.append((node.lineno, why))
    return found


def test_the_scanner_finds_unsafe_calls():
    bad = ("eval(x)\nexec(y)\npickle.loads(b)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
           "yaml.load(f)\nsubprocess.run(c, shell=True)\nos.system(c)\n")
    assert len(unsafe_calls(bad)) == 8
    good = ("torch.load(p, weights_only=True)\nyaml.safe_load(f)\nyaml.load(f, Loader=yaml.SafeLoader)\n"
            "subprocess.run(['ls'])\nast.literal_eval(s)\n")
    assert unsafe_calls(good) == []


def test_src_has_no_unsafe_calls():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 50
    hits = [f"{p.relative_to(SRC)}:{line}: {why}" for p in files
            for line, why in unsafe_calls(p.read_text(encoding="utf-8"))]
    assert hits == []
