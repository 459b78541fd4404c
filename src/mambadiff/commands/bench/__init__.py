"""`mambadiff bench ...`: the benchmark group. Each subcommand is a module of this package
(mambadiff.commands.bench.<name>) over the benchmark logic in mambadiff.bench.<name>; it is imported
only when it runs, so `mambadiff bench --help` stays instant.

A new subcommand is a module here defining its click command, plus its line in BENCH_COMMANDS."""
from __future__ import annotations

import importlib

import click

# name -> (module, attribute, one-line help)
BENCH_COMMANDS = {
    "scan": ("mambadiff.commands.bench.scan", "scan_command", "Selective-scan backends: forward and forward+backward."),
    "layers": ("mambadiff.commands.bench.layers", "layers_command", "Whole stacks: Mamba, Mamba-2, S4D, S4, H3, Transformer, LSTM."),
    "synthetic": ("mambadiff.commands.bench.synthetic", "synthetic_command", "Selective copying, induction heads, multi-query associative recall."),
    "classify": ("mambadiff.commands.bench.classify", "classify_bench_command", "Classifier inference time vs length."),
    "denoiser": ("mambadiff.commands.bench.denoiser", "denoiser_command",
                 "Seq2seq training steps of whole configs side by side (tokens/s, speed vs the first)."),
    "quality": ("mambadiff.commands.bench.quality", "quality_command",
                "Paraphrase quality of recipes trained for the same wall-clock (BLEU, ROUGE-L, repeats, ...)."),
    "generation": ("mambadiff.commands.bench.generation", "generation_command",
                   "Recurrent generation per backbone: tokens/s at each length, memory, prefill, transformers' Mamba."),
    "lm": ("mambadiff.commands.bench.lm", "lm_bench_command",
           "Language-model recipes at equal wall clock, nanoGPT beside them (loss, bits per byte)."),
    "curve": ("mambadiff.commands.bench.curve", "curve_command",
              "Paraphrase quality of every checkpoint of runs against training minutes (table, JSON, plot)."),
}


class LazyBenchGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(BENCH_COMMANDS)

    def get_command(self, ctx, name):
        if name not in BENCH_COMMANDS:
            return None
        module, attr, _ = BENCH_COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(n, BENCH_COMMANDS[n][2]) for n in self.list_commands(ctx)])


@click.group("bench", cls=LazyBenchGroup)
def bench_group():
    """Benchmarks: each prints a table and writes --json FILE."""
