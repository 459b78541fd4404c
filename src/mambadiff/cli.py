"""The `mambadiff` command. Thin: it parses arguments and calls library functions.

Subcommands are imported lazily, so `mambadiff --help` is instant and one broken optional
dependency does not take the whole CLI down.
"""
from __future__ import annotations

import importlib

import click

from mambadiff.commands.bench import BENCH_COMMANDS

# name -> ("module", "attribute", "one-line help")
_COMMANDS = {
    "demo": ("mambadiff.commands.seq2seq", "demo_command", "Train MambaDiff on the built-in corpus, sample, score vs copy-source."),
    "train": ("mambadiff.commands.seq2seq", "train_command", "Train a diffusion seq2seq model from a config."),
    "generate": ("mambadiff.commands.seq2seq", "generate_command", "Sample from a trained diffusion checkpoint."),
    "copy-accuracy": ("mambadiff.commands.seq2seq", "copy_accuracy_command",
                      "Denoiser word recovery at fixed noise: source words (copy) vs new words."),
    "params": ("mambadiff.commands.seq2seq", "params_command", "Parameter counts of the diffusion configs."),
    "evaluate": ("mambadiff.commands.metrics", "evaluate_command", "Score generated jsonl files (DiffuSeq metrics)."),
    "report": ("mambadiff.commands.report", "report_command", "Plots and a Markdown summary of a run folder."),
    "data": ("mambadiff.commands.data", "data_group", "Prepare data folders: qqp (QQP converter), builtin (built-in corpus)."),
    "bench": ("mambadiff.commands.bench", "bench_group", "Benchmarks: " + ", ".join(sorted(BENCH_COMMANDS)) + "."),
    "classify": ("mambadiff.commands.classify", "classify_group", "Sequence classification: train, eval."),
    "ar": ("mambadiff.commands.ar", "ar_group", "Autoregressive paraphraser (the diffusion models' baseline): train, generate."),
    "lm": ("mambadiff.commands.lm", "lm_group", "Language models: train, eval, generate."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(_COMMANDS)

    def get_command(self, ctx, name):
        if name not in _COMMANDS:
            return None
        module, attr, _ = _COMMANDS[name]
        try:
            return getattr(importlib.import_module(module), attr)
        except ImportError as e:  # an optional extra is missing
            reason = str(e)  # `e` itself is unbound once the except block ends

            @click.command(name=name, help=_COMMANDS[name][2])
            def _missing():
                raise click.ClickException(f"'{name}' is unavailable: {reason}. Install with pip install -e '.[all]'")
            return _missing

    def format_commands(self, ctx, formatter):
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mambadiff")
def main():
    """mambadiff: state-space sequence models (Mamba, Mamba-2, S4, S4D, H3) and MambaDiff, diffusion
    seq2seq (masked / absorbing-state or DiffuSeq's Gaussian process) with a Mamba denoiser."""
    from mambadiff.runtime import tune_cpu_allocator

    tune_cpu_allocator()  # keeps big activation buffers mapped between steps (see mambadiff.runtime)


if __name__ == "__main__":
    main()
