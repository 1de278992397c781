import math

import numpy as np
import pytest

from moelab.analysis.fit import LinearFit, LogLinearFit, partial_correlation, pearson, spearman


def synthetic(n, seed, a=2.0, b=1.5, noise=0.3):
    rng = np.random.default_rng(seed)
    x = 10 ** rng.uniform(6, 11, n)
    return x, a + b * np.log10(x) + rng.normal(0, noise, n)


def test_fit_recovers_known_coefficients():
    x, y = synthetic(2000, 0)
    fit = LogLinearFit().fit(x, y)
    assert fit.slope_ == pytest.approx(1.5, abs=0.02)
    assert fit.intercept_ == pytest.approx(2.0, abs=0.2)
    assert fit.residual_std_ == pytest.approx(0.3, rel=0.05)
    interval = fit.slope_interval(0.95)
    assert interval.low < 1.5 < interval.high


def test_prediction_and_inverse_intervals_cover_near_nominal():
    """Over many synthetic datasets, a fresh point falls in the 80% intervals about 80% of the time."""
    rng = np.random.default_rng(1)
    hits_pred = hits_inv = 0
    draws = 2000
    for i in range(draws):
        x, y = synthetic(12, 100 + i)
        fit = LogLinearFit().fit(x, y)
        x_new = 10 ** rng.uniform(6, 11)
        y_new = 2.0 + 1.5 * math.log10(x_new) + rng.normal(0, 0.3)
        low, high = fit.prediction_interval(x_new, level=0.8)
        hits_pred += low <= y_new <= high
        inverse = fit.inverse_count(y_new, level=0.8)
        hits_inv += inverse.low <= x_new <= inverse.high
    assert hits_pred / draws == pytest.approx(0.8, abs=0.03)
    assert hits_inv / draws == pytest.approx(0.8, abs=0.03)


def test_inverse_of_a_flat_fit_is_unbounded():
    rng = np.random.default_rng(2)
    x = 10 ** rng.uniform(6, 11, 10)
    fit = LogLinearFit().fit(x, rng.normal(0, 1, 10))  # no relation at all
    wide = fit.inverse_count(5.0, level=0.99)
    assert wide.low == 0.0 or wide.high == math.inf


def test_leave_one_out_residuals_match_refitting():
    x, y = synthetic(15, 3)
    fit = LogLinearFit().fit(x, y)
    for i in range(15):
        keep = np.arange(15) != i
        refit = LogLinearFit().fit(x[keep], y[keep])
        assert fit.leave_one_out_residuals()[i] == pytest.approx(y[i] - refit.predict(x[i]), rel=1e-9)


def test_correlations_and_partial_correlation():
    rng = np.random.default_rng(4)
    z = rng.normal(size=400)
    x = z + rng.normal(scale=0.5, size=400)
    y = z + rng.normal(scale=0.5, size=400)  # x and y related only through z
    r = pearson(x, y, n_boot=500)
    assert r.low < r.value < r.high and r.value > 0.6
    assert spearman(x, y, n_boot=500).value > 0.6
    partial = partial_correlation(x, y, z, n_boot=500)
    assert partial.low < 0 < partial.high and abs(partial.value) < 0.15


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="positive"):
        LogLinearFit().fit([0, 1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 3"):
        LogLinearFit().fit([1, 2], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        LogLinearFit().fit([1, 2, 3], [1, float("nan"), 3])


def test_total_share_recovers_gamma():
    from moelab.analysis.fit import total_share

    rng = np.random.default_rng(5)
    total = 10 ** rng.uniform(9, 12, 300)
    active = total * 10 ** rng.uniform(-1.5, 0, 300)  # active <= total, decoupled
    gamma = 0.8
    y = 3 + 10 * (gamma * np.log10(total) + (1 - gamma) * np.log10(active)) + rng.normal(0, 1, 300)
    estimate = total_share(total, active, y, n_boot=300)
    assert estimate.low < gamma < estimate.high and abs(estimate.value - gamma) < 0.05


def test_inverse_with_a_covariate_matches_the_point_solution():
    from moelab.analysis.fit import LinearFit

    rng = np.random.default_rng(6)
    u = rng.uniform(0, 3, 200)
    z = rng.integers(0, 2, 200)
    y = 1 + 2 * u + 3 * z + rng.normal(0, 0.1, 200)
    fit = LinearFit().fit(np.column_stack([u, z]), y)
    estimate = fit.inverse(1 + 2 * 1.5 + 3, column=0, others=[1], level=0.8)
    assert estimate.value == pytest.approx(1.5, abs=0.02)
    assert estimate.low < 1.5 < estimate.high and estimate.high - estimate.low < 0.3


def test_an_unfitted_model_says_so_and_fit_returns_self():
    from moelab.analysis.fit import NotFittedError
    from moelab.analysis.fit import RandomInterceptFit
    from moelab.analysis.size import Candidate, SizeModel

    for model, call in ((LinearFit(), lambda m: m.predict([[1.0]])), (LogLinearFit(), lambda m: m.slope_),
                        (LogLinearFit(), lambda m: m.inverse_count(1.0)),
                        (RandomInterceptFit(), lambda m: m.predict([[1.0]])),
                        (SizeModel(Candidate()), lambda m: m.coefficients())):
        with pytest.raises(NotFittedError, match="not fitted"):
            call(model)
    fit = LogLinearFit()
    assert fit.fit([10, 100, 1000, 10_000], [1.0, 2.1, 2.9, 4.0]) is fit and fit.slope_ == pytest.approx(0.98)


def test_random_intercept_fit_matches_statsmodels_mixedlm():
    sm = pytest.importorskip("statsmodels.api")
    from moelab.analysis.fit import RandomInterceptFit

    rng = np.random.default_rng(0)
    groups = rng.integers(0, 15, 200)
    x = rng.normal(size=(200, 2))
    y = 1 + x @ [0.7, -0.3] + rng.normal(0, 0.5, 15)[groups] + rng.normal(0, 0.3, 200)
    ours = RandomInterceptFit().fit(x, y, groups)
    theirs = sm.MixedLM(y, sm.add_constant(x), groups=groups).fit(reml=True)
    np.testing.assert_allclose(ours.coef_, theirs.fe_params, rtol=1e-5)
    assert ours.sigma2_ == pytest.approx(theirs.scale, rel=1e-4)
    assert ours.tau2_ == pytest.approx(float(np.asarray(theirs.cov_re)[0, 0]), rel=1e-3)
    np.testing.assert_allclose(ours.cov_, np.asarray(theirs.cov_params())[:3, :3], rtol=1e-3, atol=1e-7)
    assert ours.effects_[3] == pytest.approx(float(np.asarray(theirs.random_effects[3])[0]), rel=1e-3)
