"""One knowledge-capacity run end to end: knowledge base -> model -> train -> measure -> store.

A run folder's files are listed in moelab/runs/__init__.py (the folder's record in runs/folder.py,
its weights in runs/weights.py); every file is written atomically and fsynced. run.py holds the
orchestration only.
A run whose evaluation failed or was interrupted keeps its checkpoint: rerunning the same config in
the same folder loads it and only evaluates; a run stopped while training resumes from its
mid-run checkpoint (checkpoint.py).

A continued run (a config with [continual], docs/science.md §5) writes the same files for its
phase B; its parent lives in the folder beside it named by the parent's run key (in a sweep, the
parent's own run folder), and is trained there first when it is not finished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from moelab.checkpoint import Checkpointer
from moelab.config import RunConfig, TrainConfig, run_key, save_config, to_dict
from moelab.continual import Replay, forgetting, freeze, grow, phase_b_train, replay_per_exposure
from moelab.distributed import any_rank, is_main, resolve_device, world
from moelab.errors import MoelabError
from moelab.evaluation import fact_routing, measure_capacity, routing_diagnostics
from moelab.evaluation.abstention import abstention_metrics
from moelab.evaluation.capacity import Capacity
from moelab.evaluation.quantization import quantized_capacity
from moelab.io import atomic_write_json, folder_lock
from moelab.knowledge import KnowledgeBase
from moelab.knowledge.base import VALUE_NORMALISATION
from moelab.models import ParamCount, Transformer, count_module, count_params
from moelab.models.moe import choose_dispatch
from moelab.provenance import code_commit, environment
from moelab.runs.folder import CONFIG, WEIGHTS, Metrics, finished_metrics, write_metrics
from moelab.runs.weights import build, load_run, load_weights, resume_weights, save_weights
from moelab.training import TrainResult, train

code_commit()  # the commit of the code imported now, which every run of this process records

DIAGNOSTIC_PARAGRAPHS = 1024


@dataclass
class Plan:
    """What a kind of run trains and measures (`plain_plan`, `continued_plan`); `run_pipeline` does
    the rest, the same for every run."""

    model: Transformer
    data: KnowledgeBase  # what it trains on (for a continued run, B with A replayed)
    train_cfg: TrainConfig
    counts: ParamCount
    vocab_size: int
    measure: Callable[[TrainResult], tuple[Capacity, dict]]  # after training: knowledge, and the kind's own metrics


def execute(cfg: RunConfig, out_dir: str | Path, on_step: Callable[[int, int, float], None] | None = None) -> Metrics:
    """Train and measure one run (a continued one too), write its folder, and return its metrics.
    The folder is locked meanwhile, so no two processes train it at once."""
    out_dir = Path(out_dir)
    if world()[1] > 1:  # torchrun: rank 0 owns the folder, every rank trains (moelab/distributed.py)
        if cfg.continual.active:
            raise MoelabError("continued runs train in one process; run them without torchrun")
        return run_pipeline(cfg, out_dir, on_step if is_main() else None)
    with folder_lock(out_dir):
        return run_pipeline(cfg, out_dir, on_step)


def run_pipeline(cfg: RunConfig, out_dir: Path, on_step: Callable[[int, int, float], None] | None = None) -> Metrics:
    """Every run's one pipeline: prepare its plan, train it (or resume it from its final or its
    mid-run checkpoint), measure it, write metrics.json."""
    start = time.perf_counter()
    torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    plan = (continued_plan if cfg.continual.active else plain_plan)(cfg, out_dir, device, on_step)
    result = resume_weights(cfg, plan.model, out_dir, device)
    if result is None:
        if is_main():
            save_config(cfg, out_dir / CONFIG)
        checkpointer = Checkpointer(out_dir, run_key(cfg), cfg.train.checkpoint_minutes, writer=is_main())
        result = train(plan.model, plan.data, plan.train_cfg, cfg.seed, device, on_step=on_step,
                       checkpointer=checkpointer)
        if is_main():
            save_weights(plan.model, result, out_dir)
        checkpointer.remove()
    if not is_main():  # the other torchrun ranks are done once rank 0 has measured and written
        if any_rank(False):
            raise MoelabError("rank 0 failed while measuring the run (its error says why); this rank stops too")
        return {}
    eval_start = time.perf_counter()
    try:
        capacity, measured = plan.measure(result)
    except BaseException:
        any_rank(True)  # tell the waiting ranks at once, rather than at the process group's timeout
        raise
    metrics = (run_metrics(cfg, plan.train_cfg, plan.counts, result, plan.vocab_size)
               | capacity_metrics(capacity, plan.counts) | measured
               | {"eval_seconds": time.perf_counter() - eval_start, "wall_seconds": time.perf_counter() - start}
               | environment(device) | {"processes": world()[1]})
    write_metrics(out_dir, metrics)
    any_rank(False)  # the other ranks wait for this: measured and written
    return metrics


def plain_plan(cfg: RunConfig, out_dir: Path, device: torch.device, on_step) -> Plan:
    """A run from scratch on its knowledge base: measured for bits, routing, memory use and abstention."""
    kb, model = build(cfg, device)
    batch = cfg.train.eval_batch_size

    def measure(result: TrainResult) -> tuple[Capacity, dict]:
        capacity = measure_capacity(model, kb, batch, device)
        routing, memory_usage = routing_diagnostics(model, kb, DIAGNOSTIC_PARAGRAPHS, cfg.seed + 1, batch, device)
        abstention = abstention_metrics(model, kb, batch, device) if hasattr(kb, "held_out_names") else None
        return capacity, {
            "n_people": kb.n_people,
            "routing": routing,
            "fact_routing": fact_routing(model, kb, batch, device),
            "memory": memory_usage,
            "abstention": abstention,
            "unknown_rows_per_exposure": kb.unknown_per_exposure,
            "omniscience_index": abstention["omniscience_index"] if abstention else None,
            "hallucination_rate": abstention["hallucination_rate"] if abstention else None,
            "continual": None,
        }

    return Plan(model, kb, cfg.train, checked_counts(cfg, model, len(kb.vocab)), len(kb.vocab), measure)


def continued_plan(cfg: RunConfig, out_dir: Path, device: torch.device, on_step) -> Plan:
    """A continued run (docs/science.md §5): its parent (the run without [continual]) is found
    finished in the folder beside this one named by its run key, or trained there first; then
    the parent's model, grown and frozen as asked, trains on knowledge base B, and A and B are
    measured before and after."""
    c = cfg.continual
    parent = cfg.parent()
    parent_dir = out_dir.parent / run_key(parent)
    with folder_lock(parent_dir):
        parent_metrics = finished_metrics(parent, parent_dir) or run_pipeline(parent, parent_dir, on_step)
    kb_a, model = build(parent, device)
    load_weights(model, parent_dir / WEIGHTS, device)
    kb_b = kb_a.new_people(c.new_people, c.data_seed)
    batch = cfg.train.eval_batch_size
    before = {"a": measure_capacity(model, kb_a, batch, device), "b": measure_capacity(model, kb_b, batch, device)}

    torch.manual_seed(cfg.seed + 1)  # the added experts' or memory's initial weights (the parent's seed drew its own)
    grow(model, c)
    counts = checked_counts(cfg, model, len(kb_a.vocab))
    trainable = freeze(model, c.trainable)
    rows = Replay(kb_a, kb_b, replay_per_exposure(c.new_people, c.replay_fraction))

    def measure(result: TrainResult) -> tuple[Capacity, dict]:
        after = {"a": measure_capacity(model, kb_a, batch, device), "b": measure_capacity(model, kb_b, batch, device)}
        routing, memory_usage = routing_diagnostics(model, rows, DIAGNOSTIC_PARAGRAPHS, cfg.seed + 1, batch, device)
        people = {"a": kb_a.n_people, "b": kb_b.n_people}
        both = Capacity(  # the knowledge held over A and B together: A's terms plus B's names and values
            losses={}, bit_terms={f"{kb}.{term}": v for kb in after for term, v in after[kb].bit_terms.items()},
            information_terms={f"{kb}.{term}": v for kb in after for term, v in after[kb].information_terms.items()},
            accuracy=sum(after[kb].accuracy * n for kb, n in people.items()) / sum(people.values()),
            accuracy_per_attribute={})
        continual = {
            "parent_key": run_key(parent),
            "parent_bits": parent_metrics["bits"],
            "new_people": c.new_people,
            "replay_rows_per_exposure": rows.replay,
            "trainable": c.trainable,
            "trainable_params": trainable,
            "added_params": counts.total - count_params(cfg.model, len(kb_a.vocab)).total,
            "steps": result.steps,
            **{f"bits_{kb}_{when}": m[kb].bits for when, m in (("before", before), ("after", after)) for kb in m},
            **{f"recall_{kb}_{when}": m[kb].accuracy for when, m in (("before", before), ("after", after)) for kb in m},
            "information_bits_a": after["a"].information_bits,
            "information_bits_b": after["b"].information_bits,
            "bits_gained_b": after["b"].bits - before["b"].bits,
            "bits_lost_a": before["a"].bits - after["a"].bits,
            "forgetting": forgetting(before["a"].bits, after["a"].bits),
            "losses_a": after["a"].losses,
            "losses_b": after["b"].losses,
        }
        return both, {"n_people": kb_a.n_people + kb_b.n_people, "routing": routing, "memory": memory_usage,
                      "abstention": None, "unknown_rows_per_exposure": kb_a.unknown_per_exposure,
                      "omniscience_index": None, "hallucination_rate": None, "continual": continual}

    return Plan(model, rows, phase_b_train(cfg.train, c), counts, len(kb_a.vocab), measure)


def checked_counts(cfg: RunConfig, model: Transformer, vocab_size: int) -> ParamCount:
    """The accounting of `cfg`'s model, checked against the module itself."""
    counts = count_params(cfg.model, vocab_size, cfg.continual.add_experts, cfg.continual.add_memory)
    if count_module(model) != (counts.total, counts.active):  # a bug here, never the user's
        raise AssertionError(f"accounting {counts.total, counts.active} != module {count_module(model)}")
    return counts


def run_metrics(cfg: RunConfig, train_cfg: TrainConfig, counts: ParamCount, result: TrainResult, vocab_size: int) -> dict:
    """What every run records about its model, its training and itself."""
    moe = cfg.model.moe
    return {
        "name": cfg.name,
        "seed": cfg.seed,
        "data_kind": cfg.data.kind,
        "data_seed": cfg.data.seed,
        "vocab_size": vocab_size,
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
        "exposures": train_cfg.exposures,
        "steps": result.steps,
        "warmup_steps": result.warmup_steps,
        "batch_size": train_cfg.batch_size,
        "lr": train_cfg.lr,
        "weight_decay": train_cfg.weight_decay,
        "tokens_trained": result.tokens,
        "final_loss": result.final_loss,
        "history": result.history,
        "train_seconds": result.seconds,
        "tokens_per_second": result.tokens / result.seconds if result.seconds else 0.0,
        "resumed_from_checkpoint": result.resumed,
        "resumed_at_steps": result.resumed_at,
        "training_segments": result.segments,
        "threads": cfg.train.threads,
        "dtype": train_cfg.dtype,
        "compile": train_cfg.compile,
        "dispatch": training_dispatch(cfg) if cfg.model.is_moe else None,
        "run_key": run_key(cfg),
        "config": to_dict(cfg),
    }


def training_dispatch(cfg: RunConfig) -> str:
    """The expert path training took: model.moe.dispatch, or choose_dispatch's for this device and dtype."""
    if cfg.model.moe.dispatch != "auto":
        return cfg.model.moe.dispatch
    dtype = torch.bfloat16 if cfg.train.dtype == "bf16" else torch.float32
    return choose_dispatch(cfg.model.d_model, cfg.model.moe.expert_width, dtype, resolve_device(cfg.train.device))


def capacity_metrics(capacity: Capacity, counts: ParamCount) -> dict:
    """The knowledge measured: bits (term by term), information, bits per parameter, recall."""
    return {
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
    }


def quantize_run(run_dir: str | Path, bits_list: list[int], group_size: int = 0) -> tuple[Path, list[dict]]:
    """`moelab quantize`: measure a finished run's quantized copies on CPU, write
    quantization.json (or quantization-gG.json) beside it, return its path and the rows."""
    run_dir = Path(run_dir)
    if group_size < 0:
        raise MoelabError(f"--group-size = {group_size}: use 0 (per channel) or a positive group")
    cfg, kb, model = load_run(run_dir)
    try:
        rows = quantized_capacity(model, kb, bits_list, cfg.train.eval_batch_size, torch.device("cpu"), group_size)
    except ValueError as err:
        raise MoelabError(f"--bits/--group-size: {err}") from None
    out_file = run_dir / ("quantization.json" if not group_size else f"quantization-g{group_size}.json")
    rows = merged_quantization_rows(out_file, rows)
    atomic_write_json(out_file, {"run": str(run_dir), "group_size": group_size, "rows": rows})
    return out_file, rows


def fact_routing_of_run(run_dir: str | Path) -> tuple[RunConfig, list[dict]]:
    """`moelab routing`: how a finished run routes its recall values (evaluation/routing.py,
    fact_routing), measured on CPU; its config and one row per MoE layer (none for dense)."""
    cfg, kb, model = load_run(run_dir)
    return cfg, fact_routing(model, kb, cfg.train.eval_batch_size, torch.device("cpu"))


def merged_quantization_rows(path: Path, rows: list[dict]) -> list[dict]:
    """Rows of an earlier `moelab quantize` of this run at other widths kept beside the new ones
    (a new measurement of a width replaces the old), ordered by width, full precision first."""
    try:
        earlier = json.loads(path.read_text())["rows"] if path.exists() else []
    except (json.JSONDecodeError, KeyError, TypeError):
        earlier = []  # a damaged file: the new rows replace it
    key = lambda r: (r["weight_bits"], r["embeddings_full_precision"])  # noqa: E731
    by_key = {key(r): r for r in earlier} | {key(r): r for r in rows}
    return sorted(by_key.values(), key=lambda r: (r["weight_bits"] != 32, r["embeddings_full_precision"],
                                                   -r["weight_bits"]))
