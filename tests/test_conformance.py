"""Every objective synthalign registers (built-in and zoo), through the conformance checks of synthalign.testing.

Built-in objectives declare their population minimizer and pair-swap form on the objective itself
(spec §6.13 for the consistent ones; derivations in synthalign/registry.py for the others);
the zoo's declarations (synthalign/registry/zoo.py) do the same, with the hyper-parameters
the checks use (`example_params`) and known failures (`known_failures`).  `population_minimizer`
then asserts the minimizer, on the default check world (3 prompts, 4 responses,
gamma = 0.5, pi0 and mu independent of pi*, full support).
"""

from __future__ import annotations

import torch

import synthalign as sa
from synthalign.registry.nash import NASH_OBJECTIVES
from synthalign.registry.zoo import ZOO_OBJECTIVES
from synthalign.testing import parametrize_with_checks


def _policy(logits: torch.Tensor, world) -> sa.Policy:
    return sa.Policy(torch.log_softmax(logits, dim=-1), world.prompt_dist)


def rlhf_minimizer(reward, world, beta, params) -> sa.Policy:
    """pi ∝ pi0 · pi*^(gamma/beta): spec §6.7, RLHF's optimum pi0 exp(R*/beta) with R* = gamma ln pi*."""
    return _policy(world.reference.logp + (world.gamma / beta) * world.target.logp, world)


BUILTIN_CHECK_OPTIONS = {
    # What each built-in converges to and its pair-swap form are declared on the objective itself
    # (synthalign/registry/paper.py: consistent, expected_minimizer, swap_symmetry); the checks read them there.
    "reward_model": {},
    "pmle": {},
    "distillation": {},
    "rkl": {},
    "forward_kl": {},
    "dpo": {},
    "ipo": {},
    "rebel": {},
    # RLHF needs beta > 0; beta = 1 with gamma = 0.5 gives pi ∝ pi0 · pi*^0.5, derived independently here.
    "rlhf": {"beta": 1.0, "expected_minimizer": rlhf_minimizer},
}


def test_builtin_declarations():
    declared = {name: sa.get_objective(name).consistent for name in BUILTIN_CHECK_OPTIONS}
    assert declared == {
        "reward_model": True,
        "pmle": True,
        "distillation": True,
        "rkl": True,
        "forward_kl": True,
        "dpo": False,
        "ipo": False,
        "rebel": False,
        "rlhf": False,
    }


# The zoo's options are its declarations; the one known failure (the hinge's population minimizer,
# a piecewise-linear loss Newton cannot minimize) is declared there and run as a strict xfail.
ZOO_CHECK_OPTIONS = {name: {} for name in ZOO_OBJECTIVES}

# Nash-style objectives (synthalign/registry/nash.py) declare their targets on themselves.
NASH_CHECK_OPTIONS = {name: {} for name in NASH_OBJECTIVES}

ALL_CHECK_OPTIONS = {**BUILTIN_CHECK_OPTIONS, **ZOO_CHECK_OPTIONS, **NASH_CHECK_OPTIONS}


def test_known_failures_are_declared():
    declared = {(name, check) for name in ALL_CHECK_OPTIONS for check in sa.get_objective(name).known_failures}
    assert declared == {("hinge", "population_minimizer")}


def test_every_registered_objective_is_checked():
    registered = {
        name for name in sa.list_objectives() if sa.get_objective(name).fn.__module__.startswith("synthalign.")
    }
    assert registered == set(ALL_CHECK_OPTIONS)


@parametrize_with_checks(list(ALL_CHECK_OPTIONS.items()))
def test_conformance(objective, check):
    check(objective)
