"""Sweep files: a base run config plus grids over any of its fields, expanded to run configs.

    name = "my-sweep"
    base = "tiny-dense"               # a run preset, or a run config path relative to this file
    [set]                             # fixed for every run
    "train.exposures" = 100
    [[grid]]                          # one block: the product of its lists ...
    "model.moe.n_experts" = [2, 4, 8]
    "seed" = [0, 1]
    [[grid.zip]]                      # ... times each zip group, whose lists move together
    "model.d_model" = [32, 48]
    "model.d_ff" = [64, 96]
    [[grid]]                          # further blocks add their runs (e.g. a dense reference)
    select = {"train.lr" = [1e-2]}    # optional: this block's configurations try only these of
                                      # [select]'s candidates (a narrower, cheaper selection);
                                      # one candidate is a fixed value: no selection runs

    [select]                          # chosen per configuration (optional)
    "train.lr" = [3e-3, 1e-2, 3e-2]   # every configuration is run at each value ...
    seeds = [100]                     # ... on these seeds, kept apart from the grid's seeds,
    by = "bits"                       # and the best by mean bits is used for the grid's seeds
    [select.set]                      # optional: fixed for the selection runs only
    "train.exposures" = 100           # (choose the rate on shorter runs than the reported ones)

Fields are dotted paths into the run config; nested tables ([grid.model.moe]) work too.
Runs are identified by a hash of their resolved config, so a sweep resumes by content.

With [select], a sweep runs in two phases (sweeps/runner.py): first every configuration (a grid
run without its seed) at every combination of the selected values on the selection seeds, then
the grid's runs with each configuration's best combination. Choosing on seeds that are not
reported keeps the reported numbers free of the selection's own luck.
"""

from __future__ import annotations

import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from moelab.config import (
    RunConfig, field_types, from_dict, load_config, load_preset, preset_names, read_toml, resolve, run_key,
    to_dict,
)
from moelab.errors import ConfigError

SWEEP_KEYS = {"name", "description", "base", "set", "grid", "select"}
SELECT_BY = ("bits", "accuracy")


@dataclass
class SweepRun:
    key: str  # hash of the resolved config
    label: str  # the varied fields, e.g. "n_experts=8 top_k=1"
    config: RunConfig
    candidates: dict[str, list[Any]] = field(default_factory=dict)  # its block's `select`: a subset to try


@dataclass
class Selection:
    """Values chosen per configuration: `fields` maps dotted fields to their candidates; the
    choice maximises the mean of metric `by` over `seeds`."""

    fields: dict[str, list[Any]]
    seeds: list[int]
    by: str = "bits"
    overrides: dict[str, Any] = field(default_factory=dict)  # `[select.set]`: fixed for selection runs only

    def assignments(self) -> list[dict[str, Any]]:
        """Each candidate as the fields a selection run sets (its seed apart)."""
        return [combination | self.overrides for combination in self.combinations()]

    def fixed(self, run: SweepRun) -> bool:
        """Whether `run`'s block narrowed the candidates to one: nothing to choose, so no selection runs."""
        return len(self.combinations(run)) == 1

    def combinations(self, run: SweepRun | None = None) -> list[dict[str, Any]]:
        """Every candidate combination, or those `run`'s grid block narrowed its selection to."""
        allowed = run.candidates if run is not None else {}
        return [dict(zip(self.fields, values)) for values in itertools.product(*self.fields.values())
                if all(value in allowed.get(path, [value]) for path, value in zip(self.fields, values))]


@dataclass
class Sweep:
    name: str
    description: str
    runs: list[SweepRun]  # with a selection: the reported runs, at the first candidate values
    selection: Selection | None = None


def with_fields(cfg: RunConfig, assignment: dict[str, Any]) -> RunConfig:
    data = to_dict(cfg)
    for path, value in assignment.items():
        set_path(data, path, value)
    return resolve(from_dict(RunConfig, data))


def _describe(assignment: dict[str, Any]) -> str:
    return " ".join(f"{path.split('.')[-1]}={value}" for path, value in assignment.items())


def configuration_id(sweep: Sweep, run: SweepRun) -> str:
    """What a run's selection is shared by: its config without its seed and the selected fields."""
    neutral = with_fields(run.config, {"seed": 0} | {p: v[0] for p, v in sweep.selection.fields.items()})
    return run_key(neutral)


def selection_runs(sweep: Sweep) -> list[SweepRun]:
    """Phase one: every configuration at every candidate combination, on the selection seeds."""
    runs: dict[str, SweepRun] = {}
    for run in sweep.runs:
        if sweep.selection.fixed(run):
            continue
        base_label = run.label.split(" seed=")[0]
        for combination in sweep.selection.combinations(run):
            for seed in sweep.selection.seeds:
                cfg = with_fields(run.config, combination | sweep.selection.overrides | {"seed": seed})
                label = f"{base_label} {_describe(combination | sweep.selection.overrides)} seed={seed} (selection)"
                cfg.name = f"{sweep.name}/{label.replace(' ', ',')}"
                key = run_key(cfg)
                runs.setdefault(key, SweepRun(key, label, cfg))
    return list(runs.values())


def chosen_runs(sweep: Sweep, choices: dict[str, dict[str, Any]]) -> list[SweepRun]:
    """Phase two: the grid's runs at their configuration's chosen values (configurations without
    a choice, because every selection run failed, are left out)."""
    out = []
    for run in sweep.runs:
        choice = choices.get(configuration_id(sweep, run))
        if choice is None:
            continue
        cfg = with_fields(run.config, choice)
        label = f"{run.label.split(' seed=')[0]} {_describe(choice)}" + (
            f" seed={run.config.seed}" if " seed=" in run.label else "")
        cfg.name = f"{sweep.name}/{label.replace(' ', ',')}"
        out.append(SweepRun(run_key(cfg), label, cfg))
    return out


def _selection(data: dict[str, Any], source: str, runs: list[SweepRun]) -> Selection | None:
    table = dict(data.get("select") or {})
    if not table:
        return None
    where = f"{source} [select]"
    seeds, by = table.pop("seeds", None), table.pop("by", "bits")
    overrides = flatten(table.pop("set", {}))
    _check_fields(overrides, f"{where} [select.set]")
    for path, value in overrides.items():
        if path == "seed" or isinstance(value, list):
            raise ConfigError(f"{where} [select.set] {path!r} = {value!r}: give one fixed value for the "
                              "selection runs (not a seed, not a list), e.g. \"train.exposures\" = 100")
    fields = flatten(table)
    _check_fields(fields, where)
    if not fields:
        raise ConfigError(f"{where}: name at least one field to select over, e.g. \"train.lr\" = [3e-3, 1e-2]")
    for path, values in fields.items():
        if path == "seed":
            raise ConfigError(f"{where} 'seed': seeds are not selected; the selection's seeds go in seeds = [...]")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where} {path!r} = {values!r}: give a non-empty list of candidate values")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) and not isinstance(x, bool)
                                                           for x in seeds):
        raise ConfigError(f"{where} seeds = {seeds!r}: give a list of integer seeds to choose on, "
                          "disjoint from the grid's seeds")
    reported = sorted({r.config.seed for r in runs} & set(seeds))
    if reported:
        raise ConfigError(f"{where} seeds: {reported} are also the grid's seeds; choosing on the seeds "
                          "that are reported would flatter the choice: use other seeds")
    if by not in SELECT_BY:
        raise ConfigError(f"{where} by = {by!r}: use one of {', '.join(SELECT_BY)}")
    if set(overrides) & set(fields):
        raise ConfigError(f"{where} [select.set] {sorted(set(overrides) & set(fields))[0]!r}: a field is "
                          "either selected over or fixed for the selection runs, not both")
    selection = Selection(fields, seeds, by, overrides)
    for run in runs:
        for path, values in run.candidates.items():
            if path not in fields or any(value not in fields[path] for value in values):
                raise ConfigError(f"{source} grid select {path!r} = {values!r} (run {run.label}): a block may only "
                                  f"narrow [select]'s candidates ({_describe(fields)}); name some of those values")
    for run in runs:  # every candidate must make a valid run
        for combination in selection.assignments():
            try:
                with_fields(run.config, combination)
            except ConfigError as err:
                raise ConfigError(f"{where} {_describe(combination)} for run {run.label}: {err}") from None
    return selection


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model': {'moe': {'top_k': [1]}}} -> {'model.moe.top_k': [1]}; dotted keys pass through."""
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value


DESCRIBED = {"model.moe.n_experts", "model.moe.top_k", "model.moe.expert_width", "model.d_ff",
             "model.memory.kind", "model.memory.n_keys", "model.memory.heads", "model.memory.top_k"}
# Recipe fields a block sets are named in its labels even when the block gives a single value:
# runs that differ from the rest of the sweep in how they train must not look like the others.
RECIPE_FIELDS = {"seed", "model.moe.router", "train.batch_size", "train.exposures", "train.router_lr_mult",
                 "train.expert_lr_mult", "train.memory_lr_mult", "train.memory_optimizer", "model.moe.gate",
                 "model.moe.freeze_fraction", "model.moe.balance", "model.moe.capacity_factor", "train.warmup_steps",
                 "train.lr", "model.moe.aux_loss_weight", "model.moe.z_loss_weight", "model.moe.bias_update_rate"}


def run_label(cfg: RunConfig, varied: dict[str, Any]) -> str:
    """'E=8 k=2 w=52', 'dense d_ff=208' or 'pkm N=1024 h=4 k=8' (with ' +d_ff=64' for a memory beside
    the MLP), then any other field this grid block varies."""
    moe, memory = cfg.model.moe, cfg.model.memory
    if memory.kind != "none":
        arch = f"{memory.kind} N={memory.slots} h={memory.heads} k={memory.top_k}" + (
            f" +d_ff={cfg.model.d_ff}" if memory.placement == "beside" else "")
    elif moe.n_experts:
        arch = f"E={moe.n_experts} k={moe.top_k} w={moe.expert_width}"
    else:
        arch = f"dense d_ff={cfg.model.d_ff}"
    c = cfg.continual
    if c.active:  # what it continues with, always: continued runs of one parent differ only there
        arch += f" continued replay={c.replay_fraction:g}" + (f" +{c.add_experts} experts" if c.add_experts else "") + (
            " +memory" if c.add_memory else "") + (
            f" train={'+'.join(c.trainable) or 'nothing'}" if c.trainable != ["all"] else "")
    extras = [f"{path.split('.')[-1]}={value}" for path, value in varied.items()
              if path not in DESCRIBED and not path.startswith("continual.")]
    return " ".join([arch, *extras])


def _check_fields(fields: dict[str, Any], where: str) -> None:
    known = field_types()
    for path in fields:
        if path not in known:
            raise ConfigError(f"{where} {path!r}: unknown field; fields look like 'model.moe.n_experts'")


def _axes(block: dict[str, Any], where: str) -> list[list[dict[str, Any]]]:
    """A grid block as axes; each axis is a list of {field: value} assignments."""
    zips = block.pop("zip", [])
    if isinstance(zips, dict):
        zips = [zips]
    axes = []
    fields = flatten(block)
    _check_fields(fields, where)
    for path, values in fields.items():
        if not isinstance(values, list):
            raise ConfigError(f"{where} {path!r} = {values!r}: grid values must be a list; "
                              "put fixed values under [set]")
        if not values:
            raise ConfigError(f"{where} {path!r}: empty list, the grid would have no runs")
        axes.append([{path: v} for v in values])
    for n, group in enumerate(zips):
        group = flatten(group)
        _check_fields(group, f"{where} zip {n + 1}")
        lengths = {path: len(v) if isinstance(v, list) else -1 for path, v in group.items()}
        if any(length < 0 for length in lengths.values()):
            bad = next(p for p, length in lengths.items() if length < 0)
            raise ConfigError(f"{where} zip {n + 1} {bad!r}: values must be a list")
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"{where} zip {n + 1}: lists of unequal lengths "
                              f"({', '.join(f'{p} has {n}' for p, n in lengths.items())}); make them equal")
        if 0 in lengths.values():
            raise ConfigError(f"{where} zip {n + 1}: empty lists, the grid would have no runs")
        axes.append([dict(zip(group, values)) for values in zip(*group.values())])
    return axes


def _block_candidates(table: Any, where: str, data: dict[str, Any]) -> dict[str, list[Any]]:
    """A grid block's `select = {...}`: the subset of [select]'s candidates its configurations try."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} select = {table!r}: give a table of candidate lists, "
                          "e.g. select = {\"train.lr\" = [3e-3, 1e-2]}")
    if table and not data.get("select"):
        raise ConfigError(f"{where} select: the sweep has no [select] table whose candidates this block "
                          "could narrow; add one, or drop the block's select")
    candidates = flatten(table)
    for path, values in candidates.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where} select {path!r} = {values!r}: give a non-empty list of candidate values")
    return candidates


def load_sweep_data(data: dict[str, Any], source: str, folder: Path | None) -> Sweep:
    """Expand a parsed sweep file into validated run configs. `source` names it in errors."""
    unknown = set(data) - SWEEP_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown key {sorted(unknown)[0]!r}; "
                          f"a sweep file has {', '.join(sorted(SWEEP_KEYS))}")
    base_name = data.get("base", "tiny-dense")
    if folder is not None and (folder / base_name).is_file():
        base = load_config(folder / base_name)
    elif base_name in preset_names():
        base = load_preset(base_name)
    else:
        raise ConfigError(f"{source}: base = {base_name!r} is neither a run preset "
                          f"({', '.join(preset_names())}) nor a config file next to the sweep")
    base_dict = to_dict(base)
    fixed = flatten(data.get("set", {}))
    _check_fields(fixed, f"{source} [set]")
    for path, value in fixed.items():
        set_path(base_dict, path, value)

    blocks = data.get("grid", [{}])
    if isinstance(blocks, dict):
        blocks = [blocks]
    name = data.get("name", source)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"{source}: name = {name!r}: the sweep's name is also its default folder (runs/NAME); "
                          "use letters, digits, '.', '_' and '-' only, starting with a letter or digit")
    expanded: list[tuple[RunConfig, dict[str, Any], set[str], dict]] = []  # config, assignment, varied, candidates
    for b, block in enumerate(blocks):
        where = f"{source} grid {b + 1}:"
        block = dict(block)
        candidates = _block_candidates(block.pop("select", {}), where, data)
        axes = _axes(block, where)
        varied = {path for axis in axes if len(axis) > 1 for path in axis[0]}
        for combo in itertools.product(*axes):
            assignment = {path: value for part in combo for path, value in part.items()}
            run_dict = json.loads(json.dumps(base_dict))
            for path, value in assignment.items():
                set_path(run_dict, path, value)
            try:
                cfg = resolve(from_dict(RunConfig, run_dict))
            except ConfigError as err:
                raise ConfigError(f"{where} run {_describe(assignment)}: {err}") from None
            expanded.append((cfg, assignment, varied, candidates))
    labels = [run_label(cfg, {p: v for p, v in a.items() if p in varied or p in RECIPE_FIELDS})
              for cfg, a, varied, _ in expanded]
    clashing = {label for label in labels if labels.count(label) > 1}
    runs: dict[str, SweepRun] = {}
    for (cfg, assignment, _, candidates), label in zip(expanded, labels):
        if label in clashing:  # blocks that differ only in fields each fixes: name those fields too
            label = run_label(cfg, assignment)
        cfg.name = f"{name}/{label.replace(' ', ',')}"
        key = run_key(cfg)
        runs.setdefault(key, SweepRun(key, label, cfg, candidates))
    if not runs:
        raise ConfigError(f"{source}: the grid expands to no runs")
    selection = _selection(data, source, list(runs.values()))
    return Sweep(name=name, description=data.get("description", ""), runs=list(runs.values()), selection=selection)


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    data = read_toml(path, "sweep")
    data.setdefault("name", path.stem)
    return load_sweep_data(data, str(path), path.parent)


def sweep_preset_names() -> list[str]:
    folder = resources.files("moelab.presets.sweeps")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_sweep_preset(name: str) -> Sweep:
    if name not in sweep_preset_names():
        raise ConfigError(f"--preset {name!r}: unknown sweep preset; available: "
                          f"{', '.join(sweep_preset_names())}")
    text = resources.files("moelab.presets.sweeps").joinpath(f"{name}.toml").read_text()
    return load_sweep_data(tomllib.loads(text), f"sweep preset {name}", None)
