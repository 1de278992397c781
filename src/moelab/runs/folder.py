"""A run folder's paths and its metrics record, without torch (the sweep store and the reports
read them; see moelab/runs/__init__.py for the files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict

from moelab.config import RunConfig, run_key
from moelab.errors import MoelabError
from moelab.io import atomic_write_json

CONFIG, RESUME, WEIGHTS, TRAINING, METRICS = (
    "config.toml", "resume.safetensors", "model.safetensors", "training.json", "metrics.json")


class Metrics(TypedDict, total=False):
    """metrics.json: what a run records (run.py writes it, everything else reads it). Keys a kind
    of run does not produce are absent: routing for dense models, abstention without unknown
    people, forgetting for plain runs. tests/runs/test_folder.py checks that a run writes every
    key this record declares and no other."""

    # the run and its model
    name: str
    seed: int
    run_key: str
    config: dict[str, Any]
    data_kind: str
    data_seed: int
    vocab_size: int
    p_total: int
    p_active: int
    p_total_nonembedding: int
    p_active_nonembedding: int
    p_embedding: int
    active_fraction: float
    params: dict[str, Any]
    n_experts: int
    top_k: int
    expert_width: int
    granularity: float
    memory_kind: str
    memory_slots: int
    memory_optimizer: str | None
    # training
    exposures: int
    steps: int
    warmup_steps: int
    batch_size: int
    lr: float
    weight_decay: float
    tokens_trained: int
    final_loss: float
    history: list[dict[str, Any]]
    train_seconds: float
    tokens_per_second: float
    resumed_from_checkpoint: bool
    resumed_at_steps: list[int]
    training_segments: list[dict[str, Any]]  # where each stretch of training ran: from_step, device, git_commit, torch
    threads: int
    dtype: str
    compile: bool
    dispatch: str | None
    # knowledge measured (evaluation/capacity.py)
    bits: float
    bit_terms: dict[str, float]
    information_bits: float
    information_terms: dict[str, float]
    bits_per_param: float
    bits_per_active_param: float
    r_max: float
    losses_nats: dict[str, float]
    value_normalisation: str
    routing_paragraphs: int
    accuracy: float
    accuracy_per_attribute: dict[str, float]
    # the kind's own measurements (None where the kind has none)
    n_people: int
    routing: dict[str, Any] | None
    fact_routing: list[dict[str, Any]]  # plain runs: how the recall values are routed, per MoE layer (evaluation/routing.py)
    memory: dict[str, Any] | None
    abstention: dict[str, Any] | None
    unknown_rows_per_exposure: int
    omniscience_index: float | None
    hallucination_rate: float | None
    continual: dict[str, Any] | None
    # where and how long (provenance.environment)
    eval_seconds: float
    wall_seconds: float
    processes: int
    versions: dict[str, str]
    platform: str
    device: str
    git_commit: str | None


REQUIRED_METRICS = ("name", "p_total", "p_active", "bits", "bits_per_param", "accuracy", "config")


def read_metrics(path: str | Path) -> Metrics:
    """A run's metrics.json, checked: a truncated or foreign file is a MoelabError naming it."""
    path = Path(path)
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        raise MoelabError(f"{path}: no such file; is this a finished run folder?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MoelabError(f"{path}: not valid JSON ({err}); the file is truncated or damaged: "
                          "delete it and rerun the run to measure it again") from None
    missing = [k for k in REQUIRED_METRICS if not isinstance(metrics, dict) or k not in metrics]
    if missing:
        raise MoelabError(f"{path}: not a moelab run's metrics (no {missing[0]!r}); delete it and rerun the run")
    return metrics


def write_metrics(folder: Path, metrics: Metrics) -> None:
    atomic_write_json(folder / METRICS, metrics)


def finished_metrics(cfg: RunConfig, folder: Path) -> Metrics | None:
    """The metrics of a finished run of this very config in `folder`, or None."""
    try:
        metrics = read_metrics(folder / METRICS)
    except MoelabError:
        return None
    return metrics if metrics.get("run_key") == run_key(cfg) and (folder / WEIGHTS).exists() else None
