"""The Newton solver's derivatives: analytic margin forms equal automatic differentiation."""

import dataclasses

import pytest
import torch

import synthalign as sa
import synthalign._logistic_pairs as logistic_pairs
import synthalign.estimators.newton as newton
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


def _nan_below(hess):
    """hess with its strict lower triangle NaN: what a reader of the upper triangle must not see."""
    below = torch.ones(hess.shape[-2:], dtype=torch.bool).tril(diagonal=-1)
    return hess.masked_fill(below, float("nan"))


@pytest.mark.parametrize(("name", "A", "beta"), [("pmle", 70, 0.0), ("dpo", 70, 0.3), ("ipo", 6, 0.3)])
def test_upper_only_derivatives_are_the_upper_triangle_of_the_full_ones(name, A, beta):
    # A = 70 takes the logistic triangle path (which then skips the lower half), IPO the cell path.
    world = sa.World.random(2, A, seed=4, zero_fraction=0.1)
    data = world.sample_preferences(n=5000, replicates=3, seed=2)
    problem = _problem(sa.get_objective(name), world, data, beta)
    theta = torch.randn(3, 2, A, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    value, grad, hess = (t.clone() for t in problem.derivatives(theta))
    upper_value, upper_grad, upper_hess = problem.derivatives(theta, upper_only=True)
    # Equal up to the order of summation of the Hessian's diagonal (row and column sums of other strips).
    torch.testing.assert_close(upper_value, value, rtol=0.0, atol=0.0)
    torch.testing.assert_close(upper_grad, grad, rtol=0.0, atol=0.0)
    atol = 1e-14 * float(hess.abs().max())
    torch.testing.assert_close(upper_hess.triu(), hess.triu(), rtol=1e-12, atol=atol)
    torch.testing.assert_close(hess, hess.transpose(-1, -2), rtol=1e-12, atol=atol)


def test_newton_directions_read_only_the_upper_triangle():
    # Positive definite blocks (one Cholesky), a slightly indefinite one (a Levenberg–Marquardt rung)
    # and a strongly indefinite one (|eigenvalues|): the same directions with NaN below the diagonal.
    generator = torch.Generator().manual_seed(5)
    A = 6
    base = torch.randn(4, A, A, dtype=torch.float64, generator=generator)
    hess = base @ base.transpose(-1, -2)
    hess[2] -= 1.5 * torch.linalg.eigvalsh(hess[2])[0] * torch.eye(A, dtype=torch.float64)
    hess[3] = 1e3 * (torch.ones(A, A, dtype=torch.float64) - torch.eye(A, dtype=torch.float64)) + torch.eye(
        A, dtype=torch.float64
    )
    grad = torch.randn(4, A, dtype=torch.float64, generator=generator)
    grad = grad - grad.mean(dim=-1, keepdim=True)
    full = newton._hessian_direction(grad, hess.clone())
    upper = newton._hessian_direction(grad, _nan_below(hess))
    assert torch.isfinite(full).all() and bool((full.abs().sum(dim=-1) > 0).all())
    torch.testing.assert_close(upper, full, rtol=1e-12, atol=0.0)


def test_kkt_steps_read_only_the_upper_triangle():
    # Block 0 has a starved response (Hessian diagonal ~0) that wants mass: its KKT step is built
    # from the whole symmetric matrix, which the upper triangle alone must give.
    generator = torch.Generator().manual_seed(0)
    A = 5
    base = torch.randn(2, A, A, dtype=torch.float64, generator=generator)
    hess = base @ base.transpose(-1, -2)
    hess[0, 4, :] = hess[0, :, 4] = 0.0
    logp = torch.log_softmax(torch.randn(2, A, dtype=torch.float64, generator=generator), dim=-1)
    logp[0, 4] = -60.0
    reduced = torch.randn(2, A, dtype=torch.float64, generator=generator)
    reduced[0, 4] = -1.0
    reduced = reduced - (logp.exp() * reduced).sum(dim=-1, keepdim=True)  # a reduced gradient: Σ pi v = 0
    grad = logp.exp() * reduced
    full = newton._kkt_where_starved(grad, hess.clone(), logp, reduced)
    upper = newton._kkt_where_starved(grad, _nan_below(hess), logp, reduced)
    assert bool(full[1][0]) and not bool(full[1][1]) and float(full[0][0, 4]) > 0  # the starved response gains
    for a, b in zip(upper, full, strict=True):
        torch.testing.assert_close(a, b, rtol=0.0, atol=0.0)


@pytest.mark.parametrize("shared_reward", [False, True])
def test_mass_moves_of_some_problems_pick_the_distillation_table_they_hold(shared_reward, monkeypatch):
    # Distillation at A = 70 (the logistic kernels): the derivatives take the soft table of every
    # problem; the mass moves of a few of them pick their rows of it instead of taking it again,
    # and give what a table taken afresh gives.
    world = sa.World.random(3, 70, seed=30)
    data = sa.PairData(world.sample_preferences(n=4000, replicates=2, seed=31).counts, 4000, world)
    obj = sa.get_objective("distillation")
    noise = torch.randn(2, 3, 70, dtype=torch.float64, generator=torch.Generator().manual_seed(32))
    reward = world.true_reward + (0.0 if shared_reward else noise)
    ctx = make_context(obj, world, reward, {})
    pair_weight, prompt_weight, total = data_weights(obj, data)
    theta = torch.randn(2, 3, 70, dtype=torch.float64, generator=torch.Generator().manual_seed(33))
    which = torch.tensor([[True, False, True], [False, False, True]])

    def moves(carry: bool):
        problem = NewtonProblem(obj, pair_weight, prompt_weight, total, ctx, 0.0, 0.0, step_cap=40.0)
        problem.derivatives(theta)
        assert "distillation" in problem._pair_cache
        taken = []
        original = logistic_pairs.distillation_weights

        def counted(*args, **kwargs):
            taken.append(args[0].shape)
            return original(*args, **kwargs)

        monkeypatch.setattr(logistic_pairs, "distillation_weights", counted)
        if not carry:
            monkeypatch.setattr(newton, "carry_distillation_weights", lambda *args: None)
        try:
            return (*newton._mass_moves_of(problem, theta, which), taken)
        finally:
            monkeypatch.undo()

    gap, logp, taken = moves(carry=True)
    fresh_gap, fresh_logp, fresh_taken = moves(carry=False)
    assert taken == [] and fresh_taken == [torch.Size([3, 1, 70, 70])]
    assert bool(torch.isnan(gap[~which]).all()) and bool(torch.isfinite(gap[which]).all())
    torch.testing.assert_close(gap[which], fresh_gap[which], rtol=1e-14, atol=1e-16)
    torch.testing.assert_close(logp, fresh_logp, rtol=1e-14, atol=1e-16)
