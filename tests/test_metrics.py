"""Tests of `synthalign.metrics`: hand-computed values, zero probabilities, batching, bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import synthalign as sa
from synthalign.testing.strategies import log_policies, policy_pairs
from synthalign.testing.strategies import random_worlds as worlds

DTYPE = torch.float64


def logp_of(*rows) -> torch.Tensor:
    return torch.log(torch.tensor(rows, dtype=DTYPE))


# p = (1/2, 1/2), q = (1/4, 3/4) on one prompt.
P = logp_of([0.5, 0.5])
Q = logp_of([0.25, 0.75])


def test_kl_divergences_hand_values():
    # KL(p ‖ q) = ½ ln(½/¼) + ½ ln(½/¾) = ½ ln(4/3) = 0.143841
    assert sa.forward_kl(P, Q).item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-12)
    assert sa.kl_divergence(P, Q).item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-12)
    # reverse_kl(target=p, estimate=q) = KL(q ‖ p) = ¼ ln(¼/½) + ¾ ln(¾/½) = −0.173287 + 0.304099 = 0.130812
    assert sa.reverse_kl(P, Q).item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), rel=1e-12)
    assert sa.reverse_kl(P, Q).item() == pytest.approx(0.13081203594113697, rel=1e-12)


def test_hellinger_total_variation_entropy_hand_values():
    # H² = 1 − (√(½·¼) + √(½·¾)) = 1 − (0.353553 + 0.612372) = 0.034074
    assert sa.squared_hellinger(P, Q).item() == pytest.approx(1 - math.sqrt(1 / 8) - math.sqrt(3 / 8), rel=1e-12)
    # TV = ½ (|½ − ¼| + |½ − ¾|) = ¼
    assert sa.total_variation(P, Q).item() == pytest.approx(0.25, rel=1e-12)
    # H(p) = ln 2; H(q) = −¼ ln ¼ − ¾ ln ¾ = 0.346574 + 0.215762 = 0.562335
    assert sa.entropy(P).item() == pytest.approx(math.log(2), rel=1e-12)
    assert sa.entropy(Q).item() == pytest.approx(0.5623351446188083, rel=1e-12)


def test_expected_reward_hand_value():
    # E_q R = ¼·2 + ¾·(−1) = −0.25
    reward = torch.tensor([[2.0, -1.0]], dtype=DTYPE)
    assert sa.expected_reward(Q, reward).item() == pytest.approx(-0.25, rel=1e-12)


def test_average_over_prompts_uses_prompt_dist():
    # Prompt 0: KL(p ‖ p) = 0; prompt 1: KL(p ‖ q) = ½ ln(4/3).  D = (¼, ¾) → ¾·½ ln(4/3) = 0.107881.
    target = torch.cat([P, P])
    estimate = torch.cat([P, Q])
    dist = torch.tensor([0.25, 0.75], dtype=DTYPE)
    assert sa.forward_kl(target, estimate, prompt_dist=dist).item() == pytest.approx(0.375 * math.log(4 / 3))
    # A Policy carrying D is used when no prompt_dist is passed; without any, D is uniform (½ each).
    assert sa.forward_kl(sa.Policy(target, dist), estimate).item() == pytest.approx(0.375 * math.log(4 / 3))
    assert sa.forward_kl(target, estimate).item() == pytest.approx(0.25 * math.log(4 / 3))
    # A prompt of weight zero whose divergence is +inf contributes 0, not NaN.
    infinite = torch.cat([P, logp_of([1.0, 0.0])])
    zero_last = torch.tensor([1.0, 0.0], dtype=DTYPE)
    assert sa.forward_kl(target, infinite, prompt_dist=zero_last).item() == 0.0


def _one_prompt_world(target, reference, gamma=1.0):
    return sa.World.from_tensors(target=[target], reference=[reference], gamma=gamma)


def test_win_rate_hand_value():
    # pi* = (0.8, 0.2), gamma = 1 → P(1 ≻ 2) = 0.8, P(2 ≻ 1) = 0.2, ties ½ on the diagonal.
    # pi = (½, ½) against pi0 = (¼, ¾):
    # Σ pi(a) pi0(b) P(a ≻ b) = ½·¼·½ + ½·¾·0.8 + ½·¼·0.2 + ½·¾·½ = 0.0625 + 0.3 + 0.025 + 0.1875 = 0.575
    world = _one_prompt_world([0.8, 0.2], [0.25, 0.75])
    assert sa.win_rate(world, P).item() == pytest.approx(0.575, rel=1e-12)
    # against=pi itself: ½ (the next test checks it in general)
    assert sa.win_rate(world, P, against=P).item() == pytest.approx(0.5, rel=1e-12)


def test_preference_squared_error_hand_value():
    # Uniform pi gives P_pi = ½ on every cell; pi* = (0.8, 0.2), gamma = 1, mu = pi0 = (¼, ¾).
    # Off-diagonal cells: (½ − 0.8)² = (½ − 0.2)² = 0.09, each of weight ¼·¾ = 3/16 → 2·(3/16)·0.09 = 0.03375.
    world = _one_prompt_world([0.8, 0.2], [0.25, 0.75])
    assert sa.preference_squared_error(world, P).item() == pytest.approx(0.03375, rel=1e-12)


@given(world=worlds(), seed=st.integers(0, 2**31 - 1))
def test_win_rate_against_itself_is_one_half_and_target_has_zero_preference_error(world, seed):
    generator = torch.Generator().manual_seed(seed)
    policy = torch.log_softmax(torch.randn(world.n_prompts, world.n_responses, generator=generator, dtype=DTYPE), -1)
    # Σ_{a,b} p_a p_b P(a ≻ b) = ½ Σ p_a p_b (P(a ≻ b) + P(b ≻ a)) = ½
    assert sa.win_rate(world, policy, against=policy).item() == pytest.approx(0.5, abs=1e-12)
    assert sa.win_rate(world, world.target, against=world.target).item() == pytest.approx(0.5, abs=1e-12)
    assert sa.preference_squared_error(world, world.target).item() == pytest.approx(0.0, abs=1e-15)
    # Adding a per-prompt constant to ln pi does not change P_pi (spec §6.1), so neither does the error.
    shifted = policy + torch.randn(world.n_prompts, 1, generator=generator, dtype=DTYPE)
    assert sa.preference_squared_error(world, shifted).item() == pytest.approx(
        sa.preference_squared_error(world, policy).item(), rel=1e-10, abs=1e-15
    )


@given(pair=policy_pairs())
def test_metrics_against_a_numpy_computation(pair):
    p_logp, q_logp = pair
    p, q = p_logp.exp().numpy(), q_logp.exp().numpy()
    kl = np.mean(np.sum(p * np.log(p / q), axis=-1))
    assert sa.forward_kl(p_logp, q_logp).item() == pytest.approx(kl, rel=1e-9, abs=1e-12)
    assert sa.reverse_kl(q_logp, p_logp).item() == pytest.approx(kl, rel=1e-9, abs=1e-12)
    assert sa.squared_hellinger(p_logp, q_logp).item() == pytest.approx(
        np.mean(1 - np.sum(np.sqrt(p * q), axis=-1)), rel=1e-9, abs=1e-12
    )
    tv = np.mean(0.5 * np.sum(np.abs(p - q), axis=-1))
    assert sa.total_variation(p_logp, q_logp).item() == pytest.approx(tv, rel=1e-9, abs=1e-12)
    assert sa.entropy(p_logp).item() == pytest.approx(np.mean(-np.sum(p * np.log(p), -1)), rel=1e-9, abs=1e-12)
    # Pinsker (per prompt, then averaged with Jensen): (E TV)² ≤ E KL / 2, checked in this squared form.
    # Near p = q the bound is tight to O(TV⁴) while KL itself carries a rounding error of order 1e-16
    # (the masses exp(ln p) sum to 1 only to rounding), which the square-root form would amplify by
    # 1 / sqrt(KL) (a 2.5e-6 TV, found by hypothesis, overshot sqrt(KL/2) by 5e-12); the squared form
    # keeps the error at the size of KL's own rounding, hence the 1e-15 slack.  A numpy KL of −1e-17
    # for p = q up to rounding is read as 0.
    kl_from_logs = np.mean(np.sum(p * (p_logp.numpy() - q_logp.numpy()), axis=-1))
    assert 2 * tv**2 <= max(kl_from_logs, 0.0) + 1e-15


@given(logp=log_policies())
def test_divergences_vanish_on_equal_policies(logp):
    for metric in (sa.forward_kl, sa.reverse_kl, sa.squared_hellinger, sa.total_variation):
        assert abs(metric(logp, logp).item()) <= 1e-12


def test_zero_probabilities_give_zero_terms_or_inf_never_nan():
    with_zero = logp_of([1.0, 0.0])
    # 0·ln 0 = 0: H((1, 0)) = 0; KL((1, 0) ‖ q) = ln(1/¼) = ln 4.
    assert sa.entropy(with_zero).item() == 0.0
    assert sa.forward_kl(with_zero, Q).item() == pytest.approx(math.log(4), rel=1e-12)
    # q puts no mass where p does: KL(p ‖ (1, 0)) = +inf.
    assert sa.forward_kl(P, with_zero).item() == math.inf
    assert sa.total_variation(P, with_zero).item() == pytest.approx(0.5)
    # H² = 1 − √(½·1) = 1 − 0.707107
    assert sa.squared_hellinger(P, with_zero).item() == pytest.approx(1 - math.sqrt(0.5), rel=1e-12)
    # Both zero at the same response: that term is 0.
    assert sa.forward_kl(with_zero, with_zero).item() == 0.0


def test_metrics_are_batched_over_leading_dimensions():
    batch = torch.stack([torch.cat([P, Q]), torch.cat([Q, Q]), torch.cat([P, P])])  # [3, 2, 2]
    target = torch.cat([P, P])
    kl = sa.forward_kl(target, batch)
    assert kl.shape == (3,)
    # row r: mean over the two prompts of KL(p ‖ batch[r, x])
    half_log = 0.5 * math.log(4 / 3)
    torch.testing.assert_close(kl, torch.tensor([half_log / 2, half_log, 0.0], dtype=DTYPE))
    for r in range(3):
        assert sa.total_variation(target, batch)[r].item() == pytest.approx(
            sa.total_variation(target, batch[r]).item(), rel=1e-12
        )


def test_metric_bad_inputs_name_the_argument():
    nan = torch.full((1, 2), float("nan"), dtype=DTYPE)
    with pytest.raises(ValueError, match="target contains NaN"):
        sa.forward_kl(nan, P)
    with pytest.raises(ValueError, match="estimate contains NaN"):
        sa.reverse_kl(P, nan)
    with pytest.raises(ValueError, match="q contains NaN"):
        sa.squared_hellinger(P, nan)
    with pytest.raises(ValueError, match="policy contains NaN"):
        sa.entropy(nan)
    with pytest.raises(ValueError, match="reward contains NaN"):
        sa.expected_reward(P, nan)
    with pytest.raises(ValueError, match=r"target\(1, 2\), estimate\(1, 3\)"):
        sa.forward_kl(P, torch.log(torch.full((1, 3), 1 / 3, dtype=DTYPE)))
    with pytest.raises(ValueError, match="reward"):
        sa.expected_reward(P, torch.zeros(1, 3, dtype=DTYPE))
    world = _one_prompt_world([0.8, 0.2], [0.25, 0.75])
    with pytest.raises(ValueError, match="against contains NaN"):
        sa.win_rate(world, P, against=nan)
    with pytest.raises(ValueError, match="target must be a Policy or a tensor"):
        sa.forward_kl([0.5, 0.5], P)
