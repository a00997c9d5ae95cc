"""Tests of `synthalign.objectives.pair_losses`: hand-derived values, literal references, saturation, conventions."""

from __future__ import annotations

import pytest
import torch
from _zoo_pairs import LN, LOGP_CHOSEN, LOGP_REJECTED, _naive_log_sigmoid, _random_pairs, example, t

from synthalign.objectives import zoo

# ----------------------------------------------------------------------------------------------------------------------
# Hand-derived values (running example, γ = 0.5 unless stated)
# h⁺ = ln(0.6/0.25) = ln 2.4 = 0.8755,  h⁻ = ln(0.2/0.25) = ln 0.8 = −0.2231,  Δ = h⁺ − h⁻ = ln 3 = 1.0986
# ----------------------------------------------------------------------------------------------------------------------


def test_sppo_by_hand():
    # targets ±(1 − ½)/γ = ±1: (0.8755 − 1)² + (−0.2231 + 1)² = 0.015508 + 0.603506 = 0.619014
    assert example(zoo.sppo_loss, gamma=0.5) == pytest.approx(0.619013977, abs=1e-9)
    assert example(zoo.sppo_loss, gamma=0.5, average_pair=True) == pytest.approx(0.619013977 / 2, abs=1e-9)


def test_chipo_by_hand():
    # φ(h⁺) = 2.4 + 0.8755 = 3.2755, φ(h⁻) = 0.8 − 0.2231 = 0.5769, margin = 0.5·2.6986 = 1.3493
    # R = 1: |1.3493| < 2, unclipped → ln(1 + e^(−1.3493)) = 0.230651
    assert example(zoo.chipo_loss, gamma=0.5, reward_bound=1.0) == pytest.approx(0.230651455, abs=1e-9)
    # R = 0.5: clipped to 1 → ln(1 + e^(−1)) = 0.313262
    assert example(zoo.chipo_loss, gamma=0.5, reward_bound=0.5) == pytest.approx(0.313261688, abs=1e-9)


def test_kto_pair_and_apo_by_hand():
    # KTO, z0 = 0: σ(−0.5·0.8755) + σ(0.5·(−0.2231)) = 0.392281 + 0.472136 = 0.864417
    assert example(zoo.kto_pair_loss, gamma=0.5) == pytest.approx(0.864416911, abs=1e-9)
    # APO-zero is the same expression: (1 − σ(γh⁺)) + σ(γh⁻)
    assert example(zoo.apo_zero_loss, gamma=0.5) == pytest.approx(0.864416911, abs=1e-9)
    # APO-down: σ(0.5·0.8755) + σ(−0.5·ln 3) = 0.607719 + 0.366025 = 0.973744
    assert example(zoo.apo_down_loss, gamma=0.5) == pytest.approx(0.973744448, abs=1e-9)


def test_nca_and_bco_by_hand():
    # NCA: −ln σ(0.4377) − ½ ln σ(−0.4377) − ½ ln σ(−(−0.1116)) = 0.498 + 0.4676 + 0.3198 = 1.285389
    assert example(zoo.nca_pair_loss, gamma=0.5) == pytest.approx(1.285389348, abs=1e-9)
    # BCO, δ = 0.2: −ln σ(0.4377 − 0.2) − ln σ(−(−0.1116 − 0.2)) = 0.5804 + 0.5504 = 1.130775
    assert example(zoo.bco_pair_loss, gamma=0.5, delta=0.2) == pytest.approx(1.130775272, abs=1e-9)


def test_simpo_by_hand():
    # |a⁺| = 2, |a⁻| = 1, γ = 2, m = 0.5: 2·(ln 0.6/2 − ln 0.2) − 0.5 = 2·(−0.2554 + 1.6094) − 0.5 = 2.2081
    # → ln(1 + e^(−2.2081)) = 0.104283
    loss = zoo.simpo_loss(LOGP_CHOSEN, LOGP_REJECTED, gamma=2.0, target_margin=0.5, length_chosen=2.0)
    assert loss.item() == pytest.approx(0.104283212, abs=1e-9)


def test_sft_is_a_per_token_mean():
    # lengths 1, 2, 3 and sequence log-probs −1, −2, −6: −(−1 − 2 − 6)/(1 + 2 + 3) = 1.5
    logp = t(-1.0, -2.0, -6.0)
    assert zoo.sft_loss(logp, length_chosen=t(1.0, 2.0, 3.0)).item() == pytest.approx(1.5)
    assert zoo.sft_loss(logp).item() == pytest.approx(3.0)  # one token each: the mean NLL
    # counts (2, 0, 1): (2·1 + 6)/(2·1 + 3) = 1.6
    loss = zoo.sft_loss(logp, length_chosen=t(1.0, 2.0, 3.0), weight=t(2.0, 0.0, 1.0))
    assert loss.item() == pytest.approx(1.6)


# ----------------------------------------------------------------------------------------------------------------------
# Independent references: literal transcriptions of the papers' formulas (moderate inputs only)
# ----------------------------------------------------------------------------------------------------------------------


def _reference_chipo(lc, lr, rc, rr, *, gamma, reward_bound):
    phi = lambda z: z + torch.log(z)  # noqa: E731 — the paper's link, on the ratio z = π/π0
    margin = gamma * phi(torch.exp(lc) / torch.exp(rc)) - gamma * phi(torch.exp(lr) / torch.exp(rr))
    clipped = torch.clamp(margin, -2 * reward_bound, 2 * reward_bound)
    return -_naive_log_sigmoid(clipped).mean()


def _reference_kto_pair(lc, lr, rc, rr, *, gamma, z0, desirable_weight):
    value_chosen = desirable_weight * torch.sigmoid(gamma * (lc - rc - z0))
    value_rejected = torch.sigmoid(gamma * (z0 - (lr - rr)))
    return (desirable_weight - value_chosen + 1.0 - value_rejected).mean()


def _reference_sppo(lc, lr, rc, rr, *, gamma, win_prob_chosen, win_prob_rejected):
    eta = 1.0 / gamma
    error_chosen = lc - rc - eta * (win_prob_chosen - 0.5)
    error_rejected = lr - rr - eta * (win_prob_rejected - 0.5)
    return (error_chosen**2 + error_rejected**2).mean()


def _reference_xpo(lc, lr, rc, rr, *, gamma, alpha, logp_exploration):
    dpo = -_naive_log_sigmoid(gamma * ((lc - lr) - (rc - rr)))
    return (dpo + alpha * logp_exploration).mean()


REFERENCES = [
    (zoo.chipo_loss, _reference_chipo, {"gamma": 0.7, "reward_bound": 1.0}),
    (zoo.chipo_loss, _reference_chipo, {"gamma": 0.2, "reward_bound": 50.0}),
    (zoo.kto_pair_loss, _reference_kto_pair, {"gamma": 0.7, "z0": 0.3, "desirable_weight": 1.5}),
    (zoo.sppo_loss, _reference_sppo, {"gamma": 0.7, "win_prob_chosen": 0.9, "win_prob_rejected": 0.2}),
    (zoo.xpo_loss, _reference_xpo, {"gamma": 0.7, "alpha": 0.3, "logp_exploration": t(-1.0, -2.0, -0.5)}),
]


@pytest.mark.parametrize("fn, reference, kwargs", REFERENCES, ids=lambda v: getattr(v, "__name__", ""))
def test_matches_reference_in_value_and_gradient(fn, reference, kwargs):
    inputs = _random_pairs(3, seed=3, requires_grad=True)
    ours, theirs = fn(*inputs, **kwargs), reference(*inputs, **kwargs)
    torch.testing.assert_close(ours, theirs)
    for g_ours, g_theirs in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(theirs, inputs), strict=True):
        torch.testing.assert_close(g_ours, g_theirs)


# ----------------------------------------------------------------------------------------------------------------------
# Saturation, special cases and conventions
# ----------------------------------------------------------------------------------------------------------------------


def test_chipo_saturates_and_ties_without_overflow():
    # h⁺ = 2e4 (π0(a⁺) = e^−2e4): saturated at +2R with zero gradient; a tie at h = 2e4 has margin 0.
    lc, lr = t(0.0, LN(0.5), -1.0, requires_grad=True), t(-1.0, LN(0.5), 0.0, requires_grad=True)
    rc, rr = t(-2e4, -2e4, -1.0), t(-1.0, -2e4, -2e4)
    loss = zoo.chipo_loss(lc, lr, rc, rr, gamma=0.1, reward_bound=1.0, reduction="none")
    expected = t(-LN(torch.sigmoid(t(2.0)).item()), LN(2.0), -LN(torch.sigmoid(t(-2.0)).item()))
    torch.testing.assert_close(loss, expected)
    grads = torch.autograd.grad(loss.sum(), (lc, lr))
    assert all(torch.isfinite(g).all() for g in grads)
    assert grads[0][0] == 0 and grads[1][2] == 0


def test_kto_pair_with_zero_reference_point_is_apo_zero():
    inputs = _random_pairs()
    torch.testing.assert_close(zoo.kto_pair_loss(*inputs, gamma=0.7), zoo.apo_zero_loss(*inputs, gamma=0.7))


def test_sppo_and_bco_conventions():
    inputs = _random_pairs()
    torch.testing.assert_close(
        zoo.sppo_loss(*inputs, gamma=0.7, average_pair=True), 0.5 * zoo.sppo_loss(*inputs, gamma=0.7)
    )
    # A detached tensor δ (e.g. the batch's mean reward) broadcasts like a float.
    lc, lr, rc, rr = inputs
    delta = (0.7 * ((lc - rc) + (lr - rr)) / 2).mean().detach()
    torch.testing.assert_close(
        zoo.bco_pair_loss(*inputs, gamma=0.7, delta=delta), zoo.bco_pair_loss(*inputs, gamma=0.7, delta=delta.item())
    )
