"""Tests of `synthalign.theory.bounds` (spec §4) via `synthalign.bounds`: Prop. 12, Thms 4, 6, 7, 14, Prop. 15."""

from __future__ import annotations

import math

import pytest
import torch
from _theory_worlds import SETTINGS, WORLD_SETTINGS, worlds
from hypothesis import given
from hypothesis import strategies as st

from synthalign.bounds import (
    boundedness_constant,
    prop12_bound,
    prop15_factor,
    thm4_bound,
    thm6_bound,
    thm7_bound,
    thm14_intermediate_bound,
)

E = math.e


# --------------------------------------------------------------------------- Prop. 15


@WORLD_SETTINGS
@given(worlds)
def test_prop15_holds_on_random_pairs(world):
    # E_x KL(π̂‖π*) ≤ prop15_factor(R) · E_x KL(π*‖π̂), with R of A2 over {π*, π̂}.
    target, behavior, _, policy_class, dist = world
    estimate = policy_class[0]
    radius = boundedness_constant(torch.stack([target, estimate]), behavior)
    forward = (dist * (target.exp() * (target - estimate)).sum(-1)).sum().item()
    reverse = (dist * (estimate.exp() * (estimate - target)).sum(-1)).sum().item()
    assert reverse <= prop15_factor(radius) * forward + 1e-15


def test_prop15_factor_by_hand():
    # R = 0.5: (2 ∨ 1) e^{5} / 0.25 = 8 e^5 = 1187.3053;  R = 0.1: (0.4 ∨ 1) e^{1.8} / 0.01 = 604.96
    assert prop15_factor(0.5) == pytest.approx(8 * math.exp(5), rel=1e-14)
    assert prop15_factor(0.1) == pytest.approx(100 * math.exp(1.8), rel=1e-14)


# --------------------------------------------------------------------------- theorem bounds

# Common hand case: R = 0.25 (so e^{4R} = e and ψ(e) = e − 2 = 0.718282), γ = 1, |Π| = 10,
# |ℛ| = 5, δ = 0.1, n = 100.  2R²e^{4R} + 3 = 0.125 e + 3 = 3.339785.
HAND = dict(R=0.25, gamma=1.0, class_size=10, delta=0.1)


def test_prop12_by_hand():
    # 4 ln(10 / 0.1) / 100 = 4 · 4.605170 / 100 = 0.184207
    assert prop12_bound(100, 10, 0.1) == pytest.approx(4 * math.log(100) / 100, rel=1e-14)


def test_thm4_by_hand():
    # printed: 0.718282 · 16 · 3.339785 · 1 · e / 1 · ln(100) / 100 = 4.804781; corrected: 4× = 19.219123
    printed = thm4_bound(100, C_Pi=1.0, corrected=False, **HAND)
    assert printed == pytest.approx((E - 2) * 16 * (0.125 * E + 3) * E * math.log(100) / 100, rel=1e-13)
    assert printed == pytest.approx(4.804780673704174, rel=1e-12)
    assert thm4_bound(100, C_Pi=1.0, **HAND) == pytest.approx(19.219122694816697, rel=1e-12)


def test_thm6_by_hand():
    # bracket ln(200/0.1) ... ln(2·10/0.1) + 2 ln(2·5/0.1) = 5.298317 + 2 · 4.605170 = 14.508658
    # printed: 0.718282 · 16 · 3.339785 · e · 14.508658 / 100 = 15.137534
    printed = thm6_bound(100, C_Pi=1.0, reward_class_size=5, corrected=False, **HAND)
    assert printed == pytest.approx(15.137533573798299, rel=1e-12)


def test_thm14_intermediate_by_hand():
    # C_0 = 2, C_ℛ = 1: 8 e [2 ln(200) + 2 · 1 · ln(100)] / 100 = 8 e · 19.806975 / 100 = 4.307275
    printed = thm14_intermediate_bound(
        100, R=0.25, C_0=2.0, C_R=1.0, gamma=1.0, class_size=10, reward_class_size=5, delta=0.1, corrected=False
    )
    assert printed == pytest.approx(4.307275240388687, rel=1e-12)


def test_thm7_by_hand():
    # on-policy: 16 · 0.0625 · ln(2 · 100 / 0.1) / 100 = 16 · 0.0625 · 7.600902 / 100 = 0.076009
    # reward:    16 · 1 · (0.0625 e + 1) · e · ln(2 · 5 / 0.1) / 100 = 2.343183
    # printed: (1 ∨ 2ψ(e)) = 1.436564 times the sum = 3.475323
    # corrected: 1.436564 · (0.076009 + 4 · 2.343183) = 13.573716
    kwargs = dict(C_R=1.0, reward_class_size=5, **HAND)
    assert thm7_bound(100, corrected=False, **kwargs) == pytest.approx(3.475322878864018, rel=1e-12)
    assert thm7_bound(100, **kwargs) == pytest.approx(13.573716108461348, rel=1e-12)


def test_small_radius_uses_lemma9_half():
    # R = 0: (½ ∨ ψ(1)) = ½, 2R²e^{4R} + 3 = 3, e^{0} = 1 → printed Thm 4 = ½ · 16 · 3 · C/γ² · ln(|Π|/δ)/n
    value = thm4_bound(10, R=0.0, C_Pi=2.0, gamma=0.5, class_size=3, delta=0.5, corrected=False)
    assert value == pytest.approx(0.5 * 16 * 3 * 2 / 0.25 * math.log(6) / 10, rel=1e-14)


constants = st.fixed_dictionaries(
    dict(
        n=st.floats(1.0, 1e9),
        R=st.floats(0.0, 5.0),
        gamma=st.floats(0.01, 5.0),
        class_size=st.integers(1, 10**6),
        reward_class_size=st.integers(1, 10**6),
        delta=st.floats(1e-6, 0.999),
        C_a=st.one_of(st.just(0.0), st.floats(1e-6, 1e3)),
        C_b=st.one_of(st.just(0.0), st.floats(1e-6, 1e3)),
    )
)


@SETTINGS
@given(constants)
def test_corrected_is_four_times_printed_where_the_half_enters(c):
    common = dict(R=c["R"], gamma=c["gamma"], class_size=c["class_size"], delta=c["delta"])
    for corrected_value, printed_value in [
        (thm4_bound(c["n"], C_Pi=c["C_a"], **common), thm4_bound(c["n"], C_Pi=c["C_a"], corrected=False, **common)),
        (
            thm6_bound(c["n"], C_Pi=c["C_a"], reward_class_size=c["reward_class_size"], **common),
            thm6_bound(c["n"], C_Pi=c["C_a"], reward_class_size=c["reward_class_size"], corrected=False, **common),
        ),
        (
            thm14_intermediate_bound(
                c["n"], C_0=c["C_a"], C_R=c["C_b"], reward_class_size=c["reward_class_size"], **common
            ),
            thm14_intermediate_bound(
                c["n"], C_0=c["C_a"], C_R=c["C_b"], reward_class_size=c["reward_class_size"], corrected=False, **common
            ),
        ),
    ]:
        assert corrected_value == pytest.approx(4 * printed_value, rel=1e-12)
    # Thm 7: only the reward-model term (the one proportional to C_ℛ) is multiplied by 4.
    thm7 = dict(reward_class_size=c["reward_class_size"], **common)
    on_policy = thm7_bound(c["n"], C_R=0.0, **thm7)
    assert on_policy == thm7_bound(c["n"], C_R=0.0, corrected=False, **thm7)
    reward_corrected = thm7_bound(c["n"], C_R=c["C_b"], **thm7) - on_policy
    reward_printed = thm7_bound(c["n"], C_R=c["C_b"], corrected=False, **thm7) - on_policy
    assert reward_corrected == pytest.approx(4 * reward_printed, rel=1e-9, abs=1e-12 * on_policy)


def test_bounds_scale_as_one_over_n_and_accept_tensors():
    n = torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64)
    values = thm4_bound(n, C_Pi=1.0, **HAND)
    assert isinstance(values, torch.Tensor)
    torch.testing.assert_close(values * n, torch.full((3,), thm4_bound(1, C_Pi=1.0, **HAND), dtype=torch.float64))
    assert prop12_bound(200, 10, 0.1) == pytest.approx(prop12_bound(100, 10, 0.1) / 2)


def test_infinite_and_trivial_constants():
    assert thm4_bound(100, R=math.inf, C_Pi=1.0, gamma=1.0, class_size=2, delta=0.1) == math.inf
    assert thm4_bound(100, R=1.0, C_Pi=math.inf, gamma=1.0, class_size=2, delta=0.1) == math.inf
    assert thm4_bound(100, R=math.inf, C_Pi=0.0, gamma=1.0, class_size=2, delta=0.1) == 0.0
    assert thm4_bound(100, R=300.0, C_Pi=1.0, gamma=1.0, class_size=2, delta=0.1) == math.inf  # overflow → inf
    assert thm7_bound(100, R=math.inf, C_R=1.0, gamma=1.0, class_size=2, reward_class_size=2, delta=0.1) == math.inf


# --------------------------------------------------------------------------- bad input

BOUND_ARGS = dict(R=1.0, C_Pi=1.0, gamma=1.0, class_size=2, delta=0.1)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: thm4_bound(10, **{**BOUND_ARGS, "delta": 0.0}), "delta"),
        (lambda: thm4_bound(10, **{**BOUND_ARGS, "delta": 1.0}), "delta"),
        (lambda: prop12_bound(10, 2, 1.5), "delta"),
        (lambda: thm7_bound(10, 1.0, 1.0, 1.0, 2, 2, -0.1), "delta"),
        (lambda: thm4_bound(0, **BOUND_ARGS), "n"),
        (lambda: prop12_bound(-3, 2, 0.1), "n"),
        (lambda: thm6_bound(torch.tensor([1.0, 0.0]), 1.0, 1.0, 1.0, 2, 2, 0.1), "n"),
        (lambda: thm4_bound(10, **{**BOUND_ARGS, "gamma": 0.0}), "gamma"),
        (lambda: thm14_intermediate_bound(10, 1.0, 1.0, 1.0, -1.0, 2, 2, 0.1), "gamma"),
        (lambda: thm4_bound(10, **{**BOUND_ARGS, "class_size": 0.5}), "class_size"),
        (lambda: thm6_bound(10, 1.0, 1.0, 1.0, 2, 0, 0.1), "reward_class_size"),
        (lambda: thm4_bound(10, **{**BOUND_ARGS, "R": -1.0}), "R"),
        (lambda: thm4_bound(10, **{**BOUND_ARGS, "C_Pi": math.nan}), "C_Pi"),
        (lambda: prop15_factor(0.0), "R"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()
