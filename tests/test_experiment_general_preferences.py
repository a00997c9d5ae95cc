"""Tests of `synthalign.experiments.general_preferences` at its quick size: record, figure, what its numbers obey."""

from __future__ import annotations

import json

import pytest

from synthalign.experiments import general_preferences


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("general_preferences")
    # The quick size with fewer iterations and one n, to keep the default suite short.
    args = general_preferences.Args(size="quick", out=str(out), progress=False, iterations=25, log2_n_max=6)
    return out, general_preferences.run(args)


def test_record_and_figure_are_written(results):
    out, values = results
    record = json.loads((out / "general-preferences.json").read_text())
    assert record["experiment"] == "general-preferences"
    assert (out / "general_preferences.png").exists()
    assert set(record["results"]["families"]) == {"random", "cyclic"}
    assert "extragradient" in general_preferences.summary(values)


def test_gaps_are_nonnegative_and_zero_only_at_the_equilibrium(results):
    _, values = results
    for entry in values["families"].values():
        # The exact equilibrium's gap is 0 to float64 rounding of numbers of size 1/beta = 10.
        assert abs(entry["equilibrium_gap"]) <= 1e-13 * 10
        for curve in entry["curves"].values():
            assert min(curve) >= -1e-13 * 10
        for rows in entry["vs_n"].values():
            assert all(row["q10"] >= -1e-13 * 10 for row in rows)
        # DPO and RKL target the BT projection, not the equilibrium: a gap bounded away from 0.
        assert entry["final"]["dpo"] > 1e-3 and entry["final"]["rkl"] > 1e-3
        # Extragradient contracts: after the quick run's iterations its gap is far below the start.
        curve = entry["curves"]["extragradient"]
        assert curve[-1] < 1e-2 * curve[0]


def test_mixed_pair_samplers_beat_the_uniform_one(results):
    _, values = results
    rows = values["samplers"]
    # Uniform: linear, at the rate the linearization predicts; mixed: order ≈ 2, at rounding in a few steps.
    uniform = rows["uniform"]
    assert uniform["measured_rate"] == pytest.approx(uniform["predicted_rate"], rel=2e-2)
    assert max(uniform["orders"][2:]) < 1.2
    for sampler in ("mix_reward", "mix_policy"):
        assert max(rows[sampler]["orders"]) > 1.8
        assert rows[sampler]["iterations_to_1e-10"] < uniform["iterations_to_1e-10"]
    assert "mix_policy" in general_preferences.sampler_summary(values)
