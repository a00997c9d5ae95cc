"""The triangle paths of the logistic losses (`synthalign._logistic_pairs`) against the cell-by-cell path.

The population loss of PMLE, the reward model and DPO under spec §1's law, and the solver's
derivatives of the same losses, are computed over one triangle of cells (a pair (a, b), (b, a)
in one evaluation).  Each is compared with the cell path it replaces: `empirical_loss` on the
materialised law table (`population_preferences`), and autograd's Hessian of `LogitObjective.values`,
on ordinary and extreme inputs (logits ±1e4, gamma 1e-3 … 1e3, responses of probability zero),
with many strips per table (small budgets) as well as one; the derivative kernel itself also
with a dense cell-by-cell reference (`_dense_logistic_reference`).
"""

from __future__ import annotations

import pytest
import torch

import synthalign as sa
import synthalign._logistic_pairs as logistic_pairs
import synthalign.evaluate as evaluate
from synthalign.estimators.derivatives import LogitObjective
from synthalign.evaluate import data_weights, make_context
from synthalign.registry.protocol import get_objective
from synthalign.worlds.laws import BradleyTerry

DTYPE = torch.float64
LOGISTIC = ["pmle", "reward_model", "dpo"]


def _logits(shape, scale, seed):
    return scale * torch.randn(*shape, dtype=DTYPE, generator=torch.Generator().manual_seed(seed))


def _world(X, A, *, gamma=1.0, seed=0, zero_target=False, zero_behavior=False):
    world = sa.World.random(X, A, seed=seed).replace(gamma=gamma)
    if zero_target:  # pi* never gives responses 0 and 1: their law scores are −inf, and tie with each other
        probs = world.target.probs.clone()
        probs[:, :2] = 0.0
        world = world.replace(target=sa.Policy.from_probs(probs / probs.sum(dim=-1, keepdim=True)))
    if zero_behavior:  # mu never proposes the last response: its cells have weight zero
        probs = world.behavior.probs.clone()
        probs[:, -1] = 0.0
        world = world.replace(behavior=sa.Policy.from_probs(probs / probs.sum(dim=-1, keepdim=True)))
    return world


def _counted(monkeypatch):
    """Counts the calls of the population triangle path."""
    calls = []
    original = evaluate.population_logistic_sums

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluate, "population_logistic_sums", counted)
    return calls


@pytest.mark.parametrize("name", LOGISTIC)
@pytest.mark.parametrize("strip", [None, 40])
@pytest.mark.parametrize(
    ("scale", "gamma", "zeros"),
    [
        (0.0, 1.0, {}),
        (3.0, 1.0, {}),
        (3.0, 1e-3, {"zero_behavior": True}),
        (3.0, 1e3, {"zero_target": True}),  # spread γ·Δ beyond e^±600: the sigmoid strips
        (1e4, 1.0, {"zero_target": True, "zero_behavior": True}),
    ],
)
def test_population_triangle_equals_the_cell_path(name, strip, scale, gamma, zeros, monkeypatch):
    if strip is not None:
        monkeypatch.setattr(logistic_pairs, "STRIP", strip)
    calls = _counted(monkeypatch)
    world = _world(3, 23, gamma=gamma, seed=1, **zeros)
    policy = sa.Policy.from_logits(_logits((4, 3, 23), scale, seed=2))
    triangle = sa.population_loss(name, world, policy)
    assert calls, "the triangle path was not taken"
    cells = sa.empirical_loss(name, sa.population_preferences(world), policy)
    assert torch.isfinite(triangle).all()
    torch.testing.assert_close(triangle, cells, rtol=1e-13, atol=0.0)


def test_population_triangle_with_an_explicit_law_and_beta(monkeypatch):
    calls = _counted(monkeypatch)
    base = _world(2, 17, seed=3)
    other = sa.Policy.from_logits(_logits((2, 17), 2.0, seed=4))
    world = base.replace(law=BradleyTerry(other, gamma=0.7))
    policy = sa.Policy.from_logits(_logits((2, 17), 1.0, seed=5))
    triangle = sa.population_loss("pmle", world, policy, beta=0.3)
    assert calls
    cells = sa.empirical_loss("pmle", sa.population_preferences(world), policy, beta=0.3)  # one replicate, [1]
    assert triangle.shape == ()
    torch.testing.assert_close(triangle, cells[0], rtol=1e-13, atol=0.0)


def test_population_triangle_leaves_autograd_and_zero_policy_probabilities_to_the_cell_path(monkeypatch):
    calls = _counted(monkeypatch)
    world = _world(2, 9, seed=6)
    logits = _logits((2, 9), 1.0, seed=7).requires_grad_(True)
    loss = sa.population_loss("pmle", world, sa.Policy.from_logits(logits))
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(grad).all() and not calls
    probs = torch.softmax(logits.detach(), dim=-1)
    probs[:, 0] = 0.0  # ln pi = −inf: not a finite score
    zero = sa.Policy.from_probs(probs / probs.sum(dim=-1, keepdim=True))
    assert float(sa.population_loss("pmle", world, zero)) == float("inf") and not calls


def _problem(name, world, data):
    obj = get_objective(name)
    ctx = make_context(obj, world, None, obj.resolve_params({}))
    pair_weight, prompt_weight, total = data_weights(obj, data)
    return LogitObjective(obj, pair_weight, prompt_weight, total, ctx, 0.0, 0.0)


def _autograd_reference(problem, theta):
    R, X, A = theta.shape
    leaf = theta.clone().requires_grad_(True)
    values = problem.values(leaf)  # a logp that requires grad takes the cell path
    (grad,) = torch.autograd.grad(values.sum(), leaf)
    full = torch.autograd.functional.hessian(lambda t: problem.values(t).sum(), theta).reshape(R * X, A, R * X, A)
    blocks = torch.stack([full[i, :, i, :] for i in range(R * X)]).reshape(R, X, A, A)
    return values.detach(), grad, blocks


def _triangle_calls(monkeypatch, strip):
    """Every table takes the derivative triangle (strips of `strip` cells); records whether each call answered."""
    monkeypatch.setattr(logistic_pairs, "_MIN_RESPONSES", 1)
    if strip is not None:
        monkeypatch.setattr(logistic_pairs, "HESSIAN_STRIP", strip)
    return _answered_calls(monkeypatch, "logistic_derivatives")


def _answered_calls(monkeypatch, name):
    """Records whether each call of the kernel `name` by the solver's objective answered (not None)."""
    calls = []
    original = getattr(logistic_pairs, name)

    def counted(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(result is not None)
        return result

    monkeypatch.setattr(f"synthalign.estimators.derivatives.{name}", counted)
    return calls


def _assert_triangle_equals_autograd(problem, theta, calls):
    """The triangle path's value, gradient and Hessian (one answered call) against autograd on the cell path."""
    value, grad, hess = problem.derivatives(theta)
    assert calls == [True]
    ref_value, ref_grad, ref_hess = _autograd_reference(problem, theta)
    torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hess, ref_hess, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", LOGISTIC)
@pytest.mark.parametrize("strip", [7, 40, None])
@pytest.mark.parametrize(("scale", "gamma"), [(1.0, 1.0), (3.0, 1e-3), (0.3, 30.0)])
def test_derivative_triangle_equals_autograd(name, strip, scale, gamma, monkeypatch):
    calls = _triangle_calls(monkeypatch, strip)
    world = _world(3, 6, gamma=gamma, seed=8)
    data = world.sample_preferences(50, 2, seed=9)  # some cells have count zero
    problem = _problem(name, world, data)
    theta = _logits((2, 3, 6), scale, seed=10)
    _assert_triangle_equals_autograd(problem, theta, calls)


@pytest.mark.parametrize("scale", [3.0, 1e4])
def test_derivative_triangle_equals_the_cell_path_on_a_large_table(scale, monkeypatch):
    # A = 70 takes the triangle path by default, over many strips; logits ±1e4 spread the
    # scores beyond e^±600, where the triangle path declines and the cell path answers.
    world = _world(2, 70, seed=11)
    problem = _problem("pmle", world, sa.population_preferences(world))
    theta = _logits((1, 2, 70), scale, seed=12)
    triangle = problem.derivatives(theta)
    monkeypatch.setattr(logistic_pairs, "_MIN_RESPONSES", 10**9)
    cells = problem.derivatives(theta)
    for fast, slow in zip(triangle, cells, strict=True):
        assert torch.isfinite(fast).all()
        torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-15)


def _dense_logistic_reference(scores, weight, scale, gamma):
    """Σ_(a, b) w_ab softplus(s_b − s_a) and its derivatives in u = s / γ, cell by cell over the full table."""
    margin = scores[:, :, None] - scores[:, None, :]  # m_ab = s_a − s_b
    used = weight > 0
    loss = torch.where(used, weight * torch.nn.functional.softplus(-margin), 0.0)
    value = loss.sum(dim=(-1, -2)) * scale
    first = weight * torch.sigmoid(-margin)  # w_ab σ(−m): −∂/∂s_a, +∂/∂s_b
    grad = -gamma * scale[:, None] * (first.sum(dim=-1) - first.sum(dim=-2))
    pair = weight + weight.transpose(-1, -2)
    curvature = pair * torch.sigmoid(margin) * torch.sigmoid(-margin)
    hess = -gamma * gamma * scale[:, None, None] * curvature
    off_diagonal = hess - torch.diag_embed(hess.diagonal(dim1=-2, dim2=-1))
    full = off_diagonal - torch.diag_embed(off_diagonal.sum(dim=-1))
    return value, grad, full


@pytest.mark.parametrize("upper_only", [False, True])
@pytest.mark.parametrize("budget", [None, 7, 300, 5000])
@pytest.mark.parametrize("spread", [0.0, 4.0, 599.0])
def test_logistic_derivatives_equal_a_dense_reference(budget, spread, upper_only):
    # Tables of 70 responses in strips of one row up to several prompts at once; scores that
    # spread over up to e^±599 (σ, σ' down to 1e-260) and weights with zeros (whole rows too).
    generator = torch.Generator().manual_seed(13)
    P, A, gamma = 5, 70, 0.7
    scores = spread * (torch.rand(P, A, generator=generator, dtype=DTYPE) - 0.5)
    scores[:, 0], scores[:, 1] = -spread / 2, spread / 2
    weight = torch.rand(P, A, A, generator=generator, dtype=DTYPE)
    weight = torch.where(torch.rand(P, A, A, generator=generator, dtype=DTYPE) < 0.4, 0.0, weight)
    weight[:, 3] = 0.0
    scale = torch.rand(P, generator=generator, dtype=DTYPE) + 0.5
    hess = torch.full((P, A, A), float("nan"), dtype=DTYPE)
    value, grad, diag = logistic_pairs.logistic_derivatives(
        scores, weight, scale, gamma, hess, budget, upper_only=upper_only
    )
    hess.diagonal(dim1=-2, dim2=-1).add_(diag)
    ref_value, ref_grad, ref_hess = _dense_logistic_reference(scores, weight, scale, gamma)
    if upper_only:  # the upper triangle is the Hessian's; below it, nothing but the strips' zero corner cells
        lower = hess.tril(diagonal=-1)[torch.ones(A, A, dtype=torch.bool).tril(diagonal=-1).expand(P, A, A)]
        assert bool((lower.isnan() | (lower == 0.0)).all())
        hess, ref_hess = hess.triu(), ref_hess.triu()
    assert torch.isfinite(hess).all()
    torch.testing.assert_close(value, ref_value, rtol=1e-13, atol=0.0)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-14 * float(ref_grad.abs().max()))
    torch.testing.assert_close(hess, ref_hess, rtol=1e-12, atol=1e-14 * float(ref_hess.abs().max()))


def test_logistic_derivatives_decline_scores_beyond_the_exponential_range():
    # Logits ±1e4 spread the scores past e^±600: the triangle path declines (the cell path answers,
    # `test_derivative_triangle_equals_the_cell_path_on_a_large_table`).
    scores = 1e4 * torch.linspace(-1.0, 1.0, 70, dtype=DTYPE).unsqueeze(0)
    weight = torch.ones(1, 70, 70, dtype=DTYPE)
    hess = torch.empty(1, 70, 70, dtype=DTYPE)
    assert logistic_pairs.logistic_derivatives(scores, weight, torch.ones(1, dtype=DTYPE), 1.0, hess) is None


def _dense_move_reference(scores, weight, lift):
    """[T, P, A] Σ over the cells (a ≠ b) of w · (loss before − loss after) when s_a alone rises by lift."""
    A = lift.shape[-1]

    def softplus(x):  # ln(1 + e^x) to the last bit (torch's softplus returns x itself above 20)
        return torch.logaddexp(torch.zeros_like(x), x)

    off = ~torch.eye(A, dtype=torch.bool)
    before = softplus(scores[:, None, :] - scores[:, :, None])  # [P, a, b]: cell (a, b) = ln(1 + e^(s_b − s_a))
    # raising s_a: its row's cells (a chosen) lose, its column's cells (a rejected) gain
    as_chosen = softplus(scores[None, :, None, :] - scores[None, :, :, None] - lift[..., None])
    as_rejected = softplus(scores[None, :, :, None] + lift[..., None] - scores[None, :, None, :])  # cell (b, a)
    row = torch.where(off, weight * (before - as_chosen), 0.0).sum(dim=-1)
    column = torch.where(off, weight.transpose(-1, -2) * (before.transpose(-1, -2) - as_rejected), 0.0).sum(dim=-1)
    return row + column


@pytest.mark.parametrize("budget", [None, 1, 40, 5000])
@pytest.mark.parametrize("spread", [0.0, 4.0, 599.0])
def test_logistic_mass_decreases_equal_a_dense_reference(budget, spread):
    # Strips of one row (budget 1) up to several prompts at once; scores spreading up to e^±599;
    # lifts from 1e-12 (the smallest mass moves) to 599; weights with zeros and a weighted diagonal
    # (the cells (a, a) never change).
    generator = torch.Generator().manual_seed(14)
    P, A = 4, 12
    scores = spread * (torch.rand(P, A, generator=generator, dtype=DTYPE) - 0.5)
    weight = torch.rand(P, A, A, generator=generator, dtype=DTYPE)
    weight = torch.where(torch.rand(P, A, A, generator=generator, dtype=DTYPE) < 0.4, 0.0, 5.0 * weight)
    weight[:, 3] = 0.0
    lift = torch.stack([torch.full((P, A), 1e-12, dtype=DTYPE), torch.rand(P, A, generator=generator, dtype=DTYPE)])
    lift = torch.cat([lift, 599.0 * torch.rand(2, P, A, generator=generator, dtype=DTYPE)])
    decrease = logistic_pairs.logistic_mass_decreases(scores, weight, lift, budget)
    want = _dense_move_reference(scores, weight, lift)
    assert torch.isfinite(decrease).all()
    # one ulp of the cells' losses (up to ~600 + 599) per cell, summed over a row and a column of weight ≤ 5
    atol = 2 * A * 5.0 * torch.finfo(DTYPE).eps * (1.0 + spread + 599.0)
    torch.testing.assert_close(decrease, want, rtol=1e-12, atol=atol)
    # The smallest lifts: decreases of order 1e-12, below the resolution of the reference's cell
    # differences where the losses are large.  To first order in δ the decrease of a is
    # δ (Σ_b w_ab σ(s_b − s_a) − Σ_b w_ba σ(s_a − s_b)), exact to O(δ²) = 1e-24 and independent of
    # the kernel's formula; the kernel resolves each cell's change to about one ulp of 1.
    off = ~torch.eye(A, dtype=torch.bool)
    pull = torch.where(off, weight * torch.sigmoid(scores[:, None, :] - scores[:, :, None]), 0.0)
    first_order = 1e-12 * (pull.sum(dim=-1) - pull.sum(dim=-2))
    torch.testing.assert_close(decrease[0], first_order, rtol=0.0, atol=4 * A * 5.0 * torch.finfo(DTYPE).eps)
    assert float(first_order.abs().max()) > 1e-12  # the moves do change these sums


def test_logistic_mass_decreases_decline_out_of_range_inputs():
    scores = torch.zeros(1, 5, dtype=DTYPE)
    weight = torch.ones(1, 5, 5, dtype=DTYPE)
    lift = torch.ones(2, 1, 5, dtype=DTYPE)
    assert logistic_pairs.logistic_mass_decreases(scores, weight, lift) is not None
    wide = torch.linspace(-400.0, 400.0, 5, dtype=DTYPE).unsqueeze(0)
    assert logistic_pairs.logistic_mass_decreases(wide, weight, lift) is None
    assert logistic_pairs.logistic_mass_decreases(scores, weight, 601.0 * lift) is None
    assert logistic_pairs.logistic_mass_decreases(scores.fill_(float("-inf")), weight, lift) is None


def _distillation_problem(world, replicates, reward_scale, seed):
    """Distillation on sampled pairs (counts with zeros) with a reward per replicate, R̂ = r* + noise."""
    obj = get_objective("distillation")
    data = world.sample_preferences(60, replicates, seed=seed)
    data = sa.PairData(data.counts, 60, world)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(replicates, *world.true_reward.shape, generator=generator, dtype=DTYPE)
    reward = world.true_reward + reward_scale * noise
    ctx = make_context(obj, world, reward, obj.resolve_params({}))
    pair_weight, prompt_weight, total = data_weights(obj, data)
    return LogitObjective(obj, pair_weight, prompt_weight, total, ctx, 0.0, 0.0)


@pytest.mark.parametrize("strip", [7, None])
@pytest.mark.parametrize(("scale", "gamma", "reward_scale"), [(1.0, 1.0, 0.5), (3.0, 1e-3, 30.0), (0.3, 30.0, 0.0)])
def test_distillation_triangle_equals_autograd(strip, scale, gamma, reward_scale, monkeypatch):
    # Distillation is PMLE on the soft counts (w + wᵀ) ∘ σ(R̂_a − R̂_b) minus its entropy offset
    # (`logistic_form`): value, gradient and Hessian against autograd on the cell path's values.
    calls = _triangle_calls(monkeypatch, strip)
    world = _world(3, 6, gamma=gamma, seed=15)
    problem = _distillation_problem(world, 2, reward_scale, seed=16)
    theta = _logits((2, 3, 6), scale, seed=17)
    _assert_triangle_equals_autograd(problem, theta, calls)


def test_distillation_triangle_equals_the_cell_path_on_a_large_table(monkeypatch):
    # A = 70 takes the triangle path by default; a reward with a spread of ±40 puts the soft
    # counts' σ(t) near 0 and 1, and one shared reward broadcasts over two replicates' counts.
    world = _world(2, 70, seed=18)
    problem = _distillation_problem(world, 2, 0.0, seed=19)
    reward = 40.0 * torch.randn(2, 70, generator=torch.Generator().manual_seed(20), dtype=DTYPE)
    problem.ctx = make_context(problem.obj, world, reward, {})
    theta = _logits((2, 2, 70), 2.0, seed=21)
    triangle = problem.derivatives(theta)
    assert "distillation" in problem._pair_cache
    monkeypatch.setattr(logistic_pairs, "_MIN_RESPONSES", 10**9)
    cells = problem.derivatives(theta)
    for fast, slow in zip(triangle, cells, strict=True):
        assert torch.isfinite(fast).all()
        torch.testing.assert_close(fast, slow, rtol=1e-11, atol=1e-14)


def test_distillation_form_declines_what_it_cannot_take():
    world = _world(2, 5, seed=22)
    problem = _distillation_problem(world, 1, 0.0, seed=23)
    logp = torch.log_softmax(_logits((1, 2, 5), 1.0, seed=24), dim=-1)
    weight = problem.pair_weight
    assert logistic_pairs.logistic_form(problem.obj, logp, problem.ctx, weight) is not None
    for reward in (
        world.true_reward.clone().index_fill_(-1, torch.tensor([0]), float("-inf")),  # a response R̂ rules out
        torch.zeros(3, 2, 5, dtype=DTYPE),  # a reward per replicate over one replicate's counts
    ):
        ctx = make_context(problem.obj, world, reward, {})
        assert logistic_pairs.logistic_form(problem.obj, logp, ctx, weight) is None
    zero = logp.clone()
    zero[0, 0, 1] = float("-inf")
    assert logistic_pairs.logistic_form(problem.obj, zero, problem.ctx, weight) is None


@pytest.mark.parametrize("budget", [None, 7, 300, 5000, 20000])
@pytest.mark.parametrize("spread", [0.0, 4.0, 599.0])
def test_logistic_values_equal_a_dense_reference(budget, spread):
    # The value alone, strip by strip (a budget of 20000 cells takes 4 prompts of 70 responses at
    # once), against the full table's Σ w_ab softplus(s_b − s_a) and against `logistic_derivatives`.
    generator = torch.Generator().manual_seed(40)
    P, A = 5, 70
    scores = spread * (torch.rand(P, A, generator=generator, dtype=DTYPE) - 0.5)
    scores[:, 0], scores[:, 1] = -spread / 2, spread / 2
    weight = torch.rand(P, A, A, generator=generator, dtype=DTYPE)
    weight = torch.where(torch.rand(P, A, A, generator=generator, dtype=DTYPE) < 0.4, 0.0, weight)
    weight[:, 3] = 0.0
    ones = torch.ones(P, dtype=DTYPE)
    value = logistic_pairs.logistic_values(scores, weight, budget)
    ref_value, _, _ = _dense_logistic_reference(scores, weight, ones, 1.0)
    torch.testing.assert_close(value, ref_value, rtol=1e-13, atol=0.0)
    hess = torch.empty(P, A, A, dtype=DTYPE)
    with_derivatives = logistic_pairs.logistic_derivatives(scores, weight, ones, 1.0, hess, budget)[0]
    torch.testing.assert_close(value, with_derivatives, rtol=1e-15, atol=0.0)


def test_logistic_values_decline_small_tables_and_scores_beyond_the_exponential_range():
    weight = torch.ones(1, 70, 70, dtype=DTYPE)
    assert logistic_pairs.logistic_values(1e4 * torch.linspace(-1.0, 1.0, 70, dtype=DTYPE)[None], weight) is None
    small = torch.ones(1, 10, 10, dtype=DTYPE)
    assert logistic_pairs.logistic_values(torch.zeros(1, 10, dtype=DTYPE), small) is None


def _counted_values(monkeypatch):
    """Records whether each call of `logistic_values` by the solver's objective answered."""
    return _answered_calls(monkeypatch, "logistic_values")


@pytest.mark.parametrize("name", [*LOGISTIC, "distillation"])
@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_objective_loss_by_the_logistic_values_equals_the_cell_path(name, beta, monkeypatch):
    # A = 70 on sampled counts (zeros in places), two replicates with a reward each (distillation):
    # `LogitObjective.per_prompt_loss` takes `logistic_values` and gives `evaluate.per_prompt_loss`.
    world = _world(2, 70, seed=41)
    problem = _distillation_problem(world, 2, 1.0, seed=42)
    if name != "distillation":
        obj = get_objective(name)
        data = world.sample_preferences(60, 2, seed=42)
        pair_weight, prompt_weight, total = data_weights(obj, data)
        problem = LogitObjective(obj, pair_weight, prompt_weight, total, make_context(obj, world, None, {}), beta, 0.0)
    else:
        problem.beta = beta
    calls = _counted_values(monkeypatch)
    logp = torch.log_softmax(_logits((2, 2, 70), 2.0, seed=43), dim=-1)
    fast = problem.per_prompt_loss(logp)
    assert calls == [True]
    slow = evaluate.per_prompt_loss(problem.obj, logp, problem.pair_weight, problem.prompt_weight, problem.ctx, beta)
    assert fast.shape == slow.shape == (2, 2) and torch.isfinite(fast).all()
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-13)


def test_objective_loss_leaves_what_the_logistic_values_cannot_take_to_the_cell_path(monkeypatch):
    world = _world(2, 70, seed=44)
    problem = _problem("pmle", world, sa.population_preferences(world))
    calls = _counted_values(monkeypatch)

    def both(logp):
        ref = evaluate.per_prompt_loss(problem.obj, logp, problem.pair_weight, problem.prompt_weight, problem.ctx, 0.0)
        return problem.per_prompt_loss(logp), ref

    # the population weights [1, X, A, A] broadcast over two replicates' policies: the cell path
    fast, slow = both(torch.log_softmax(_logits((2, 2, 70), 1.0, seed=45), dim=-1))
    assert calls == [] and torch.equal(fast, slow)
    # logits ±1e4: the scores spread past e^±600, and `logistic_values` declines
    fast, slow = both(torch.log_softmax(_logits((1, 2, 70), 1e4, seed=46), dim=-1))
    assert calls == [False] and torch.equal(fast, slow)
    # a policy that requires grad: the cell path, whose graph autograd can follow
    leaf = torch.log_softmax(_logits((1, 2, 70), 1.0, seed=47), dim=-1).requires_grad_(True)
    fast, slow = both(leaf)
    assert calls == [False] and fast.requires_grad
    torch.testing.assert_close(fast, slow, rtol=0.0, atol=0.0)


@pytest.mark.parametrize("name", ["pmle", "distillation"])
def test_fit_reports_the_loss_of_its_policy(name, monkeypatch):
    # The fit's reported loss (by `logistic_values` at A = 70) is `empirical_loss` of its policy.
    world = _world(2, 70, seed=48)
    data = sa.population_preferences(world)
    reward = world.true_reward if name == "distillation" else None
    calls = _counted_values(monkeypatch)
    fitted = sa.fit(name, data, reward=reward)
    assert bool(fitted.converged.all()) and calls == [True]
    loss = sa.empirical_loss(name, data, fitted.policy, reward=reward)
    torch.testing.assert_close(fitted.loss, loss, rtol=1e-12, atol=1e-14)
