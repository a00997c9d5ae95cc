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
    gradient_law,
    gradient_table,
)
from synthalign.estimators.onpolicy import sample_reward, sampled_score_function_gradients
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
