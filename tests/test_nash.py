"""Nash-style methods (estimators.nash, registry.nash) and the paper's objectives on non-BT data."""

from __future__ import annotations

import math

import pytest
import torch

import synthalign as sa
from synthalign.estimators.nash import NASH_METHODS, NASH_TARGETS, _sampled_win_rates, nash_iterations
from synthalign.testing import check_objective
from synthalign.theory.closed_forms import ipo_minimizer
from synthalign.theory.games import duality_gap, regularized_nash, win_rates
from synthalign.worlds.laws import GeneralLaw

BETA = 0.1


def _setup(seed=0, X=3, A=5, cyclic=False):
    if cyclic:
        law = GeneralLaw.cyclic(X, A, strength=2.0, transitive_scale=0.5, seed=seed)
    else:
        law = GeneralLaw.random(X, A, scale=2.0, seed=seed)
    generator = torch.Generator().manual_seed(100 + seed)
    reference = sa.Policy.from_logits(torch.randn(X, A, generator=generator, dtype=torch.float64))
    return law.probs, reference


def _kl(p_logp, q_logp):
    return float((p_logp.exp() * (p_logp - q_logp)).sum(-1).max())


def test_online_ipo_conformance_on_a_general_law():
    # The declared minimizer (pi0 · exp((2P(a ≻ mu) − 1)/(2 tau))) holds for any law with P + Pᵀ = 1.
    for cyclic in (False, True):
        matrix, _ = _setup(seed=1, X=3, A=4, cyclic=cyclic)
        world = sa.World.random(3, 4, seed=2).replace(law=GeneralLaw(matrix))
        report = check_objective(
            "online_ipo", world=world, checks=["population_minimizer", "exact_vs_sampled", "weight_consistency"]
        )
        assert all(result.passed for result in report.results), str(report)


def test_online_ipo_minimizer_with_mu_at_the_equilibrium_is_the_equilibrium():
    # Two independent formulas: IPO's population minimizer (closed_forms) with mu = pi_beta equals
    # the regularized equilibrium (games, Newton): the self-play fixed point (Calandriello et al. 2024).
    matrix, reference = _setup(seed=3)
    nash = regularized_nash(matrix, reference, BETA)
    world = sa.World.from_tensors(
        target=reference.probs, reference=reference.probs, behavior=nash.probs, gamma=0.5
    ).replace(law=GeneralLaw(matrix))
    minimizer = ipo_minimizer(None, world, 0.0, {"tau": BETA})
    assert torch.allclose(minimizer.logp, nash.logp, rtol=0, atol=1e-11)


@pytest.mark.parametrize("method", ["online_ipo", "extragradient"])
def test_regularized_equilibrium_is_a_fixed_point(method):
    matrix, reference = _setup(seed=4)
    nash = regularized_nash(matrix, reference, BETA)
    trace = nash_iterations(method, matrix, reference, beta=BETA, eta=0.5, iterations=3, start=nash)
    assert float((trace.logp[-1, 0] - nash.logp).abs().max()) <= 1e-11


def test_nash_md_with_a_constant_step_is_biased_and_the_bias_shrinks_with_the_step():
    # At pi_beta the mixture q differs from pi, so w(q) ≠ w(pi) and a constant-step Nash-MD moves off
    # the equilibrium: its limit carries a bias of order eta (Munos et al. use eta_t → 0).
    matrix, reference = _setup(seed=5)
    nash = regularized_nash(matrix, reference, BETA)
    finals = []
    for eta in (2.0, 0.5):
        trace = nash_iterations("nash_md", matrix, reference, beta=BETA, eta=eta, iterations=int(60 / (eta * BETA)))
        # Converged: the last two iterates agree to 1e-9.
        assert float((trace.logp[-1] - trace.logp[-2]).abs().max()) < 1e-9
        finals.append(_kl(nash.logp, trace.logp[-1, 0]))
    assert finals[0] > 1e-8  # biased
    assert finals[1] < finals[0]


def test_extragradient_converges_to_the_regularized_equilibrium():
    for cyclic in (False, True):
        matrix, reference = _setup(seed=6, cyclic=cyclic)
        nash = regularized_nash(matrix, reference, BETA)
        trace = nash_iterations("extragradient", matrix, reference, beta=BETA, eta=1.0, iterations=400)
        assert _kl(nash.logp, trace.logp[-1, 0]) < 1e-12
        assert float(trace.gap[-1]) < 1e-12
        # Linear convergence: the gap falls by orders of magnitude and never goes back up by much.
        assert float(trace.gap[100]) < 1e-3 * float(trace.gap[0])


def test_sppo_average_iterate_respects_the_hedge_regret_bound():
    # Hedge with gains P(a ≻ pi_t) ∈ [0, 1] from pi_0 has regret ≤ ln(1/min pi_0)/eta + eta T/8; the gain of
    # pi_t itself is P(pi_t ≻ pi_t) = 1/2, and P(a ≻ ·) is linear, so the average of pi_0..pi_{T-1} has
    # unregularized gap 2 (max_a P(a ≻ avg) − 1/2) ≤ 2 regret / T.
    matrix, reference = _setup(seed=7, cyclic=True)
    eta, T = 0.3, 400
    trace = nash_iterations("sppo", matrix, reference, beta=0.0, eta=eta, iterations=T)
    start = float(-reference.logp.min(-1).values.max())
    bound = 2 * (start / (eta * T) + eta / 8)
    assert float(trace.average_gap_unregularized[T - 1]) <= bound


def test_sampled_win_rates_are_unbiased_given_draws():
    matrix, reference = _setup(seed=8)
    replicates, n = 400, 500
    opponent = reference.logp.expand(replicates, *reference.logp.shape)
    prompt_dist = torch.full((3,), 1 / 3, dtype=torch.float64)
    estimate = _sampled_win_rates(matrix, prompt_dist, opponent, n, torch.Generator().manual_seed(0))
    exact = win_rates(matrix, reference)
    mean, stderr = estimate.mean(0), estimate.std(0) / math.sqrt(replicates)
    # Each (x, a) is drawn ~ n/(X A) = 33 times; wins/draws is unbiased given draws > 0 (all are here).
    assert torch.all((mean - exact).abs() <= 4 * stderr)


@pytest.mark.parametrize("method", NASH_METHODS)
def test_sampled_iterations_approach_the_exact_ones_as_n_grows(method):
    matrix, reference = _setup(seed=9)
    eta = 0.05 if method == "online_ipo" else 0.5
    exact = nash_iterations(method, matrix, reference, beta=BETA, eta=eta, iterations=20)
    small = nash_iterations(method, matrix, reference, beta=BETA, eta=eta, iterations=20, n_pairs=200, replicates=8)
    large = nash_iterations(method, matrix, reference, beta=BETA, eta=eta, iterations=20, n_pairs=200000, replicates=8)

    def distance(trace):
        return float((trace.logp[-1] - exact.logp[-1]).abs().amax(dim=(-1, -2)).mean())

    assert distance(large) < distance(small) / 10  # 1000× the pairs: errors shrink ~√1000 ≈ 30×
    assert NASH_TARGETS[method] == exact.target


def test_nash_iterations_errors():
    matrix, reference = _setup()
    with pytest.raises(ValueError, match="method"):
        nash_iterations("mwu", matrix, reference, beta=BETA, eta=1.0, iterations=1)
    with pytest.raises(ValueError, match="eta"):
        nash_iterations("nash_md", matrix, reference, beta=0.5, eta=4.0, iterations=1)
    with pytest.raises(ValueError, match="beta"):
        nash_iterations("extragradient", matrix, reference, beta=0.0, eta=1.0, iterations=1)
    with pytest.raises(ValueError, match="n_pairs"):
        nash_iterations("sppo", matrix, reference, beta=0.0, eta=1.0, iterations=1, n_pairs=0)


def test_paper_objectives_on_non_bt_data_converge_to_the_bt_projection():
    # On a non-BT law PMLE's population minimizer is the BT projection pi_B (the logistic fit of P);
    # DPO is the same logistic regression in ln pi − ln pi0, so its minimizer is pi0 · pi_B; RKL with the
    # population reward model (R̂ = gamma ln pi_B + c) at beta = 0 is pi_R̂ = pi_B.  None is the
    # equilibrium on a cyclic law.
    matrix, _ = _setup(seed=10, X=3, A=4, cyclic=True)
    world = sa.World.random(3, 4, seed=11).replace(law=GeneralLaw(matrix))
    law = world.population_preferences()
    pmle = sa.fit("pmle", law)
    dpo = sa.fit("dpo", law)
    # Under a non-BT law world.true_reward (gamma ln pi*) is not the law's: fit R̂ on the law itself.
    reward = sa.fit_reward_model(law, ridge=0.0).reward
    rkl = sa.fit("rkl", law, reward=reward)
    projection = pmle.policy.logp[0]
    assert bool(pmle.converged.all()) and bool(dpo.converged.all())
    expected_dpo = torch.log_softmax(world.reference.logp + projection, dim=-1)
    assert _kl(expected_dpo, dpo.policy.logp[0]) < 1e-10
    assert _kl(projection, rkl.policy.logp[0]) < 1e-10
    assert float(duality_gap(pmle.policy[0], matrix, prompt_dist=world.prompt_dist)) > 1e-3
    # Under the BT law itself the projection is pi* (spec §6.13).
    bt = sa.fit("pmle", world.replace(law=None).population_preferences())
    assert _kl(world.target.logp, bt.policy.logp[0]) < 1e-10
