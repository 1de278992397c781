import math

import numpy as np
import pytest

from moelab.analysis import science
from moelab.analysis.report import write_report


def record(label, n_experts, active_fraction, bits_per_param, p_total=100_000, **extra):
    return {"label": label, "status": "done", "n_experts": n_experts, "top_k": 1, "p_total": p_total,
            "p_active": int(p_total * active_fraction), "active_fraction": active_fraction,
            "bits_per_param": bits_per_param, "bits": bits_per_param * p_total, "information_bits": 1e6,
            "accuracy": 0.5, "exposures": 100, "history": [], **extra}


def test_group_label_drops_the_seed():
    assert science.group_label("E=8 k=1 w=104 seed=2") == "E=8 k=1 w=104"
    assert science.group_label("E=8 k=1 aux_loss_weight=0.0 seed=10 x=1") == "E=8 k=1 aux_loss_weight=0.0 x=1"


def test_knee_interpolates_in_log_active_fraction():
    curve = [(1.0, 1.0), (0.1, 0.8), (0.01, 0.4)]
    assert science.knee(curve, 0.9) == pytest.approx(10 ** -0.5)  # halfway between 1 and 0.1 in log
    assert science.knee(curve, 0.5) == pytest.approx(10 ** -1.75)
    assert math.isnan(science.knee(curve, 0.3))  # never reached


def test_the_frontier_keeps_only_configurations_no_sparser_one_beats():
    curve = science.frontier_curve(2.0, [(0.5, 1.8), (0.3, 1.0), (0.29, 1.6), (0.2, 1.2), (0.1, 0.6)])
    assert curve == [(1.0, 1.0), (0.5, 0.9), (0.29, 0.8), (0.2, 0.6), (0.1, 0.3)]  # (0.3, 0.5) is beaten
    assert science.knee(curve, 0.5) == pytest.approx(10 ** (math.log10(0.2) + math.log10(0.5) / 3))


def test_frontier_from_seeded_runs():
    runs = [record(f"dense seed={s}", 0, 1.0, 1.0 + d) for s, d in enumerate((-0.01, 0.0, 0.01))]
    for s in range(3):
        runs.append(record(f"E=4 seed={s}", 4, 0.3, 0.95 + 0.01 * s))
        runs.append(record(f"E=16 seed={s}", 16, 0.1, 0.7 + 0.01 * s))
        runs.append(record(f"E=64 seed={s}", 64, 0.03, 0.3 + 0.01 * s))
        runs.append(record(f"E=8 other total seed={s}", 8, 0.2, 0.9, p_total=300_000))  # not this total
    [f] = science.frontiers(runs, n_boot=300)
    assert f.reference.kind == "same-total dense" and f.router == "learned"
    assert [p.label for p in f.points] == ["E=4", "E=16", "E=64"]
    assert f.points[1].ratio.value == pytest.approx(0.71) and f.points[1].n_seeds == 3
    k90, k50 = f.knees[0.9], f.knees[0.5]
    assert 0.1 < k90.value < 0.3 and 0.03 < k50.value < 0.1
    assert k90.low <= k90.value <= k90.high and k50.low <= k50.value <= k50.high


def with_params(run, attention=1_000, experts=90_000, active_experts=None):
    """A record with the accounting's parts, so the paper's count applies (no embeddings or routers)."""
    e = run["n_experts"]
    active = active_experts if active_experts is not None else experts // e
    return {**run, "params": {"attention": attention, "dense_mlp": 0, "routed_experts": experts,
                              "routed_experts_active": active, "shared_experts": 0}}


def test_the_ratio_at_three_percent_active_is_interpolated_between_the_configurations_either_side():
    runs = [record(f"dense seed={s}", 0, 1.0, 1.0 + d) for s, d in enumerate((-0.01, 0.0, 0.01))]
    for s in range(3):
        runs.append(with_params(record(f"E=16 seed={s}", 16, 0.1, 0.8 + 0.01 * (s - 1))))
        runs.append(with_params(record(f"E=64 seed={s}", 64, 0.05, 0.6 + 0.01 * (s - 1))))
        runs.append(with_params(record(f"E=256 seed={s}", 256, 0.02, 0.2 + 0.1 * (s - 1))))
    [f] = science.frontiers(runs, n_boot=400)
    by_count = {t.count: t for t in f.at_target}
    moelab = by_count["moelab"]  # 5% -> 0.6 and 2% -> 0.2: at 3%, log-linear between them
    t = math.log(0.03 / 0.05) / math.log(0.02 / 0.05)
    assert moelab.between == ("E=64", "E=256") and moelab.ratio.value == pytest.approx(0.6 + t * (0.2 - 0.6))
    assert moelab.ratio.low < moelab.ratio.value < moelab.ratio.high
    assert [round(x, 2) for x in f.points[-1].seed_ratios] == [0.1, 0.2, 0.3]
    # the paper's count: attention 1K plus one expert's 90K / E over 91K: 16 -> 7.3%, 64 -> 2.6%, 256 -> 1.5%
    paper = by_count["paper"]
    assert paper.between == ("E=16", "E=64")
    assert f.points[1].paper_fraction == pytest.approx((1_000 + 90_000 // 64) / 91_000)
    # the sparsest configuration above the target: no bracket, no ratio there
    [f] = science.frontiers([r for r in runs if not r["label"].startswith("E=256")], n_boot=50)
    assert [t.count for t in f.at_target] == ["paper"]


def test_interpolate_at_is_linear_in_log_fraction_and_nan_outside():
    assert science.interpolate_at([(0.1, 1.0), (0.01, 0.0)], 10 ** -1.5) == pytest.approx(0.5)
    assert science.interpolate_at([(0.1, 1.0), (0.01, 0.0)], 0.1) == pytest.approx(1.0)
    assert math.isnan(science.interpolate_at([(0.1, 1.0), (0.01, 0.0)], 0.005))


def test_plateau_exit_is_when_the_loss_first_lies_a_tenth_of_a_nat_below_its_early_plateau():
    steps = range(100, 10_100, 100)
    took_off = [{"step": s, "loss": 2.0 if s <= 4_000 else 2.0 - 0.0001 * (s - 4_000)} for s in steps]
    stalled = [{"step": s, "loss": 2.0 - 0.000005 * s} for s in steps]  # drifts 0.05 nats in the whole run
    early_fall = [{"step": s, "loss": 5.0 - 0.003 * s if s < 1_000 else 2.0} for s in steps]  # format learning first
    assert science.plateau_exit(record("a", 4, 0.3, 1.0, history=took_off)) == 5_000
    assert science.plateau_exit(record("b", 4, 0.3, 1.0, history=stalled)) == math.inf
    assert science.plateau_exit(record("c", 4, 0.3, 1.0, history=early_fall)) == math.inf  # its plateau is 2.0
    assert science.plateau_exit(record("d", 4, 0.3, 1.0)) is None


def routed(router):
    return {"config": {"model": {"moe": {"router": router}}}}


@pytest.mark.slow
def test_the_dense_law_is_the_reference_where_a_ladder_of_dense_sizes_was_run(tmp_path):
    """bits = 3 P^0.9 over dense sizes 10K-40K: the law recovers b = 0.9 and predicts the 400K
    model; the same-total dense run is shown as a check; each router gets its own frontier."""
    law = lambda p: 3 * p ** 0.9  # noqa: E731
    runs = []
    for p in (10_000, 20_000, 40_000):
        for s, noise in enumerate((0.98, 1.02)):
            runs.append(record(f"dense d_ff={p} seed={s}", 0, 1.0, law(p) * noise / p, p_total=p, seed=s))
    total = 400_000
    runs.append(record("dense d_ff=big seed=0", 0, 1.0, 0.8 * law(total) / total, p_total=total))
    expected = law(total) / total
    took_off = [{"step": s, "loss": 2.0 if s <= 400 else 2.0 - 0.001 * (s - 400)} for s in range(100, 1100, 100)]
    stalled = [{"step": s, "loss": 2.0} for s in range(100, 1100, 100)]
    for s in range(2):
        for e, fraction, share in ((4, 0.3, 0.9), (16, 0.1, 0.6), (256, 0.025, 0.3)):
            runs.append(record(f"E={e} router=hash seed={s}", e, fraction, share * expected, p_total=total,
                               history=stalled if e == 256 else took_off, **routed("hash")))
            runs.append(record(f"E={e} seed={s}", e, fraction, share / 2 * expected, p_total=total + 2_000,
                               **routed("learned")))
    reference = science.dense_reference(runs, total, n_boot=300)
    assert reference.kind == "dense law" and reference.sizes == [10_000, 20_000, 40_000]
    assert reference.slope.value == pytest.approx(0.9, abs=0.01)
    assert reference.bits_per_param.value == pytest.approx(expected, rel=0.02)
    assert reference.check.value == pytest.approx(0.8 * expected)
    fronts = {f.router: f for f in science.frontiers(runs, n_boot=300)}
    assert set(fronts) == {"hash", "learned"}
    assert fronts["hash"].sparsest.ratio.value == pytest.approx(0.3, rel=0.03)
    assert fronts["learned"].sparsest.ratio.value == pytest.approx(0.15, rel=0.03)
    both = fronts["hash"].sparsest.ratio_with_reference
    assert both.low < 0.3 < both.high  # the reference's own uncertainty is in this interval
    assert 0.025 < fronts["hash"].knees[0.5].value < 0.1 < fronts["learned"].knees[0.5].value
    measured = {f.router: f for f in science.frontiers(runs, n_boot=300, law=False)}  # the dense run of 400K stores 0.8x the law
    assert measured["hash"].reference.kind == "same-total dense"
    assert measured["hash"].sparsest.ratio.value == pytest.approx(0.3 / 0.8, rel=0.03)

    for r in runs:  # parameter groups, for the paper's count in the dense-against-MoE pairs
        moe = r["n_experts"] > 0
        r["params"] = {"attention": 1_000, "dense_mlp": 0 if moe else r["p_total"] - 1_000, "shared_experts": 0,
                       "routed_experts": r["p_total"] - 1_000 if moe else 0,
                       "routed_experts_active": r["p_active"] - 1_000 if moe else 0}
    rows = [{"key": str(i), "label": r["label"], "status": "done", "reason": None, "config": {},
             "metrics": {**r, "routing": []}} for i, r in enumerate(runs)]
    write_report(rows, tmp_path, "t")
    page = (tmp_path / "report.html").read_text()
    assert "The dense law as the reference" in page and "log bits = a + b log P" in page
    assert (tmp_path / "frontier.png").exists()
    pairs = page[page.index("Dense against MoE"):]
    pairs = pairs[:pairs.index("<h2>")]
    assert "dense d_ff=big" in pairs and "dense d_ff=10000" not in pairs  # the law is the reference, not each rung
    assert "At 3% active" in page and "E=16 router=hash / E=256 router=hash" in page
    at_target = page[page.index("At 3% active"):]
    at_target = at_target[:at_target.index("<h2>", 4)]
    assert at_target.count("<td>dense law</td>") == 4 and at_target.count("<td>same-total dense</td>") == 4  # 2 routers, 2 counts
    assert "extrapolates 10.0x past its widest rung" in page
    seeds = page[page.index("<h2>Seed by seed"):]
    seeds = seeds[:seeds.index("<h2>", 4)]
    assert (tmp_path / "loss_curves.png").exists()
    assert seeds.count("<td>never</td>") == 2 and seeds.count("<td>500</td>") == 4  # E=256's two seeds stalled
    assert seeds.count("a rung of the law") == 6


def test_no_law_from_dense_runs_that_share_a_size_or_differ_in_base():
    """An lr check (three rates at one dense size) and a width sweep (each width on its own base)
    are not ladders of sizes: no law is fitted through them."""
    moe = [record("E=32 seed=0", 32, 0.1, 0.2, p_total=570_000)]
    rates = [record(f"dense lr={lr} seed=0", 0, 1.0, 0.5 + lr, p_total=107_000) for lr in (1e-3, 3e-3, 1e-2)]
    assert science.dense_reference(moe + rates, 570_000) is None
    widths = [record(f"dense d_model={d} seed=0", 0, 1.0, 0.6, p_total=p, n_people=n)
              for d, p, n in ((32, 29_000, 5500), (48, 63_000, 12000), (64, 107_000, 16000))]
    assert science.dense_reference(moe + widths, 570_000) is None
    same_base = [dict(r, n_people=16000) for r in widths]
    assert science.dense_reference(moe + same_base, 570_000).kind == "dense law"


def test_the_law_is_capped_at_the_knowledge_base_where_its_model_would_hold_more_than_there_is():
    """A ladder at 1 bit per parameter says a 4M dense model stores 4M bits; the base holds 1M, so
    the reference is 0.25 bits/param and an MoE that stores 0.2 scores 0.8, not 0.2."""
    runs = [record(f"dense d_ff={p} seed={s}", 0, 1.0, 1.0 + 0.01 * s, p_total=p)
            for p in (10_000, 20_000, 40_000) for s in (0, 1)]
    runs += [record(f"E={e} seed={s}", e, f, 0.2 * share, p_total=4_000_000)
             for e, f, share in ((16, 0.1, 1.0), (256, 0.01, 0.5)) for s in (0, 1)]
    reference = science.dense_reference(runs, 4_000_000, n_boot=200)
    assert reference.capped and reference.bits_per_param.value == pytest.approx(0.25)
    assert reference.uncapped.value == pytest.approx(1.0, rel=0.02) and reference.bits_per_param.high == pytest.approx(0.25)
    assert "capped at the knowledge base's information (1,000,000 bits" in reference.describe()
    assert reference.draw(np.random.default_rng(0)) == pytest.approx(0.25)
    [f] = science.frontiers(runs, n_boot=200)
    assert [p.ratio.value for p in f.points] == [pytest.approx(0.8), pytest.approx(0.4)]
    small = science.dense_reference(runs, 100_000, n_boot=200)  # 100K bits of the base's 1M: no cap
    assert not small.capped and small.bits_per_param.value == pytest.approx(1.0, rel=0.02)


def test_with_one_smaller_dense_size_the_law_is_bits_proportional_to_parameters():
    runs = [record("dense small seed=0", 0, 1.0, 0.7, p_total=29_000),
            record("dense small seed=1", 0, 1.0, 0.6, p_total=29_000),
            record("dense big seed=0", 0, 1.0, 0.5, p_total=146_000),
            record("E=32 seed=0", 32, 0.13, 0.17, p_total=146_000)]
    reference = science.dense_reference(runs, 146_000, n_boot=200)
    assert reference.kind == "dense law" and reference.slope is None
    assert reference.bits_per_param.value == pytest.approx(0.65)
    assert "bits proportional to parameters" in reference.describe() and reference.check.value == 0.5


@pytest.mark.slow
def test_exposures_violation_and_reasoning_sections(tmp_path):
    runs = [record(f"dense exposures={e}", 0, 1.0, b, exposures=e) for e, b in ((30, 0.2), (100, 0.9), (1000, 2.0))]
    history = lambda v: [{"step": 100 * i, "max_violation": v / i} for i in range(1, 4)]  # noqa: E731
    runs += [record(f"E=8 aux={a} seed={s}", 8, 0.2, 0.5, history=history(v)) for a, v in ((0, 3), (1, 1))
             for s in (0, 1)]
    runs.append(record("dense twohop", 0, 1.0, 0.0, information_bits=0, accuracy=0.9, data_kind="twohop"))
    assert [r["exposures"] for r in science.exposure_table(runs)] == [30, 100, 1000]
    table = science.violation_table(runs)
    assert [(v["label"], v["first"], v["last"]) for v in table] == [("E=8 aux=0", 3, 1), ("E=8 aux=1", 1, 1 / 3)]
    assert [g.label for g in science.groups(science.reasoning_runs(runs))] == ["dense twohop"]

    rows = [{"key": str(i), "label": r["label"], "status": "done", "reason": None, "config": {},
             "metrics": {**r, "routing": []}} for i, r in enumerate(runs)]
    write_report(rows, tmp_path, "t")
    for name in ("exposures.png", "violation.png", "reasoning.png", "headline.png"):
        assert (tmp_path / name).exists(), name
    assert "Reasoning task" in (tmp_path / "report.html").read_text()


def test_pooled_recall_interval_stays_within_zero_and_one():
    g = science.Group("E=32", [{"accuracy": a, "bits": b} for a, b in ((0.0005, 10.0), (0.0015, 30.0), (0.001, 20.0))])
    e = g.interval("accuracy")
    assert 0 < e.low <= e.value <= e.high < 1 and e.value == pytest.approx(0.001)
    assert g.interval("bits").low < 10  # unbounded metrics keep the plain t interval
    near_one = science.Group("dense", [{"accuracy": a} for a in (0.999, 1.0, 0.998)]).interval("accuracy")
    assert near_one.high <= 1 and near_one.low < near_one.value


def test_dense_moe_ratio_counts_parameters_both_ways():
    def run(label, n_experts, bits, seed, params):
        total = sum(params.values()) - params["routed_experts_active"] - params["input_embedding"]
        return record(label, n_experts, 1.0, bits / total, p_total=total, seed=seed, params=params)

    dense_params = {"embedding": 100, "attention": 400, "norms": 10, "dense_mlp": 800, "router": 0,
                    "routed_experts": 0, "routed_experts_active": 0, "shared_experts": 0, "input_embedding": 100}
    moe_params = dict(dense_params, dense_mlp=0, router=64, routed_experts=6400, routed_experts_active=200)
    runs = [run("dense seed=0", 0, 1200.0, 0, dense_params), run("E=32 seed=0", 32, 2000.0, 0, moe_params),
            run("dense seed=1", 0, 1100.0, 1, dense_params), run("E=32 seed=1", 32, 2200.0, 1, moe_params)]
    (r,) = science.dense_moe_ratios(runs)
    ours = [(1200 / 1310) / (2000 / 6974), (1100 / 1310) / (2200 / 6974)]
    paper = [(1200 / 1200) / (2000 / 6800), (1100 / 1200) / (2200 / 6800)]
    assert r["seeds"] == 2 and r["ratio"].value == pytest.approx(sum(ours) / 2)
    assert r["ratio_paper"].value == pytest.approx(sum(paper) / 2)
    assert r["moe_active_fraction_paper"] == pytest.approx(600 / 6800)  # attention + one expert's share


def test_dense_and_moe_are_paired_within_a_width_only():
    params = {"attention": 10, "dense_mlp": 0, "routed_experts": 90, "routed_experts_active": 3, "shared_experts": 0}
    runs = [record(f"{kind} w={d} seed={s}", e, 1.0 if not e else 0.1, 0.5, d_model=d, n_people=1000, seed=s,
                   params=dict(params, dense_mlp=90 if not e else 0, routed_experts=0 if not e else 90))
            for d in (32, 64) for kind, e in (("dense", 0), ("E=32", 32)) for s in (0, 1)]
    pairs = science.dense_moe_ratios(runs)
    assert sorted((r["dense"], r["moe"]) for r in pairs) == [("dense w=32", "E=32 w=32"), ("dense w=64", "E=32 w=64")]
    assert {r["d_model"] for r in pairs} == {32, 64}


def width_runs(ratio_at, widths=(32, 48, 64), seeds=(0, 1), lrs=("0.01", "0.003", "0.003")):
    """Dense and one MoE per width, labelled as router-width's runs are (the learning rate chosen
    per width in the label, d_model not), the MoE's bits per total parameter set so that dense
    over MoE is ratio_at(d_model, seed) under both counts (no embeddings, norms or routers)."""
    runs = []
    for d, lr in zip(widths, lrs):
        people = 100 * d
        for s in seeds:
            dense = {"attention": 10, "dense_mlp": 90, "routed_experts": 0, "routed_experts_active": 0, "shared_experts": 0}
            moe = dict(dense, dense_mlp=0, routed_experts=90, routed_experts_active=3)
            runs.append(record(f"dense d_ff={4 * d} lr={lr} seed={s}", 0, 1.0, 0.5,
                               d_model=d, n_people=people, seed=s, params=dense))
            runs.append(record(f"E=32 k=1 w={d} router=learned lr={lr} seed={s}", 32, 0.13, 0.5 / ratio_at(d, s),
                               d_model=d, n_people=people, seed=s, params=moe))
    return runs


def test_the_width_trend_is_the_ratios_change_per_doubling_of_d_model():
    # ratio = 4 * (32 / d) ** 0.5 exactly: the gap shrinks by 1/sqrt(2) per doubling, no scatter
    (trend,) = science.width_trend(width_runs(lambda d, s: 4 * (32 / d) ** 0.5))
    assert trend["moe"] == "E=32 k=1 router=learned" and trend["dense"] == "dense"
    assert trend["widths"] == [32, 48, 64] and trend["points"] == 6
    assert [r.value for r in trend["ratios"]] == pytest.approx([4, 4 * (32 / 48) ** 0.5, 4 * 0.5 ** 0.5])
    assert trend["per_doubling"].value == pytest.approx(2 ** -0.5)
    assert trend["per_doubling"].low == pytest.approx(2 ** -0.5) == pytest.approx(trend["per_doubling"].high)
    assert trend["per_doubling_paper"].value == pytest.approx(2 ** -0.5)


def test_the_report_draws_the_width_trend(tmp_path):
    from moelab.analysis.science_report import science_sections

    page = "".join(science_sections(width_runs(lambda d, s: 3.0 - d / 64 + 0.1 * s), tmp_path))
    assert "Does the gap close as the model widens?" in page and (tmp_path / "width.png").exists()
    assert "32, 48, 64" in page  # the widths, in one row


def test_a_flat_width_trend_with_seed_scatter_has_an_interval_around_one():
    trend, = science.width_trend(width_runs(lambda d, s: 2.0 * (1.2 if s else 1 / 1.2)))
    assert trend["per_doubling"].value == pytest.approx(1.0)
    assert trend["per_doubling"].low < 1 < trend["per_doubling"].high


def test_two_ratios_give_the_line_through_them_without_an_interval():
    (trend,) = science.width_trend(width_runs(lambda d, s: 4 * 32 / d, widths=(32, 64), seeds=(0,)))
    assert trend["per_doubling"].value == pytest.approx(0.5) and math.isnan(trend["per_doubling"].low)


def test_one_width_has_no_trend():
    assert science.width_trend(width_runs(lambda d, s: 2.0, widths=(32,))) == []


def test_a_learning_rate_varied_at_one_width_makes_no_trend():
    # two learning rates at each width, both reported: which pairs make the line is ambiguous
    runs = width_runs(lambda d, s: 2.0, widths=(32, 64), lrs=("0.01", "0.01")) + width_runs(
        lambda d, s: 3.0, widths=(32, 64), lrs=("0.003", "0.003"))
    assert science.width_trend(runs) == []


def test_the_stored_sparsity_frontier_keeps_its_published_knees():
    """docs/results.md, "Sparsity frontier": 90% of dense at 62% active [26%, 77%], 50% at 16% [15%, 21%]."""
    import json
    from pathlib import Path

    from moelab.analysis.report import flatten_run
    from moelab.sweeps import Store

    folder = Path(__file__).parents[2] / "docs" / "results" / "sparsity-frontier"
    meta = json.loads((folder / "sweep.json").read_text())
    store = Store(folder)
    records = [flatten_run(r) for r in store.rows(meta["keys"])]
    store.close()
    [f] = science.frontiers(records)
    k90, k50 = f.knees[0.9], f.knees[0.5]
    assert (round(k90.value, 2), round(k90.low, 2), round(k90.high, 2)) == (0.62, 0.26, 0.77)
    assert (round(k50.value, 2), round(k50.low, 2), round(k50.high, 2)) == (0.16, 0.15, 0.21)


def test_final_churn_averages_the_last_tenth_of_the_records_over_layers():
    history = [{"step": i, "churn": [0.5, 0.3]} for i in range(18)] + [{"step": 18, "churn": [0.1, 0.1]},
                                                                        {"step": 19, "churn": [0.0, 0.2]}]
    run = record("E=8 seed=0", 8, 0.2, 0.5, history=history)
    assert science.final_churn(run) == pytest.approx(0.1)  # the last 2 of 20 records, layers averaged
    assert science.mean_churn(run) == pytest.approx((18 * 0.4 + 2 * 0.1) / 20)  # every record
    assert science.final_churn(run, "fact_churn") is None and science.final_churn(record("d", 0, 1.0, 1.0)) is None


def test_imbalance_is_read_from_the_evaluation_and_agreement_from_the_last_records():
    routing = [{"layer": 0, "max_violation": 0.5}, {"layer": 1, "max_violation": 0.1}]
    history = [{"step": i, "assignment_agreement": [0.2, None]} for i in range(18)]
    history += [{"step": 18, "assignment_agreement": [0.8, 0.6]}, {"step": 19, "assignment_agreement": [0.6, 0.6]}]
    run = record("E=8 balance=base seed=0", 8, 0.2, 0.5, routing=routing, history=history)
    assert science.final_imbalance(run) == pytest.approx(0.3)
    assert science.final_agreement(run) == pytest.approx(0.65)  # the last 2 of 20 records
    plain = record("E=8 seed=0", 8, 0.2, 0.5, history=[{"step": 1, "churn": [0.1]}])
    assert science.final_agreement(plain) is None and science.final_imbalance(plain) is None


def test_the_router_section_sets_bits_against_churn_per_router(tmp_path):
    def churning(rate):
        return [{"step": i, "churn": [rate]} for i in range(10)]

    runs = [record(f"E=8 seed={s}", 8, 0.2, 0.5 + 0.01 * s, history=churning(0.3)) for s in range(2)]
    runs += [record(f"E=8 router=hash seed={s}", 8, 0.2, 0.9, history=churning(0.0), router="hash") for s in range(2)]
    rows = {r["label"]: r for r in science.router_table(runs)}
    assert rows["E=8"]["churn"] == pytest.approx(0.3) and rows["E=8"]["router"] == "learned"
    assert rows["E=8 router=hash"]["churn"] == 0.0 and rows["E=8 router=hash"]["seeds"] == 2
    assert rows["E=8"]["imbalance"] is None and rows["E=8"]["agreement"] is None  # no routing records here
    rows = [{"key": str(i), "label": r["label"], "status": "done", "reason": None, "config": {},
             "metrics": {**r, "routing": []}} for i, r in enumerate(runs)]
    page = write_report(rows, tmp_path, "t").read_text()
    assert "Routers: knowledge against routing churn" in page and (tmp_path / "churn.png").exists()


def test_memory_runs_are_set_against_the_dense_law_at_their_own_totals(tmp_path):
    """A ladder of dense sizes storing 1 bit per parameter; a memory model at 4x the largest total
    storing half of what the law says, and one so large that the law's model would hold the whole
    base (1e6 bits): it stores 90% of the base, so 0.9 of the capped law."""
    runs = [record(f"dense d_ff={p} seed={s}", 0, 1.0, 1.0 + 0.01 * s, p_total=p)
            for p in (10_000, 20_000, 40_000) for s in (0, 1)]
    took_off = [{"step": s, "loss": 2.0 if s <= 400 else 2.0 - 0.001 * (s - 400)} for s in range(100, 1100, 100)]
    stalled = [{"step": s, "loss": 2.0} for s in range(100, 1100, 100)]
    runs += [record(f"pkm N={n} seed={s}", 0, a, b * (1 + 0.01 * s), p_total=p, memory_kind="pkm",
                    history=[] if n == 1000 else [took_off, stalled][s])
             for n, p, a, b in ((1000, 160_000, 0.1, 0.5), (9000, 4_000_000, 0.005, 0.9e6 / 4e6)) for s in (0, 1)]
    rows = {r["label"]: r for r in science.law_ratios(runs, n_boot=200)}
    small, large = rows["pkm N=1000"], rows["pkm N=9000"]
    assert small["kind"] == "pkm" and small["ratio"].value == pytest.approx(0.505, rel=0.02)
    assert not small["law_capped"] and large["law_capped"] and large["law_bits"] == 1e6
    assert large["ratio"].value == pytest.approx(0.9045, rel=1e-3) and large["base_share"] == pytest.approx(0.9045, rel=1e-3)
    assert small["plateau_exits"] == [None, None] and small["loss_fall"] is None  # no histories
    assert large["plateau_exits"] == [500, math.inf] and large["loss_fall"] > 0  # one seed took off, one stalled
    rows = [{"key": str(i), "label": r["label"], "status": "done", "reason": None, "config": {},
             "metrics": {**r, "routing": []}} for i, r in enumerate(runs)]
    page = write_report(rows, tmp_path, "t").read_text()
    assert "against the dense law at their own totals" in page and (tmp_path / "dense_law.png").exists()
    assert "<td>500, never</td>" in page and "<td>n/a, n/a</td>" in page


def test_late_loss_drop_measures_the_distance_from_a_plateau():
    falling = [{"step": 100 * i, "loss": 10.0 - 0.05 * i} for i in range(1, 101)]  # still falling at the end
    flat = [{"step": 100 * i, "loss": 2.0} for i in range(1, 101)]
    assert science.late_loss_drop(record("a", 0, 1.0, 1.0, history=falling)) == pytest.approx(0.5 / 5.5, rel=1e-6)
    assert science.late_loss_drop(record("b", 0, 1.0, 1.0, history=flat)) == 0.0
    assert science.late_loss_drop(record("c", 0, 1.0, 1.0)) is None
