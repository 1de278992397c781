"""Mid-run checkpoints and stop requests: a run that outlives a time limit.

While a run trains, its folder holds `resume.safetensors`, rewritten atomically at most every
`train.checkpoint_minutes` and whenever a stop is requested (SIGTERM from a scheduler, or the
deadline of `--stop-after`), and deleted once the run's final checkpoint (model.safetensors,
training.json) is written. Rerunning the same command resumes from it, and the resumed run is
bit-identical to one that never stopped: the file holds everything the training loop's future
depends on.

    tensors   the model's state_dict (weights and persistent buffers, such as the
              auxiliary-loss-free bias), every optimizer's state (AdamW's and SparseAdam's moments
              and step counts), torch's random state, and the routing-churn reference (each MoE
              layer's first-choice experts at the last history record)
    metadata  the run key; the step reached; the data stream's NumPy generator state and Python's
              random state; the loss history and the losses since its last record; tokens seen
              and seconds trained; the training segments so far (the step each began at, its
              device, commit and torch); a SHA-256 of every tensor's bytes

The data order is regenerated from the seed (training.people_order) and the step is the position
in it. Router loads are cleared after every optimizer step, so between steps there are none to keep.
A file that does not read back whole, or whose tensors do not match their hash, is named and set
aside (renamed `resume.safetensors.damaged`), and the run starts again from step 0: never from garbage.

A stop request (stopping.py) is process-wide: the training loop checks it after every step,
writes a checkpoint and raises `RunStopped`.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from moelab.io import atomic_write
from moelab.stopping import stop_reason

RESUME_FILE = "resume.safetensors"
FORMAT = 1

@dataclass
class LoopState:
    """Where a training loop stands between two steps (everything but the tensors)."""

    step: int
    tokens: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    recent: list[float] = field(default_factory=list)  # losses since the last history record
    final_loss: float = float("nan")
    data_rng: dict = field(default_factory=dict)  # the NumPy generator's bit_generator.state
    previous_top1: list[torch.Tensor] | None = None  # the routing-churn reference
    previous_facts: list[torch.Tensor] | None = None  # the fact-churn reference
    # One entry per stretch of training between a start or resume and a stop: the step it began
    # at and where it ran ({"from_step", "device", "git_commit", "torch"}). A run resumed on
    # another machine sums in another order from there on (provenance.py), so the record says so.
    segments: list[dict] = field(default_factory=list)


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _optimizer_parts(optimizers: list[torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Each optimizer's per-parameter state split into tensors (named o.index.key) and plain values."""
    tensors, plain = {}, []
    for o, optimizer in enumerate(optimizers):
        values: dict[str, dict] = {}
        for index, state in optimizer.state_dict()["state"].items():
            for key, value in state.items():
                if torch.is_tensor(value):
                    tensors[f"optimizer.{o}.{index}.{key}"] = value.detach().cpu().clone()
                else:
                    values.setdefault(str(index), {})[key] = value
        plain.append(values)
    return tensors, plain


def _load_optimizers(optimizers: list[torch.optim.Optimizer], tensors: dict[str, torch.Tensor],
                     plain: list[dict]) -> None:
    for o, optimizer in enumerate(optimizers):
        state: dict[int, dict] = {}
        for name, value in tensors.items():
            part, o_, index, key = name.split(".", 3)
            if part == "optimizer" and int(o_) == o:
                state.setdefault(int(index), {})[key] = value
        for index, values in plain[o].items():
            state.setdefault(int(index), {}).update(values)
        # the parameter groups (and their hyperparameters) are rebuilt from the config, not stored
        optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


class Checkpointer:
    """Writes and reads one run folder's `resume.safetensors`. `writer` is False on the torchrun
    ranks other than 0 (they read it, never write it); `every_minutes` 0 writes only on a stop."""

    def __init__(self, folder: str | Path, run_key: str, every_minutes: float, writer: bool = True):
        self.path = Path(folder) / RESUME_FILE
        self.run_key, self.writer = run_key, writer
        self.every = every_minutes * 60
        self.last = time.monotonic()
        self.note: str | None = None  # what happened to a checkpoint that could not be used

    def due(self) -> bool:
        """A periodic checkpoint is due, or a stop was requested."""
        return stop_reason() is not None or (self.every > 0 and time.monotonic() - self.last >= self.every)

    def save(self, model: torch.nn.Module, optimizers: list[torch.optim.Optimizer], state: LoopState) -> None:
        self.last = time.monotonic()
        if not self.writer:
            return
        tensors = {f"model.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}
        optimizer_tensors, optimizer_plain = _optimizer_parts(optimizers)
        tensors |= optimizer_tensors
        tensors["rng.torch"] = torch.get_rng_state()
        for name, reference in (("churn", state.previous_top1), ("fact", state.previous_facts)):
            for i, top1 in enumerate(reference or []):
                tensors[f"{name}.{i}"] = top1.detach().cpu().clone()
        meta = {
            "format": FORMAT, "run_key": self.run_key, "step": state.step, "tokens": state.tokens,
            "seconds": state.seconds, "history": state.history, "recent": state.recent,
            "final_loss": state.final_loss, "data_rng": state.data_rng, "segments": state.segments,
            "python_rng": random.getstate(), "optimizers": optimizer_plain,
            "churn_layers": None if state.previous_top1 is None else len(state.previous_top1),
            "fact_layers": None if state.previous_facts is None else len(state.previous_facts),
            "sha256": _digest(tensors),
        }
        metadata = {"moelab": json.dumps(meta)}
        atomic_write(self.path, lambda tmp: safetensors.torch.save_file(tensors, tmp, metadata=metadata))

    def restore(self, model: torch.nn.Module, optimizers: list[torch.optim.Optimizer]) -> LoopState | None:
        """Load the checkpoint into `model` and `optimizers` and return the loop's state; None (and
        `note` says why, where there was a file) when there is none to resume from."""
        if not self.path.exists():
            return None
        try:
            with safetensors.safe_open(self.path, "pt") as f:
                meta = json.loads((f.metadata() or {})["moelab"])
                tensors = {name: f.get_tensor(name) for name in f.keys()}
            if meta.get("format") != FORMAT or _digest(tensors) != meta["sha256"]:
                raise ValueError("its tensors do not match the hash written with them")
        except (OSError, ValueError, KeyError, TypeError, safetensors.SafetensorError) as err:
            self._set_aside(f"{self.path}: damaged ({err}); set aside as {self.path.name}.damaged, "
                            "training again from step 0")
            return None
        if meta["run_key"] != self.run_key:
            self._set_aside(f"{self.path}: belongs to run key {meta['run_key']}, not {self.run_key}; "
                            f"set aside as {self.path.name}.damaged, training again from step 0")
            return None
        model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
        _load_optimizers(optimizers, {k: v for k, v in tensors.items() if k.startswith("optimizer.")},
                         meta["optimizers"])
        torch.set_rng_state(tensors["rng.torch"])
        python_rng = meta["python_rng"]
        random.setstate((python_rng[0], tuple(python_rng[1]), python_rng[2]))
        device = next(model.parameters()).device
        references = {name: None if meta.get(f"{name}_layers") is None  # (fact churn came after format 1's first runs)
                      else [tensors[f"{name}.{i}"].to(device) for i in range(meta[f"{name}_layers"])]
                      for name in ("churn", "fact")}
        return LoopState(step=meta["step"], tokens=meta["tokens"], seconds=meta["seconds"],
                         history=meta["history"], recent=meta["recent"], final_loss=meta["final_loss"],
                         data_rng=meta["data_rng"], previous_top1=references["churn"],
                         previous_facts=references["fact"],
                         # a checkpoint from before segments were recorded: where its steps ran is unknown
                         segments=meta.get("segments", [{"from_step": 0, "device": None, "git_commit": None,
                                                         "torch": None}]))

    def _set_aside(self, note: str) -> None:
        self.note = note
        print(f"note: {note}", file=sys.stderr)
        if self.writer:
            self.path.replace(self.path.with_name(self.path.name + ".damaged"))

    def remove(self) -> None:
        """The run is finished: its final checkpoint supersedes this one."""
        if self.writer:
            self.path.unlink(missing_ok=True)

