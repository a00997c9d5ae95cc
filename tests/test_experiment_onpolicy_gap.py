"""Tests of `synthalign.experiments.onpolicy_gap` at its quick size, each asserting the claim it measures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthalign.experiments import onpolicy_gap

# Every threshold below is derived in a comment (from the experiment's own standard errors, an exact
# identity, or a theorem); the seeds are fixed, so each test is deterministic.
# tests/test_experiments_full.py asserts the `check_gap_*` claims on the default-size record too.


@pytest.fixture(scope="module")
def gap_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("gap")
    return onpolicy_gap.run(onpolicy_gap.Args(size="quick", out=str(out), progress=False))


def test_onpolicy_gap_pmle_pays_for_the_class_and_rkl_does_not(gap_results):
    check_gap_class_size(gap_results)


def check_gap_class_size(results):
    """PMLE pays for |Π| at every n and tilt; RKL and distillation (= π_R̂) do not."""
    for aim, claim in results["claims"].items():
        for entry in claim["per_n"]:
            for growth in entry["size_growth"]:
                # PMLE over the largest |Π| against |Π| = |ℛ| at every tilt: more than 3 standard errors
                # (the two share their datasets, which makes this z conservative).
                assert growth["pmle"]["z"] > 3, (aim, entry["n"], growth)
                # RKL's estimate is π_R̂ whatever else Π holds: exactly the same errors.
                assert growth["rkl_ratio"] == 1.0
            # At the largest class PMLE's error exceeds RKL's by more than 3 standard errors at every tilt.
            assert min(entry["pmle_minus_rkl_z_at_largest_class"]) > 3, (aim, entry["n"])
        # Distillation with R̂ ∈ ℛ and 𝒫_γ(ℛ) ⊆ Π returns π_R̂ (its loss is 0 there): always RKL's pick.
        assert claim["distillation_equals_rkl"] == 1.0


def test_onpolicy_gap_pmle_grows_with_coverage_once_n_resolves_the_class(gap_results):
    check_gap_coverage(gap_results)


def check_gap_coverage(results):
    """PMLE's error grows with C_Π at the largest n for both families, and more there than at the smallest n."""
    for aim, claim in results["claims"].items():
        first, last = claim["per_n"][0], claim["per_n"][-1]
        growth = last["coverage_growth"][-1]
        low, high = growth["C_Pi_range"]
        assert high > 5 * low, aim
        # The coverage effect at the largest n: one-sided z > 3 (false-positive rate 0.13% under no
        # effect; tilt 0 and the tilt of largest C_Π use independent datasets).
        assert growth["pmle"]["z"] > 3, (aim, growth)
        assert claim["coverage_effect_appears_at_n"] is not None and claim["coverage_effect_appears_at_n"] <= last["n"]
        # The effect grows with n: at small n most of Π is indistinguishable from π* and the error is the
        # class's average; the two ratios come from independent datasets, so their difference over the
        # hypotenuse of their standard errors is a z-score, asked > 2 (one-sided 2.3%).
        early = first["coverage_growth"][-1]["pmle"]
        z = (growth["pmle"]["ratio"] - early["ratio"]) / math.hypot(growth["pmle"]["se"], early["se"])
        assert z > 2, (aim, early, growth["pmle"])


def test_onpolicy_gap_bounds_hold_with_their_tightness_recorded(gap_results):
    check_gap_bounds(gap_results)


def check_gap_bounds(results):
    assert results["all_bounds_hold"]
    for entry in results["bounds"]:
        assert len(entry["measured_over_bound"]) == len(results["ns"])
        ratios = np.asarray(entry["quantile"]) / np.asarray(entry["bound"])
        np.testing.assert_allclose(entry["measured_over_bound"], ratios, rtol=1e-12)
        # check_bound's worst ratio is the largest of these (the same order statistic)
        assert max(entry["measured_over_bound"]) == pytest.approx(entry["verdict"]["worst_ratio"], rel=1e-12)
        assert max(entry["measured_over_bound"]) <= 1
