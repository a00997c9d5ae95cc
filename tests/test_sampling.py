"""Tests of `synthalign.worlds.sampling`: the count sampler and explicit pair lists against their exact law."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import synthalign as sa
from synthalign.testing.strategies import random_log_policy

DTYPE = torch.float64
# Significance level of every goodness-of-fit test below: at a fixed seed a correct sampler
# fails one of them with probability 1e-3.
ALPHA = 1e-3


def chi_square_pvalue(observed: np.ndarray, probs: np.ndarray) -> float:
    """Pearson chi-square p-value of counts against cell probabilities, cells of expected count < 5 pooled.

    Cells of probability zero must be empty (asserted) and are left out.
    """
    observed, probs = np.asarray(observed, dtype=np.float64).ravel(), np.asarray(probs, dtype=np.float64).ravel()
    assert observed[probs == 0].sum() == 0, "a cell of probability zero received pairs"
    observed, probs = observed[probs > 0], probs[probs > 0]
    n = observed.sum()
    expected = n * probs / probs.sum()
    small = expected < 5
    obs_cells, exp_cells = list(observed[~small]), list(expected[~small])
    if small.any():
        pooled_obs, pooled_exp = observed[small].sum(), expected[small].sum()
        if pooled_exp < 5 and exp_cells:  # merge the pooled cell into the smallest remaining one
            k = int(np.argmin(exp_cells))
            obs_cells[k] += pooled_obs
            exp_cells[k] += pooled_exp
        else:
            obs_cells.append(pooled_obs)
            exp_cells.append(pooled_exp)
    assert len(obs_cells) >= 2
    return stats.chisquare(np.array(obs_cells), np.array(exp_cells)).pvalue


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


# --------------------------------------------------------------------------- population law


def test_counts_are_integers_summing_to_n_with_seeded_replicates():
    world = sa.World.random(3, 4, seed=0, zero_fraction=0.4)
    data = world.sample_preferences(100, replicates=5, seed=7)
    assert data.counts.shape == (5, 3, 4, 4) and data.counts.dtype == DTYPE and data.n_pairs == 100
    assert torch.equal(data.counts, data.counts.round())
    assert torch.equal(data.counts.sum(dim=(1, 2, 3)), torch.full((5,), 100.0, dtype=DTYPE))
    # cells of probability zero (pi*(a) = 0 beating pi*(b) > 0) never receive pairs
    law = world.population_preferences().counts
    assert (data.counts[law.expand_as(data.counts) == 0] == 0).all()
    # same seed -> same numbers, different seed -> different numbers, replicates differ
    assert torch.equal(data.counts, world.sample_preferences(100, replicates=5, seed=7).counts)
    assert not torch.equal(data.counts, world.sample_preferences(100, replicates=5, seed=8).counts)
    assert not torch.equal(data.counts[0], data.counts[1])
    single = world.sample_preferences(100, replicates=1, seed=7, dtype=torch.float32)
    assert single.counts.dtype == torch.float32


@pytest.mark.parametrize("n", [300, 5_000])
def test_small_n_counts_follow_the_population_law(n):
    world = sa.World.random(2, 4, seed=11, zero_fraction=0.3, behavior_mix=0.7)
    law = world.population_preferences().counts[0].numpy()
    data = world.sample_preferences(n, replicates=3, seed=2024)
    for r in range(3):
        assert chi_square_pvalue(data.counts[r].numpy(), law) > ALPHA
    # the replicates together: n·R i.i.d. pairs
    assert chi_square_pvalue(data.counts.sum(0).numpy(), law) > ALPHA


def test_huge_n_counts_are_exact_and_follow_the_law():
    # n = 2^40 pairs: an O(n) sampler would take hours; the binomial-splitting sampler draws one
    # binomial per cell, so this test finishes in milliseconds.
    n = 2**40
    world = sa.World.random(3, 5, seed=3, zero_fraction=0.3)
    data = world.sample_preferences(n, replicates=4, seed=99)
    totals = data.counts.sum(dim=(1, 2, 3))
    assert all(int(total) == n for total in totals.tolist())
    assert torch.equal(data.counts, data.counts.round())
    law = world.population_preferences().counts[0].numpy()
    for r in range(4):
        assert chi_square_pvalue(data.counts[r].numpy(), law) > ALPHA
    # the largest n allowed: 2^53, the last integer float64 represents with all its neighbours
    largest = world.sample_preferences(2**53, seed=0)
    assert int(largest.counts.to(torch.int64).sum()) == 2**53
    assert largest.counts.sum().item() == float(2**53)


def test_unlabelled_pairs_follow_their_law():
    world = sa.World.random(2, 3, seed=5)
    pairs = world.sample_pairs(4_000, replicates=2, seed=1)
    law = sa.population_pairs(world).counts[0].numpy()
    assert torch.equal(pairs.counts.sum(dim=(1, 2, 3)), torch.full((2,), 4000.0, dtype=DTYPE))
    for r in range(2):
        assert chi_square_pvalue(pairs.counts[r].numpy(), law) > ALPHA
    policy = sa.Policy(random_log_policy((2, 3), seed=4))
    on_policy = world.sample_pairs(4_000, seed=1, policy=policy)
    assert chi_square_pvalue(on_policy.counts[0].numpy(), sa.population_pairs(world, policy).counts[0].numpy()) > ALPHA


# --------------------------------------------------------------------------- explicit pair lists


def test_preference_list_follows_the_law():
    world = sa.World.random(2, 4, seed=8, zero_fraction=0.3)
    pairs = world.sample_preference_list(20_000, replicates=2, seed=5)
    assert pairs.prompt.shape == (2, 20_000) and pairs.n_pairs == 20_000 and pairs.replicates == 2
    assert pairs.prompt.max() < 2 and pairs.chosen.max() < 4 and pairs.rejected.max() < 4
    law = world.population_preferences().counts[0].numpy()
    counts = pairs.to_counts()
    for r in range(2):
        # an independent tally of the explicit pairs (not `to_counts`)
        tally = np.zeros(law.shape)
        np.add.at(tally, (pairs.prompt[r].numpy(), pairs.chosen[r].numpy(), pairs.rejected[r].numpy()), 1)
        np.testing.assert_array_equal(counts.counts[r].numpy(), tally)
        assert chi_square_pvalue(tally, law) > ALPHA
    same = world.sample_preference_list(20_000, replicates=2, seed=5)
    assert torch.equal(same.chosen, pairs.chosen)
    assert not torch.equal(world.sample_preference_list(20_000, replicates=2, seed=6).chosen, pairs.chosen)


@pytest.mark.parametrize("n", [0, -3, 1.5, "10", True, None, math.nan, 2**53 + 1, 2**63])
def test_bad_n_is_rejected(n):
    world = sa.World.random(2, 3, seed=0)
    for sample in (world.sample_preferences, world.sample_pairs, world.sample_preference_list):
        with pytest.raises(ValueError, match="n must be"):
            sample(n)


@pytest.mark.parametrize("replicates", [0, -1, 2.0, True, "3"])
def test_bad_replicates_are_rejected(replicates):
    world = sa.World.random(2, 3, seed=0)
    for sample in (world.sample_preferences, world.sample_pairs, world.sample_preference_list):
        with pytest.raises(ValueError, match="replicates must be"):
            sample(10, replicates=replicates)


@pytest.mark.parametrize("seed", ["abc", -1, 1.5])
def test_bad_seed_is_rejected(seed):
    world = sa.World.random(2, 3, seed=0)
    with pytest.raises(ValueError, match="seed"):
        world.sample_preferences(10, seed=seed)
    with pytest.raises(ValueError, match="seed"):
        world.sample_preference_list(10, seed=seed)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64, torch.bool, "float64", np.float64])
def test_bad_dtype_is_rejected_naming_the_argument(dtype):
    world = sa.World.random(2, 3, seed=0)
    for sample in (world.sample_preferences, world.sample_pairs):
        with pytest.raises(ValueError, match=r"dtype must be torch\.float32 or torch\.float64, got"):
            sample(10, seed=0, dtype=dtype)


def test_none_dtype_keeps_the_world_dtype_and_numpy_sizes_are_accepted():
    world = sa.World.random(2, 3, seed=0)
    for sample in (world.sample_preferences, world.sample_pairs):
        data = sample(np.int64(10), replicates=np.int32(2), seed=np.int64(3), dtype=None)
        assert data.counts.dtype == world.dtype and data.n_pairs == 10 and data.counts.shape[0] == 2
        assert torch.equal(data.counts, sample(10, replicates=2, seed=3).counts)
        assert sample(10, seed=3, dtype=torch.float32).counts.dtype == torch.float32


def test_explicit_lists_refuse_huge_n():
    with pytest.raises(ValueError, match="too large for explicit pairs"):
        sa.World.random(2, 3, seed=0).sample_preference_list(2**27)
