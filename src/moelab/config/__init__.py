"""Run configuration: dataclasses, TOML load/save, and validation with field-naming errors.

One module per concern: `sections` (the dataclasses, each validating itself, and the values
each string field may take), `convert` (TOML dicts to dataclasses with type checks), `keys` (run
keys, from each field's key membership), `files` (resolve, TOML files, presets). Import from
`moelab.config`, which gathers them.

A run is described by one `RunConfig`; its TOML form mirrors the dataclasses:

    seed = 0
    [data]            # the synthetic knowledge base
    [model]           # the decoder LM
    [model.moe]       # its feed-forward: n_experts = 0 means dense
    [model.memory]    # product-key memory layers (PKM or PEER), replacing or beside the feed-forward
    [train]           # optimisation and exposures
    [continual]       # optional: continue this run on a second knowledge base of new people

Every error names the dotted field (e.g. `model.moe.top_k`) and what would fix it.
"""

from moelab.config.convert import field_types, from_dict, to_dict
from moelab.config.files import load_config, load_preset, preset_names, read_toml, resolve, save_config
from moelab.config.keys import (KEY_FIELDS_IF_SET, KEY_SCHEMA, NOT_IN_RUN_KEY, RUN_KEY_FIELDS, get_path,
                                key_membership, run_key)
from moelab.config.sections import (
    DataConfig, MoEConfig, MemoryConfig, ModelConfig, TrainConfig, ContinualConfig, RunConfig, KINDS, MLPS,
    SCORES, ROUTERS, ROUTER_GATES, BALANCES, DISPATCHES, MEMORY_KINDS, MEMORY_PLACEMENTS, DEVICES, DTYPES,
    MEMORY_OPTIMIZERS, TRAINABLE_GROUPS, IF_SET, NEVER, REASONING_KINDS, DataKind, MLPKind, ScoreFunction,
    RouterKind, RouterGate, Balance, Dispatch, MemoryKind, MemoryPlacement, DeviceName, DType, MemoryOptimizer,
    TrainableGroup, require,
)

__all__ = [  # what `from moelab.config import ...` offers
    "DataConfig", "MoEConfig", "MemoryConfig", "ModelConfig", "TrainConfig", "ContinualConfig", "RunConfig",
    "KINDS", "MLPS", "SCORES", "ROUTERS", "ROUTER_GATES", "BALANCES", "DISPATCHES", "MEMORY_KINDS", "MEMORY_PLACEMENTS",
    "DEVICES", "DTYPES", "MEMORY_OPTIMIZERS", "TRAINABLE_GROUPS", "IF_SET", "NEVER", "REASONING_KINDS",
    "DataKind", "MLPKind", "ScoreFunction", "RouterKind", "RouterGate", "Balance", "Dispatch", "MemoryKind",
    "MemoryPlacement", "DeviceName", "DType", "MemoryOptimizer", "TrainableGroup", "require", "field_types",
    "from_dict", "to_dict", "load_config", "load_preset", "preset_names", "read_toml", "resolve",
    "save_config", "KEY_FIELDS_IF_SET", "KEY_SCHEMA", "NOT_IN_RUN_KEY", "RUN_KEY_FIELDS",
    "get_path", "key_membership", "run_key",
]
