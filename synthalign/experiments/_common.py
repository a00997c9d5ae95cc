"""What every experiment shares: its common options (validated once), the output folder, the JSON record, plots.

Parsing a command line into these options is `synthalign.cli`'s job, and only its.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import platform
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


def save_figure(fig, args, filename: str) -> pathlib.Path:
    path = output_dir(args) / filename
    atomic_write(path, lambda temporary: fig.savefig(temporary, dpi=120, bbox_inches="tight", format=path.suffix[1:]))
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
