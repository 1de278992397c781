"""One knowledge-capacity run end to end: knowledge base -> model -> train -> measure -> store.

A run folder holds `config.toml` (the resolved config), `model.safetensors` and, written last,
`metrics.json`; a folder with `metrics.json` is a finished run. Every file is written atomically.
"""

from __future__ import annotations

import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import safetensors
import safetensors.torch
import torch

import moelab
from moelab.config import RunConfig, load_config, save_config, to_dict
from moelab.errors import MoelabError
from moelab.evaluation import measure_capacity, routing_diagnostics
from moelab.io import atomic_write, atomic_write_json
from moelab.knowledge import KnowledgeBase, build_knowledge_base
from moelab.models import Transformer, count_module, count_params
from moelab.training import train

DIAGNOSTIC_PARAGRAPHS = 1024


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MoelabError("train.device = 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


def git_commit() -> str | None:
    """The commit of the moelab source tree, with '+dirty' for uncommitted changes; None outside git."""
    src = Path(moelab.__file__).parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def environment(device: torch.device) -> dict:
    return {
        "versions": {"moelab": moelab.__version__, "python": platform.python_version(),
                     "torch": torch.__version__, "numpy": np.__version__,
                     "safetensors": safetensors.__version__},
        "platform": platform.platform(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "git_commit": git_commit(),
    }


def build(cfg: RunConfig, device: torch.device) -> tuple[KnowledgeBase, Transformer]:
    """The knowledge base and a freshly initialised model (seeded by `cfg.seed`)."""
    kb = build_knowledge_base(cfg.data)
    torch.manual_seed(cfg.seed)
    model = Transformer(cfg.model, len(kb.vocab)).to(device)
    return kb, model


def execute(cfg: RunConfig, out_dir: str | Path, on_step: Callable[[int, int], None] | None = None) -> dict:
    """Train and measure one run, write its folder, and return its metrics."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    kb, model = build(cfg, device)
    counts = count_params(cfg.model, len(kb.vocab))
    if count_module(model) != (counts.total, counts.active):  # a bug here, never the user's
        raise AssertionError(f"accounting {counts.total, counts.active} != module {count_module(model)}")

    save_config(cfg, out_dir / "config.toml")
    result = train(model, kb, cfg.train, cfg.seed, device, on_step=on_step)
    eval_start = time.perf_counter()
    capacity = measure_capacity(model, kb, cfg.train.eval_batch_size, device)
    routing = routing_diagnostics(model, kb, DIAGNOSTIC_PARAGRAPHS, cfg.seed + 1,
                                  cfg.train.eval_batch_size, device)
    eval_seconds = time.perf_counter() - eval_start
    atomic_write(out_dir / "model.safetensors", lambda tmp: safetensors.torch.save_model(model, tmp))

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
        "exposures": cfg.train.exposures,
        "steps": result.steps,
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
        "value_normalisation": "full_softmax",
        "accuracy": capacity.accuracy,
        "accuracy_per_attribute": capacity.accuracy_per_attribute,
        "routing": routing,
        "history": result.history,
        "train_seconds": result.seconds,
        "eval_seconds": eval_seconds,
        "tokens_per_second": result.tokens / result.seconds,
        "wall_seconds": time.perf_counter() - start,
        "threads": cfg.train.threads,
        "config": to_dict(cfg),
    } | environment(device)
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[RunConfig, KnowledgeBase, Transformer]:
    """A finished run's config, its (regenerated) knowledge base and its trained model."""
    run_dir = Path(run_dir)
    weights = run_dir / "model.safetensors"
    if not weights.exists():
        raise MoelabError(f"{run_dir}: no model.safetensors; is this a finished run folder?")
    cfg = load_config(run_dir / "config.toml")
    kb, model = build(cfg, torch.device(device))
    safetensors.torch.load_model(model, weights, device=device)
    model.eval()
    return cfg, kb, model

