"""Tests of `synthalign.experiments.prop15` at its quick size, each asserting the claim it measures."""

from __future__ import annotations

import math

import pytest
import torch

from synthalign.experiments import prop15

# Every threshold below is derived in a comment (from the experiment's own standard errors, an exact
# identity, or a theorem); the seeds are fixed, so each test is deterministic.


@pytest.fixture(scope="module")
def prop15_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("prop15")
    return prop15.run(prop15.Args(size="quick", out=str(out), progress=False))


def test_prop15_holds_for_every_fit(prop15_results):
    assert prop15_results["holds_everywhere"]
    assert prop15_results["worst_slack"] <= 1
    for rows in prop15_results["estimators"].values():
        for row in rows:
            # the bound's tightness per n: the median slack lies below the largest
            assert 0 <= row["slack_median"] <= row["slack_max"] <= 1
    # The factor's minimum over R is at R = ¼: (4R ∨ 1) e^{8R+1}/R² = e³ · 16 = 321.37.
    assert prop15_results["factor_minimum"] == pytest.approx(16 * math.e**3)


def test_prop15_fits_obey_a2_and_the_termwise_range(prop15_results):
    for name, rows in prop15_results["estimators"].items():
        for row in rows:
            # A2 with constant R ⇒ |ln π̂ − ln π*| <= 4R (spec §4).
            assert row["log_ratio_over_4R_max"] <= 1 + 1e-12, (name, row["n"])
    # reverse/forward lies between the extreme termwise ratios h(−L), h(L) (prop15's docstring).
    assert prop15_results["within_termwise_everywhere"]


def test_prop15_termwise_ratio():
    # h(s) = (s e^s − e^s + 1)/(e^s − 1 − s): h(1) = 1/(e − 2) = 1.3922; h(0) = 1; near 0 it is
    # 1 + s/3 + s²/18 + O(s³), continuous across the switch to the series at |s| = 1e-3.
    s = torch.tensor([1.0, 0.0, -1e-3 - 1e-12, -1e-3 + 1e-12, 1e-3 - 1e-12, 1e-3 + 1e-12], dtype=torch.float64)
    h = prop15.termwise_ratio(s)
    assert h[0].item() == pytest.approx(1 / (math.e - 2), rel=1e-12)
    assert h[1].item() == 1.0
    assert h[2].item() == pytest.approx(h[3].item(), rel=1e-9)
    assert h[4].item() == pytest.approx(h[5].item(), rel=1e-9)
    assert h[4].item() == pytest.approx(1 + 1e-3 / 3 + 1e-6 / 18, rel=1e-9)
    # Increasing: the termwise range [h(−L), h(L)] is right.
    grid = torch.linspace(-20, 20, 4001, dtype=torch.float64)
    assert (prop15.termwise_ratio(grid).diff() > 0).all()
