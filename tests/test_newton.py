"""The Newton solver's derivatives: analytic margin forms equal automatic differentiation."""

import dataclasses

import pytest
import torch

import synthalign as sa
from synthalign.estimators.newton import NewtonProblem
from synthalign.evaluate import data_weights, make_context

MARGIN_OBJECTIVES = ["pmle", "reward_model", "dpo", "ipo", "rebel", "distillation"]


def _problem(obj, world, data, beta):
    reward = world.true_reward.clamp_min(-30.0) if obj.needs_reward else None
    ctx = make_context(obj, world, reward, obj.resolve_params({}))
    pair_weight, prompt_weight, total = data_weights(obj, data)
    return NewtonProblem(obj, pair_weight, prompt_weight, total, ctx, beta, 0.0, step_cap=40.0)


@pytest.mark.parametrize("name", MARGIN_OBJECTIVES)
@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_margin_derivatives_equal_autograd(name, beta):
    world = sa.World.random(3, 5, seed=2, zero_fraction=0.2)
    data = world.sample_preferences(n=300, replicates=4, seed=1)
    obj = sa.get_objective(name)
    assert obj.margin_derivatives is not None
    generic = dataclasses.replace(obj, margin_derivatives=None)
    theta = torch.randn(4, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fast = _problem(obj, world, data, beta).derivatives(theta)
    slow = _problem(generic, world, data, beta).derivatives(theta)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_hessian_matches_finite_differences_of_gradient():
    # Central differences of the analytic gradient, step 1e-6: error O(1e-12) for these smooth losses.
    world = sa.World.random(2, 4, seed=5)
    data = world.sample_preferences(n=200, replicates=2, seed=3)
    problem = _problem(sa.get_objective("pmle"), world, data, beta=0.2)
    theta = torch.randn(2, 2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _, _, hess = problem.derivatives(theta)
    step = 1e-6
    for a in range(4):
        shift = torch.zeros_like(theta)
        shift[..., a] = step
        _, g_plus, _ = problem.derivatives(theta + shift)
        _, g_minus, _ = problem.derivatives(theta - shift)
        torch.testing.assert_close(hess[..., :, a], (g_plus - g_minus) / (2 * step), rtol=1e-6, atol=1e-8)


def test_a_user_declared_reward_model_returns_its_reward():
    # The same loss as the built-in reward model, declared by a user: fits_reward makes fit start from
    # R = 0 and return R̂ = gamma · (centred log-probabilities), identical to fit_reward_model's.
    import torch.nn.functional as F

    @sa.objective("bt_by_hand", register=False, fits_reward=True)
    def bt_by_hand(logp_chosen, logp_rejected, *, gamma):
        return -F.logsigmoid(gamma * sa.log_ratio(logp_chosen, logp_rejected))

    world = sa.World.random(2, 4, seed=3)
    data = world.sample_preferences(500, replicates=3, seed=2)
    mine = sa.fit(bt_by_hand, data, ridge=1e-2)
    builtin = sa.fit_reward_model(data, ridge=1e-2)
    assert mine.reward is not None
    torch.testing.assert_close(mine.reward, builtin.reward, rtol=0, atol=1e-8)
    assert sa.fit("pmle", data).reward is None
