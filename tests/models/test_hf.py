"""Hugging Face interop: exported lab models load with AutoModelForCausalLM and give our logits;
our MoE block reproduces transformers' Qwen3-MoE block given its weights."""

import pytest
import torch
from typer.testing import CliRunner

from moelab.cli import app
from moelab.config import ModelConfig, MoEConfig, RunConfig, resolve
from moelab.models.moe import MoE
from moelab.run import execute
from moelab.runs.weights import load_run
from tests.conftest import small_config

transformers = pytest.importorskip("transformers")

CASES = {
    "dense": {},
    "moe-top1": dict(n_experts=4, top_k=1, expert_width=32),
    "moe-top2-dense-first": dict(n_experts=4, top_k=2, renormalize=True, expert_width=16, first_dense_layers=1),
}


@pytest.mark.slow
def train_export_and_compare(cfg, tmp_path, rows: int = 64):
    """Train `cfg`, export it with the CLI, load it with transformers and check equal logits on
    `rows` recall questions; returns the knowledge base and the question tokens."""
    execute(resolve(cfg), tmp_path / "run")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--hf", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    _, kb, model = load_run(tmp_path / "run")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tokens = kb.probes()["value"].tokens[:rows]
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, model(tokens)[0], rtol=1e-5, atol=1e-5)
    return kb, tokens


@pytest.mark.parametrize("case", CASES)
def test_exported_model_loads_and_matches_logits(case, tmp_path):
    cfg = small_config(**CASES[case])
    cfg.model.qk_norm = True
    cfg.model.n_layers = 3
    cfg.model.tie_embeddings = case != "dense"  # both tied and untied heads
    cfg.train.exposures = 3
    kb, tokens = train_export_and_compare(cfg, tmp_path)

    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = " ".join(kb.vocab.decode(tokens[0].tolist()))
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == tokens[0].tolist()


def test_models_qwen3_cannot_express_are_refused_with_the_field(tmp_path):
    cfg = small_config()  # qk_norm false
    cfg.train.exposures = 1
    execute(cfg, tmp_path / "run")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--hf", str(tmp_path / "hf")])
    assert result.exit_code == 2 and "model.qk_norm" in result.output


def test_a_continued_run_with_added_experts_is_refused_naming_what_qwen3_cannot_hold(tmp_path):
    """A continued run's added expert group has no place in Qwen3-MoE: export refuses, never drops it."""
    import dataclasses

    from moelab.config import ContinualConfig

    cfg = small_config(n_experts=4, top_k=1, expert_width=32)
    cfg.model.qk_norm = True
    cfg.train.exposures = 2
    cfg = dataclasses.replace(cfg, continual=ContinualConfig(new_people=20, exposures=2, add_experts=2))
    execute(resolve(cfg), tmp_path / "parent" / "run")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "parent" / "run"), "--hf", str(tmp_path / "hf")])
    assert result.exit_code == 2, result.output
    assert "added_experts" in result.output and not (tmp_path / "hf").exists()


def test_router_variants_qwen3_cannot_express_are_refused(tmp_path):
    for moe, field in ((dict(router="token"), "model.moe.router"), (dict(gate="unit"), "model.moe.gate")):
        cfg = small_config(n_experts=4, top_k=1, expert_width=32, **moe)
        cfg.model.qk_norm = True
        cfg.train.exposures = 1
        execute(resolve(cfg), tmp_path / field)
        result = CliRunner().invoke(app, ["export", str(tmp_path / field), "--hf", str(tmp_path / "hf")])
        assert result.exit_code == 2 and field in result.output, result.output


@pytest.mark.parametrize("implementation", ["grouped_mm", "eager"])
@pytest.mark.parametrize("top_k, renormalize", [(1, False), (2, True), (4, False)])
def test_our_block_reproduces_transformers_block(implementation, top_k, renormalize):
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    d, f, E = 32, 24, 8
    config = Qwen3MoeConfig(hidden_size=d, moe_intermediate_size=f, num_experts=E, num_experts_per_tok=top_k,
                            norm_topk_prob=renormalize, hidden_act="silu")
    config._experts_implementation = implementation
    torch.manual_seed(0)
    theirs = Qwen3MoeSparseMoeBlock(config)
    for p in theirs.parameters():
        torch.nn.init.normal_(p, std=0.2)
    ours = MoE(resolve(RunConfig(model=ModelConfig(d_model=d, n_heads=2, d_ff=f, mlp="swiglu", moe=MoEConfig(
        n_experts=E, top_k=top_k, expert_width=f, renormalize=renormalize)))).model)
    with torch.no_grad():
        ours.router.gate.weight.copy_(theirs.gate.weight)
        ours.experts.w_in.copy_(theirs.experts.gate_up_proj.transpose(1, 2))  # [E, 2f, d] -> [E, d, 2f]
        ours.experts.w_out.copy_(theirs.experts.down_proj.transpose(1, 2))
    x = torch.randn(3, 11, d)
    with torch.no_grad():
        expected = theirs(x)
        got, _ = ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_the_readme_export_preset_goes_from_train_to_transformers_with_equal_logits(tmp_path):
    from moelab.config import load_preset

    cfg = load_preset("tiny-moe-qwen")
    cfg.train.exposures, cfg.data.n_people = 2, 200  # the preset's shape, trained briefly
    train_export_and_compare(cfg, tmp_path, rows=32)
