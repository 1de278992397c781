from moelab.design.golden import ARCHITECTURES
from moelab.design.hardware import hardware
from moelab.design.rules import Deployment, check, tile_efficiency, wave_efficiency
from moelab.models.params import Architecture, AttentionSpec


def dense(hidden, ffn, vocab, head_dim=128):
    return Architecture("x", hidden, 32, vocab, AttentionSpec("gqa", hidden // head_dim, head_dim=head_dim,
                                                             n_kv_heads=8), dense_ffn=ffn, first_dense_layers=32)


def test_misaligned_config_is_flagged_with_rule_and_fix_and_its_neighbour_passes():
    findings = check(dense(4000, 10922, 50257, head_dim=125), Deployment(hardware("a100")))
    by_rule = {f.rule.split()[0]: f for f in findings}
    assert {"1", "2", "3", "6"} <= set(by_rule)
    assert "50304" in by_rule["1"].fix
    assert any("hidden = 4000" in f.message and "4032" in f.fix for f in findings)
    assert "10880" in by_rule["6"].fix
    aligned = check(dense(4096, 11008, 50304), Deployment(hardware("a100")))
    assert [f.rule for f in aligned] == ["13 memory"]  # aligned; only training a 7B model on one A100 is flagged


def test_moe_rules():
    arch = ARCHITECTURES["gpt-oss-120b"]
    errors = [f for f in check(arch, Deployment(hardware("h100"), ep=8)) if f.level == "error"]
    assert [f.rule for f in errors] == ["7 expert width"] and errors[0].fix == "use 2816 or 2944"
    assert not any(f.level == "error" for f in check(arch, Deployment(hardware("h100"), ep=8, kernel="triton")))
    ds = ARCHITECTURES["DeepSeek-V3"]
    assert any(f.rule == "8 ep" for f in check(ds, Deployment(hardware("h100"), ep=3)))
    assert any(f.rule == "9 groups" for f in check(ds, Deployment(hardware("h100"), n_group=8, topk_group=9)))
    assert any(f.rule == "4 tp" and f.level == "error" for f in check(ds, Deployment(hardware("h100"), tp=3)))
    assert any(f.rule == "10 padding" for f in check(ds, Deployment(hardware("h100"), tokens_per_step=1024)))


def test_tile_and_wave_quantization():
    assert tile_efficiency(128) == 1.0 and tile_efficiency(129) == 129 / 256
    assert wave_efficiency([128] * 132, 256, 132) == 1.0  # exactly one full wave on H100
    assert wave_efficiency([128] * 133, 256, 132) == 133 / 264


def test_memory_per_gpu_must_fit_the_weights_and_warns_for_training():
    from moelab.models.params import count_architecture, memory_bytes, params_per_gpu

    k2 = ARCHITECTURES["Kimi K2"]
    counts = count_architecture(k2)
    assert params_per_gpu(counts) == counts.total
    split = params_per_gpu(counts, tp=8, ep=8)  # experts over 64 GPUs, the rest over 8
    assert split == (counts.total - counts.routed_experts) / 8 + counts.routed_experts / 64
    assert memory_bytes(counts, tp=8, ep=8)["weights"] == 2 * split
    one_gpu = [f for f in check(k2, Deployment(hardware("h100"))) if f.rule == "13 memory"]
    assert one_gpu[0].level == "error" and "2,053 GB per GPU" in one_gpu[0].message and "tp=1 ep=1" in one_gpu[0].message
    spread = [f for f in check(k2, Deployment(hardware("h100"), tp=8, ep=8)) if f.rule == "13 memory"]
    assert [f.level for f in spread] == ["warn"] and "training state" in spread[0].message
