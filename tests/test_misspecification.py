"""Misspecified reward classes (synthalign.estimators.misspecification) and the misspecification experiment."""

from __future__ import annotations

import json

import numpy as np
import torch

import synthalign as sa
from synthalign.estimators.misspecification import (
    LowRankClass,
    _bt_loss,
    approximation_floor,
    feature_reward_fit,
    overoptimization_curve,
    random_features,
    warm_started,
)
from synthalign.experiments import misspecification


def _world():
    return sa.World.random(3, 5, seed=2)


def test_tabular_features_are_realizable_floor_zero():
    world = _world()
    onehot = torch.eye(15, dtype=torch.float64).reshape(3, 5, 15)
    exact = approximation_floor(world, onehot)
    # R̂∞ = R* − mean over responses (the population BT fit of a realizable class, spec §6.13).
    centred = world.true_reward - world.true_reward.mean(-1, keepdim=True)
    assert torch.allclose(exact["reward"], centred, atol=1e-9)
    assert exact["floor"] < 1e-15


def test_feature_fit_is_a_stationary_point_of_the_bt_loss():
    world = _world()
    features = random_features(3, 5, 3, seed=4)
    data = world.sample_preferences(500, 3, seed=5)
    fit = feature_reward_fit(data, features, ridge=0.1)
    assert bool(fit.converged.all())
    w = fit.weights.clone().requires_grad_(True)
    diff = features.unsqueeze(2) - features.unsqueeze(1)
    margin = torch.einsum("xabd,rd->rxab", diff, w)
    loss = (data.counts * torch.nn.functional.softplus(-margin)).sum() + 0.05 * w.square().sum()
    (grad,) = torch.autograd.grad(loss, w)
    assert float(grad.abs().max()) <= 1e-10 * 500


def test_floor_rate_fit_recovers_a_planted_decomposition():
    # errors = 0.2 + 3/n + N(0, 0.05²/n) per replicate: the 95% intervals must cover the planted values.
    rng = np.random.default_rng(0)
    ns = [2**k for k in range(8, 15)]
    errors = np.stack([0.2 + 3.0 / n + rng.normal(0, 0.05, size=400) / np.sqrt(n) for n in ns])
    fit = misspecification.floor_rate_fit(ns, errors, 500, seed=1)
    assert fit["floor_ci"][0] <= 0.2 <= fit["floor_ci"][1]
    assert fit["c_ci"][0] <= 3.0 <= fit["c_ci"][1]


def test_overoptimization_curve_limits_and_proxy_monotonicity():
    world = _world()
    reward = approximation_floor(world, random_features(3, 5, 2, seed=6))["reward"]
    betas = torch.logspace(3, -2, 12, dtype=torch.float64)
    curve = overoptimization_curve(world, reward, betas)
    # beta → ∞: pi_beta → pi0, KL → 0 and the win rate against pi0 → 1/2.
    assert float(curve["kl_reference"][0]) < 1e-6
    assert abs(float(curve["true_win_rate"][0]) - 0.5) < 1e-3
    # d/d(1/beta) E_{pi_beta} R̂ = Var_{pi_beta} R̂ ≥ 0: the proxy gain never decreases as beta falls.
    assert torch.all(torch.diff(curve["proxy_gain"]) >= -1e-12)
    assert torch.all(torch.diff(curve["kl_reference"]) >= -1e-12)


def test_experiment_quick(tmp_path):
    args = misspecification.Args(
        size="quick",
        out=str(tmp_path),
        progress=False,
        dims=(2,),
        ranks=(1,),
        log2_n_min=8,
        log2_n_max=10,
        replicates=4,
        betas=(1.0, 0.1),
    )
    results = misspecification.run(args)
    record = json.loads((tmp_path / "misspecification.json").read_text())
    assert (tmp_path / "misspecification.png").exists()
    assert set(record["results"]["classes"]) == {"linear d=2", "low-rank k=1", "tabular"}
    assert results["classes"]["low-rank k=1"]["dim"] == (4 + 8) * 1
    assert results["classes"]["tabular"]["exact_floor"] < 1e-12
    assert results["classes"]["linear d=2"]["exact_floor"] > 1e-3
    assert "exact floor" in misspecification.summary(results)


# ------------------------------------------------------------------ low-rank reward classes


def test_low_rank_class_is_realizable_at_full_rank():
    # R*(x, ·) differences span at most min(X, A − 1) = 3 dimensions here: rank 3 contains R* (up to c(x)).
    world = _world()
    # A tight tolerance (the default suits sampled data): the fitted reward is then R* to ~1e-9.
    exact = approximation_floor(world, LowRankClass(3, tol=1e-12, max_iterations=300))
    centred = world.true_reward - world.true_reward.mean(-1, keepdim=True)
    assert torch.allclose(exact["reward"], centred, atol=1e-6)
    assert exact["floor"] < 1e-10


def test_planted_rank_one_reward_has_floor_zero_at_rank_one():
    # pi* logits u vᵀ: R* = γ ln π* = γ u vᵀ − c(x), a rank-one class member, so k = 1 is realizable.
    generator = torch.Generator().manual_seed(3)
    u, v = (
        torch.randn(3, 1, generator=generator, dtype=torch.float64),
        torch.randn(1, 5, generator=generator, dtype=torch.float64),
    )
    world = sa.World.from_tensors(
        target=u @ v, reference=torch.zeros(3, 5, dtype=torch.float64), gamma=0.5, kind="logits"
    )
    assert approximation_floor(world, LowRankClass(1))["floor"] < 1e-10
    # A random world is not rank one: a strictly positive floor.
    assert approximation_floor(_world(), LowRankClass(1))["floor"] > 1e-3


def test_low_rank_population_loss_falls_with_rank_and_fit_is_block_stationary():
    world = _world()
    data = world.population_preferences()
    losses = [float(_bt_loss(data, LowRankClass(k).fit(data).reward)) for k in (1, 2, 3)]
    # Nested classes: the minimal BT loss cannot rise with k (within the fit's tolerance).
    assert losses[0] >= losses[1] - 1e-9 >= losses[2] - 2e-9
    # Stationary in U given V: the exact convex U-step (a linear class with features δ_xx' V[a]) gains nothing.
    fit = LowRankClass(2).fit(data)
    v = fit.weights[0, 3 * 2 :].reshape(5, 2)
    phi = torch.einsum("yx,ak->yaxk", torch.eye(3, dtype=torch.float64), v).reshape(3, 5, 6)
    u_step = feature_reward_fit(data, phi)
    assert float(_bt_loss(data, u_step.reward)) >= float(_bt_loss(data, fit.reward)) - 1e-9


def test_low_rank_fit_batches_replicates_and_validates():
    world = _world()
    data = world.sample_preferences(2048, 3, seed=0)
    fit = LowRankClass(1).fit(data, ridge=1e-3)
    assert fit.reward.shape == (3, 3, 5) and torch.isfinite(fit.reward).all()
    with np.testing.assert_raises(ValueError):
        LowRankClass(0)


def test_warm_start_at_the_population_fit_stays_there():
    world = _world()
    cls = LowRankClass(1)
    floor = approximation_floor(world, cls)
    again = approximation_floor(world, warm_started(cls, floor))
    assert abs(again["floor"] - floor["floor"]) < 1e-10
    onehot = torch.eye(15, dtype=torch.float64).reshape(3, 5, 15)
    assert warm_started(onehot, floor) is onehot  # a linear class is convex: nothing to start
