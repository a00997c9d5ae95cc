"""Device-native samplers against their exact laws (chi-square), at small and huge n, tabular and sequence worlds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import synthalign as sa
from synthalign.worlds._binomial import sample_binomial
from synthalign.worlds.sequence import SequenceWorld
from synthalign.worlds.torch_sampling import (
    sample_categorical,
    sample_counts,
    sample_indices,
    sample_pairs_torch,
    sample_preference_list_torch,
    sample_preferences_torch,
)


def _pearson(counts: torch.Tensor, probs: torch.Tensor, n: float) -> np.ndarray:
    """Per-replicate Pearson statistic Σ_c (N_c − n p_c)² / (n p_c) over the cells with p_c > 0."""
    probs = probs.reshape(-1)
    keep = probs > 0
    expected = n * probs[keep]
    return ((counts[:, keep] - expected) ** 2 / expected).sum(dim=-1).numpy()


@pytest.mark.parametrize("n", [2**12, 2**40])
def test_counts_per_replicate_pearson_is_chi_square(n):
    # At large n p_c each replicate's Pearson statistic is χ²(C − 1); the R = 400 statistics are
    # compared with that law by Kolmogorov–Smirnov.
    probs = torch.tensor([0.1, 0.2, 0.3, 0.05, 0.35, 0.0], dtype=torch.float64)
    counts = sample_counts(probs, n, replicates=400, generator=0)
    assert torch.equal(counts.sum(-1), torch.full((400,), float(n), dtype=torch.float64))
    assert (counts[:, 5] == 0).all()
    assert stats.kstest(_pearson(counts, probs, n), stats.chi2(df=4).cdf).pvalue > 1e-3


def test_counts_small_n_cell_marginals_are_binomial():
    # n = 3: the count of each cell is Binomial(3, p_c); chi-square of its histogram over R = 20000 replicates.
    probs = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    counts = sample_counts(probs, 3, replicates=20_000, generator=1)
    for cell, p in enumerate(probs.tolist()):
        observed = np.bincount(counts[:, cell].long().numpy(), minlength=4)
        expected = stats.binom(3, p).pmf(np.arange(4)) * 20_000
        assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_counts_keep_tiny_cells_over_a_million_cells():
    # 10^6 cells; the last 10^5 hold total mass 1e-4 (1e-9 each), which a float32 running sum past
    # ~1 cannot resolve (its spacing there is 6e-8).  Their pooled count over R = 20 replicates of
    # n = 2^30 is Binomial(20·2^30, 1e-4): mean 2.147e6, sd 1465; assert within 5 sd.
    probs = torch.full((10**6,), (1 - 1e-4) / 900_000, dtype=torch.float64)
    probs[900_000:] = 1e-9
    counts = sample_counts(probs, 2**30, replicates=20, generator=2)
    pooled = counts[:, 900_000:].sum().item()
    mean = 20 * 2**30 * 1e-4
    assert abs(pooled - mean) < 5 * (mean * (1 - 1e-4)) ** 0.5


def test_counts_same_seed_same_numbers():
    probs = torch.rand(1000, dtype=torch.float64)
    first = sample_counts(probs, 10**6, replicates=3, generator=5)
    assert torch.equal(first, sample_counts(probs, 10**6, replicates=3, generator=5))
    assert not torch.equal(first, sample_counts(probs, 10**6, replicates=3, generator=6))


def _plain_tree_counts(probs: torch.Tensor, n: int, replicates: int, seed: int) -> torch.Tensor:
    """Binomial splitting over the binary tree of the cells written plainly (module docstring of
    synthalign.worlds.torch_sampling): one `sample_binomial` per level (its draws are pinned against a
    plain one-draw-at-a-time reference in tests/test_binomial.py), children stacked (left, right)."""
    weights = probs.reshape(-1).to(torch.float64)
    depth = max(1, math.ceil(math.log2(weights.numel())))
    leaves = torch.zeros(2**depth, dtype=torch.float64)
    leaves[: weights.numel()] = weights / weights.sum()
    masses = [leaves]
    for _ in range(depth):
        masses.append(masses[-1].view(-1, 2).sum(dim=-1))
    masses.reverse()
    generator = torch.Generator().manual_seed(seed)
    counts = torch.full((replicates, 1), float(n), dtype=torch.float64)
    for level in range(depth):
        children = masses[level + 1].view(-1, 2)
        total = children.sum(dim=-1)
        left_prob = torch.where(total > 0, children[:, 0] / total.clamp_min(1e-300), torch.zeros_like(total))
        left = sample_binomial(counts, left_prob.clamp(0.0, 1.0)[None], generator)
        counts = torch.stack((left, counts - left), dim=-1).flatten(-2)
    return counts[:, : weights.numel()]


@pytest.mark.parametrize(
    ("cells", "n", "replicates"),
    [(c, n, 6) for c in (1, 2, 5, 64, 1000) for n in (1, 37, 2**20, 2**40)]
    + [(1000, 2**10, 64), (1000, 2**12, 64), (300, 2**9, 100), (64, 2**8, 500)],
)
def test_counts_are_the_plain_tree_draws(cells, n, replicates):
    # The sampler writes each level's children in place; the numbers must be those of the plain
    # tree above for the same seed (zero-mass cells included), in float64 and in float32.  The last
    # four cases hold levels of means below 20 in enough draws for the inversion.
    probs = torch.rand(cells, dtype=torch.float64, generator=torch.Generator().manual_seed(cells))
    probs[1::3] = 0.0
    expected = _plain_tree_counts(probs, n, replicates, seed=7)
    counts = sample_counts(probs, n, replicates=replicates, generator=7)
    assert torch.equal(counts, expected)
    assert torch.equal(counts.sum(-1), torch.full((replicates,), float(n), dtype=torch.float64))
    low = sample_counts(probs, n, replicates=replicates, generator=7, dtype=torch.float32)
    assert low.dtype == torch.float32 and torch.equal(low, expected.to(torch.float32))


@pytest.mark.parametrize("n", [2**6, 2**9])
def test_tree_cell_counts_have_binomial_means_and_variances(n):
    # R = 4000 replicates of n draws over 128 cells: the deep levels split means of 1 to 20 (the
    # inversion).  Each cell's count is Binomial(n, p_c): its sample mean within 5 standard errors of
    # n p_c, its sample variance within 5 standard errors of n p_c (1 − p_c), the standard error of
    # s² being √((μ4 − σ⁴ (R − 3)/(R − 1))/R) with μ4 = σ⁴ (3 + (1 − 6 p q)/(n p q)); and the
    # histograms of the least and the most likely cell pass a chi-square against the law.
    replicates = 4000
    probs = torch.rand(128, dtype=torch.float64, generator=torch.Generator().manual_seed(n)) + 0.2
    probs /= probs.sum()
    counts = sample_counts(probs, n, replicates=replicates, generator=n).numpy()
    p = probs.numpy()
    variance = n * p * (1 - p)
    mu4 = variance**2 * (3 + (1 - 6 * p * (1 - p)) / variance)
    variance_se = np.sqrt((mu4 - variance**2 * (replicates - 3) / (replicates - 1)) / replicates)
    assert (np.abs(counts.mean(0) - n * p) <= 5 * np.sqrt(variance / replicates)).all()
    assert (np.abs(counts.var(0, ddof=1) - variance) <= 5 * variance_se).all()
    for cell in (int(p.argmin()), int(p.argmax())):
        observed = np.bincount(counts[:, cell].astype(int), minlength=n + 1)
        expected = stats.binom(n, p[cell]).pmf(np.arange(n + 1)) * replicates
        # Bins expecting at least 5 draws, each tail pooled into its end bin (the pmf is unimodal).
        low, high = np.flatnonzero(expected >= 5)[[0, -1]]
        pooled = [
            np.concatenate(([x[: low + 1].sum()], x[low + 1 : high], [x[high:].sum()])) for x in (observed, expected)
        ]
        assert stats.chisquare(pooled[0], pooled[1] * replicates / pooled[1].sum()).pvalue > 1e-3


def test_preference_counts_on_a_sequence_world():
    # The labelled-pair law over the N² cells of an enumerated sequence world (N = 15: V = 3, L = 3).
    world = SequenceWorld.random(vocab_size=3, max_length=3, n_prompts=2, seed=0).as_tabular()
    law = world.population_preferences().counts[0]
    data = sample_preferences_torch(world, 2**24, replicates=200, generator=3)
    assert isinstance(data, sa.PreferenceData) and data.counts.shape == (200, 2, 15, 15)
    df = int((law > 0).sum()) - 1
    assert stats.kstest(_pearson(data.counts.reshape(200, -1), law, 2**24), stats.chi2(df=df).cdf).pvalue > 1e-3
    torch.testing.assert_close(
        sa.population_loss("pmle", world, world.target),
        sa.empirical_loss("pmle", data, world.target).mean(),
        rtol=1e-3,
        atol=0,
    )


def test_pairs_from_a_policy():
    world = sa.World.random(2, 3, seed=0)
    data = sample_pairs_torch(world, 2**20, replicates=100, generator=4, policy=world.target)
    law = sa.population_pairs(world, world.target).counts[0]
    assert stats.kstest(_pearson(data.counts.reshape(100, -1), law, 2**20), stats.chi2(df=17).cdf).pvalue > 1e-3


def test_explicit_lists_follow_the_law():
    world = sa.World.random(2, 3, seed=1)
    pairs = sample_preference_list_torch(world, 50_000, replicates=2, generator=5)
    counts = pairs.to_counts().counts.reshape(2, -1)
    law = world.population_preferences().counts[0]
    statistic = _pearson(counts, law, 50_000)
    assert (stats.chi2(df=17).sf(statistic) > 1e-3).all()


def test_indices_and_categorical_agree_with_probabilities():
    probs = torch.tensor([0.6, 0.0, 0.3, 0.1], dtype=torch.float64)
    draws = sample_indices(probs, 40_000, replicates=1, generator=0)[0]
    observed = torch.bincount(draws, minlength=4).numpy()
    assert observed[1] == 0
    assert stats.chisquare(observed[[0, 2, 3]], 40_000 * probs[[0, 2, 3]].numpy()).pvalue > 1e-3
    draws = sample_categorical(probs.log(), generator=1, n_samples=40_000)
    observed = torch.bincount(draws, minlength=4).numpy()
    assert observed[1] == 0
    assert stats.chisquare(observed[[0, 2, 3]], 40_000 * probs[[0, 2, 3]].numpy()).pvalue > 1e-3


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"n": 0}, "n"), ({"n": 2**54}, "n"), ({"replicates": 0}, "replicates"), ({"generator": "a"}, "seed")],
)
def test_bad_input(kwargs, name):
    arguments = {"probs": torch.ones(3, dtype=torch.float64), "n": 10, "replicates": 1, "generator": 0, **kwargs}
    with pytest.raises(ValueError, match=name):
        sample_counts(**arguments)
    with pytest.raises(ValueError, match="probs"):
        sample_counts(torch.tensor([1.0, -1.0]), 10)
