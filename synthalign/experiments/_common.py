"""What every experiment shares: its common options (validated once), the checks of the options several
experiments take, derived seeds, the mean ± standard error and the measured-over-bound ratio of a
record, the output folder, the JSON record, figures (PNG + SVG, made without pyplot) and the column
legend of a summary table.  What several figures draw alike is in `synthalign.experiments._plots`.

Parsing a command line into these options is `synthalign.cli`'s job, and only its.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
import pathlib
import platform
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from synthalign._version import __version__
from synthalign.stats import quantile_interval
from synthalign.store import atomic_write, check_writable_dir
from synthalign.theory.constants import world_constants
from synthalign.worlds.tabular import World

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from synthalign.theory.constants import WorldConstants
SIZES = ("quick", "default", "full")
"""The run sizes every experiment defines: CI-sized, the recorded default, and a larger run."""

DEVICES = ("cpu", "cuda")


class OptionError(ValueError):
    """A bad value of one option; `field` names it (the CLI reports it as ``--field``)."""

    def __init__(self, field: str, message: str) -> None:
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

    def __post_init__(self) -> None:
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

    def sized(self, value: Any, table: Mapping[str, Sequence[Any]], column: int) -> Any:
        """`value` when it is set (not None), else entry `column` of this run size's row of `table`.

        `table` is an experiment's defaults per size, ``{"quick": (...), "default": (...), "full": (...)}``.
        """
        return value if value is not None else table[self.size][column]


# ----------------------------------------------------------------------------- options several experiments take


def check_positive(args: CommonArgs, *names: str) -> None:
    """Each field `names` of `args` is a finite real number > 0; OptionError naming the first that is not."""
    for name in names:
        value = getattr(args, name)
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
            raise OptionError(name, f"{name} must be a positive number, got {value!r}")


def check_integer(name: str, value: object, minimum: int) -> None:
    """`value` (option `name`) is an integer >= `minimum` (bools refused); OptionError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(name, f"{name} must be an integer >= {minimum}, got {value!r}")


def check_log2_range(
    low: int, high: int, *, names: tuple[str, str] = ("log2_n_min", "log2_n_max"), limit: int = 40, equal: bool = False
) -> None:
    """1 <= low < high <= limit (low <= high with `equal`): the exponents of an n = 2^k sweep.

    `high` is the largest exponent in force (the option, or the size's default); `names` are the two options.
    """
    low_name, high_name = names
    below = "<=" if equal else "<"
    ordered = low <= high if equal else low < high
    if not (isinstance(low, int) and isinstance(high, int) and 1 <= low and ordered and high <= limit):
        raise OptionError(high_name, f"need 1 <= {low_name} {below} {high_name} <= {limit}, got {low}, {high}")


def log2_grid(low: int, high: int, step: int = 1) -> list[int]:
    """The sweep n = 2^low, 2^(low + step), ... up to 2^high."""
    return [2**k for k in range(low, high + 1, step)]


def check_increasing(name: str, values: Sequence[int]) -> None:
    """`values` (option `name`) are positive integers in increasing order; OptionError otherwise."""
    integers = all(not isinstance(v, bool) and isinstance(v, int) and v >= 1 for v in values)
    if not integers or list(values) != sorted(set(values)):
        raise OptionError(name, f"{name} must be increasing positive ints, got {values!r}")


def check_radius(radius: Sequence[float]) -> tuple[float, float]:
    """The option `radius` as (low, high) floats with 0 <= low <= high and high > 0 (a class's logit distances)."""
    radius = tuple(float(r) for r in radius)
    if len(radius) != 2 or not 0 <= radius[0] <= radius[1] or radius[1] <= 0:
        raise OptionError("radius", f"radius must be (low, high) with 0 <= low <= high, high > 0, got {radius!r}")
    return radius


def check_delta(delta: float) -> None:
    """The option `delta`, a failure probability, lies in (0, 1)."""
    if not (isinstance(delta, numbers.Real) and 0 < delta < 1):
        raise OptionError("delta", f"delta must lie in (0, 1), got {delta!r}")


# ----------------------------------------------------------------------------- seeds, worlds and records


def derive_seed(*keys: int) -> int:
    """An integer seed drawn from ``numpy.random.SeedSequence(keys)``: one independent stream per tuple of keys."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def random_world(args: CommonArgs, **options: Any) -> World:
    """`World.random` with the experiment's n_prompts, n_responses, gamma, logit_scale, seed and device.

    `options` are further keyword arguments of `World.random`, or replace those (``gamma=args.class_gamma``);
    an option given here is not read from `args`.
    """
    names = ("n_prompts", "n_responses", "gamma", "logit_scale", "seed", "device")
    return World.random(**{name: getattr(args, name) for name in names if name not in options}, **options)


def class_constants(
    world: World, policy_logp: torch.Tensor, reward_logp: torch.Tensor | None, *, compute_c0: bool
) -> WorldConstants:
    """`synthalign.bounds.world_constants` of `world` with the policy class Π and the reward class 𝒫_γ(ℛ)."""
    return world_constants(
        world.target.logp,
        world.behavior.logp,
        world.reference.logp,
        world.prompt_dist,
        world.gamma,
        policy_logp,
        reward_logp,
        compute_c0=compute_c0,
    )


def mean_se(values: torch.Tensor) -> dict[str, Any]:
    """Mean, standard error of the mean and median over the last dimension (the replicates).

    Floats for a vector of replicate values [R]; lists for [N, R] (one entry per row).
    """
    count = values.shape[-1]
    return {
        "mean": values.mean(dim=-1).tolist(),
        "se": (values.std(dim=-1) / math.sqrt(count)).tolist(),
        "median": values.median(dim=-1).values.tolist(),
    }


def band_stats(values: torch.Tensor, band: tuple[float, float] = (0.1, 0.9)) -> dict[str, list]:
    """Median, the `band` quantiles (``low``, ``high``), mean and standard deviation over the last dimension
    (the replicates), in float64, as lists."""
    values = values.to(torch.float64)
    probs = torch.tensor([band[0], 0.5, band[1]], dtype=values.dtype, device=values.device)
    low, median, high = torch.quantile(values, probs, dim=-1)
    return {
        "median": median.tolist(),
        "low": low.tolist(),
        "high": high.tolist(),
        "mean": values.mean(dim=-1).tolist(),
        "std": values.std(dim=-1).tolist(),
    }


def z_score(larger: Mapping[str, float], smaller: Mapping[str, float]) -> float:
    """(difference of two means) / (its standard error), the means (``mean``, ``se``) from independent replicates.

    ±inf for different means without spread, 0 for equal ones.
    """
    difference = larger["mean"] - smaller["mean"]
    se = math.hypot(larger["se"], smaller["se"])
    return difference / se if se > 0 else math.copysign(math.inf, difference) if difference else 0.0


def mean_ratio(larger: Mapping[str, float], smaller: Mapping[str, float]) -> dict[str, float]:
    """larger/smaller of two independent means with its delta-method standard error, and their `z_score`."""
    ratio = larger["mean"] / smaller["mean"]
    relative = math.hypot(larger["se"] / larger["mean"], smaller["se"] / smaller["mean"])
    return {"ratio": ratio, "se": ratio * relative, "z": z_score(larger, smaller)}


def holds_from(ns: Sequence[int], holds: Sequence[bool]) -> int | None:
    """The smallest n of a sweep from which `holds` (one flag per n) is true at every larger n; None if none."""
    return next((n for i, n in enumerate(ns) if all(holds[i:])), None)


def upper_quantile(values: torch.Tensor | np.ndarray, level: float) -> np.ndarray:
    """[N] the level-quantile of [N, R] values along R by numpy's "higher" method: the order statistic
    `synthalign.stats.check_bound` compares (never interpolated below a measured value)."""
    values = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    return np.quantile(values, level, axis=-1, method="higher")


def over_bound(values: torch.Tensor | np.ndarray, bound: torch.Tensor | Sequence[float], level: float) -> dict:
    """A bound's tightness at every n: the measured level-quantile of [N, R] values over the bound [N].

    Returns ``quantile`` (`upper_quantile`), ``ratio`` (quantile / bound) and ``ratio_ci``, the ratio's
    95% interval from the order statistics around the quantile (the data's sampling error), as lists.
    """
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    bound = bound.detach().cpu().numpy() if isinstance(bound, torch.Tensor) else np.asarray(bound)
    quantile = upper_quantile(array, level)
    return {
        "quantile": quantile.tolist(),
        "ratio": (quantile / bound).tolist(),
        "ratio_ci": [(side / bound).tolist() for side in quantile_interval(array, level)],
    }


def slope_cells(slope: Mapping[str, float]) -> str:
    """A fitted slope and its 95% CI as cells of a summary table: ``' -1.002 | [ -1.101,  -0.903]'``."""
    return f"{slope['slope']:7.3f} | [{slope['ci_low']:7.3f}, {slope['ci_high']:7.3f}]"


def verdict_word(verdict: Mapping[str, Any]) -> str:
    """The cell of a verdict (a `synthalign.stats.Verdict` as a dict) in a summary table: pass or FAIL."""
    return "pass" if verdict["passed"] else "FAIL"


# ----------------------------------------------------------------------------- output


def output_dir(args: CommonArgs) -> pathlib.Path:
    path = pathlib.Path(args.out)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _jsonable(value: Any) -> Any:
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


def write_record(args: CommonArgs, name: str, results: dict) -> pathlib.Path:
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
    nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (6.4, 4.8), squeeze: bool = True, **kwargs: Any
) -> tuple[Figure, Any]:
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


def save_figure(fig: Figure, args: CommonArgs, filename: str) -> pathlib.Path:
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


def column_legend(columns: Mapping[str, str] | Sequence[tuple[str, str]]) -> str:
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
def one_cpu_thread(device: str) -> Iterator[None]:
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
