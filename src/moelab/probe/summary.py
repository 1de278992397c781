"""A probe's metrics from its graded records: at the shortest context (overall, by domain, by
difficulty, answerable against not), the context-rot table, and the selective-context table."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from moelab.analysis.fit import bootstrap
from moelab.intervals import wilson
from moelab.probe.grading import CORRECT
from moelab.probe.metrics import effort, grade_metrics, level_order


def summarise(records: list[dict]) -> dict:
    """Metrics at the shortest context (overall, by domain, answerable vs not) and the context-rot table."""
    shortest = min(r["context_words"] for r in records)

    def metrics(rs: list[dict]) -> dict:
        return grade_metrics([r["grade"] for r in rs], [r["output_tokens"] for r in rs],
                             [r["reasoning_tokens"] for r in rs])

    selective = [r for r in records if r.get("mode") == "selective"]
    records = [r for r in records if r.get("mode") != "selective"]
    base = [r for r in records if r["context_words"] == shortest]
    out = metrics(base)
    by_domain = defaultdict(list)
    for r in base:
        by_domain[r["domain"] or "(none)"].append(r)
    out["by_domain"] = {d: metrics(rs) for d, rs in sorted(by_domain.items())}
    rated = [r for r in base if r.get("difficulty") is not None]
    by_difficulty = defaultdict(list)
    for r in rated:
        by_difficulty[r["difficulty"]].append(r)
    out["by_difficulty"] = {str(level): metrics(by_difficulty[level]) | every_part_correct(by_difficulty[level])
                            for level in sorted(by_difficulty, key=level_order)}
    out["effort"] = effort([r["difficulty"] for r in rated],
                           [r["output_tokens"] + (r["reasoning_tokens"] or 0) for r in rated]) if rated else None
    for name, want in (("answerable", True), ("unanswerable", False)):
        subset = [r for r in base if r["answerable"] is want]
        out[name] = metrics(subset) if subset else None
    out["context_words"] = shortest
    out["judge_parse_failures"] = sum(r["judge_parse_failure"] for r in records)

    groups = defaultdict(list)
    for r in records:
        groups[(r["context_words"], r["depth"])].append(r)
    rot = []
    for (length, depth), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] is None, kv[0][1] or 0)):
        m = metrics(rs)
        ids = {r["id"] for r in rs}  # the reference: the same questions at the shortest length
        reference = [r["grade"] == CORRECT for r in base if r["id"] in ids]
        reference_accuracy = float(np.mean(reference)) if reference else None
        rot.append({"context_words": length, "depth": depth, "n": m["n"], "accuracy": m["accuracy"],
                    "accuracy_interval": m["accuracy_interval"], "omniscience_index": m["omniscience_index"],
                    "prompt_words": float(np.mean([r["prompt_words"] for r in rs])),
                    "ratio_to_shortest": m["accuracy"] / reference_accuracy if reference_accuracy else None})
    out["context_rot"] = rot
    out["selective_context"] = selective_table(records, selective) if selective else None
    return out


def every_part_correct(records: list[dict]) -> dict:
    """Over the answerable composed questions answered by parts, the share whose every part was
    right: the facts were known, not just the comparison won (an empty dict when there are none)."""
    by_parts = [r for r in records if r.get("parts") and r["answerable"]]
    if not by_parts:
        return {}
    known = sum(all(part["grade"] == CORRECT for part in r["parts"]) for r in by_parts)
    return {"answered_by_parts": len(by_parts), "every_part_correct": known / len(by_parts),
            "every_part_correct_interval": wilson(known, len(by_parts))}


def selective_table(full: list[dict], selective: list[dict]) -> list[dict]:
    """Per context length: closed book, full context and selective context on the same questions:
    accuracy, words and tokens sent, tokens generated, the retriever's hit rate, and the share of
    the accuracy context rot lost (closed book to full) that selective context recovers."""
    closed = {r["id"]: r for r in full if r["context_words"] == 0}
    rows = []
    for length in sorted({r["context_words"] for r in selective}):
        chosen = [r for r in selective if r["context_words"] == length]
        keys = {r["key"].rsplit("|", 1)[0] for r in chosen}
        padded = [r for r in full if r["key"] in keys]
        reference = [closed[r["id"]] for r in padded if r["id"] in closed]
        row = {"context_words": length}
        for mode, rs in (("closed", reference), ("full", padded), ("selective", chosen)):
            if not rs:
                row[mode] = None
                continue
            m = grade_metrics([r["grade"] for r in rs], [r["output_tokens"] for r in rs], n_boot=200)
            prompt_tokens = [r["prompt_tokens"] for r in rs if r.get("prompt_tokens") is not None]
            row[mode] = {"n": m["n"], "accuracy": m["accuracy"], "accuracy_interval": m["accuracy_interval"],
                         "prompt_words": float(np.mean([r["prompt_words"] for r in rs])),
                         "prompt_tokens": float(np.mean(prompt_tokens)) if prompt_tokens else None,
                         "output_tokens": m["output_tokens_per_question"]}
        hits = [r["retrieved_needle"] for r in chosen if r["retrieved_needle"] is not None]
        row["hit_rate"] = float(np.mean(hits)) if hits else None
        row["hit_rate_interval"] = wilson(sum(hits), len(hits)) if hits else None
        row["recovered"], row["recovered_interval"] = _recovered(closed, padded, chosen)
        rows.append(row)
    return rows


def _recovered(closed: dict[str, dict], padded: list[dict], chosen: list[dict]) -> tuple[float | None, list | None]:
    """(selective - full) / (closed - full) accuracy over the same questions, with a percentile
    bootstrap interval over questions (each resample keeps a question's three answers together);
    None where closed book and full context are equally accurate (context rot lost nothing)."""
    full = {r["key"]: r for r in padded}
    aligned = [(closed[r["id"]], full[r["key"].rsplit("|", 1)[0]], r) for r in chosen
               if r["id"] in closed and r["key"].rsplit("|", 1)[0] in full]
    if not aligned:
        return None, None
    c, f, s = (np.array([t[j]["grade"] == CORRECT for t in aligned], dtype=float) for j in range(3))
    if c.mean() == f.mean():
        return None, None
    e = bootstrap(lambda c, f, s: (s.mean(-1) - f.mean(-1)) / (c.mean(-1) - f.mean(-1)), [c, f, s], n_boot=1000)
    return e.value, [e.low, e.high]
