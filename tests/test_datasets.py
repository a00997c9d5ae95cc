"""Tests of `synthalign.worlds.datasets`: counts over the cells, explicit pair lists, and their round trip."""

from __future__ import annotations

import pytest
import torch

import synthalign as sa
from synthalign.testing.strategies import random_log_policy

DTYPE = torch.float64
# Significance level of every goodness-of-fit test below: at a fixed seed a correct sampler
# fails one of them with probability 1e-3.
ALPHA = 1e-3


def test_counts_and_lists_round_trip_exactly():
    world = sa.World.random(3, 4, seed=2, zero_fraction=0.4)
    data = world.sample_preferences(500, replicates=3, seed=1)
    pairs = data.to_list(seed=9)
    assert pairs.n_pairs == 500 and pairs.replicates == 3
    back = pairs.to_counts()
    assert torch.equal(back.counts, data.counts) and back.n_pairs == 500
    # the order is a seeded shuffle: same seed, same order; another seed, another order
    assert torch.equal(data.to_list(seed=9).chosen, pairs.chosen)
    assert not torch.equal(data.to_list(seed=10).prompt, pairs.prompt)
    # list -> counts -> list -> counts
    listed = world.sample_preference_list(200, replicates=2, seed=3)
    again = listed.to_counts().to_list(seed=0).to_counts()
    assert torch.equal(again.counts, listed.to_counts().counts)
    with pytest.raises(ValueError, match="population"):
        world.population_preferences().to_list()


def test_loss_on_counts_equals_the_average_over_explicit_pairs():
    # one code path: the empirical loss of the counts is the plain mean of the per-pair losses
    world = sa.World.random(3, 4, seed=6)
    pairs = world.sample_preference_list(300, replicates=2, seed=4)
    logp = random_log_policy((3, 4), seed=2)
    losses = sa.empirical_loss("pmle", pairs.to_counts(), logp)
    for r in range(2):
        chosen = logp[pairs.prompt[r], pairs.chosen[r]]
        rejected = logp[pairs.prompt[r], pairs.rejected[r]]
        direct = sa.pmle_loss(chosen, rejected, gamma=world.gamma)
        assert losses[r].item() == pytest.approx(direct.item(), rel=1e-12)


def test_preference_data_container():
    world = sa.World.random(2, 3, seed=0)
    data = world.sample_preferences(50, replicates=4, seed=0)
    assert data.replicates == 4 and not data.is_population
    one = data[2]
    assert one.counts.shape == (1, 2, 3, 3) and torch.equal(one.counts[0], data.counts[2])
    assert data[1:3].replicates == 2
    torch.testing.assert_close(data.prompt_counts, data.counts.sum(dim=(-1, -2)))
    assert torch.equal(data.prompt_counts.sum(-1), torch.full((4,), 50.0, dtype=DTYPE))
    assert data.to(dtype=torch.float32).counts.dtype == torch.float32


# --------------------------------------------------------------------------- bad inputs
