"""One run end to end: it learns, it is reproducible, its files are complete and reload."""

import json
import math
import shutil

import pytest
import torch

import moelab.run
from moelab.errors import MoelabError
from moelab.evaluation import measure_capacity, score_probe
from moelab.run import execute
from moelab.runs.weights import load_run
from tests.conftest import small_config

REQUIRED = ["p_total", "p_active", "p_total_nonembedding", "n_experts", "top_k", "exposures", "steps",
            "bits", "bits_per_param", "bits_per_active_param", "r_max", "accuracy", "wall_seconds",
            "seed", "versions", "git_commit", "config"]


def test_a_small_knowledge_base_is_learned(trained_run):
    cfg, _, metrics = trained_run
    chance = 1 / cfg.data.diversity ** cfg.data.value_chunks
    assert metrics["accuracy"] > 4 * chance
    assert 0 < metrics["bits"] <= metrics["information_bits"]
    # a tiny fp32 model claiming more than ~3.6 bits/param would be a bug (Morris et al. 2025)
    assert metrics["bits_per_param"] < 3.6


def test_run_folder_is_complete(trained_run):
    _, out, metrics = trained_run
    assert {p.name for p in out.iterdir()} == {"config.toml", "model.safetensors", "training.json", "metrics.json", ".lock"}
    stored = json.loads((out / "metrics.json").read_text())
    assert all(key in stored for key in REQUIRED)
    assert stored["bits"] == metrics["bits"]
    assert stored["value_normalisation"] == "full_softmax"


@pytest.mark.slow
def test_same_seed_same_metrics(trained_run, tmp_path):
    cfg, _, first = trained_run
    again = execute(cfg, tmp_path)
    for key in ("bits", "accuracy", "final_loss", "losses_nats", "bit_terms"):
        assert again[key] == first[key], key


def test_checkpoint_reloads_to_the_same_measurement(trained_run):
    cfg, out, metrics = trained_run
    _, kb, model = load_run(out)
    capacity = measure_capacity(model, kb, 256, torch.device("cpu"))
    assert capacity.bits == metrics["bits"]
    assert capacity.accuracy == metrics["accuracy"]


def test_teacher_forced_exact_match_equals_greedy_decoding(trained_run):
    _, out, metrics = trained_run
    cfg, kb, model = load_run(out)
    probe = kb.probes()["value"]
    exact = score_probe(model, probe, 256, torch.device("cpu"))["value"].exact
    prompt = 1 + cfg.data.name_slots + 1
    with torch.no_grad():
        seq = probe.tokens[:, :prompt]
        for _ in range(cfg.data.value_chunks * cfg.data.chunk_length):
            logits, _ = model(seq)
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    greedy = (seq == probe.tokens).all(-1)
    assert 0 < greedy.sum() < len(greedy)  # both right and wrong answers, so the check has teeth
    assert torch.equal(greedy, exact)


def test_moe_run_records_routing(tmp_path):
    cfg = small_config(n_experts=4, top_k=2, renormalize=True, bias_update_rate=0.001, expert_width=16)
    cfg.train.exposures = 5
    metrics = execute(cfg, tmp_path)
    assert metrics["n_experts"] == 4 and metrics["top_k"] == 2
    assert metrics["p_active"] < metrics["p_total"]
    assert [r["layer"] for r in metrics["routing"]] == [0, 1]
    assert all(len(r["load"]) == 4 for r in metrics["routing"])
    assert all(0 < r["router_entropy"] <= math.log(4) for r in metrics["routing"])  # measured in eval mode
    assert "max_violation" in metrics["history"][-1]


def test_bios_run_end_to_end(tmp_path):
    cfg = small_config()
    cfg.data.kind = "bios"
    cfg.data.n_people = 40
    cfg.train.exposures = 3
    metrics = execute(cfg, tmp_path)
    assert set(metrics["accuracy_per_attribute"]) == {
        "birth_date", "birth_city", "university", "major", "employer", "working_city"}
    assert set(metrics["bit_terms"]) == {"name", "value"}


@pytest.mark.slow
def test_failed_evaluation_keeps_the_checkpoint_and_a_rerun_only_evaluates(trained_run, tmp_path, monkeypatch):
    cfg, _, first = trained_run

    def out_of_memory(*args, **kwargs):
        raise MemoryError("eval batch too large")

    with monkeypatch.context() as m:
        m.setattr(moelab.run, "measure_capacity", out_of_memory)
        with pytest.raises(MemoryError):
            execute(cfg, tmp_path)
    assert {"model.safetensors", "training.json"} <= {p.name for p in tmp_path.iterdir()}
    assert not (tmp_path / "metrics.json").exists()
    steps = []
    again = execute(cfg, tmp_path, on_step=lambda step, total: steps.append(step))
    assert steps == [] and again["resumed_from_checkpoint"]  # no training step was taken
    for key in ("bits", "accuracy", "final_loss", "history", "steps", "bit_terms"):
        assert again[key] == first[key], key


def test_a_checkpoint_of_another_config_is_not_resumed(trained_run, tmp_path):
    cfg, out, first = trained_run
    shutil.copytree(out, tmp_path, dirs_exist_ok=True)
    (tmp_path / "metrics.json").unlink()
    other = small_config()
    other.train.exposures = 3
    result = execute(other, tmp_path)
    assert not result["resumed_from_checkpoint"] and result["steps"] < first["steps"]


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_damaged_checkpoint_is_refused_by_name(trained_run, tmp_path, damage):
    _, out, _ = trained_run
    shutil.copytree(out, tmp_path, dirs_exist_ok=True)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "random": bytes(range(256)) * 4, "empty": b""}[damage])
    with pytest.raises(MoelabError, match=r"model.safetensors: not a readable safetensors file"):
        load_run(tmp_path)


def test_checkpoint_of_another_architecture_is_refused_by_tensor(tmp_path):
    from moelab.runs.weights import build, load_weights

    small = small_config(n_experts=2, top_k=1)
    small.train.exposures = 1
    execute(small, tmp_path)
    _, other = build(small_config(n_experts=4, top_k=1), torch.device("cpu"))
    with pytest.raises(MoelabError, match=r"tensor '.*' is shape \[2, .* needs shape \[4, .*another run"):
        load_weights(other, tmp_path / "model.safetensors")
