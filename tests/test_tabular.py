"""Tests of `synthalign.worlds.tabular`: World constructors, validation and accessors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given

import synthalign as sa
from synthalign.testing.strategies import random_worlds as worlds

DTYPE = torch.float64


def uniform(X, A):
    return torch.full((X, A), 1.0 / A, dtype=DTYPE)


# --------------------------------------------------------------------------- constructors


def test_paper_toy_matches_figure_1_setting():
    world = sa.World.paper_toy(seed=3)
    assert (world.n_prompts, world.n_responses) == (10, 10)
    assert world.gamma == 0.5
    assert world.dtype == torch.float64
    torch.testing.assert_close(world.prompt_dist, torch.full((10,), 0.1, dtype=DTYPE))
    # mu = pi0 (the spec's Decision for Figure 1)
    assert torch.equal(world.behavior.logp, world.reference.logp)
    assert not torch.equal(world.target.logp, world.reference.logp)


@pytest.mark.parametrize("logit_scale", [0.1, 1.0])
def test_paper_toy_logit_scale(logit_scale):
    # Per prompt the log-probabilities are the logits minus a constant, so the within-row
    # sample variance Σ (l − mean)² / (A − 1) estimates logit_scale².  Pooled over X rows it has
    # X (A − 1) = 100·9 = 900 degrees of freedom: relative standard deviation sqrt(2/900) = 0.047,
    # so 4 standard deviations allow a relative error of 0.19.
    world = sa.World.paper_toy(seed=0, logit_scale=logit_scale, n_prompts=100)
    for policy in (world.target, world.reference):
        centred = policy.logp - policy.logp.mean(dim=-1, keepdim=True)
        variance = centred.square().sum() / (100 * 9)
        assert abs(variance.item() / logit_scale**2 - 1) < 4 * math.sqrt(2 / 900)


def test_same_seed_same_world_different_seed_different_world():
    a, b, c = sa.World.random(seed=5), sa.World.random(seed=5), sa.World.random(seed=6)
    for field in ("target", "reference", "behavior"):
        assert torch.equal(getattr(a, field).logp, getattr(b, field).logp)
        assert not torch.equal(getattr(a, field).logp, getattr(c, field).logp)
    assert torch.equal(sa.World.paper_toy(seed=1).target.logp, sa.World.paper_toy(seed=1).target.logp)
    assert not torch.equal(sa.World.paper_toy(seed=1).target.logp, sa.World.paper_toy(seed=2).target.logp)
    d1 = sa.World.random(seed=2, prompt_concentration=1.0).prompt_dist
    d2 = sa.World.random(seed=2, prompt_concentration=1.0).prompt_dist
    assert torch.equal(d1, d2)


def test_random_mixes_dial_the_distances():
    # reference_mix = 0: pi0's logits are pi*'s; behavior_mix None: mu = pi0.
    world = sa.World.random(seed=1, reference_mix=0.0)
    torch.testing.assert_close(world.reference.logp, world.target.logp, rtol=0, atol=1e-14)
    torch.testing.assert_close(world.behavior.logp, world.reference.logp, rtol=0, atol=0)
    # behavior_mix = 0 and tilt 1: mu's logits are theta* − 1·theta* = 0, i.e. mu uniform.
    world = sa.World.random(seed=1, behavior_mix=0.0, behavior_tilt=1.0)
    torch.testing.assert_close(world.behavior.probs, uniform(5, 8), rtol=0, atol=1e-15)
    # behavior_mix = 0, no tilt: mu = pi*.
    world = sa.World.random(seed=1, behavior_mix=0.0)
    torch.testing.assert_close(world.behavior.logp, world.target.logp, rtol=0, atol=1e-14)
    # A positive tilt lowers mu's mass where pi* puts its own: mu(argmax pi*) falls.
    base = sa.World.random(seed=1, behavior_mix=0.5)
    tilted = sa.World.random(seed=1, behavior_mix=0.5, behavior_tilt=1.0)
    best = base.target.logp.argmax(dim=-1, keepdim=True)
    assert (tilted.behavior.probs.gather(-1, best) < base.behavior.probs.gather(-1, best)).all()


@given(world=worlds())
def test_random_worlds_are_valid(world):
    for policy in (world.target, world.reference, world.behavior):
        torch.testing.assert_close(policy.probs.sum(-1), torch.ones(world.n_prompts, dtype=DTYPE))
        assert policy.prompt_dist is world.prompt_dist
    assert world.prompt_dist.sum().item() == pytest.approx(1.0)
    assert (world.prompt_dist > 0).all()
    # Only pi* may have zeros, never a whole prompt; pi0 and mu keep full support.
    assert (world.target.probs > 0).any(dim=-1).all()
    assert (world.reference.probs > 0).all() and (world.behavior.probs > 0).all()
    # R* = gamma ln pi*, -inf exactly at the zeros of pi*
    reward = world.true_reward
    torch.testing.assert_close(reward, world.gamma * world.target.logp)
    assert torch.equal(torch.isinf(reward), world.target.probs == 0)


def test_zero_fraction_sets_zeros_but_keeps_the_argmax():
    world = sa.World.random(n_prompts=50, n_responses=8, seed=0, zero_fraction=0.5)
    zeros = world.target.probs == 0
    # Each non-argmax response is dropped independently with probability ½: 50·7 = 350 Bernoulli(½)
    # trials, standard deviation sqrt(350/4) = 9.35; 4 standard deviations around 175.
    assert abs(zeros.sum().item() - 175) < 4 * math.sqrt(350 / 4)
    full = sa.World.random(n_prompts=6, n_responses=5, seed=0, zero_fraction=1.0)
    assert torch.equal((full.target.probs > 0).sum(-1), torch.ones(6, dtype=torch.long))
    kept = full.target.probs.argmax(-1)
    undropped = sa.World.random(n_prompts=6, n_responses=5, seed=0)
    assert torch.equal(kept, undropped.target.probs.argmax(-1))


def test_prompt_concentration_gives_a_non_uniform_distribution():
    world = sa.World.random(n_prompts=6, seed=4, prompt_concentration=0.5)
    assert world.prompt_dist.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert not torch.allclose(world.prompt_dist, torch.full((6,), 1 / 6, dtype=DTYPE))


def test_from_tensors_probs_and_logits_agree_and_defaults():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], dtype=DTYPE)
    ref = uniform(2, 3)
    from_probs = sa.World.from_tensors(target=probs, reference=ref, gamma=0.7)
    from_logits = sa.World.from_tensors(target=probs.log() + 3.0, reference=ref.log(), gamma=0.7, kind="logits")
    torch.testing.assert_close(from_probs.target.logp, from_logits.target.logp)
    torch.testing.assert_close(from_probs.target.probs, probs)
    # behavior defaults to the reference, D to uniform
    assert torch.equal(from_probs.behavior.logp, from_probs.reference.logp)
    torch.testing.assert_close(from_probs.prompt_dist, torch.tensor([0.5, 0.5], dtype=DTYPE))
    # zero probabilities are allowed and kept exactly
    with_zero = sa.World.from_tensors(target=[[1.0, 0.0, 0.0]], reference=[[0.2, 0.3, 0.5]], gamma=1.0)
    assert with_zero.target.probs[0, 1].item() == 0.0


def test_world_is_frozen_and_replace_revalidates():
    world = sa.World.random(seed=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        world.gamma = 2.0
    changed = world.replace(gamma=2.0)
    assert changed.gamma == 2.0 and world.gamma == 0.5
    assert torch.equal(changed.target.logp, world.target.logp)
    with pytest.raises(ValueError, match="gamma"):
        world.replace(gamma=0.0)


def test_to_changes_dtype_and_keeps_values():
    world = sa.World.random(seed=0)
    single = world.to(dtype=torch.float32)
    assert single.dtype == torch.float32 and single.target.logp.dtype == torch.float32
    torch.testing.assert_close(single.target.logp.double(), world.target.logp, rtol=1e-6, atol=1e-6)
    assert single.target.prompt_dist is single.prompt_dist


# --------------------------------------------------------------------------- bad inputs


def _tensors(**changes):
    base = {"target": uniform(2, 3), "reference": uniform(2, 3), "gamma": 1.0}
    base.update(changes)
    return base


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"target": torch.ones(2, 3, dtype=DTYPE)}, "target.*sum to 1"),
        ({"reference": torch.tensor([[1.5, -0.5, 0.0]] * 2, dtype=DTYPE)}, "reference.*non-negative"),
        ({"behavior": torch.tensor([[float("nan"), 0.5, 0.5]] * 2, dtype=DTYPE)}, "behavior contains NaN"),
        ({"target": torch.full((3,), 1 / 3, dtype=DTYPE)}, r"target must have shape \[X, A\]"),
        ({"reference": uniform(2, 4)}, "reference has shape"),
        ({"behavior": uniform(3, 3)}, "behavior has 3 prompts"),
        ({"gamma": 0.0}, "gamma must be > 0"),
        ({"gamma": -0.5}, "gamma must be > 0"),
        ({"gamma": float("nan")}, "gamma must be finite"),
        ({"prompt_dist": [0.7, 0.7]}, "prompt_dist must sum to 1"),
        ({"prompt_dist": [-0.5, 1.5]}, "prompt_dist must be non-negative"),
        ({"prompt_dist": [1.0]}, "prompt_dist has 1"),
        ({"kind": "log"}, "kind"),
    ],
)
def test_from_tensors_rejects_bad_inputs(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        sa.World.from_tensors(**_tensors(**changes))


def test_from_tensors_rejects_bad_logits():
    with pytest.raises(ValueError, match=r"target.*\+inf"):
        sa.World.from_tensors(target=[[math.inf, 0.0]], reference=[[0.0, 0.0]], gamma=1.0, kind="logits")
    with pytest.raises(ValueError, match="target"):
        sa.World.from_tensors(target=[[-math.inf, -math.inf]], reference=[[0.0, 0.0]], gamma=1.0, kind="logits")


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"reference_mix": 1.5}, "reference_mix"),
        ({"reference_mix": -0.1}, "reference_mix"),
        ({"behavior_mix": 2.0}, "behavior_mix"),
        ({"zero_fraction": -0.1}, "zero_fraction"),
        ({"zero_fraction": float("nan")}, "zero_fraction"),
        ({"logit_scale": 0.0}, "logit_scale"),
        ({"gamma": -1.0}, "gamma"),
        ({"n_responses": 1}, "n_responses"),
        ({"n_prompts": 0}, "n_prompts"),
        ({"prompt_concentration": 0.0}, "prompt_concentration"),
    ],
)
def test_random_rejects_bad_settings(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        sa.World.random(**kwargs)


def test_paper_toy_rejects_bad_scale():
    with pytest.raises(ValueError, match="logit_scale"):
        sa.World.paper_toy(logit_scale=-0.1)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"n_prompts": 0}, "n_prompts must be an integer >= 1, got 0"),
        ({"n_responses": 2.5}, "n_responses must be an integer >= 2, got 2.5"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"dtype": torch.float16}, "dtype must be torch.float32 or torch.float64"),
    ],
)
def test_paper_toy_rejects_bad_sizes_seeds_and_dtypes(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        sa.World.paper_toy(**kwargs)


def test_paper_toy_is_random_with_an_independent_reference_and_mu_equal_to_it():
    toy = sa.World.paper_toy(4, logit_scale=0.7, n_prompts=3, n_responses=6)
    world = sa.World.random(3, 6, logit_scale=0.7, reference_mix=1.0, behavior_mix=None, seed=4)
    for field in ("target", "reference", "behavior"):
        assert torch.equal(getattr(toy, field).logp, getattr(world, field).logp)
    assert torch.equal(toy.behavior.logp, toy.reference.logp)


def test_from_tensors_rejects_a_dtype_that_is_not_float32_or_float64():
    probs = uniform(2, 3)
    with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64, got torch.int64"):
        sa.World.from_tensors(target=probs, reference=probs, gamma=1.0, dtype=torch.int64)


def test_world_rejects_policies_that_are_not_policies():
    world = sa.World.random(seed=0)
    with pytest.raises(ValueError, match="reference must be a Policy"):
        world.replace(reference=world.reference.logp)


# --------------------------------------------------------------------------- Policy
