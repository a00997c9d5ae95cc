"""Tests of `synthalign.stats`: log-log slopes with bootstrap CIs, and verdicts that can fail."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthalign.stats import Verdict, check_bound, check_rate, fit_slope, quantile_interval

NS = [2**k for k in range(6, 12)]


def synthetic(slope: float, *, replicates: int = 50, scale: float = 3.0, seed: int = 0, ns=NS) -> np.ndarray:
    """values[i, r] = scale · n_i^slope · E_ir with E_ir i.i.d. Exponential(1): the mean is exactly scale · n^slope."""
    rng = np.random.default_rng(seed)
    ns = np.asarray(ns, dtype=np.float64)
    return scale * ns[:, None] ** slope * rng.exponential(size=(ns.size, replicates))


@pytest.mark.parametrize("slope", [-1.0, -0.5, -2.0])
def test_fit_slope_recovers_a_known_slope(slope):
    fit = fit_slope(NS, synthetic(slope, replicates=400), n_boot=1000)
    # The mean of 400 Exponential(1) draws has relative s.d. 1/20 = 0.05, so ln(mean) is
    # within ~0.05 of ln(scale · n^slope) and the slope over ln n ∈ [4.2, 7.6] within ~0.05/1.4.
    assert abs(fit.slope - slope) < 0.05
    assert fit.ci_low < slope < fit.ci_high
    assert fit.ci_high - fit.ci_low < 0.2
    assert fit.intercept == pytest.approx(math.log(3.0), abs=0.3)


def test_fit_slope_ci_covers_at_its_level():
    # 200 independent data sets with true slope -1: a 90% CI should contain -1 about 180 times.
    # Binomial(200, 0.9) has s.d. sqrt(200 · 0.9 · 0.1) = 4.24; accept 180 ± 4 s.d. = [163, 197].
    fits = [fit_slope(NS, synthetic(-1.0, seed=seed), confidence=0.9, n_boot=400, seed=seed) for seed in range(200)]
    covered = sum(fit.ci_low <= -1.0 <= fit.ci_high for fit in fits)
    assert 163 <= covered <= 197


def test_fit_slope_median_and_quantile_statistics():
    values = synthetic(-1.0, replicates=400)
    for statistic in ("median", 0.9):
        fit = fit_slope(NS, values, statistic=statistic, n_boot=500)
        # Every quantile of scale · n^-1 · E scales as n^-1.
        assert fit.ci_low < -1.0 < fit.ci_high
        assert fit.statistic == statistic


def test_fit_slope_is_reproducible():
    values = synthetic(-1.0)
    assert fit_slope(NS, values, seed=3) == fit_slope(NS, values, seed=3)
    assert fit_slope(NS, values, seed=3).ci_low != fit_slope(NS, values, seed=4).ci_low
    # The point estimate does not depend on the bootstrap seed.
    assert fit_slope(NS, values, seed=3).slope == fit_slope(NS, values, seed=4).slope
    # Tensors and arrays give the same fit.
    assert fit_slope(NS, torch.from_numpy(values), seed=3) == fit_slope(NS, values, seed=3)


@pytest.mark.parametrize(
    ("ns", "values", "kwargs", "match"),
    [
        (NS, np.ones((len(NS), 1)), {}, "2 replicates"),
        (NS, np.ones((3, 5)), {}, "shape"),
        ([64], np.ones((1, 5)), {}, "2 sample sizes"),
        (NS[::-1], np.ones((len(NS), 5)), {}, "increasing"),
        ([0, 1], np.ones((2, 5)), {}, "positive"),
        (NS, np.full((len(NS), 5), np.nan), {}, "NaN"),
        (NS, -np.ones((len(NS), 5)), {}, ">= 0"),
        (NS, np.zeros((len(NS), 5)), {}, "is 0"),
        (NS, np.ones((len(NS), 5)), {"statistic": "max"}, "statistic"),
        (NS, np.ones((len(NS), 5)), {"statistic": 1.5}, "quantile"),
        (NS, np.ones((len(NS), 5)), {"confidence": 1.0}, "confidence"),
        (NS, np.ones((len(NS), 5)), {"n_boot": 10}, "n_boot"),
        (NS, np.ones((len(NS), 5)), {"seed": -1}, "seed"),
    ],
)
def test_fit_slope_errors(ns, values, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_slope(ns, values, **kwargs)


def test_fit_slope_rejects_resamples_with_zero_statistic():
    values = synthetic(-1.0, replicates=6)
    values[0, 1:] = 0.0  # one positive value of six: some resamples have mean 0
    with pytest.raises(ValueError, match="resample"):
        fit_slope(NS, values, n_boot=500)


# ------------------------------------------------------------------ check_rate


def test_check_rate_passes_on_rate_one():
    verdict = check_rate(NS, synthetic(-1.0, replicates=200))
    assert isinstance(verdict, Verdict)
    assert verdict.passed, verdict.reason
    assert verdict.ci_low <= -1.0 <= verdict.ci_high


def test_check_rate_fails_on_root_n_data():
    # Errors falling like 1/sqrt(n) must not pass a rate -1 check.
    verdict = check_rate(NS, synthetic(-0.5, replicates=200))
    assert not verdict.passed
    assert "excludes" in verdict.reason
    assert verdict.ci_high < -0.3


def test_check_rate_fails_when_inconclusive():
    # Two replicates of heavy-tailed noise: the CI is far wider than 0.5, so it cannot tell -1 from -1/2.
    rng = np.random.default_rng(1)
    values = np.asarray(NS, dtype=float)[:, None] ** -1.0 * rng.lognormal(sigma=2.0, size=(len(NS), 2))
    verdict = check_rate(NS, values)
    assert verdict.ci_low <= -1.0 <= verdict.ci_high  # the data do fall like 1/n ...
    assert verdict.ci_high - verdict.ci_low > 0.5  # ... but the CI cannot tell it from 1/sqrt(n)
    assert not verdict.passed and "inconclusive" in verdict.reason
    # The same check with a looser width requirement passes: only the width failed it.
    assert check_rate(NS, values, max_ci_width=1.0).passed


def test_check_rate_one_sided():
    fast = synthetic(-2.0, replicates=100)
    assert check_rate(NS, fast, faster_than=-1.0).passed
    slow = synthetic(-0.8, replicates=100)
    verdict = check_rate(NS, slow, faster_than=-1.0)
    assert not verdict.passed and "does not lie below" in verdict.reason


def test_check_rate_errors():
    with pytest.raises(ValueError, match="expected"):
        check_rate(NS, synthetic(-1.0), math.inf)
    with pytest.raises(ValueError, match="max_ci_width"):
        check_rate(NS, synthetic(-1.0), max_ci_width=0.0)


# ------------------------------------------------------------------ check_bound


def test_check_bound_hand_computed():
    # Each row holds 1..10; δ = 0.1: the 0.9-quantile by the "higher" method is the order
    # statistic at index ceil(0.9 · 9) = 9, i.e. 10.  Bounds 20, 40, 12.5 → ratios 0.5, 0.25, 0.8.
    values = np.tile(np.arange(1.0, 11.0), (3, 1))
    verdict = check_bound([1, 2, 4], values, [20.0, 40.0, 12.5], delta=0.1)
    assert verdict.passed, verdict.reason
    assert verdict.worst_ratio == pytest.approx(0.8)
    assert verdict.worst_n == 4
    assert math.isnan(verdict.slope)


def test_check_bound_fails_when_violated():
    values = np.tile(np.arange(1.0, 11.0), (3, 1))
    verdict = check_bound([1, 2, 4], values, [20.0, 9.0, 12.5], delta=0.1, label="Thm X")
    assert not verdict.passed
    assert "n = [2]" in verdict.reason and "Thm X" in verdict.reason
    assert verdict.worst_ratio == pytest.approx(10.0 / 9.0) and verdict.worst_n == 2


def test_check_bound_callable_and_infinite_bounds():
    values = np.tile(np.arange(1.0, 11.0), (2, 1))
    assert check_bound([10, 20], values, lambda n: 200.0 / n, delta=0.1).worst_ratio == pytest.approx(1.0)
    assert not check_bound([10, 20], values, lambda n: 199.0 / n, delta=0.1).passed
    verdict = check_bound([10, 20], values, [math.inf, math.inf], delta=0.1)
    assert verdict.passed and verdict.worst_ratio == 0.0
    # A zero bound is violated by any positive error, and respected by errors that are all 0.
    assert not check_bound([10, 20], values, [0.0, 0.0], delta=0.1).passed
    assert check_bound([10, 20], np.zeros((2, 3)), [0.0, 0.0], delta=0.1).passed


def test_check_bound_errors():
    values = np.ones((2, 5))
    with pytest.raises(ValueError, match="delta"):
        check_bound([1, 2], values, [1.0, 1.0], delta=0.0)
    with pytest.raises(ValueError, match="one value per n"):
        check_bound([1, 2], values, [1.0], delta=0.1)
    with pytest.raises(ValueError, match=">= 0"):
        check_bound([1, 2], values, [1.0, -1.0], delta=0.1)
    with pytest.raises(ValueError, match="shape"):
        check_bound([1, 2], np.ones(5), [1.0, 1.0], delta=0.1)
    with pytest.raises(ValueError, match="NaN"):
        check_bound([1, 2], np.full((2, 5), np.nan), [1.0, 1.0], delta=0.1)


# ------------------------------------------------------------------ rate_sweep


def test_quantile_interval_order_statistics_by_hand():
    # R = 100, level 0.9: ranks 90 ∓ 1.96·sqrt(100·0.9·0.1) = 90 ∓ 5.88, rounded outwards: 84 and 96.
    values = np.arange(1.0, 101.0)[::-1].copy()  # unsorted on purpose
    low, high = quantile_interval(values, 0.9)
    assert (low, high) == (84.0, 96.0)


def test_quantile_interval_covers_the_true_quantile_about_as_often_as_it_says():
    # Uniform(0, 1) samples: the true 0.9-quantile is 0.9. 4000 independent rows of R = 200.
    rows = np.random.default_rng(0).uniform(size=(4000, 200))
    low, high = quantile_interval(rows, 0.9)
    coverage = np.mean((low <= 0.9) & (0.9 <= high))
    # Rounded outwards, the interval is conservative: at least the nominal 0.95 up to the Monte Carlo
    # error (sd = sqrt(0.95 · 0.05 / 4000) = 0.0034; 3 sd below), and not vacuous (below 0.99).
    assert 0.95 - 3 * 0.0034 <= coverage <= 0.99


def test_quantile_interval_refuses_bad_levels():
    with pytest.raises(ValueError, match="level"):
        quantile_interval(np.ones(10), 1.0)
    with pytest.raises(ValueError, match="confidence"):
        quantile_interval(np.ones(10), 0.5, confidence=0.8)
