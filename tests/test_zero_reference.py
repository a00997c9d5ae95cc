"""Zero probabilities in pi0 on responses the data covers: no NaN in the DPO family, and a check that catches one.

With pi0(a) = 0, every objective that forms ln(pi/pi0) meets −inf − (−inf) where pi(a) = 0 too.
synthalign reads 0/0 as 1 (`synthalign._checks.safe_log_ratio`), so at pi = pi0 every log-ratio is 0.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import synthalign as sa
from synthalign._checks import safe_difference
from synthalign.testing import CHECKS, check_objective

DTYPE = torch.float64
NEG_INF = -math.inf


def _world_with_zeros_in_reference() -> sa.World:
    # pi0 gives response 0 probability 0 in both prompts; mu (uniform) proposes it.
    reference = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.2, 0.8]], dtype=DTYPE)
    target = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], dtype=DTYPE)
    behavior = torch.full((2, 3), 1.0 / 3.0, dtype=DTYPE)
    return sa.World.from_tensors(target=target, reference=reference, behavior=behavior, gamma=0.5)


def test_dpo_loss_of_two_zero_probability_ratios_is_ln_2():
    # h+ = ln(0/0) read as 0, h- = ln(e^-1 / e^-1) = 0: margin 0, loss -ln sigma(0) = ln 2 = 0.6931.
    minus_inf, minus_one = torch.tensor(NEG_INF, dtype=DTYPE), torch.tensor(-1.0, dtype=DTYPE)
    loss = sa.dpo_loss(minus_inf, minus_one, minus_inf, minus_one, gamma=1.0)
    assert float(loss) == pytest.approx(math.log(2.0), abs=1e-15)


def test_population_dpo_at_pi0_with_zeros_in_pi0_is_ln_2():
    world = _world_with_zeros_in_reference()
    # pi = pi0: every log-ratio is 0, every pair's margin is 0, so the loss is ln 2 on every cell.
    assert float(sa.population_loss("dpo", world, world.reference)) == pytest.approx(math.log(2.0), abs=1e-12)


def _reference_objectives() -> list[str]:
    return [name for name in sa.list_objectives() if sa.get_objective(name).needs_reference]


@pytest.mark.parametrize("name", _reference_objectives())
def test_every_objective_with_a_reference_is_nan_free_at_pi0_with_zeros(name):
    """The population loss at pi = pi0 (zeros where mu proposes) is finite: each ln(pi/pi0) is 0 there."""
    world = _world_with_zeros_in_reference()
    obj = sa.get_objective(name)
    kwargs = dict(obj.example_params)
    if obj.needs_reward:
        kwargs["reward"] = world.true_reward
    loss = sa.population_loss(name, world, world.reference, beta=0.1, **kwargs)
    assert torch.isfinite(loss).all(), f"{name}: {loss}"


@pytest.mark.parametrize("name", ["dpo", "ipo"])
def test_fit_on_data_covering_zeros_of_pi0(name):
    world = _world_with_zeros_in_reference()
    data = world.sample_preferences(256, 3, seed=0)
    fitted = sa.fit(name, data, beta=0.1, ridge=1.0)
    # Such data were once refused with a misleading "objective is infinite at the starting point".
    assert torch.isfinite(fitted.loss).all()
    assert not torch.isnan(fitted.policy.logp).any()


@sa.objective("margin_difference_dpo", register=False)
def margin_difference_dpo(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *, gamma):
    # DPO written as (margin of pi) − (margin of pi0), each margin with its infinite ties at 0: right when
    # pi0 has full support, NaN where pi0(a+) = pi(a+) = 0 (−inf − (−inf) between the two margins).
    policy_margin = safe_difference(logp_chosen, logp_rejected)
    reference_margin = safe_difference(ref_logp_chosen, ref_logp_rejected)
    return -F.logsigmoid(gamma * (policy_margin - reference_margin))


def test_the_zero_probability_check_catches_nan_from_zeros_in_pi0_only():
    assert "zero_probability" in CHECKS  # so the conformance suite runs it on every registered objective
    report = check_objective(margin_difference_dpo, checks=("zero_probability",))
    result = report["zero_probability"]
    assert not result.passed
    # Only the scenarios with zeros in pi0 find it: with pi0 of full support this form is DPO.
    assert "pi0 zero" in result.detail and "pi* zero" not in result.detail and "mu is zero" not in result.detail
    assert report_for_dpo_passes()


def report_for_dpo_passes() -> bool:
    return check_objective("dpo", checks=("zero_probability",))["zero_probability"].passed
