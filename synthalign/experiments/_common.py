"""Shared plumbing of the experiment scripts: output folder, JSON record, plot saving."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import platform
import time
import typing

import torch


@dataclasses.dataclass
class CommonArgs:
    """Options every experiment takes (the CLI fills them)."""

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
    from synthalign import __version__

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
    path.write_text(json.dumps(record, indent=2))
    return path


def save_figure(fig, args, filename: str) -> pathlib.Path:
    path = output_dir(args) / filename
    fig.savefig(path, dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def args_from_command_line(args_type, argv=None, *, prog: str, description: str):
    """An `args_type` dataclass from the command line: one --option per field (tuples take several values)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    hints = typing.get_type_hints(args_type)
    for field in dataclasses.fields(args_type):
        kind = hints[field.name]
        flag = f"--{field.name.replace('_', '-')}"
        options = [t for t in typing.get_args(kind) if t is not type(None)]
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
            continue
        if options and typing.get_origin(options[0]) is tuple:  # tuple[...] | None
            kind, options = options[0], typing.get_args(options[0])
        if typing.get_origin(kind) is tuple:
            parser.add_argument(flag, type=options[0], nargs="+", default=field.default)
        else:
            parser.add_argument(flag, type=options[0] if options else kind, default=field.default)
    return args_type(**vars(parser.parse_args(argv)))
