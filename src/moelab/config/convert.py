"""TOML dicts to config dataclasses and back, checking every value's type and naming its field."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal, get_args

from moelab.config.sections import RunConfig
from moelab.errors import ConfigError


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted for floats, bools never for numbers."""
    if typing.get_origin(tp) is Literal:  # the type here; which values, `validate`, naming them
        tp = type(get_args(tp)[0])
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table of fields, got {value!r}")
        return from_dict(tp, value, where + ".")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if typing.get_origin(tp) is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp in (bool, str):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {where}")  # a bug in this module


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a (TOML) dict, rejecting unknown fields and wrong types."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(
                f"{prefix}{key}: unknown field; known fields here: {', '.join(sorted(known))}"
            )
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def field_types(cls: type = RunConfig, prefix: str = "") -> dict[str, Any]:
    """Every leaf field as a dotted path mapped to its type: {'model.moe.top_k': int, ...}."""
    out: dict[str, Any] = {}
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            out.update(field_types(tp, f"{prefix}{name}."))
        else:
            out[prefix + name] = tp
    return out
