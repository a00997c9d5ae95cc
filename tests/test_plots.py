"""Figures and summary tables that a person reads.

Every plot is made without pyplot, so it never selects or switches matplotlib's global backend (a
notebook's inline plots keep working after an experiment has plotted), and is written as PNG at
150 dpi or more with an SVG of the same stem.  Every summary table is followed by a legend with one
line per column.  Each experiment runs here at a tiny size: only its figure and table are checked.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import matplotlib
import pytest

from synthalign.experiments import fig1, general_preferences, gradient_estimators, misspecification, onpolicy_rates
from synthalign.experiments._common import FIGURE_DPI, column_legend, new_figure, save_figure

REPO = pathlib.Path(__file__).resolve().parents[1]
SENTINEL_BACKEND = "pdf"
"""A non-interactive backend other than Agg, selected before plotting: it must still be selected after."""

TINY = {
    "fig1": (fig1, "fig1", dict(replicates=2, log2_n_max=7, logit_scales=(1.0,))),
    "gradient-estimators": (
        gradient_estimators,
        "gradient_estimators",
        dict(
            replicates=2,
            steps=2,
            variance_draws=2,
            samples=2,
            tabular_prompts=1,
            tabular_responses=2,
            vocab_size=2,
            max_length=2,
            sequence_prompts=1,
        ),
    ),
    "general-preferences": (
        general_preferences,
        "general_preferences",
        dict(replicates=2, iterations=3, log2_n_max=6, n_prompts=1, n_responses=3),
    ),
    "misspecification": (
        misspecification,
        "misspecification",
        dict(replicates=2, dims=(2,), log2_n_min=8, log2_n_max=9, betas=(1.0, 0.1)),
    ),
    "onpolicy-rates": (
        onpolicy_rates,
        "onpolicy_rates",
        dict(
            replicates=2,
            log2_n_min=10,
            log2_n_max=11,
            budgets=(2,),
            steps=3,
            n_boot=100,
            vocab_size=2,
            max_length=2,
            n_prompts=1,
        ),
    ),
}


def png_dpi(path: pathlib.Path) -> float:
    """The resolution a PNG declares in its pHYs chunk (pixels per metre → dots per inch)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    at = data.find(b"pHYs")
    assert at > 0, f"{path} declares no resolution"
    x_per_metre, y_per_metre, unit = struct.unpack(">IIB", data[at + 4 : at + 13])
    assert unit == 1 and x_per_metre == y_per_metre
    return x_per_metre * 0.0254


def assert_png_and_svg(png: pathlib.Path) -> None:
    assert png.suffix == ".png" and png.is_file()
    assert png_dpi(png) >= 150
    svg = png.with_suffix(".svg")
    root = ElementTree.parse(svg).getroot()  # well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"


@contextlib.contextmanager
def sentinel_backend():
    """Selects SENTINEL_BACKEND for the block (with pyplot loaded, as in a notebook), then restores."""
    import matplotlib.pyplot as pyplot

    previous = matplotlib.get_backend()
    matplotlib.use(SENTINEL_BACKEND)
    try:
        yield pyplot
    finally:
        matplotlib.use(previous)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Results and Args of every experiment here, at a tiny size, without plotting."""
    runs = {}
    for name, (module, _, options) in TINY.items():
        out = tmp_path_factory.mktemp(name)
        args = module.Args(out=str(out), size="quick", progress=False, plot=False, **options)
        runs[name] = (module.run(args), args)
    return runs


@pytest.mark.parametrize("name", list(TINY))
def test_plot_keeps_the_backend_and_writes_png_and_svg(name, tiny_runs):
    module, stem, _ = TINY[name]
    results, args = tiny_runs[name]
    with sentinel_backend() as pyplot:
        figures_before = pyplot.get_fignums()
        module.plot(results, args)
        assert matplotlib.get_backend() == SENTINEL_BACKEND
        assert pyplot.get_fignums() == figures_before  # nothing registered with pyplot, nothing left open
    assert_png_and_svg(pathlib.Path(args.out) / f"{stem}.png")


def test_a_run_from_the_command_line_never_imports_pyplot(tmp_path):
    # A fresh interpreter, as a notebook kernel would be: after a full `synthalign run`, pyplot is
    # still not imported and the backend the user chose is still selected.
    code = (
        "import sys, matplotlib\n"
        f"matplotlib.use({SENTINEL_BACKEND!r})\n"
        "from synthalign import cli\n"
        "argv = ['run', 'fig1', '--quick', '--replicates', '2', '--set', 'log2_n_max=6', '--set', "
        f"'logit_scales=1.0', '--out', {str(tmp_path)!r}, '--no-progress']\n"
        "assert cli.main(argv) == 0\n"
        "print('backend', matplotlib.get_backend())\n"
        "print('pyplot', 'matplotlib.pyplot' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("MPLBACKEND", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"backend {SENTINEL_BACKEND}" in done.stdout
    assert "pyplot False" in done.stdout
    assert_png_and_svg(tmp_path / "fig1.png")
    assert str(tmp_path / "fig1.svg") in done.stdout  # the CLI lists both files it wrote


def test_save_figure_writes_both_formats_at_the_figure_dpi(tmp_path):
    fig, axes = new_figure(1, 2, figsize=(4.0, 2.0))
    assert len(axes) == 2
    axes[0].plot([1, 2], [3, 4])

    class Out:
        out = str(tmp_path)

    png = save_figure(fig, Out, "example.png")
    assert png == tmp_path / "example.png"
    assert_png_and_svg(png)
    assert abs(png_dpi(png) - FIGURE_DPI) < 0.5


def test_save_figure_closes_a_figure_pyplot_manages(tmp_path):
    class Out:
        out = str(tmp_path)

    with sentinel_backend() as pyplot:
        fig = pyplot.figure()
        number = fig.number
        save_figure(fig, Out, "managed")
        assert number not in pyplot.get_fignums()
    assert_png_and_svg(tmp_path / "managed.png")


def legend_names(summary: str) -> list[str]:
    """The column names of the legend under a summary table (the indented lines after 'columns:')."""
    lines = summary.splitlines()
    assert "columns:" in lines, summary
    names = []
    for line in lines[lines.index("columns:") + 1 :]:
        if not line.startswith("  "):
            break
        body = line[2:]
        assert "  " in body, f"legend line without an explanation: {line!r}"
        names.append(body[: body.index("  ")])  # names are padded so that the explanations align
    return names


def header_columns(summary: str, first: str) -> list[str]:
    """The column names in the table's header lines: those whose first cell starts with `first`.

    Cells are separated by '|'; within a cell, columns side by side are separated by 2+ spaces.
    """
    lines = summary.splitlines()
    columns = []
    for line in lines[: lines.index("columns:")]:
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) > 1 and cells[0].startswith(first):
            columns += [name for cell in cells for name in re.split(r"\s{2,}", cell) if name]
    return columns


@pytest.mark.parametrize("name", list(TINY))
def test_every_table_column_is_explained_in_one_line(name, tiny_runs):
    module = TINY[name][0]
    results, _ = tiny_runs[name]
    summary = module.summary(results)
    names = legend_names(summary)
    assert len(names) == len(set(names)) >= 2
    columns = header_columns(summary, names[0])
    assert columns, f"no table header starting with {names[0]!r}:\n{summary}"
    # Every column of the table has its line, and every line is a column of the table.
    assert set(columns) == set(names), f"columns {sorted(set(columns))} against legend {names}"


def test_fig1_legend_says_what_scale_and_the_asymptote_are(tiny_runs):
    results, _ = tiny_runs["fig1"]
    lines = fig1.summary(results).splitlines()
    legend = dict(zip(["scale", "n", "RLHF", "RKL", "RKL c/n"], lines[lines.index("columns:") + 1 :][:5], strict=True))
    assert legend["scale"].split()[0] == "scale" and "logits of pi* and pi0" in legend["scale"]
    assert "preference pairs" in legend["n"]
    assert "nats" in legend["RLHF"] and "median" in legend["RLHF"]
    assert legend["RKL c/n"].split()[:2] == ["RKL", "c/n"] and "asymptotic" in legend["RKL c/n"]


def test_onpolicy_rates_explains_its_identical_rows(tiny_runs):
    results, _ = tiny_runs["onpolicy-rates"]
    summary = onpolicy_rates.summary(results)
    rows = {}
    for line in summary.splitlines():
        for name in onpolicy_rates.EXACT:
            if line.strip().startswith(onpolicy_rates.LABELS[name] + " |"):
                rows[name] = line.split("|", 1)[1]
    identical = [name for name in onpolicy_rates.EXACT if rows[name] == rows["rkl_exact"]]
    # PMLE, distillation on mu's pairs and RKL's exact minimizer are one policy in the full tabular class.
    assert {"pmle", "distillation_mu", "rkl_exact"} <= set(identical)
    note = [line for line in summary.splitlines() if line.startswith("Identical rows")]
    assert len(note) == 1 and "pi_R̂" in note[0]


def test_column_legend_aligns_names_and_rejects_bad_input():
    text = column_legend({"n": "preference pairs", "RKL c/n": "the asymptote"})
    assert text.splitlines() == ["columns:", "  n        preference pairs", "  RKL c/n  the asymptote"]
    assert column_legend([("a", "first"), ("b", "second")]).splitlines()[1:] == ["  a  first", "  b  second"]
    with pytest.raises(ValueError, match="at least one column"):
        column_legend({})
    with pytest.raises(ValueError, match="one line"):
        column_legend({"n": "two\nlines"})
    with pytest.raises(ValueError, match="non-empty"):
        column_legend({"n": ""})
