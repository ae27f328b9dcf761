"""Text-ish settings onto a frozen configuration record: the one converter
behind the config file's ``[tcp]``, ``[ip]`` and ``[ndp]`` tables,
``--tcp``/``--ip NAME=VALUE`` and ``shardnet ctl tcp|ip|ndp --set NAME=VALUE``.

Names are the record's field names; a value is converted by the field's
declared type (``bool``, ``int``, ``float``, ``str``, each optionally
``| None``), or by the enum the field holds (by its value). Every error is
a ``ValueError`` with a one-line message naming the setting, so that a CLI
prints it as it is, and nothing is half applied: the record is built (and
its ``__post_init__`` checks run) only once every value converted.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")

_TRUE = ("true", "1", "on", "yes")
_FALSE = ("false", "0", "off", "no")


def parse_pairs(items: Iterable[str], what: str) -> dict[str, str]:
    """``["a=1", "b-c=2"]`` -> ``{"a": "1", "b_c": "2"}``; ValueError for an
    item without ``=`` (``what`` names the flag in the message)."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} wants NAME=VALUE, got {item!r}")
        pairs[key.strip().replace("-", "_")] = value.strip()
    return pairs


def apply_settings(base: T, settings: dict[str, Any], what: str) -> T:
    """``base`` (a dataclass instance) with ``settings`` applied; ``what``
    names the table in messages (``"TCP"``, ``"IP"``, ``"NDP"``)."""
    kinds = {f.name: str(f.type) for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for name, value in settings.items():
        kind = kinds.get(name)
        if kind is None:
            raise ValueError(f"unknown {what} setting {name!r} (known: {', '.join(sorted(kinds))})")
        try:
            current = getattr(base, name)
            if isinstance(current, enum.Enum):
                changes[name] = type(current)(value)
            else:
                changes[name] = _convert(kind, value)
        except (TypeError, ValueError):
            raise ValueError(f"{what} setting {name}: bad value {value!r} ({kind})") from None
    try:
        return dataclasses.replace(base, **changes)  # type: ignore[type-var]
    except ValueError as exc:
        raise ValueError(f"{what} settings: {exc}") from None


def as_settings(record: Any) -> dict[str, Any]:
    """Every field of ``record`` by name, enums by value: what ``ctl
    tcp|ip|ndp`` shows."""
    return {f.name: _plain(getattr(record, f.name)) for f in dataclasses.fields(record)}


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _convert(kind: str, value: Any) -> Any:
    if value is None or (kind.endswith("| None") and str(value).lower() == "none"):
        if not kind.endswith("| None"):
            raise ValueError(value)
        return None
    if kind.startswith("bool"):
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text not in _TRUE + _FALSE:
            raise ValueError(value)
        return text in _TRUE
    if isinstance(value, bool):  # TOML true is no number
        raise ValueError(value)
    if kind.startswith("int"):
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(value)
    if kind.startswith("float"):
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(value)
        return number
    return str(value)
