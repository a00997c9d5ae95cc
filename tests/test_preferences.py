"""Tests of `synthalign.worlds.preferences`: the gamma-tilted Bradley–Terry law over the cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given

import synthalign as sa
from synthalign.testing.strategies import random_log_policy
from synthalign.testing.strategies import random_worlds as worlds

DTYPE = torch.float64
# Significance level of every goodness-of-fit test below: at a fixed seed a correct sampler
# fails one of them with probability 1e-3.
ALPHA = 1e-3


def law_of(world) -> np.ndarray:
    """P(x, a+ = a, a- = b) = 2 D(x) mu(a|x) mu(b|x) P*(a ≻ b | x), in numpy from the world's probabilities.

    Two draws lead to the cell (a, b): (a, b) with a winning and (b, a) with a winning.
    """
    D = world.prompt_dist.numpy()
    mu = world.behavior.probs.numpy()
    target = world.target.probs.numpy()
    g = world.gamma
    with np.errstate(invalid="ignore", divide="ignore"):
        tilted = target**g
        pref = tilted[:, :, None] / (tilted[:, :, None] + tilted[:, None, :])
    pref = np.where(np.isnan(pref), 0.5, pref)  # both zero: a tie (synthalign's Decision)
    return 2 * D[:, None, None] * mu[:, :, None] * mu[:, None, :] * pref


@given(world=worlds())
def test_population_law_is_d_mu_mu_times_bradley_terry(world):
    data = world.population_preferences()
    assert data.is_population and data.n_pairs is None and data.counts.shape == (1, *law_of(world).shape)
    np.testing.assert_allclose(data.counts[0].numpy(), law_of(world), rtol=1e-10, atol=1e-300)
    assert data.counts.sum().item() == pytest.approx(1.0, abs=1e-12)
    # the labels split each ordered draw (a, b): weight(a≻b) + weight(b≻a) = D mu(a) mu(b) · 1
    counts = data.counts[0]
    both = counts + counts.transpose(-1, -2)
    mu = world.behavior.probs
    expected = 2 * world.prompt_dist[:, None, None] * mu[:, :, None] * mu[:, None, :]
    torch.testing.assert_close(both, expected, rtol=1e-12, atol=1e-15)
    # unlabelled pairs from mu
    pairs = sa.population_pairs(world)
    torch.testing.assert_close(pairs.counts[0], expected / 2, rtol=1e-12, atol=1e-15)
    # prompt marginal of the labelled law is D
    torch.testing.assert_close(data.prompt_counts[0], world.prompt_dist, rtol=1e-12, atol=1e-15)


def test_preference_probability_at_zero_probabilities():
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.0, 0.0]], dtype=DTYPE))
    P = sa.preference_matrix(logp, 0.5)[0]
    assert P[0, 2].item() == 1.0 and P[2, 0].item() == 0.0  # a positive response always beats a zero one
    assert P[2, 3].item() == 0.5  # two zero-probability responses tie (Decision)
    assert P[0, 1].item() == 0.5
    with pytest.raises(ValueError, match="gamma"):
        sa.preference_probability(logp[0, 0], logp[0, 1], 0.0)


def test_population_pairs_from_a_given_policy():
    world = sa.World.random(3, 4, seed=0)
    policy = sa.Policy(random_log_policy((3, 4), seed=1))
    pairs = sa.population_pairs(world, policy)
    p = policy.probs
    torch.testing.assert_close(pairs.counts[0], world.prompt_dist[:, None, None] * p[:, :, None] * p[:, None, :])
    with pytest.raises(ValueError, match="policy"):
        sa.population_pairs(world, sa.Policy(random_log_policy((2, 3, 4), seed=1)))


# --------------------------------------------------------------------------- sampler
