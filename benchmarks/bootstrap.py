"""Bootstrap intervals: moelab's vectorised resampling against a loop over resamples, side by side.

    python benchmarks/bootstrap.py

For each statistic the survey bootstraps (Pearson r, partial r, gamma), on 104 points and 1,000
resamples: milliseconds of a per-resample Python loop (how moelab computed them before) and of
moelab's vectorised statistic on the same resample indices, their ratio, and the largest
difference in the interval's bounds over resamples where both are defined. Then the wall time of
the whole survey of the bundled table.
"""

from __future__ import annotations

import time

import numpy as np

from moelab.analysis import fit
from moelab.analysis import survey as sv
from moelab.provenance import cpu_model


def loop_pearson(x, y):
    return np.nan if np.std(x) == 0 or np.std(y) == 0 else float(np.corrcoef(x, y)[0, 1])


def loop_partial(x, y, z):
    design = np.column_stack([np.ones_like(z), z])
    rx = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
    ry = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    return loop_pearson(rx, ry)


def loop_total_share(u_total, u_active, y):
    coef = np.linalg.lstsq(np.column_stack([np.ones_like(y), u_total, u_active]), y, rcond=None)[0]
    return coef[1] / (coef[1] + coef[2])


def timed(fn, repeats=3):
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000, out


def main() -> None:
    rng = np.random.default_rng(0)
    n, n_boot = 104, 1000
    u_total = rng.uniform(0, 3, n)
    u_active = u_total - rng.uniform(0, 1.5, n)
    y = 10 + 12 * u_total + rng.normal(0, 5, n)
    idx = np.random.default_rng(0).integers(0, n, (n_boot, n))
    cases = [("pearson", loop_pearson, fit._pearson, (u_total, y)),
             ("partial", loop_partial, fit._partial, (u_total, y, u_active)),
             ("gamma", loop_total_share, fit._total_share, (u_total, u_active, y))]
    print(f"{cpu_model()}, {n} points, {n_boot} resamples")
    print(f"{'statistic':>10} {'loop ms':>9} {'vectorised ms':>14} {'speed-up':>9} {'max |diff|':>11}")
    for name, loop, vectorised, columns in cases:
        loop_ms, loop_out = timed(lambda: np.array([loop(*(c[i] for c in columns)) for i in idx]))
        vec_ms, vec_out = timed(lambda: vectorised(*(c[idx] for c in columns)))
        both = np.isfinite(loop_out) & np.isfinite(vec_out)
        print(f"{name:>10} {loop_ms:>9.1f} {vec_ms:>14.2f} {loop_ms / vec_ms:>8.0f}x "
              f"{np.abs(loop_out[both] - vec_out[both]).max():>11.1e}")
    rows, _ = sv.load_rows()
    start = time.perf_counter()
    sv.survey(rows, None, 1000)
    print(f"whole survey of the bundled table (all benchmarks, 1,000 resamples): {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
