"""Tests of `synthalign.estimators.online_dpo`: exact online DPO under pair samplers and its predicted rates."""

from __future__ import annotations

import pytest
import torch

import synthalign as sa
from synthalign.estimators.online_dpo import exact_online_dpo, sampler_pair_weights


def _bt_world(scale=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    target = scale * torch.randn(3, 5, generator=generator, dtype=torch.float64)
    reference = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    return sa.World.from_tensors(target=target, reference=reference, gamma=0.5, kind="logits")


@pytest.mark.parametrize("sampler", ["mix_reward", "mix_policy"])
def test_mixed_sampler_cancels_the_logistic_curvature(sampler):
    world = _bt_world()
    logp = torch.log_softmax(torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64), -1)
    law, alpha = sampler_pair_weights(sampler, logp, world)
    torch.testing.assert_close(law.sum(dim=(-1, -2)), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-15)
    tilt = world.true_reward if sampler == "mix_reward" else world.gamma * (logp - world.reference.logp)
    delta = tilt[:, :, None] - tilt[:, None, :]
    # p(a,b) + p(b,a) = (α/A²)(2 + e^{Δt} + e^{−Δt}) = (α/A²)/σ'(Δt).
    expected = alpha[:, None, None] / 25 / (torch.sigmoid(delta) * torch.sigmoid(-delta))
    torch.testing.assert_close(law + law.transpose(-1, -2), expected, rtol=1e-13, atol=0)


def test_uniform_sampler_converges_linearly_at_the_predicted_rate():
    world = _bt_world()
    run = exact_online_dpo(world, "uniform", iterations=40)
    # In the linear regime (errors 1e-4 … 1e-11, above rounding) e_{t+1}/e_t → ρ of the slowest prompt.
    error = run.error
    window = (error[:-1] < 1e-4) & (error[1:] > 1e-11)
    ratios = error[1:][window] / error[:-1][window]
    assert window.sum() >= 3
    torch.testing.assert_close(ratios[-1], run.rate.max(), rtol=2e-2, atol=0)
    assert 0.01 < float(run.rate.max()) < 0.9


@pytest.mark.parametrize("sampler", ["mix_reward", "mix_policy"])
def test_mixed_samplers_converge_quadratically(sampler):
    world = _bt_world()
    run = exact_online_dpo(world, sampler, iterations=12)
    error = run.error
    assert float(error[-1]) < 1e-14
    # Order p from three consecutive errors above rounding: ln(e2/e1)/ln(e1/e0) ≈ 2 for a Newton step.
    useful = [t for t in range(len(error) - 2) if error[t + 2] > 1e-13 and error[t] < 0.5]
    assert useful, error
    orders = [float(torch.log(error[t + 2] / error[t + 1]) / torch.log(error[t + 1] / error[t])) for t in useful]
    assert max(orders) > 1.8, orders
    assert float(run.rate.max()) < 1e-12  # the linearization contracts to 0: faster than linear


def test_samplers_refuse_what_they_cannot_compare():
    world = _bt_world().replace(law=sa.GeneralLaw.cyclic(3, 5, strength=1.0, seed=0))
    with pytest.raises(ValueError, match="Bradley"):
        exact_online_dpo(world, "uniform", iterations=1)
    with pytest.raises(ValueError, match="sampler"):
        exact_online_dpo(_bt_world(), "thompson", iterations=1)
