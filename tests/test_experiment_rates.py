"""Tests of `synthalign.experiments.rates` at its quick size, each asserting the claim it measures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from synthalign.experiments import rates

# Every threshold below is derived in a comment (from the experiment's own standard errors, an exact
# identity, or a theorem); the seeds are fixed, so each test is deterministic.


@pytest.fixture(scope="module")
def rates_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("rates")
    return rates.run(rates.Args(size="quick", out=str(out), progress=False)), out


def test_rates_slopes_are_minus_one(rates_results):
    results, out = rates_results
    tabular = results["tabular"]
    for method in rates.METHODS:
        verdict = tabular["methods"][method]["verdict"]
        # check_rate: -1 inside the 95% bootstrap CI, and the CI narrower than 0.5 (it can tell 1/n from 1/√n).
        assert verdict["passed"], f"{method}: {verdict['reason']}"
    assert (out / "rates.json").exists() and (out / "rates.png").exists()
    record = json.loads((out / "rates.json").read_text())
    assert record["config"]["size"] == "quick" and record["seed"] == 0


def test_rates_tabular_matches_the_fisher_asymptote(rates_results):
    # An independent computation: for the Bradley–Terry MLE, n · E KL(π* ‖ π̂) → c = ½ Σ_x tr(F_x I_x⁺).
    # At the largest n the O(1/n) correction is far below the sampling error, so n · mean must lie
    # within 4 standard errors (from the replicates) of c.
    results, _ = rates_results
    tabular = results["tabular"]
    n = tabular["ns"][-1]
    values = np.asarray(tabular["methods"]["pmle"]["values"][-1])
    se = values.std(ddof=1) / math.sqrt(values.size)
    assert abs(n * values.mean() - tabular["asymptotic_constant"]) <= 4 * n * se


def test_rates_three_estimators_coincide_in_the_tabular_class(rates_results):
    # PMLE's objective is eq. 9 on π_R (R̂ has no ridge by default), RKL (β = 0) returns π_R̂, and
    # distillation's loss is 0 at π_R̂: the same policy up to each Newton solve's gradient
    # tolerance g = 1e-8.  A Hessian's smallest eigenvalue is about D(x) μ(a) μ(b) γ² σ'(m) ≈
    # (1/3)(1/16)(1/4)(0.2) ≈ 1e-3, so the logits agree within g / 1e-3 = 1e-5, and the forward KL
    # (gradient ≈ 0.3 in the logits at errors ≈ 0.1) within 3e-6: a relative 1e-4 at worst.
    results, _ = rates_results
    assert results["tabular"]["separable_fraction"][0] == 0.0  # every maximum likelihood exists
    methods = results["tabular"]["methods"]
    rkl, distillation, pmle = (np.asarray(methods[m]["values"]) for m in ("rkl", "distillation", "pmle"))
    np.testing.assert_allclose(distillation, rkl, rtol=1e-4)
    np.testing.assert_allclose(pmle, rkl, rtol=1e-4)


def test_rates_finite_class_respects_the_corrected_bounds(rates_results):
    results, _ = rates_results
    finite = results["finite"]
    for method in rates.METHODS:
        verdict = finite["methods"][method]["verdict"]
        assert verdict["passed"], f"{method}: {verdict['reason']}"
        # The tightness at every n: the same order statistic check_bound compares, over the bound.
        ratios = finite["methods"][method]["measured_over_bound"]
        assert len(ratios) == len(finite["ns"]) and max(ratios) <= 1
        assert max(ratios) == pytest.approx(verdict["worst_ratio"], rel=1e-12)
        # The printed bound is the corrected one divided by 4 (Lemma 8's ¼ for the proofs' ½, squared).
        corrected = np.asarray(finite["methods"][method]["bound_corrected"])
        printed = np.asarray(finite["methods"][method]["bound_printed"])
        if method == "rkl":
            assert (printed < corrected).all()  # only Thm 7's reward term is multiplied by 4
        else:
            np.testing.assert_allclose(corrected, 4 * printed, rtol=1e-12)
    prop12 = finite["methods"]["pmle"]["prop12_verdict"]
    assert prop12["passed"], prop12["reason"]
    assert results["all_bounds_hold"]


def test_rates_distillation_equals_rkl_on_a_finite_class(rates_results):
    # Under A5 distillation's loss is 0 at π_R̂ ∈ Π, so it picks RKL's member in every dataset.
    results, _ = rates_results
    methods = results["finite"]["methods"]
    assert methods["distillation"]["values"] == methods["rkl"]["values"]
