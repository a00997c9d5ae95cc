"""The solver's derivatives in the logits against a slow, obviously-correct reference.

The reference is `torch.autograd.functional.hessian` of the summed objective
(`LogitObjective.values`) over all logits at once, whose diagonal blocks are the
A × A blocks `derivatives` returns; values and gradients likewise.  Each objective
runs with one block of cells and with blocks of a few cells (`CELL_BLOCK` patched).
"""

from __future__ import annotations

import math

import pytest
import torch

import synthalign as sa
import synthalign.evaluate as evaluate
from synthalign.estimators.derivatives import LogitObjective
from synthalign.evaluate import data_weights, make_context
from synthalign.registry.protocol import get_objective, list_objectives, objective

R, X, A = 2, 3, 5


def _problem(obj, beta, ridge, *, population=False):
    world = sa.World.random(X, A, seed=1)
    if population:
        data = sa.population_pairs(world) if obj.data == "pairs" else sa.population_preferences(world)
    else:
        data = world.sample_preferences(40, R, seed=3)  # small n: some cells have count 0
        if obj.data == "pairs":
            data = sa.PairData(data.counts, 40, world)
    params = dict(obj.example_params)
    reward = world.true_reward if obj.needs_reward else None
    ctx = make_context(obj, world, reward, obj.resolve_params(params))
    pair_weight, prompt_weight, total = data_weights(obj, data)
    return LogitObjective(obj, pair_weight, prompt_weight, total, ctx, beta, ridge)


def _reference(problem, theta):
    value = problem.values(theta)
    leaf = theta.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(problem.values(leaf).sum(), leaf)
    full = torch.autograd.functional.hessian(lambda t: problem.values(t).sum(), theta)
    n = theta.shape[0] * X
    full = full.reshape(n, A, n, A)
    blocks = torch.stack([full[i, :, i, :] for i in range(n)]).reshape(theta.shape[0], X, A, A)
    return value, grad, blocks


def _names():
    names = []
    for name in list_objectives():
        obj = get_objective(name)
        if any(value is None for key, value in obj.params.items() if key not in obj.example_params):
            continue
        names.append(name)
    return names


# Several blocks per prompt: analytic margin objectives, prompt objectives and two autograd pair objectives.
_BLOCKED = ["pmle", "distillation", "dpo", "rebel", "rkl", "forward_kl", "robust_dpo", "exo_pair"]


@pytest.mark.parametrize(
    ("name", "budget"), [(name, None) for name in _names()] + [(name, 7) for name in _BLOCKED if name in _names()]
)
def test_derivatives_match_autograd(name, budget, monkeypatch):
    if budget is not None:
        monkeypatch.setattr(evaluate, "CELL_BLOCK", budget)
    obj = get_objective(name)
    theta = torch.randn(R, X, A, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for beta, ridge in ((0.0, 0.0), (0.3, 0.1)):
        problem = _problem(obj, beta, ridge)
        value, grad, hess = problem.derivatives(theta)
        ref_value, ref_grad, ref_hess = _reference(problem, theta)
        torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(hess, ref_hess, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["pmle", "distillation", "rkl", "forward_kl"])
def test_population_derivatives_match_autograd(name, monkeypatch):
    monkeypatch.setattr(evaluate, "CELL_BLOCK", 11)
    problem = _problem(get_objective(name), 0.2, 0.0, population=True)
    theta = torch.randn(1, X, A, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for got, want in zip(problem.derivatives(theta), _reference(problem, theta), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


def test_prompt_objective_without_analytic_form_uses_batched_autograd():
    @objective("cubic_prompt_test", data="prompts", register=False)
    def cubic(logp, reward):
        # −E_p R̂ + Σ_a p_a³: not of the (linear, entropy, cross-entropy) form the solver knows.
        probs = logp.exp()
        return -(probs * reward).sum(dim=-1) + probs.pow(3).sum(dim=-1)

    problem = _problem(cubic, 0.3, 0.0)
    theta = torch.randn(R, X, A, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for got, want in zip(problem.derivatives(theta), _reference(problem, theta), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_population_preferences_match_the_formula():
    # 2 D(x) mu(a) mu(b) σ(γ ln[π*(a)/π*(b)]), with two zero-probability responses tied.
    world = sa.World.random(3, 6, seed=4, zero_fraction=0.3, behavior_mix=0.5)
    counts = sa.population_preferences(world).counts[0]
    mu = world.behavior.probs
    joint = world.prompt_dist[:, None, None] * mu[:, :, None] * mu[:, None, :]
    expected = 2.0 * joint * sa.preference_matrix(world)
    torch.testing.assert_close(counts, expected, rtol=1e-15, atol=0.0)
    assert math.isclose(float(counts.sum()), 1.0, rel_tol=1e-12)


def _separable_by_closure(counts):
    reach = (counts > 0) | torch.eye(counts.shape[-1], dtype=torch.bool)
    for _ in range(max(1, math.ceil(math.log2(counts.shape[-1])))):
        reach_float = reach.to(torch.float64)
        reach = (reach_float @ reach_float) > 0
    return ~reach.all(dim=(-1, -2))


@pytest.mark.parametrize("n_responses", [1, 2, 3, 6])
def test_separable_matches_transitive_closure(n_responses):
    generator = torch.Generator().manual_seed(n_responses)
    for density in (0.1, 0.3, 0.6, 1.0):
        counts = (torch.rand(10, 3, n_responses, n_responses, generator=generator) < density).to(torch.float64)
        assert torch.equal(sa.comparison_graph_separable(counts), _separable_by_closure(counts))


@pytest.mark.parametrize("name", ["pmle", "rebel"])
def test_hessian_buffer_is_reused_only_once_released(name):
    # The objective hands its last Hessian out again only when no tensor (nor view) refers to it:
    # a Hessian the caller holds keeps its values through later calls at other logits.
    problem = _problem(get_objective(name), 0.0, 0.0)
    generator = torch.Generator().manual_seed(4)
    theta = torch.randn(R, X, A, dtype=torch.float64, generator=generator)
    other = torch.randn(R, X, A, dtype=torch.float64, generator=generator)
    _, _, held = problem.derivatives(theta)
    kept = held.clone()
    _, _, second = problem.derivatives(other)
    assert second.data_ptr() != held.data_ptr()
    torch.testing.assert_close(held, kept, rtol=0, atol=0)
    diagonal = second.diagonal(dim1=-2, dim2=-1)  # a view keeps the buffer in use
    del second
    _, _, third = problem.derivatives(theta)
    assert third.data_ptr() != diagonal.data_ptr()
    torch.testing.assert_close(third, kept, rtol=0, atol=0)
    address = third.data_ptr()
    del third, diagonal, held
    _, _, fourth = problem.derivatives(theta)
    assert fourth.data_ptr() == address
    torch.testing.assert_close(fourth, kept, rtol=0, atol=0)
    _, _, fifth = problem.derivatives(other)
    torch.testing.assert_close(fourth, kept, rtol=0, atol=0)
    assert torch.isfinite(fifth).all()
