"""The one command-line dialect of the theory experiments: `synthalign.cli.experiment_args` on each one's `Args`."""

from __future__ import annotations

import pytest

from synthalign import cli
from synthalign.experiments import onpolicy_gap, prop15, rates, strong_base


@pytest.mark.parametrize("module", [rates, onpolicy_gap, strong_base, prop15])
def test_experiment_command_line(module):
    # The one dialect of `synthalign run NAME` and `python experiments/NAME.py` (synthalign.cli).
    argv = ["--quick", "--replicates", "3", "--set", "plot=false", "--set", "radius=0.1,0.2"]
    args = cli.experiment_args(module.NAME, argv)
    assert args.size == "quick" and args.n_replicates == 3 and args.plot is False
    assert args.radius == (0.1, 0.2)
