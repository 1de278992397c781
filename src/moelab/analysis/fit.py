"""The one fitting module, shared by the lab report and the survey.

Everything here fits a metric `y` against `u = log10(x)` of a parameter count `x`, in the
scikit-learn shape: `LogLinearFit().fit(x, y)`, then `.predict(x)`, `.prediction_interval(x)`,
`.inverse(y)`. Correlations come with percentile-bootstrap intervals.

Ordinary least squares y = a + b u with Gaussian residuals:
    prediction interval at u0:  a + b u0 +- t * s * sqrt(1 + 1/n + (u0 - mean u)^2 / Sxx)
    inverse prediction of y0:   the set of u whose prediction interval contains y0 (the classical
                                calibration interval); unbounded when the slope is not clearly
                                non-zero at that level, reported as +-inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a (two-sided) interval at `level`."""

    value: float
    low: float
    high: float
    level: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _as_arrays(*columns) -> list[np.ndarray]:
    arrays = [np.asarray(c, dtype=float) for c in columns]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("columns have different lengths")
    if any(not np.all(np.isfinite(a)) for a in arrays):
        raise ValueError("columns hold NaN or infinite values")
    return arrays


def log10_positive(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if np.any(x <= 0):
        raise ValueError("parameter counts must be positive to take log10")
    return np.log10(x)


class LogLinearFit:
    """y = intercept + slope * log10(x), by ordinary least squares."""

    def fit(self, x, y) -> LogLinearFit:
        u, y = _as_arrays(log10_positive(x), y)
        n = len(u)
        if n < 3:
            raise ValueError(f"need at least 3 points to fit with an interval, got {n}")
        self.n_ = n
        self.u_mean_ = u.mean()
        self.sxx_ = float(((u - self.u_mean_) ** 2).sum())
        if self.sxx_ == 0:
            raise ValueError("all parameter counts are equal; nothing to fit against")
        self.slope_ = float(((u - self.u_mean_) * (y - y.mean())).sum() / self.sxx_)
        self.intercept_ = float(y.mean() - self.slope_ * self.u_mean_)
        residuals = y - self.intercept_ - self.slope_ * u
        self.residual_std_ = float(math.sqrt((residuals**2).sum() / (n - 2)))
        total = float(((y - y.mean()) ** 2).sum())
        self.r2_ = 1.0 - float((residuals**2).sum()) / total if total else 1.0
        self.hat_ = 1.0 / n + (u - self.u_mean_) ** 2 / self.sxx_
        self.residuals_ = residuals
        return self

    def predict(self, x) -> np.ndarray:
        return self.intercept_ + self.slope_ * log10_positive(x)

    def slope_interval(self, level: float = 0.95) -> Estimate:
        t = stats.t.ppf(0.5 + level / 2, self.n_ - 2)
        se = self.residual_std_ / math.sqrt(self.sxx_)
        return Estimate(self.slope_, self.slope_ - t * se, self.slope_ + t * se, level)

    def prediction_interval(self, x, level: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
        """Interval for a new observation at x: parameter uncertainty plus residual spread."""
        u = log10_positive(x)
        t = stats.t.ppf(0.5 + level / 2, self.n_ - 2)
        half = t * self.residual_std_ * np.sqrt(1 + 1 / self.n_ + (u - self.u_mean_) ** 2 / self.sxx_)
        centre = self.intercept_ + self.slope_ * u
        return centre - half, centre + half

    def inverse(self, y0: float, level: float = 0.8) -> Estimate:
        """The x at which the fit predicts y0, with the calibration interval (on x, not log10 x)."""
        a, b, s, n = self.intercept_, self.slope_, self.residual_std_, self.n_
        t = stats.t.ppf(0.5 + level / 2, n - 2)
        point = (y0 - a) / b if b else math.nan
        # (y0 - a - b u)^2 = t^2 s^2 (1 + 1/n + (u - m)^2 / Sxx), a quadratic A v^2 + B v + C in v = u - m
        d = y0 - a - b * self.u_mean_
        k = (t * s) ** 2
        A = b * b - k / self.sxx_
        B = -2 * b * d
        C = d * d - k * (1 + 1 / n)
        if A <= 0:
            low, high = -math.inf, math.inf
        else:
            disc = B * B - 4 * A * C
            root = math.sqrt(max(disc, 0.0))
            low, high = (-B - root) / (2 * A) + self.u_mean_, (-B + root) / (2 * A) + self.u_mean_
        return Estimate(10**point if math.isfinite(point) else math.nan,
                        10**low if math.isfinite(low) else 0.0,
                        10**high if math.isfinite(high) else math.inf, level)

    def leave_one_out_residuals(self) -> np.ndarray:
        """Out-of-sample residuals y_i - yhat_(-i) (the PRESS residuals e_i / (1 - h_ii))."""
        return self.residuals_ / (1 - self.hat_)


def _bootstrap(statistic, columns: list[np.ndarray], n_boot: int, level: float, seed: int) -> Estimate:
    value = statistic(*columns)
    rng = np.random.default_rng(seed)
    n = len(columns[0])
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        with np.errstate(all="ignore"):
            draw = statistic(*(c[idx] for c in columns))
        if np.isfinite(draw):
            draws.append(draw)
    low, high = np.quantile(draws, [0.5 - level / 2, 0.5 + level / 2]) if draws else (math.nan, math.nan)
    return Estimate(float(value), float(low), float(high), level)


def _pearson(x, y) -> float:
    if np.std(x) == 0 or np.std(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def _spearman(x, y) -> float:
    return _pearson(stats.rankdata(x), stats.rankdata(y))


def _partial(x, y, z) -> float:
    """Correlation of x and y after regressing each on z (with an intercept)."""
    design = np.column_stack([np.ones_like(z), z])
    rx = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
    ry = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    return _pearson(rx, ry)


def pearson(x, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    return _bootstrap(_pearson, _as_arrays(x, y), n_boot, level, seed)


def spearman(x, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    return _bootstrap(_spearman, _as_arrays(x, y), n_boot, level, seed)


def partial_correlation(x, y, z, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    """Correlation of x with y given z, with a bootstrap interval."""
    return _bootstrap(_partial, _as_arrays(x, y, z), n_boot, level, seed)
