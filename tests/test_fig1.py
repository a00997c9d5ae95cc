"""Tests of the Figure 1 experiment (`synthalign.experiments.fig1`): its pieces against the library, then its claims."""

from __future__ import annotations

import json
import math

import pytest
import torch

import synthalign as sa
from synthalign.experiments import fig1

SCALES = (0.1, 1.0)


# ----------------------------------------------------------------------------- pieces


def test_stacked_datasets_of_different_n_fit_as_if_alone():
    # fig1 fits every n in one batch; the per-replicate normalization and the summed-loss ridge
    # make that identical (up to the stopping rule) to fitting each dataset on its own.
    world = sa.World.paper_toy(0, logit_scale=1.0)
    small = world.sample_preferences(32, replicates=2, seed=1)
    large = world.sample_preferences(1024, replicates=2, seed=2)
    stacked = sa.PreferenceData(torch.cat([small.counts, large.counts]), None, world)
    together = sa.fit_reward_model(stacked, ridge=1e-2, tol=1e-11).reward
    alone = [sa.fit_reward_model(data, ridge=1e-2, tol=1e-11).reward for data in (small, large)]
    torch.testing.assert_close(together, torch.cat(alone), rtol=0, atol=1e-8)


def test_args_validation_names_the_argument():
    for field, value in [
        ("n_betas", 10),
        ("beta_choice", "magic"),
        ("logit_scales", (0.0,)),
        ("ridge_sum", 0.0),
        ("replicates", 1),
        ("log2_n_max", 3),
        ("band", (0.6, 0.9)),
        ("size", "huge"),
        ("seed", -1),
    ]:
        with pytest.raises(ValueError, match=field):
            fig1.Args(**{field: value})


# ----------------------------------------------------------------------------- the claims


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("fig1")
    args = fig1.Args(out=str(out), size="quick", progress=False, plot=False)
    return args, fig1.run(args), out


def test_quick_run_writes_the_record(quick):
    args, results, out = quick
    record = json.loads((out / "fig1.json").read_text())
    assert record["experiment"] == "fig1"
    assert record["results"]["n"] == args.ns
    assert record["results"]["replicates"] == args.n_replicates
    assert len(record["results"]["betas"]) >= 30
    assert "RLHF population floor" in fig1.summary(results)


@pytest.mark.parametrize("scale", SCALES)
def test_rkl_ends_below_rlhf(quick, scale):
    _, results, _ = quick
    res = results["scales"][str(scale)]
    assert res["rkl"]["median"][-1] < res["rlhf"]["median"][-1]


@pytest.mark.parametrize("scale", SCALES)
def test_rkl_follows_the_one_over_n_rate(quick, scale):
    # The oracle picks the best beta of a grid that holds beta = 0, so for every replicate its
    # forward KL is at most that of pi_R̂ (beta = 0), whose mean is c/n (1 + O(1/n)) with c from the
    # Fisher information; a median sits below the mean of these right-skewed, chi-square-like errors.
    # Margin 1.25: four standard errors of a median of 40 replicates (≈ 1.25 · 0.3 / √40 ≈ 6%, with
    # sd/mean ≈ 0.3 measured from the band), which also covers the O(1/n) correction (≈ 3% at n = 2^16).
    args, results, _ = quick
    res = results["scales"][str(scale)]
    n_max = args.ns[-1]
    rate = res["rkl_asymptotic_constant"] / n_max
    assert res["rkl"]["median"][-1] <= 1.25 * rate
    assert res["rkl"]["median"][-1] <= res["rkl"]["beta0"]["median"][-1] * (1 + 1e-12)


def test_rkl_keeps_falling_while_rlhf_saturates(quick):
    # Over the last two octaves (n/4 -> n) the 1/n rate divides the error by 4, where the data
    # dominate the prior pi0 (c/(n/4) ≤ KL(pi* ‖ pi0)/10).  Margin 1.5 on the factor: two medians
    # with ≈ 6% standard error each and the O(1/n) correction, so RKL must fall by ≥ 4/1.5 ≈ 2.7,
    # while RLHF, held up by its floor, falls by less than 1.5.
    args, results, _ = quick
    n_max, quarter = args.ns[-1], args.ns.index(args.ns[-1] // 4)
    checked = 0
    for res in results["scales"].values():
        if res["rkl_asymptotic_constant"] / (n_max / 4) > res["kl_target_reference"] / 10:
            continue
        checked += 1
        assert res["rkl"]["median"][quarter] / res["rkl"]["median"][-1] >= 4 / 1.5
        assert res["rlhf"]["median"][quarter] / res["rlhf"]["median"][-1] <= 1.5
    assert checked >= 1


def test_rlhf_stays_above_its_population_floor(quick):
    # Every replicate obeys FKL ≥ floor + (first-order term of mean ≈ 0)
    # (test_rlhf_cannot_beat_its_floor_beyond_first_order), so the median cannot fall below the
    # floor by more than the sampling error of a median: 3 · 1.2533 · sd / √R.
    args, results, _ = quick
    for res in results["scales"].values():
        stats = res["rlhf"]
        error = 3 * 1.2533 * stats["std"][-1] / math.sqrt(args.n_replicates)
        assert stats["median"][-1] >= res["rlhf_floor"] - error
    # At logit scale 1 the data are informative enough that RKL beats the best RLHF can ever do.
    scale_one = results["scales"]["1.0"]
    assert scale_one["rkl"]["median"][-1] < scale_one["rlhf_floor"]


def test_heldout_choice_of_beta_runs_and_learns(tmp_path):
    args = fig1.Args(
        out=str(tmp_path),
        logit_scales=(1.0,),
        log2_n_min=8,
        log2_n_max=14,
        replicates=10,
        beta_choice="heldout",
        progress=False,
        plot=False,
    )
    results = fig1.run(args)
    assert results["beta_choice"] == "heldout"
    rkl = results["scales"]["1.0"]["rkl"]["median"]
    # With beta chosen on held-out pairs RKL still learns: 64 times the data, at least 8 times less error.
    assert rkl[-1] < rkl[0] / 8
