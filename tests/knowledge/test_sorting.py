import numpy as np
import pytest
import torch

from moelab.config import DataConfig, ModelConfig, RunConfig, TrainConfig, resolve
from moelab.errors import ConfigError
from moelab.knowledge import Sorting, build_knowledge_base

CFG = DataConfig(kind="sort", list_length=6, value_vocab=10, n_people=100, seed=0)


def test_answers_are_the_prompts_list_sorted_and_only_answers_are_trained():
    kb = build_knowledge_base(CFG)
    assert isinstance(kb, Sorting) and kb.information_bits() == {} and kb.bits({}) == {}
    batch = kb.training_batch(np.zeros(50), np.random.default_rng(1))
    for inputs, targets in zip(batch.inputs, batch.targets):
        words = kb.vocab.decode(inputs.tolist() + [kb.vocab.eos])
        assert words[0] == "<bos>" and words[CFG.list_length + 1] == "=" and words[-1] == "<eos>"
        listed, answer = words[1:CFG.list_length + 1], words[CFG.list_length + 2:-1]
        assert answer == sorted(listed, key=lambda w: int(w[1:]))
        assert kb.vocab.decode(targets[targets != -100].tolist()) == answer


def test_held_out_lists_are_deterministic_and_from_their_own_stream():
    probe = Sorting(CFG).probes()["test"]
    assert torch.equal(probe.tokens, Sorting(CFG).probes()["test"].tokens)
    assert probe.spans["answer"].sum(1).eq(CFG.list_length).all()
    train = Sorting(CFG).training_batch(np.zeros(200), np.random.default_rng(CFG.seed)).inputs
    assert not torch.equal(train[:5], probe.tokens[:5, :-1])
    values = probe.tokens[:, 1:CFG.list_length + 1] - Sorting(CFG).number0
    counts = torch.bincount(values.flatten(), minlength=CFG.value_vocab)
    assert counts.min() > 0.8 * counts.float().mean()  # numbers drawn uniformly


@pytest.mark.parametrize("data, message", [
    (DataConfig(kind="sort", list_length=1), "data.list_length"),
    (DataConfig(kind="sorted"), "data.kind = 'sorted': use one of biod, bios, sort, twohop"),
])
def test_bad_sort_configs_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        resolve(RunConfig(data=data))


@pytest.mark.slow
def test_a_small_model_learns_to_sort_lists_it_never_saw(tmp_path):
    """300 steps of 32 fresh lists: well above any shortcut (copying the list in order is right
    for 2% of lists here)."""
    from moelab.run import execute

    cfg = resolve(RunConfig(
        name="sort", seed=0,
        data=DataConfig(kind="sort", list_length=5, value_vocab=10, n_people=9600),
        model=ModelConfig(d_model=32, n_layers=2, n_heads=4, d_ff=128, mlp="swiglu"),
        train=TrainConfig(exposures=1, batch_size=32, lr=3e-3, warmup_steps=100),
    ))
    metrics = execute(cfg, tmp_path / "run")
    assert metrics["steps"] == 300 and metrics["bits"] == 0
    assert metrics["accuracy"] > 0.8
