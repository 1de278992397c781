import pytest
import math
import csv

import numpy as np

from moelab.analysis.report import attribution, flatten_run, write_report


def row(i, n_experts, p_total, p_active, bits, label=None):
    routing = [{"layer": 0, "max_violation": 0.2, "dead_experts": 0, "router_entropy": 1.0,
                "load": [1 / n_experts] * n_experts}] if n_experts else []
    metrics = {"n_experts": n_experts, "top_k": 1 if n_experts else 0, "expert_width": 104,
               "granularity": 1.0, "p_total": p_total, "p_active": p_active,
               "active_fraction": p_active / p_total, "bits": bits, "bits_per_param": bits / p_total,
               "bits_per_active_param": bits / p_active, "accuracy": min(1.0, bits / 1e5),
               "exposures": 100, "steps": 6250, "seed": 0, "wall_seconds": 60.0, "routing": routing,
               "git_commit": "abc", "versions": {"torch": "2.13"}, "device": "cpu"}
    return {"key": f"k{i}", "label": label or f"run{i}", "status": "done", "reason": None,
            "metrics": metrics, "attempts": 1, "updated": 0.0}


def ladder():
    rng = np.random.default_rng(0)
    rows = []
    for i, e in enumerate([0, 2, 4, 8, 16]):  # MoE at fixed active: bits follow total
        total = 44_000 * max(1, e) * 0.9 if e else 44_000
        rows.append(row(i, e, int(total), 44_000, 0.8 * total * rng.uniform(0.9, 1.1)))
    for i, total in enumerate([88_000, 176_000, 352_000]):  # dense: total = active
        rows.append(row(10 + i, 0, total, total, 0.8 * total * rng.uniform(0.9, 1.1)))
    return rows


@pytest.mark.slow
def test_report_files_and_escaping(tmp_path):
    rows = ladder()
    rows[0]["label"] = "<script>alert(1)</script>"
    rows[1]["label"] = "stopped and resumed"
    rows[1]["metrics"]["training_segments"] = [
        {"from_step": 0, "device": None, "git_commit": None, "torch": None},
        {"from_step": 44_715, "device": "cpu (AMD EPYC, AVX-512)", "git_commit": "abc", "torch": "2.13"}]
    rows.append({"key": "bad", "label": "broken", "status": "failed", "reason": "loss <nan> & worse",
                 "metrics": None, "attempts": 1, "updated": 0.0})
    path = write_report(rows, tmp_path, title="t <i>", description="d & <b>")
    page = path.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "d &amp; &lt;b&gt;" in page and "loss &lt;nan&gt; &amp; worse" in page
    assert 'src="data:image/png;base64,' in page and (tmp_path / "headline.png").stat().st_size > 10_000
    with open(tmp_path / "runs.csv") as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == len(rows) and {r["status"] for r in records} == {"done", "failed"}
    assert "Routing diagnostics" in page
    assert "Runs trained in more than one segment" in page and page.count("from step ") == 2
    assert ("from step 0: not recorded (commit not recorded); from step 44,715: cpu (AMD EPYC, AVX-512) (abc)"
            in page)


def test_attribution_credits_total_parameters():
    stats, notes = attribution([flatten_run(r) for r in ladder()])
    assert stats["r(bits, P_total)"].value > 0.95 and notes == []
    partial = stats["partial r(bits, P_total | P_active)"]
    assert partial.value > 0.9


def test_attribution_says_why_it_cannot_read_a_narrow_or_dense_only_sweep():
    at_fixed_active = [flatten_run(r) for r in ladder()[:5]]
    for r in at_fixed_active:  # 43.52K to 43.68K active, as routers make it
        r["p_active"] = 43_520 + 40 * r["n_experts"] // 4
    stats, notes = attribution(at_fixed_active)
    assert "r(bits, P_active)" not in stats and "r(bits, P_total)" in stats
    assert any("active parameter counts spans only" in n for n in notes)
    assert not any(k.startswith("partial") for k in stats)
    dense = [flatten_run(r) for r in ladder()[5:]] + [flatten_run(row(20, 0, 30_000, 30_000, 2e4)),
                                                      flatten_run(row(21, 0, 20_000, 20_000, 1.5e4))]
    stats, notes = attribution(dense)
    assert set(stats) == {"r(bits, P_total)", "r(bits, P_active)"}
    assert all(math.isfinite(v) for e in stats.values() for v in (e.value, e.low, e.high))  # no nan interval
    assert any("equal everywhere" in n for n in notes)
    two_values = [flatten_run(row(i, 0, 1000 * (1 + i % 2), 1000 * (1 + i % 2), 500 + i)) for i in range(4)]
    stats, notes = attribution(two_values)
    assert stats == {} and any("4 points at 2 distinct" in n for n in notes)


def test_a_fit_over_a_narrow_range_is_not_drawn(tmp_path):
    from moelab.analysis.report import _fit_text

    fit, text = _fit_text([43_520, 43_560, 43_600, 43_640, 43_680], [1, 5, 2, 7, 3], False, "active parameters")
    assert fit is None and "spans only 0.002 decades" in text and "per decade" not in text



def test_runs_with_negative_bits_are_plotted_on_a_linear_axis(tmp_path):
    import warnings

    rows = ladder()
    rows[0]["metrics"]["bits"] = -500.0  # poor models score below zero; never clipped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_report(rows, tmp_path, title="negative")
    assert (tmp_path / "headline.png").exists()


@pytest.mark.slow
def test_abstention_runs_get_their_section_pooled_over_seeds(tmp_path):
    rows = []
    for i, (e, total, active, unknown, oi) in enumerate([(0, 29_000, 29_000, 0.0, -90.0), (0, 29_000, 29_000, 0.2, 5.0),
                                                          (32, 146_000, 18_800, 0.2, 2.0)]):
        for seed in (0, 1):
            r = row(2 * i + seed, e, total, active, 20_000.0, label=f"c{i} seed={seed}")
            r["metrics"] |= {"omniscience_index": oi + seed, "hallucination_rate": 0.5 + 0.1 * seed,
                             "abstention": {"threshold_best": {"omniscience_index": oi + 10}},
                             "config": {"data": {"unknown_fraction": unknown}}}
            rows.append(r)
    page = write_report(rows, tmp_path, title="abstention").read_text()
    assert "Knowing what it does not know" in page and (tmp_path / "abstention.png").exists()
    from moelab.analysis import science
    table = science.abstention_table([flatten_run(r) | {"history": []} for r in rows])
    assert [t["seeds"] for t in table] == [2, 2, 2]
    assert table[0]["omniscience_index"].value == -89.5 and table[0]["omniscience_threshold"].value == -80.0
    assert table[1]["unknown_fraction"] == 0.2


def test_hash_and_learned_runs_of_one_shape_are_told_apart(monkeypatch):
    """Two runs that differ only in their router get their own legend entries and frontiers."""
    from moelab.analysis import report, science

    runs = ladder()
    for r in runs:
        if r["metrics"]["n_experts"] == 16:
            hashed = {**r, "key": "hashed", "label": "E=16 router=hash",
                      "metrics": {**r["metrics"], "bits": 2 * r["metrics"]["bits"],
                                  "config": {"model": {"moe": {"router": "hash"}}}}}
    runs.append(hashed)
    labels = []
    real_scatter = report.plt.Axes.scatter
    monkeypatch.setattr(report.plt.Axes, "scatter",
                        lambda self, *a, **k: labels.append(k.get("label")) or real_scatter(self, *a, **k))
    records = [flatten_run(r) for r in runs]
    assert {science.router_of(r) for r in records if r["n_experts"]} == {"learned", "hash"}
    report.headline_figure(records)
    assert "MoE E=16 k=1 hash router" in labels and "MoE E=16 k=1 learned router" in labels


def test_the_figure_and_the_table_give_one_interval_for_one_correlation():
    from moelab.analysis import report

    records = [flatten_run(r) for r in ladder()]
    stats, _ = attribution(records)
    done = [r for r in records if r["bits"] > 0]
    _, text = report._fit_text([r["p_total"] for r in done], [r["bits"] for r in done], True, "total parameters")
    assert f"Pearson r {stats['r(bits, P_total)']}" in text


def test_token_id_routed_runs_show_how_many_experts_their_facts_can_reach():
    from dataclasses import asdict

    from moelab.analysis.science_report import token_id_section
    from tests.conftest import small_config

    data = asdict(small_config().data)
    runs = []
    for i, (router, e) in enumerate([("hash", 4), ("stable", 64), ("learned", 8)]):
        r = row(i, e, 100_000, 10_000, 5_000.0, label=f"E={e} {router}")
        r["metrics"]["config"] = {"model": {"moe": {"router": router}}, "data": data}
        runs.append(r)
    section = "".join(token_id_section([flatten_run(r) for r in runs]))
    assert "Where routing by token id can put the facts" in section
    cells = [line for line in section.split("<tr>") if "people" in line]
    assert len(cells) == 4  # hash E=4 and StableMoE E=64, a name and a value probe each; the learned router has none
    assert token_id_section([flatten_run(runs[2])]) == []


def test_each_run_says_how_far_from_a_plateau_it_ended():
    r = row(0, 0, 29_000, 29_000, 9_000.0)
    r["metrics"]["history"] = [{"step": s, "loss": 2.0 - s / 1000} for s in range(0, 1001, 50)]
    record = flatten_run(r)
    assert abs(record["late_loss_drop"] - (1.1 - 1.0) / 1.1) < 1e-12  # steps 900 to 1000
    assert flatten_run(row(1, 0, 29_000, 29_000, 9_000.0))["late_loss_drop"] == ""  # no history


def test_the_router_table_reads_imbalance_and_fact_routing_from_store_rows():
    from moelab.analysis import science

    rows = []
    for seed, determinism in enumerate((0.6, 0.8)):
        r = row(seed, 32, 146_000, 18_800, 20_000.0, label=f"E=32 seed={seed}")
        r["metrics"]["fact_routing"] = [{"token_determinism": determinism, "experts_used": 20,
                                         "effective_experts": 10.0 + seed}]
        rows.append(r)
    (entry,) = science.router_table([flatten_run(r) for r in rows])
    assert entry["imbalance"] == 0.2  # each layer's max_violation, as the store row holds it
    assert abs(entry["determinism"] - 0.7) < 1e-12 and entry["effective_experts"] == 10.5


def test_runs_with_fact_routing_get_a_figure_of_bits_against_their_spread(tmp_path):
    rows = []
    for i, (router, determinism, spread) in enumerate([("learned", 0.6, 8.0), ("learned", 0.7, 9.0),
                                                         ("hash", 1.0, 27.0), ("hash", 1.0, 27.0)]):
        r = row(i, 32, 146_000, 18_800, 20_000.0 * (1 + i), label=f"E=32 {router} seed={i}")
        r["metrics"]["config"] = {"model": {"moe": {"router": router}}}
        r["metrics"]["fact_routing"] = [{"token_determinism": determinism, "experts_used": 32,
                                         "effective_experts": spread}]
        rows.append(r)
    page = write_report(rows, tmp_path, title="routers").read_text()
    assert "Routers: knowledge against how the facts are routed" in page
    assert (tmp_path / "fact_routing.png").stat().st_size > 5_000


def test_the_frontier_figure_names_points_by_expert_count_and_stars_the_ratio_at_three_percent(monkeypatch):
    from moelab.analysis import science, science_report
    from tests.analysis.test_science import record

    assert science_report.point_name("E=64 k=1 w=96 router=hash lr=0.01") == "E=64"
    assert science_report.point_name("E=64 k=2 w=96 router=stable") == "E=64 k=2"
    assert science_report.point_name("pkm n_keys=128") == "pkm n_keys=128"  # nothing to shorten: kept whole
    runs = [record(f"dense seed={s}", 0, 1.0, 1.0 + d) for s, d in enumerate((-0.01, 0.0, 0.01))]
    for s in range(2):
        runs += [record(f"E=64 k=1 w=96 seed={s}", 64, 0.05, 0.6), record(f"E=256 k=1 w=24 seed={s}", 256, 0.02, 0.2)]
    names, stars = [], []
    real_annotate, real_errorbar = science_report.plt.Axes.annotate, science_report.plt.Axes.errorbar
    monkeypatch.setattr(science_report.plt.Axes, "annotate",
                        lambda self, text, *a, **k: names.append(text) or real_annotate(self, text, *a, **k))
    monkeypatch.setattr(science_report.plt.Axes, "errorbar",
                        lambda self, x, y, *a, **k: (stars.append((x, y)) if k.get("marker") == "*" else None)
                        or real_errorbar(self, x, y, *a, **k))
    science_report.frontier_figure([science.frontiers(runs, n_boot=50)])
    assert names == ["E=64", "E=256"]
    [(x, y)] = stars
    assert x == science.TARGET_FRACTION and 0.2 < y < 0.6


def test_the_law_figure_draws_a_point_where_the_law_is_capped_hollow(monkeypatch):
    from moelab.analysis import science, science_report
    from tests.analysis.test_science import record

    runs = [record(f"dense d_ff={p} seed={s}", 0, 1.0, 1.0 + 0.01 * s, p_total=p)
            for p in (10_000, 20_000, 40_000) for s in (0, 1)]
    runs += [record(f"pkm N={n} seed={s}", 0, a, b, p_total=p, memory_kind="pkm")
             for n, p, a, b in ((1000, 160_000, 0.1, 0.5), (9000, 4_000_000, 0.005, 0.2)) for s in (0, 1)]
    faces = {}
    real_errorbar = science_report.plt.Axes.errorbar
    monkeypatch.setattr(science_report.plt.Axes, "errorbar",
                        lambda self, x, y, *a, **k: (faces.setdefault(x, k.get("markerfacecolor")),
                                                     real_errorbar(self, x, y, *a, **k))[1])
    science_report.law_figure(science.law_ratios(runs, n_boot=50))
    assert faces == {0.1: "tab:green", 0.005: "white"}  # 4M parameters: the law's model would hold the whole base


def test_a_rate_chosen_at_an_end_of_the_grid_is_flagged():
    from moelab.analysis.science_report import grid_edge, selection_section

    def record(chosen, rates, fixed=False):
        return {"configuration": "pkm", "by": "bits", "seeds": [100], "fixed": fixed, "chosen": {"train.lr": chosen},
                "candidates": [{"values": {"train.lr": lr}, "finished": 1, "bits": 1.0, "keys": []} for lr in rates]}

    assert grid_edge(record(3e-3, [3e-3, 1e-2])) == "the lowest lr"
    assert grid_edge(record(3e-2, [1e-3, 3e-3, 3e-2])) == "the highest lr"
    assert grid_edge(record(3e-3, [1e-3, 3e-3, 1e-2])) is None
    assert grid_edge(record(3e-3, [3e-3], fixed=True)) is None
    page = "".join(selection_section([record(3e-3, [3e-3, 1e-2]), record(3e-3, [1e-3, 3e-3, 1e-2])]))
    assert page.count("the best may lie beyond") == 1


def test_the_headline_figure_draws_memory_layer_runs(monkeypatch):
    """Memory runs are neither dense nor MoE; they get their own markers, and a figure of memory
    runs alone draws (it raised on an empty legend before)."""
    from moelab.analysis import report

    runs = [row(i, 0, total, 11_000, 0.1 * total, label=f"pkm N={n}") for i, (n, total) in
            enumerate([(2500, 91_000), (16384, 538_000)])]
    for r in runs:
        r["metrics"]["memory_kind"] = "pkm"
    labels = []
    real_scatter = report.plt.Axes.scatter
    monkeypatch.setattr(report.plt.Axes, "scatter",
                        lambda self, *a, **k: labels.append(k.get("label")) or real_scatter(self, *a, **k))
    report.headline_figure([flatten_run(r) for r in runs])
    assert "memory layer: pkm" in labels
