"""Misspecified reward classes (synthalign.estimators.misspecification) and the misspecification experiment."""

from __future__ import annotations

import json

import numpy as np
import torch

import synthalign as sa
from synthalign.estimators.misspecification import (
    approximation_floor,
    feature_reward_fit,
    overoptimization_curve,
    random_features,
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
        log2_n_min=8,
        log2_n_max=10,
        replicates=4,
        betas=(1.0, 0.1),
    )
    results = misspecification.run(args)
    record = json.loads((tmp_path / "misspecification.json").read_text())
    assert (tmp_path / "misspecification.png").exists()
    assert set(record["results"]["classes"]) == {"linear d=2", "tabular"}
    assert results["classes"]["tabular"]["exact_floor"] < 1e-12
    assert results["classes"]["linear d=2"]["exact_floor"] > 1e-3
    assert "exact floor" in misspecification.summary(results)
