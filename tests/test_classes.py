"""Tests for synthalign.classes: finite classes containing pi* (A1) and the argmin estimators over them."""

from __future__ import annotations

import math

import pytest
import torch

import synthalign as sa
from synthalign.estimators.finite_class import fit_over_class
from synthalign.worlds.classes import PolicyClass, grid_class, list_class, perturbation_class, reward_class, union_class


@pytest.fixture
def world() -> sa.World:
    return sa.World.random(3, 4, gamma=0.5, logit_scale=1.0, seed=0)


def centred(logits: torch.Tensor) -> torch.Tensor:
    return logits - logits.mean(dim=-1, keepdim=True)


# ------------------------------------------------------------------ PolicyClass


def test_policy_class_is_a_policy_with_batch_k(world):
    members = perturbation_class(world, 7, 0.3, seed=0)
    assert isinstance(members, sa.Policy)
    assert members.batch_shape == (7,) and len(members) == members.size == 7
    # Metrics take it directly: the forward KL of π* to each member, zero at π*.
    kl = sa.forward_kl(world.target, members)
    assert kl.shape == (7,)
    assert kl[members.target_index] == 0 and (kl[1:] > 0).all()
    assert torch.equal(members.target.logp, world.target.logp)
    assert torch.equal(members.rewards(0.5), 0.5 * members.logp)


def test_policy_class_validates_target_index(world):
    logp = torch.stack([world.target.logp, world.reference.logp])
    for bad in (-1, 2, 1.0, True):
        with pytest.raises(ValueError, match="target_index"):
            PolicyClass(logp, None, bad)
    with pytest.raises(ValueError, match=r"\[K, X, A\]"):
        PolicyClass(world.target.logp, None, 0)


# ------------------------------------------------------------------ perturbation_class


def test_perturbation_class_contains_target_and_has_exact_radius(world):
    members = perturbation_class(world, 50, 0.4, seed=3, target_index=7)
    assert members.size == 50 and members.target_index == 7
    assert torch.equal(members.logp[7], world.target.logp)
    # Every other member's centred logits sit at Euclidean distance exactly 0.4 from π*'s, per prompt.
    distance = (centred(members.logp) - centred(world.target.logp)).square().sum(dim=-1).sqrt()
    others = torch.cat([distance[:7], distance[8:]])
    torch.testing.assert_close(others, torch.full_like(others, 0.4), rtol=0, atol=1e-12)
    assert members.prompt_dist is world.prompt_dist


def test_perturbation_class_radius_range(world):
    members = perturbation_class(world, 200, (0.1, 0.5), seed=1)
    distance = (centred(members.logp[1:]) - centred(world.target.logp)).square().sum(dim=-1).sqrt()
    # One radius per member, shared by its prompts, inside the range.
    torch.testing.assert_close(distance, distance[:, :1].expand_as(distance), rtol=0, atol=1e-12)
    assert distance.min() >= 0.1 - 1e-12 and distance.max() <= 0.5 + 1e-12
    # Uniform on [0.1, 0.5] over 199 members: the sample spreads over most of the range.
    assert distance.max() - distance.min() > 0.3


def test_perturbation_class_is_reproducible(world):
    first = perturbation_class(world, 20, 0.3, seed=5)
    assert torch.equal(first.logp, perturbation_class(world, 20, 0.3, seed=5).logp)
    assert not torch.equal(first.logp, perturbation_class(world, 20, 0.3, seed=6).logp)


def test_perturbation_class_keeps_zero_probabilities():
    world = sa.World.random(3, 5, zero_fraction=0.4, seed=1)
    zero = torch.isneginf(world.target.logp)
    assert zero.any()
    members = perturbation_class(world, 10, 0.5, seed=0)
    assert torch.isneginf(members.logp[:, zero]).all()
    assert torch.isfinite(members.logp[:, ~zero]).all()


def test_perturbation_class_weights_aim_the_perturbations(world):
    weights = torch.zeros(3, 4, dtype=torch.float64)
    weights[:, :2] = 1.0  # perturb only responses 0 and 1 of every prompt
    members = perturbation_class(world, 30, 0.5, seed=0, weights=weights)
    shift = members.logp - world.target.logp
    # Responses 2 and 3 move together (only the normalizer changes them): their log-ratio is π*'s.
    torch.testing.assert_close(shift[..., 2], shift[..., 3], rtol=0, atol=1e-12)
    assert not torch.allclose(shift[..., 0], shift[..., 1])


def test_perturbation_class_100k_members():
    world = sa.World.paper_toy(0)
    members = perturbation_class(world, 100_000, 0.1, seed=0, target_index=99_999)
    # 100,000 × 10 × 10 float64 = 80 MB.
    assert members.logp.shape == (100_000, 10, 10) and members.logp.dtype == torch.float64
    assert members.logp.element_size() * members.logp.numel() == 80_000_000
    assert torch.equal(members.logp[99_999], world.target.logp)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 1}, "size"),
        ({"size": 2.0}, "size"),
        ({"radius": 0.0}, "radius"),
        ({"radius": -1.0}, "radius"),
        ({"radius": (0.5, 0.1)}, "radius"),
        ({"radius": (0.1, 0.2, 0.3)}, "radius"),
        ({"target_index": 10}, "target_index"),
        ({"weights": torch.ones(2, 4, dtype=torch.float64)}, "weights"),
        ({"weights": -torch.ones(3, 4, dtype=torch.float64)}, "weights"),
    ],
)
def test_perturbation_class_errors(world, kwargs, match):
    arguments = {"size": 10, "radius": 0.3, "seed": 0, **kwargs}
    size, radius = arguments.pop("size"), arguments.pop("radius")
    with pytest.raises(ValueError, match=match):
        perturbation_class(world, size, radius, **arguments)


def test_perturbation_class_rejects_a_batch_target(world):
    with pytest.raises(ValueError, match="single policy"):
        perturbation_class(perturbation_class(world, 3, 0.1, seed=0), 5, 0.1, seed=0)
    with pytest.raises(ValueError, match="target"):
        perturbation_class("pi*", 5, 0.1, seed=0)


# ------------------------------------------------------------------ grid_class


def test_grid_class_size_and_target(world):
    members = grid_class(world, 2, [-1.0, -0.5, 0.0, 0.5, 1.0], seed=0)
    assert members.size == 5**2
    # Lexicographic order over (t1, t2): (0, 0) is at 2 * 5 + 2 = 12.
    assert members.target_index == 12
    assert torch.equal(members.target.logp, world.target.logp)


def test_grid_class_toward_another_policy(world):
    # Direction ln μ − ln π* with step 1 reaches μ exactly; step ½ is the geometric mixture.
    direction = world.behavior.logp - world.target.logp
    members = grid_class(world, direction, [0.0, 0.5, 1.0])
    assert members.target_index == 0
    torch.testing.assert_close(members.logp[2], world.behavior.logp, rtol=0, atol=1e-12)
    mixture = torch.log_softmax(0.5 * world.target.logp + 0.5 * world.behavior.logp, dim=-1)
    torch.testing.assert_close(members.logp[1], mixture, rtol=0, atol=1e-12)


def test_grid_class_errors(world):
    with pytest.raises(ValueError, match="contain 0"):
        grid_class(world, 1, [0.5, 1.0])
    with pytest.raises(ValueError, match="distinct"):
        grid_class(world, 1, [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="directions"):
        grid_class(world, torch.zeros(2, 5, 4, dtype=torch.float64), [0.0, 1.0])
    with pytest.raises(ValueError, match="directions"):
        grid_class(world, 0, [0.0, 1.0])
    with pytest.raises(ValueError, match="steps"):
        grid_class(world, 1, [])


# ------------------------------------------------------------------ list_class


def test_list_class_finds_target(world):
    members = list_class([world.reference, world.target, world.behavior], world)
    assert members.size == 3 and members.target_index == 1


def test_list_class_prepends_missing_target(world):
    members = list_class(torch.stack([world.reference.logp, world.behavior.logp]), world)
    assert members.size == 3 and members.target_index == 0
    assert torch.equal(members.logp[0], world.target.logp)
    with pytest.raises(ValueError, match="A1"):
        list_class([world.reference], world, add_target=False)


def test_list_class_errors(world):
    with pytest.raises(ValueError, match="empty"):
        list_class([], world)
    with pytest.raises(ValueError, match="same shape"):
        list_class([world.target.logp, world.target.logp[:2]], world)
    with pytest.raises(ValueError, match="normalized"):
        list_class([world.target.logp + 1.0], world)


# ------------------------------------------------------------------ reward_class


def test_reward_class_induces_softmax_and_locates_true_reward(world):
    gamma = world.gamma
    generator = torch.Generator().manual_seed(0)
    others = torch.randn(4, 3, 4, generator=generator, dtype=torch.float64)
    # R* shifted by a different constant per prompt induces π* all the same (spec §1).
    shifted = world.true_reward + torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64)
    rewards = torch.cat([others[:2], shifted.unsqueeze(0), others[2:]])
    members = reward_class(rewards, gamma, world)
    assert members.size == 5 and members.target_index == 2
    torch.testing.assert_close(members.logp, torch.log_softmax(rewards / gamma, dim=-1))
    # P_{π_R}(a ≻ b) = σ(R(a) − R(b)) for the induced policy (spec §6.2).
    prefs = sa.preference_matrix(members.logp[0], gamma)
    torch.testing.assert_close(prefs, torch.sigmoid(rewards[0].unsqueeze(-1) - rewards[0].unsqueeze(-2)))


def test_reward_class_prepends_true_reward(world):
    rewards = torch.zeros(2, 3, 4, dtype=torch.float64)
    members = reward_class(rewards, world.gamma, world)
    assert members.size == 3 and members.target_index == 0
    with pytest.raises(ValueError, match="A1"):
        reward_class(rewards, world.gamma, world, add_target=False)


def test_reward_class_errors(world):
    with pytest.raises(ValueError, match="gamma"):
        reward_class(torch.zeros(2, 3, 4), 0.0, world)
    with pytest.raises(ValueError, match=r"\[M, X, A\]"):
        reward_class(torch.zeros(2, 2, 3, 4), 0.5, world)
    with pytest.raises(ValueError, match=r"\+inf"):
        reward_class(torch.full((1, 3, 4), math.inf), 0.5, world)
    with pytest.raises(ValueError, match="finite response"):
        reward_class(torch.full((1, 3, 4), -math.inf), 0.5, world)


# ------------------------------------------------------------------ union_class


def test_union_class_counts_target_once(world):
    first = perturbation_class(world, 5, 0.2, seed=0, target_index=2)
    second = perturbation_class(world, 8, 0.3, seed=1, target_index=4)
    union = union_class(first, second)
    assert union.size == 5 + 8 - 1 and union.target_index == 2
    assert torch.equal(union.logp[:5], first.logp)
    assert torch.equal(union.logp[5:], torch.cat([second.logp[:4], second.logp[5:]]))


def test_union_class_errors(world):
    first = perturbation_class(world, 5, 0.2, seed=0)
    other_world = sa.World.random(3, 4, seed=9)
    with pytest.raises(ValueError, match="different pi"):
        union_class(first, perturbation_class(other_world, 5, 0.2, seed=0))
    with pytest.raises(ValueError, match="PolicyClass"):
        union_class(first, world.target)
    with pytest.raises(ValueError, match=r"\[X, A\]"):
        union_class(first, perturbation_class(sa.World.random(2, 4, seed=0), 3, 0.1, seed=0))


# ------------------------------------------------------------------ fit_over_class


@pytest.fixture
def classes(world):
    reward_members = perturbation_class(world, 6, (0.2, 0.8), seed=1)
    policy_class = union_class(reward_members, perturbation_class(world, 40, (0.05, 0.8), seed=2))
    return reward_members, policy_class


def test_fit_over_class_pmle_is_argmin_over_class(world, classes):
    _, policy_class = classes
    data = world.sample_preferences(200, 16, seed=0)
    estimate = fit_over_class("pmle", data, policy_class)
    direct = sa.argmin_over_class("pmle", data, policy_class.logp)
    assert torch.equal(estimate.index, direct.index)
    assert estimate.reward_index is None and estimate.reward is None
    with pytest.raises(ValueError, match="takes no reward"):
        fit_over_class("pmle", data, policy_class, reward_class=classes[0])


def test_fit_over_class_reward_then_policy_matches_a_per_replicate_reference(world, classes):
    """The grouped argmin equals the slow reference: one argmin per replicate with its own R̂."""
    reward_members, policy_class = classes
    data = world.sample_preferences(64, 12, seed=3)
    for objective in ("distillation", "rkl"):
        estimate = fit_over_class(objective, data, policy_class, reward_class=reward_members)
        reward_fit = sa.argmin_over_class("reward_model", data, reward_members.logp)
        assert torch.equal(estimate.reward_index, reward_fit.index)
        for r in range(data.replicates):
            reward = world.gamma * reward_members.logp[reward_fit.index[r]]
            single = sa.argmin_over_class(objective, data[r], policy_class.logp, reward=reward)
            torch.testing.assert_close(estimate.losses[r], single.losses[0], rtol=0, atol=1e-12)
            assert estimate.index[r] == single.index[0]


def test_fit_over_class_returns_pi_rhat_under_a5(world, classes):
    # With 𝒫_γ(ℛ) ⊆ Π: RKL at beta = 0 is minimized by π_R̂, and distillation's loss
    # Σ KL(Bern(p̃) ‖ Bern(p_π)) >= 0 is 0 there; both pick R̂'s member of Π.
    reward_members, policy_class = classes
    data = world.sample_preferences(128, 20, seed=4)
    for objective in ("distillation", "rkl"):
        estimate = fit_over_class(objective, data, policy_class, reward_class=reward_members)
        # ℛ's members are the first members of Π (union_class keeps their order).
        assert torch.equal(estimate.index, estimate.reward_index)


def test_fit_over_class_population_law_returns_target(world, classes):
    # Spec §6.13: with the exact population loss, realizable π* and full-support mu, every
    # objective is minimized by π* (R̂ = R* for the reward).
    reward_members, policy_class = classes
    population = sa.population_preferences(world)
    for objective, reward in (("pmle", None), ("distillation", reward_members), ("rkl", reward_members)):
        estimate = fit_over_class(objective, population, policy_class, reward_class=reward)
        assert estimate.index.tolist() == [policy_class.target_index]


def test_fit_over_class_unlabelled_pairs_need_reward_data(world, classes):
    reward_members, policy_class = classes
    labelled = world.sample_preferences(128, 5, seed=0)
    pairs = world.sample_pairs(128, 5, seed=1, policy=world.reference)
    estimate = fit_over_class("distillation", pairs, policy_class, reward_class=reward_members, reward_data=labelled)
    assert estimate.index.shape == (5,)
    with pytest.raises(ValueError, match="reward_data"):
        fit_over_class("distillation", pairs, policy_class, reward_class=reward_members)
    with pytest.raises(ValueError, match="replicates"):
        fit_over_class("distillation", pairs, policy_class, reward_class=reward_members, reward_data=labelled[0])
    with pytest.raises(ValueError, match="needs a reward"):
        fit_over_class("distillation", labelled, policy_class)
