"""A run's weights (torch): saved with its training result, loaded into a model of its config,
resumed when the same config runs again in the same folder, and a finished run rebuilt from its
folder (moelab/runs/__init__.py lists the files)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from moelab.config import RunConfig, load_config, run_key
from moelab.continual import grow
from moelab.errors import MoelabError
from moelab.io import atomic_write, atomic_write_json
from moelab.knowledge import KnowledgeBase, build_knowledge_base
from moelab.models import Transformer
from moelab.runs.folder import CONFIG, TRAINING, WEIGHTS
from moelab.training import TrainResult


def build(cfg: RunConfig, device: torch.device) -> tuple[KnowledgeBase, Transformer]:
    """The knowledge base (A, for a continued run) and a freshly initialised model (seeded by
    `cfg.seed`), with a continued run's added experts."""
    kb = build_knowledge_base(cfg.data)
    torch.manual_seed(cfg.seed)
    model = Transformer(cfg.model, len(kb.vocab)).to(device)
    grow(model, cfg.continual)
    return kb, model


def save_weights(model: Transformer, result: TrainResult, folder: Path) -> None:
    """The weights, then the training result: a folder with training.json holds a complete checkpoint."""
    atomic_write(folder / WEIGHTS, lambda tmp: safetensors.torch.save_model(model, tmp))
    atomic_write_json(folder / TRAINING, asdict(result))


def load_weights(model: torch.nn.Module, path: str | Path, device: str | torch.device = "cpu") -> None:
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


def resume_weights(cfg: RunConfig, model: Transformer, folder: Path,
                      device: torch.device) -> TrainResult | None:
    """The training result of a complete checkpoint of this very config in `folder`, with its
    weights loaded into `model`; None when there is none to resume (then training starts afresh)."""
    training, weights, config = folder / TRAINING, folder / WEIGHTS, folder / CONFIG
    if not (training.exists() and weights.exists() and config.exists()):
        return None
    try:
        same = run_key(load_config(config)) == run_key(cfg)
        result = TrainResult(**json.loads(training.read_text()))
    except (MoelabError, json.JSONDecodeError, TypeError):
        return None  # a stale or damaged checkpoint: train again and overwrite it
    if not same:
        return None
    load_weights(model, weights, device)
    result.resumed = True
    return result


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[RunConfig, KnowledgeBase, Transformer]:
    """A trained run's config, its (regenerated) knowledge base and its trained model."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise MoelabError(f"{run_dir}: no config.toml; give a moelab run folder")
    if not (run_dir / WEIGHTS).exists():
        raise MoelabError(f"{run_dir}: no model.safetensors; is this a finished run folder?")
    cfg = load_config(run_dir / CONFIG)
    kb, model = build(cfg, torch.device(device))
    load_weights(model, run_dir / WEIGHTS, device)
    model.eval()
    return cfg, kb, model
