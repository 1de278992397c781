"""Summaries of the science presets, from flat run records (report.flatten_run rows plus metrics):
seeds pooled into groups, the sparsity frontier and its knees, exposures, load balance over
training, and reasoning accuracy. Each function returns plain numbers; report.py draws them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from scipy import special

from moelab.analysis.fit import Estimate, LinearFit, t_quantile
from moelab.config import REASONING_KINDS

LEVEL = 0.95
PROPORTIONS = {"accuracy", "hallucination_rate", "recall_a_after", "recall_b_after"}  # metrics bounded by [0, 1]
PROPORTION_FLOOR = 1e-4  # logits of 0 and 1 are infinite: clip to this distance from the bounds
RATIOS = {"dense_over_moe"}  # ratios of positive quantities: intervals on their logs, so they stay above 0


def group_label(label: str) -> str:
    """A run label without its seed: the runs of one configuration pooled over seeds."""
    return re.sub(r"\s*seed=\d+", "", label).strip()


def _is_reasoning(r: dict) -> bool:
    return r.get("data_kind") in REASONING_KINDS  # a task with no knowledge to store


def is_memory(r: dict) -> bool:
    """A run with a memory layer (PKM or PEER) in place of a feed-forward (records from before
    memory layers have no memory_kind)."""
    return r.get("memory_kind", "none") not in ("none", "", None)


def is_dense(r: dict) -> bool:
    """A run with neither routed experts nor memory layers."""
    return not r["n_experts"] and not is_memory(r)


def knowledge_runs(records: list[dict]) -> list[dict]:
    """Finished runs on one knowledge base (reasoning runs store no knowledge, and continued runs,
    trained on two, have their own section: both are left out)."""
    return [r for r in records if r["status"] == "done" and not _is_reasoning(r) and not r.get("continual")]


def continued_runs(records: list[dict]) -> list[dict]:
    return [r for r in records if r["status"] == "done" and r.get("continual")]


def reasoning_runs(records: list[dict]) -> list[dict]:
    return [r for r in records if r["status"] == "done" and _is_reasoning(r)]


@dataclass
class Group:
    label: str
    runs: list[dict]

    def values(self, key: str) -> np.ndarray:
        return np.array([r[key] for r in self.runs], dtype=float)

    def mean(self, key: str) -> float:
        return float(self.values(key).mean())

    def range(self, key: str) -> tuple[float, float]:
        """The lowest and highest value over the seeds."""
        v = self.values(key)
        return float(v.min()), float(v.max())

    def interval(self, key: str) -> Estimate:
        """Mean over seeds with a t interval (the value alone for one seed). Proportions (recall,
        accuracy) get the t interval of their logits, mapped back, so it stays inside [0, 1];
        ratios (RATIOS) that of their logs, so it stays above 0 (two seeds 2x apart would otherwise
        give a lower bound below zero)."""
        v = self.values(key)
        mean = float(v.mean())
        if len(v) < 2:
            return Estimate(mean, math.nan, math.nan, LEVEL)
        t = t_quantile(LEVEL, len(v) - 1)
        if key in PROPORTIONS or key in RATIOS:  # the interval on an unbounded scale, mapped back
            to_scale, back = ((lambda x: special.logit(np.clip(x, PROPORTION_FLOOR, 1 - PROPORTION_FLOOR)), special.expit)
                              if key in PROPORTIONS else (np.log, np.exp))
            w = to_scale(v)
            half = t * w.std(ddof=1) / math.sqrt(len(v))
            low, high = back(w.mean() - half), back(w.mean() + half)
            return Estimate(mean, float(min(low, mean)), float(max(high, mean)), LEVEL)
        half = t * v.std(ddof=1) / math.sqrt(len(v))
        return Estimate(mean, float(mean - half), float(mean + half), LEVEL)


def groups(records: list[dict]) -> list[Group]:
    by_label: dict[str, list[dict]] = {}
    for r in records:
        by_label.setdefault(group_label(r["label"]), []).append(r)
    return [Group(label, runs) for label, runs in by_label.items()]


# ---------------------------------------------------------------------------------------------
# the sparsity frontier


SAME_TOTAL = 0.05  # totals within 5% of each other count as one total


def router_of(record: dict) -> str:
    """A MoE run's router ('learned', 'hash', ...): a report record's `router`, else its config's;
    records with neither are learned (the default)."""
    return (record.get("router") or ((record.get("config") or {}).get("model", {}).get("moe", {}).get("router"))
            or "learned")


@dataclass
class DenseReference:
    """What a sparse model is compared with at its total P. The dense law (Allen-Zhu & Li's
    comparison): bits against parameters over a ladder of smaller dense models at the same
    knowledge base and exposures, log bits = a + b log P fitted when there are three sizes or more
    (bits proportional to P, the paper's law, with fewer), evaluated at P. Without a ladder: the
    dense runs of total P themselves. Intervals resample the runs within each dense size. The law
    is capped at the knowledge base's information: no model stores more than there is, so where
    the law's model would hold the whole base, a sparse model that holds it too scores 1."""

    kind: str  # "dense law" or "same-total dense"
    total: float
    bits_per_param: Estimate  # of a dense model of `total` parameters
    sizes: list[float]  # the dense totals it rests on
    slope: Estimate | None = None  # the law's exponent b (None: fixed at 1, or no law)
    check: Estimate | None = None  # with a law: the same-total dense runs' measured bits per param
    runs_bits: list[np.ndarray] = field(default_factory=list, repr=False)  # each size's runs: bits (law)
    same_bits_per_param: np.ndarray | None = field(default=None, repr=False)  # same-total runs (no law)
    ceiling: float = math.inf  # the knowledge base's information per parameter at `total`
    uncapped: Estimate | None = None  # the law before the cap, where the cap binds

    @property
    def capped(self) -> bool:
        return self.uncapped is not None

    def draw(self, rng: np.random.Generator) -> float:
        """One bootstrap draw of `bits_per_param`: runs resampled within each dense size."""
        if self.kind == "same-total dense":
            return float(rng.choice(self.same_bits_per_param, len(self.same_bits_per_param)).mean())
        return min(_law_bits_per_param(self.runs_bits, np.array(self.sizes), self.total, rng)[0], self.ceiling)

    def describe(self) -> str:
        sizes = ", ".join(f"{s:,.0f}" for s in self.sizes)
        if self.kind == "same-total dense":
            return f"the dense runs of {self.total:,.0f} parameters: {self.bits_per_param.format('.3f')} bits/param"
        law = (f"log bits = a + b log P fitted over dense sizes {sizes} (b = {self.slope.format('.2f')})"
               if self.slope is not None else f"bits proportional to parameters, from dense sizes {sizes}")
        text = f"the dense law ({law}) at {self.total:,.0f} parameters: {self.bits_per_param.format('.3f')} bits/param"
        if self.capped:
            text += (f", capped at the knowledge base's information ({self.ceiling * self.total:,.0f} bits; the law "
                     f"uncapped: {self.uncapped.format('.3f')})")
        if self.check is not None:
            text += f"; the dense run{'s' if math.isfinite(self.check.low) else ''} of that total measured {self.check.format('.3f')}"
        return text


def _law_bits_per_param(ladder: list[np.ndarray], sizes: np.ndarray, total: float,
                        rng: np.random.Generator | None = None) -> tuple[float, float]:
    """(bits per parameter at `total`, slope b or nan) from each ladder size's runs' bits (resampled
    within each size when `rng` is given)."""
    bits = [rng.choice(b, len(b)) if rng is not None else b for b in ladder]
    x = np.concatenate([np.full(len(b), math.log10(s)) for b, s in zip(bits, sizes)])
    y = np.log10(np.clip(np.concatenate(bits), 1e-9, None))
    if len(sizes) >= 3:
        slope, intercept = np.polyfit(x, y, 1)
        return float(10 ** (intercept + slope * math.log10(total)) / total), float(slope)
    return float(np.mean([np.mean(b) / s for b, s in zip(bits, sizes)])), math.nan


def _information(runs: list[dict]) -> float:
    """The knowledge base's information in bits, the mean over `runs` (which share one base);
    infinite where a run does not record it, so that nothing is capped by an unknown base."""
    known = [r.get("information_bits") for r in runs]
    return float(np.mean(known)) if known and all(isinstance(v, int | float) for v in known) else math.inf


def _is_a_ladder(ladder: list[Group]) -> bool:
    """Whether dense configurations make a scaling law: one per size, on one knowledge base at one
    number of exposures. Dense runs that share a size differ in something else (a learning-rate
    check), and runs on different bases (a width sweep) lie on different laws."""
    sizes = [g.mean("p_total") for g in ladder]
    distinct = all(b > a * (1 + SAME_TOTAL) for a, b in zip(sizes, sizes[1:]))  # sorted by size
    one_base = len({(r.get("n_people"), r.get("exposures")) for g in ladder for r in g.runs}) <= 1
    return distinct and one_base


def dense_reference(records: list[dict], total: float, n_boot: int = 2000, seed: int = 0,
                    law: bool = True) -> DenseReference | None:
    """The dense reference at `total` parameters: the dense law when smaller dense sizes were run
    (and `law`), else the dense runs of that total; None without either."""
    dense = groups([r for r in knowledge_runs(records) if is_dense(r)])
    same = [g for g in dense if abs(g.mean("p_total") / total - 1) < SAME_TOTAL]
    ladder = sorted((g for g in dense if g.mean("p_total") < total * (1 - SAME_TOTAL)), key=lambda g: g.mean("p_total"))
    ladder = [g for g in ladder if (g.values("bits") > 0).all()]  # a law in logs needs bits above zero
    if not law or not _is_a_ladder(ladder):
        ladder = []
    same_values = np.concatenate([g.values("bits_per_param") for g in same]) if same else None
    check = Group("same", [{"r": x} for x in same_values]).interval("r") if same else None
    if not ladder:
        return None if check is None else DenseReference("same-total dense", total, check, [same[0].mean("p_total")],
                                                          same_bits_per_param=same_values)
    sizes = np.array([g.mean("p_total") for g in ladder])
    bits = [g.values("bits") for g in ladder]
    value, slope = _law_bits_per_param(bits, sizes, total)
    rng = np.random.default_rng(seed)
    draws = np.array([_law_bits_per_param(bits, sizes, total, rng) for _ in range(n_boot)])
    level = (0.5 - LEVEL / 2, 0.5 + LEVEL / 2)
    estimate = Estimate(value, *map(float, np.quantile(draws[:, 0], level)), LEVEL)
    slope_estimate = (Estimate(slope, *map(float, np.quantile(draws[:, 1], level)), LEVEL)
                      if math.isfinite(slope) else None)
    ceiling = _information([r for g in ladder for r in g.runs]) / total
    capped = Estimate(*(min(x, ceiling) for x in (estimate.value, estimate.low, estimate.high)), LEVEL)
    return DenseReference("dense law", total, capped, [float(s) for s in sizes], slope_estimate, check, bits,
                          ceiling=ceiling, uncapped=estimate if estimate.value > ceiling else None)


@dataclass
class FrontierPoint:
    label: str
    active_fraction: float
    n_seeds: int
    ratio: Estimate  # bits per total parameter relative to the dense reference (t interval over seeds)
    ratio_with_reference: Estimate  # the same with the reference's own uncertainty (bootstrap percentiles)
    seed_ratios: list[float] = field(default_factory=list)  # each seed's ratio: a spread that is bimodal shows here
    paper_fraction: float | None = None  # active fraction by the paper's count (`paper_active`), where known


@dataclass
class TargetRatio:
    """Bits per total parameter relative to the reference at one active fraction, interpolated in
    log active fraction between the two measured configurations either side of it."""
    fraction: float
    count: str  # "moelab" (every parameter) or "paper" (`paper_total`, `paper_active`)
    between: tuple[str, str]  # the configurations either side, denser first
    ratio: Estimate  # bootstrap percentiles over seeds and the reference's runs


@dataclass
class Frontier:
    router: str  # the routing every point of this frontier uses
    reference: DenseReference
    points: list[FrontierPoint]  # by active fraction, descending
    knees: dict[float, Estimate]  # level -> active fraction where the frontier falls below it
    curve: list[tuple[float, float]]  # the frontier itself: (active fraction, ratio), dense first
    smallest_fraction: float
    sparsest: FrontierPoint  # the sparsest configuration measured: the verdict at the floor
    at_target: list[TargetRatio] = field(default_factory=list)  # at TARGET_FRACTION, per count that brackets it


def frontier_curve(dense: float, moe: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The frontier: (active fraction, bits-per-param ratio to dense), dense first, by descending
    fraction, keeping only configurations that no sparser one beats. A configuration that stores
    less than a sparser one is not the way to reach its sparsity, so it does not set the knee."""
    points = sorted(((f, b / dense) for f, b in moe), reverse=True)
    envelope, best_sparser = [], -math.inf
    for f, r in reversed(points):  # from the sparsest up
        if r > best_sparser:
            envelope.append((f, r))
            best_sparser = r
    return [(1.0, 1.0)] + envelope[::-1]


def knee(curve: list[tuple[float, float]], level: float) -> float:
    """The active fraction where the ratio first drops below `level` going sparser, interpolated
    in log active fraction; nan when it never does in the measured range."""
    for (f0, r0), (f1, r1) in zip(curve, curve[1:]):
        if r1 < level <= r0:
            t = (r0 - level) / (r0 - r1)
            return float(10 ** (math.log10(f0) + t * (math.log10(f1) - math.log10(f0))))
    return math.nan


def interpolate_at(points: list[tuple[float, float]], fraction: float) -> float:
    """The value at `fraction` on the line through (active fraction, value) points, linear in log
    active fraction between the two measured either side of it; nan outside their range."""
    points = sorted(points)
    for (f0, v0), (f1, v1) in zip(points, points[1:]):
        if f0 <= fraction <= f1:
            t = 0.0 if f1 == f0 else (math.log(fraction) - math.log(f0)) / (math.log(f1) - math.log(f0))
            return v0 + t * (v1 - v0)
    return math.nan


def _bracket(fractions: list[float], target: float) -> tuple[int, int] | None:
    """Indices of the sparsest configuration at or above `target` and the densest below it."""
    above = [i for i, f in enumerate(fractions) if f >= target]
    below = [i for i, f in enumerate(fractions) if f < target]
    if not above or not below:
        return None
    return min(above, key=lambda i: fractions[i]), max(below, key=lambda i: fractions[i])


def sparse_total(records: list[dict]) -> float | None:
    """The MoE runs' total parameters (their median), which the frontier holds fixed; None without MoE runs."""
    totals = [r["p_total"] for r in knowledge_runs(records) if r["n_experts"]]
    return float(np.median(totals)) if totals else None


PAPER_RATIO = 1.5  # Allen-Zhu & Li's Result 9: 32 top-1 experts store 1.5x fewer bits per total parameter than dense
KNEE_LEVELS = (0.9, 1 / PAPER_RATIO, 0.5)  # 90% and 50% of dense, and within the paper's 1.5x
TARGET_FRACTION = 0.03  # the regime the lab's question is about: Kimi K2 runs ~3% of its parameters active


def frontiers(records: list[dict], levels=KNEE_LEVELS, n_boot: int = 2000, seed: int = 0,
              target: float = TARGET_FRACTION, law: bool = True) -> list[Frontier]:
    """One frontier per router: bits per total parameter against active fraction at the MoE runs'
    fixed total, relative to the dense reference there (`dense_reference`; with `law` False, the
    dense runs of that total even where a ladder makes a law); knees on the frontier
    (the best configuration at each sparsity, see `frontier_curve`) and the ratio at `target` active
    (`TargetRatio`, by moelab's count and by the paper's) with percentile intervals from resampling
    seeds within each group and the reference's runs within each dense size."""
    total = sparse_total(records)
    if total is None:
        return []
    sparse = [r for r in knowledge_runs(records) if r["n_experts"]]
    reference = dense_reference(records, total, n_boot, seed, law)
    if reference is None:
        return []
    quantiles = (0.5 - LEVEL / 2, 0.5 + LEVEL / 2)
    out = []
    for router in sorted({router_of(r) for r in sparse}):
        moe = groups([r for r in sparse if router_of(r) == router and abs(r["p_total"] / total - 1) < SAME_TOTAL])
        if len(moe) < 2:
            continue
        fractions = [g.mean("active_fraction") for g in moe]
        paper = ([float(np.mean([paper_active(r) / paper_total(r) for r in g.runs])) for g in moe]
                 if all(r.get("params") for g in moe for r in g.runs) else None)
        counts = {"moelab": fractions, **({"paper": paper} if paper else {})}
        brackets = {name: b for name, f in counts.items() if (b := _bracket(f, target)) is not None}
        samples = [g.values("bits_per_param") for g in moe]
        denominator = reference.bits_per_param.value
        curve = frontier_curve(denominator, [(f, s.mean()) for f, s in zip(fractions, samples)])
        rng = np.random.default_rng(seed)
        boot = {level: [] for level in levels}
        boot_ratios: list[list[float]] = [[] for _ in moe]
        for _ in range(n_boot):
            d = reference.draw(rng)
            means = [rng.choice(s, len(s)).mean() for s in samples]
            c = frontier_curve(d, list(zip(fractions, means)))
            for level in levels:
                boot[level].append(knee(c, level))
            for i, m in enumerate(means):
                boot_ratios[i].append(m / d)
        knees = {}
        for level in levels:
            draws = np.array(boot[level])
            reached = draws[np.isfinite(draws)]
            low, high = (np.quantile(reached, quantiles) if len(reached) == len(draws)
                         else (math.nan, math.nan))  # some resamples never cross: no finite interval
            knees[level] = Estimate(knee(curve, level), float(low), float(high), LEVEL)
        at_target = []
        for name, (a, b) in brackets.items():
            f = counts[name]
            value = interpolate_at([(f[a], samples[a].mean() / denominator), (f[b], samples[b].mean() / denominator)],
                                   target)
            draws = [interpolate_at([(f[a], ra), (f[b], rb)], target) for ra, rb in zip(boot_ratios[a], boot_ratios[b])]
            at_target.append(TargetRatio(target, name, (moe[a].label, moe[b].label),
                                         Estimate(value, *map(float, np.quantile(draws, quantiles)), LEVEL)))
        points = []
        for i in sorted(range(len(moe)), key=lambda i: -fractions[i]):
            seeds = Group(moe[i].label, [{"r": x} for x in samples[i] / denominator]).interval("r")
            both = Estimate(seeds.value, *map(float, np.quantile(boot_ratios[i], quantiles)), LEVEL)
            points.append(FrontierPoint(moe[i].label, fractions[i], len(samples[i]), seeds, both,
                                        [float(x) for x in samples[i] / denominator], paper[i] if paper else None))
        out.append(Frontier(router, reference, points, knees, curve, min(fractions), points[-1], at_target))
    return out


# ---------------------------------------------------------------------------------------------
# every sparse model against the dense law at its own total (memory layers, whose totals differ)


def kind_of(record: dict) -> str:
    """What makes a sparse run sparse: its memory kind ('pkm', 'peer') or its router."""
    memory = record.get("memory_kind") or "none"
    return memory if memory != "none" else router_of(record)


def law_ratios(records: list[dict], n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Each sparse configuration (routed experts or a memory layer) against the dense law at its
    own total: its bits over what the law says a dense model of that total stores (capped at the
    knowledge base's information, `DenseReference`). A t interval over seeds, and one that also
    resamples the law's runs; `base_share` is the share of the knowledge base stored;
    `plateau_exits` (each seed's `plateau_exit`) and `loss_fall` (`late_loss_drop`, the mean over
    seeds) say how far from a plateau the configuration ended. Empty without a ladder of smaller
    dense sizes."""
    out = []
    sparse = groups([r for r in knowledge_runs(records) if not is_dense(r)])
    rng = np.random.default_rng(seed)
    for g in sorted(sparse, key=lambda g: (kind_of(g.runs[0]), -g.mean("active_fraction"))):
        total = g.mean("p_total")
        reference = dense_reference(records, total, n_boot, seed)
        if reference is None or reference.kind != "dense law":
            continue
        information = _information(g.runs)
        law_bits = reference.bits_per_param.value * total
        bits = g.values("bits")
        draws = [rng.choice(bits, len(bits)).mean() / (reference.draw(rng) * total) for _ in range(n_boot)]
        level = (0.5 - LEVEL / 2, 0.5 + LEVEL / 2)
        out.append({"label": g.label, "kind": kind_of(g.runs[0]), "seeds": len(g.runs), "p_total": total,
                    "active_fraction": g.mean("active_fraction"), "law_bits": law_bits,
                    "law_capped": reference.capped,
                    "ratio": Group(g.label, [{"r": b / law_bits} for b in bits]).interval("r"),
                    "ratio_with_law": Estimate(float(bits.mean() / law_bits), *map(float, np.quantile(draws, level)),
                                               LEVEL),
                    "base_share": float(bits.mean() / information) if math.isfinite(information) else None,
                    "plateau_exits": [plateau_exit(r) for r in g.runs],  # how far from a plateau each point is
                    "loss_fall": mean_or_none(late_loss_drop(r) for r in g.runs)})
    return out


# ---------------------------------------------------------------------------------------------
# dense against MoE per total parameter (the paper's Result 9 ratio)


def paper_total(record: dict) -> float:
    """Total parameters as Allen-Zhu & Li count them: attention, MLPs and experts, without
    embeddings, norms and routers (their 32-expert d-d-d layer is 68 d^2 in all, 6 d^2 active)."""
    p = record["params"]
    return p["attention"] + p["dense_mlp"] + p["routed_experts"] + p["shared_experts"]


def paper_active(record: dict) -> float:
    p = record["params"]
    return p["attention"] + p["dense_mlp"] + p["routed_experts_active"] + p["shared_experts"]


def dense_moe_ratios(records: list[dict]) -> list[dict]:
    """For each dense and each MoE configuration of the same width and knowledge base: dense bits
    per total parameter over MoE bits per total parameter, under moelab's accounting (every
    parameter) and the paper's (`paper_total`), over the seeds the two share: the ratio per seed,
    their mean, and a t interval of their logs (RATIOS)."""
    runs = [r for r in knowledge_runs(records) if r.get("params")]
    dense = groups([r for r in runs if is_dense(r)])
    moe = groups([r for r in runs if r["n_experts"]])
    out = []
    for d in dense:
        for m in moe:
            if any(d.runs[0].get(f) != m.runs[0].get(f) for f in ("d_model", "n_people")):
                continue  # a ratio across widths or bases compares two experiments, not two architectures
            by_seed = {r["seed"]: r for r in d.runs}
            pairs = [(by_seed[r["seed"]], r) for r in m.runs if r["seed"] in by_seed]
            if not pairs:
                continue
            ours = [(a["bits"] / a["p_total"]) / (b["bits"] / b["p_total"]) for a, b in pairs]
            paper = [(a["bits"] / paper_total(a)) / (b["bits"] / paper_total(b)) for a, b in pairs]
            out.append({"dense": d.label, "moe": m.label, "seeds": len(pairs), "d_model": d.runs[0].get("d_model"),
                        "dense_total": d.runs[0]["p_total"],
                        "moe_total": m.runs[0]["p_total"],
                        "moe_active_fraction": m.mean("active_fraction"),
                        "moe_active_fraction_paper": float(np.mean([paper_active(b) / paper_total(b) for _, b in pairs])),
                        "per_seed": ours, "per_seed_paper": paper,
                        "ratio": Group("", [{"dense_over_moe": x} for x in ours]).interval("dense_over_moe"),
                        "ratio_paper": Group("", [{"dense_over_moe": x} for x in paper]).interval("dense_over_moe")})
    return out


# What a width sweep changes with d_model, as run labels spell it: the widths (an expert's is "w"),
# the base that grows with them, and the learning rate chosen per width (sweeps.selection).
WIDTH_FIELDS = re.compile(r"\s*\b(d_model|d_ff|w|expert_width|n_people|lr)=\S+")


def _doubling_factor(widths: list[float], ratios: list[float]) -> Estimate:
    """The factor by which a ratio changes per doubling of d_model: 2 ** b for the least-squares
    line log2(ratio) = a + b log2(d_model) through every seed's ratio, with a t interval on b
    (n - 2 degrees of freedom; no interval with fewer than three ratios)."""
    x, y = np.log2(widths), np.log2(ratios)
    if len(x) < 3:  # two ratios at two widths: the line through them
        b = float((y[1] - y[0]) / (x[1] - x[0]))
        return Estimate(2 ** b, math.nan, math.nan, LEVEL)
    b = LinearFit().fit(x, y).coef_interval(1, LEVEL)
    return Estimate(2 ** b.value, 2 ** b.low, 2 ** b.high, LEVEL)


def width_trend(records: list[dict]) -> list[dict]:
    """Does a MoE's gap to dense close as the model widens? For each MoE configuration measured
    against dense at two or more widths (the labels without WIDTH_FIELDS): its seed-paired ratios
    per width (`dense_moe_ratios`) and the factor by which the ratio changes per doubling of
    d_model, under moelab's count and the paper's. A factor below 1 whose interval stays below 1:
    the gap closes with width. A configuration with two pairs at one width (a learning rate varied
    by the grid, not chosen per width) has no single trend and is left out."""
    by_configuration: dict[tuple[str, str], list[dict]] = {}
    for r in dense_moe_ratios(records):
        if r["d_model"]:
            key = (WIDTH_FIELDS.sub("", r["dense"]).strip(), WIDTH_FIELDS.sub("", r["moe"]).strip())
            by_configuration.setdefault(key, []).append(r)
    out = []
    for (dense, moe), rows in by_configuration.items():
        rows = sorted(rows, key=lambda r: r["d_model"])
        measured = [r["d_model"] for r in rows]
        if len(set(measured)) < 2 or len(set(measured)) < len(measured):
            continue
        widths = [r["d_model"] for r in rows for _ in r["per_seed"]]
        out.append({"dense": dense, "moe": moe, "widths": measured,
                    "ratios": [r["ratio"] for r in rows], "points": len(widths),
                    "per_doubling": _doubling_factor(widths, [x for r in rows for x in r["per_seed"]]),
                    "per_doubling_paper": _doubling_factor(widths, [x for r in rows for x in r["per_seed_paper"]])})
    return out


def late_loss_drop(record: dict, tail: float = 0.1) -> float | None:
    """How far from a plateau a run ended: the relative fall of its training loss over the last
    `tail` of its steps, (first - last) / first over the history records in that stretch (each
    record already averages the steps since the one before). Near 0: on a plateau; None without
    two records there."""
    history = [r for r in record.get("history") or [] if "loss" in r]
    if not history:
        return None
    end = history[-1]["step"]
    late = [r for r in history if r["step"] >= (1 - tail) * end]
    if len(late) < 2 or late[0]["loss"] <= 0:
        return None
    return (late[0]["loss"] - late[-1]["loss"]) / late[0]["loss"]


PLATEAU_EXIT_DROP = 0.1  # nats a token: ~100x the noise of a history record's loss on the frontier's runs
EARLY = 0.1  # the flat stretch before memorization is looked for in the first tenth of a run


def plateau_loss(record: dict, early: float = EARLY) -> float | None:
    """The loss of the flat stretch before memorization: the lowest training loss of the run's
    first `early` of steps (its first history record at least); None without a history. There a
    run has learned the text's format and how often each value occurs but no fact yet (Allen-Zhu &
    Li's knowledge curves stay flat there before recall climbs)."""
    history = [r for r in record.get("history") or [] if "loss" in r]
    if not history:
        return None
    end = history[-1]["step"]
    return min(r["loss"] for r in history if r["step"] <= early * end or r is history[0])


def plateau_exit(record: dict, drop: float = PLATEAU_EXIT_DROP, early: float = EARLY) -> float | None:
    """When memorization took off: the first history step at which the training loss lay `drop`
    nats a token below `plateau_loss`; a run that leaves the plateau late has fewer steps left to
    store facts. math.inf when the loss never fell that far (a run that stalled); None without a
    history."""
    plateau = plateau_loss(record, early)
    if plateau is None:
        return None
    return next((float(r["step"]) for r in record["history"] if "loss" in r and r["loss"] <= plateau - drop),
                math.inf)


# ---------------------------------------------------------------------------------------------
# routers: knowledge against routing churn

CHURN_TAIL = 0.1  # churn is averaged over the last 10% of a run's history records


def _history_means(record: dict, key: str) -> list[float]:
    """Per history record carrying `key` (a value per MoE layer, None where a layer has none):
    its mean over the layers."""
    return [float(np.mean([v for v in r[key] if v is not None])) for r in record.get("history") or []
            if any(v is not None for v in r.get(key) or [])]


def _tail_mean(values: list[float]) -> float | None:
    """The mean of the last CHURN_TAIL of `values` (at least one); None for none."""
    return float(np.mean(values[-max(1, math.ceil(CHURN_TAIL * len(values))):])) if values else None


def mean_or_none(values) -> float | None:
    """The mean of the values that are not None; None if every one is."""
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def final_churn(record: dict, key: str = "churn") -> float | None:
    """The share of probe tokens (`churn`) or fact positions (`fact_churn`) whose top-1 expert
    changed between consecutive history records, averaged over the MoE layers and over the last
    CHURN_TAIL of the records: how much routing still moves at the end of training. None for a
    run without such records (dense, or trained before they were recorded)."""
    return _tail_mean(_history_means(record, key))


def mean_churn(record: dict, key: str = "churn") -> float | None:
    """`final_churn`'s measure averaged over every history record of the run, not its last tenth:
    how much routing moved over the whole of training (at paper-moe's scale every learned router
    ends below 4% while their bits differ 4x; what differs is how long they churned)."""
    return mean_or_none(_history_means(record, key))


def final_imbalance(record: dict) -> float | None:
    """The evaluation's load imbalance: the largest expert's share of tokens over the mean share,
    minus 1 (0 is perfectly balanced), averaged over the MoE layers; None without routing records."""
    return mean_or_none(r.get("max_violation") for r in record.get("routing") or [])


def fact_routing_mean(record: dict, key: str) -> float | None:
    """A measure of how the trained model routes its recall values (`token_determinism`,
    `effective_experts`: evaluation/routing.py, fact_routing) averaged over the MoE layers; None
    for a run without it (dense, or finished before it was recorded)."""
    return mean_or_none(layer.get(key) for layer in record.get("fact_routing") or [])


def final_agreement(record: dict) -> float | None:
    """For balanced assignment in training (BASE): the share of a training batch's tokens whose
    balanced expert is also their greedy top-1 expert, the one evaluation routes them to, averaged
    over the layers and the last CHURN_TAIL of the records; None for other routers."""
    return _tail_mean(_history_means(record, "assignment_agreement"))


def router_table(records: list[dict]) -> list[dict]:
    """Per MoE configuration: its router, bits stored (t interval over seeds), bits per total
    parameter, the routing churn and fact churn at the end of training and over the whole run, the
    evaluation's load imbalance, how the recall values are routed (token determinism, effective
    experts) and, for balanced assignment, its agreement with greedy routing (means over seeds)."""
    out = []
    for g in groups([r for r in knowledge_runs(records) if r["n_experts"]]):
        out.append({"label": g.label, "router": router_of(g.runs[0]), "seeds": len(g.runs),
                    "active_fraction": g.mean("active_fraction"), "bits": g.interval("bits"),
                    "bits_per_param": g.mean("bits_per_param"),
                    "churn": mean_or_none(final_churn(r) for r in g.runs),
                    "fact_churn": mean_or_none(final_churn(r, "fact_churn") for r in g.runs),
                    "churn_mean": mean_or_none(mean_churn(r) for r in g.runs),
                    "fact_churn_mean": mean_or_none(mean_churn(r, "fact_churn") for r in g.runs),
                    "imbalance": mean_or_none(final_imbalance(r) for r in g.runs),
                    "determinism": mean_or_none(fact_routing_mean(r, "token_determinism") for r in g.runs),
                    "effective_experts": mean_or_none(fact_routing_mean(r, "effective_experts") for r in g.runs),
                    "agreement": mean_or_none(final_agreement(r) for r in g.runs)})
    return out


# ---------------------------------------------------------------------------------------------
# exposures and load balance


def exposure_table(records: list[dict]) -> list[dict]:
    """Dense runs of one size trained for different numbers of exposures (empty if none vary)."""
    runs = [r for r in knowledge_runs(records) if is_dense(r)]
    by_size: dict[int, list[dict]] = {}
    for r in runs:
        by_size.setdefault(r["p_total"], []).append(r)
    for size, rs in by_size.items():
        if len({r["exposures"] for r in rs}) >= 3:
            return [{"p_total": size, "exposures": r["exposures"], "bits": r["bits"],
                     "bits_per_param": r["bits_per_param"], "accuracy": r["accuracy"]}
                    for r in sorted(rs, key=lambda r: r["exposures"])]
    return []


def violation_table(records: list[dict]) -> list[dict]:
    """Per configuration (seeds pooled): max load violation early, on average and at the end of
    training, bits stored and recall, for MoE runs whose history records the violation."""
    out = []
    for g in groups([r for r in knowledge_runs(records) if r["n_experts"] and r.get("history")]):
        histories = [[h["max_violation"] for h in r["history"] if "max_violation" in h] for r in g.runs]
        if not all(histories):
            continue
        out.append({"label": g.label, "seeds": len(g.runs),
                    "first": float(np.mean([h[0] for h in histories])),
                    "mean": float(np.mean([np.mean(h) for h in histories])),
                    "last": float(np.mean([h[-1] for h in histories])),
                    "bits": g.interval("bits"), "accuracy": g.interval("accuracy")})
    return out


# ---------------------------------------------------------------------------------------------
# abstention and continued training


ABSTENTION_METRICS = ("omniscience_index", "hallucination_rate", "omniscience_threshold", "accuracy", "bits",
                      "bits_per_param")


def abstention_table(records: list[dict]) -> list[dict]:
    """Per configuration (seeds pooled, t intervals): the Omniscience Index, hallucination rate,
    the threshold baseline's best index, recall and bits, for runs measured for abstention."""
    runs = [r for r in knowledge_runs(records) if r.get("omniscience_index") not in ("", None)]
    return [{"label": g.label, "architecture": re.sub(r"\s*(n_people|unknown_fraction)=\S+", "", g.label).strip(),
             "seeds": len(g.runs), "p_total": g.mean("p_total"), "p_active": g.mean("p_active"),
             "n_people": g.runs[0].get("n_people"), "unknown_fraction": g.mean("unknown_fraction"),
             **{k: g.interval(k) for k in ABSTENTION_METRICS},
             **{f"{k}_range": g.range(k) for k in ABSTENTION_METRICS}}
            for g in groups(runs)]


CONTINUAL_METRICS = ("bits_gained_b", "bits_lost_a", "forgetting", "recall_a_after", "recall_b_after")


def continual_table(records: list[dict]) -> list[dict]:
    """Per continued configuration (seeds pooled, t intervals): bits gained on B, bits lost on A,
    forgetting (the share of A's bits lost), recall on A and B after, and what it took."""
    out = []
    for g in groups(continued_runs(records)):
        rows = [r["continual"] for r in g.runs]
        flat = Group(g.label, [{k: c[k] for k in CONTINUAL_METRICS} for c in rows])
        architecture, _, strategy = g.label.partition(" continued")
        out.append({"label": g.label, "architecture": architecture, "strategy": strategy.strip() or "continued",
                    "seeds": len(g.runs), "p_total": g.mean("p_total"),
                    "p_active": g.mean("p_active"), "steps": rows[0]["steps"],
                    "trainable_params": float(np.mean([c["trainable_params"] for c in rows])),
                    "added_params": float(np.mean([c["added_params"] for c in rows])),
                    "bits_a_before": float(np.mean([c["bits_a_before"] for c in rows])),
                    "information_bits_b": rows[0]["information_bits_b"],
                    **{k: flat.interval(k) for k in CONTINUAL_METRICS},
                    **{f"{k}_range": flat.range(k) for k in CONTINUAL_METRICS}})
    return out
