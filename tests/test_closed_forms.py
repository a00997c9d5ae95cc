"""Tests of `synthalign.theory.closed_forms`: closed-form optima and declared population minimizers, by hand."""

from __future__ import annotations

import math

import pytest
import torch

import synthalign as sa
from synthalign.theory import closed_forms

DTYPE = torch.float64


def _world(reference=(0.5, 0.5), gamma=1.0) -> sa.World:
    # One prompt, pi* = (0.6, 0.4), mu = pi0.
    return sa.World.from_tensors(
        target=torch.tensor([[0.6, 0.4]], dtype=DTYPE),
        reference=torch.tensor([list(reference)], dtype=DTYPE),
        gamma=gamma,
    )


def test_dpo_minimizer_is_pi0_times_pi_star():
    # pi0 = (0.2, 0.8): pi0 · pi* = (0.12, 0.32), normalized (0.12/0.44, 0.32/0.44) = (0.272727, 0.727273).
    policy = closed_forms.dpo_minimizer(None, _world((0.2, 0.8)), 0.0, {})
    torch.testing.assert_close(policy.probs, torch.tensor([[0.12 / 0.44, 0.32 / 0.44]], dtype=DTYPE))


def test_win_rate_and_ipo_tilt():
    # mu uniform: P(0 ≻ mu) = ½ P(0 ≻ 0) + ½ P(0 ≻ 1) = ½ · ½ + ½ · 0.6 = 0.55; P(1 ≻ mu) = 0.45.
    world = _world()
    torch.testing.assert_close(closed_forms.win_rate_against_behavior(world), torch.tensor([[0.55, 0.45]], dtype=DTYPE))
    # (2 · 0.55 − 1)/(2 tau) = 0.1/(2 · 0.5) = 0.1, and −0.1 for response 1.
    torch.testing.assert_close(closed_forms.ipo_tilt(world, 0.5), torch.tensor([[0.1, -0.1]], dtype=DTYPE))
    policy = closed_forms.ipo_minimizer(None, world, 0.0, {"tau": 0.5})
    torch.testing.assert_close(policy.probs, torch.softmax(torch.tensor([[0.1, -0.1]], dtype=DTYPE), -1))
    # The zoo's f-IPO takes tau = gamma = 1: tilt 0.05.
    torch.testing.assert_close(
        closed_forms.gamma_ipo_minimizer(None, world, 0.0, {}).probs,
        torch.softmax(torch.tensor([[0.05, -0.05]], dtype=DTYPE), -1),
    )


def test_sft_minimizer_is_the_chosen_response_frequency():
    # w_a = mu(a) P(a ≻ mu) = (0.5 · 0.55, 0.5 · 0.45) → normalized (0.55, 0.45).
    torch.testing.assert_close(
        closed_forms.sft_minimizer(None, _world(), 0.0, {}).probs, torch.tensor([[0.55, 0.45]], dtype=DTYPE)
    )


def test_rebel_minimizer_tilts_pi0_by_eta_times_the_reward():
    reward = torch.tensor([[1.0, 0.0]], dtype=DTYPE)
    # pi ∝ (0.5 e^{2}, 0.5): (e²/(1 + e²), 1/(1 + e²)).
    expected = torch.tensor([[math.exp(2) / (1 + math.exp(2)), 1 / (1 + math.exp(2))]], dtype=DTYPE)
    torch.testing.assert_close(closed_forms.rebel_minimizer(reward, _world(), 0.0, {"eta": 2.0}).probs, expected)


def test_rlhf_rkl_and_forward_kl_closed_forms():
    world = _world((0.2, 0.8), gamma=0.5)
    reward = world.true_reward
    # RLHF at beta = 1: pi0 · pi*^{gamma/beta} = (0.2 · 0.6^0.5, 0.8 · 0.4^0.5) normalized.
    unnormalized = torch.tensor([[0.2 * 0.6**0.5, 0.8 * 0.4**0.5]], dtype=DTYPE)
    torch.testing.assert_close(
        closed_forms.rlhf_minimizer(reward, world, 1.0, {}).probs, unnormalized / unnormalized.sum()
    )
    with pytest.raises(ValueError, match="beta > 0"):
        closed_forms.rlhf_minimizer(reward, world, 0.0, {})
    # RKL at beta = 0 is pi_R = pi*; at beta = gamma, pi0^½ · exp(R/(2 gamma)) = (pi0 · pi*)^½.
    torch.testing.assert_close(closed_forms.rkl_minimizer(reward, world, 0.0, {}).probs, world.target.probs)
    half = torch.tensor([[(0.2 * 0.6) ** 0.5, (0.8 * 0.4) ** 0.5]], dtype=DTYPE)
    torch.testing.assert_close(closed_forms.rkl_minimizer(reward, world, 0.5, {}).probs, half / half.sum())
    torch.testing.assert_close(closed_forms.forward_kl_minimizer(reward, world, 0.0, {}).probs, world.target.probs)
    with pytest.raises(ValueError, match="beta = 0 only"):
        closed_forms.forward_kl_minimizer(reward, world, 0.1, {})


def test_target_minimizer_is_pi_star():
    world = _world()
    assert closed_forms.target_minimizer(None, world, 0.0, {}).logp is world.target.logp
