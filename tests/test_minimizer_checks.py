"""Tests of `synthalign.testing.minimizer_checks`: the closed-form and population-minimizer checks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from _check_objectives import _failed, margin

import synthalign as sa
from synthalign.testing import check_objective

# register=False keeps the registry of the test process unchanged.


@sa.objective("user_dpo", register=False)
def user_dpo(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *, gamma):
    return -F.logsigmoid(gamma * (margin(logp_chosen, logp_rejected) - margin(ref_logp_chosen, ref_logp_rejected)))


@sa.objective("sign_flipped_dpo", register=False)
def sign_flipped_dpo(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *, gamma):
    return -F.logsigmoid(-gamma * (margin(logp_chosen, logp_rejected) - margin(ref_logp_chosen, ref_logp_rejected)))


def _dpo_minimizer(reward, world, beta, params):
    return sa.Policy(torch.log_softmax(world.reference.logp + world.target.logp, dim=-1))


def test_declared_minimizer_is_checked():
    report = check_objective(
        user_dpo, consistent=False, expected_minimizer=_dpo_minimizer, checks="population_minimizer"
    )
    result = report["population_minimizer"]
    assert result.passed, result.detail
    assert result.values["forward_kl_to_expected"] < 1e-8
    # The same fit against pi* instead: DPO is not consistent on a generic world.
    assert not check_objective(user_dpo, consistent=True, checks="population_minimizer").passed


def test_sign_flip_fails_the_minimizer_checks():
    report = check_objective(
        sign_flipped_dpo,
        consistent=False,
        expected_minimizer=_dpo_minimizer,
        swap_symmetry="likelihood",
        checks=("population_minimizer", "pair_swap_symmetry", "gradcheck"),
    )
    # Flipping the sign keeps a valid likelihood and smooth derivatives; only the minimizer gives it away.
    assert _failed(report) == {"population_minimizer"}
    assert "not the declared minimizer" in report["population_minimizer"].detail


def test_sign_flipped_pmle_is_not_consistent():
    @sa.objective("sign_flipped_pmle", register=False)
    def sign_flipped_pmle(logp_chosen, logp_rejected, *, gamma):
        return -F.logsigmoid(-gamma * (logp_chosen - logp_rejected))

    report = check_objective(sign_flipped_pmle, consistent=True, checks="population_minimizer")
    assert _failed(report) == {"population_minimizer"}


def test_wrong_closed_form_fails():
    def uniform(reward, world, beta, params):
        return sa.Policy(torch.full_like(world.target.logp, -math.log(world.n_responses)))

    @sa.objective("rkl_wrong_closed_form", data="prompts", closed_form=uniform, register=False)
    def rkl_wrong_closed_form(logp, reward, *, gamma):
        return sa.rkl_loss(logp, reward, gamma=gamma, reduction="none")

    report = check_objective(rkl_wrong_closed_form, checks=("closed_form",))
    assert _failed(report) == {"closed_form"}
