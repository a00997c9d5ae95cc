"""The pieces several experiments share: option checks, sweep grids, record statistics and panel helpers.

Every expected value is derived in a comment; the experiments that use these pieces are checked, at
their quick size, by their own test files.
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from synthalign.experiments import _common, _plots, onpolicy_gap, prop15, rates, strong_base
from synthalign.experiments._common import OptionError


def test_log2_grid_and_its_range_check():
    assert _common.log2_grid(3, 6) == [8, 16, 32, 64]
    assert _common.log2_grid(6, 10, step=2) == [64, 256, 1024]  # 2^6, 2^8, 2^10
    _common.check_log2_range(5, 6)
    _common.check_log2_range(5, 5, equal=True)
    for low, high, options in [(5, 5, {}), (0, 4, {}), (5, 41, {}), (5, 31, {"limit": 30}), (5.0, 8, {})]:
        with pytest.raises(OptionError) as err:
            _common.check_log2_range(low, high, **options)
        assert err.value.field == "log2_n_max" and "log2_n_min" in str(err.value)
    with pytest.raises(OptionError, match="class_log2_n_min < class_log2_n_max") as err:
        _common.check_log2_range(6, 6, names=("class_log2_n_min", "class_log2_n_max"))
    assert err.value.field == "class_log2_n_max"


def test_option_checks_name_the_option():
    args = types.SimpleNamespace(gamma=0.5, beta=0.0, scale=math.inf, word="one")
    _common.check_positive(args, "gamma")
    for name in ("beta", "scale", "word"):
        with pytest.raises(OptionError) as err:
            _common.check_positive(args, "gamma", name)
        assert err.value.field == name
    _common.check_integer("size", 2, 2)
    for value in (1, True, 2.0, "2"):
        with pytest.raises(OptionError, match="size must be an integer >= 2"):
            _common.check_integer("size", value, 2)
    _common.check_increasing("ns", (1, 4, 16))
    for values in ((4, 1), (1, 1), (0, 1), (1, True, 3)):
        with pytest.raises(OptionError, match="ns must be increasing"):
            _common.check_increasing("ns", values)
    assert _common.check_radius([0, 1]) == (0.0, 1.0)
    for radius in ((0.5, 0.1), (0.0, 0.0), (0.1,)):
        with pytest.raises(OptionError, match="radius"):
            _common.check_radius(radius)
    _common.check_delta(0.1)
    for delta in (0.0, 1.0, "0.1"):
        with pytest.raises(OptionError, match="delta"):
            _common.check_delta(delta)


@pytest.mark.parametrize("module", [rates, onpolicy_gap, strong_base, prop15])
def test_experiment_args_reject_bad_input(module):
    with pytest.raises(ValueError, match="size"):
        module.Args(size="huge")
    with pytest.raises(ValueError, match="replicates"):
        module.Args(replicates=1)
    with pytest.raises(ValueError, match="seed"):
        module.Args(seed=-1)


def test_sized_reads_the_size_table_only_for_unset_options():
    table = {"quick": (3, 4), "default": (5, 6), "full": (7, 8)}
    quick = rates.Args(size="quick")
    assert quick.sized(None, table, 1) == 4 and quick.sized(9, table, 1) == 9
    assert rates.Args().sized(None, table, 0) == 5
    # rates' own table: quick is (13, 64, 256, 12), so n = 2^9 … 2^13 in part A and 2^5 … 2^12 in part B.
    assert quick.ns == [2**k for k in range(9, 14)] and quick.class_ns == [2**k for k in range(5, 13)]
    assert quick.n_replicates == 64 and rates.Args(size="quick", replicates=3).n_replicates == 3


def test_derive_seed_is_one_stream_per_key_tuple():
    assert _common.derive_seed(0, 1, 2) == _common.derive_seed(0, 1, 2)
    assert _common.derive_seed(0, 1, 2) != _common.derive_seed(0, 2, 1)
    # SeedSequence([0, 1, 2]).generate_state(1)[0], as the experiments derived it before.
    assert _common.derive_seed(0, 1, 2) == int(np.random.SeedSequence([0, 1, 2]).generate_state(1)[0])


def test_mean_se_and_band_stats():
    # [1, 2, 3]: mean 2, sample standard deviation 1, standard error 1/√3, median 2.
    stats = _common.mean_se(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert stats == {"mean": 2.0, "se": pytest.approx(1 / math.sqrt(3), rel=1e-15), "median": 2.0}
    rows = _common.mean_se(torch.tensor([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]], dtype=torch.float64))
    assert rows["mean"] == [2.0, 2.0] and rows["se"][1] == 0.0 and rows["median"] == [2.0, 2.0]
    # 0, 1, …, 10: the 10% and 90% quantiles (linear interpolation) are 1 and 9, the median 5.
    band = _common.band_stats(torch.arange(11, dtype=torch.float32))
    assert band["low"] == pytest.approx(1.0) and band["median"] == 5.0 and band["high"] == pytest.approx(9.0)
    assert band["mean"] == 5.0 and band["std"] == pytest.approx(math.sqrt(11.0), rel=1e-12)  # Σ(k−5)²/10 = 11


def test_two_means_ratio_and_z():
    larger, smaller = {"mean": 2.0, "se": 0.3}, {"mean": 1.0, "se": 0.4}
    # z = (2 − 1)/√(0.3² + 0.4²) = 1/0.5 = 2; ratio 2 with s.e. 2·√(0.15² + 0.4²) = 2·0.42720 = 0.85440.
    assert _common.z_score(larger, smaller) == pytest.approx(2.0, rel=1e-15)
    ratio = _common.mean_ratio(larger, smaller)
    assert (
        ratio["ratio"] == 2.0
        and ratio["se"] == pytest.approx(0.854400, rel=1e-6)
        and ratio["z"] == _common.z_score(larger, smaller)
    )
    exact = {"mean": 1.0, "se": 0.0}
    assert _common.z_score({"mean": 3.0, "se": 0.0}, exact) == math.inf and _common.z_score(exact, exact) == 0.0


def test_holds_from_is_the_first_n_of_a_run_to_the_end():
    assert _common.holds_from([1, 2, 4, 8], [True, False, True, True]) == 4
    assert _common.holds_from([1, 2, 4, 8], [True, True, True, False]) is None
    assert _common.holds_from([1, 2], [True, True]) == 1


def test_over_bound_is_the_order_statistic_over_the_bound():
    values = torch.tensor([[4.0, 1.0, 3.0, 2.0]], dtype=torch.float64)
    measured = _common.over_bound(values, torch.tensor([6.0], dtype=torch.float64), 0.5)
    # The "higher" median of 1, 2, 3, 4 is 3: 3/6 = 0.5.  The CI's ranks are 4·0.5 ∓ 1.96·√(4·0.25) = 2 ∓ 1.96,
    # rounded outwards and clipped: ranks 1 and 4, the values 1 and 4, over 6.
    assert measured["quantile"] == [3.0] and measured["ratio"] == [0.5]
    assert measured["ratio_ci"] == [[1 / 6], [4 / 6]]
    assert _common.over_bound(values.numpy(), [6.0], 0.5) == measured


def test_table_cells():
    slope = {"slope": -1.0024, "ci_low": -1.1012, "ci_high": -0.9031}
    assert _common.slope_cells(slope) == " -1.002 | [ -1.101,  -0.903]"
    assert _plots.slope_text(slope) == "slope -1.00 [-1.10, -0.90]"
    assert _common.verdict_word({"passed": True}) == "pass" and _common.verdict_word({"passed": False}) == "FAIL"


def test_random_world_takes_the_experiments_world_options():
    args = rates.Args(n_prompts=2, n_responses=3, logit_scale=0.7, seed=4)
    world = _common.random_world(args)
    assert (world.n_prompts, world.n_responses, world.gamma) == (2, 3, args.gamma)
    again = _common.random_world(args, gamma=0.25, n_responses=5)
    assert (again.n_responses, again.gamma) == (5, 0.25)
    import synthalign as sa

    expected = sa.World.random(2, 3, gamma=args.gamma, logit_scale=0.7, seed=4, device="cpu")
    assert torch.equal(world.target.logp, expected.target.logp) and torch.equal(
        world.behavior.logp, expected.behavior.logp
    )


def test_panel_helpers_draw_what_they_say():
    fig, ax = _common.new_figure()
    line = _plots.band_line(
        ax, [1, 2, 4], [1.0, 0.5, 0.25], [0.9, 0.4, 0.2], [1.1, 0.6, 0.3], color="tab:red", label="a"
    )
    _plots.bound_line(ax)
    _plots.style_axes(ax, ylabel="error", title="t", title_size=8)
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2 and ax.get_yscale() == "log"
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (_plots.N_PAIRS, "error", "t")
    assert ax.title.get_fontsize() == 8
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["a", "bound"]
    (band,) = ax.collections
    assert line.get_color() == "tab:red" and np.allclose(
        band.get_facecolor()[0][:3], (0.8392, 0.1529, 0.1569), atol=1e-3
    )
    assert band.get_linewidth()[0] == 0  # no outline unless asked
    _, plain = _common.new_figure()
    _plots.style_axes(plain, xscale=None, yscale=None, ylabel="y", legend_size=None, grid=None)
    assert plain.get_xscale() == "linear" and plain.get_legend() is None
