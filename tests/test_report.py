"""Tests of `synthalign.testing.report`: `CheckOptions` validation and the `CheckReport` text, lookup and failure."""

from __future__ import annotations

import pytest
from _check_objectives import mean_over_pairs

from synthalign.testing import check_objective


def test_raise_on_failure_names_the_failed_checks():
    with pytest.raises(AssertionError, match=r"'mean_over_pairs' failed .*\n  - elementwise: "):
        check_objective(mean_over_pairs, checks=("finite_extreme", "elementwise"), raise_on_failure=True)


def test_report_text_lists_every_check():
    report = check_objective(mean_over_pairs, checks=("finite_extreme", "elementwise", "closed_form"))
    text = str(report)
    assert "1 FAILED" in text and "not applicable" in text and "passed" in text
    with pytest.raises(KeyError, match="no check named"):
        report["gradcheck"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta": -1.0}, "beta"),
        ({"swap_symmetry": "both"}, "swap_symmetry"),
        ({"consistent": 1}, "consistent"),
        ({"checks": ("gradcheck", "nonsense")}, "checks"),
        ({"params": {"tau": 0.1}}, "hyper-parameter"),
        ({"seed": -1}, "seed"),
        ({"expected_minimizer": 3}, "expected_minimizer"),
    ],
)
def test_bad_options_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_objective("pmle", **kwargs)
