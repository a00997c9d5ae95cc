"""The finite-class argmin's fast paths against the straightforward loss of every (replicate, candidate)."""

from __future__ import annotations

import pytest
import torch

import synthalign as sa


def _setup():
    world = sa.World.paper_toy(seed=0, n_prompts=3, n_responses=4)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(40, 3, 4, generator=generator, dtype=torch.float64)
    candidates = torch.log_softmax(world.target.logp + 0.5 * noise, dim=-1)
    candidates[7, 1, 2] = -float("inf")  # a candidate with a zero-probability response
    candidates[7] = torch.log_softmax(candidates[7], dim=-1)
    data = world.sample_preferences(30, 5, seed=1)  # some cells unobserved
    rewards = world.true_reward + 0.3 * torch.randn(5, 3, 4, generator=generator, dtype=torch.float64)
    return world, candidates, data, rewards


def _reference(objective, data, candidates, rewards, beta):
    """empirical_loss of each candidate on each replicate with its own reward: [R, K]."""
    rows = []
    for r in range(data.replicates):
        replicate = type(data)(data.counts[r : r + 1], data.n_pairs, data.world)
        row = [
            sa.empirical_loss(objective, replicate, candidate, beta=beta, reward=rewards[r])[0]
            for candidate in candidates
        ]
        rows.append(torch.stack(row))
    return torch.stack(rows)


@pytest.mark.parametrize("objective", ["distillation", "rkl", "rlhf", "forward_kl", "rebel"])
@pytest.mark.parametrize("beta", [0.0, 0.2])
def test_per_replicate_reward_losses_match_reference(objective, beta):
    world, candidates, data, rewards = _setup()
    if objective == "distillation":
        data = sa.PairData(data.counts, data.n_pairs, world)
    fit = sa.argmin_over_class(objective, data, candidates, beta=beta, reward=rewards, chunk_size=16)
    expected = _reference(objective, data, candidates, rewards, beta)
    finite = torch.isfinite(expected)
    assert torch.equal(torch.isfinite(fit.losses), finite)
    torch.testing.assert_close(fit.losses[finite], expected[finite], rtol=1e-12, atol=1e-13)
    assert torch.equal(fit.index, expected.argmin(dim=-1))


@pytest.mark.parametrize("objective", ["distillation", "rkl"])
def test_fit_over_class_in_one_pass_matches_per_reward_argmins(objective):
    world, candidates, data, _ = _setup()
    estimate = sa.fit_over_class(objective, data, candidates, reward_class=candidates)
    pairs = sa.PairData(data.counts, data.n_pairs, world) if objective == "distillation" else data
    for r in range(data.replicates):
        replicate = type(pairs)(pairs.counts[r : r + 1], pairs.n_pairs, world)
        shared = sa.argmin_over_class(objective, replicate, candidates, reward=estimate.reward[r])
        torch.testing.assert_close(estimate.losses[r], shared.losses[0], rtol=1e-12, atol=1e-13)


def test_chunks_are_bounded_by_the_cell_budget(monkeypatch):
    import synthalign.estimators.finite_class as finite_class

    world, candidates, data, rewards = _setup()
    full = sa.argmin_over_class("distillation", data, candidates, reward=rewards)
    monkeypatch.setattr(finite_class, "_CELL_BUDGET", 4 * 48 * 3)  # three candidates of 48 cells per chunk
    seen = []
    original = finite_class._weighted_matmul
    monkeypatch.setattr(finite_class, "_weighted_matmul", lambda w, v: seen.append(v.shape[0]) or original(w, v))
    chunked = sa.argmin_over_class("distillation", data, candidates, reward=rewards)
    assert max(seen) <= 3
    torch.testing.assert_close(chunked.losses, full.losses, rtol=0.0, atol=1e-14)


def test_weighted_matmul_counts_zero_weight_at_inf_as_zero():
    from synthalign.estimators.finite_class import _weighted_matmul

    inf, nan = float("inf"), float("nan")
    weight = torch.tensor([[0.0, 2.0, 1.0], [0.0, 3.0, 0.0]], dtype=torch.float64)
    values = torch.tensor(
        [[1.0, 2.0, 3.0], [inf, 1.0, 2.0], [nan, 4.0, 1.0], [0.5, inf, 1.0], [0.5, 1.0, inf]], dtype=torch.float64
    )
    # Row 0 (weights 0, 2, 1): 2·2 + 3 = 7; 2·1 + 2 = 4 (inf unused); 2·4 + 1 = 9 (NaN unused); inf; inf.
    # Row 1 (weights 0, 3, 0): 3·2 = 6; 3·1 = 3; 3·4 = 12; inf; 3·1 = 3 (inf unused).
    expected = torch.tensor([[7.0, 4.0, 9.0, inf, inf], [6.0, 3.0, 12.0, inf, 3.0]], dtype=torch.float64)
    assert torch.equal(_weighted_matmul(weight, values), expected)
    assert torch.equal(_weighted_matmul(weight, values[:1]), expected[:, :1])  # all finite: the plain product


def test_fit_over_class_checks_the_reward_class_against_the_reward_data():
    world, candidates, data, _ = _setup()
    other = sa.World.paper_toy(seed=0, n_prompts=3, n_responses=5).sample_preferences(30, 5, seed=1)
    with pytest.raises(ValueError, match="reward_class"):
        sa.fit_over_class("distillation", data, candidates, reward_class=candidates, reward_data=other)


@pytest.mark.parametrize("beta", [0.0, 0.2])
def test_distillation_per_replicate_losses_at_large_margins(beta):
    # Margins γ ln[π(a)/π(b)] spread over ±100, across the regime where ln(1 + e^y) rounds to y.
    world, _, data, rewards = _setup()
    generator = torch.Generator().manual_seed(3)
    candidates = torch.log_softmax(40.0 * torch.randn(20, 3, 4, generator=generator, dtype=torch.float64), dim=-1)
    margins = world.gamma * (candidates.unsqueeze(-1) - candidates.unsqueeze(-2))
    assert float(margins.abs().max()) > 60.0 and bool(((margins.abs() > 20) & (margins.abs() < 40)).any())
    pairs = sa.PairData(data.counts, data.n_pairs, world)
    fit = sa.argmin_over_class("distillation", pairs, candidates, beta=beta, reward=rewards)
    expected = _reference("distillation", pairs, candidates, rewards, beta)
    torch.testing.assert_close(fit.losses, expected, rtol=1e-12, atol=1e-13)
