"""Options declared once: a dataclass field carries its default, its help text and its checks.

    @dataclass
    class MaskedSamplerConfig(Options):
        steps: int = option(20, "K confidence-ordered unmasking steps", minimum=1)

From that one declaration come the YAML / ``key=value`` schema (the dataclass, through OmegaConf), the
check (``Options.__post_init__`` runs `check_options`: type, range, choices), the CLI flag
(`mambadiff.commands.options.click_options`), the Python keyword (`Paraphraser` takes the field names)
and the docs' options table (`options_table`). A rule that spans several fields goes in the class's
``check()``.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Sequence

__all__ = ["Options", "OptionSpec", "check_options", "option", "option_specs", "options_table"]

_KINDS = {"int": int, "float": float, "bool": bool, "str": str}


def option(default: Any, help: str, *, minimum: float | None = None, maximum: float | None = None,
           choices: Sequence[str] | None = None, off_flag: str | None = None) -> Any:
    """A dataclass field declaring one option: ``help`` (one sentence or two), ``minimum`` / ``maximum``
    (inclusive, numbers), ``choices`` (strings), ``off_flag`` (a bool's CLI name for False, e.g.
    ``allow-adjacent-repeat``; default ``no-<name>``)."""
    meta = {"help": help, "minimum": minimum, "maximum": maximum,
            "choices": tuple(choices) if choices is not None else None, "off_flag": off_flag}
    return dataclasses.field(default=default, metadata={"option": meta})


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One declared option of a dataclass: its name, type (``int | float | bool | str``), default and checks."""

    name: str
    kind: str
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    off_flag: str | None = None


def option_specs(cls_or_obj: Any) -> list[OptionSpec]:
    """The declared options of a dataclass (fields made with `option`), in declaration order."""
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("option")
        if meta is None:
            continue
        kind = getattr(hints[f.name], "__name__", str(hints[f.name]))
        if kind not in _KINDS:
            raise TypeError(f"{cls.__name__}.{f.name}: an option is int, float, bool or str, got {kind}")
        specs.append(OptionSpec(f.name, kind, f.default, **meta))
    return specs


def _check_value(spec: OptionSpec, value: Any, where: str) -> Any:
    """``value`` checked against ``spec`` (an int given for a float becomes a float); ValueError names ``where``."""
    want = _KINDS[spec.kind]
    ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
    if spec.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if ok and spec.kind == "float":
        ok = math.isfinite(value)
    if ok and spec.choices is not None and value not in spec.choices:
        raise ValueError(f"{where} must be one of {', '.join(spec.choices)}, got {value!r}")
    if ok and spec.minimum is not None and value < spec.minimum or ok and spec.maximum is not None and value > spec.maximum:
        ok = False
    if not ok:
        what = {"float": "a finite number", "int": "an int", "bool": "true or false", "str": "a string"}[spec.kind]
        raise ValueError(f"{where} must be {what}{_range_text(spec)}, got {value!r}")
    return value


def _range_text(spec: OptionSpec) -> str:
    if spec.minimum is not None and spec.maximum is not None:
        return f" in [{spec.minimum:g}, {spec.maximum:g}]"
    if spec.minimum is not None:
        return f" >= {spec.minimum:g}"
    if spec.maximum is not None:
        return f" <= {spec.maximum:g}"
    return ""


def check_options(obj: Any, prefix: str = "") -> None:
    """Check every declared option of the dataclass instance ``obj`` in place (ValueError naming
    ``prefix + name``); ints given for floats are stored as floats."""
    for spec in option_specs(obj):
        value = _check_value(spec, getattr(obj, spec.name), prefix + spec.name)
        object.__setattr__(obj, spec.name, value)  # also for frozen dataclasses


class Options:
    """Base of option dataclasses: checks the declared options after construction (and after every
    ``dataclasses.replace``), then the class's own cross-field ``check()``. ``prefix`` names the
    section in error messages (``sample.masked.``)."""

    prefix: typing.ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_options(self, self.prefix)
        self.check()

    def check(self) -> None:
        """Rules that span several fields (override)."""

    def option_values(self) -> dict[str, Any]:
        """``{name: value}`` of the declared options."""
        return {s.name: getattr(self, s.name) for s in option_specs(self)}


def options_table(cls: type, prefix: str = "") -> str:
    """A Markdown table of the declared options of ``cls``: key, type, default, help (for the docs)."""
    rows = ["| key | type | default | what it does |", "|---|---|---|---|"]
    for s in option_specs(cls):
        kind = " \\| ".join(s.choices) if s.choices else s.kind + _range_text(s)
        rows.append(f"| `{prefix}{s.name}` | {kind} | `{s.default!r}` | {s.help} |")
    return "\n".join(rows)
