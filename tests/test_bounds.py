"""Tests for synthalign.bounds: constants (A2, Def. 3, Thm 14), ψ, Lemmas 8–10 and the theorem bounds."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synthalign.bounds import (
    WorldConstants,
    boundedness_constant,
    centred_reward,
    coverage_coefficient,
    coverage_coefficient_pairs,
    coverage_ratios,
    lemma8_lower,
    lemma9_factor,
    lemma9_upper,
    lemma10_lower,
    prop12_bound,
    prop15_factor,
    psi,
    thm4_bound,
    thm6_bound,
    thm7_bound,
    thm14_intermediate_bound,
    world_constants,
)

E = math.e
SETTINGS = settings(max_examples=60, deadline=None)
WORLD_SETTINGS = settings(max_examples=30, deadline=None)


def logp_of(probs) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log()


def random_logp(generator: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    logits = scale * torch.randn(*shape, generator=generator, dtype=torch.float64)
    return torch.log_softmax(logits, dim=-1)


def random_world(seed: int, members: int, prompts: int, responses: int, scale: float = 1.0):
    generator = torch.Generator().manual_seed(seed)
    target = random_logp(generator, prompts, responses, scale=scale)
    behavior = random_logp(generator, prompts, responses, scale=scale)
    reference = random_logp(generator, prompts, responses, scale=scale)
    policy_class = random_logp(generator, members, prompts, responses, scale=scale)
    prompt_dist = torch.softmax(torch.randn(prompts, generator=generator, dtype=torch.float64), dim=0)
    return target, behavior, reference, policy_class, prompt_dist


worlds = st.builds(
    random_world,
    seed=st.integers(0, 2**31 - 1),
    members=st.integers(2, 6),
    prompts=st.integers(1, 4),
    responses=st.integers(2, 5),
    scale=st.floats(0.1, 3.0),
)


# Two-response world used by several hand computations.  With μ = (m, 1 − m) and
# d = ln π − ln π*, ΔR̄/γ = d − E_μ d is (1 − m)L at a1 and −mL at a2, L = d1 − d2, so
#   E_{π*}[ΔR̄²] / E_μ[ΔR̄²] = [p(1 − m)² + (1 − p)m²] / [m(1 − m)]   (p = π*(a1)),
# the same for every member ≠ π*.
MU = logp_of([[0.2, 0.8]])
UNIFORM = logp_of([[0.5, 0.5]])
ONE_PROMPT = torch.tensor([1.0], dtype=torch.float64)


# --------------------------------------------------------------------------- centred reward and A2


def test_centred_reward_two_responses_by_hand():
    # E_μ ln π = 0.2 ln 0.8 + 0.8 ln 0.2 = −0.044629 − 1.287550 = −1.332179
    # R̄(a1) = 0.5 (ln 0.8 + 1.332179) = 0.5 · 1.109035 = 0.554518   (= γ(1 − m) ln 4)
    # R̄(a2) = 0.5 (ln 0.2 + 1.332179) = 0.5 · (−0.277259) = −0.138629   (= −γ m ln 4)
    reward = centred_reward(logp_of([[0.8, 0.2]]), MU, gamma=0.5)
    expected = torch.tensor([[0.4 * math.log(4), -0.1 * math.log(4)]], dtype=torch.float64)
    torch.testing.assert_close(reward, expected, rtol=1e-12, atol=1e-12)


def test_centred_reward_zero_probability_is_minus_inf():
    # μ = (1, 0): E_μ ln π = ln 1 = 0, so R̄ = γ ln π = (0, −inf).
    reward = centred_reward(logp_of([[1.0, 0.0]]), logp_of([[1.0, 0.0]]), gamma=2.0)
    assert reward[0, 0] == 0.0 and reward[0, 1] == -math.inf


@WORLD_SETTINGS
@given(worlds, st.floats(0.05, 5.0))
def test_centred_reward_identities(world, gamma):
    target, behavior, _, policy_class, _ = world
    reward = centred_reward(policy_class, behavior, gamma)
    # μ-centred: E_μ R̄ = 0.
    torch.testing.assert_close((behavior.exp() * reward).sum(-1), torch.zeros(reward.shape[:-1], dtype=torch.float64))
    # spec §6.10: Z_π(x) = Σ_a e^{R̄/γ} = exp(−E_μ ln π).
    normalizer = torch.exp(reward / gamma).sum(-1)
    torch.testing.assert_close(normalizer, torch.exp(-(behavior.exp() * policy_class).sum(-1)))


def test_boundedness_two_responses_by_hand():
    # centred ln π at (a1, a2) is ((1 − m), −m) · logit π(a1); with m = 0.2:
    # (0.8, 0.2): 0.8 ln 4 = 1.109035;  (0.3, 0.7): 0.8 |ln(3/7)| = 0.677827;  π* = (0.5, 0.5): 0.
    policy_class = logp_of([[[0.5, 0.5]], [[0.8, 0.2]], [[0.3, 0.7]]])
    assert boundedness_constant(policy_class, MU) == pytest.approx(0.8 * math.log(4), rel=1e-12)


def test_boundedness_behavior_zero_probability_is_allowed():
    # μ = (1, 0): centre ln 0.8, so centred values (0, ln 0.2 − ln 0.8) → R = ln 4.
    value = boundedness_constant(logp_of([[[0.8, 0.2]]]), logp_of([[1.0, 0.0]]))
    assert value == pytest.approx(math.log(4), rel=1e-12)


@pytest.mark.parametrize("behavior", [[[0.5, 0.5]], [[1.0, 0.0]]])
def test_boundedness_member_zero_probability_is_infinite(behavior):
    # Zero anywhere (inside or outside μ's support) violates A2 for every finite R.
    policy_class = logp_of([[[0.5, 0.5]], [[1.0, 0.0]]])
    assert boundedness_constant(policy_class, logp_of(behavior)) == math.inf


@WORLD_SETTINGS
@given(worlds, st.floats(0.05, 5.0))
def test_a2_bounds_centred_reward_and_normalizer(world, gamma):
    _, behavior, _, policy_class, _ = world
    radius = boundedness_constant(policy_class, behavior)
    reward = centred_reward(policy_class, behavior, gamma)
    assert reward.abs().max().item() <= gamma * radius * (1 + 1e-12)
    # spec §4: |A| e^{−R} ≤ Z_π(x) ≤ |A| e^{R}.
    normalizer = torch.exp(reward / gamma).sum(-1)
    responses = policy_class.shape[-1]
    assert (normalizer >= responses * math.exp(-radius) * (1 - 1e-12)).all()
    assert (normalizer <= responses * math.exp(radius) * (1 + 1e-12)).all()


# --------------------------------------------------------------------------- coverage


def test_coverage_two_responses_by_hand():
    # p = 0.5, m = 0.2: [0.5 · 0.64 + 0.5 · 0.04] / [0.2 · 0.8] = 0.34 / 0.16 = 2.125 for every member ≠ π*;
    # π* itself is 0/0 and skipped.
    policy_class = logp_of([[[0.5, 0.5]], [[0.8, 0.2]], [[0.3, 0.7]]])
    ratios = coverage_ratios(policy_class, UNIFORM, MU, ONE_PROMPT, gamma=0.7)
    assert math.isnan(ratios[0])
    torch.testing.assert_close(ratios[1:], torch.full((2,), 2.125, dtype=torch.float64))
    assert coverage_coefficient(policy_class, UNIFORM, MU, ONE_PROMPT, gamma=0.7) == pytest.approx(2.125, rel=1e-12)


def test_coverage_two_prompts_by_hand():
    # 𝒟 = (½, ½), π* uniform, μ = (0.2, 0.8) at x1 and (0.5, 0.5) at x2.
    # Per prompt, E_{π*}[(ΔR̄/γ)²] = [p(1 − m)² + (1 − p)m²] L² and E_μ = m(1 − m) L²:
    #   x1: 0.34 L², 0.16 L²;   x2: 0.25 L², 0.25 L².
    # member A moves both prompts to (0.8, 0.2) (L = ln 4 at both):
    #   (½ 0.34 + ½ 0.25) / (½ 0.16 + ½ 0.25) = 0.295 / 0.205 = 1.439024
    # member B moves only x1: 0.34 / 0.16 = 2.125.
    target = logp_of([[0.5, 0.5], [0.5, 0.5]])
    behavior = logp_of([[0.2, 0.8], [0.5, 0.5]])
    policy_class = logp_of([[[0.8, 0.2], [0.8, 0.2]], [[0.8, 0.2], [0.5, 0.5]]])
    dist = torch.tensor([0.5, 0.5], dtype=torch.float64)
    ratios = coverage_ratios(policy_class, target, behavior, dist, gamma=1.0)
    torch.testing.assert_close(ratios, torch.tensor([0.295 / 0.205, 2.125], dtype=torch.float64))
    assert coverage_coefficient(policy_class, target, behavior, dist, gamma=1.0) == pytest.approx(2.125)


def test_coverage_zero_denominator_is_infinite():
    # μ = (1, 0): ΔR̄ = (0, γ(d2 − d1)), so E_μ[ΔR̄²] = 0 while E_{π*}[ΔR̄²] = ½ γ² ln(4)² > 0.
    policy_class = logp_of([[[0.8, 0.2]]])
    value = coverage_coefficient(policy_class, UNIFORM, logp_of([[1.0, 0.0]]), ONE_PROMPT, gamma=1.0)
    assert value == math.inf


def test_coverage_member_with_zero_on_supports_is_infinite():
    # ln π − ln π* = −inf at a2, where μ and π* both look: ΔR̄ is undefined, no finite C.
    policy_class = logp_of([[[1.0, 0.0]], [[0.8, 0.2]]])
    assert coverage_ratios(policy_class, UNIFORM, MU, ONE_PROMPT, gamma=1.0)[0] == math.inf


def test_coverage_trivial_class_is_zero():
    assert coverage_coefficient(UNIFORM.unsqueeze(0), UNIFORM, MU, ONE_PROMPT, gamma=1.0) == 0.0


@WORLD_SETTINGS
@given(worlds)
def test_coverage_with_behavior_equal_to_target_is_one(world):
    target, _, _, policy_class, dist = world
    value = coverage_coefficient(policy_class, target, target, dist, gamma=0.5)
    assert value == pytest.approx(1.0, rel=1e-9)


@WORLD_SETTINGS
@given(worlds, st.floats(0.01, 10.0), st.floats(0.01, 10.0))
def test_coverage_does_not_depend_on_gamma(world, gamma_a, gamma_b):
    target, behavior, _, policy_class, dist = world
    ratios_a = coverage_ratios(policy_class, target, behavior, dist, gamma_a)
    ratios_b = coverage_ratios(policy_class, target, behavior, dist, gamma_b)
    torch.testing.assert_close(ratios_a, ratios_b, rtol=1e-9, atol=0.0)


@WORLD_SETTINGS
@given(worlds)
def test_coverage_of_subclass_is_smaller(world):
    # A5: 𝒫_γ(ℛ) ⊆ Π ⇒ C_ℛ ≤ C_Π.
    target, behavior, _, policy_class, dist = world
    whole = coverage_coefficient(policy_class, target, behavior, dist, 1.0)
    part = coverage_coefficient(policy_class[:1], target, behavior, dist, 1.0)
    assert 0.0 <= part <= whole


def reference_ratio(logp_a, logp_b, target, behavior, weighting, dist, gamma):
    """Slow, loop-based E_{π*}[(γ(d − E_μ d))²] / E_weighting[...], d = ln π_a − ln π_b."""
    numerator = denominator = 0.0
    for x in range(target.shape[0]):
        d = [gamma * (logp_a[x, a].item() - logp_b[x, a].item()) for a in range(target.shape[1])]
        centre = sum(math.exp(behavior[x, a].item()) * d[a] for a in range(target.shape[1]))
        for a in range(target.shape[1]):
            numerator += dist[x].item() * math.exp(target[x, a].item()) * (d[a] - centre) ** 2
            denominator += dist[x].item() * math.exp(weighting[x, a].item()) * (d[a] - centre) ** 2
    return numerator / denominator


def test_coverage_matches_loop_reference():
    target, behavior, reference, policy_class, dist = random_world(3, members=5, prompts=3, responses=4)
    expected = [reference_ratio(m, target, target, behavior, behavior, dist, 0.3) for m in policy_class]
    got = coverage_ratios(policy_class, target, behavior, dist, 0.3)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=0.0)
    pairs = [
        reference_ratio(policy_class[i], policy_class[j], target, behavior, reference, dist, 0.3)
        for i, j in itertools.combinations(range(5), 2)
    ]
    c_0 = coverage_coefficient_pairs(policy_class, target, reference, dist, 0.3, behavior_logp=behavior)
    assert c_0 == pytest.approx(max(pairs), rel=1e-10)


def test_pairs_two_responses_by_hand():
    # μ = π0-independent centring with m = 0.2; π* = (0.9, 0.1), π0 = (0.5, 0.5):
    #   numerator   0.9 · 0.8² + 0.1 · 0.2² = 0.576 + 0.004 = 0.58
    #   denominator 0.5 · 0.8² + 0.5 · 0.2² = 0.32 + 0.02 = 0.34   → C_0 = 0.58 / 0.34 = 1.705882 (every pair).
    target = logp_of([[0.9, 0.1]])
    policy_class = logp_of([[[0.9, 0.1]], [[0.6, 0.4]], [[0.3, 0.7]]])
    value = coverage_coefficient_pairs(policy_class, target, UNIFORM, ONE_PROMPT, 1.0, behavior_logp=MU)
    assert value == pytest.approx(0.58 / 0.34, rel=1e-12)


def test_pairs_reference_centring_by_hand():
    # Same class; d = ln π − ln π' for the pair (0.9, 0.1) vs (0.6, 0.4): d = (ln 1.5, ln 0.25) =
    # (0.405465, −1.386294).  Centred under π0 = (½, ½): c = −0.490415, d − c = (0.895880, −0.895880),
    # so numerator = denominator = 0.802601 (both weights sum to 1): ratio 1 for every pair (d − c is
    # ±k with two responses).  Centred under μ the same pair gives 0.58/0.34 (the test above).
    target = logp_of([[0.9, 0.1]])
    policy_class = logp_of([[[0.9, 0.1]], [[0.6, 0.4]], [[0.3, 0.7]]])
    under_mu = coverage_coefficient_pairs(policy_class, target, UNIFORM, ONE_PROMPT, 1.0, behavior_logp=MU)
    under_pi0 = coverage_coefficient_pairs(
        policy_class, target, UNIFORM, ONE_PROMPT, 1.0, behavior_logp=MU, centring="reference"
    )
    assert under_pi0 == pytest.approx(1.0, rel=1e-12)
    assert under_mu == pytest.approx(0.58 / 0.34, rel=1e-12)
    with pytest.raises(ValueError, match="centring"):
        coverage_coefficient_pairs(policy_class, target, UNIFORM, ONE_PROMPT, 1.0, centring="pi")


def test_world_constants_report_both_centrings_of_c0():
    target, behavior, reference, policy_class, dist = random_world(4, members=4, prompts=2, responses=3)
    constants = world_constants(target, behavior, reference, dist, 0.5, policy_class)
    assert constants.C_0 == coverage_coefficient_pairs(
        policy_class, target, reference, dist, 0.5, behavior_logp=behavior
    )
    assert constants.C_0_reference == coverage_coefficient_pairs(
        policy_class, target, reference, dist, 0.5, centring="reference"
    )
    assert constants.C_0 != constants.C_0_reference  # mu != pi0 here
    same = world_constants(target, reference, reference, dist, 0.5, policy_class)
    assert same.C_0 == same.C_0_reference


def test_pairs_default_centring_is_reference():
    target, _, reference, policy_class, dist = random_world(5, members=4, prompts=2, responses=3)
    implicit = coverage_coefficient_pairs(policy_class, target, reference, dist, 1.0)
    explicit = coverage_coefficient_pairs(policy_class, target, reference, dist, 1.0, behavior_logp=reference)
    assert implicit == explicit


@WORLD_SETTINGS
@given(worlds)
def test_pairs_dominate_single_coverage_when_reference_is_behavior(world):
    # With π* ∈ Π and π0 = μ, the pairs (π, π*) reproduce Def. 3's ratios, so C_0 ≥ C_Π.
    target, behavior, _, policy_class, dist = world
    policy_class = torch.cat([policy_class, target.unsqueeze(0)])
    c_pi = coverage_coefficient(policy_class, target, behavior, dist, 1.0)
    c_0 = coverage_coefficient_pairs(policy_class, target, behavior, dist, 1.0)
    assert c_0 >= c_pi * (1 - 1e-12)


def test_pairs_of_single_member_is_zero():
    assert coverage_coefficient_pairs(UNIFORM.unsqueeze(0), UNIFORM, MU, ONE_PROMPT, 1.0) == 0.0


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 50])
def test_chunked_equals_unchunked(chunk_size):
    target, behavior, reference, policy_class, dist = random_world(11, members=7, prompts=3, responses=4)
    policy_class = torch.cat([policy_class, target.unsqueeze(0)])  # one 0/0 member
    assert boundedness_constant(policy_class, behavior, chunk_size=chunk_size) == pytest.approx(
        boundedness_constant(policy_class, behavior), rel=1e-14
    )
    torch.testing.assert_close(
        coverage_ratios(policy_class, target, behavior, dist, 0.5, chunk_size=chunk_size),
        coverage_ratios(policy_class, target, behavior, dist, 0.5),
        rtol=1e-13,
        atol=0.0,
        equal_nan=True,
    )
    assert coverage_coefficient_pairs(
        policy_class, target, reference, dist, 0.5, chunk_size=chunk_size
    ) == pytest.approx(coverage_coefficient_pairs(policy_class, target, reference, dist, 0.5), rel=1e-13)


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


# --------------------------------------------------------------------------- world constants


def hand_world():
    # π* = π0 = (0.5, 0.5), μ = (0.2, 0.8), Π = {π*, (0.8, 0.2), (0.3, 0.7)}, 𝒫_γ(ℛ) = {π*, (0.8, 0.2)}.
    policy_class = logp_of([[[0.5, 0.5]], [[0.8, 0.2]], [[0.3, 0.7]]])
    return dict(
        target_logp=UNIFORM,
        behavior_logp=MU,
        reference_logp=UNIFORM,
        prompt_dist=ONE_PROMPT,
        gamma=0.5,
        policy_class_logp=policy_class,
        reward_class_logp=policy_class[:2],
    )


def test_world_constants_by_hand():
    # R = 0.8 ln 4 (member (0.8, 0.2)); C_Π = C_ℛ = 2.125 (see test_coverage_two_responses_by_hand);
    # C_0: π* = π0, so numerator and denominator weights agree and every pair has ratio 1.
    constants = world_constants(**hand_world())
    assert constants.R == pytest.approx(0.8 * math.log(4), rel=1e-12)
    assert constants.C_Pi == pytest.approx(2.125, rel=1e-12)
    assert constants.C_R == pytest.approx(2.125, rel=1e-12)
    assert constants.C_0 == pytest.approx(1.0, rel=1e-12)
    assert (constants.class_size, constants.reward_class_size, constants.gamma) == (3, 2, 0.5)
    assert constants.realizable
    with pytest.raises(dataclasses.FrozenInstanceError):
        constants.R = 0.0  # type: ignore[misc]


def test_world_constants_bound_dispatch():
    constants = world_constants(**hand_world())
    R, C_Pi, C_R, C_0 = constants.R, constants.C_Pi, constants.C_R, constants.C_0
    for corrected in (True, False):
        assert constants.bound("prop12", 50, 0.05) == prop12_bound(50, 3, 0.05)
        assert constants.bound("thm4", 50, 0.05, corrected=corrected) == thm4_bound(
            50, R, C_Pi, 0.5, 3, 0.05, corrected=corrected
        )
        assert constants.bound("thm6", 50, 0.05, corrected=corrected) == thm6_bound(
            50, R, C_Pi, 0.5, 3, 2, 0.05, corrected=corrected
        )
        assert constants.bound("thm14", 50, 0.05, corrected=corrected) == thm14_intermediate_bound(
            50, R, C_0, C_R, 0.5, 3, 2, 0.05, corrected=corrected
        )
        assert constants.bound("thm7", 50, 0.05, corrected=corrected) == thm7_bound(
            50, R, C_R, 0.5, 3, 2, 0.05, corrected=corrected
        )


def test_world_constants_without_optional_parts():
    world = hand_world()
    world["reward_class_logp"] = None
    constants = world_constants(**world, compute_c0=False)
    assert constants.C_R is None and constants.C_0 is None and constants.reward_class_size is None
    for theorem in ("thm6", "thm7", "thm14"):
        with pytest.raises(ValueError, match="reward_class_logp"):
            constants.bound(theorem, 10, 0.1)
    with pytest.raises(ValueError, match="theorem"):
        constants.bound("thm5", 10, 0.1)
    partial = WorldConstants(R=1.0, C_Pi=1.0, C_R=1.0, C_0=None, class_size=2, reward_class_size=2, gamma=1.0)
    with pytest.raises(ValueError, match="C_0"):
        partial.bound("thm14", 10, 0.1)


def test_world_constants_not_realizable_and_radius_includes_target():
    world = hand_world()
    world["policy_class_logp"] = world["policy_class_logp"][1:]
    world["target_logp"] = logp_of([[0.9, 0.1]])
    constants = world_constants(**world)
    # π* = (0.9, 0.1) is not in Π; its centred log-probability 0.8 ln 9 = 1.757780 sets R.
    assert not constants.realizable
    assert constants.R == pytest.approx(0.8 * math.log(9), rel=1e-12)


def test_world_constants_matches_functions_on_random_world():
    target, behavior, reference, policy_class, dist = random_world(7, members=6, prompts=3, responses=4)
    policy_class = torch.cat([policy_class, target.unsqueeze(0)])
    reward_class = policy_class[2:]
    constants = world_constants(target, behavior, reference, dist, 0.8, policy_class, reward_class, chunk_size=2)
    assert constants.C_Pi == pytest.approx(coverage_coefficient(policy_class, target, behavior, dist, 0.8))
    assert constants.C_R == pytest.approx(coverage_coefficient(reward_class, target, behavior, dist, 0.8))
    assert constants.C_0 == pytest.approx(
        coverage_coefficient_pairs(policy_class, target, reference, dist, 0.8, behavior_logp=behavior)
    )
    assert constants.R == pytest.approx(boundedness_constant(policy_class, behavior))
    assert constants.realizable and constants.C_R <= constants.C_Pi


# --------------------------------------------------------------------------- bad input

UNNORMALIZED = logp_of([[[0.5, 0.6]]])
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
        (lambda: centred_reward(UNIFORM, MU, gamma=-1.0), "gamma"),
        (lambda: coverage_coefficient(UNIFORM.unsqueeze(0), UNIFORM, MU, ONE_PROMPT, 0.0), "gamma"),
        (lambda: thm4_bound(10, **{**BOUND_ARGS, "class_size": 0.5}), "class_size"),
        (lambda: thm6_bound(10, 1.0, 1.0, 1.0, 2, 0, 0.1), "reward_class_size"),
        (lambda: thm4_bound(10, **{**BOUND_ARGS, "R": -1.0}), "R"),
        (lambda: thm4_bound(10, **{**BOUND_ARGS, "C_Pi": math.nan}), "C_Pi"),
        (lambda: prop15_factor(0.0), "R"),
        (lambda: boundedness_constant(UNNORMALIZED, MU), "class_logp"),
        (lambda: boundedness_constant(UNIFORM, MU), "class_logp"),  # [X, A] where [K, X, A] is needed
        (lambda: boundedness_constant(logp_of([[[0.5, 0.5], [0.5, 0.5]]]), MU), "class_logp"),
        (lambda: boundedness_constant(UNIFORM.unsqueeze(0), logp_of([[0.2, 0.9]])), "behavior_logp"),
        (lambda: boundedness_constant(UNIFORM.unsqueeze(0), MU, chunk_size=0), "chunk_size"),
        (lambda: coverage_coefficient(UNNORMALIZED, UNIFORM, MU, ONE_PROMPT, 1.0), "class_logp"),
        (lambda: coverage_coefficient(UNIFORM.unsqueeze(0), logp_of([[1 / 3] * 3]), MU, ONE_PROMPT, 1.0), "class_logp"),
        (lambda: coverage_coefficient(UNIFORM.unsqueeze(0), UNIFORM, MU, torch.tensor([0.5, 0.5]), 1.0), "prompt_dist"),
        (lambda: coverage_coefficient(UNIFORM.unsqueeze(0), UNIFORM, MU, torch.tensor([0.9]), 1.0), "prompt_dist"),
        (
            lambda: coverage_coefficient(UNIFORM.unsqueeze(0), torch.full((1, 2), math.nan), MU, ONE_PROMPT, 1.0),
            "target_logp",
        ),
        (
            lambda: coverage_coefficient_pairs(UNIFORM.unsqueeze(0), UNIFORM, logp_of([[0.1, 0.1]]), ONE_PROMPT, 1.0),
            "reference_logp",
        ),
        (lambda: centred_reward(torch.tensor([[math.inf, 0.0]]), MU, 1.0), "logp"),
        (lambda: psi(0.0), "z"),
        (lambda: lemma9_upper(3.0, 2.0), "r"),
        (lambda: lemma9_upper(0.5, 1.0), "r_max"),
        (lambda: lemma10_lower(0.1, 0.5), "r"),
        (lambda: world_constants(UNIFORM, MU, UNIFORM, ONE_PROMPT, 1.0, UNNORMALIZED), "policy_class_logp"),
        (
            lambda: world_constants(UNIFORM, MU, UNIFORM, ONE_PROMPT, 1.0, UNIFORM.unsqueeze(0), UNNORMALIZED),
            "reward_class_logp",
        ),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()
