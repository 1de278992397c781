"""Resolving a config (validate, then fill its defaults), TOML files and the shipped presets."""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from moelab.config.convert import from_dict, to_dict
from moelab.config.sections import RunConfig
from moelab.errors import ConfigError


def resolve(cfg: RunConfig) -> RunConfig:
    """The config checked (`RunConfig.validate`) and with its defaults resolved, as a new object:
    the one step every loader takes. Today's only default: model.moe.expert_width 0 means model.d_ff."""
    cfg.validate()
    out = copy.deepcopy(cfg)
    if out.model.moe.n_experts and out.model.moe.expert_width == 0:
        out.model.moe.expert_width = out.model.d_ff
    return out


def read_toml(path: str | Path, kind: str) -> dict[str, Any]:
    """Parse a TOML file; a missing file or bad syntax is a ConfigError naming the `kind` of file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a {kind} file; give the path of a .toml file")
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {kind} file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; a {kind} file is TOML text") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run config TOML file."""
    data = read_toml(path, "config")
    if not data:  # every field at its default is a run nobody described: say so rather than train it
        raise ConfigError(f"{path}: the file is empty; set the fields that differ from the defaults "
                          "(as the shipped presets do: moelab train --list-presets), or train a preset with --preset NAME")
    try:
        return resolve(from_dict(RunConfig, data))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def save_config(cfg: RunConfig, path: str | Path) -> None:
    from moelab.io import atomic_write_text, toml_dumps

    atomic_write_text(path, toml_dumps(to_dict(cfg)))


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("moelab.presets").iterdir()
                  if p.name.endswith(".toml"))


def load_preset(name: str) -> RunConfig:
    names = preset_names()
    if name not in names:
        raise ConfigError(f"--preset {name!r}: unknown preset; available: {', '.join(names)}")
    text = resources.files("moelab.presets").joinpath(f"{name}.toml").read_text()
    try:
        return resolve(from_dict(RunConfig, tomllib.loads(text)))
    except ConfigError as err:
        raise ConfigError(f"preset {name}: {err}") from None
