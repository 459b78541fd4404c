"""The `mambadiff bench` commands: one home (mambadiff.commands.bench), a lazy group, click-free benchmarks,
bad arguments reported against their options."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

import mambadiff
from mambadiff.bench.common import BenchArgumentError, split_spec
from mambadiff.commands.bench import BENCH_COMMANDS, bench_group
from mambadiff.commands.bench.options import parse_int_pairs, split_names

SRC = Path(mambadiff.__file__).resolve().parents[1]


def test_every_subcommand_is_a_module_of_the_package():
    ctx = click.Context(bench_group)
    for name, (module, attr, help_line) in BENCH_COMMANDS.items():
        assert module == f"mambadiff.commands.bench.{name}", name
        command = bench_group.get_command(ctx, name)
        assert isinstance(command, click.Command) and command.name == name and help_line.strip()


def test_benchmark_modules_do_not_import_click():
    for path in sorted((SRC / "mambadiff" / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "click" or n.startswith("click.") for n in names), f"{path.name} imports click"


def test_bench_help_imports_neither_torch_nor_a_subcommand():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "mambadiff", "bench", "--help"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert all(name in res.stdout for name in BENCH_COMMANDS)
    imported = {line.rsplit("|", 1)[1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "mambadiff.commands.bench" in imported  # the parse above saw the imports
    assert not {m for m in imported if m == "torch" or m.startswith(("torch.", "mambadiff.bench",
                                                                     "mambadiff.commands.bench."))}


def test_bad_arguments_name_the_parameter():
    from mambadiff.bench.denoiser import run_denoiser_benchmark
    from mambadiff.bench.quality import run_quality_benchmark

    for call, argument in ((lambda: run_denoiser_benchmark(steps=0), "steps"),
                           (lambda: run_denoiser_benchmark(train_pairs=0), "train_pairs"),
                           (lambda: run_quality_benchmark(minutes=0), "minutes"),
                           (lambda: run_quality_benchmark(recipes=()), "recipes"),
                           (lambda: split_spec("  "), "spec")):
        with pytest.raises(BenchArgumentError) as err:
            call()
        assert err.value.argument == argument and str(err.value).startswith(f"{argument}: ")
    assert split_spec("demo 'a=b c' d=1") == ("demo", ["a=b c", "d=1"])


def test_an_empty_spec_is_reported_against_its_option(run_cli):
    for option in ("--config", "--recipe"):
        command = "denoiser" if option == "--config" else "quality"
        res = run_cli("bench", command, option, "")
        assert res.exit_code == 2 and f"Invalid value for {option}: an empty {option}" in res.output


def test_option_parsing_helpers():
    assert split_names(("mamba, s4d", "lstm", ",")) == ("mamba", "s4d", "lstm")
    assert parse_int_pairs("64x128, 8X256,", "BxL") == ((64, 128), (8, 256))
    with pytest.raises(click.BadParameter, match="'8by2': expected BxL"):
        parse_int_pairs("8x1,8by2", "BxL")
