"""Exact expected stochastic gradients: each (estimator, KL placement) row equals the gradient the library declares."""

from __future__ import annotations

import pytest
import torch

import synthalign as sa
from synthalign.estimators.gradient_check import (
    KL_GRADIENT_LAWS,
    candidate_gradients,
    exact_gradient_variance,
    expected_gradient,
    expected_pair_gradient,
    gradient_law,
    gradient_table,
    pair_candidate_gradients,
    pair_gradient_law,
)
from synthalign.estimators.onpolicy import sample_reward, sampled_pair_gradients, sampled_score_function_gradients
from synthalign.worlds.sequence import SequenceWorld


def _point(shape) -> torch.Tensor:
    # A policy away from pi*, pi0 and mu (World.random draws its logits from seed 0's stream).
    return torch.randn(shape, generator=torch.Generator().manual_seed(123), dtype=torch.float64)


WORLDS = {
    "tabular": lambda: (sa.World.random(3, 5, seed=0), _point((3, 5))),
    "sequence": lambda: (SequenceWorld.random(vocab_size=3, max_length=3, n_prompts=2, seed=0), _point((2, 7, 3))),
}


@pytest.mark.parametrize("world_name", sorted(WORLDS))
@pytest.mark.parametrize("objective", ["rkl", "rlhf"])
def test_every_row_equals_its_declared_gradient(world_name, objective):
    world, logits = WORLDS[world_name]()
    rows = gradient_table(world, logits, objective, beta=0.7)
    assert len(rows) == (36 if objective == "rkl" else 12)
    for row in rows:
        # float64 sums over the finite space: the declared law holds to rounding, and no other candidate does.
        assert row.matched == (row.declared,), row
        assert row.relative_errors[row.declared] < 1e-12


def test_spec_item_14_kl_terms_alone():
    # reward = 0, RLHF: the expected gradient is the KL term's alone: E[∇k1] = 0, E[∇k2] = ∇KL(π‖π0),
    # E[∇k3] = ∇KL(π0‖π) (spec §6 item 14).
    world, logits = WORLDS["tabular"]()
    zero = torch.zeros(3, 5, dtype=torch.float64)
    candidates = candidate_gradients(world, logits, "rlhf", reward=zero, beta=1.0)
    for kind, law in (("k1", "0"), ("k2", "∇KL(π‖π0)"), ("k3", "∇KL(π0‖π)")):
        got = expected_gradient(world, logits, "rlhf", reward=zero, beta=1.0, kl_estimator=kind, kl_placement="loss")
        torch.testing.assert_close(got, candidates[(law, "∇(−H)")], rtol=0, atol=1e-15)
    assert KL_GRADIENT_LAWS[("k3", "loss")] == "∇KL(π0‖π)"


def test_rloo_factored_sum_equals_the_explicit_pair_sum():
    world, logits = WORLDS["tabular"]()
    options = dict(beta=0.7, kl_estimator="k3", kl_placement="reward", entropy_placement="reward")
    factored = expected_gradient(world, logits, "rkl", estimator="rloo", **options)
    leaf = logits.clone().requires_grad_(True)
    table = torch.log_softmax(leaf, dim=-1)
    prob = table.detach().exp()
    r = sample_reward(
        table,
        world.reference.logp,
        world.true_reward,
        entropy_coef=world.gamma,
        beta=0.7,
        kl_kind="k3",
        kl_placement="reward",
        entropy_placement="reward",
    )
    # Σ_{a,b} π(a)π(b) · −(r(a) − r(b)) ln π(a), over the [X, A, A] pairs explicitly.
    pair = prob[:, :, None] * prob[:, None, :] * -(r[:, :, None] - r[:, None, :]) * table[:, :, None]
    (explicit,) = torch.autograd.grad((pair.sum(dim=(-1, -2)) * world.prompt_dist).sum(), leaf)
    torch.testing.assert_close(factored, explicit.reshape(-1), rtol=0, atol=1e-15)


@pytest.mark.parametrize("world_name", sorted(WORLDS))
@pytest.mark.parametrize(("kind", "placement"), [("k1", "reward"), ("k3", "loss"), ("k2", "reward")])
def test_sampled_gradients_match_exact_mean_and_variance(world_name, kind, placement):
    world, logits = WORLDS[world_name]()
    options = dict(beta=0.7, kl_estimator=kind, kl_placement=placement, entropy_placement="reward")
    replicates = 20_000
    grads = sampled_score_function_gradients(world, logits, "rkl", replicates=replicates, seed=1, **options)
    exact_mean = expected_gradient(world, logits, "rkl", **options)
    # Mean: every coordinate within 5 standard errors (sample sd / sqrt(R)); Bonferroni over ≤ 42 coords.
    se = grads.std(dim=0) / replicates**0.5
    assert ((grads.mean(dim=0) - exact_mean).abs() <= 5 * se + 1e-15).all()
    # Trace variance: the sample value within 5 standard errors of the exact one; the SE of a mean of
    # ‖g − E g‖² is its sample sd / sqrt(R).
    exact_var = exact_gradient_variance(world, logits, "rkl", **options)
    squared = (grads - exact_mean).square().sum(dim=-1)
    assert abs(squared.mean() - exact_var) <= 5 * squared.std() / replicates**0.5


def test_more_samples_divide_the_variance():
    world, logits = WORLDS["tabular"]()
    one = exact_gradient_variance(world, logits, "rlhf", beta=0.5)
    four = exact_gradient_variance(world, logits, "rlhf", beta=0.5, samples=4)
    torch.testing.assert_close(four, one / 4)


def test_objective_it_cannot_sample():
    world, logits = WORLDS["tabular"]()
    with pytest.raises(ValueError, match="'pmle' is a pair objective"):
        gradient_law(world, logits, "pmle")
    with pytest.raises(ValueError, match="estimator"):
        expected_gradient(world, logits, "rkl", estimator="ppo")


# ------------------------------------------------------------------ on-policy pair estimators

PAIR_OBJECTIVES = ("distillation", "dpo")


@pytest.mark.parametrize("world_name", sorted(WORLDS))
@pytest.mark.parametrize("objective", PAIR_OBJECTIVES)
def test_onpolicy_pair_rows_are_semi_gradients(world_name, objective):
    world, logits = WORLDS[world_name]()
    (row,) = gradient_table(world, logits, objective, beta=0.3)
    # E[g] sums ∇ℓ over every ordered draw and label; the semi-gradient is ∇ of `population_loss` with the
    # pair law held at π_t: the same float64 sum in another order, so equal to rounding.
    assert row.matched == ("semi",), row
    assert row.relative_errors["semi"] < 1e-12
    # The dropped score-function term is not small at a generic point (observed ≥ 0.2 here): the estimator
    # does not follow the objective whose pair law moves with π.
    assert row.relative_errors["moving"] > 1e-2


@pytest.mark.parametrize("objective", PAIR_OBJECTIVES)
def test_moving_candidate_is_the_gradient_of_the_moving_objective(objective):
    # F(θ) = population_loss(π_θ; pairs from π_θ), by central differences (step 1e-5: error O(h²) ≈ 1e-10).
    world, logits = WORLDS["tabular"]()
    candidates = pair_candidate_gradients(world, logits, objective, beta=0.3)

    def moving(theta):
        policy = sa.Policy(torch.log_softmax(theta, dim=-1), world.prompt_dist)
        held = world.replace(behavior=policy)
        pairs_from = policy if objective == "distillation" else None
        return float(sa.population_loss(objective, held, policy, beta=0.3, pairs_from=pairs_from))

    h = 1e-5
    numeric = torch.zeros(logits.numel(), dtype=torch.float64)
    for i in range(logits.numel()):
        step = torch.zeros(logits.numel(), dtype=torch.float64)
        step[i] = h
        numeric[i] = (moving(logits + step.reshape(logits.shape)) - moving(logits - step.reshape(logits.shape))) / (
            2 * h
        )
    torch.testing.assert_close(candidates["moving"], numeric, rtol=0, atol=1e-8)


@pytest.mark.parametrize("world_name", sorted(WORLDS))
def test_distillation_target_zeroes_both_gradients(world_name):
    # Distillation's pair term is KL(Bern(p̃) ‖ Bern(p_π)) (eq. 11): with R̂ = R* it is 0 on every cell at
    # π = π*, so the dropped term Σ ∇[π(a)π(b)] ℓ̄(a, b) vanishes there too and both candidates are 0.
    # On the sequence world π* is given as its per-prefix logits.
    world, _ = WORLDS[world_name]()
    at_target = world.target if isinstance(world, SequenceWorld) else world.target.logp
    assert expected_pair_gradient(world, at_target, "distillation").norm() < 1e-13
    assert pair_candidate_gradients(world, at_target, "distillation")["moving"].norm() < 1e-13


def test_online_dpo_target_zeroes_only_the_semi_gradient():
    # DPO's minimizer under any full-support μ is π ∝ π0 π* (test_onpolicy.py), so E[g] = 0 there; its pair
    # loss is not 0 per cell, and the moving objective's gradient is not 0 at that point.
    world, _ = WORLDS["tabular"]()
    limit = torch.log_softmax(world.reference.logp + world.target.logp, dim=-1)
    assert expected_pair_gradient(world, limit, "dpo").norm() < 1e-13
    assert pair_candidate_gradients(world, limit, "dpo")["moving"].norm() > 1e-3


def test_online_dpo_labels_follow_a_general_law():
    # A world whose law is not BT: the sampler labels by P[x, a, b], and E[g] is still the semi-gradient.
    world, logits = WORLDS["tabular"]()
    world = world.replace(law=sa.GeneralLaw.cyclic(3, 5, strength=2.0, seed=4))
    row = pair_gradient_law(world, logits, "dpo", beta=0.3)
    assert row.matched == ("semi",) and row.relative_errors["semi"] < 1e-12


@pytest.mark.parametrize("world_name", sorted(WORLDS))
@pytest.mark.parametrize("objective", PAIR_OBJECTIVES)
def test_sampled_pair_gradients_have_the_exact_mean(world_name, objective):
    world, logits = WORLDS[world_name]()
    replicates = 20_000
    grads = sampled_pair_gradients(world, logits, objective, beta=0.3, pairs=2, replicates=replicates, seed=5)
    exact = expected_pair_gradient(world, logits, objective, beta=0.3)
    # Every coordinate within 5 standard errors (Bonferroni over ≤ 42 coordinates: p ≈ 2.4e-5 in all).
    se = grads.std(dim=0) / replicates**0.5
    assert ((grads.mean(dim=0) - exact).abs() <= 5 * se + 1e-15).all()


def test_pair_objective_it_cannot_sample():
    world, logits = WORLDS["tabular"]()
    with pytest.raises(ValueError, match="'rkl' is a prompt objective"):
        pair_gradient_law(world, logits, "rkl")
