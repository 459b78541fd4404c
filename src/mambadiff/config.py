"""Typed configs: dataclasses filled from YAML files and ``key=value`` overrides.

OmegaConf does the parsing and type checking against the dataclass schema; this module turns its
errors into one-line messages that name the file and the key (``ConfigError``).
"""
from __future__ import annotations

import dataclasses
import typing
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


def _describe(err: OmegaConfBaseException, key: str | None = None, schema: type | None = None) -> str:
    key = getattr(err, "full_key", None) or key
    msg = str(err).splitlines()[0]
    moved = _moved_to(schema, key) if schema is not None and key else None
    hint = f" (in this version: {moved})" if moved else ""
    return f"key {key!r}: {msg}{hint}" if key else msg


def _flat_keys(data: Any, prefix: str = "") -> list[str]:
    if not isinstance(data, dict) or not data:
        return [prefix]
    return [k for name, value in data.items() for k in _flat_keys(value, f"{prefix}.{name}" if prefix else name)]


def _moved_to(schema: type, key: str) -> str | None:
    """Where a key of an earlier version's layout lives now (`upgrade_saved`), or None."""
    try:
        keys = _flat_keys(upgrade_saved(schema, _nested(tuple(key.split(".")), 1)))
    except Exception:  # noqa: BLE001  (a hint only: any failure means no hint)
        return None
    return " or ".join(repr(k) for k in keys) if key not in keys else None


def _key_lines(node: yaml.Node, source: str, prefix: str = "") -> dict[str, int]:
    """Dotted key (OmegaConf's ``full_key`` form: ``a.b``, ``a.list[0]``) -> 1-based line of every key
    in a composed YAML document. A key given twice in one mapping is refused (YAML would keep the last
    silently)."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = str(key_node.value)
            line = key_node.start_mark.line + 1
            key = f"{prefix}.{name}" if prefix else name
            if name in seen:
                raise ConfigError(f"{source} line {line}, key {key!r}: given twice (first on line {seen[name]})")
            seen[name] = line
            lines[key] = line
            lines.update(_key_lines(value_node, source, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = f"{prefix}[{i}]"
            lines[key] = item.start_mark.line + 1
            lines.update(_key_lines(item, source, key))
    return lines


MAX_YAML_VALUES = 100_000  # values of a config file counted with its aliases expanded


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many nodes ``node`` stands for once every alias (``*name``) in it is copied out; computed
    once per node, so a file of a few lines that expands to billions is measured in a few steps."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 1  # a recursive alias counts once (composition refuses most of them anyway)
    children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else \
        node.value if isinstance(node, yaml.SequenceNode) else []
    size = 1 + sum(_expanded_size(child, sizes) for child in children)
    sizes[id(node)] = size
    return size


def check_alias_expansion(node: yaml.Node, source: str, limit: int = MAX_YAML_VALUES) -> None:
    """Refuse a document whose aliases expand to more than ``limit`` values (an "alias bomb": a few
    lines of ``&a`` / ``*a`` that a reader would copy out exponentially), naming the file and the line
    of the outermost key whose value is too large."""
    sizes: dict[int, int] = {}
    if _expanded_size(node, sizes) <= limit:
        return
    line = node.start_mark.line + 1
    while isinstance(node, yaml.MappingNode):
        big = [(k, v) for k, v in node.value if sizes.get(id(v), 0) > limit]
        if not big:
            break
        key_node, node = big[0]
        line = key_node.start_mark.line + 1
    raise ConfigError(f"{source} line {line}: the YAML aliases (*name) here expand to more than {limit:,} "
                      f"values; write the values out instead of nesting aliases")


def _read_yaml(source: str) -> tuple[dict, dict[str, int]]:
    """The mapping in a YAML (or JSON) file and the line of each of its keys."""
    try:
        with open(source, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"{source}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{source} line {line}: not valid UTF-8 (byte 0x{raw[e.start]:02x})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            check_alias_expansion(node, source)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        line = node.start_mark.line + 1 if node is not None else 1
        raise ConfigError(f"{source} line {line}: the top level must be a mapping of keys to values, "
                          f"got {type(data).__name__}")
    return data, _key_lines(node, source)


def _nested(path: tuple[str, ...], value: Any) -> dict:
    for name in reversed(path):
        value = {name: value}
    return value


def _failing_key(cfg: Any, data: dict, prefix: tuple[str, ...] = ()) -> str | None:
    """The dotted key of `data` that does not merge into `cfg` (for errors OmegaConf does not locate)."""
    for name, value in data.items():
        path = (*prefix, str(name))
        try:
            OmegaConf.merge(cfg, OmegaConf.create(_nested(path, value)))
        except OmegaConfBaseException:
            if isinstance(value, dict) and value:
                return _failing_key(cfg, value, path) or ".".join(path)
            return ".".join(path)
    return None


def _line_of(key: str | None, lines: dict[str, int]) -> int | None:
    """The line of `key`, or of its nearest enclosing key that the file has."""
    while key:
        if key in lines:
            return lines[key]
        cut = max(key.rfind("."), key.rfind("["))
        key = key[:cut] if cut > 0 else None
    return None


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build ``schema`` (a dataclass) from its defaults, then a YAML file, then ``a.b=value`` overrides.

    Bad input raises ``ConfigError`` naming where it is: ``FILE line N, key 'a.b': ...`` for a file
    (unknown key, wrong type, a key given twice, malformed YAML), ``override 'a.b=v': key 'a.b': ...``
    for an override.
    """
    cfg = OmegaConf.structured(schema)
    if path is not None:
        source = str(resolve_config_path(path))
        data, lines = _read_yaml(source)
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.create(data))
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or _failing_key(OmegaConf.structured(schema), data)
            line = _line_of(key, lines)
            where = f"{source} line {line}" if line is not None else source
            raise ConfigError(f"{where}, {_describe(e, key, schema)}") from None
    for item in overrides:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"override {item!r}: expected key=value")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as e:
            raise ConfigError(f"override {item!r}: {_describe(e, item.split('=', 1)[0].strip(), schema)}") from None
        except yaml.YAMLError as e:  # the value is parsed as YAML
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"override {item!r}: invalid value ({problem})") from None
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source if path is not None else 'config'}: {_describe(e)}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj  # type: ignore[return-value]


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def upgrade_saved(schema: type, data: dict) -> dict:
    """``data`` (a config saved by an earlier version) in the current layout: a dataclass that renamed or
    moved keys defines a classmethod ``upgrade_saved(data) -> data`` for its own level; nested dataclass
    fields are upgraded recursively. Only saved configs (a run's ``config.json``) are upgraded: a YAML
    file or an override must use the current keys, and an old one is refused with the key named."""
    upgrade = getattr(schema, "upgrade_saved", None)
    data = upgrade(dict(data)) if callable(upgrade) else dict(data)
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        sub = hints.get(f.name)
        if dataclasses.is_dataclass(sub) and isinstance(data.get(f.name), dict):
            data[f.name] = upgrade_saved(sub, data[f.name])
    return data


def from_dict(schema: type[T], data: dict) -> T:
    """Rebuild a config saved with ``to_dict`` (checked like a YAML file; `upgrade_saved` first)."""
    try:
        data = upgrade_saved(schema, data)
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(data)))
    except OmegaConfBaseException as e:
        raise ConfigError(f"saved config: {_describe(e)}") from None
