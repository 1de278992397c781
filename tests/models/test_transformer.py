"""The decoder itself: which group each parameter belongs to."""


def test_parameter_groups_come_from_the_modules_and_cover_every_parameter():
    import dataclasses

    from moelab.config import ContinualConfig, MemoryConfig
    from moelab.continual import grow
    from moelab.models import Transformer
    from tests.conftest import small_config

    cfg = small_config(n_experts=4, top_k=1, expert_width=32, n_shared_experts=1, router="stable",
                       freeze_fraction=0.1)
    model = Transformer(cfg.model, 40)
    grow(model, ContinualConfig(new_people=10, add_experts=2))
    groups = model.parameter_groups()
    named = dict(model.named_parameters())
    assert set(named) <= set(groups) and all(groups[n] for n in named)  # every parameter has a group
    assert groups["embed.weight"] == {"embeddings"} and groups["norm.weight"] == {"norms"}
    assert groups["blocks.0.attn.q_proj.weight"] == {"attention"}
    assert groups["blocks.0.ffn.shared.gate_proj.weight"] == {"experts"}  # shared experts are experts
    assert groups["blocks.0.ffn.router.token_router.embed.weight"] == {"routers"}  # an embedding, but a router's
    assert groups["blocks.1.added_experts.experts.w_in"] == {"experts", "new"}
    assert groups["blocks.1.added_experts.router.gate.weight"] == {"routers", "new"}

    memory = small_config()
    memory = dataclasses.replace(memory, model=dataclasses.replace(
        memory.model, memory=MemoryConfig(kind="pkm", n_keys=6, heads=2, top_k=4, key_dim=8)))
    from moelab.config import resolve
    model = Transformer(resolve(memory).model, 40)
    groups = model.parameter_groups()
    layer = model.memory_modules()[0]
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(groups[names[id(t)]] == {"memory"} for t in layer.tables())
    assert any(g == {"memory_retrieval"} for g in groups.values())  # queries and sub-keys
