"""The preference game (synthalign.theory.games): von Neumann winners, regularized equilibria, duality gaps."""

from __future__ import annotations

import math

import pytest
import torch

import synthalign as sa
from synthalign.theory.games import (
    best_response,
    duality_gap,
    game_matrix,
    is_condorcet_winner,
    regularized_nash,
    von_neumann_winner,
    win_rates,
)
from synthalign.worlds.laws import GeneralLaw

# HiGHS' default primal/dual feasibility tolerance is 1e-7: an LP optimum satisfies its
# constraints to that accuracy.
LP_TOL = 1e-7


def _reference(X, A, seed, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return sa.Policy.from_logits(scale * torch.randn(X, A, generator=generator, dtype=torch.float64))


def _game_value(matrix, p, q):
    """P(p ≻ q | x) = Σ_ab p(a) q(b) P[a, b], written out independently of win_rates."""
    return (p.unsqueeze(-1) * q.unsqueeze(-2) * matrix).sum(dim=(-1, -2))


def _objective(matrix, p, q, ref, beta):
    """J(p, q) = P(p ≻ q) − β KL(p ‖ π0) + β KL(q ‖ π0), per prompt."""

    def kl(r):
        return (r * (r.log() - ref.logp)).sum(-1)

    return _game_value(matrix, p, q) - beta * kl(p) + beta * kl(q)


def test_bradley_terry_von_neumann_winner_is_the_argmax_of_pi_star():
    # Under BT, P(a ≻ b) > 1/2 iff pi*(a) > pi*(b): the argmax of pi* is a Condorcet winner,
    # and the point mass on it is the unique von Neumann winner.
    world = sa.World.random(4, 6, seed=3)
    matrix = game_matrix(world)
    winner = von_neumann_winner(matrix)
    best = world.target.logp.argmax(-1)
    expected = torch.nn.functional.one_hot(best, 6).to(torch.float64)
    assert torch.allclose(winner.probs, expected, atol=LP_TOL)
    assert torch.all(is_condorcet_winner(matrix).gather(-1, best.unsqueeze(-1)))


def test_rock_paper_scissors_equilibria_are_uniform():
    matrix = GeneralLaw.cyclic(2, 3, strength=1.3).probs
    uniform = torch.full((2, 3), 1 / 3, dtype=torch.float64)
    assert torch.allclose(von_neumann_winner(matrix).probs, uniform, atol=LP_TOL)
    # With a uniform pi0 the regularized game is invariant under the cyclic relabelling; its
    # equilibrium is unique, hence uniform too.
    reference = sa.Policy(uniform.log())
    assert torch.allclose(regularized_nash(matrix, reference, 0.1).probs, uniform, atol=1e-14)
    assert not is_condorcet_winner(matrix).any()


def test_rock_paper_scissors_duality_gap_hand_values():
    # strength ln 3: the winner of each pair wins with σ(ln 3) = 3/4.
    matrix = GeneralLaw.cyclic(1, 3, strength=math.log(3.0)).probs
    rock = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64).log()
    # Against pure "0" the best reply is "2" (2 ≻ 0 in the cycle), winning 3/4: gap = 2·3/4 − 1 = 1/2.
    assert float(duality_gap(rock, matrix)) == pytest.approx(0.5, abs=1e-15)
    uniform = torch.full((1, 3), 1 / 3, dtype=torch.float64).log()
    # P(a ≻ uniform) = (1/2 + 3/4 + 1/4)/3 = 1/2 for every a: gap 0.
    assert float(duality_gap(uniform, matrix)) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("seed", range(4))
def test_lp_solution_satisfies_the_equilibrium_conditions(seed):
    matrix = GeneralLaw.random(3, 7, scale=2.0, tie_fraction=0.2 * (seed % 2), seed=seed).probs
    winner = von_neumann_winner(matrix)
    assert torch.allclose(winner.probs.sum(-1), torch.ones(3, dtype=torch.float64), atol=1e-15)
    # min_b P(π ≻ b) ≥ 1/2 (the game's value), i.e. no pure reply beats π.
    against_pure = torch.einsum("xa,xab->xb", winner.probs, matrix)
    assert float(against_pure.min()) >= 0.5 - LP_TOL
    assert float(duality_gap(winner, matrix, per_prompt=True).max()) <= 2 * LP_TOL


@pytest.mark.parametrize("beta", [2.0, 0.3, 0.05, 0.003])
def test_regularized_nash_is_the_fixed_point_and_has_zero_gap(beta):
    matrix = GeneralLaw.random(4, 6, scale=2.0, seed=1).probs
    reference = _reference(4, 6, seed=2)
    nash = regularized_nash(matrix, reference, beta)
    # π = best response to itself, to float64 rounding of terms of size 1/β.
    replied = best_response(matrix, nash, reference, beta)
    assert float((replied.logp - nash.logp).abs().max()) <= 1e-12 * max(1.0, 1 / beta)
    gap = duality_gap(nash, matrix, beta=beta, reference=reference, per_prompt=True)
    assert float(gap.abs().max()) <= 1e-13 * max(1.0, 1 / beta)


def test_regularized_nash_matches_the_closed_form_of_linear_preferences():
    # P(a ≻ b) = 1/2 + (r_a − r_b)/2 (|r| ≤ 1/2 keeps P in [0, 1]): P(a ≻ π) = 1/2 + (r_a − E_π r)/2,
    # so the best response to any π is π0 · exp(r/(2β)) — the equilibrium, in closed form.
    generator = torch.Generator().manual_seed(5)
    reward = torch.rand(3, 5, generator=generator, dtype=torch.float64) - 0.5
    matrix = 0.5 + (reward.unsqueeze(-1) - reward.unsqueeze(-2)) / 2
    reference = _reference(3, 5, seed=6)
    for beta in (1.0, 0.1, 0.02):
        expected = torch.log_softmax(reference.logp + reward / (2 * beta), dim=-1)
        nash = regularized_nash(matrix, reference, beta)
        assert torch.allclose(nash.logp, expected, rtol=0, atol=1e-12 * max(1.0, 1 / beta))


@pytest.mark.parametrize("beta", [0.0, 0.2])
def test_duality_gap_equals_its_definition_and_is_positive_off_equilibrium(beta):
    matrix = GeneralLaw.random(3, 5, scale=1.5, seed=7).probs
    reference = _reference(3, 5, seed=8)
    policy = _reference(3, 5, seed=9, scale=2.0)
    gap = duality_gap(policy, matrix, beta=beta, reference=reference, per_prompt=True)
    p = policy.probs
    if beta == 0:
        # Best replies are pure at beta = 0: enumerate them.
        pure = torch.eye(5, dtype=torch.float64)
        best_max = torch.stack([_game_value(matrix, pure[a].expand(3, 5), p) for a in range(5)]).amax(0)
        best_min = torch.stack([_game_value(matrix, p, pure[b].expand(3, 5)) for b in range(5)]).amin(0)
        definition = best_max - best_min
    else:
        reply = best_response(matrix, policy, reference, beta).probs
        # J(·, π) is maximized by the Gibbs reply; J(π, ·) is minimized by the same reply because
        # P(π ≻ q) = 1 − P(q ≻ π).
        definition = _objective(matrix, reply, p, reference, beta) - _objective(matrix, p, reply, reference, beta)
        # The reply beats random alternatives in J(·, π): it is the maximum.
        for seed in range(5):
            other = _reference(3, 5, seed=100 + seed, scale=2.0).probs
            assert torch.all(
                _objective(matrix, other, p, reference, beta) <= _objective(matrix, reply, p, reference, beta)
            )
    assert torch.allclose(gap, definition, rtol=0, atol=1e-14)
    assert torch.all(gap > 0)


@pytest.mark.parametrize("max_iterations", [0, 2.5, True, None])
def test_regularized_nash_rejects_a_bad_iteration_count(max_iterations):
    matrix = GeneralLaw.cyclic(1, 3).probs
    with pytest.raises(ValueError, match="max_iterations must be an integer >= 1"):
        regularized_nash(matrix, _reference(1, 3, seed=0), 0.5, max_iterations=max_iterations)


def test_regularized_equilibrium_approaches_a_von_neumann_winner():
    # gap_0(π) ≤ gap_β(π) + 2β ln(1 / min_a π0(a)) (max_a P(a ≻ π) ≤ M_β(π) + β ln(1/π0(a))), so at the
    # regularized equilibrium the unregularized gap is at most 2β ln(1/min π0).
    matrix = GeneralLaw.random(3, 6, scale=2.0, seed=11).probs
    reference = _reference(3, 6, seed=12)
    slack = -reference.logp.min(-1).values
    for beta in (0.5, 0.05, 0.005):
        nash = regularized_nash(matrix, reference, beta)
        gap0 = duality_gap(nash, matrix, per_prompt=True)
        assert torch.all(gap0 <= 2 * beta * slack + 1e-12)


def test_win_rates_and_errors():
    matrix = GeneralLaw.random(2, 3, seed=0).probs
    uniform = torch.full((2, 3), 1 / 3, dtype=torch.float64)
    assert torch.allclose(win_rates(matrix, uniform.log()), matrix.mean(-1), atol=1e-15)
    with pytest.raises(ValueError, match="beta"):
        regularized_nash(matrix, uniform.log(), 0.0)
    with pytest.raises(ValueError, match="reference"):
        duality_gap(uniform.log(), matrix, beta=0.1)
    with pytest.raises(ValueError, match="reference"):
        regularized_nash(matrix, torch.tensor([[0.0, -math.inf, -math.inf]] * 2, dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="matrix"):
        von_neumann_winner(torch.full((2, 3, 3), 0.7, dtype=torch.float64))
