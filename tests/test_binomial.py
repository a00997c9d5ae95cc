"""The vectorized binomial sampler against scipy.stats.binom: chi-square over equal-mass bins, exact edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from synthalign.worlds._binomial import sample_binomial

DRAWS = 40_000


def _binned_pvalue(draws: np.ndarray, m: int, p: float) -> float:
    """Pearson chi-square of the draws over ≤ 20 bins of about equal Binomial(m, p) mass.

    The bin edges are quantiles k_i of the law, so the expected bin masses F(k_i) − F(k_{i−1}) are
    exact; each bin expects ≥ 5 draws, which keeps the χ² approximation sound.
    """
    law = stats.binom(m, p)
    edges = np.unique(law.ppf(np.linspace(0, 1, 21)[1:-1]))
    edges = np.append(edges, m)
    masses = np.diff(np.concatenate(([0.0], law.cdf(edges))))
    keep = masses * len(draws) >= 5
    observed = np.histogram(draws, bins=np.concatenate(([-0.5], edges + 0.5)))[0]
    # Bins expecting fewer than 5 draws join their neighbour on the left (the first, on the right).
    merged_obs, merged_exp, carry_obs, carry_exp = [], [], 0, 0.0
    for o, e, big in zip(observed, masses * len(draws), keep, strict=True):
        carry_obs, carry_exp = carry_obs + o, carry_exp + e
        if big or carry_exp >= 5:
            merged_obs.append(carry_obs)
            merged_exp.append(carry_exp)
            carry_obs, carry_exp = 0, 0.0
    if carry_exp > 0:
        merged_obs[-1] += carry_obs
        merged_exp[-1] += carry_exp
    if len(merged_obs) < 2:
        return 1.0
    return float(stats.chisquare(merged_obs, np.array(merged_exp) * len(draws) / sum(merged_exp)).pvalue)


@pytest.mark.parametrize("m", [1, 2, 10, 100, 10**6, 2**40])
@pytest.mark.parametrize("p", [1e-3, 0.3, 0.5, 0.999])
def test_draws_follow_the_binomial_law(m, p):
    # DRAWS = 40 000 i.i.d. draws per (m, p); over this grid the means m·min(p, 1 − p) run from 0.001
    # (inversion, mostly zeros) through 10…3·10^11 (BTRS), p > ½ by the flip.  Fixed seed per case.
    generator = torch.Generator().manual_seed(m % 1009 + int(p * 1000))
    counts = torch.full((DRAWS,), float(m), dtype=torch.float64)
    draws = sample_binomial(counts, torch.tensor(p, dtype=torch.float64), generator).numpy()
    assert np.all(draws == np.round(draws)) and draws.min() >= 0 and draws.max() <= m
    law = stats.binom(m, p)
    # The sample mean is within 5 standard errors of m·p, the chi-square over quantile bins passes.
    assert abs(draws.mean() - law.mean()) <= 5 * law.std() / np.sqrt(DRAWS)
    assert _binned_pvalue(draws, m, p) > 1e-3


def test_edges_need_no_uniform():
    # m = 0, p = 0 and p = 1 are exact without a draw: 0, 0 and m.
    counts = torch.tensor([0.0, 0.0, 5.0, 5.0, 2.0**40, 0.0], dtype=torch.float64)
    probs = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.5], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    draws = sample_binomial(counts, probs, generator)
    assert torch.equal(draws, torch.tensor([0.0, 0.0, 0.0, 5.0, 2.0**40, 0.0], dtype=torch.float64))
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(0).get_state())


def test_same_seed_same_draws_and_broadcast_probabilities():
    counts = torch.tensor([[3.0, 40.0, 2.0**30], [1.0, 0.0, 7.0]], dtype=torch.float64)
    probs = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    first = sample_binomial(counts, probs, torch.Generator().manual_seed(4))
    assert first.shape == counts.shape
    assert torch.equal(first, sample_binomial(counts, probs, torch.Generator().manual_seed(4)))
