"""Preference laws (synthalign.worlds.laws): validity, the BT default unchanged, worlds and samplers under a law."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import synthalign as sa
from synthalign.worlds.laws import BradleyTerry, GeneralLaw, LinkLaw, check_preference_matrix, thurstone
from synthalign.worlds.preferences import preference_matrix


def _world(seed=0):
    return sa.World.random(3, 4, seed=seed)


LAWS = {
    "bt": BradleyTerry(),
    "probit": LinkLaw("probit"),
    "cauchit": LinkLaw("cauchit", scale=2.0),
    "thurstone": thurstone(noise=0.5),
    "random": GeneralLaw.random(3, 4, seed=3),
    "ties": GeneralLaw.random(3, 4, tie_fraction=0.5, seed=4),
    "cyclic": GeneralLaw.cyclic(3, 4, strength=1.5, cycle_length=3, transitive_scale=0.3, seed=5),
}


@pytest.mark.parametrize("name", sorted(LAWS))
def test_law_is_a_preference_matrix_and_its_population_law_sums_to_one(name):
    world = _world().replace(law=LAWS[name])
    matrix = preference_matrix(world)
    assert matrix.shape == (3, 4, 4)
    # P + Pᵀ = 1 to the rounding of one float64 subtraction, and the diagonal is exactly a tie.
    assert float((matrix + matrix.transpose(-1, -2) - 1).abs().max()) <= 1e-15
    assert torch.all(torch.diagonal(matrix, dim1=-2, dim2=-1) == 0.5)
    law = world.population_preferences().counts
    assert float(law.sum()) == pytest.approx(1.0, abs=1e-14)
    # Labelled law marginalized over labels is the pair law D mu mu (each unordered draw counted once).
    labelled = law[0] + law[0].transpose(-1, -2)
    pairs = sa.population_pairs(world).counts[0]
    expected = pairs + pairs.transpose(-1, -2)
    assert torch.allclose(labelled, expected, rtol=0, atol=1e-15)


def test_bradley_terry_law_reproduces_the_default_world_exactly():
    for seed in range(3):
        world = sa.World.random(4, 5, seed=seed, zero_fraction=0.3)
        explicit = world.replace(law=BradleyTerry())
        assert torch.equal(world.population_preferences().counts, explicit.population_preferences().counts)
        a = world.sample_preferences(1000, 3, seed=seed).counts
        b = explicit.sample_preferences(1000, 3, seed=seed).counts
        assert torch.equal(a, b)


def test_link_laws_hand_values():
    # pi* = (0.8, 0.2), gamma = 0.5: margin t = 0.5 ln 4 = 0.6931.
    world = sa.World.from_tensors(target=[[0.8, 0.2]], reference=[[0.5, 0.5]], gamma=0.5)
    t = 0.5 * math.log(4.0)
    values = {
        "logistic": 1 / (1 + math.exp(-t)),  # σ(0.693) = 2/3
        "probit": 0.5 * (1 + math.erf(t / math.sqrt(2))),  # Φ(0.693) = 0.7560
        "cauchit": 0.5 + math.atan(t) / math.pi,  # 0.5 + 0.6061/π = 0.6929
    }
    for link, value in values.items():
        assert float(LinkLaw(link).matrix(world)[0, 0, 1]) == pytest.approx(value, rel=1e-14)
    # Thurstone with noise sigma: Φ(t / (σ√2)); σ = 1/√2 makes it Φ(t).
    assert float(thurstone(noise=1 / math.sqrt(2)).matrix(world)[0, 0, 1]) == pytest.approx(values["probit"], rel=1e-14)


def test_cyclic_law_is_rock_paper_scissors_and_has_no_condorcet_winner():
    law = GeneralLaw.cyclic(1, 3, strength=2.0)
    p = law.probs[0]
    s = 1 / (1 + math.exp(-2.0))
    assert float(p[0, 1]) == pytest.approx(s, rel=1e-15)
    assert float(p[1, 2]) == pytest.approx(s, rel=1e-15)
    assert float(p[2, 0]) == pytest.approx(s, rel=1e-15)
    # No response beats every other one with probability > 1/2.
    beats = (p > 0.5).sum(-1)
    assert int(beats.max()) == 1


def test_ties_are_exact_halves():
    law = GeneralLaw.random(5, 6, tie_fraction=1.0, seed=1)
    assert torch.all(law.probs == 0.5)
    none = GeneralLaw.random(5, 6, tie_fraction=0.0, seed=1)
    off_diagonal = ~torch.eye(6, dtype=torch.bool)
    assert torch.all(none.probs[:, off_diagonal] != 0.5)


def test_invalid_laws_raise_naming_the_argument():
    bad = torch.full((1, 2, 2), 0.5, dtype=torch.float64)
    bad[0, 0, 1] = 0.7  # P + Pᵀ = 1.2 on that pair
    with pytest.raises(ValueError, match="P \\+ Pᵀ = 1"):
        GeneralLaw(bad)
    with pytest.raises(ValueError, match="link"):
        LinkLaw("tanh")
    with pytest.raises(ValueError, match="law"):
        _world().replace(law="bt")
    with pytest.raises(ValueError, match="shape"):
        _world().replace(law=GeneralLaw.random(2, 4))
    with pytest.raises(ValueError, match="cycle_length"):
        GeneralLaw.cyclic(1, 4, cycle_length=5)
    with pytest.raises(ValueError, match="matrix"):
        check_preference_matrix(torch.zeros(3))


@pytest.mark.parametrize(
    ("constructor", "kwargs", "pattern"),
    [
        ("random", {"n_prompts": 0}, "n_prompts must be an integer >= 1, got 0"),
        ("random", {"n_prompts": 2.5}, "n_prompts must be an integer >= 1, got 2.5"),
        ("random", {"n_responses": 1}, "n_responses must be an integer >= 2, got 1"),
        ("random", {"n_responses": True}, "n_responses must be an integer >= 2, got True"),
        ("random", {"n_responses": "4"}, "n_responses must be an integer >= 2"),
        ("random", {"seed": -1}, "seed must be an integer >= 0, got -1"),
        ("random", {"seed": 1.5}, "seed must be an integer >= 0, got 1.5"),
        ("random", {"dtype": torch.int64}, "dtype must be torch.float16 or"),
        ("cyclic", {"n_prompts": 0}, "n_prompts must be an integer >= 1, got 0"),
        ("cyclic", {"n_prompts": 1.5}, "n_prompts must be an integer >= 1, got 1.5"),
        # A cycle needs k >= 3 responses, so A >= 3.
        ("cyclic", {"n_responses": 2}, "n_responses must be an integer >= 3, got 2"),
        ("cyclic", {"n_responses": None}, "n_responses must be an integer >= 3, got None"),
        ("cyclic", {"n_responses": 5, "cycle_length": 2}, "cycle_length must be an integer >= 3, got 2"),
        ("cyclic", {"n_responses": 5, "cycle_length": 3.5}, "cycle_length must be an integer >= 3, got 3.5"),
        ("cyclic", {"n_responses": 4, "cycle_length": 5}, "cycle_length must lie in \\[3, n_responses=4\\], got 5"),
        ("cyclic", {"seed": -2}, "seed must be an integer >= 0, got -2"),
        ("cyclic", {"dtype": torch.bool}, "dtype must be torch.float16 or"),
        ("cyclic", {"transitive_scale": math.inf}, "transitive_scale must be finite, got inf"),
        ("cyclic", {"transitive_scale": -math.inf}, "transitive_scale must be finite, got -inf"),
        ("cyclic", {"transitive_scale": math.nan}, "transitive_scale must be finite, got nan"),
        ("cyclic", {"transitive_scale": None}, "transitive_scale must be a real number, got None"),
        ("cyclic", {"transitive_scale": "big"}, "transitive_scale must be a real number, got 'big'"),
    ],
)
def test_general_law_constructors_reject_bad_sizes_seeds_and_dtypes(constructor, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        getattr(GeneralLaw, constructor)(**kwargs)


def test_law_sizes_and_seeds_accept_integral_numbers():
    # numpy integers and integral floats are the integers they hold, as in World.random.
    law = GeneralLaw.random(np.int64(2), 4.0, seed=np.int64(3))
    assert torch.equal(law.probs, GeneralLaw.random(2, 4, seed=3).probs)
    cyclic = GeneralLaw.cyclic(np.int32(2), 5, cycle_length=np.int64(4), seed=6.0)
    assert torch.equal(cyclic.probs, GeneralLaw.cyclic(2, 5, cycle_length=4, seed=6).probs)
    # A law may be any floating dtype: the world converts it to its own.
    assert GeneralLaw.random(2, 3, dtype=torch.float16).probs.dtype == torch.float16


def test_cyclic_transitive_scale_accepts_numpy_numbers_and_a_negative_sign():
    law = GeneralLaw.cyclic(2, 4, transitive_scale=0.5, seed=1)
    assert torch.equal(GeneralLaw.cyclic(2, 4, transitive_scale=np.float64(0.5), seed=1).probs, law.probs)
    assert torch.equal(
        GeneralLaw.cyclic(2, 4, transitive_scale=np.int64(1), seed=1).probs,
        GeneralLaw.cyclic(2, 4, transitive_scale=1.0, seed=1).probs,
    )
    # A negative scale negates the scores: with no cycle, P(a ≻ b) becomes P(b ≻ a) (up to one rounding of 1 − σ).
    plus = GeneralLaw.cyclic(2, 4, strength=0.0, transitive_scale=0.5, seed=1).probs
    minus = GeneralLaw.cyclic(2, 4, strength=0.0, transitive_scale=-0.5, seed=1).probs
    torch.testing.assert_close(minus, plus.transpose(-1, -2), rtol=0, atol=2**-52)
    assert not torch.allclose(minus, plus)


def test_world_to_and_replace_keep_the_law():
    law = GeneralLaw.random(3, 4, seed=2)
    world = _world().replace(law=law)
    moved = world.to(dtype=torch.float32)
    assert moved.law is not None and moved.law.probs.dtype == torch.float32
    assert world.replace(gamma=1.0).law is law
    assert "GeneralLaw" in repr(world)


@pytest.mark.parametrize("sampler", ["numpy", "torch"])
@pytest.mark.parametrize("name", ["random", "cyclic", "thurstone"])
def test_count_samplers_follow_the_law_chi_square(name, sampler):
    world = _world(seed=1).replace(law=LAWS[name])
    law = world.population_preferences().counts[0].reshape(-1)
    n, replicates = 20000, 1
    if sampler == "numpy":
        counts = world.sample_preferences(n, replicates, seed=11).counts
    else:
        counts = sa.sample_preferences_torch(world, n, replicates, 11).counts
    observed = counts.reshape(-1).numpy()
    expected = (n * law).numpy()
    keep = expected > 0
    assert observed[~keep].sum() == 0
    # Pearson's chi-square over the cells with positive probability; a fixed seed, level 1e-3.
    _, p_value = stats.chisquare(observed[keep], expected[keep] * observed.sum() / expected[keep].sum())
    assert p_value > 1e-3
    # And the labels follow P: wins of a over b among the (a, b) draws, pooled over prompts.
    assert np.isclose(observed.sum(), n)
