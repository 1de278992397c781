"""One knowledge-capacity run end to end: knowledge base -> model -> train -> measure -> store.

A run folder holds, in the order they are written:
    config.toml        the resolved config
    model.safetensors  the trained weights, saved as soon as training ends
    training.json      the training result (steps, loss history, timings): the checkpoint is complete
    metrics.json       everything measured; a folder with a valid metrics.json is a finished run
Every file is written atomically and fsynced. A run whose evaluation failed or was interrupted
keeps its checkpoint: rerunning the same config in the same folder loads it and only evaluates.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from moelab.config import RunConfig, load_config, run_key, save_config, to_dict
from moelab.errors import MoelabError
from moelab.evaluation import measure_capacity, routing_diagnostics
from moelab.evaluation.abstention import abstention_metrics
from moelab.io import atomic_write, atomic_write_json
from moelab.knowledge import KnowledgeBase, build_knowledge_base
from moelab.knowledge.base import VALUE_NORMALISATION
from moelab.models import Transformer, count_module, count_params
from moelab.provenance import environment
from moelab.training import TrainResult, train

DIAGNOSTIC_PARAGRAPHS = 1024


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MoelabError("train.device = 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


def build(cfg: RunConfig, device: torch.device) -> tuple[KnowledgeBase, Transformer]:
    """The knowledge base and a freshly initialised model (seeded by `cfg.seed`)."""
    kb = build_knowledge_base(cfg.data)
    torch.manual_seed(cfg.seed)
    model = Transformer(cfg.model, len(kb.vocab)).to(device)
    return kb, model


def execute(cfg: RunConfig, out_dir: str | Path, on_step: Callable[[int, int, float], None] | None = None) -> dict:
    """Train and measure one run, write its folder, and return its metrics."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    kb, model = build(cfg, device)
    counts = count_params(cfg.model, len(kb.vocab))
    if count_module(model) != (counts.total, counts.active):  # a bug here, never the user's
        raise AssertionError(f"accounting {counts.total, counts.active} != module {count_module(model)}")

    result = resume_checkpoint(cfg, model, out_dir, device)
    if result is None:
        save_config(cfg, out_dir / "config.toml")
        result = train(model, kb, cfg.train, cfg.seed, device, on_step=on_step)
        atomic_write(out_dir / "model.safetensors", lambda tmp: safetensors.torch.save_model(model, tmp))
        atomic_write_json(out_dir / "training.json", asdict(result))
    eval_start = time.perf_counter()
    capacity = measure_capacity(model, kb, cfg.train.eval_batch_size, device)
    routing, memory_usage = routing_diagnostics(model, kb, DIAGNOSTIC_PARAGRAPHS, cfg.seed + 1,
                                  cfg.train.eval_batch_size, device)
    abstention = (abstention_metrics(model, kb, cfg.train.eval_batch_size, device)
                  if hasattr(kb, "held_out_names") else None)
    eval_seconds = time.perf_counter() - eval_start

    moe = cfg.model.moe
    metrics = {
        "name": cfg.name,
        "seed": cfg.seed,
        "data_kind": cfg.data.kind,
        "data_seed": cfg.data.seed,
        "n_people": kb.n_people,
        "vocab_size": len(kb.vocab),
        "p_total": counts.total,
        "p_active": counts.active,
        "p_total_nonembedding": counts.total_nonembedding,
        "p_active_nonembedding": counts.active_nonembedding,
        "p_embedding": counts.embedding,
        "active_fraction": counts.active / counts.total,
        "params": counts.as_dict(),
        "n_experts": moe.n_experts,
        "top_k": moe.top_k if cfg.model.is_moe else 0,
        "expert_width": moe.expert_width if cfg.model.is_moe else cfg.model.d_ff,
        "granularity": cfg.model.d_ff / moe.expert_width if cfg.model.is_moe else 1.0,
        "memory_kind": cfg.model.memory.kind,
        "memory_slots": cfg.model.memory.slots if cfg.model.memory.kind != "none" else 0,
        "memory_optimizer": cfg.train.memory_optimizer if cfg.model.memory.kind != "none" else None,
        "exposures": cfg.train.exposures,
        "steps": result.steps,
        "warmup_steps": result.warmup_steps,
        "batch_size": cfg.train.batch_size,
        "lr": cfg.train.lr,
        "weight_decay": cfg.train.weight_decay,
        "tokens_trained": result.tokens,
        "final_loss": result.final_loss,
        "bits": capacity.bits,
        "bit_terms": capacity.bit_terms,
        "information_bits": capacity.information_bits,
        "information_terms": capacity.information_terms,
        "bits_per_param": capacity.bits / counts.total,
        "bits_per_active_param": capacity.bits / counts.active,
        "r_max": capacity.information_bits / counts.total,
        "losses_nats": capacity.losses,
        "value_normalisation": VALUE_NORMALISATION,
        "routing_paragraphs": DIAGNOSTIC_PARAGRAPHS,
        "accuracy": capacity.accuracy,
        "accuracy_per_attribute": capacity.accuracy_per_attribute,
        "routing": routing,
        "memory": memory_usage,
        "abstention": abstention,
        "unknown_rows_per_exposure": kb.unknown_per_exposure,
        "omniscience_index": abstention["omniscience_index"] if abstention else None,
        "hallucination_rate": abstention["hallucination_rate"] if abstention else None,
        "history": result.history,
        "train_seconds": result.seconds,
        "eval_seconds": eval_seconds,
        "tokens_per_second": result.tokens / result.seconds,
        "wall_seconds": time.perf_counter() - start,
        "resumed_from_checkpoint": result.resumed,
        "threads": cfg.train.threads,
        "run_key": run_key(cfg),
        "config": to_dict(cfg),
    } | environment(device)
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


REQUIRED_METRICS = ("name", "p_total", "p_active", "bits", "bits_per_param", "accuracy", "config")


def read_metrics(path: str | Path) -> dict:
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


def load_checkpoint(model: torch.nn.Module, path: str | Path, device: str | torch.device = "cpu") -> None:
    """Load safetensors weights into `model`, refusing a damaged file or one of another shape by name."""
    path = Path(path)
    try:
        with safetensors.safe_open(path, "pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except FileNotFoundError:
        raise MoelabError(f"{path}: no such file; is this a finished run folder?") from None
    except (safetensors.SafetensorError, OSError) as err:
        raise MoelabError(f"{path}: not a readable safetensors file ({err}); it is truncated or damaged: "
                          "restore it or retrain the run") from None
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    for name in sorted(set(expected) & set(shapes)):
        if shapes[name] != expected[name]:
            raise MoelabError(f"{path}: tensor {name!r} is shape {list(shapes[name])} but the run's config.toml "
                              f"needs shape {list(expected[name])}; the checkpoint belongs to another run "
                              "(or the config was edited)")
    try:  # tied weights are stored once, so names are checked by safetensors itself
        safetensors.torch.load_model(model, path, device=str(device))
    except RuntimeError as err:
        raise MoelabError(f"{path}: does not fit the run's config.toml ({str(err).splitlines()[0]}); "
                          "the checkpoint belongs to another run (or the config was edited)") from None


def resume_checkpoint(cfg: RunConfig, model: Transformer, out_dir: Path,
                      device: torch.device) -> TrainResult | None:
    """The training result of a complete checkpoint of this very config in `out_dir`, with its
    weights loaded into `model`; None when there is none to resume (then training starts afresh)."""
    training, weights, config = out_dir / "training.json", out_dir / "model.safetensors", out_dir / "config.toml"
    if not (training.exists() and weights.exists() and config.exists()):
        return None
    try:
        same = run_key(load_config(config)) == run_key(cfg)
        result = TrainResult(**json.loads(training.read_text()))
    except (MoelabError, json.JSONDecodeError, TypeError):
        return None  # a stale or damaged checkpoint: train again and overwrite it
    if not same:
        return None
    load_checkpoint(model, weights, device)
    result.resumed = True
    return result


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[RunConfig, KnowledgeBase, Transformer]:
    """A trained run's config, its (regenerated) knowledge base and its trained model."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").exists():
        raise MoelabError(f"{run_dir}: no config.toml; give a moelab run folder")
    if not (run_dir / "model.safetensors").exists():
        raise MoelabError(f"{run_dir}: no model.safetensors; is this a finished run folder?")
    cfg = load_config(run_dir / "config.toml")
    kb, model = build(cfg, torch.device(device))
    load_checkpoint(model, run_dir / "model.safetensors", device)
    model.eval()
    return cfg, kb, model
