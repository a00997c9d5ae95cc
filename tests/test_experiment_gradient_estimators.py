"""The gradient-estimators experiment: quick size in CI, the recorded claims at the default size (slow).

Thresholds are derived in comments (float64 round-off for the exact sums, standard errors from
the replicates and the sampled draws); every seed is fixed, so each test is deterministic.
"""

from __future__ import annotations

import json
import math

import pytest

from synthalign import cli
from synthalign.experiments import gradient_estimators
from synthalign.experiments._common import OptionError


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("gradient_estimators")
    args = gradient_estimators.Args(size="quick", out=str(out), progress=False)
    return gradient_estimators.run(args), out


def rows(results):
    for world_name, entry in results["worlds"].items():
        for objective, block in entry["objectives"].items():
            for row in block["rows"]:
                yield world_name, objective, row


def find(block, estimator, kind, placement):
    (row,) = [
        r
        for r in block["rows"]
        if (r["estimator"], r["kl_estimator"], r["kl_placement"]) == (estimator, kind, placement)
    ]
    return row


def test_record_has_every_row(quick):
    results, out = quick
    record = json.loads((out / "gradient-estimators.json").read_text())
    assert (out / "gradient_estimators.png").exists()
    assert record["experiment"] == "gradient-estimators" and record["config"]["size"] == "quick"
    stored = record["results"]
    assert set(stored["worlds"]) == set(gradient_estimators.WORLDS)
    n_rows = len(gradient_estimators.ESTIMATORS) * len(gradient_estimators.CONFIGS)
    for entry in stored["worlds"].values():
        assert set(entry["objectives"]) == set(gradient_estimators.OBJECTIVES)
        for block in entry["objectives"].values():
            assert len(block["rows"]) == n_rows
            for row in block["rows"]:
                for key in ("cosine", "relative_error", "variance", "kl_to_optimum_mean", "kl_to_optimum_se"):
                    assert math.isfinite(row[key])
                assert len(row["kl_to_optimum"]) == stored["replicates"]


def test_every_expected_gradient_is_its_declared_law(quick):
    # Exact finite sums in float64: the expected gradient and the declared gradient are the same
    # function summed in a different order, so they agree to round-off (≈ 1e-15), far below 1e-10.
    results, _ = quick
    assert results["all_as_declared"]
    for world_name, objective, row in rows(results):
        assert row["declared_relative_error"] < 1e-10, (world_name, objective, row["kl_estimator"], row)
        follows_true = row["declared"] == list(gradient_estimators.TRUE_LAW)
        # Rows whose declared law is the true gradient have cosine 1 and relative error 0 (to round-off);
        # the others do not (their law differs at a generic point θ ≠ π0).
        assert (row["relative_error"] < 1e-10) == follows_true, (world_name, objective, row)


def test_exact_variance_matches_the_library_and_the_samples(quick):
    results, _ = quick
    for world_name, objective, row in rows(results):
        if row["library_variance"] is not None:
            # REINFORCE: the same finite sum computed two ways (here and exact_gradient_variance).
            assert row["variance"] == pytest.approx(row["library_variance"], rel=1e-10)
        # RLOO's Hoeffding formula and REINFORCE's, against the sample covariance of independent draws:
        # within 5 standard errors (the s.e. of the mean squared deviation, from the draws themselves).
        z = (row["sampled_variance"] - row["variance"]) / row["sampled_variance_se"]
        assert abs(z) < 5, (world_name, objective, row["estimator"], row["kl_estimator"], row["kl_placement"], z)


def test_k1_in_the_reward_and_the_exact_kl_beat_k1_in_the_loss(quick):
    # k1 in the loss has zero expected KL gradient: it trains the beta = 0 objective, whose optimum is
    # far from the beta-regularized one.  k1 in the reward and the exact KL follow the true gradient.
    # Final KL to the optimum: smaller by more than 3 standard errors of the difference (replicates).
    results, _ = quick
    for world_name, entry in results["worlds"].items():
        for objective, block in entry["objectives"].items():
            for estimator in gradient_estimators.ESTIMATORS:
                wrong = find(block, estimator, "k1", "loss")
                for kind, placement in (("k1", "reward"), ("exact", "exact")):
                    right = find(block, estimator, kind, placement)
                    gap = wrong["kl_to_optimum_mean"] - right["kl_to_optimum_mean"]
                    se = math.hypot(wrong["kl_to_optimum_se"], right["kl_to_optimum_se"])
                    assert gap > 3 * se, (world_name, objective, estimator, kind, gap, se)


def test_bad_options_name_the_field():
    with pytest.raises(OptionError) as err:
        gradient_estimators.Args(samples=1)
    assert err.value.field == "samples"
    with pytest.raises(OptionError) as err:
        gradient_estimators.Args(beta=0.0)
    assert err.value.field == "beta"
    assert cli.main(["run", "gradient-estimators", "--set", "vocab_size=1"]) == cli.EXIT_USAGE


@pytest.mark.slow
def test_default_size_claims(tmp_path):
    results = gradient_estimators.run(gradient_estimators.Args(out=str(tmp_path), progress=False))
    assert results["all_as_declared"] and results["worst_declared_relative_error"] < 1e-10
    for world_name, entry in results["worlds"].items():
        for objective, block in entry["objectives"].items():
            for estimator in gradient_estimators.ESTIMATORS:
                wrong = find(block, estimator, "k1", "loss")
                for kind, placement in (("k1", "reward"), ("k2", "loss"), ("exact", "exact")):
                    right = find(block, estimator, kind, placement)
                    gap = wrong["kl_to_optimum_mean"] - right["kl_to_optimum_mean"]
                    se = math.hypot(wrong["kl_to_optimum_se"], right["kl_to_optimum_se"])
                    assert gap > 3 * se, (world_name, objective, estimator, kind, gap, se)
            for _, _, row in rows({"worlds": {world_name: {"objectives": {objective: block}}}}):
                z = (row["sampled_variance"] - row["variance"]) / row["sampled_variance_se"]
                assert abs(z) < 5, (world_name, objective, row)
