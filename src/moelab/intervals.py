"""Intervals for proportions shared by the lab (abstention) and the probe: the Wilson score
interval and the Omniscience Index's interval built from two of them. No torch, no NumPy."""

from __future__ import annotations

import math
import statistics

LEVEL = 0.95


def wilson(successes: int, n: int, level: float = LEVEL) -> list[float]:
    """The Wilson score interval of a binomial proportion ([nan, nan] when n = 0)."""
    if n == 0:
        return [math.nan, math.nan]
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    q = successes / n
    centre = (q + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(q * (1 - q) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def omniscience_interval(c: int, i: int, n: int, level: float = LEVEL) -> list[float]:
    """An interval for 100 (c - i) / n from the Wilson intervals of c/n and i/n (MOVER)."""
    if n == 0:
        return [math.nan, math.nan]
    pc, pi = c / n, i / n
    (lc, uc), (li, ui) = wilson(c, n, level), wilson(i, n, level)
    denominator = (1 - pc) * (1 - pi)
    rho = -math.sqrt(pc * pi / denominator) if denominator > 0 else 0.0
    d = pc - pi
    low = d - math.sqrt(max(0.0, (pc - lc) ** 2 + (ui - pi) ** 2 - 2 * rho * (pc - lc) * (ui - pi)))
    high = d + math.sqrt(max(0.0, (uc - pc) ** 2 + (pi - li) ** 2 - 2 * rho * (uc - pc) * (pi - li)))
    return [100 * max(-1.0, low), 100 * min(1.0, high)]
