"""Tests of `synthalign.theory.constants` (spec §3): R of A2, C_Π and C_ℛ (Def. 3), C_0 (Thm 14), `world_constants`."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from _theory_worlds import WORLD_SETTINGS, random_world, worlds
from hypothesis import given
from hypothesis import strategies as st

from synthalign.theory.bounds import prop12_bound, thm4_bound, thm6_bound, thm7_bound, thm14_intermediate_bound
from synthalign.theory.constants import (
    WorldConstants,
    boundedness_constant,
    centred_reward,
    coverage_coefficient,
    coverage_coefficient_pairs,
    coverage_ratios,
    world_constants,
)


def logp_of(probs) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log()


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


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: centred_reward(UNIFORM, MU, gamma=-1.0), "gamma"),
        (lambda: coverage_coefficient(UNIFORM.unsqueeze(0), UNIFORM, MU, ONE_PROMPT, 0.0), "gamma"),
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


@pytest.mark.parametrize(
    ("chunk_size", "pattern"),
    [
        (0, "chunk_size must be an integer >= 1, got 0"),
        (-2, "chunk_size must be an integer >= 1, got -2"),
        (2.5, "chunk_size must be an integer >= 1, got 2.5"),
        (True, "chunk_size must be an integer >= 1, got True"),
        ("4", "chunk_size must be an integer >= 1, got '4'"),
    ],
)
def test_bad_chunk_size_is_refused_by_every_constant(chunk_size, pattern):
    target, behavior, reference, policy_class, dist = random_world(3, members=4, prompts=2, responses=3)
    calls = (
        lambda: boundedness_constant(policy_class, behavior, chunk_size=chunk_size),
        lambda: coverage_ratios(policy_class, target, behavior, dist, 0.8, chunk_size=chunk_size),
        lambda: coverage_coefficient_pairs(policy_class, target, reference, dist, 0.8, chunk_size=chunk_size),
        lambda: world_constants(target, behavior, reference, dist, 0.8, policy_class, chunk_size=chunk_size),
    )
    for call in calls:
        with pytest.raises(ValueError, match=pattern):
            call()


@pytest.mark.parametrize("chunk_size", [np.int64(3), np.int32(3), 3.0])
def test_numpy_and_integral_float_chunk_sizes_match_an_int(chunk_size):
    target, behavior, reference, policy_class, dist = random_world(5, members=7, prompts=2, responses=3)
    policy_class = torch.cat([policy_class, target.unsqueeze(0)])
    expected = world_constants(target, behavior, reference, dist, 0.8, policy_class, policy_class[2:], chunk_size=3)
    got = world_constants(target, behavior, reference, dist, 0.8, policy_class, policy_class[2:], chunk_size=chunk_size)
    assert got == expected
    assert boundedness_constant(policy_class, behavior, chunk_size=chunk_size) == expected.R
