"""A sweep store: finished work items of a sweep, persisted as they finish, so a killed sweep resumes.

A sweep is cut into work items (one per sample size n for `rate_sweep`: one batched
fit of every replicate).  Each item is keyed by the SHA-256 of its full
configuration (the world's tensors, the estimator, n, the replicates, the seed,
the metrics, the fit options) and the library version, so an item is reused only
by a sweep that would compute exactly the same numbers.

Format (plain and documented, never pickle): one JSON-lines file per sweep,
`<directory>/<sweep key>.jsonl`, one line per finished item:

    {"item": "<item key>", "config": {...}, "result": {...}}

Lines are appended and flushed with fsync as items finish; a line cut short by a
kill is ignored on reading (the item is then recomputed).  Floats are written by
`json` with `repr`, which round-trips float64 exactly, so a resumed sweep gives a
record bit-identical to an uninterrupted one.

Execution is left to any `concurrent.futures.Executor`-style object (`submit`
returning a future with `result()`): a `ProcessPoolExecutor`, a Dask
`distributed.Client` (or `client.get_executor()`), Ray's or submitit's executors.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from synthalign._checks import InputTypeError, check_bool, check_callable, describe
from synthalign._version import __version__

if TYPE_CHECKING:
    from synthalign._types import ExecutorLike
    from synthalign.worlds.tabular import World

__all__ = ["SweepStore", "atomic_write", "check_writable_dir", "config_key", "run_items", "world_fingerprint"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Writes a file through `write(temporary path)` then `os.replace`: readers see the old file or the new one.

    A kill mid-write leaves at most a stray `.<name>.tmp-<pid>` beside it, never a truncated `path`.
    """
    path = _path(path, "path")
    if not path.name:
        raise ValueError(f"path must name a file, got {str(path)!r}")
    check_callable(write, "write", "a function of the temporary path")
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(temporary)
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def check_writable_dir(path: str | os.PathLike, name: str = "out") -> Path:
    """Checks that `path` is a writable folder or can be created as one, before any work starts.

    Nothing is created: the nearest existing ancestor must be a writable folder.
    """
    path = _path(path, name)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{name} {str(path)!r} is not a writable folder: {str(existing)!r} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {str(path)!r} is not a writable folder: {str(existing)!r} is not writable")
    return path


def _path(value, name: str) -> Path:
    """A str or os.PathLike as a Path; anything else (None, bytes, numbers) and "" refused, naming `name`."""
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise InputTypeError(f"{name} must be a path (str or os.PathLike), got {describe(value)}")
    text = os.fspath(value)
    if not isinstance(text, str) or not text:
        raise ValueError(f"{name} must be a non-empty path, got {value!r}")
    return Path(text)


def _canonical(value):
    """A JSON-ready form of a configuration value; tensors by their bytes' hash."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu").contiguous()
        digest = hashlib.sha256(tensor.numpy().tobytes()).hexdigest()
        return {"tensor": digest, "shape": list(tensor.shape), "dtype": str(tensor.dtype)}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}"
    return repr(value)


def config_key(config: Mapping) -> str:
    """SHA-256 of the canonical JSON of `config` plus the library version."""
    if not isinstance(config, Mapping):
        raise InputTypeError(f"config must be a mapping of the configuration's fields, got {describe(config)}")
    text = json.dumps({"config": _canonical(config), "version": __version__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def world_fingerprint(world: World) -> dict:
    """What identifies a world's numbers: its tensors (hashed) and gamma."""
    fields = {"gamma": float(world.gamma), "prompt_dist": world.prompt_dist}
    for name in ("target", "reference", "behavior"):
        fields[name] = getattr(world, name).logp
    return _canonical(fields)


class SweepStore:
    """Finished items of sweeps under `directory`, one JSON-lines file per sweep key.

    `loaded` and `computed` count, for this object, the items read back from disk and
    the items computed and appended: a resumed sweep reports how much it redid.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = _path(directory, "store directory")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"store directory {str(directory)!r} cannot be created: {err}") from err
        if not os.access(self.directory, os.W_OK):
            raise ValueError(f"store directory {str(directory)!r} is not writable")
        self.loaded = 0
        self.computed = 0

    def path(self, sweep_key: str) -> Path:
        return self.directory / f"{sweep_key}.jsonl"

    def load(self, sweep_key: str) -> dict[str, dict]:
        """{item key: result} of the finished items; lines cut short by a kill are skipped."""
        path = self.path(sweep_key)
        if not path.exists():
            return {}
        finished = {}
        with path.open("r", encoding="utf-8") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    break  # the last line was being written when the process died
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                finished[entry["item"]] = entry["result"]
        return finished

    def append(self, sweep_key: str, item_key: str, config: Mapping, result: Mapping) -> None:
        """Persists one finished item (one line, flushed and fsync'd before returning)."""
        # The result keeps its keys in order (a resumed record is then byte-identical); the config is canonical.
        line = json.dumps({"item": item_key, "config": _canonical(config), "result": result})
        path = self.path(sweep_key)
        with path.open("a", encoding="utf-8") as handle:
            if handle.tell() > 0 and not _ends_with_newline(path):
                handle.write("\n")  # close a line cut short by an earlier kill
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def clear(self, sweep_key: str) -> None:
        self.path(sweep_key).unlink(missing_ok=True)


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def run_items(
    fn: Callable,
    items: Sequence[tuple],
    configs: Sequence[Mapping],
    *,
    sweep_config: Mapping,
    store: SweepStore | None = None,
    fresh: bool = False,
    executor: ExecutorLike | None = None,
) -> list:
    """`[fn(*item) for item in items]`, reusing finished items from `store` and persisting new ones.

    `configs[i]` is item i's full configuration (its key is `config_key(configs[i])`).
    With `executor` (anything with `submit(fn, *args)` returning a future with
    `result()`), the missing items run there, and each is persisted as soon as its result
    is collected; results must be JSON-ready (lists, dicts, floats).  `fresh=True`
    ignores and replaces what the store holds for this sweep.
    """
    check_callable(fn, "fn", "a function of one work item")
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise ValueError(
            f"executor must have a submit(fn, *args) method (a concurrent.futures.Executor), got {executor!r}"
        )
    if store is not None and not isinstance(store, SweepStore):
        raise InputTypeError(f"store must be a SweepStore or None, got {describe(store)}")
    fresh = check_bool(fresh, "fresh")
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise InputTypeError(f"items must be a sequence of tuples of fn's arguments, got {describe(items)}")
    if not all(isinstance(item, tuple) for item in items):
        raise InputTypeError("items must be tuples of fn's arguments")
    if isinstance(configs, (str, bytes)) or not isinstance(configs, Sequence):
        raise InputTypeError(f"configs must be a sequence of mappings, one per item, got {describe(configs)}")
    if len(configs) != len(items):
        raise ValueError(f"configs must have one entry per item: {len(configs)} configs for {len(items)} items")
    if not all(isinstance(config, Mapping) for config in configs):
        raise InputTypeError("configs must be mappings (each item's full configuration)")
    if not isinstance(sweep_config, Mapping):
        raise InputTypeError(f"sweep_config must be a mapping, got {describe(sweep_config)}")
    sweep_key = config_key(sweep_config)
    item_keys = [config_key(config) for config in configs]
    if len(set(item_keys)) != len(item_keys):
        raise ValueError("configs must tell the items apart: two items have the same configuration")
    finished: dict[str, dict] = {}
    if store is not None:
        if fresh:
            store.clear(sweep_key)
        finished = store.load(sweep_key)
    results: list = [None] * len(items)
    missing = []
    for index, key in enumerate(item_keys):
        if key in finished:
            results[index] = finished[key]
            if store is not None:
                store.loaded += 1
        else:
            missing.append(index)

    def keep(index: int, result) -> None:
        results[index] = result
        if store is not None:
            store.append(sweep_key, item_keys[index], configs[index], result)
            store.computed += 1

    if executor is None:
        for index in missing:
            keep(index, fn(*items[index]))
    else:
        futures = {index: executor.submit(fn, *items[index]) for index in missing}
        for index, future in futures.items():
            keep(index, future.result())
    return results
