"""Tests of `synthalign.testing.pytest_glue`: `parametrize_with_checks` makes one item per objective and check."""

from __future__ import annotations

import pytest
from _check_objectives import mean_over_pairs

from synthalign.testing import parametrize_with_checks


def _items(decorator):
    (argnames, params), _ = decorator.args, decorator.kwargs
    assert argnames == "objective, check"
    return params


def test_parametrize_makes_one_item_per_objective_and_check():
    params = _items(parametrize_with_checks(["pmle", ("rlhf", {"beta": 1.0})], checks=("gradcheck", "closed_form")))
    assert [p.id for p in params] == ["pmle-gradcheck", "pmle-closed_form", "rlhf-gradcheck", "rlhf-closed_form"]
    skipped = {p.id for p in params if any(m.name == "skip" for m in p.marks)}
    assert skipped == {"pmle-closed_form"}  # pmle has no closed form
    assert params[3].values[1].options.beta == 1.0


def test_parametrized_checks_raise_on_broken_objectives():
    params = _items(parametrize_with_checks([mean_over_pairs], checks=("elementwise", "finite_extreme")))
    failing, passing = params
    with pytest.raises(AssertionError, match="mean_over_pairs: check elementwise failed"):
        failing.values[1](failing.values[0])
    assert passing.values[1](passing.values[0]).passed


def test_parametrize_marks_expected_failures_strict():
    params = _items(
        parametrize_with_checks(
            [mean_over_pairs], checks=("elementwise",), expected_failures={("mean_over_pairs", "elementwise"): "why"}
        )
    )
    (mark,) = params[0].marks
    assert mark.name == "xfail" and mark.kwargs["strict"] and mark.kwargs["reason"] == "why"
    with pytest.raises(ValueError, match="expected_failures"):
        parametrize_with_checks(["pmle"], checks=("elementwise",), expected_failures={("dpo", "elementwise"): "x"})


def test_not_applicable_check_skips_when_called():
    params = _items(parametrize_with_checks(["pmle"], checks=("closed_form",)))
    with pytest.raises(pytest.skip.Exception, match="not applicable"):
        params[0].values[1](params[0].values[0])
