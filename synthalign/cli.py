"""The `synthalign` command: run the paper's claims as experiments.

    synthalign list
    synthalign run <experiment> [--out DIR] [--device cpu|cuda] [--replicates N] [--seed S]
                                [--quick | --full] [--set FIELD=VALUE ...] [--no-progress] [--fresh]

`run` builds the experiment's `Args` dataclass from the options, calls its
`run(args)`, prints its `summary(results)` table and the files it wrote.  Bad
input (an unknown experiment, --replicates 0, a device that is not available,
an unknown --set field) is reported as one line on stderr with exit status 2.

This is the only argument parser of synthalign: `python experiments/NAME.py [options]`
calls `main(["run", NAME, *options])`, so both take the same options.  The values
of the shared options are validated once, by `synthalign.experiments._common.CommonArgs`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import pathlib
import sys
import time
import types
import typing

from synthalign.experiments import EXPERIMENTS, load

__all__ = ["EXIT_USAGE", "UsageError", "build_parser", "experiment_args", "main"]

if typing.TYPE_CHECKING:  # _common imports torch: `list` and `--help` do without it
    from synthalign.experiments._common import CommonArgs

EXIT_USAGE = 2


class UsageError(Exception):
    """A bad command line: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line instead of argparse's usage block
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="synthalign", description="Validate the theory of LLM alignment objectives on synthetic worlds."
    )
    commands = parser.add_subparsers(dest="command", metavar="{run,list}", parser_class=_Parser)
    commands.required = True
    commands.add_parser("list", help="list the experiments")
    run = commands.add_parser("run", help="run one experiment")
    run.add_argument("experiment", help="experiment name (see `synthalign list`)")
    run.add_argument("--out", default=None, help="folder for the JSON record and plots (default: runs/<experiment>)")
    run.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="torch device (default: cpu)")
    run.add_argument("--replicates", type=int, default=None, help="replicate datasets per point (>= 2)")
    run.add_argument("--seed", type=int, default=0, help="master seed, >= 0 (default: 0)")
    size = run.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="size", action="store_const", const="quick", help="CI-sized run")
    size.add_argument("--full", dest="size", action="store_const", const="full", help="larger run for the record")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="set an experiment-specific option (repeatable), e.g. --set beta_choice=heldout",
    )
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    run.add_argument(
        "--fresh",
        action="store_true",
        help="recompute every work item; by default finished items kept in OUT/store/ (one JSON line each) "
        "are reused, so a killed run resumes where it stopped",
    )
    run.set_defaults(size="default")
    return parser


def _load(name: str):
    """The experiment's module, or UsageError when the name is unknown or its module is absent."""
    if name not in EXPERIMENTS:
        raise UsageError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    module_name = f"synthalign.experiments.{name.replace('-', '_')}"
    try:
        return load(name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        raise UsageError(
            f"experiment {name!r} is not available in this installation ({module_name} is missing)"
        ) from None


def _convert(text: str, annotation, field_name: str):
    """Parses VALUE of --set FIELD=VALUE as the field's annotated type."""
    if isinstance(annotation, str):
        annotation = {"int": int, "float": float, "str": str, "bool": bool}.get(annotation.split(" | ")[0], str)
    origin = typing.get_origin(annotation)
    options = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if text.lower() == "none" and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                return _convert(text, option, field_name)
    if origin is tuple:
        item = options[0] if options else str
        return tuple(_convert(part.strip(), item, field_name) for part in text.split(",") if part.strip())
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"--set {field_name}: expected true or false, got {text!r}")
    if annotation in (int, float, str):
        try:
            return annotation(text)
        except ValueError:
            raise UsageError(f"--set {field_name}: expected {annotation.__name__}, got {text!r}") from None
    return text


def _overrides(args_class, items: list[str]) -> dict:
    fields = {f.name: f for f in dataclasses.fields(args_class)}
    hints = typing.get_type_hints(args_class)
    common = {"out", "device", "replicates", "seed", "size", "progress", "fresh"}
    values = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise UsageError(f"--set expects FIELD=VALUE, got {item!r}")
        if name not in fields or name in common:
            extra = sorted(set(fields) - common)
            raise UsageError(f"--set: unknown field {name!r} for this experiment; fields: {', '.join(extra) or 'none'}")
        values[name] = _convert(text, hints.get(name, str), name)
    return values


def _files_written(out: pathlib.Path, before: dict) -> list[pathlib.Path]:
    if not out.is_dir():
        return []
    files = []
    for path in sorted(out.iterdir()):
        if path.is_file() and before.get(path) != path.stat().st_mtime_ns:
            files.append(path)
    return files


def _list() -> int:
    width = max(len(name) for name in EXPERIMENTS)
    for name, description in EXPERIMENTS.items():
        module_name = f"synthalign.experiments.{name.replace('-', '_')}"
        missing = "" if importlib.util.find_spec(module_name) is not None else "  (not available)"
        print(f"{name:<{width}}  {description}{missing}")
    return 0


def _experiment_args(module, options):
    from synthalign.experiments._common import OptionError

    out = pathlib.Path(options.out if options.out is not None else pathlib.Path("runs") / options.experiment)
    settings = {
        "out": str(out),
        "device": options.device,
        "replicates": options.replicates,
        "seed": options.seed,
        "size": options.size,
        "progress": options.progress,
        "fresh": options.fresh,
    }
    settings.update(_overrides(module.Args, options.overrides))
    try:
        return module.Args(**settings)
    except OptionError as err:
        raise UsageError(f"--{err.field.replace('_', '-')}: {str(err).splitlines()[0]}") from None
    except (ValueError, TypeError) as err:
        raise UsageError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None


def experiment_args(name: str, argv: list[str]) -> CommonArgs:
    """The `Args` of experiment `name` that `synthalign run NAME *argv` would run with (UsageError if bad)."""
    options = build_parser().parse_args(["run", name, *argv])
    return _experiment_args(_load(name), options)


def _run(options) -> int:
    module = _load(options.experiment)
    args = _experiment_args(module, options)
    out = pathlib.Path(args.out)
    before = {path: path.stat().st_mtime_ns for path in out.iterdir()} if out.is_dir() else {}
    start = time.perf_counter()
    results = module.run(args)
    seconds = time.perf_counter() - start
    print(module.summary(results))
    print(f"\n{options.experiment}: done in {seconds:.1f} s; wrote:")
    for path in _files_written(out, before):
        print(f"  {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `synthalign` console script and of `python -m synthalign`; returns the exit status."""
    parser = build_parser()
    try:
        options = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
        if options.command == "list":
            return _list()
        return _run(options)
    except UsageError as err:
        print(f"synthalign: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
