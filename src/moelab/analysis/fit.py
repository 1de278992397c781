"""The one fitting module, shared by the lab report and the survey.

Fits follow the scikit-learn shape: `LinearFit().fit(X, y)` (any predictors) or
`LogLinearFit().fit(x, y)` (one parameter count, used as log10 x), then `.predict`,
`.prediction_interval`, `.inverse`. Correlations come with percentile-bootstrap intervals.

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
        return self.format(".3f")

    def format(self, spec: str = ".3f", scale: float = 1.0, unit: str = "") -> str:
        """'value [low, high]' in `spec` (times `scale`, then `unit`); the value alone when the
        interval is undefined, and 'n/a' when the value is. The one interval formatter of moelab."""
        if not math.isfinite(self.value):
            return "n/a"
        text = f"{self.value * scale:{spec}}{unit}"
        if math.isfinite(self.low) and math.isfinite(self.high):
            text += f" [{self.low * scale:{spec}}, {self.high * scale:{spec}}]"
        return text

    @classmethod
    def from_metrics(cls, m: dict, key: str, level: float = 0.95) -> Estimate:
        """metrics[key] with metrics[key + '_interval'] (probe metrics store them side by side)."""
        value = m.get(key)
        low, high = m.get(f"{key}_interval") or (None, None)
        as_float = lambda v: math.nan if v is None else float(v)  # noqa: E731
        return cls(as_float(value), as_float(low), as_float(high), level)

    def pow10(self) -> Estimate:
        """From log10 scale back to counts; an unbounded side becomes 0 or +inf, no point nan."""
        return Estimate(10**self.value if math.isfinite(self.value) else math.nan,
                        10**self.low if math.isfinite(self.low) else 0.0,
                        10**self.high if math.isfinite(self.high) else math.inf, self.level)


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


class LinearFit:
    """Ordinary least squares y = b0 + X b, with Gaussian prediction and calibration intervals.

    X: [n, p] predictors (an intercept is added). `inverse` solves for one predictor given y0 and
    the others, returning the set where a new observation's prediction interval contains y0.
    """

    def fit(self, X, y) -> LinearFit:
        X = np.atleast_2d(np.asarray(X, dtype=float).T).T  # [n] -> [n, 1]
        X, y = _as_arrays(X, y)
        n, p = X.shape
        if n < p + 2:
            raise ValueError(f"need at least {p + 2} points to fit {p} predictor(s) with an interval, got {n}")
        design = np.column_stack([np.ones(n), X])
        gram_inv = np.linalg.pinv(design.T @ design)
        if np.linalg.matrix_rank(design) < p + 1:
            raise ValueError("predictors are constant or collinear; nothing to fit against")
        self.coef_ = gram_inv @ design.T @ y  # [p + 1], intercept first
        residuals = y - design @ self.coef_
        self.n_, self.dof_ = n, n - p - 1
        self.residual_std_ = float(math.sqrt((residuals**2).sum() / self.dof_))
        self.gram_inv_ = gram_inv
        self.residuals_ = residuals
        self.hat_ = np.einsum("ij,jk,ik->i", design, gram_inv, design)
        total = float(((y - y.mean()) ** 2).sum())
        self.r2_ = 1.0 - float((residuals**2).sum()) / total if total else 1.0
        return self

    def _design(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        X = X.reshape(-1, 1) if X.ndim <= 1 and len(self.coef_) == 2 else np.atleast_2d(X)
        return np.column_stack([np.ones(len(X)), X])

    def predict(self, X) -> np.ndarray:
        return self._design(X) @ self.coef_

    def coef_interval(self, index: int, level: float = 0.95) -> Estimate:
        """Interval for coefficient `index` (0 is the intercept, 1 the first predictor)."""
        t = stats.t.ppf(0.5 + level / 2, self.dof_)
        se = self.residual_std_ * math.sqrt(self.gram_inv_[index, index])
        value = float(self.coef_[index])
        return Estimate(value, value - t * se, value + t * se, level)

    def prediction_interval(self, X, level: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
        """Interval for a new observation at X: parameter uncertainty plus residual spread."""
        design = self._design(X)
        t = stats.t.ppf(0.5 + level / 2, self.dof_)
        spread = np.sqrt(1 + np.einsum("ij,jk,ik->i", design, self.gram_inv_, design))
        centre = design @ self.coef_
        return centre - t * self.residual_std_ * spread, centre + t * self.residual_std_ * spread

    def inverse(self, y0: float, column: int = 0, others=(), level: float = 0.8) -> Estimate:
        """The value of predictor `column` at which the fit predicts y0, the other predictors held
        at `others` (in order, skipping `column`); the interval may be unbounded (+-inf)."""
        p = len(self.coef_) - 1
        fixed = list(others)
        if len(fixed) != p - 1:
            raise ValueError(f"give the other {p - 1} predictor value(s)")
        e = np.array([1.0, *fixed[:column], 0.0, *fixed[column:]])  # x0 = e + u f
        f = np.zeros(p + 1)
        f[column + 1] = 1.0
        slope = float(self.coef_[column + 1])
        d = y0 - float(self.coef_ @ e)
        point = d / slope if slope else math.nan
        # (d - slope u)^2 = k (1 + x0' G x0): a quadratic A u^2 + B u + C = 0
        k = (stats.t.ppf(0.5 + level / 2, self.dof_) * self.residual_std_) ** 2
        G = self.gram_inv_
        A = slope**2 - k * float(f @ G @ f)
        B = -2 * d * slope - 2 * k * float(e @ G @ f)
        C = d**2 - k * (1 + float(e @ G @ e))
        if A <= 0:
            return Estimate(point, -math.inf, math.inf, level)
        root = math.sqrt(max(B * B - 4 * A * C, 0.0))
        return Estimate(point, (-B - root) / (2 * A), (-B + root) / (2 * A), level)

    def leave_one_out_residuals(self) -> np.ndarray:
        """Out-of-sample residuals y_i - yhat_(-i) (the PRESS residuals e_i / (1 - h_ii))."""
        return self.residuals_ / (1 - self.hat_)


class LogLinearFit(LinearFit):
    """y = intercept + slope * log10(x), for a parameter count x."""

    def fit(self, x, y) -> LogLinearFit:
        return super().fit(log10_positive(x), y)

    @property
    def slope_(self) -> float:
        return float(self.coef_[1])

    @property
    def intercept_(self) -> float:
        return float(self.coef_[0])

    def predict(self, x) -> np.ndarray:
        return super().predict(log10_positive(x))

    def slope_interval(self, level: float = 0.95) -> Estimate:
        return self.coef_interval(1, level)

    def prediction_interval(self, x, level: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
        return super().prediction_interval(log10_positive(x), level)

    def inverse(self, y0: float, level: float = 0.8) -> Estimate:
        """The x at which the fit predicts y0, with the calibration interval (on x, not log10 x)."""
        return super().inverse(y0, 0, (), level).pow10()


MIN_POINTS, MIN_DISTINCT, MIN_DECADES = 5, 3, 0.1


def support_problem(x, name: str = "x") -> str | None:
    """Why a fit or correlation against log10 `x` cannot be read, or None when it can: it needs
    MIN_POINTS points at MIN_DISTINCT distinct values spanning MIN_DECADES decades (a 26% range);
    over a narrower range a slope is noise divided by almost nothing."""
    x = np.asarray(x, dtype=float)
    distinct = len(np.unique(x))
    if len(x) < MIN_POINTS or distinct < MIN_DISTINCT:
        return (f"{len(x)} points at {distinct} distinct {name}: a fit needs {MIN_POINTS} points at "
                f"{MIN_DISTINCT} or more distinct values")
    span = float(np.log10(x.max() / x.min())) if x.min() > 0 else math.inf
    if span < MIN_DECADES:
        return (f"{name} spans only {span:.3f} decades ({x.min():,.0f} to {x.max():,.0f}); "
                f"a fit needs {MIN_DECADES} or more")
    return None


def bootstrap(statistic, columns: list[np.ndarray], n_boot: int = 2000, level: float = 0.95,
              seed: int = 0) -> Estimate:
    """`statistic(*columns)` with a percentile interval from resampling rows; draws where the
    statistic is undefined (non-finite, or it raises ValueError) are dropped."""
    value = statistic(*columns)
    rng = np.random.default_rng(seed)
    n = len(columns[0])
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        with np.errstate(all="ignore"):
            try:
                draw = statistic(*(c[idx] for c in columns))
            except ValueError:  # the statistic is undefined on this resample (e.g. collinear)
                continue
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
    return bootstrap(_pearson, _as_arrays(x, y), n_boot, level, seed)


def spearman(x, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    return bootstrap(_spearman, _as_arrays(x, y), n_boot, level, seed)


def partial_correlation(x, y, z, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    """Correlation of x with y given z, with a bootstrap interval."""
    return bootstrap(_partial, _as_arrays(x, y, z), n_boot, level, seed)


def _total_share(u_total, u_active, y) -> float:
    fit = LinearFit().fit(np.column_stack([u_total, u_active]), y)
    c_total, c_active = fit.coef_[1], fit.coef_[2]
    return float(c_total / (c_total + c_active)) if c_total + c_active else math.nan


def total_share(total, active, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    """gamma in y = a + b log10(N_total^gamma N_active^(1 - gamma)), with a bootstrap interval.

    Linear in log10 total and log10 active with coefficients b gamma and b (1 - gamma), so gamma is
    their ratio; gamma = 1 means only total parameters matter, 0 only active ones.
    """
    return bootstrap(_total_share, _as_arrays(log10_positive(total), log10_positive(active), y),
                     n_boot, level, seed)
