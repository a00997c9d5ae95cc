"""The shared validation layer (synthalign/_checks.py) and NaN-freedom of the objectives at zero probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import synthalign as sa

NEG_INF = -math.inf


def _world_with_reference_zeros(seed: int = 0) -> sa.World:
    """pi0 gives response 0 of every prompt probability 0 while mu (full support) proposes it."""
    generator = torch.Generator().manual_seed(seed)
    reference = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    reference[:, 0] = NEG_INF
    return sa.World.from_tensors(
        target=torch.randn(3, 4, generator=generator, dtype=torch.float64),
        reference=reference,
        behavior=torch.randn(3, 4, generator=generator, dtype=torch.float64),
        gamma=0.5,
        kind="logits",
    )


def test_dpo_double_log_ratio_of_two_zero_responses_is_a_tie():
    # h⁺ = ln(0/0) read as 0, h⁻ = ln(e^-1 / e^-1) = 0 → margin 0 → −ln σ(0) = ln 2 = 0.693.
    lc, lr = torch.tensor(NEG_INF, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
    loss = sa.dpo_loss(lc, lr, lc, lr, gamma=0.5)
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-15)


def test_ipo_and_rebel_are_finite_where_pi_and_pi0_share_a_zero():
    inputs = [torch.tensor(v, dtype=torch.float64) for v in ([NEG_INF, -1.0], [-1.0, NEG_INF], [NEG_INF, -1.0])]
    inputs.append(torch.tensor([-1.0, NEG_INF], dtype=torch.float64))
    # h = 0 in both pairs → (0 − 1/(2·0.5))² = 1.
    assert sa.ipo_loss(*inputs, tau=0.5).item() == pytest.approx(1.0, abs=1e-15)
    # h = 0, target η (R⁺ − R⁻) = 0.5 · (1 − 0) → residual² = 0.25.
    rebel = sa.rebel_loss(*inputs, torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0]), eta=0.5)
    assert rebel.item() == pytest.approx(0.25, abs=1e-15)


@pytest.mark.parametrize("name", ["dpo", "f_dpo", "length_normalized_dpo", "online_dpo"])
def test_population_loss_at_pi0_with_covered_zeros_is_ln2(name):
    # pi = pi0: every ln(pi/pi0) is 0, so each cell's DPO-type loss is −ln σ(0) = ln 2, and so is the mean.
    world = _world_with_reference_zeros()
    loss = sa.population_loss(name, world, world.reference)
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-12)


@pytest.mark.parametrize("name", ["dpo", "ipo", "rebel"])
def test_fit_reference_relative_objective_where_pi0_has_covered_zeros(name):
    world = _world_with_reference_zeros()
    result = sa.fit(name, world.population_preferences())
    assert bool(result.converged.all())
    assert torch.isfinite(result.loss).all()
    # pi0(a) = 0 keeps pi(a) = 0 (in float64): the DPO family cannot move mass outside pi0's support.
    assert float(result.policy.probs[..., 0].max()) == 0.0


def test_scalar_checks_name_the_argument_and_refuse_lookalikes():
    from synthalign._checks import InputTypeError, check_bool, check_real, check_seed

    assert check_seed(np.int64(3)) == 3 and check_bool(np.bool_(True), "fresh") is True
    assert check_real(torch.tensor(2.5, dtype=torch.float64), "level") == 2.5
    assert check_real(math.inf, "width", finite=False) == math.inf
    for value in (True, 2.0, None, "1"):
        with pytest.raises(InputTypeError, match="seed"):
            check_seed(value)
    with pytest.raises(ValueError, match="seed"):
        check_seed(-1)
    for value in (1, "yes", None):
        with pytest.raises(InputTypeError, match="fresh"):
            check_bool(value, "fresh")
    for value in (math.nan, math.inf):
        with pytest.raises(ValueError, match="level"):
            check_real(value, "level")
    for value in ("a", None, 1j, True, torch.zeros(2)):
        with pytest.raises(InputTypeError, match="level"):
            check_real(value, "level")


def test_constructor_checks_name_the_argument():
    from synthalign._checks import InputTypeError, check_float_dtype, check_table_shape, seeded_generator

    assert check_table_shape(np.int64(2), 3.0) == (2, 3)
    assert check_table_shape(1, 3, min_responses=3) == (1, 3)
    with pytest.raises(ValueError, match="n_prompts must be an integer >= 1, got 0"):
        check_table_shape(0, 3)
    with pytest.raises(ValueError, match="n_responses must be an integer >= 3, got 2"):
        check_table_shape(1, 2, min_responses=3)
    with pytest.raises(InputTypeError, match="n_responses must be an integer >= 2, got True"):
        check_table_shape(1, True)
    assert check_float_dtype(torch.float32) is torch.float32
    with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64, got torch.float16"):
        check_float_dtype(torch.float16)
    assert check_float_dtype(torch.float16, allowed=(torch.float16,)) is torch.float16
    # The generator of a seed draws what torch.Generator().manual_seed(seed) draws.
    expected = torch.rand(4, generator=torch.Generator().manual_seed(11))
    assert torch.equal(torch.rand(4, generator=seeded_generator(np.int64(11))), expected)
    assert torch.equal(torch.rand(4, generator=seeded_generator(11.0)), expected)
    for value in (-1, 2.5, None, "3", True):
        with pytest.raises(ValueError, match="world_seed must be an integer >= 0"):
            seeded_generator(value, "world_seed")


def test_check_class_logp_names_the_dimension_that_is_off():
    from synthalign.worlds.checks import check_class_logp

    world = sa.World.random(2, 3, seed=0)
    members = sa.perturbation_class(world, 4, 0.5, seed=0)
    assert check_class_logp(members, "candidates", world=world) is members.logp
    with pytest.raises(ValueError, match=r"candidates must have shape \[K, X, A\] with K, X=2, A=3"):
        check_class_logp(torch.log_softmax(torch.zeros(4, 2, 4, dtype=torch.float64), -1), "candidates", world=world)
    with pytest.raises(ValueError, match=r"candidates must have shape \[K, X, A\], got \(2, 3\)"):
        check_class_logp(world.target.logp, "candidates")
    with pytest.raises(ValueError, match="candidates must hold log-probabilities with each row normalized"):
        check_class_logp(members.logp + 1.0, "candidates")
