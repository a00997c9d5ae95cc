"""The experiments at their default (recorded) size: `pytest -m slow`, deselected by default.

The same claims the quick-size tests assert, at the size the README and experiments/README.md
report, so that the recorded figures stay true.
"""

from __future__ import annotations

import pytest

from synthalign.experiments import fig1, rates

pytestmark = pytest.mark.slow


def test_fig1_default_rkl_keeps_falling_while_rlhf_saturates(tmp_path):
    results = fig1.run(fig1.Args(out=str(tmp_path), progress=False))
    for scale, res in results["scales"].items():
        # RKL ends below RLHF, and below its own error at the smallest n.
        assert res["rkl"]["median"][-1] < res["rlhf"]["median"][-1], scale
        assert res["rkl"]["median"][-1] < res["rkl"]["median"][0], scale
        # RLHF's median stays above its exact population floor: its optimum pi0·pi*^(gamma/beta) is never pi*.
        assert res["rlhf"]["median"][-1] > res["rlhf_floor"] > 0, scale


def test_rates_default_slopes_and_bounds(tmp_path):
    results = rates.run(rates.Args(out=str(tmp_path), progress=False))
    for method in rates.METHODS:
        verdict = results["tabular"]["methods"][method]["verdict"]
        assert verdict["passed"], f"{method}: {verdict['reason']}"
        finite = results["finite"]["methods"][method]
        assert finite["verdict"]["passed"], method
        assert max(finite["measured_over_bound"]) == pytest.approx(finite["verdict"]["worst_ratio"], rel=1e-12)
    assert results["all_bounds_hold"]


def test_onpolicy_gap_default_claims(tmp_path):
    # The quick-size claims of tests/test_experiment_onpolicy_gap.py on the default record (n = 1024 … 65536),
    # and where the coverage effect shows: from n = 16384 on at the latest, for both families (at
    # n = 1024 most of Π is statistically indistinguishable from π*).
    import test_experiment_onpolicy_gap as quick_claims

    from synthalign.experiments import onpolicy_gap

    results = onpolicy_gap.run(onpolicy_gap.Args(out=str(tmp_path), progress=False))
    assert max(results["ns"]) >= 16384
    quick_claims.check_gap_class_size(results)
    quick_claims.check_gap_coverage(results)
    quick_claims.check_gap_bounds(results)
    for aim, claim in results["claims"].items():
        assert claim["coverage_effect_appears_at_n"] <= 16384, aim
        for entry in claim["per_n"]:
            if entry["n"] >= 16384:
                assert entry["coverage_growth"][-1]["pmle"]["z"] >= onpolicy_gap.EFFECT_Z, (aim, entry["n"])


def test_strong_base_default_claims(tmp_path):
    # The quick-size claims on the default record: Thm 14's bound at every mix and n, π̂ = π_R̂ under A5,
    # partial coverage at the smallest n, and no gain of distillation on π0's pairs as π0 -> π*.
    import test_experiment_strong_base as quick_claims

    from synthalign.experiments import strong_base

    results = strong_base.run(strong_base.Args(out=str(tmp_path), progress=False))
    quick_claims.check_strong_bound(results)
    quick_claims.check_strong_a5(results)
    quick_claims.check_strong_gains(results)
    # Where the gain does show at the default size (|Π| = 1024): mu fixed and tilted away from π*, no A5,
    # at the smallest n (partial coverage: mu's pairs miss the cells π* weighs), distillation on
    # π*-like π0's pairs beats distillation on mu's pairs (Thm 14's C_0 = 1 against Thm 6's C_Π) by
    # more than 3 standard errors; at the largest n (n ≫ cells) the order is reversed.
    gains = results["cases"]["mu fixed, no A5"]["gains"]
    assert gains[0]["pi0_pairs_over_mu_pairs"]["z"] >= strong_base.GAIN_Z, gains[0]
    assert gains[-1]["pi0_pairs_over_mu_pairs"]["z"] < 0, gains[-1]


def test_degeneracy_default_claims(tmp_path):
    # The quick-size claims of tests/test_degeneracy.py, on the default record.
    import test_degeneracy as quick_claims

    from synthalign.experiments import degeneracy

    args = degeneracy.Args(out=str(tmp_path), progress=False)
    run = (args, degeneracy.run(args), tmp_path)
    for claim in (
        quick_claims.test_every_small_data_figure_comes_from_a_certified_fit,
        quick_claims.test_unregularized_minimizer_set_spans_the_unobserved_mass,
        quick_claims.test_unregularized_fits_drive_observed_losers_to_zero,
        quick_claims.test_regularized_fits_keep_at_least_pi0_mass_where_there_is_no_data,
    ):
        claim(run)
