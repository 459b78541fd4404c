"""CLI flags derived from option declarations (`mambadiff.options`): one flag per declared field, with
its help, type, range and choices; unset flags are None (the config's value applies). A name declared
by several sections (``steps``: the Gaussian and the masked sampler) is one flag whose help gives each."""
from __future__ import annotations

from typing import Sequence

import click

from mambadiff.options import OptionSpec, option_specs


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _click_type(spec: OptionSpec, minimum):
    if spec.choices is not None:
        return click.Choice(list(spec.choices))
    kind = {"int": int, "float": float, "str": str}[spec.kind]
    if kind is str or (minimum is None and spec.maximum is None):
        return kind
    return (click.IntRange if kind is int else click.FloatRange)(min=minimum, max=spec.maximum)


def option_flags(sections: Sequence[tuple[str, type]], exclude: Sequence[str] = ()):
    """A decorator adding a flag for every declared option of ``sections`` ((label, dataclass) pairs;
    the label, when not empty, starts the help: "Masked process: ...")."""
    merged: dict[str, list[tuple[str, OptionSpec]]] = {}
    for label, cls in sections:
        for spec in option_specs(cls):
            if spec.name not in exclude:
                merged.setdefault(spec.name, []).append((label, spec))

    def decorate(command):
        for name, declared in reversed(list(merged.items())):
            spec = declared[0][1]
            text = " ".join(f"{label}: {s.help}" if label else s.help for label, s in declared)
            if spec.kind == "bool":
                names = f"{_flag(name)}/--{spec.off_flag or 'no-' + name.replace('_', '-')}"
                command = click.option(names, name, default=None, help=text)(command)
            else:
                lows = [s.minimum for _, s in declared]
                low = None if None in lows else min(lows)
                command = click.option(_flag(name), name, type=_click_type(spec, low), default=None, help=text)(command)
        return command

    return decorate


def sampling_sections() -> list[tuple[str, type]]:
    """The sections whose options `mambadiff generate` takes: ``sample``, ``sample.gaussian``, ``sample.masked``."""
    from mambadiff.diffusion.samplers import SAMPLER_CONFIGS
    from mambadiff.tasks.seq2seq.config import SampleConfig
    return [("", SampleConfig), *((f"{process.capitalize()} process", cls) for process, cls in SAMPLER_CONFIGS.items())]


def sampling_flags(command=None, *, exclude: Sequence[str] = ()):
    """Every sampling option as a flag (see `option_flags`); the command takes them as ``**options``."""
    decorate = option_flags(sampling_sections(), exclude)
    return decorate if command is None else decorate(command)
