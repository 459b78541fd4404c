"""Configs from YAML files and key=value overrides: every bad input names the file, line and key."""
from __future__ import annotations

import pytest

from mambadiff.config import SHIPPED_CONFIGS, ConfigError, load_config
from mambadiff.tasks.classify import ClassifyConfig
from mambadiff.tasks.seq2seq import Seq2SeqConfig

CLASSIFY_CONFIGS = {"sst2-mamba", "imdb-mamba", "sentiment140-mamba", "lra-listops", "lra-text"}

# name -> (file content, line, key, words of the reason)
BAD_FILES = {
    "unknown key": ("train:\n  steps: 3\n  stepz: 4\n", 3, "train.stepz", "not in 'TrainConfig'"),
    "wrong type": ("model:\n  backbone:\n    d_model: wide\n", 3, "model.backbone.d_model", "could not be converted"),
    "list for a number": ("run_dir: runs/x\ntrain:\n  steps: 2\n  lr: [1]\n", 4, "train.lr", ""),
    "section not a mapping": ("run_dir: runs/x\ntrain: 5\n", 2, "train", "not a subclass of TrainConfig"),
    "key given twice": ("train:\n  steps: 1\n  steps: 2\n", 3, "train.steps", "given twice (first on line 2)"),
}
MALFORMED = {
    "unclosed list": ("train:\n  steps: [1, 2\n", 3, "invalid YAML"),
    "tab indent": ("train:\n\tsteps: 1\n", 2, "invalid YAML"),
    "top level a list": ("- 1\n- 2\n", 1, "the top level must be a mapping"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_names_file_line_and_key(tmp_path, name):
    text, line, key, reason = BAD_FILES[name]
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(Seq2SeqConfig, path)
    assert str(e.value).startswith(f"{path} line {line}, key '{key}': ")
    assert reason in str(e.value)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_yaml_names_file_and_line(tmp_path, name):
    text, line, reason = MALFORMED[name]
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=reason) as e:
        load_config(Seq2SeqConfig, path)
    assert str(e.value).startswith(f"{path} line {line}: ")


def test_undecodable_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"train:\n  steps: 3\nrun_dir: caf\xe9\n")
    with pytest.raises(ConfigError, match=f"{path} line 3: not valid UTF-8"):
        load_config(Seq2SeqConfig, path)


@pytest.mark.parametrize("override,key,reason", [
    ("train.stepz=3", "train.stepz", "not in 'TrainConfig'"),
    ("train.steps=many", "train.steps", "could not be converted to Integer"),
    ("data.split=[0.5,x]", "data.split[1]", "could not be converted to Float"),
    ("train=5", "train", "not a subclass of TrainConfig"),
])
def test_bad_override_names_it_and_the_key(override, key, reason):
    with pytest.raises(ConfigError) as e:
        load_config(ClassifyConfig, None, [override])
    assert str(e.value).startswith(f"override '{override}': key '{key}': ") and reason in str(e.value)


@pytest.mark.parametrize("override,reason", [
    ("train.steps", "expected key=value"),
    ("=3", "expected key=value"),
    ("train.steps=[1,", "invalid value"),
])
def test_malformed_override(override, reason):
    with pytest.raises(ConfigError, match=reason) as e:
        load_config(Seq2SeqConfig, None, [override])
    assert str(e.value).startswith(f"override '{override}': ")


def test_good_file_and_overrides_apply_in_order(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("train:\n  steps: 7\n  lr: 0.001\ndata:\n  seq_len: 48\n", encoding="utf-8")
    cfg = load_config(Seq2SeqConfig, path, ["train.steps=9", "train.steps=11", "run_dir=runs/ok"])
    assert (cfg.train.steps, cfg.train.lr, cfg.data.seq_len, cfg.run_dir) == (11, 0.001, 48, "runs/ok")
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert load_config(Seq2SeqConfig, empty) == load_config(Seq2SeqConfig)


LM_CONFIGS = {"shakespeare-char", "imdb-bytes"}


@pytest.mark.parametrize("name", sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name):
    from mambadiff.tasks.ar import ARConfig
    from mambadiff.tasks.ar.config import is_ar_config
    from mambadiff.tasks.lm import LMConfig
    schema = (ClassifyConfig if name in CLASSIFY_CONFIGS else LMConfig if name in LM_CONFIGS
              else ARConfig if is_ar_config(name) else Seq2SeqConfig)
    load_config(schema, name).validate()


@pytest.mark.parametrize("command", [["train"], ["classify", "train"]])
def test_cli_bad_config_exits_1_naming_file_line_and_key(tmp_path, run_cli, assert_clean_error, command):
    path = tmp_path / "bad.yaml"
    path.write_text("run_dir: runs/x\ntrain:\n  stepz: 4\n", encoding="utf-8")
    assert_clean_error(run_cli(*command, "--config", path), str(path), "line 3", "key 'train.stepz'")
    path.write_text("train:\n  steps: [1, 2\n", encoding="utf-8")
    assert_clean_error(run_cli(*command, "--config", path), str(path), "line 3", "invalid YAML")
    assert_clean_error(run_cli(*command, "train.steps=lots"), "override 'train.steps=lots'", "key 'train.steps'")
    assert not (tmp_path / "runs").exists()


def test_a_key_of_the_earlier_layout_is_refused_with_where_it_is_now(tmp_path):
    with pytest.raises(ConfigError, match=r"sample\.temperature.*in this version: 'sample\.masked\.temperature'"):
        load_config(Seq2SeqConfig, "demo", ["sample.temperature=0.5"])
    path = tmp_path / "old.yaml"
    path.write_text("sample:\n  steps: 3\n")
    with pytest.raises(ConfigError, match=r"line 2.*'sample\.gaussian\.steps' or 'sample\.masked\.steps'"):
        load_config(Seq2SeqConfig, path)


def test_an_alias_bomb_is_refused_naming_file_and_line(tmp_path):
    rows = ["run_dir: runs/x", 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i, (prev, name) in enumerate(zip("abcdefgh", "bcdefghi")):
        rows.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")  # 9**9 values once copied out
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ConfigError, match=r"bomb\.yaml line 7: the YAML aliases .* expand to more than 100,000"):
        load_config(Seq2SeqConfig, str(path))


def test_a_small_alias_still_loads(tmp_path):
    path = tmp_path / "alias.yaml"
    path.write_text("train: &t {steps: 7}\nrun_dir: runs/alias\n")
    assert load_config(Seq2SeqConfig, str(path)).train.steps == 7
