"""The training loop: AdamW (and SparseAdam for memory tables), linear warmup then cosine decay,
a NaN/inf guard, a step history; bf16 autocast (train.dtype) and torch.compile of the step's
forward and loss (train.compile) as options.

The number of steps follows from the exposures asked for: every person's paragraph is seen
`exposures` times (one shuffled pass over the people per exposure, a fresh attribute order and
template each time), so steps = ceil(exposures * n_people / batch_size). A knowledge base with
junk data adds its junk paragraphs to every pass, and the steps grow with them.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from moelab.allocator import reuse_freed_memory
from moelab.checkpoint import Checkpointer, LoopState, stop_reason
from moelab.config import TrainConfig
from moelab.distributed import any_rank, mean_over_ranks, sum_over_ranks_, world
from moelab.errors import MoelabError, RunStopped, TrainingDiverged
from moelab.evaluation.routing import fact_positions, routing_churn, top1_experts
from moelab.knowledge import KnowledgeBase
from moelab.knowledge.base import TrainingBatch
from moelab.models import Transformer
from moelab.provenance import code_commit, device_name


CHURN_PARAGRAPHS = 64  # probe paragraphs for routing churn
CHURN_FACTS = 256  # (person, attribute) questions for fact churn


@dataclass
class TrainResult:
    steps: int
    tokens: int  # predicted tokens seen
    seconds: float
    final_loss: float  # mean language-model loss over the last `log_every` steps
    history: list[dict] = field(default_factory=list)
    warmup_steps: int = 0  # the warmup actually used (see effective_warmup)
    resumed: bool = False  # loaded from the run folder's checkpoint rather than trained now
    resumed_at: list[int] = field(default_factory=list)  # steps a mid-run checkpoint was resumed from
    segments: list[dict] = field(default_factory=list)  # where each stretch of training ran (checkpoint.LoopState)


def n_steps(cfg: TrainConfig, rows_per_exposure: int) -> int:
    return math.ceil(cfg.exposures * rows_per_exposure / cfg.batch_size)


def effective_warmup(steps: int, cfg: TrainConfig) -> int:
    """train.warmup_steps, capped at a tenth of the run so short runs still spend most steps decaying."""
    return min(cfg.warmup_steps, steps // 10)


def learning_rate(step: int, steps: int, cfg: TrainConfig) -> float:
    """Linear warmup over the effective warmup, then cosine decay to lr * min_lr_ratio at the last step."""
    warmup = effective_warmup(steps, cfg)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - 1 - warmup)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def lr_multiplier(groups: frozenset[str], cfg: TrainConfig) -> float:
    """train.router_lr_mult for router weights, train.expert_lr_mult for routed and shared experts
    (memory tables get train.memory_lr_mult in make_optimizer); `groups` from Transformer.parameter_groups."""
    if "routers" in groups:
        return cfg.router_lr_mult
    if "experts" in groups:
        return cfg.expert_lr_mult
    return 1.0


class Optimizer:
    """AdamW over the model, plus SparseAdam over memory tables that have sparse gradients: one
    list of parameter groups (each with its `lr_mult`), one `step`, one `zero_grad`; `step` then
    runs the hooks registered with `after_step` (the MoE balancing, as torchtitan does), also on a
    step with nothing to train."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers
        self.hooks: list[Callable[[], None]] = []

    def after_step(self, hook: Callable[[], None]) -> None:
        self.hooks.append(hook)

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()
        for hook in self.hooks:
            hook()


def make_optimizer(model: Transformer, cfg: TrainConfig, device: torch.device) -> Optimizer:
    """AdamW with weight decay on matrices and expert stacks only, fused where the device allows.
    One parameter group per (weight decay, learning-rate multiplier); each group's `lr_mult`
    scales the scheduled learning rate (with the multipliers at 1 there are just two groups).

    Memory tables (PKM values, PEER experts) get train.memory_lr_mult and no weight decay (as
    Memory Layers at Scale give values a learning rate of their own). With train.memory_optimizer
    = "sparse" this switches their layers to sparse gradients and gives the tables to SparseAdam,
    a lazy Adam that updates only the rows read this step and their moments; "dense" leaves them
    in AdamW, which reads and writes every row and both moments every step."""
    sparse = cfg.memory_optimizer == "sparse"
    for layer in model.memory_modules():
        layer.sparse = sparse
    tables: list[torch.nn.Parameter] = []  # for SparseAdam
    groups: dict[tuple[float, float], dict] = {}
    parameter_groups = model.parameter_groups()
    for name, p in model.named_parameters():
        if not p.requires_grad:  # frozen for continued training: no update, no decay, no moments
            continue
        if "memory" in parameter_groups[name]:  # the memory's slot tables
            if sparse:
                tables.append(p)
                continue
            key = (0.0, cfg.memory_lr_mult)
        else:
            key = (cfg.weight_decay if p.dim() >= 2 else 0.0, lr_multiplier(parameter_groups[name], cfg))
        groups.setdefault(key, {"params": [], "weight_decay": key[0], "lr_mult": key[1]})["params"].append(p)
    groups = sorted(groups.values(), key=lambda g: (g["weight_decay"] == 0.0, g["lr_mult"] != 1.0))
    # Fused AdamW is 3-8x faster than the default on CPU (docs/design.md).
    optimizers: list[torch.optim.Optimizer] = [
        torch.optim.AdamW(list(groups), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=device.type in ("cpu", "cuda"))
    ] if groups else []
    if sparse and tables:
        optimizers.append(torch.optim.SparseAdam([{"params": tables, "lr_mult": cfg.memory_lr_mult}],
                                                 lr=cfg.lr, betas=(cfg.beta1, cfg.beta2)))
    optimizer = Optimizer(optimizers)
    if model.routers():
        optimizer.after_step(model.after_optimizer_step)  # the bias update from this step's loads
    return optimizer


def clip_gradients(parameters: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale all gradients so their joint L2 norm is at most `max_norm`, as clip_grad_norm_, but
    with sparse gradients too (coalesced first: a row read twice appears twice until then).
    Returns the norm before clipping. (Models without sparse gradients keep torch's own
    clip_grad_norm_, so their runs compute exactly what they did before memory layers.)"""
    squares = []
    for p in parameters:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            squares.append(p.grad.values().float().square().sum())
        else:
            squares.append(p.grad.float().square().sum())
    if not squares:
        return torch.zeros(())
    norm = torch.stack(squares).sum().sqrt()
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for p in parameters:
        if p.grad is not None:
            p.grad.mul_(scale.to(p.grad.dtype))
    return norm


def step_losses(forward: Callable, inputs: torch.Tensor, targets: torch.Tensor, bf16: bool = False,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step's forward: the language-model loss (mean cross-entropy over the scored
    targets, in fp32) and the routers' auxiliary loss, under bf16 autocast when asked."""
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits, aux_loss = forward(inputs)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100), aux_loss.float()


def compiled_step_losses(forward: Callable, backend: str = "inductor") -> Callable:
    """`step_losses` of `forward` under torch.compile, as one graph from the tokens to the loss
    (embeddings, norms, residuals, attention, MLPs, routers, the output projection and the
    cross-entropy; backward through the same graph). Routed experts' block paths run eager between
    its pieces (models/moe.py Experts.by_blocks); the gather path is traced. Evaluation stays
    eager. The sums round differently from the eager step's, so compiled runs are runs of their own
    (train.compile is in the run key)."""
    return torch.compile(lambda inputs, targets, bf16: step_losses(forward, inputs, targets, bf16), backend=backend)


def pack_rows(batch: TrainingBatch, pack: int, eos: int) -> TrainingBatch:
    """`pack` consecutive paragraphs per row, [B, T] -> [B / pack, pack (T + 1) - 1]: a row reads
    <bos> p1 <eos> <bos> p2 <eos> ..., so every paragraph but the first follows other text, as a
    question follows passages in a probe's context. The same tokens are predicted as unpacked
    (a <bos> never is); attention is not masked between paragraphs."""
    if pack == 1:
        return batch
    B, T = batch.inputs.shape
    last = batch.targets[:, -1:]
    seq = torch.cat([batch.inputs, torch.where(last == -100, eos, last)], dim=1)  # [B, T + 1] every token
    scored = torch.cat([torch.zeros(B, 1, dtype=torch.bool), batch.targets != -100], dim=1)
    seq, scored = seq.reshape(B // pack, -1), scored.reshape(B // pack, -1)
    return TrainingBatch(seq[:, :-1], torch.where(scored[:, 1:], seq[:, 1:], -100))


def people_order(n_people: int, exposures: int, rng: np.random.Generator, junk: int = 0,
                 unknown: int = 0) -> np.ndarray:
    """One shuffled pass per exposure over the people, `junk` junk slots (-1) and `unknown`
    abstention slots (-2), concatenated."""
    one_pass = np.concatenate([np.arange(n_people), np.full(junk, -1), np.full(unknown, -2)])
    return np.concatenate([rng.permutation(one_pass) for _ in range(exposures)])


def train(
    model: Transformer,
    kb: KnowledgeBase,
    cfg: TrainConfig,
    seed: int,
    device: torch.device,
    on_step: Callable[[int, int, float], None] | None = None,
    checkpointer: Checkpointer | None = None,
) -> TrainResult:
    """Train `model` on `kb` in place. `on_step(step, steps, loss)` is called after every step.
    With a `checkpointer`, training continues from its mid-run checkpoint where there is one,
    writes one whenever it is due, and on a stop request writes one and raises RunStopped."""
    reuse_freed_memory()  # no page faults for the step's large temporaries (allocator.py)
    rng = np.random.default_rng(seed)
    order = people_order(kb.n_people, cfg.exposures, rng, kb.junk_per_exposure, kb.unknown_per_exposure)
    steps = n_steps(cfg, kb.n_people + kb.junk_per_exposure + kb.unknown_per_exposure)
    optimizer = make_optimizer(model, cfg, device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    rank, ranks = world()
    forward = model
    if ranks > 1:  # torchrun: this rank's slice of every global batch (moelab/distributed.py)
        if (cfg.batch_size // cfg.pack) % ranks:
            raise MoelabError(f"train.batch_size = {cfg.batch_size} ({cfg.batch_size // cfg.pack} rows of "
                              f"train.pack = {cfg.pack}) does not split over {ranks} processes; "
                              f"use a multiple of {ranks * cfg.pack}")
        if model.memory_modules():
            raise MoelabError("memory layers have sparse gradients, which DDP does not average; "
                              "train memory models in one process")
        forward = DistributedDataParallel(model, device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None)
    losses = compiled_step_losses(forward) if cfg.compile else functools.partial(step_losses, forward)
    sparse_tables = any(layer.sparse for layer in model.memory_modules())
    model.train()
    # Routing churn: a fixed batch of paragraphs (its own random stream, so training's is untouched)
    # whose tokens' first-choice experts are compared from one history record to the next.
    # Fact churn: the same for the positions that predict a value token of a fixed sample of facts.
    churn_tokens = (kb.training_batch(np.arange(min(CHURN_PARAGRAPHS, kb.n_people)),
                                      np.random.default_rng([seed, 2])).inputs.to(device) if model.routers() else None)
    facts = fact_positions(kb, CHURN_FACTS, seed) if churn_tokens is not None else None
    fact_tokens, fact_mask = (facts[0].to(device), facts[1].flatten().to(device)) if facts is not None else (None, None)

    def fact_top1() -> list[torch.Tensor] | None:
        return None if fact_tokens is None else [e[fact_mask] for e in top1_experts(model, fact_tokens)]

    freeze_step = min((math.ceil(r.cfg.freeze_fraction * steps) for r in model.routers() if r.cfg.freeze_fraction > 0),
                      default=None)
    state = checkpointer.restore(model, optimizer.optimizers) if checkpointer is not None else None
    if state is None:
        state = LoopState(step=0, tokens=0, seconds=0.0, previous_top1=(
            top1_experts(model, churn_tokens) if churn_tokens is not None else None), previous_facts=fact_top1())
    else:
        rng.bit_generator.state = state.data_rng
        if state.previous_facts is None:  # a checkpoint from before fact churn: measured from here on
            state.previous_facts = fact_top1()
    state.segments.append({"from_step": state.step, "device": device_name(device), "git_commit": code_commit(),
                           "torch": torch.__version__})
    start = time.perf_counter() - state.seconds
    for step in range(state.step, steps):
        if freeze_step is not None and step >= freeze_step:  # (again after a resume: requires_grad is not saved)
            model.freeze_routing()
        batch = pack_rows(kb.training_batch(order[step * cfg.batch_size:(step + 1) * cfg.batch_size], rng),
                          cfg.pack, kb.vocab.eos)
        state.tokens += int((batch.targets != -100).sum())
        inputs, targets = batch.inputs[rank::ranks].to(device), batch.targets[rank::ranks].to(device)
        lr = learning_rate(step, steps, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]

        lm_loss, aux_loss = losses(inputs, targets, cfg.dtype == "bf16")
        loss = lm_loss + aux_loss
        loss_value = mean_over_ranks(loss).item()
        if not math.isfinite(loss_value):
            raise TrainingDiverged(
                f"training loss became {loss_value} at step {step + 1}/{steps} (lr {lr:.3g}); "
                "lower train.lr, raise train.warmup_steps or keep train.grad_clip on"
            )
        if ranks > 1:  # loads of the global batch, for the bias and the record
            for router in model.routers():
                sum_over_ranks_(router.load)
        logged = (step + 1) % cfg.log_every == 0 or step + 1 == steps
        diagnostics = [r.diagnostics() for r in model.routers()] if logged else []  # before the step clears the loads
        if parameters:  # with every parameter frozen the run only measures B's loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                if sparse_tables:
                    clip_gradients(parameters, cfg.grad_clip)
                else:
                    torch.nn.utils.clip_grad_norm_(parameters, cfg.grad_clip)
        optimizer.step()  # and its hooks: the auxiliary-loss-free bias update, the loads cleared

        state.recent.append(mean_over_ranks(lm_loss).item())
        last_loss = state.recent[-1]
        if logged:
            record = {"step": step + 1, "lr": lr, "loss": sum(state.recent) / len(state.recent),
                      "aux_loss": aux_loss.item()}
            if diagnostics:
                record["max_violation"] = max(d["max_violation"] for d in diagnostics)
            if any("assignment_agreement" in d for d in diagnostics):
                record["assignment_agreement"] = [d.get("assignment_agreement") for d in diagnostics]
            if state.previous_top1 is not None:
                current = top1_experts(model, churn_tokens)
                record["churn"] = routing_churn(state.previous_top1, current)
                state.previous_top1 = current
            if state.previous_facts is not None:
                current = fact_top1()
                record["fact_churn"] = routing_churn(state.previous_facts, current)
                state.previous_facts = current
            state.history.append(record)
            state.final_loss = record["loss"]
            state.recent = []
        if on_step is not None:
            on_step(step + 1, steps, last_loss)
        if checkpointer is not None and step + 1 < steps and any_rank(checkpointer.due()):
            state.step, state.seconds, state.data_rng = step + 1, time.perf_counter() - start, rng.bit_generator.state
            checkpointer.save(model, optimizer.optimizers, state)
            if any_rank(stop_reason() is not None):
                raise RunStopped(f"stopped ({stop_reason() or 'another process was asked to'}) at step "
                                 f"{step + 1:,}/{steps:,}; the checkpoint is {checkpointer.path}")
    return TrainResult(steps=steps, tokens=state.tokens, seconds=time.perf_counter() - start,
                       final_loss=state.final_loss, history=state.history,
                       warmup_steps=effective_warmup(steps, cfg),
                       resumed_at=[segment["from_step"] for segment in state.segments[1:]], segments=state.segments)
