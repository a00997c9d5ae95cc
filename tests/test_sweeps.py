"""Tests of `synthalign.sweeps`: rate sweeps batched over replicates, reproducible and keyed by n."""

from __future__ import annotations

import json

import pytest
import torch

import synthalign as sa
from synthalign.sweeps import SweepResult, class_estimator, rate_sweep, tabular_estimator
from synthalign.worlds.classes import perturbation_class

NS = [2**k for k in range(6, 12)]


# ------------------------------------------------------------------ fit_slope


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
