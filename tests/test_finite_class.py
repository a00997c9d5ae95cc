"""The finite-class argmin's fast paths against the straightforward loss of every (replicate, candidate)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _fixed_reward import _fixed_reward

import synthalign as sa
from synthalign.testing.strategies import random_log_policy


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


# ---------------------------------------------------------------- moved from the estimator tests

DTYPE = torch.float64


def _class_with_target(world, K=7, seed=0):
    others = random_log_policy((K - 1, world.n_prompts, world.n_responses), seed)
    return torch.cat([others[:3], world.target.logp.unsqueeze(0), others[3:]])  # pi* at index 3


@pytest.mark.parametrize(
    ("name", "beta", "needs_reward"),
    [("pmle", 0.0, False), ("pmle", 0.3, False), ("dpo", 0.0, False), ("distillation", 0.0, True), ("rkl", 0.0, True)],
)
def test_argmin_over_class_matches_direct_evaluation(name, beta, needs_reward):
    world = sa.World.random(3, 4, seed=1)
    candidates = _class_with_target(world)
    data = world.sample_preferences(60, replicates=5, seed=2)
    reward = _fixed_reward(world) if needs_reward else None
    result = sa.argmin_over_class(name, data, candidates, beta=beta, reward=reward)
    direct = torch.stack([sa.empirical_loss(name, data, c, beta=beta, reward=reward) for c in candidates], dim=-1)
    torch.testing.assert_close(result.losses, direct, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(result.index, direct.argmin(-1))
    torch.testing.assert_close(result.policy.logp, candidates[direct.argmin(-1)])
    # chunking does not change the answer
    chunked = sa.argmin_over_class(name, data, candidates, beta=beta, reward=reward, chunk_size=2)
    torch.testing.assert_close(chunked.losses, result.losses, rtol=1e-12, atol=1e-14)


def test_argmin_over_class_with_a_reward_per_replicate():
    world = sa.World.random(3, 4, seed=3)
    candidates = _class_with_target(world)
    data = world.sample_preferences(80, replicates=3, seed=0)
    reward = sa.fit_reward_model(data).reward  # [3, X, A]
    result = sa.argmin_over_class("distillation", data, candidates, reward=reward)
    for r in range(3):
        direct = torch.stack([sa.empirical_loss("distillation", data[r], c, reward=reward[r]) for c in candidates], -1)
        torch.testing.assert_close(result.losses[r], direct[0], rtol=1e-12, atol=1e-14)
        assert result.index[r].item() == direct[0].argmin().item()


@pytest.mark.parametrize("name", ["pmle", "distillation", "rkl"])
def test_argmin_over_class_picks_the_target_at_the_population(name):
    world = sa.World.random(3, 4, seed=5, zero_fraction=0.3)
    candidates = _class_with_target(world)
    reward = world.true_reward if name != "pmle" else None
    result = sa.argmin_over_class(name, world.population_preferences(), candidates, reward=reward)
    assert result.index.tolist() == [3]


def test_argmin_over_class_gives_infinite_loss_to_candidates_that_exclude_observed_responses():
    world = sa.World.random(2, 3, seed=0)
    data = world.sample_preferences(100, seed=0)
    blocked = torch.log(torch.tensor([[1.0, 0.0, 0.0]] * 2, dtype=DTYPE))  # responses 1, 2 impossible
    candidates = torch.stack([blocked, world.target.logp])
    result = sa.argmin_over_class("pmle", data, candidates)
    assert result.losses[0, 0].item() == math.inf and result.index.item() == 1


def test_argmin_over_class_rejects_bad_inputs():
    world = sa.World.random(2, 3, seed=0)
    data = world.population_preferences()
    with pytest.raises(ValueError, match="candidates must have shape"):
        sa.argmin_over_class("pmle", data, world.target.logp)
    with pytest.raises(ValueError, match="chunk_size"):
        sa.argmin_over_class("pmle", data, world.target.logp[None], chunk_size=0)
    with pytest.raises(ValueError, match="candidates contains NaN"):
        sa.argmin_over_class("pmle", data, torch.full((1, 2, 3), float("nan"), dtype=DTYPE))
    with pytest.raises(ValueError, match="beta"):
        sa.argmin_over_class("pmle", data, world.target.logp[None], beta=-1.0)


def test_chunk_size_accepts_a_numpy_integer_and_refuses_a_float():
    world, candidates, data, rewards = _setup()
    plain = sa.argmin_over_class("pmle", data, candidates, chunk_size=7)
    numpy_chunk = sa.argmin_over_class("pmle", data, candidates, chunk_size=np.int64(7))
    assert torch.equal(plain.losses, numpy_chunk.losses)
    fitted = sa.fit_over_class("distillation", data, candidates, reward_class=candidates, chunk_size=np.int32(5))
    reference = sa.fit_over_class("distillation", data, candidates, reward_class=candidates, chunk_size=5)
    assert torch.equal(fitted.policy.logp, reference.policy.logp)
    for bad in (7.0, 0, "7"):
        with pytest.raises(ValueError, match="chunk_size"):
            sa.argmin_over_class("pmle", data, candidates, chunk_size=bad)
