"""What every experiment shares: its common options (validated once), the output folder, the JSON record,
figures (PNG + SVG, made without pyplot) and the column legend of a summary table.

Parsing a command line into these options is `synthalign.cli`'s job, and only its.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import pathlib
import platform
import sys
import time

import torch

from synthalign._version import __version__
from synthalign.store import atomic_write, check_writable_dir

SIZES = ("quick", "default", "full")
"""The run sizes every experiment defines: CI-sized, the recorded default, and a larger run."""

DEVICES = ("cpu", "cuda")


class OptionError(ValueError):
    """A bad value of one option; `field` names it (the CLI reports it as ``--field``)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass
class CommonArgs:
    """Options every experiment takes, validated here once for all of them.

    An experiment's `Args` adds its own fields and, in its `__post_init__`, calls
    ``super().__post_init__()`` before validating them.
    """

    out: str = "runs"
    """folder for the JSON record and PNG plots"""
    device: str = "cpu"
    """torch device: cpu or cuda"""
    replicates: int | None = None
    """replicate datasets per point (None: the experiment's default for its size)"""
    seed: int = 0
    """master seed; every random draw derives from it"""
    size: str = "default"
    """'quick' (CI-sized), 'default', or 'full' (for the record)"""
    progress: bool = True
    """show a progress bar on long sweeps"""
    fresh: bool = False
    """recompute every work item, ignoring (and replacing) the finished ones kept in <out>/store/"""

    def __post_init__(self):
        if self.size not in SIZES:
            raise OptionError("size", f"size must be one of {SIZES}, got {self.size!r}")
        replicates = self.replicates
        if replicates is not None and (
            isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 2
        ):
            raise OptionError(
                "replicates", f"replicates must be an integer >= 2 (a spread needs data), got {replicates!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise OptionError("seed", f"seed must be a non-negative integer, got {self.seed!r}")
        if self.device not in DEVICES:
            raise OptionError("device", f"device must be one of {DEVICES}, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise OptionError(
                "device", "device cuda requested but CUDA is not available (torch.cuda.is_available() is False)"
            )
        if not isinstance(self.out, (str, pathlib.Path)) or not str(self.out):
            raise OptionError("out", f"out must be a folder path, got {self.out!r}")
        try:
            check_writable_dir(self.out)  # before any work, not after an hour of it
        except ValueError as err:
            raise OptionError("out", str(err)) from err
        if not isinstance(self.progress, bool):
            raise OptionError("progress", f"progress must be True or False, got {self.progress!r}")
        if not isinstance(self.fresh, bool):
            raise OptionError("fresh", f"fresh must be True or False, got {self.fresh!r}")


def output_dir(args) -> pathlib.Path:
    path = pathlib.Path(args.out)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    return value


def write_record(args, name: str, results: dict) -> pathlib.Path:
    """Writes `<out>/<name>.json`: every number, the full configuration, version and seed."""
    record = {
        "experiment": name,
        "config": _jsonable(args),
        "synthalign_version": __version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "seed": args.seed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "results": _jsonable(results),
    }
    path = output_dir(args) / f"{name}.json"
    text = json.dumps(record, indent=2)
    return atomic_write(path, lambda temporary: temporary.write_text(text))


FIGURE_DPI = 150
"""Resolution of every PNG an experiment writes (its SVG twin is resolution-free)."""


def new_figure(
    nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (6.4, 4.8), squeeze: bool = True, **kwargs
):
    """A figure and its axes, like ``matplotlib.pyplot.subplots``, without pyplot.

    The figure is a bare `matplotlib.figure.Figure`: it is never registered with pyplot, never
    shown, and creating or saving it never selects or switches matplotlib's global backend, so a
    notebook's inline plots keep working after an experiment has plotted.  `squeeze` and the other
    keyword arguments are those of `Figure.subplots`; returns ``(figure, axes)``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, **kwargs)
    return fig, axes


def save_figure(fig, args, filename: str) -> pathlib.Path:
    """Writes `fig` into ``args.out`` as PNG (`FIGURE_DPI`) and as SVG beside it (same stem); returns the PNG.

    `filename` names the PNG (``"fig1.png"``; its suffix, if any, becomes ``.png`` and ``.svg``).  Each file is
    written atomically.  A figure that pyplot manages (made with ``pyplot.subplots``) is closed
    afterwards; a bare `Figure` (`new_figure`) needs no closing.  Nothing here imports pyplot or
    touches the global backend.
    """
    png = (output_dir(args) / filename).with_suffix(".png")
    svg = png.with_suffix(".svg")
    atomic_write(png, lambda temporary: fig.savefig(temporary, dpi=FIGURE_DPI, bbox_inches="tight", format="png"))
    # SVG keeps text as text (metadata Date=None: the same figure gives the same file).
    atomic_write(
        svg, lambda temporary: fig.savefig(temporary, bbox_inches="tight", format="svg", metadata={"Date": None})
    )
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:  # only a figure that pyplot manages needs closing; a no-op for the others
        pyplot.close(fig)
    return png


def column_legend(columns) -> str:
    """The legend printed under a summary table: one line per column, ``  name  what it holds``.

    `columns` is a mapping (or a sequence of pairs) from each column's header, as printed, to a
    one-line explanation; the names are aligned so the explanations start in one column.
    """
    items = list(columns.items()) if isinstance(columns, dict) else [tuple(item) for item in columns]
    if not items:
        raise ValueError("columns must name at least one column")
    for item in items:
        if len(item) != 2 or not all(isinstance(part, str) and part.strip() for part in item):
            raise ValueError(f"columns must map each column name to a non-empty explanation, got {item!r}")
        if "\n" in item[1]:
            raise ValueError(f"column {item[0]!r}: the explanation must be one line, got {item[1]!r}")
    width = max(len(name) for name, _ in items)
    return "\n".join(["columns:"] + [f"  {name:<{width}}  {text}" for name, text in items])


@contextlib.contextmanager
def one_cpu_thread(device: str):
    """Runs the block with one intra-op CPU thread (on the CPU only), then restores the setting.

    The experiments' tensors are small (at most a few million entries): on a 2-core machine shared with
    other work, a second intra-op thread costs more in synchronization than it saves (a reward fit and a
    training step of the sequence world both measured about ten times slower with 2 threads under load).
    """
    previous = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
