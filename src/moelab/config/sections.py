"""The config's sections as dataclasses: every field with its default, its run-key membership
(metadata IF_SET or NEVER) and its check (each section's `validate`), and the values a string
field may take (one Literal each)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal, get_args

from moelab.errors import ConfigError


# The values a string field may take, one Literal each: the annotation, and the tuple validation
# checks and names in its message.
DataKind = Literal["biod", "bios", "sort", "twohop"]
MLPKind = Literal["gelu", "swiglu"]
ScoreFunction = Literal["softmax", "sigmoid"]
RouterKind = Literal["learned", "hash", "hash_gated", "token", "cosine", "stable"]
RouterGate = Literal["score", "unit"]
Balance = Literal["none", "base"]
Dispatch = Literal["auto", "padded", "loop", "gather"]
MemoryKind = Literal["none", "pkm", "peer"]
MemoryPlacement = Literal["replace", "beside"]
DeviceName = Literal["cpu", "cuda", "auto"]
DType = Literal["fp32", "bf16"]
MemoryOptimizer = Literal["sparse", "dense"]
TrainableGroup = Literal["all", "embeddings", "attention", "experts", "routers", "memory", "new"]
KINDS, MLPS, SCORES, ROUTERS = get_args(DataKind), get_args(MLPKind), get_args(ScoreFunction), get_args(RouterKind)
ROUTER_GATES, BALANCES, MEMORY_KINDS = get_args(RouterGate), get_args(Balance), get_args(MemoryKind)
DISPATCHES = get_args(Dispatch)
MEMORY_PLACEMENTS, DEVICES, DTYPES = get_args(MemoryPlacement), get_args(DeviceName), get_args(DType)
MEMORY_OPTIMIZERS, TRAINABLE_GROUPS = get_args(MemoryOptimizer), get_args(TrainableGroup)

# How a config field takes part in a run's key (`run_key`), as the field's metadata; a field
# without it is in every key. IF_SET: fields added after stores held runs, whose defaults reproduce
# what runs did before them: in the key only when set to something else, so earlier runs keep their
# keys (these defaults are pinned: changing one needs KEY_SCHEMA + 1). NEVER: where and how a run
# executes, or what it is called, but not what it computes.
IF_SET = {"run_key": "if_set"}
NEVER = {"run_key": "never"}


def require(ok: bool, message: str) -> None:
    """A ConfigError with `message` unless `ok`: every config check, here and in the export."""
    if not ok:
        raise ConfigError(message)


@dataclass
class DataConfig:
    """The synthetic knowledge base (docs/science.md §2).

    bioD uses every field; bioS uses `n_people`, `name_slots` and `name_vocab` (its six attributes
    have fixed value sets). Names are `name_slots` tokens, each from `name_vocab` symbols.
    """

    kind: DataKind = "biod"  # "biod" (compact, default), "bios" (templated sentences); reasoning: "sort", "twohop"
    n_people: int = 2000  # N
    name_slots: int = 3  # tokens per name
    name_vocab: int = 64  # symbols per name slot: N0 = name_vocab ** name_slots
    n_attributes: int = 4  # K (bioD)
    value_chunks: int = 2  # C: chunks per value (bioD)
    chunk_length: int = 2  # L: tokens per chunk (bioD)
    diversity: int = 64  # D: distinct chunks per attribute (bioD)
    value_vocab: int = 64  # T: value-token alphabet (bioD); sort: the numbers lists are drawn from
    seed: int = 0  # the knowledge base's own seed, so model seeds can vary over fixed facts
    graph_nodes: int = 16  # twohop: node symbols per graph
    graph_hops: int = 2  # twohop: hops from the query node to the answer
    list_length: int = 16  # sort: numbers per list
    junk_fraction: float = 0.0  # share of training paragraphs about throwaway people, each seen once (bioD)
    domain_token: bool = False  # mark useful paragraphs (and probes) with a <useful> token after <bos> (bioD)
    unknown_fraction: float = 0.0  # share of training paragraphs about people not in the base, every value <unknown> (bioD)

    def validate(self) -> None:
        """This section's fields and their cross-field rules (a ConfigError names the first at fault)."""
        require(self.kind in KINDS, f"data.kind = {self.kind!r}: use one of {', '.join(KINDS)}")
        if self.kind == "sort":
            require(self.list_length >= 2, f"data.list_length = {self.list_length}: need at least 2 numbers to sort")
        if self.kind == "twohop":
            require(self.graph_nodes >= 3, f"data.graph_nodes = {self.graph_nodes}: need at least 3 nodes")
            require(self.graph_hops >= 1, f"data.graph_hops = {self.graph_hops}: must be at least 1")
        for name in ("n_people", "name_slots", "name_vocab", "n_attributes", "value_chunks",
                     "chunk_length", "diversity", "value_vocab"):
            value = getattr(self, name)
            require(value >= 1, f"data.{name} = {value}: must be a positive integer")
        n0 = self.name_vocab**self.name_slots
        require(self.kind in REASONING_KINDS or self.n_people <= n0 // 2,
                 f"data.n_people = {self.n_people} needs at least twice as many possible names "
                 f"(name_vocab ** name_slots = {n0}); raise data.name_vocab or data.name_slots")
        require(0.0 <= self.junk_fraction < 1.0, f"data.junk_fraction = {self.junk_fraction}: must be in [0, 1)")
        require(0.0 <= self.unknown_fraction < 1.0, f"data.unknown_fraction = {self.unknown_fraction}: must be in [0, 1)")
        require(self.junk_fraction + self.unknown_fraction < 1.0,
                f"data.junk_fraction + data.unknown_fraction = {self.junk_fraction + self.unknown_fraction}: "
                "together they must leave room for the real people (below 1)")
        if self.kind != "biod":
            require(self.junk_fraction == 0.0 and not self.domain_token and self.unknown_fraction == 0.0,
                     "data.junk_fraction, data.domain_token and data.unknown_fraction are implemented for bioD only "
                     f"(data.kind = {self.kind!r})")
        if self.kind == "biod":
            require(self.diversity <= self.value_vocab**self.chunk_length,
                     f"data.diversity = {self.diversity} exceeds the {self.value_vocab ** self.chunk_length} "
                     "distinct chunks value_vocab ** chunk_length allows; lower data.diversity")
            require(self.diversity >= 2, f"data.diversity = {self.diversity}: need at least 2 values")


REASONING_KINDS = ("sort", "twohop")  # tasks with no facts to store: fresh examples, held-out accuracy


@dataclass
class MoEConfig:
    """The feed-forward layer's expert structure. `n_experts = 0` means a dense MLP of width d_ff."""

    n_experts: int = 0  # routed experts E; 0 = dense
    top_k: int = 1  # experts per token k
    expert_width: int = 0  # hidden width of one expert; 0 = model.d_ff (coarse experts)
    n_shared_experts: int = 0  # always-active experts of expert_width each (DeepSeekMoE)
    score: ScoreFunction = "softmax"  # router score function: "softmax" or "sigmoid"
    renormalize: bool = False  # renormalise gates over the selected experts (only for top_k >= 2)
    aux_loss_weight: float = 0.0  # Switch load-balancing loss E * sum_i f_i P_i
    z_loss_weight: float = 0.0  # router z-loss mean(logsumexp(logits)^2)
    bias_update_rate: float = 0.0  # DeepSeek-V3 auxiliary-loss-free bias step gamma; 0 = off
    first_dense_layers: int = 0  # leading layers that keep a dense MLP
    router: RouterKind = "learned"  # how experts are chosen: one of ROUTERS (models/moe.py, Router)
    gate: RouterGate = field(default="score", metadata=IF_SET)  # the selected experts' weight: "score" (the router's score) or "unit" (1, straight-through)
    router_dim: int = field(default=8, metadata=IF_SET)  # the "token" and "stable" routers' embedding width, the "cosine" router's projection
    freeze_fraction: float = field(default=0.0, metadata=IF_SET)  # routing frozen after this fraction of the steps (0 = never; "stable": stage 1)
    balance: Balance = field(default="none", metadata=IF_SET)  # "none", or "base": balanced top-1 assignment in training, greedy at evaluation
    capacity_factor: float = field(default=0.0, metadata=IF_SET)  # > 0: each expert takes at most cf * tokens * k / E in training, the rest are dropped
    dispatch: Dispatch = field(default="auto", metadata=IF_SET)  # the experts' path: "auto" (models/moe.py choose_dispatch), "padded", "loop", or "gather" (one batched product per row with its expert's weights: fastest for many narrow experts; the last bits differ)

    def validate(self, n_layers: int) -> None:
        """This section's fields given the model's layer count."""
        require(self.n_experts >= 0, f"model.moe.n_experts = {self.n_experts}: must be >= 0 (0 = dense)")
        if self.n_experts > 0:
            require(1 <= self.top_k <= self.n_experts,
                     f"model.moe.top_k = {self.top_k} must be between 1 and model.moe.n_experts = "
                     f"{self.n_experts}; lower top_k or add experts")
            require(self.expert_width >= 0,
                     f"model.moe.expert_width = {self.expert_width}: must be >= 0 (0 = model.d_ff)")
            require(self.n_shared_experts >= 0,
                     f"model.moe.n_shared_experts = {self.n_shared_experts}: must be >= 0")
            require(self.score in SCORES,
                     f"model.moe.score = {self.score!r}: use 'softmax' or 'sigmoid'")
            require(not (self.renormalize and self.top_k == 1),
                     "model.moe.renormalize = true with top_k = 1 makes every gate exactly 1, so the "
                     "router gets no gradient from the task; set renormalize = false for top-1")
            for name in ("aux_loss_weight", "z_loss_weight", "bias_update_rate"):
                value = getattr(self, name)
                require(value >= 0 and math.isfinite(value),
                         f"model.moe.{name} = {value}: must be a finite number >= 0")
            require(self.router in ROUTERS, f"model.moe.router = {self.router!r}: use one of {', '.join(ROUTERS)}")
            if self.router in ("hash", "hash_gated", "stable"):
                require(self.top_k == 1, f"model.moe.router = {self.router!r} sends each token to one expert; set "
                                        f"model.moe.top_k = 1 (not {self.top_k})")
            if self.router == "hash":
                require(self.bias_update_rate == 0 and self.aux_loss_weight == 0 and self.z_loss_weight == 0,
                        "model.moe.router = 'hash' has no router to balance: set model.moe.aux_loss_weight, "
                        "z_loss_weight and bias_update_rate to 0")
                require(self.gate == "score" and self.freeze_fraction == 0 and self.balance == "none",
                        "model.moe.router = 'hash' has no router: its gate is 1 and its routing never changes; leave "
                        "model.moe.gate, freeze_fraction and balance at their defaults (or use router = 'hash_gated')")
            require(self.gate in ROUTER_GATES, f"model.moe.gate = {self.gate!r}: use one of {', '.join(ROUTER_GATES)}")
            require(self.router_dim >= 1, f"model.moe.router_dim = {self.router_dim}: must be a positive integer")
            require(0 <= self.freeze_fraction < 1, f"model.moe.freeze_fraction = {self.freeze_fraction}: must be in [0, 1) "
                                                  "(0 = never frozen)")
            require(self.router != "stable" or self.freeze_fraction > 0,
                    "model.moe.router = 'stable' learns its routing for a first stage, then freezes it: set "
                    "model.moe.freeze_fraction to that stage's share of the steps (StableMoE: 0.1)")
            require(self.balance in BALANCES, f"model.moe.balance = {self.balance!r}: use one of {', '.join(BALANCES)}")
            require(self.balance == "none" or (self.top_k == 1 and self.router in ("learned", "cosine", "token")),
                    f"model.moe.balance = {self.balance!r} assigns each token one expert chosen by its router: use it with "
                    "top_k = 1 and router 'learned', 'cosine' or 'token'")
            require(self.dispatch in DISPATCHES,
                    f"model.moe.dispatch = {self.dispatch!r}: use one of {', '.join(DISPATCHES)}")
            require(self.capacity_factor == 0 or self.capacity_factor >= 1,
                    f"model.moe.capacity_factor = {self.capacity_factor}: 0 (dropless) or at least 1")
            require(0 <= self.first_dense_layers < n_layers,
                     f"model.moe.first_dense_layers = {self.first_dense_layers}: must be below "
                     f"model.n_layers = {n_layers} (use n_experts = 0 for a dense model)")


@dataclass
class MemoryConfig:
    """Product-key memory layers (docs/science.md §4, "Memory layers"). `kind = "none"` means no memory.

    A layer holds N = n_keys ** 2 slots: PKM slots are value rows [N, d] (Lample et al. 2019), PEER
    slots single-neuron experts (He 2024). Each of `heads` queries scores its two tables of n_keys
    sub-keys and reads its `top_k` best slots.
    """

    kind: MemoryKind = "none"  # "none", "pkm" or "peer"
    layers: list[int] = field(default_factory=list)  # layers with a memory; empty = every layer
    placement: MemoryPlacement = "replace"  # "replace" the layer's feed-forward, or add the memory "beside" it
    n_keys: int = 32  # sub-keys per half: N = n_keys ** 2 slots
    heads: int = 4  # retrieval heads (their slot reads are summed)
    top_k: int = 8  # slots each head reads per token
    key_dim: int = 32  # query and product-key dimension per head (two halves of key_dim / 2)

    @property
    def slots(self) -> int:
        return self.n_keys**2

    def validate(self, m: ModelConfig) -> None:
        """The memory layers' fields, against the model they sit in."""
        mem = self
        require(mem.kind in MEMORY_KINDS, f"model.memory.kind = {mem.kind!r}: use one of {', '.join(MEMORY_KINDS)}")
        if mem.kind == "none":
            return
        require(mem.placement in MEMORY_PLACEMENTS,
                f"model.memory.placement = {mem.placement!r}: use one of {', '.join(MEMORY_PLACEMENTS)}")
        require(all(0 <= i < m.n_layers for i in mem.layers) and len(set(mem.layers)) == len(mem.layers),
                f"model.memory.layers = {mem.layers}: give distinct layer indices in [0, {m.n_layers - 1}] "
                "(or [] for every layer)")
        for name in ("n_keys", "heads", "top_k", "key_dim"):
            value = getattr(mem, name)
            require(value >= 1, f"model.memory.{name} = {value}: must be a positive integer")
        require(mem.top_k <= mem.n_keys,
                f"model.memory.top_k = {mem.top_k} exceeds model.memory.n_keys = {mem.n_keys}: each half "
                "keeps its top_k sub-keys, so raise n_keys or lower top_k")
        require(mem.key_dim % 2 == 0,
                f"model.memory.key_dim = {mem.key_dim}: must be even (the query splits into two halves)")
        require(not m.is_moe, f"model.memory.kind = {mem.kind!r} with model.moe.n_experts = {m.moe.n_experts}: "
                              "a model has memory layers or routed experts, not both; set one of them off")


@dataclass
class ModelConfig:
    """A pre-norm decoder-only transformer with RoPE."""

    d_model: int = 48  # width of the residual stream
    n_layers: int = 2  # decoder blocks
    n_heads: int = 4  # attention heads (d_model / n_heads must be even: RoPE)
    d_ff: int = 192  # dense MLP hidden width
    mlp: MLPKind = "gelu"  # "gelu" or "swiglu"
    tie_embeddings: bool = True  # the output head shares the token embedding
    qk_norm: bool = False  # RMSNorm on queries and keys per head (Qwen3)
    rope_theta: float = 10000.0  # RoPE base
    moe: MoEConfig = field(default_factory=MoEConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    @property
    def is_moe(self) -> bool:
        return self.moe.n_experts > 0

    def memory_layers(self) -> list[int]:
        """The layers that carry a memory (none unless memory.kind is set)."""
        if self.memory.kind == "none":
            return []
        return sorted(self.memory.layers) if self.memory.layers else list(range(self.n_layers))

    def ffn_layers(self) -> list[int]:
        """The layers that keep their feed-forward (dense or MoE): all but replaced memory layers."""
        replaced = set(self.memory_layers()) if self.memory.placement == "replace" else set()
        return [i for i in range(self.n_layers) if i not in replaced]

    def validate(self) -> None:
        """This section's fields, its experts' (MoEConfig.validate) and its memory's."""
        for name in ("d_model", "n_layers", "n_heads", "d_ff"):
            value = getattr(self, name)
            require(value >= 1, f"model.{name} = {value}: must be a positive integer")
        require(self.d_model % self.n_heads == 0,
                 f"model.d_model = {self.d_model} is not divisible by model.n_heads = {self.n_heads}; "
                 "pick n_heads that divides d_model")
        require((self.d_model // self.n_heads) % 2 == 0,
                 f"model.d_model / model.n_heads = {self.d_model // self.n_heads}: RoPE needs an even head "
                 "dimension; change d_model or n_heads")
        require(self.mlp in MLPS, f"model.mlp = {self.mlp!r}: use 'gelu' or 'swiglu'")
        require(self.rope_theta > 0, f"model.rope_theta = {self.rope_theta}: must be positive")
        self.moe.validate(self.n_layers)
        self.memory.validate(self)


@dataclass
class TrainConfig:
    """Optimisation. The step count follows from exposures: ceil(exposures * n_people / batch_size)."""

    exposures: int = 100  # times each person's paragraph is seen
    batch_size: int = 32  # paragraphs per step
    lr: float = 1e-2  # peak learning rate (after warmup, cosine decay)
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100  # linear warmup steps
    weight_decay: float = 0.01  # AdamW weight decay on matrices and expert stacks
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.98  # AdamW beta2
    grad_clip: float = 1.0  # 0 = off
    threads: int = field(default=1, metadata=NEVER)  # torch threads for this run; tiny models are fastest single-threaded
    device: DeviceName = field(default="cpu", metadata=NEVER)  # "cpu", "cuda" or "auto"
    eval_batch_size: int = field(default=1024, metadata=NEVER)  # paragraphs per evaluation batch (memory, not results)
    log_every: int = field(default=100, metadata=NEVER)  # steps between history records
    router_lr_mult: float = 1.0  # the routers' learning rate is lr times this
    expert_lr_mult: float = 1.0  # the routed and shared experts' learning rate is lr times this
    memory_lr_mult: float = 1.0  # the memory tables' (PKM values, PEER experts) learning rate is lr times this
    memory_optimizer: MemoryOptimizer = "sparse"  # memory tables: "sparse" (sparse gradients, lazy Adam on the rows read) or "dense" (AdamW)
    dtype: DType = field(default="fp32", metadata=IF_SET)  # "fp32", or "bf16": autocast matrix products, fp32 weights, optimizer state, loss and bits
    compile: bool = field(default=False, metadata=IF_SET)  # torch.compile the training step's forward and loss as one graph (routed experts eager except `dispatch = "gather"`; evaluation eager)
    pack: int = field(default=1, metadata=IF_SET)  # paragraphs per training row: > 1 puts paragraphs after other text (training.pack_rows)
    checkpoint_minutes: float = field(default=10.0, metadata=NEVER)  # a resumable mid-run checkpoint at most this often (0 = none; checkpoint.py)

    def validate(self) -> None:
        """This section's fields."""
        for name in ("exposures", "batch_size", "threads", "eval_batch_size", "log_every", "pack"):
            value = getattr(self, name)
            require(value >= 1, f"train.{name} = {value}: must be a positive integer")
        require(self.batch_size % self.pack == 0, f"train.batch_size = {self.batch_size} is not a multiple of train.pack = "
                                            f"{self.pack}: a step packs its paragraphs {self.pack} to a row")
        require(self.warmup_steps >= 0, f"train.warmup_steps = {self.warmup_steps}: must be >= 0")
        require(self.lr > 0 and math.isfinite(self.lr), f"train.lr = {self.lr}: must be a positive number")
        require(0 <= self.min_lr_ratio <= 1, f"train.min_lr_ratio = {self.min_lr_ratio}: must be in [0, 1]")
        require(self.weight_decay >= 0, f"train.weight_decay = {self.weight_decay}: must be >= 0")
        require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1,
                 f"train.beta1/beta2 = {self.beta1}/{self.beta2}: each must be in [0, 1)")
        require(self.grad_clip >= 0, f"train.grad_clip = {self.grad_clip}: must be >= 0 (0 = off)")
        require(self.checkpoint_minutes >= 0 and math.isfinite(self.checkpoint_minutes),
                f"train.checkpoint_minutes = {self.checkpoint_minutes}: must be a number of minutes >= 0 (0 = no mid-run checkpoints)")
        for name in ("router_lr_mult", "expert_lr_mult", "memory_lr_mult"):
            value = getattr(self, name)
            require(value > 0 and math.isfinite(value), f"train.{name} = {value}: must be a positive number")
        require(self.device in DEVICES,
                 f"train.device = {self.device!r}: use 'cpu', 'cuda' or 'auto'")
        require(self.dtype in DTYPES, f"train.dtype = {self.dtype!r}: use one of {', '.join(DTYPES)}")
        require(self.memory_optimizer in MEMORY_OPTIMIZERS,
                f"train.memory_optimizer = {self.memory_optimizer!r}: use 'sparse' or 'dense'")


@dataclass
class ContinualConfig:
    """Learning after deployment (docs/science.md §5): the run described by data, model and train
    (its *parent*, knowledge base A) is trained first, or found finished in the folder beside this
    run's named by its run key; then it trains on knowledge base B: `new_people` people who are not
    in A, with A's attributes and value sets and values drawn with B's own seed."""

    new_people: int = field(default=0, metadata=IF_SET)  # people in B; 0 = a plain run, not a continued one
    data_seed: int = field(default=1, metadata=IF_SET)  # B's names and values
    exposures: int = field(default=100, metadata=IF_SET)  # passes over B
    lr: float = field(default=3e-3, metadata=IF_SET)  # peak learning rate on B (warmup, then cosine decay, as train.*)
    warmup_steps: int = field(default=100, metadata=IF_SET)  # linear warmup steps on B
    min_lr_ratio: float = field(default=0.1, metadata=IF_SET)  # cosine decays to continual.lr * min_lr_ratio
    replay_fraction: float = field(default=0.0, metadata=IF_SET)  # share of B's training rows that are paragraphs about A's people
    # Parameter groups that may change: "all", or any of "embeddings", "attention", "experts"
    # (routed and shared), "routers", "memory" (the slot tables), "new" (added experts or memory); [] = none.
    trainable: list[TrainableGroup] = field(default_factory=lambda: ["all"], metadata=IF_SET)  # parameter groups that train on B: any of TRAINABLE_GROUPS ("all", "embeddings", "attention", ...; [] = none)
    add_experts: int = field(default=0, metadata=IF_SET)  # fresh experts in every MoE layer, a routed group of their own (outputs 0 at first)
    add_memory: bool = field(default=False, metadata=IF_SET)  # a fresh memory of the same size beside every memory layer (outputs 0 at first)

    @property
    def active(self) -> bool:
        return self.new_people > 0

    def validate(self, data: DataConfig, m: ModelConfig) -> None:
        """The continued run's fields, against the knowledge base and model it continues."""
        c = self
        if c == ContinualConfig():
            return
        require(c.new_people >= 1, f"continual.new_people = {c.new_people}: set the people of knowledge base B "
                                   "(a positive integer) for a continued run, or remove the [continual] section")
        require(data.kind == "biod", f"continual runs are implemented for bioD only (data.kind = {data.kind!r})")
        free = data.name_vocab ** data.name_slots - data.n_people
        require(c.new_people <= free // 4,
                f"continual.new_people = {c.new_people}: only {free} names are free after A's people; use at most "
                f"{free // 4}, or raise data.name_vocab")
        require(c.exposures >= 1, f"continual.exposures = {c.exposures}: must be a positive integer")
        require(c.lr > 0 and math.isfinite(c.lr), f"continual.lr = {c.lr}: must be a positive number")
        require(c.warmup_steps >= 0, f"continual.warmup_steps = {c.warmup_steps}: must be >= 0")
        require(0 <= c.min_lr_ratio <= 1, f"continual.min_lr_ratio = {c.min_lr_ratio}: must be in [0, 1]")
        require(0 <= c.replay_fraction < 1, f"continual.replay_fraction = {c.replay_fraction}: must be in [0, 1)")
        unknown = [g for g in c.trainable if g not in TRAINABLE_GROUPS]
        require(not unknown, f"continual.trainable: unknown group {unknown[0] if unknown else ''!r}; "
                             f"use any of {', '.join(TRAINABLE_GROUPS)} (or [] to train nothing)")
        require("all" not in c.trainable or len(c.trainable) == 1,
                f"continual.trainable = {c.trainable}: 'all' already includes every group; give it alone")
        require(c.add_experts >= 0, f"continual.add_experts = {c.add_experts}: must be >= 0")
        require(c.add_experts == 0 or m.is_moe,
                f"continual.add_experts = {c.add_experts} needs an MoE model (model.moe.n_experts > 0)")
        require(c.add_experts == 0 or c.add_experts >= m.moe.top_k,
                f"continual.add_experts = {c.add_experts}: the added group routes each token to top_k = "
                f"{m.moe.top_k} of its experts, so add at least that many")
        require(not c.add_memory or m.memory.kind != "none",
                "continual.add_memory = true needs a model with memory layers (model.memory.kind)")
        missing = {"experts": (m.is_moe, "the model has no experts (model.moe.n_experts = 0)"),
                   "routers": (m.is_moe and m.moe.router == "learned", "the model has no learned router"),
                   "memory": (m.memory.kind != "none", "the model has no memory layer (model.memory.kind = 'none')"),
                   "new": (c.add_experts > 0 or c.add_memory, "nothing is added (continual.add_experts = 0, add_memory = false)")}
        for group in c.trainable:
            present, why = missing.get(group, (True, ""))
            require(present, f"continual.trainable includes {group!r} but {why}")


@dataclass
class RunConfig:
    name: str = field(default="run", metadata=NEVER)  # a label for tables and folders
    seed: int = 0  # model initialisation and data order
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)

    def parent(self) -> RunConfig:
        """The run a continued run starts from: this config without its continual part."""
        return dataclasses.replace(self, continual=ContinualConfig())

    def validate(self) -> None:
        """Check every field and cross-field rule, section by section (each section's own
        `validate`); a ConfigError names the first field at fault. Pure: nothing is changed
        (files.resolve fills defaults)."""
        for name, value in (("seed", self.seed), ("data.seed", self.data.seed)):  # NumPy's generators take seeds >= 0
            require(0 <= value < 2**63, f"{name} = {value}: must be an integer from 0 to 2**63 - 1")
        self.data.validate()
        self.model.validate()
        self.continual.validate(self.data, self.model)
        self.train.validate()
