"""Tests of `synthalign.testing.method_checks`: each registered Nash-style method through the conformance suite."""

from __future__ import annotations

import pytest

from synthalign.estimators.nash import NASH_METHODS, NASH_TARGETS, nash_iterations
from synthalign.objectives.nash import nash_md_step, sppo_step
from synthalign.registry.nash import METHOD_REGISTRY, Method, get_method, list_methods, method
from synthalign.testing.method_checks import METHOD_CHECKS, MethodCheckOptions, check_method

FAMILIES = [
    pytest.param("random", id="random"),
    pytest.param("cyclic", id="cyclic", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("check", METHOD_CHECKS)
@pytest.mark.parametrize("name", ["nash_md", "online_ipo", "sppo", "extragradient"])
def test_method_conformance(name, check, family):
    (result,) = check_method(name, MethodCheckOptions(family=family), checks=[check]).results
    if result.passed is None:
        pytest.skip(f"not applicable: {result.detail}")
    assert result.passed, result.detail


def test_the_four_methods_are_registered_with_their_targets():
    assert set(list_methods()) >= {"nash_md", "online_ipo", "sppo", "extragradient"}
    assert NASH_METHODS == tuple(list_methods())
    assert get_method("extragradient").target == "regularized_nash"
    assert get_method("sppo").target == "von_neumann" and get_method("sppo").iterate == "average"
    assert get_method("nash_md").convergence == "biased"
    assert "regularized Nash equilibrium" in NASH_TARGETS["online_ipo"]


def test_a_wrong_declaration_fails_the_checks():
    # SPPO's update (unregularized multiplicative weights) declared as converging linearly to the
    # β-regularized equilibrium: that equilibrium is not its fixed point, and the checks say so.
    wrong = Method(
        name="sppo_as_regularized",
        step=sppo_step,
        target="regularized_nash",
        iterate="last",
        convergence="linear",
        needs_beta=True,
        max_eta_beta=None,
        check_eta=0.3,
        reference="",
        description="",
    )
    report = check_method(wrong, checks=["fixed_point", "target_reached"])
    assert report["fixed_point"].passed is False
    assert report["target_reached"].passed is False


def test_a_user_method_runs_through_nash_iterations():
    registry_size = len(METHOD_REGISTRY)
    from synthalign.registry.nash import MethodRegistry

    mine = MethodRegistry()
    declared = method("half_step_nash_md", target="regularized_nash", convergence="biased", registry=mine)(nash_md_step)
    assert len(METHOD_REGISTRY) == registry_size and "half_step_nash_md" in mine
    options = MethodCheckOptions()
    matrix, reference = options.game()
    trace = nash_iterations(declared, matrix, reference, beta=0.1, eta=0.5, iterations=3)
    assert trace.method == "half_step_nash_md" and trace.logp.shape[0] == 4


def test_method_declarations_are_validated():
    with pytest.raises(ValueError, match="target"):
        Method("m", sppo_step, "nash", "last", "linear", True, None, 1.0, "", "")
    with pytest.raises(ValueError, match="unknown method"):
        get_method("mwu")
    with pytest.raises(ValueError, match="unknown method checks"):
        check_method("sppo", checks=["duality"])
