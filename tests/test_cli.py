"""Tests of the `synthalign` command line (`synthalign.cli`) and of the thin scripts in experiments/."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
import torch

from synthalign import cli
from synthalign.experiments import EXPERIMENTS, onpolicy_gap, prop15, rates, strong_base

REPO = pathlib.Path(__file__).resolve().parents[1]


def _one_line_error(capsys, argv, *fragments):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("synthalign: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert captured.out == ""


def test_list_names_every_experiment(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.strip().splitlines()]
    assert listed == list(EXPERIMENTS)


def test_run_quick_writes_json_and_png(tmp_path, capsys):
    code = cli.main(
        ["run", "fig1", "--quick", "--replicates", "8", "--seed", "3", "--out", str(tmp_path), "--no-progress"]
    )
    assert code == 0
    record = json.loads((tmp_path / "fig1.json").read_text())
    assert record["seed"] == 3
    assert record["config"]["size"] == "quick"
    assert record["results"]["replicates"] == 8
    png = tmp_path / "fig1.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "RLHF population floor" in out  # the summary table
    assert str(tmp_path / "fig1.json") in out and str(png) in out  # where files were written


def test_set_passes_experiment_options(tmp_path):
    argv = ["run", "fig1", "--quick", "--replicates", "4", "--out", str(tmp_path), "--no-progress"]
    argv += ["--set", "logit_scales=1.0", "--set", "log2_n_max=8", "--set", "plot=false"]
    assert cli.main(argv) == 0
    results = json.loads((tmp_path / "fig1.json").read_text())["results"]
    assert list(results["scales"]) == ["1.0"]
    assert results["n"] == [32, 64, 128, 256]
    assert not (tmp_path / "fig1.png").exists()


def test_unknown_experiment(capsys):
    _one_line_error(capsys, ["run", "no-such-experiment"], "unknown experiment", "fig1")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["run", "fig1", "--replicates", "0"], "--replicates"),
        (["run", "fig1", "--replicates", "many"], "--replicates"),
        (["run", "fig1", "--device", "tpu"], "--device"),
        (["run", "fig1", "--seed", "-1"], "--seed"),
        (["run", "fig1", "--quick", "--full"], "--full"),
        (["run", "fig1", "--set", "no_such_field=1"], "no_such_field"),
        (["run", "fig1", "--set", "n_betas=many"], "n_betas"),
        (["run", "fig1", "--set", "n_betas"], "FIELD=VALUE"),
        (["run", "fig1", "--set", "n_betas=10"], "n_betas"),  # the experiment's own validation
        (["run", "fig1", "--replicates", "1"], "replicates"),
        (["run", "fig1", "--bogus"], "--bogus"),
        (["frobnicate"], "frobnicate"),
        ([], "required"),
    ],
)
def test_bad_options_exit_2_with_one_line(capsys, argv, fragment):
    _one_line_error(capsys, argv, fragment)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_but_unavailable(capsys):
    _one_line_error(capsys, ["run", "fig1", "--device", "cuda"], "CUDA is not available")


def test_listed_experiment_without_a_module(capsys, monkeypatch):
    monkeypatch.setitem(EXPERIMENTS, "not-written-yet", "an experiment whose module does not exist")
    _one_line_error(capsys, ["run", "not-written-yet"], "not available", "not_written_yet")


def test_python_dash_m_and_the_thin_script():
    # One subprocess each (torch's import dominates): the module entry point and experiments/degeneracy.py.
    listed = subprocess.run([sys.executable, "-m", "synthalign", "list"], capture_output=True, text=True, cwd=REPO)
    assert listed.returncode == 0, listed.stderr
    assert "fig1" in listed.stdout
    script = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "degeneracy.py"), "--set", "no_such_field=1"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert script.returncode == 2
    lines = script.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_such_field" in lines[0]


_IMPORTS_AFTER = """
import contextlib, io, sys
import synthalign.cli
with contextlib.redirect_stdout(io.StringIO()):
    code = synthalign.cli.main({argv!r})
    try:
        synthalign.cli.main(["--help"])
    except SystemExit as stop:
        assert stop.code == 0
print(code, sorted(name for name in ("torch", "matplotlib", "numpy", "scipy") if name in sys.modules))
"""


@pytest.mark.parametrize("argv", [["list"], ["run", "no-such-experiment"]])
def test_list_and_help_import_neither_torch_nor_matplotlib(argv):
    # `synthalign list`, `--help` and a bad experiment name are answered without the numerical stack.
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTS_AFTER.format(argv=argv)], capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    code, loaded = done.stdout.strip().split(" ", 1)
    assert int(code) == (0 if argv == ["list"] else 2)
    assert loaded == "[]"


def test_flat_api_is_lazy_and_complete():
    # The flat API resolves every public name on first use; importing the package loads no torch.
    source = (
        "import sys, synthalign as sa\n"
        "before = 'torch' in sys.modules\n"
        "missing = [name for name in sa.__all__ if not hasattr(sa, name)]\n"
        "print(before, missing, set(sa.__all__) <= set(dir(sa)), sa.World is sa.worlds.World)\n"
    )
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "[]", "True", "True"]


@pytest.mark.parametrize("module", [rates, onpolicy_gap, strong_base, prop15])
def test_experiment_command_line(module):
    # The one dialect of `synthalign run NAME` and `python experiments/NAME.py` (synthalign.cli).
    argv = ["--quick", "--replicates", "3", "--set", "plot=false", "--set", "radius=0.1,0.2"]
    args = cli.experiment_args(module.NAME, argv)
    assert args.size == "quick" and args.n_replicates == 3 and args.plot is False
    assert args.radius == (0.1, 0.2)
