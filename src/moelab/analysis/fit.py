"""The one fitting module, shared by the lab report and the survey.

Fits follow scikit-learn's conventions: `fit` returns self, fitted attributes end in `_`, and
using a model before `fit` raises NotFittedError. `LinearFit().fit(X, y)` takes any predictors,
`LogLinearFit().fit(x, y)` one parameter count used as log10 x; then `.predict`,
`.prediction_interval`, `.inverse` (on the scale the fit saw: log10 x for LogLinearFit) and
`LogLinearFit.inverse_count` (back on the count's scale). Correlations come with
percentile-bootstrap intervals.

Ordinary least squares y = a + b u with Gaussian residuals:
    prediction interval at u0:  a + b u0 +- t * s * sqrt(1 + 1/n + (u0 - mean u)^2 / Sxx)
    inverse prediction of y0:   the set of u whose prediction interval contains y0 (the classical
                                calibration interval); unbounded when the slope is not clearly
                                non-zero at that level, reported as +-inf.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

# scipy is imported where it is used: scipy.stats takes over a second to import, and every sweep
# worker and CLI call imports this module for the lab's intervals.


@functools.lru_cache(maxsize=4096)  # held-out scoring asks for the same few (level, dof) thousands of times
def t_quantile(level: float, dof: float) -> float:
    """The two-sided Student t multiplier: the (1 + level) / 2 quantile with `dof` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, dof))


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


class NotFittedError(ValueError, AttributeError):
    """A model was used before `fit` (scikit-learn's exception of the same name, without sklearn)."""


class LinearFit:
    """Ordinary least squares y = b0 + X b, with Gaussian prediction and calibration intervals.

    X: [n, p] predictors (an intercept is added). `inverse` solves for one predictor given y0 and
    the others, returning the set where a new observation's prediction interval contains y0.
    """

    def fit(self, X, y, sample_weight=None) -> LinearFit:
        """Least squares, weighted when `sample_weight` is given (weighted least squares: a row of
        weight w counts as if its residual variance were sigma^2 / w; sigma is then the spread of
        a row of weight 1, which is what the prediction interval of a new row uses)."""
        X = np.atleast_2d(np.asarray(X, dtype=float).T).T  # [n] -> [n, 1]
        X, y = _as_arrays(X, y)
        n, p = X.shape
        if n < p + 2:
            raise ValueError(f"need at least {p + 2} points to fit {p} predictor(s) with an interval, got {n}")
        w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError("sample_weight must hold one positive finite weight per row")
        design = np.column_stack([np.ones(n), X])
        gram_inv = np.linalg.pinv(design.T @ (design * w[:, None]))
        if np.linalg.matrix_rank(design) < p + 1:
            raise ValueError("predictors are constant or collinear; nothing to fit against")
        self.coef_ = gram_inv @ design.T @ (w * y)  # [p + 1], intercept first
        residuals = y - design @ self.coef_
        self.n_, self.dof_ = n, n - p - 1
        self.residual_std_ = float(math.sqrt((w * residuals**2).sum() / self.dof_))
        self.gram_inv_ = gram_inv
        self.residuals_ = residuals
        self.hat_ = w * np.einsum("ij,jk,ik->i", design, gram_inv, design)
        mean = float(np.average(y, weights=w))
        total = float((w * (y - mean) ** 2).sum())
        self.r2_ = 1.0 - float((w * residuals**2).sum()) / total if total else 1.0
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X, y) first")

    def _design(self, X) -> np.ndarray:
        self._check_fitted()
        X = np.asarray(X, dtype=float)
        X = X.reshape(-1, 1) if X.ndim <= 1 and len(self.coef_) == 2 else np.atleast_2d(X)
        return np.column_stack([np.ones(len(X)), X])

    def predict(self, X) -> np.ndarray:
        return self._design(X) @ self.coef_

    def coef_interval(self, index: int, level: float = 0.95) -> Estimate:
        """Interval for coefficient `index` (0 is the intercept, 1 the first predictor)."""
        self._check_fitted()
        t = t_quantile(level, self.dof_)
        se = self.residual_std_ * math.sqrt(self.gram_inv_[index, index])
        value = float(self.coef_[index])
        return Estimate(value, value - t * se, value + t * se, level)

    def predict_sd(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(centre, sd) of a new observation at X: residual spread plus parameter uncertainty;
        a `level` interval is centre +- t(level, dof_) sd."""
        design = self._design(X)
        spread = np.sqrt(1 + np.einsum("ij,jk,ik->i", design, self.gram_inv_, design))
        return design @ self.coef_, self.residual_std_ * spread

    def prediction_interval(self, X, level: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
        """Interval for a new observation at X: parameter uncertainty plus residual spread."""
        centre, sd = self.predict_sd(X)
        t = t_quantile(level, self.dof_)
        return centre - t * sd, centre + t * sd

    def inverse(self, y0: float, column: int = 0, others=(), level: float = 0.8) -> Estimate:
        """The value of predictor `column` at which the fit predicts y0, the other predictors held
        at `others` (in order, skipping `column`); the interval may be unbounded (+-inf)."""
        self._check_fitted()
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
        k = (t_quantile(level, self.dof_) * self.residual_std_) ** 2
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
        self._check_fitted()
        return self.residuals_ / (1 - self.hat_)


class RandomInterceptFit:
    """y = b0 + X b + u_g + e with a random intercept u_g ~ N(0, tau2) per group g and e ~ N(0,
    sigma2), fitted by REML (the model statsmodels' MixedLM fits with a random intercept; tested
    against it). Closed form given the ratio lambda = tau2 / sigma2: each group's block of V =
    I + lambda 11' inverts as I - c_g 11' with c_g = lambda / (1 + n_g lambda); lambda is found by a
    bounded search on the restricted likelihood, so a fit takes about a millisecond.

    Fitted: coef_ (intercept first), cov_ (of coef_), sigma2_, tau2_, ratio_, dof_, effects_ (the BLUP of
    each group's intercept) and effect_var_ (its conditional variance tau2 / (1 + n_g lambda)).
    """

    def fit(self, X, y, groups) -> RandomInterceptFit:
        X = np.atleast_2d(np.asarray(X, dtype=float).T).T
        y = np.asarray(y, dtype=float)
        n, p = X.shape
        if n < p + 3:
            raise ValueError(f"need at least {p + 3} points to fit {p} predictor(s) and two variances, got {n}")
        design = np.column_stack([np.ones(n), X])
        if np.linalg.matrix_rank(design) < p + 1:
            raise ValueError("predictors are constant or collinear; nothing to fit against")
        labels, index = np.unique(np.asarray(groups), return_inverse=True)
        sizes = np.bincount(index).astype(float)
        # per-group sums: X'1, y'1 and the plain cross products
        sum_x = np.zeros((len(labels), p + 1))
        np.add.at(sum_x, index, design)
        sum_y = np.bincount(index, weights=y)
        xx, xy, yy = design.T @ design, design.T @ y, float(y @ y)

        def solve(lam: float):
            c = lam / (1 + sizes * lam)
            a = xx - (sum_x.T * c) @ sum_x  # X' V^-1 X
            b = xy - (sum_x.T * c) @ sum_y
            coef = np.linalg.solve(a, b)
            quad = yy - float(np.sum(c * sum_y**2)) - float(coef @ b)  # r' V^-1 r
            return a, coef, max(quad, 1e-300)

        def restricted(log_lam: float) -> float:  # -2 log restricted likelihood, up to a constant
            lam = math.exp(log_lam)
            a, _, quad = solve(lam)
            return (n - p - 1) * math.log(quad / (n - p - 1)) + float(np.sum(np.log1p(sizes * lam))) \
                + float(np.linalg.slogdet(a)[1])

        from scipy import optimize

        best = optimize.minimize_scalar(restricted, bounds=(-12.0, 6.0), method="bounded")
        log_lam = best.x if best.fun < restricted(-12.0) else -12.0  # the boundary: no group effect
        lam = math.exp(log_lam)
        a, coef, quad = solve(lam)
        self.dof_ = n - p - 1
        self.sigma2_ = quad / self.dof_
        self.tau2_ = lam * self.sigma2_
        self.ratio_ = lam  # tau2 / sigma2: how far one point moves its group's effect
        self.coef_ = coef
        self.cov_ = self.sigma2_ * np.linalg.inv(a)
        group_residual = sum_y - sum_x @ coef
        self.effects_ = dict(zip(labels.tolist(), (lam / (1 + sizes * lam) * group_residual).tolist()))
        self.effect_var_ = dict(zip(labels.tolist(), (self.tau2_ / (1 + sizes * lam)).tolist()))
        return self

    def predict_sd(self, X, groups=None) -> tuple[np.ndarray, np.ndarray]:
        """(centre, sd) for new observations at X: a group the fit saw gets its effect and that
        effect's remaining uncertainty; an unseen group (or None) gets the spread tau2 of all group
        effects. Parameter uncertainty and the residual spread are always included."""
        if not hasattr(self, "coef_"):
            raise NotFittedError("this RandomInterceptFit is not fitted yet; call fit(X, y, groups) first")
        X = np.atleast_2d(np.asarray(X, dtype=float).T).T
        design = np.column_stack([np.ones(len(X)), X])
        groups = [None] * len(X) if groups is None else list(groups)
        effect = np.array([self.effects_.get(g, 0.0) for g in groups])
        effect_var = np.array([self.effect_var_.get(g, self.tau2_) for g in groups])
        centre = design @ self.coef_ + effect
        return centre, np.sqrt(self.sigma2_ + effect_var + np.einsum("ij,jk,ik->i", design, self.cov_, design))

    def predict(self, X, groups=None, level: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(centre, low, high) at `level`: `predict_sd` with the t multiplier of the fit's dof."""
        centre, sd = self.predict_sd(X, groups)
        t = t_quantile(level, self.dof_)
        return centre, centre - t * sd, centre + t * sd


class LogLinearFit(LinearFit):
    """y = intercept + slope * log10(x), for a parameter count x."""

    def fit(self, x, y) -> LogLinearFit:
        return super().fit(log10_positive(x), y)

    @property
    def slope_(self) -> float:
        self._check_fitted()
        return float(self.coef_[1])

    @property
    def intercept_(self) -> float:
        self._check_fitted()
        return float(self.coef_[0])

    def predict(self, x) -> np.ndarray:
        return super().predict(log10_positive(x))

    def slope_interval(self, level: float = 0.95) -> Estimate:
        return self.coef_interval(1, level)

    def prediction_interval(self, x, level: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
        return super().prediction_interval(log10_positive(x), level)

    def inverse_count(self, y0: float, level: float = 0.8) -> Estimate:
        """The count x at which the fit predicts y0, with the calibration interval (on x, not log10 x)."""
        return self.inverse(y0, 0, (), level).pow10()


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
    """`statistic(*columns)` with a percentile interval from resampling rows. The statistic is
    vectorised: it takes columns of shape [B, n] (B resamples, or B = 1 for the estimate itself)
    and returns [B] values, so all resamples are computed in a few array operations. Resamples
    where it is undefined (non-finite) are dropped."""
    n = len(columns[0])
    value = float(statistic(*(c[None, :] for c in columns))[0])
    idx = np.random.default_rng(seed).integers(0, n, (n_boot, n))
    with np.errstate(all="ignore"):
        draws = np.asarray(statistic(*(c[idx] for c in columns)), dtype=float)
    draws = draws[np.isfinite(draws)]
    low, high = np.quantile(draws, [0.5 - level / 2, 0.5 + level / 2]) if draws.size else (math.nan, math.nan)
    return Estimate(value, float(low), float(high), level)


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise correlation of [B, n] arrays; nan where a row is constant."""
    xc, yc = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    sxx, syy = (xc * xc).sum(-1), (yc * yc).sum(-1)
    with np.errstate(all="ignore"):
        r = (xc * yc).sum(-1) / np.sqrt(sxx * syy)
    # a constant row (up to rounding) has no correlation
    constant = (sxx <= 1e-24 * np.maximum(1.0, (x * x).sum(-1))) | (syy <= 1e-24 * np.maximum(1.0, (y * y).sum(-1)))
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy import stats

    return stats.rankdata(x, axis=-1)


def _spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _pearson(_ranks(x), _ranks(y))


def _partial(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Correlation of x and y after regressing each on z (with an intercept), row-wise: the
    first-order partial correlation (r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2))."""
    r_xy, r_xz, r_yz = _pearson(x, y), _pearson(x, z), _pearson(y, z)
    left = (1 - r_xz**2) * (1 - r_yz**2)
    with np.errstate(all="ignore"):
        r = (r_xy - r_xz * r_yz) / np.sqrt(left)
    # x or y (almost) a linear function of z: nothing is left to correlate, the value is undefined
    return np.where(left > 1e-10, np.clip(r, -1.0, 1.0), np.nan)


def pearson(x, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    return bootstrap(_pearson, _as_arrays(x, y), n_boot, level, seed)


def spearman(x, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    return bootstrap(_spearman, _as_arrays(x, y), n_boot, level, seed)


def partial_correlation(x, y, z, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    """Correlation of x with y given z, with a bootstrap interval."""
    return bootstrap(_partial, _as_arrays(x, y, z), n_boot, level, seed)


def _total_share(u_total: np.ndarray, u_active: np.ndarray, y: np.ndarray) -> np.ndarray:
    """gamma = c_total / (c_total + c_active) of the least-squares fit y ~ 1 + u_total + u_active,
    row-wise (centred normal equations, solved in closed form for two predictors)."""
    a, b = u_total - u_total.mean(-1, keepdims=True), u_active - u_active.mean(-1, keepdims=True)
    c = y - y.mean(-1, keepdims=True)
    saa, sbb, sab = (a * a).sum(-1), (b * b).sum(-1), (a * b).sum(-1)
    sac, sbc = (a * c).sum(-1), (b * c).sum(-1)
    det = saa * sbb - sab**2
    with np.errstate(all="ignore"):
        c_total, c_active = (sbb * sac - sab * sbc) / det, (saa * sbc - sab * sac) / det
        gamma = c_total / (c_total + c_active)
    singular = np.abs(det) <= 1e-12 * np.maximum(saa * sbb, 1e-300)  # collinear predictors
    return np.where(singular, np.nan, gamma)


def total_share(total, active, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    """gamma in y = a + b log10(N_total^gamma N_active^(1 - gamma)), with a bootstrap interval.

    Linear in log10 total and log10 active with coefficients b gamma and b (1 - gamma), so gamma is
    their ratio; gamma = 1 means only total parameters matter, 0 only active ones.
    """
    return bootstrap(_total_share, _as_arrays(log10_positive(total), log10_positive(active), y),
                     n_boot, level, seed)


ATTRIBUTION_STATISTICS = ("r_total", "r_active", "spearman_total", "spearman_active",
                          "partial_total", "partial_active", "gamma")


def attribution(total, active, y, n_boot: int = 2000) -> tuple[dict[str, Estimate], list[str]]:
    """What total and what active parameters explain of `y` (survey accuracy, lab log10 bits):
    Pearson and Spearman r of y with log10 total and log10 active, the partial r of each given the
    other, and gamma (the total's share, `total_share`), with bootstrap intervals; and notes for
    those the data cannot support (`support_problem` per axis; partial r and gamma only when
    total and active differ somewhere, which a dense-only set never does). An estimate whose point
    is not finite has nan bounds. The one attribution helper of the survey and the lab reports."""
    total, active, y = (np.asarray(a, dtype=float) for a in (total, active, y))
    out, notes = {}, []
    problems = {name: support_problem(x, f"{name} parameter counts") for name, x in (("total", total), ("active", active))}
    notes += [f"r(·, {name}) not shown: {p}" for name, p in problems.items() if p]
    u_total, u_active = np.log10(total), np.log10(active)
    for name, u in (("total", u_total), ("active", u_active)):
        if problems[name] is None:
            out[f"r_{name}"] = pearson(u, y, n_boot)
            out[f"spearman_{name}"] = spearman(u, y, n_boot)
    if problems["total"] is None and problems["active"] is None:
        if np.ptp(u_total - u_active) > 0:
            out["partial_total"] = partial_correlation(u_total, y, u_active, n_boot)
            out["partial_active"] = partial_correlation(u_active, y, u_total, n_boot)
            out["gamma"] = total_share(total, active, y, n_boot)
        else:
            notes.append("partial correlations and gamma not shown: total and active parameters are equal everywhere")
    for key, e in out.items():
        if not math.isfinite(e.value):
            out[key] = Estimate(math.nan, math.nan, math.nan, e.level)
    return out, notes
