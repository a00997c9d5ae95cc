"""Tests of `synthalign.testing.checks`: `check_objective` runs every check of `CHECKS` on one objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _check_objectives import _failed, margin

import synthalign as sa
from synthalign.testing import CHECKS, CheckReport, check_objective

# register=False keeps the registry of the test process unchanged.


@sa.objective("user_pmle", register=False)
def user_pmle(logp_chosen, logp_rejected, *, gamma):
    return -F.logsigmoid(gamma * margin(logp_chosen, logp_rejected))


def test_user_objective_passes_every_applicable_check():
    report = check_objective(user_pmle, consistent=True, swap_symmetry="likelihood", raise_on_failure=True)
    assert isinstance(report, CheckReport)
    assert [r.name for r in report.results] == list(CHECKS)
    assert report.passed and not report.failures
    assert report["closed_form"].passed is None  # no closed form declared
    assert report["population_minimizer"].values["forward_kl"] < 1e-8


def test_user_objective_gets_losses_fit_and_rate_sweep():
    from synthalign.sweeps import rate_sweep

    world = sa.World.random(3, 4, seed=1)
    pmle = sa.get_objective("pmle")
    data = world.sample_preferences(64, 3, seed=0)
    policy = sa.Policy(world.reference.logp)
    torch.testing.assert_close(
        sa.population_loss(user_pmle, world, policy), sa.population_loss(pmle, world, policy), rtol=1e-13, atol=0
    )
    torch.testing.assert_close(
        sa.empirical_loss(user_pmle, data, policy), sa.empirical_loss(pmle, data, policy), rtol=1e-13, atol=0
    )
    ours, builtin = sa.fit(user_pmle, data, ridge=1e-3), sa.fit(pmle, data, ridge=1e-3)
    torch.testing.assert_close(ours.policy.logp, builtin.policy.logp, rtol=0, atol=1e-8)
    sweep = rate_sweep(world, user_pmle, ns=(2**8, 2**14), replicates=20, seed=0)
    # PMLE is consistent: the forward KL falls as O(1/n) (Thm 4), a factor ~64 here; a fall by 8x is
    # far inside the replicate noise of 20 datasets.
    assert sweep.median[1] < sweep.median[0] / 8


def test_an_objective_that_raises_fails_instead_of_crashing_the_battery():
    @sa.objective("raises", register=False)
    def raises(logp_chosen, logp_rejected, *, gamma):
        raise RuntimeError("boom")

    report = check_objective(raises)
    not_applicable = {r.name for r in report.results if r.passed is None}
    assert _failed(report) == set(CHECKS) - not_applicable
    assert "RuntimeError: boom" in report["gradcheck"].detail
