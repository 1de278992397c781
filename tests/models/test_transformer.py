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


def test_generate_is_greedy_reports_each_choices_probability_and_stops_when_asked():
    import torch

    from moelab.models import Transformer
    from tests.conftest import small_config

    torch.manual_seed(0)
    model = Transformer(small_config().model, 30).eval()
    prompts = torch.randint(0, 30, (3, 5))
    tokens, probabilities = model.generate(prompts, 4)
    assert tokens.shape == (3, 9) and probabilities.shape == (3, 4) and probabilities.dtype == torch.float64
    assert torch.equal(tokens[:, :5], prompts)
    logits, _ = model(tokens[:, :-1])
    for t in range(4):  # each new token is the argmax after everything before it, with its probability
        step = logits[:, 4 + t].float()
        assert torch.equal(tokens[:, 5 + t], step.argmax(-1))
        torch.testing.assert_close(probabilities[:, t], step.softmax(-1).max(-1).values.double())
    short, chosen = model.generate(prompts, 4, stop=lambda new: new.shape[1] == 2)
    assert short.shape == (3, 7) and chosen.shape == (3, 2) and torch.equal(short, tokens[:, :7])
