"""The binomial sampler of the count tree against scipy.stats.binom, and against a plain reference of its draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from synthalign.worlds import _binomial
from synthalign.worlds._binomial import sample_binomial

DRAWS = 40_000


def _binned_pvalue(draws: np.ndarray, m: int, p: float) -> float:
    """Pearson chi-square of the draws over ≤ 20 bins of about equal Binomial(m, p) mass.

    The bin edges are quantiles k_i of the law, so the expected bin masses F(k_i) − F(k_{i−1}) are
    exact; bins expecting fewer than 5 draws are merged into their neighbours, which keeps the χ²
    approximation sound.
    """
    law = stats.binom(m, p)
    edges = np.unique(law.ppf(np.linspace(0, 1, 21)[1:-1]))
    edges = np.append(edges[edges < m], m)
    masses = np.diff(np.concatenate(([0.0], law.cdf(edges))))
    observed = np.histogram(draws, bins=np.concatenate(([-0.5], edges + 0.5)))[0]
    merged_obs, merged_exp, carry_obs, carry_exp = [], [], 0, 0.0
    for o, e in zip(observed, masses * len(draws), strict=True):
        carry_obs, carry_exp = carry_obs + o, carry_exp + e
        if carry_exp >= 5:
            merged_obs.append(carry_obs)
            merged_exp.append(carry_exp)
            carry_obs, carry_exp = 0, 0.0
    if carry_exp > 0 and merged_obs:
        merged_obs[-1] += carry_obs
        merged_exp[-1] += carry_exp
    if len(merged_obs) < 2:
        return 1.0
    return float(stats.chisquare(merged_obs, np.array(merged_exp) * len(draws) / sum(merged_exp)).pvalue)


def _inverted_columns(spy: list) -> int:
    return sum(shape[1] for shape in spy)


@pytest.fixture
def inversion_spy(monkeypatch):
    """The shapes [R, K] that `_inversion_columns` is called with."""
    calls: list[torch.Size] = []
    inner = _binomial._inversion_columns

    def spy(m, p, generator):
        calls.append(m.shape)
        return inner(m, p, generator)

    monkeypatch.setattr(_binomial, "_inversion_columns", spy)
    return calls


@pytest.mark.parametrize(
    ("m", "p"),
    [(1, 0.5), (2, 0.3), (5, 0.9), (16, 0.5), (39, 0.5), (30, 0.62), (1000, 0.005), (10**6, 1.5e-5), (100, 0.5)],
)
def test_draws_follow_the_binomial_law(m, p, inversion_spy):
    # DRAWS = 40 000 i.i.d. draws of one (m, p), a column [DRAWS, 1]: means m·min(p, 1 − p) from 0.5 to
    # 19.5 go to the inversion (p > ½ by the flip), 50 to torch.binomial.  Fixed seed per case.
    generator = torch.Generator().manual_seed(m % 1009 + int(p * 1000))
    counts = torch.full((DRAWS, 1), float(m), dtype=torch.float64)
    draws = sample_binomial(counts, torch.tensor([[p]], dtype=torch.float64), generator).numpy().ravel()
    assert _inverted_columns(inversion_spy) == (1 if m * min(p, 1 - p) < 20 else 0)
    assert np.all(draws == np.round(draws)) and draws.min() >= 0 and draws.max() <= m
    law = stats.binom(m, p)
    # The sample mean is within 5 standard errors of m·p, the chi-square over quantile bins passes.
    assert abs(draws.mean() - law.mean()) <= 5 * law.std() / np.sqrt(DRAWS)
    assert _binned_pvalue(draws, m, p) > 1e-3


def test_a_level_of_mixed_columns(inversion_spy):
    # One [R, K] level as the count tree draws it: a shared row of split probabilities, columns of
    # means 0 (zero counts; p = 0; p = 1), ~1, ~8, ~16 (the inversion) and 2^39 (torch.binomial).
    rows = 20_000
    m = torch.tensor([0.0, 7.0, 7.0, 2.0, 16.0, 40.0, 2.0**40], dtype=torch.float64)
    p = torch.tensor([[0.4, 0.0, 1.0, 0.5, 0.5, 0.6, 0.5]], dtype=torch.float64)
    counts = m.expand(rows, -1).contiguous()
    draws = sample_binomial(counts, p, torch.Generator().manual_seed(3))
    assert _inverted_columns(inversion_spy) == 3
    assert torch.equal(draws[:, :3], torch.tensor([0.0, 0.0, 7.0], dtype=torch.float64).expand(rows, -1))
    for column in range(3, 7):
        law = stats.binom(int(m[column]), float(p[0, column]))
        column_draws = draws[:, column].numpy()
        assert abs(column_draws.mean() - law.mean()) <= 5 * law.std() / np.sqrt(rows)
        assert _binned_pvalue(column_draws, int(m[column]), float(p[0, column])) > 1e-3


def test_per_row_probabilities(inversion_spy):
    # prob [R, K]: every draw its own p (as the tree draws a law per replicate); Binomial(12, p_r) for
    # p_r ∈ {0.1, 0.5, 0.8} in turn down the rows, each a third of the draws.
    rows = 30_000
    p = torch.tensor([0.1, 0.5, 0.8], dtype=torch.float64).repeat(rows // 3)[:, None]
    draws = sample_binomial(torch.full((rows, 1), 12.0, dtype=torch.float64), p, torch.Generator().manual_seed(9))
    assert _inverted_columns(inversion_spy) == 1
    for offset, prob in enumerate((0.1, 0.5, 0.8)):
        assert _binned_pvalue(draws[offset::3, 0].numpy(), 12, prob) > 1e-3


def _reference_draws(count: torch.Tensor, prob: torch.Tensor, seed: int) -> torch.Tensor:
    """The sampler written plainly, one draw at a time in Python floats (module docstring of _binomial).

    Columns are routed by the documented rule; torch.binomial draws the others first, then one
    torch.rand gives the inversion's uniforms, [R, K_inversion] in row-major order.
    """
    rows, columns = count.shape
    generator = torch.Generator().manual_seed(seed)
    head = max(1, min(16, rows // 16))
    chosen = []
    for k in range(columns):
        q = min(prob[0, k].item(), 1 - prob[0, k].item())
        means = [count[r, k].item() * q for r in range(rows)]
        if sum(count[:head, k].tolist()) >= head and 0 < max(means) < 20:
            chosen.append(k)
    zero = [k for k in range(columns) if count[:, k].max().item() * min(prob[0, k].item(), 1 - prob[0, k].item()) == 0]
    if len(chosen) * rows < 4096 or count.numel() < 4096:
        chosen = []
    elif len(chosen) + len(zero) == columns:
        chosen = list(range(columns))
    rest = [k for k in range(columns) if k not in chosen]
    draws = torch.zeros_like(count)
    if rest:
        draws[:, rest] = torch.binomial(count[:, rest], prob[:, rest].expand(rows, -1), generator=generator)
    if not chosen:
        return draws
    uniforms = torch.rand((rows, len(chosen)), generator=generator, dtype=torch.float64)
    for r in range(rows):
        for i, k in enumerate(chosen):
            m, p, u = count[r, k].item(), prob[0, k].item(), uniforms[r, i].item()
            q = min(p, 1 - p)
            # X = #{j < m : F(j) < u}, f(0) = (1 − q)^m, f(j) = f(j − 1)·(q/(1 − q))·(m − j + 1)/j.
            term = math.exp(m * math.log1p(-q))
            residual, x, j = u - term, 0, 0
            while residual > 0 and j < m:
                j += 1
                x += 1
                term *= (q / (1 - q)) * (m - j + 1) / j
                residual -= term
            draws[r, k] = m - x if p > 0.5 else x
    return draws


@pytest.mark.parametrize("mean", [0.5, 3.0, 12.0])
def test_draws_are_the_plain_reference(mean):
    # 300 rows × 24 columns of counts around `mean`/q (Poisson counts, some zero), split probabilities
    # on both sides of ½ and a column of p = 1: every draw equals the plain reference's.
    rows, columns = 300, 24
    generator = torch.Generator().manual_seed(int(mean * 10))
    prob = torch.rand((1, columns), generator=generator, dtype=torch.float64) * 0.9 + 0.05
    prob[0, 5] = 1.0
    q = torch.minimum(prob, 1 - prob)
    count = torch.poisson((mean / q).expand(rows, -1).contiguous(), generator=generator)
    draws = sample_binomial(count, prob, torch.Generator().manual_seed(1))
    assert torch.equal(draws, _reference_draws(count, prob, 1))


def test_a_draw_short_of_its_uniform_after_the_last_round_is_its_count():
    # u > 1 is short of every F(j) ≤ 1: the rounds stop at j = min(max m, 128) and X = min(m, 129).
    m = torch.tensor([[0.0, 1.0, 5.0, 300.0]], dtype=torch.float64)
    q = torch.tensor([[0.3, 0.3, 0.5, 0.01]], dtype=torch.float64)
    out = torch.empty_like(m)
    _binomial._inversion(m, q / (1 - q), torch.log1p(-q), torch.full_like(m, 1.5), out, 128.0)
    assert torch.equal(out, torch.tensor([[0.0, 1.0, 5.0, 129.0]], dtype=torch.float64))


def test_edges_and_same_seed():
    # Zero counts and p ∈ {0, 1} are exact; a seed fixes the draws.
    counts = torch.tensor([[0.0, 5.0, 5.0, 2.0**40, 3.0, 40.0]], dtype=torch.float64).expand(5000, -1).contiguous()
    probs = torch.tensor([[0.5, 0.0, 1.0, 1.0, 0.2, 0.5]], dtype=torch.float64)
    first = sample_binomial(counts, probs, torch.Generator().manual_seed(4))
    assert torch.equal(first[:, :4], torch.tensor([0.0, 0.0, 5.0, 2.0**40], dtype=torch.float64).expand(5000, -1))
    assert torch.equal(first, sample_binomial(counts, probs, torch.Generator().manual_seed(4)))
    assert not torch.equal(first, sample_binomial(counts, probs, torch.Generator().manual_seed(5)))
