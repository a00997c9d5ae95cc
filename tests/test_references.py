"""Tests of `synthalign.theory.references`: the batched closed forms, RLHF's floor and RKL's asymptote."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import synthalign as sa
from synthalign.theory import references

SCALES = (0.1, 1.0)


@pytest.mark.parametrize("method", ["rlhf", "rkl"])
def test_batched_closed_forms_match_the_library(method):
    world = sa.World.paper_toy(1, logit_scale=1.0)
    reward = sa.fit_reward_model(world.sample_preferences(256, 4, seed=5)).reward
    betas = [0.05, 0.3, 2.0] if method == "rlhf" else [0.0, 0.05, 0.3, 2.0]
    grid = torch.tensor(betas, dtype=torch.float64)
    ref_weight, reward_scale = references.closed_form_coefficients(method, grid, world.gamma)
    logits = references.closed_form_logits(reward, world.reference.logp, ref_weight, reward_scale)
    fkl = references.closed_form_forward_kl(world, reward, ref_weight, reward_scale)
    for b, beta in enumerate(betas):
        if method == "rlhf":
            policy = sa.rlhf_policy(reward, world.reference, beta)
        else:
            policy = sa.rkl_policy(reward, world.reference, world.gamma, beta)
        torch.testing.assert_close(torch.log_softmax(logits[b], dim=-1), policy.logp, rtol=0, atol=1e-12)
        torch.testing.assert_close(fkl[b], sa.forward_kl(world.target, policy), rtol=1e-10, atol=1e-13)


def test_closed_form_coefficients_reject_bad_betas():
    with pytest.raises(ValueError, match="beta > 0"):
        references.closed_form_coefficients("rlhf", torch.tensor([0.0, 1.0]), 0.5)
    with pytest.raises(ValueError, match="method"):
        references.closed_form_coefficients("ppo", torch.tensor([1.0]), 0.5)


@pytest.mark.parametrize("scale", SCALES)
def test_rlhf_floor_is_the_minimum_over_beta(scale):
    world = sa.World.paper_toy(0, logit_scale=scale)
    floor, beta_star = references.rlhf_population_floor(world)
    t_star = world.gamma / beta_star
    # A fine grid in t = gamma/beta around the optimum; f(t) = KL(pi* ‖ pi0 pi*^t / Z).
    t = torch.linspace(0.0, 2.0 * t_star, 20001, dtype=torch.float64)[1:]
    ref_weight, reward_scale = references.closed_form_coefficients("rlhf", world.gamma / t, world.gamma)
    values = references.closed_form_forward_kl(world, world.true_reward.unsqueeze(0), ref_weight, reward_scale)[:, 0]
    # No grid point beats the floor (up to rounding), and the nearest one is within
    # f'' Δt² / 8 of it, with f'' = E_x Var_q(ln pi*) ≤ (range of ln pi*)² / 4.
    assert floor <= float(values.min()) + 1e-12
    spread = float((world.target.logp.amax(-1) - world.target.logp.amin(-1)).max())
    step = float(t[1] - t[0])
    assert float(values.min()) - floor <= spread**2 / 4 * step**2 / 8 + 1e-12
    # And the floor is strictly positive: RLHF cannot reach pi* (spec §6.7).
    assert floor > 0.1 * references.kl_target_reference(world)


@pytest.mark.parametrize("max_iter", [0, -3, 1.5, "200"])
def test_rlhf_floor_rejects_a_bad_iteration_count(max_iter):
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1"):
        references.rlhf_population_floor(sa.World.paper_toy(0), max_iter=max_iter)


@pytest.mark.parametrize(
    ("tol", "pattern"),
    [
        (0.0, "tol must be > 0, got 0.0"),
        (-1e-9, "tol must be > 0, got -1e-09"),
        (math.inf, "tol must be finite, got inf"),
        (math.nan, "tol must be finite, got nan"),
        (None, "tol must be a real number, got None"),
        ("small", "tol must be a real number, got 'small'"),
    ],
)
def test_rlhf_floor_rejects_a_bad_tolerance(tol, pattern):
    with pytest.raises(ValueError, match=pattern):
        references.rlhf_population_floor(sa.World.paper_toy(0), tol=tol)


def test_rlhf_floor_accepts_numpy_numbers():
    world = sa.World.paper_toy(0)
    expected = references.rlhf_population_floor(world, tol=1e-10, max_iter=50)
    assert references.rlhf_population_floor(world, tol=np.float64(1e-10), max_iter=np.int64(50)) == expected
    assert references.rlhf_population_floor(world, tol=1e-10, max_iter=50.0) == expected


def test_rlhf_floor_equals_pi0_when_pi_star_is_uniform():
    # pi* uniform: ln pi* is constant, so pi0 · pi*^t = pi0 for every t and the floor is KL(pi* ‖ pi0) at beta = inf.
    uniform = torch.full((3, 4), 0.25, dtype=torch.float64)
    reference = torch.softmax(torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64), -1)
    world = sa.World.from_tensors(target=uniform, reference=reference, gamma=0.5)
    floor, beta_star = references.rlhf_population_floor(world)
    assert beta_star == math.inf
    assert floor == pytest.approx(references.kl_target_reference(world), rel=1e-12)


@pytest.mark.parametrize("scale", SCALES)
def test_rkl_asymptotic_constant_matches_autograd(scale):
    # Independent route: the Fisher information of one pair is the Hessian of the population
    # reward-model loss in the logits, and F the Hessian of the forward KL, both by autograd.
    world = sa.World.paper_toy(0, logit_scale=scale)
    theta = world.target.logp.clone()
    X, A = theta.shape

    def reward_loss(flat):
        return sa.population_loss("reward_model", world, torch.log_softmax(flat.view(X, A), dim=-1))

    def forward(flat):
        return sa.forward_kl(world.target, torch.log_softmax(flat.view(X, A), dim=-1))

    fisher = torch.autograd.functional.hessian(reward_loss, theta.reshape(-1)).view(X, A, X, A)
    kl_hessian = torch.autograd.functional.hessian(forward, theta.reshape(-1)).view(X, A, X, A)
    constant = 0.0
    for x in range(X):
        pinv = torch.linalg.pinv(fisher[x, :, x, :], hermitian=True)
        constant += 0.5 * float(torch.trace(kl_hessian[x, :, x, :] @ pinv))
    assert references.rkl_asymptotic_constant(world) == pytest.approx(constant, rel=1e-8)


def test_rlhf_cannot_beat_its_floor_beyond_first_order():
    # z ↦ KL(pi* ‖ softmax z) is convex, so with z* = ln pi0 + R*/beta and z = ln pi0 + R̂/beta:
    # KL(pi* ‖ pi_hat) ≥ KL(pi* ‖ q) + E_x <q − pi*, (R̂ − R*)/beta> ≥ floor + that linear term, q = softmax z*.
    # Finite data can beat the floor only through a first-order term of mean ~0, for every replicate.
    world = sa.World.paper_toy(0, logit_scale=1.0)
    n, replicates = 1024, 200
    reward = sa.fit_reward_model(world.sample_preferences(n, replicates, seed=7), ridge=1e-2).reward
    betas = torch.tensor(np.geomspace(1e-2, 1e2, 40), dtype=torch.float64)
    ref_weight, reward_scale = references.closed_form_coefficients("rlhf", betas, world.gamma)
    fkl = references.closed_form_forward_kl(world, reward, ref_weight, reward_scale)
    choice = fkl.argmin(dim=0)
    chosen = fkl.gather(0, choice.unsqueeze(0)).squeeze(0)
    beta = betas[choice].view(-1, 1, 1)
    floor, _ = references.rlhf_population_floor(world)
    q = torch.softmax(world.reference.logp + world.true_reward / beta, dim=-1)
    linear = ((q - world.target.probs) * (reward - world.true_reward) / beta).sum(-1)
    linear = (world.prompt_dist * linear).sum(-1)
    assert (chosen >= floor + linear - 1e-12).all()
