"""Run keys: a short hash of the fields that change a run's results."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import typing
from typing import Any

from moelab.config.convert import to_dict
from moelab.config.sections import RunConfig

# A run is identified by a hash of the fields that change its results, and of this schema number.
# Each field says how it takes part (IF_SET and NEVER metadata above; the rest always do). A new
# field that changes results of runs already stored, at its default, joins the key as it is and
# KEY_SCHEMA goes up by one: stores re-key themselves from their stored configs on open
# (sweeps/store.py), so finished runs keep being found; a field whose default reproduces earlier
# runs is IF_SET and needs no new schema.
KEY_SCHEMA = 5


@functools.cache
def key_membership(cls: type = RunConfig, prefix: str = "") -> dict[str, str]:
    """Every leaf field as a dotted path mapped to how it enters a run key: 'always', 'if_set' or 'never'."""
    hints = typing.get_type_hints(cls)
    out: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(key_membership(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = f.metadata.get("run_key", "always")
    return out


RUN_KEY_FIELDS = tuple(path for path, how in key_membership().items() if how == "always")
KEY_FIELDS_IF_SET = tuple(path for path, how in key_membership().items() if how == "if_set")
NOT_IN_RUN_KEY = tuple(path for path, how in key_membership().items() if how == "never")


def get_path(data: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        data = data[part]
    return data


def run_key(cfg: RunConfig) -> str:
    """A short stable hash of the fields that change a run's results: those always in the key,
    and those in it if set (IF_SET) that differ from their default. Membership is read from the
    config's own class, so a field added to it joins the key without a list elsewhere."""
    data, defaults = to_dict(cfg), to_dict(type(cfg)())
    projection = {}
    for path, how in key_membership(type(cfg)).items():
        if how == "always" or (how == "if_set" and get_path(data, path) != get_path(defaults, path)):
            projection[path] = get_path(data, path)
    text = json.dumps({"key_schema": KEY_SCHEMA, "fields": projection}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
