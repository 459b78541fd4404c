"""Label handling shared by every classification loader: normalised raw labels and label maps.

Raw labels are compared as stripped strings, and integer-looking values are normalised (``4``,
``"4"`` and ``"4.0"`` are the same label). A ``label_map`` is either a mapping ``raw label -> int``
(ints must cover ``0..K-1``; several raw labels may share an id) or a sequence of raw labels whose
positions are the ids (``["negative", "neutral", "positive"]``).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["LabelSpec", "label_key", "is_int_like", "normalise_label_spec", "drop_keys"]

LabelSpec = Mapping[Any, int] | Sequence[Any]  # a label_map as the user gives it

_INT_LIKE = re.compile(r"[+-]?\d+(?:\.0*)?")


def label_key(value: Any) -> str:
    """Normalise a raw label for comparison: stripped string, integer-looking -> canonical int."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    s = str(value).strip()
    if _INT_LIKE.fullmatch(s):
        return str(int(s.split(".")[0]))
    return s


def is_int_like(key: str) -> bool:
    return _INT_LIKE.fullmatch(key) is not None


def normalise_label_spec(
    label_map: LabelSpec | None,
    label_names: Sequence[str] | None,
) -> tuple[dict[str, int] | None, list[str] | None]:
    """Turn the user's `label_map` into ``{key: id}`` and the default label names."""
    if label_map is None:
        return None, (list(label_names) if label_names is not None else None)
    mapping: dict[str, int] = {}
    names_by_id: dict[int, list[str]] = {}
    if isinstance(label_map, Mapping):
        items = list(label_map.items())
    elif isinstance(label_map, Sequence) and not isinstance(label_map, (str, bytes)):
        items = [(raw, i) for i, raw in enumerate(label_map)]
    else:
        raise ValueError(
            f"label_map must be a mapping raw label -> int or a sequence of raw labels, "
            f"got {type(label_map).__name__}"
        )
    for raw, idx in items:
        if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
            raise ValueError(f"label_map[{raw!r}] must be an int >= 0, got {idx!r}")
        key = label_key(raw)
        if key in mapping and mapping[key] != idx:
            raise ValueError(f"label_map maps {raw!r} (same label as {key!r}) to both {mapping[key]} and {idx}")
        mapping[key] = idx
        names_by_id.setdefault(idx, [])
        if key not in names_by_id[idx]:
            names_by_id[idx].append(key)
    if not mapping:
        raise ValueError("label_map is empty")
    k = max(names_by_id) + 1
    if sorted(names_by_id) != list(range(k)):
        missing = sorted(set(range(k)) - set(names_by_id))
        raise ValueError(f"label_map ids must cover 0..{k - 1} without gaps; missing {missing}")
    names = ["/".join(names_by_id[i]) for i in range(k)]
    if label_names is not None:
        if len(label_names) != k:
            raise ValueError(f"label_names has {len(label_names)} names but label_map has {k} ids")
        names = [str(n) for n in label_names]
    return mapping, names


def drop_keys(drop_labels: Iterable[Any]) -> set[str]:
    """The normalised keys of the labels whose rows are dropped on request."""
    if isinstance(drop_labels, (str, bytes)):
        drop_labels = [drop_labels]
    return {label_key(v) for v in drop_labels}
