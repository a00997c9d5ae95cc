"""Tests of `synthalign.objectives.dpo_family`: the DPO family's losses by hand, special cases and identities."""

from __future__ import annotations

import math

import pytest
import torch
from _zoo_pairs import F64, LN, REF, _random_pairs, example, t
from hypothesis import given
from hypothesis import strategies as st

from synthalign import objectives
from synthalign.objectives import zoo

# ----------------------------------------------------------------------------------------------------------------------
# Hand-derived values (running example, γ = 0.5 unless stated)
# h⁺ = ln(0.6/0.25) = ln 2.4 = 0.8755,  h⁻ = ln(0.2/0.25) = ln 0.8 = −0.2231,  Δ = h⁺ − h⁻ = ln 3 = 1.0986
# ----------------------------------------------------------------------------------------------------------------------


def test_dpo_by_hand():
    # margin = 0.5·ln(0.6/0.2) − 0.5·ln(0.25/0.25) = 0.5·ln 3 = 0.5493 → loss = ln(1 + 3^(−1/2)) = 0.455746
    assert example(zoo.f_dpo_loss, gamma=0.5) == pytest.approx(0.455746394, abs=1e-9)


def test_ipo_by_hand():
    # Δ = ln 3 = 1.0986, 1/(2τ) = 1 at τ = 0.5 → loss = (1.0986 − 1)² = 0.009724
    assert example(zoo.f_ipo_loss, gamma=0.5) == pytest.approx(0.009724383, abs=1e-9)


def test_hinge_by_hand():
    # max(0, 1 − 0.5·ln 3) = 1 − 0.5493 = 0.450694
    assert example(zoo.hinge_loss, gamma=0.5) == pytest.approx(0.450693856, abs=1e-9)


def test_conservative_and_robust_dpo_by_hand():
    # x = 0.5·ln 3 = 0.5493: ln σ(x) = −0.455746, ln σ(−x) = −0.455746 − 0.5493 = −1.005053
    # cDPO, ε = 0.1: 0.9·0.455746 + 0.1·1.005053 = 0.510677
    assert example(zoo.conservative_dpo_loss, gamma=0.5, label_smoothing=0.1) == pytest.approx(0.510677009, abs=1e-9)
    # rDPO, ε = 0.1: (0.9·0.455746 − 0.1·1.005053)/0.8 = 0.387083
    assert example(zoo.robust_dpo_loss, gamma=0.5, label_smoothing=0.1) == pytest.approx(0.387083126, abs=1e-9)


def test_losses_at_a_tie_by_hand():
    # π = π0 on both responses: Δ = 0.
    tie = (REF, REF, REF, REF)
    # DiscoPOP at ρ = 0: (1 − ½)·ln 2 + ½·e^0 = 0.346574 + 0.5 = 0.846574
    assert zoo.discopop_loss(*tie, gamma=0.5).item() == pytest.approx(0.846573590, abs=1e-9)
    # EXO at q = ½, ε = 0.1: ½(ln ½ − ln 0.9) + ½(ln ½ − ln 0.1) = ln ½ − ½ ln 0.09 = 0.510826
    assert zoo.exo_pair_loss(*tie, gamma=0.5, label_smoothing=0.1).item() == pytest.approx(0.510825624, abs=1e-9)


# ----------------------------------------------------------------------------------------------------------------------
# Special-case identities
# ----------------------------------------------------------------------------------------------------------------------


def test_identities_with_the_paper_objectives():
    inputs = _random_pairs()
    torch.testing.assert_close(zoo.f_dpo_loss(*inputs, gamma=0.7), objectives.dpo_loss(*inputs, gamma=0.7))
    torch.testing.assert_close(zoo.f_ipo_loss(*inputs, gamma=0.7), objectives.ipo_loss(*inputs, tau=0.7))


def test_dpo_family_special_cases():
    inputs = _random_pairs()
    lc, lr, rc, rr = inputs
    dpo = zoo.f_dpo_loss(*inputs, gamma=0.7)
    same = [
        zoo.conservative_dpo_loss(*inputs, gamma=0.7, label_smoothing=0.0),
        zoo.robust_dpo_loss(*inputs, gamma=0.7, label_smoothing=0.0),
        zoo.length_normalized_dpo_loss(*inputs, gamma=0.7),
        zoo.online_dpo_loss(*inputs, gamma=0.7),
        zoo.xpo_loss(*inputs, gamma=0.7, alpha=0.0, logp_exploration=lr),
        zoo.f_dpo_loss(*inputs, gamma=0.7, divergence="alpha_divergence", divergence_alpha=1e-9),
    ]
    for value in same:
        torch.testing.assert_close(value, dpo, atol=1e-7, rtol=0)
    # SimPO with a zero margin and one-token responses is DPO against a uniform (constant) reference.
    zero = torch.zeros_like(lc)
    torch.testing.assert_close(zoo.simpo_loss(lc, lr, gamma=0.7), zoo.f_dpo_loss(lc, lr, zero, zero, gamma=0.7))
    # Equal lengths L: length-normalised DPO is DPO at temperature γ/L.
    torch.testing.assert_close(
        zoo.length_normalized_dpo_loss(*inputs, gamma=0.7, length_chosen=2.0, length_rejected=2.0),
        zoo.f_dpo_loss(*inputs, gamma=0.35),
    )
    # α = 1 is forward KL.
    torch.testing.assert_close(
        zoo.hinge_loss(*inputs, gamma=0.7, divergence="alpha_divergence", divergence_alpha=1.0),
        zoo.hinge_loss(*inputs, gamma=0.7, divergence="forward_kl"),
    )
    # XPO adds α·mean(ln π(ã)); online IPO is the per-sequence IPO.
    torch.testing.assert_close(zoo.xpo_loss(*inputs, gamma=0.7, alpha=0.5, logp_exploration=lr), dpo + 0.5 * lr.mean())
    torch.testing.assert_close(
        zoo.online_dpo_loss(*inputs, gamma=0.7, loss_type="ipo"),
        zoo.f_ipo_loss(*inputs, gamma=0.7, normalize_length=False, length_chosen=3.0),
    )


def test_single_pair_aot_is_conservative_dpo():
    # With one pair the sorting coupling is the identity and both AOT forms are cDPO.
    for seed in range(3):
        inputs = [x[:1] for x in _random_pairs(seed=seed)]
        cdpo = zoo.conservative_dpo_loss(*inputs, gamma=0.7, label_smoothing=0.2)
        torch.testing.assert_close(zoo.aot_loss(*inputs, gamma=0.7, label_smoothing=0.2), cdpo)
        torch.testing.assert_close(zoo.aot_unpaired_loss(*inputs, gamma=0.7, label_smoothing=0.2), cdpo)


def test_aot_is_invariant_to_the_order_of_the_batch():
    inputs = _random_pairs()
    order = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    for fn in (zoo.aot_loss, zoo.aot_unpaired_loss):
        torch.testing.assert_close(fn(*inputs, gamma=0.7), fn(*[x[order] for x in inputs], gamma=0.7))


@given(st.floats(-30, 30), st.floats(-30, 30), st.floats(0.01, 5.0))
def test_dpo_preference_probabilities_sum_to_one(h_a, h_b, gamma):
    # exp(−loss) is the modelled P(a ≻ b): P(a ≻ b) + P(b ≻ a) = 1 (spec §6 item 1).
    zero = torch.zeros(1, dtype=F64)
    a, b = torch.tensor([h_a], dtype=F64), torch.tensor([h_b], dtype=F64)
    forward = zoo.f_dpo_loss(a, b, zero, zero, gamma=gamma, reduction="none")
    backward = zoo.f_dpo_loss(b, a, zero, zero, gamma=gamma, reduction="none")
    torch.testing.assert_close(torch.exp(-forward) + torch.exp(-backward), torch.ones(1, dtype=F64))


def test_gradient_at_the_reference_policy_is_not_zero():
    # At π = π0 every log-ratio is 0, yet DPO's gradient is −γ/2 per chosen log-prob (a finite tie).
    logp = t(LN(0.25), LN(0.25), requires_grad=True)
    loss = zoo.f_dpo_loss(logp[0:1], logp[1:2], REF, REF, gamma=0.5)
    torch.testing.assert_close(torch.autograd.grad(loss, logp)[0], t(-0.25, 0.25))


def test_zero_probability_pairs_are_ties_and_zero_weight_cells_vanish():
    # Two zero-probability responses are tied (margin 0); a cell of weight 0 contributes 0 even when its
    # loss is infinite.
    minus_inf = t(-math.inf)
    tie = zoo.f_dpo_loss(minus_inf, minus_inf, REF, REF, gamma=0.5)
    assert tie.item() == pytest.approx(LN(2.0))
    lc = t(-math.inf, LN(0.6), requires_grad=True)
    loss = zoo.f_dpo_loss(
        lc, t(LN(0.2), LN(0.2)), t(LN(0.25), LN(0.25)), t(LN(0.25), LN(0.25)), gamma=0.5, weight=t(0.0, 1.0)
    )
    assert loss.item() == pytest.approx(0.455746394, abs=1e-9)
    assert torch.isfinite(torch.autograd.grad(loss, lc)[0]).all()
