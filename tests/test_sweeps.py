"""Tests for synthalign.sweeps: rate sweeps, log-log slopes with bootstrap CIs, and verdicts that can fail."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import synthalign as sa
from synthalign.stats import Verdict, check_bound, check_rate, fit_slope
from synthalign.sweeps import SweepResult, class_estimator, rate_sweep, tabular_estimator
from synthalign.worlds.classes import perturbation_class

NS = [2**k for k in range(6, 12)]


def synthetic(slope: float, *, replicates: int = 50, scale: float = 3.0, seed: int = 0, ns=NS) -> np.ndarray:
    """values[i, r] = scale · n_i^slope · E_ir with E_ir i.i.d. Exponential(1): the mean is exactly scale · n^slope."""
    rng = np.random.default_rng(seed)
    ns = np.asarray(ns, dtype=np.float64)
    return scale * ns[:, None] ** slope * rng.exponential(size=(ns.size, replicates))


# ------------------------------------------------------------------ fit_slope


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


@pytest.fixture
def world() -> sa.World:
    return sa.World.random(2, 3, gamma=0.5, logit_scale=1.0, seed=0)


class CountingWorld:
    """A world stand-in that counts sample_preferences calls (rate_sweep only needs these two members)."""

    def __init__(self, world):
        self.world, self.target, self.calls = world, world.target, []

    def sample_preferences(self, n, replicates, seed=None):
        self.calls.append((n, replicates))
        return self.world.sample_preferences(n, replicates, seed=seed)


def test_rate_sweep_is_batched_over_replicates(world):
    counting = CountingWorld(world)
    fits = []

    def estimator(data):
        fits.append(data.replicates)
        return sa.fit("pmle", data, tol=1e-8)

    sweep = rate_sweep(counting, estimator, [256, 512, 1024], replicates=7, seed=0)
    # One sampling call and one batched fit per n: no loop over replicates.
    assert counting.calls == [(256, 7), (512, 7), (1024, 7)]
    assert fits == [7, 7, 7]
    assert sweep.values.shape == (3, 7) and sweep.values.dtype == torch.float64
    torch.testing.assert_close(sweep.mean, sweep.values.mean(dim=1))
    torch.testing.assert_close(sweep.quantiles[0.5], sweep.median)


def test_rate_sweep_is_reproducible_and_keyed_by_n(world):
    first = rate_sweep(world, "pmle", [256, 512], replicates=5, seed=2, tol=1e-8)
    again = rate_sweep(world, "pmle", [256, 512], replicates=5, seed=2, tol=1e-8)
    torch.testing.assert_close(first.values, again.values, rtol=0, atol=0)
    # n = 512's datasets do not depend on which other n are swept.
    alone = rate_sweep(world, "pmle", [512], replicates=5, seed=2, tol=1e-8)
    torch.testing.assert_close(alone.values[0], first.values[1], rtol=0, atol=0)
    other = rate_sweep(world, "pmle", [256, 512], replicates=5, seed=3, tol=1e-8)
    assert not torch.equal(other.values, first.values)


def test_rate_sweep_estimator_forms_agree(world):
    by_name = rate_sweep(world, "pmle", [512], replicates=4, seed=0, tol=1e-8)
    by_callable = rate_sweep(world, tabular_estimator("pmle", tol=1e-8), [512], replicates=4, seed=0)
    torch.testing.assert_close(by_name.values, by_callable.values, rtol=0, atol=0)
    assert by_name.estimator == "tabular pmle"

    members = perturbation_class(world, 30, 0.5, seed=0)
    by_candidates = rate_sweep(world, "pmle", [512], replicates=4, seed=0, candidates=members)
    by_class = rate_sweep(world, class_estimator("pmle", members), [512], replicates=4, seed=0)
    torch.testing.assert_close(by_candidates.values, by_class.values, rtol=0, atol=0)
    # The argmin picks members, so every error is one of the members' forward KLs.
    member_errors = sa.forward_kl(world.target, members)
    assert torch.isin(by_candidates.values, member_errors).all()


def test_rate_sweep_extra_metrics_and_record(world):
    sweep = rate_sweep(
        world,
        "pmle",
        [256, 512],
        replicates=3,
        seed=0,
        tol=1e-8,
        extra_metrics={"reverse_kl": sa.reverse_kl},
        quantiles=(0.1, 0.9),
        progress=True,
    )
    assert isinstance(sweep, SweepResult)
    assert sweep.metric == "forward_kl" and set(sweep.extra) == {"reverse_kl"}
    assert sweep.extra["reverse_kl"].shape == (2, 3)
    assert set(sweep.quantiles) == {0.1, 0.9}
    torch.testing.assert_close(sweep.quantile(0.9), sweep.quantiles[0.9])
    record = json.loads(json.dumps(sweep.to_dict()))
    assert record["ns"] == [256, 512] and len(record["values"][0]) == 3


def test_rate_sweep_errors(world):
    with pytest.raises(ValueError, match="replicates"):
        rate_sweep(world, "pmle", [64], replicates=0)
    with pytest.raises(ValueError, match="increasing"):
        rate_sweep(world, "pmle", [128, 64])
    with pytest.raises(ValueError, match="seed"):
        rate_sweep(world, "pmle", [64], seed=-1)
    with pytest.raises(ValueError, match="estimator"):
        rate_sweep(world, 3, [64])
    with pytest.raises(ValueError, match="unknown objective"):
        rate_sweep(world, "no-such-objective", [64])
    members = perturbation_class(world, 5, 0.5, seed=0)
    with pytest.raises(ValueError, match="fit options"):
        rate_sweep(world, "pmle", [64], candidates=members, ridge=1.0)
    with pytest.raises(ValueError, match="reward_class needs candidates"):
        rate_sweep(world, "rkl", [64], reward_class=members)
    with pytest.raises(ValueError, match="callables"):
        rate_sweep(world, tabular_estimator("pmle"), [64], candidates=members)
    with pytest.raises(ValueError, match="Policy"):
        rate_sweep(world, lambda data: 1.0, [64], replicates=2)


def test_rate_sweep_tabular_pmle_has_rate_one_over_n(world):
    # The end-to-end use: unregularized tabular PMLE on a 2 × 3 world.  From n = 2^9 every
    # prompt's comparison graph is strongly connected in essentially every dataset, and the
    # mean forward KL is c/n + O(1/n²) (Fisher asymptotics), so the slope CI must contain -1.
    sweep = rate_sweep(world, "pmle", [2**k for k in range(9, 15)], replicates=100, seed=0, tol=1e-8)
    verdict = sweep.check_rate(-1.0)
    assert verdict.passed, verdict.reason
    assert not sweep.check_rate(-0.5).passed
