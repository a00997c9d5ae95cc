"""Every objective synthalign registers (built-in and zoo), through the conformance checks of synthalign.testing.

The table below declares, per built-in objective, what its population minimizer is (spec §6.13 for the
consistent ones; a derivation in each function's docstring for the others) and which pair-swap form
applies; `synthalign.zoo_objectives.CHECK_OPTIONS` does the same for the zoo.  `population_minimizer`
then asserts the minimizer, on the default check world (3 prompts, 4 responses,
gamma = 0.5, pi0 and mu independent of pi*, full support).
"""

from __future__ import annotations

import torch

import synthalign as sa
from synthalign.data import preference_matrix
from synthalign.testing import parametrize_with_checks
from synthalign.zoo_objectives import CHECK_OPTIONS as ZOO_CHECK_OPTIONS
from synthalign.zoo_objectives import EXPECTED_FAILURES as ZOO_EXPECTED_FAILURES


def _policy(logits: torch.Tensor, world) -> sa.Policy:
    return sa.Policy(torch.log_softmax(logits, dim=-1), world.prompt_dist)


def dpo_minimizer(reward, world, beta, params) -> sa.Policy:
    """pi ∝ pi0 · pi*.

    DPO's pair loss is logistic in gamma (u(a⁺) − u(a⁻)) with u = ln pi − ln pi0, and the labels follow
    σ(gamma (ln pi*(a) − ln pi*(b))).  The population logistic loss is minimized by matching the two
    margins on every pair mu proposes: u = ln pi* + c(x), i.e. pi ∝ pi0 · pi*.
    """
    return _policy(world.reference.logp + world.target.logp, world)


def ipo_minimizer(reward, world, beta, params) -> sa.Policy:
    """pi ∝ pi0 · exp((P*(a ≻ mu) − ½)/tau), Azar et al. 2024, with P*(a ≻ mu) = E_{b~mu} P*(a ≻ b).

    With u = ln pi − ln pi0 and c = 1/(2 tau), the population loss is Σ_{a,b} mu(a) mu(b) [P_ab (u_a − u_b − c)²
    + P_ba (u_b − u_a − c)²] per prompt.  Setting its derivative in u_a to zero and using P_ab + P_ba = 1:
    Σ_b mu(b) (u_a − u_b) = c Σ_b mu(b) (2 P_ab − 1), so u_a = E_mu u + (2 P(a ≻ mu) − 1)/(2 tau).
    """
    win_against_mu = torch.einsum("xab,xb->xa", preference_matrix(world), world.behavior.probs)
    return _policy(world.reference.logp + (win_against_mu - 0.5) / params["tau"], world)


def rebel_minimizer(reward, world, beta, params) -> sa.Policy:
    """pi ∝ pi0 · exp(eta R̂): the squared loss is zero when h(a, b) = eta (R̂(a) − R̂(b)) on every pair."""
    return _policy(world.reference.logp + params["eta"] * reward, world)


def rlhf_minimizer(reward, world, beta, params) -> sa.Policy:
    """pi ∝ pi0 · pi*^(gamma/beta): spec §6.7, RLHF's optimum pi0 exp(R*/beta) with R* = gamma ln pi*."""
    return _policy(world.reference.logp + (world.gamma / beta) * world.target.logp, world)


BUILTIN_CHECK_OPTIONS = {
    # Consistent at beta = 0 (spec §6.13; the reward model's pi_R̂ with R̂ = R* is pi*).
    "reward_model": {"consistent": True, "swap_symmetry": "likelihood"},
    "pmle": {"consistent": True, "swap_symmetry": "likelihood"},
    "distillation": {"consistent": True},  # unlabelled pairs: the "loss" form applies by default
    "rkl": {"consistent": True},
    "forward_kl": {"consistent": True},
    # Not consistent for a generic pi0: each converges to its own tilt of pi0.
    "dpo": {"consistent": False, "expected_minimizer": dpo_minimizer, "swap_symmetry": "likelihood"},
    "ipo": {"consistent": False, "expected_minimizer": ipo_minimizer, "swap_symmetry": None},
    "rebel": {"consistent": False, "expected_minimizer": rebel_minimizer, "swap_symmetry": "loss"},
    # beta = 1 with gamma = 0.5: pi ∝ pi0 · pi*^0.5.
    "rlhf": {"beta": 1.0, "consistent": False, "expected_minimizer": rlhf_minimizer},
}

EXPECTED_FAILURES = dict(ZOO_EXPECTED_FAILURES)

ALL_CHECK_OPTIONS = {**BUILTIN_CHECK_OPTIONS, **ZOO_CHECK_OPTIONS}


def test_every_registered_objective_is_checked():
    registered = {
        name for name in sa.list_objectives() if sa.get_objective(name).fn.__module__.startswith("synthalign.")
    }
    assert registered == set(ALL_CHECK_OPTIONS)


@parametrize_with_checks(list(ALL_CHECK_OPTIONS.items()), expected_failures=EXPECTED_FAILURES)
def test_conformance(objective, check):
    check(objective)
