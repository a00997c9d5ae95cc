"""What several experiments' figures draw the same way: a panel's scales, labels, legend and grid; a
line with its shaded band; the reference line a ratio is held against; a bootstrap slope in a
legend; a figure's title and layout before it is saved.

Each function draws on axes of a figure from `synthalign.experiments._common.new_figure`; nothing here
imports pyplot.  What a panel shows, and in which colours, stays in the experiment's own `plot`.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from synthalign.experiments._common import CommonArgs, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

__all__ = ["N_PAIRS", "style_axes", "band_line", "bound_line", "slope_text", "finish_figure"]

N_PAIRS = "n (preference pairs per dataset)"
"""The x label of every panel against n."""


def style_axes(
    ax: Axes,
    *,
    ylabel: str,
    xlabel: str = N_PAIRS,
    title: str | None = None,
    title_size: float | None = None,
    xscale: str | None = "log2",
    yscale: str | None = "log",
    legend_size: float | None = 7,
    legend_columns: int = 1,
    grid: str | None = "both",
) -> None:
    """The finish of a panel: its scales, labels, title, legend and a light grid.

    `xscale` "log2" is a log scale in base 2 (the n = 2^k sweeps), any other name is passed to
    `set_xscale`, None leaves the scale linear; likewise `yscale`.  `legend_size` None draws no
    legend, `grid` None no grid (else the ticks it follows: "both", "major").  Call it after
    everything the legend lists is drawn.
    """
    if xscale == "log2":
        ax.set_xscale("log", base=2)
    elif xscale is not None:
        ax.set_xscale(xscale)
    if yscale is not None:
        ax.set_yscale(yscale)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title is not None:
        ax.set_title(title, **({} if title_size is None else {"fontsize": title_size}))
    if legend_size is not None:
        ax.legend(fontsize=legend_size, ncol=legend_columns)
    if grid is not None:
        ax.grid(True, which=grid, alpha=0.3)


def band_line(
    ax: Axes,
    x: Sequence[float],
    y: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    fmt: str = "o-",
    *,
    alpha: float = 0.15,
    edge: bool = False,
    **line_options: Any,
) -> Line2D:
    """A line and, in its colour, the band from `low` to `high` (a CI, or quantiles over replicates).

    `line_options` go to `Axes.plot` (colour, label, marker size); `edge` draws the band's outline too.
    """
    (line,) = ax.plot(x, y, fmt, **line_options)
    ax.fill_between(x, low, high, color=line.get_color(), alpha=alpha, **({} if edge else {"lw": 0}))
    return line


def bound_line(ax: Axes, label: str = "bound", ls: str = "--") -> None:
    """The line y = 1 that a measured/bound ratio stays under (or a measured/floor ratio above)."""
    ax.axhline(1.0, color="k", ls=ls, lw=1, label=label)


def slope_text(slope: Mapping[str, float]) -> str:
    """A fitted slope and its bootstrap CI for a legend: ``slope -1.00 [-1.10, -0.90]``."""
    return f"slope {slope['slope']:.2f} [{slope['ci_low']:.2f}, {slope['ci_high']:.2f}]"


def finish_figure(
    fig: Figure,
    args: CommonArgs,
    filename: str,
    *,
    title: str | None = None,
    title_size: float | None = 10,
    **spacing: float,
) -> pathlib.Path:
    """The figure's title, its panels' spacing (`Figure.subplots_adjust` keywords), then `save_figure`."""
    if title is not None:
        fig.suptitle(title, **({} if title_size is None else {"fontsize": title_size}))
    if spacing:
        fig.subplots_adjust(**spacing)
    return save_figure(fig, args, filename)
