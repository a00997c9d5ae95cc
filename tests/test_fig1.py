"""Tests of the Figure 1 experiment (`synthalign.experiments.fig1`): its pieces against the library, then its claims."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import synthalign as sa
from synthalign.experiments import fig1

SCALES = (0.1, 1.0)


# ----------------------------------------------------------------------------- pieces


def test_stacked_datasets_of_different_n_fit_as_if_alone():
    # fig1 fits every n in one batch; the per-replicate normalization and the summed-loss ridge
    # make that identical (up to the stopping rule) to fitting each dataset on its own.
    world = sa.World.paper_toy(0, logit_scale=1.0)
    small = world.sample_preferences(32, replicates=2, seed=1)
    large = world.sample_preferences(1024, replicates=2, seed=2)
    stacked = sa.PreferenceData(torch.cat([small.counts, large.counts]), None, world)
    together = sa.fit_reward_model(stacked, ridge=1e-2, tol=1e-11).reward
    alone = [sa.fit_reward_model(data, ridge=1e-2, tol=1e-11).reward for data in (small, large)]
    torch.testing.assert_close(together, torch.cat(alone), rtol=0, atol=1e-8)


@pytest.mark.parametrize("method", ["rlhf", "rkl"])
def test_batched_closed_forms_match_the_library(method):
    world = sa.World.paper_toy(1, logit_scale=1.0)
    reward = sa.fit_reward_model(world.sample_preferences(256, 4, seed=5)).reward
    betas = [0.05, 0.3, 2.0] if method == "rlhf" else [0.0, 0.05, 0.3, 2.0]
    grid = torch.tensor(betas, dtype=torch.float64)
    ref_weight, reward_scale = fig1.closed_form_coefficients(method, grid, world.gamma)
    logits = fig1.closed_form_logits(reward, world.reference.logp, ref_weight, reward_scale)
    fkl = fig1.closed_form_forward_kl(world, reward, ref_weight, reward_scale)
    for b, beta in enumerate(betas):
        if method == "rlhf":
            policy = sa.rlhf_policy(reward, world.reference, beta)
        else:
            policy = sa.rkl_policy(reward, world.reference, world.gamma, beta)
        torch.testing.assert_close(torch.log_softmax(logits[b], dim=-1), policy.logp, rtol=0, atol=1e-12)
        torch.testing.assert_close(fkl[b], sa.forward_kl(world.target, policy), rtol=1e-10, atol=1e-13)


def test_closed_form_coefficients_reject_bad_betas():
    with pytest.raises(ValueError, match="beta > 0"):
        fig1.closed_form_coefficients("rlhf", torch.tensor([0.0, 1.0]), 0.5)
    with pytest.raises(ValueError, match="method"):
        fig1.closed_form_coefficients("ppo", torch.tensor([1.0]), 0.5)


@pytest.mark.parametrize("scale", SCALES)
def test_rlhf_floor_is_the_minimum_over_beta(scale):
    world = sa.World.paper_toy(0, logit_scale=scale)
    floor, beta_star = fig1.rlhf_population_floor(world)
    t_star = world.gamma / beta_star
    # A fine grid in t = gamma/beta around the optimum; f(t) = KL(pi* ‖ pi0 pi*^t / Z).
    t = torch.linspace(0.0, 2.0 * t_star, 20001, dtype=torch.float64)[1:]
    ref_weight, reward_scale = fig1.closed_form_coefficients("rlhf", world.gamma / t, world.gamma)
    values = fig1.closed_form_forward_kl(world, world.true_reward.unsqueeze(0), ref_weight, reward_scale)[:, 0]
    # No grid point beats the floor (up to rounding), and the nearest one is within
    # f'' Δt² / 8 of it, with f'' = E_x Var_q(ln pi*) ≤ (range of ln pi*)² / 4.
    assert floor <= float(values.min()) + 1e-12
    spread = float((world.target.logp.amax(-1) - world.target.logp.amin(-1)).max())
    step = float(t[1] - t[0])
    assert float(values.min()) - floor <= spread**2 / 4 * step**2 / 8 + 1e-12
    # And the floor is strictly positive: RLHF cannot reach pi* (spec §6.7).
    assert floor > 0.1 * fig1.kl_target_reference(world)


def test_rlhf_floor_equals_pi0_when_pi_star_is_uniform():
    # pi* uniform: ln pi* is constant, so pi0 · pi*^t = pi0 for every t and the floor is KL(pi* ‖ pi0) at beta = inf.
    uniform = torch.full((3, 4), 0.25, dtype=torch.float64)
    reference = torch.softmax(torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64), -1)
    world = sa.World.from_tensors(target=uniform, reference=reference, gamma=0.5)
    floor, beta_star = fig1.rlhf_population_floor(world)
    assert beta_star == math.inf
    assert floor == pytest.approx(fig1.kl_target_reference(world), rel=1e-12)


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
    assert fig1.rkl_asymptotic_constant(world) == pytest.approx(constant, rel=1e-8)


def test_rlhf_cannot_beat_its_floor_beyond_first_order():
    # z ↦ KL(pi* ‖ softmax z) is convex, so with z* = ln pi0 + R*/beta and z = ln pi0 + R̂/beta:
    # KL(pi* ‖ pi_hat) ≥ KL(pi* ‖ q) + E_x <q − pi*, (R̂ − R*)/beta> ≥ floor + that linear term, q = softmax z*.
    # Finite data can beat the floor only through a first-order term of mean ~0, for every replicate.
    world = sa.World.paper_toy(0, logit_scale=1.0)
    n, replicates = 1024, 200
    reward = sa.fit_reward_model(world.sample_preferences(n, replicates, seed=7), ridge=1e-2).reward
    betas = torch.tensor(np.geomspace(1e-2, 1e2, 40), dtype=torch.float64)
    ref_weight, reward_scale = fig1.closed_form_coefficients("rlhf", betas, world.gamma)
    fkl = fig1.closed_form_forward_kl(world, reward, ref_weight, reward_scale)
    choice = fkl.argmin(dim=0)
    chosen = fkl.gather(0, choice.unsqueeze(0)).squeeze(0)
    beta = betas[choice].view(-1, 1, 1)
    floor, _ = fig1.rlhf_population_floor(world)
    q = torch.softmax(world.reference.logp + world.true_reward / beta, dim=-1)
    linear = ((q - world.target.probs) * (reward - world.true_reward) / beta).sum(-1)
    linear = (world.prompt_dist * linear).sum(-1)
    assert (chosen >= floor + linear - 1e-12).all()


def test_args_validation_names_the_argument():
    for field, value in [
        ("n_betas", 10),
        ("beta_choice", "magic"),
        ("logit_scales", (0.0,)),
        ("ridge_sum", 0.0),
        ("replicates", 1),
        ("log2_n_max", 3),
        ("band", (0.6, 0.9)),
        ("size", "huge"),
        ("seed", -1),
    ]:
        with pytest.raises(ValueError, match=field):
            fig1.Args(**{field: value})


# ----------------------------------------------------------------------------- the claims


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("fig1")
    args = fig1.Args(out=str(out), size="quick", progress=False, plot=False)
    return args, fig1.run(args), out


def test_quick_run_writes_the_record(quick):
    args, results, out = quick
    record = json.loads((out / "fig1.json").read_text())
    assert record["experiment"] == "fig1"
    assert record["results"]["n"] == args.ns
    assert record["results"]["replicates"] == args.n_replicates
    assert len(record["results"]["betas"]) >= 30
    assert "RLHF population floor" in fig1.summary(results)


@pytest.mark.parametrize("scale", SCALES)
def test_rkl_ends_below_rlhf(quick, scale):
    _, results, _ = quick
    res = results["scales"][str(scale)]
    assert res["rkl"]["median"][-1] < res["rlhf"]["median"][-1]


@pytest.mark.parametrize("scale", SCALES)
def test_rkl_follows_the_one_over_n_rate(quick, scale):
    # The oracle picks the best beta of a grid that holds beta = 0, so for every replicate its
    # forward KL is at most that of pi_R̂ (beta = 0), whose mean is c/n (1 + O(1/n)) with c from the
    # Fisher information; a median sits below the mean of these right-skewed, chi-square-like errors.
    # Margin 1.25: four standard errors of a median of 40 replicates (≈ 1.25 · 0.3 / √40 ≈ 6%, with
    # sd/mean ≈ 0.3 measured from the band), which also covers the O(1/n) correction (≈ 3% at n = 2^16).
    args, results, _ = quick
    res = results["scales"][str(scale)]
    n_max = args.ns[-1]
    rate = res["rkl_asymptotic_constant"] / n_max
    assert res["rkl"]["median"][-1] <= 1.25 * rate
    assert res["rkl"]["median"][-1] <= res["rkl"]["beta0"]["median"][-1] * (1 + 1e-12)


def test_rkl_keeps_falling_while_rlhf_saturates(quick):
    # Over the last two octaves (n/4 -> n) the 1/n rate divides the error by 4, where the data
    # dominate the prior pi0 (c/(n/4) ≤ KL(pi* ‖ pi0)/10).  Margin 1.5 on the factor: two medians
    # with ≈ 6% standard error each and the O(1/n) correction, so RKL must fall by ≥ 4/1.5 ≈ 2.7,
    # while RLHF, held up by its floor, falls by less than 1.5.
    args, results, _ = quick
    n_max, quarter = args.ns[-1], args.ns.index(args.ns[-1] // 4)
    checked = 0
    for res in results["scales"].values():
        if res["rkl_asymptotic_constant"] / (n_max / 4) > res["kl_target_reference"] / 10:
            continue
        checked += 1
        assert res["rkl"]["median"][quarter] / res["rkl"]["median"][-1] >= 4 / 1.5
        assert res["rlhf"]["median"][quarter] / res["rlhf"]["median"][-1] <= 1.5
    assert checked >= 1


def test_rlhf_stays_above_its_population_floor(quick):
    # Every replicate obeys FKL ≥ floor + (first-order term of mean ≈ 0)
    # (test_rlhf_cannot_beat_its_floor_beyond_first_order), so the median cannot fall below the
    # floor by more than the sampling error of a median: 3 · 1.2533 · sd / √R.
    args, results, _ = quick
    for res in results["scales"].values():
        stats = res["rlhf"]
        error = 3 * 1.2533 * stats["std"][-1] / math.sqrt(args.n_replicates)
        assert stats["median"][-1] >= res["rlhf_floor"] - error
    # At logit scale 1 the data are informative enough that RKL beats the best RLHF can ever do.
    scale_one = results["scales"]["1.0"]
    assert scale_one["rkl"]["median"][-1] < scale_one["rlhf_floor"]


def test_heldout_choice_of_beta_runs_and_learns(tmp_path):
    args = fig1.Args(
        out=str(tmp_path),
        logit_scales=(1.0,),
        log2_n_min=8,
        log2_n_max=14,
        replicates=10,
        beta_choice="heldout",
        progress=False,
        plot=False,
    )
    results = fig1.run(args)
    assert results["beta_choice"] == "heldout"
    rkl = results["scales"]["1.0"]["rkl"]["median"]
    # With beta chosen on held-out pairs RKL still learns: 64 times the data, at least 8 times less error.
    assert rkl[-1] < rkl[0] / 8
