"""Typed configs: dataclasses filled from YAML files and ``key=value`` overrides.

OmegaConf does the parsing and type checking against the dataclass schema; this module turns its
errors into one-line messages that name the file and the key (``ConfigError``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")

SHIPPED_CONFIGS = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or the name of a shipped config (``demo`` -> configs/demo.yaml)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = SHIPPED_CONFIGS / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(q.stem for q in SHIPPED_CONFIGS.glob("*.yaml"))
    raise ConfigError(f"config {str(name_or_path)!r}: no such file and no shipped config of that name "
                      f"(shipped: {', '.join(names)})")


def _describe(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    msg = str(err).splitlines()[0]
    return f"key {key!r}: {msg}" if key else msg


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build ``schema`` (a dataclass) from its defaults, then a YAML file, then ``a.b=value`` overrides.

    Unknown keys and values of the wrong type raise ``ConfigError`` naming the source and the key.
    """
    cfg = OmegaConf.structured(schema)
    source = "defaults"
    try:
        if path is not None:
            source = str(resolve_config_path(path))
            with open(source, encoding="utf-8") as f:
                try:
                    data = yaml.safe_load(f) or {}
                except yaml.YAMLError as e:
                    mark = getattr(e, "problem_mark", None)
                    where = f" line {mark.line + 1}" if mark is not None else ""
                    raise ConfigError(f"{source}{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
            if not isinstance(data, dict):
                raise ConfigError(f"{source}: the top level must be a mapping of keys to values")
            cfg = OmegaConf.merge(cfg, OmegaConf.create(data))
        source = "overrides"
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r}: expected key=value")
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {_describe(e)}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj  # type: ignore[return-value]


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(schema: type[T], data: dict) -> T:
    """Rebuild a config saved with ``to_dict`` (checked like a YAML file)."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(data)))
    except OmegaConfBaseException as e:
        raise ConfigError(f"saved config: {_describe(e)}") from None
