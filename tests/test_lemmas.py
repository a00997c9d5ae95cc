"""Tests of `synthalign.theory.lemmas`: ψ (spec §3) and Lemmas 8–10 (spec §4)."""

from __future__ import annotations

import math

import pytest
import torch
from _theory_worlds import SETTINGS
from hypothesis import given
from hypothesis import strategies as st

from synthalign.theory.lemmas import lemma8_lower, lemma9_factor, lemma9_upper, lemma10_lower, psi

E = math.e


# --------------------------------------------------------------------------- ψ


def test_psi_by_hand():
    assert psi(1.0) == 0.5  # the limit, by the series
    assert psi(E) == pytest.approx(E - 2, rel=1e-14)  # (e − 1 − 1)/1²
    assert psi(1 / E) == pytest.approx(1 / E, rel=1e-14)  # (1/e − 1 + 1)/(−1)²
    assert psi(E**2) == pytest.approx((E**2 - 3) / 4, rel=1e-14)  # (e² − 1 − 2)/2²


def test_psi_is_continuous_at_one_and_at_the_series_switch():
    # ψ(e^t) = ½ + t/6 + t²/24 + …
    for t in (1e-12, -1e-12, 1e-6, -1e-6):
        assert psi(math.exp(t)) == pytest.approx(0.5 + t / 6 + t * t / 24, rel=1e-14)
    for t in (0.1, -0.1):
        below, above = psi(math.exp(t * (1 - 1e-9))), psi(math.exp(t * (1 + 1e-9)))
        assert abs(above - below) < 1e-9


def test_psi_tensor_matches_float_and_limits():
    z = torch.tensor([1e-300, 0.5, 1.0, 2.0, math.inf], dtype=torch.float64)
    values = psi(z)
    assert isinstance(values, torch.Tensor)
    assert values[2] == 0.5 and values[-1] == math.inf
    # z = 1e-300: t = ln z = −690.7755, ψ = (z − 1 − t)/t² ≈ 689.7755 / 690.7755² = 0.00144555
    assert values[0].item() == pytest.approx(689.7755 / 690.7755**2, rel=1e-6)
    assert values[1].item() == psi(0.5) and values[3].item() == psi(2.0)


def test_psi_is_increasing_on_a_grid():
    z = torch.logspace(-12, 12, 20001, dtype=torch.float64)
    values = psi(z)
    assert (values.diff() >= 0).all()


@SETTINGS
@given(st.floats(-30, 30), st.floats(1e-6, 10))
def test_psi_is_increasing(t, step):
    assert psi(math.exp(t)) <= psi(math.exp(t + step))


@SETTINGS
@given(st.floats(1e-3, 50.0))
def test_psi_of_e4r_is_below_spec_note(radius):
    # spec §3: (½ ∨ ψ(e^{4R})) ≤ e^{4R}/(16R²).
    # ψ(e^{4R}) = (e^{4R} − 1 − 4R)/(16R²): the margin (1 + 4R)/(16R²) drops below one ulp of e^{4R}
    # for large R, hence the relative slack of a few ulps.
    z = torch.tensor(4 * radius, dtype=torch.float64).exp()
    ceiling = z / (16 * radius**2) * (1 + 1e-13)
    assert psi(z) <= ceiling
    assert lemma9_factor(z) <= ceiling


def test_lemma9_factor_by_hand():
    assert lemma9_factor(1.0) == 0.5
    assert lemma9_factor(0.5) == 0.5  # ψ(0.5) = 0.4427 < ½
    assert lemma9_factor(E) == pytest.approx(E - 2)


# --------------------------------------------------------------------------- Lemmas 8, 9, 10


def sigmoid_gap(a: float, b: float) -> float:
    """|σ(a) − σ(b)| = |sinh((a − b)/2)| / (2 cosh(a/2) cosh(b/2)), without cancellation."""
    return abs(math.sinh((a - b) / 2)) / (2 * math.cosh(a / 2) * math.cosh(b / 2))


@SETTINGS
@given(st.floats(-30, 30), st.floats(-30, 30))
def test_lemma8_holds(a, b):
    assert sigmoid_gap(a, b) >= lemma8_lower(a, b) * (1 - 1e-12)


def test_lemma8_half_slope_fails_near_zero():
    # |σ(0.001) − σ(0)| = 0.000249999979; ½ e^{−0.001} · 0.001 = 0.000499500 > gap (the Decision's
    # counterexample), while Lemma 8's ¼ e^{−0.001} · 0.001 = 0.000249750 ≤ gap.
    gap = sigmoid_gap(0.001, 0.0)
    assert gap == pytest.approx(0.000249999979, rel=1e-8)
    assert lemma8_lower(0.001, 0.0) <= gap
    assert 2 * lemma8_lower(0.001, 0.0) > gap


def test_lemma8_tensor():
    a = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    # ¼ e^{−2} · |−2 − 0| = 0.5 e^{−2} at the last entry
    torch.testing.assert_close(lemma8_lower(a, 0.0)[-1], torch.tensor(0.5 * math.exp(-2), dtype=torch.float64))


def kl_integrand(t: float) -> float:
    """r − 1 − ln r at r = e^t."""
    return math.expm1(t) - t


@SETTINGS
@given(st.floats(1e-6, 12.0), st.floats(0.0, 1.0), st.floats(0.0, 25.0))
def test_lemma9_holds(log_r_max, fraction, below):
    # r = e^t for t ∈ [−25, ln r_max]
    t = log_r_max * fraction if below < 1.0 else -below
    r, r_max = math.exp(t), math.exp(log_r_max)
    upper = lemma9_upper(r, r_max)
    assert kl_integrand(t) <= upper * (1 + 1e-12) + 1e-15 * abs(t)
    # the cruder form of Lemma 9
    assert upper <= r_max / log_r_max**2 * t * t * (1 + 1e-12)


def test_lemma9_is_tight_at_r_max():
    # r = r_max = e: r − 1 − ln r = e − 2 = ψ(e) · 1².
    assert lemma9_upper(E, E) == pytest.approx(E - 2, rel=1e-14)


@SETTINGS
@given(st.floats(-18.0, -1e-6), st.floats(0.0, 20.0))
def test_lemma10_holds(log_r_min, above):
    r_min = math.exp(log_r_min)
    t = log_r_min + above
    assert kl_integrand(t) >= lemma10_lower(math.exp(t), r_min) * (1 - 1e-12) - 1e-15 * abs(t)


def test_lemma10_is_tight_at_one_over_e():
    # r = r_min = 1/e: r − 1 − ln r = 1/e and (ln r)²/(e · 1) = 1/e.
    assert lemma10_lower(1 / E, 1 / E) == pytest.approx(kl_integrand(-1.0), rel=1e-14)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: psi(0.0), "z"),
        (lambda: lemma9_upper(3.0, 2.0), "r"),
        (lambda: lemma9_upper(0.5, 1.0), "r_max"),
        (lambda: lemma10_lower(0.1, 0.5), "r"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()
