"""On-policy estimators: RKL/RLHF by score-function gradients, distillation and online DPO on pairs from pi_t."""

from __future__ import annotations

import pytest
import torch

import synthalign as sa
from synthalign.estimators.onpolicy import (
    exact_online_dpo,
    onpolicy_pair_fit,
    sampler_pair_weights,
    score_function_fit,
)
from synthalign.worlds.sequence import SequenceWorld


def test_rkl_by_rloo_approaches_pi_star_on_a_tabular_world():
    # beta = 0 and R̂ = γ ln π*: the RKL minimizer is π* (spec §2 note); start at π0.
    world = sa.World.random(3, 5, seed=0)
    start = sa.forward_kl(world.target, world.reference).item()
    fitted = score_function_fit(world, "rkl", samples=8, steps=300, lr=0.1, replicates=4, seed=0)
    final = sa.forward_kl(world.target, fitted.policy)
    assert fitted.policy.batch_shape == (4,) and fitted.losses.shape == (300, 4)
    assert (final < 0.05 * start).all(), (start, final)


def test_rkl_on_a_sequence_world():
    world = SequenceWorld.random(vocab_size=3, max_length=3, n_prompts=2, seed=0)
    tab = world.as_tabular()
    start = sa.forward_kl(tab.target, tab.reference).item()
    fitted = score_function_fit(world, "rkl", estimator="reinforce", samples=16, steps=300, lr=0.1, replicates=2)
    assert (sa.forward_kl(tab.target, fitted.policy) < 0.1 * start).all()


@pytest.mark.slow
def test_rlhf_kl_placement_decides_the_limit():
    # RLHF's optimum is π0·exp(R̂/β) (spec §2).  k1 in the reward follows ∇KL(π‖π0) and goes there;
    # k3 in the loss follows ∇KL(π0‖π) and settles elsewhere.
    world = sa.World.random(2, 4, seed=1)
    beta = 0.5
    optimum = sa.rlhf_policy(world.true_reward, world.reference, beta)
    kwargs = dict(beta=beta, samples=16, steps=400, lr=0.05, replicates=2, seed=0)
    right = score_function_fit(world, "rlhf", kl_estimator="k1", kl_placement="reward", **kwargs)
    wrong = score_function_fit(world, "rlhf", kl_estimator="k3", kl_placement="loss", **kwargs)
    exact = score_function_fit(world, "rlhf", kl_placement="exact", **kwargs)
    assert (sa.forward_kl(optimum, right.policy) < 0.01).all()
    assert (sa.forward_kl(optimum, exact.policy) < 0.01).all()
    assert (sa.forward_kl(optimum, wrong.policy) > 5 * sa.forward_kl(optimum, right.policy)).all()


def test_distillation_on_pairs_from_the_current_policy():
    # Algorithm 1 with R̂ = γ ln π*: the distillation minimizer is π* whatever full-support pair law is used.
    world = sa.World.random(2, 4, seed=2)
    start = sa.forward_kl(world.target, world.reference).item()
    fitted = onpolicy_pair_fit(world, "distillation", pairs=16, steps=300, lr=0.1, replicates=2)
    assert (sa.forward_kl(world.target, fitted.policy) < 0.05 * start).all()


def test_online_dpo_goes_to_pi0_times_pi_star():
    # DPO's implicit reward γ ln(π/π0) matches γ ln π* + c(x): its minimizer is π ∝ π0·π* (not π*).
    world = sa.World.random(2, 4, seed=3)
    limit = sa.Policy.from_logits(world.reference.logp + world.target.logp)
    fitted = onpolicy_pair_fit(world, "dpo", pairs=32, steps=400, lr=0.05, replicates=2, seed=1)
    to_limit, to_target = sa.forward_kl(limit, fitted.policy), sa.forward_kl(world.target, fitted.policy)
    # The run ends nearer π0·π* than it started (KL(π0π*‖π0) = 0.171) and nearer π0·π* than π*
    # (KL(π*‖π0π*) = 0.312 here): the limit is the one DPO's population loss predicts.
    assert (to_limit < sa.forward_kl(limit, world.reference)).all()
    assert (to_limit < 0.25 * to_target).all(), (to_limit, to_target)


def test_same_seed_same_run():
    world = sa.World.random(2, 3, seed=0)
    first = score_function_fit(world, "rkl", steps=5, replicates=2, seed=3).parameters
    assert torch.equal(first, score_function_fit(world, "rkl", steps=5, replicates=2, seed=3).parameters)


def test_objectives_it_cannot_sample_say_so():
    world = sa.World.random(2, 3, seed=0)
    with pytest.raises(ValueError, match="'dpo' is a pair objective"):
        score_function_fit(world, "dpo", steps=1)
    with pytest.raises(ValueError, match="'rkl' is a prompt objective"):
        onpolicy_pair_fit(world, "rkl", steps=1)
    with pytest.raises(ValueError, match="kl_placement"):
        score_function_fit(world, "rkl", kl_placement="advantage", steps=1)
    with pytest.raises(ValueError, match="RLOO needs at least 2"):
        score_function_fit(world, "rkl", samples=1, steps=1)


# ------------------------------------------------------------------ exact online DPO under pair samplers


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
