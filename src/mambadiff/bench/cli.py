"""`mambadiff bench ...`: each subcommand lives beside its benchmark and is loaded lazily."""
from __future__ import annotations

import importlib

import click

_BENCH = {
    "scan": ("mambadiff.bench.scan", "scan_command", "Selective-scan backends: forward and forward+backward."),
    "layers": ("mambadiff.bench.layers", "layers_command", "Whole stacks: Mamba, Mamba-2, S4D, Transformer, LSTM."),
    "synthetic": ("mambadiff.bench.synthetic", "synthetic_command", "Selective copying and induction heads."),
    "classify": ("mambadiff.bench.classify", "classify_bench_command", "Classifier inference time vs length."),
    "denoiser": ("mambadiff.bench.denoiser", "denoiser_command",
                 "Seq2seq training steps of whole configs side by side (tokens/s, speed vs the first)."),
    "quality": ("mambadiff.bench.quality", "quality_command",
                "Paraphrase quality of recipes trained for the same wall-clock (BLEU, ROUGE-L, repeats, ...)."),
}


class _LazyBench(click.Group):
    def list_commands(self, ctx):
        return sorted(_BENCH)

    def get_command(self, ctx, name):
        if name not in _BENCH:
            return None
        module, attr, _ = _BENCH[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(n, _BENCH[n][2]) for n in self.list_commands(ctx)])


@click.group("bench", cls=_LazyBench)
def bench_group():
    """Benchmarks: each prints a table and writes --json FILE."""
