"""An experiment's grid of work items, run through the sweep store so that a killed run resumes.

An experiment cuts its computation into work items (one per world × method × n, or
whatever its natural unit is) and hands them to `run_grid`:

    labels = [{"scale": scale} for scale in args.logit_scales]
    items = [(args, index, scale) for index, scale in enumerate(args.logit_scales)]
    results = run_grid(args, NAME, run_scale, items, labels, executor=executor)

* `fn(*items[i])` computes item i; it must be a module-level function (an executor may
  run it in another process) and return JSON-ready values (dicts, lists, numbers,
  strings; tensors and numpy arrays are turned into lists).  Every result, computed or
  read back, goes through one JSON round trip, so a resumed run and an uninterrupted one
  return the very same values (floats round-trip exactly).
* `labels[i]` names item i within the experiment: everything its numbers depend on that
  `args` does not fix.  Item i's key is the SHA-256 of the experiment's name (and `stage`),
  every option of `args` that can change a number (all but `out`, `progress`, `fresh` and
  `plot`), `labels[i]` and the library version (`synthalign.store.config_key`): an item is
  reused only by a run that would compute exactly the same numbers.  (Code edited between
  two runs of one version is not in the key: rerun with `--fresh` after such an edit.)
* Finished items are appended, one JSON line each, to `<args.out>/store/<key of the
  experiment and its options>.jsonl` (format: `synthalign.store`), as they finish; a rerun
  with the same options reads them back and computes only the missing ones.
  `args.fresh` (`synthalign run NAME --fresh`) ignores and replaces what the store holds.
* `executor`: any `concurrent.futures.Executor`-style object (`submit(fn, *args)` returning a
  future with `result()`) — a process pool, a Dask `distributed.Client`, Ray's or submitit's
  executors.  Each item derives its randomness from seeds in its own arguments (never from
  global random state), so the results are bit-identical to a serial run.

Combining the items into the experiment's record, and plotting it, stay with the experiment.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from synthalign._types import ExecutorLike
from synthalign.store import SweepStore, config_key, run_items

if TYPE_CHECKING:
    from synthalign.experiments._common import CommonArgs

__all__ = ["NOT_IN_KEY", "grid_store", "options_config", "run_grid"]

NOT_IN_KEY = frozenset({"out", "progress", "fresh", "plot"})
"""Options that never change a number: left out of every item's key."""

STORE_FOLDER = "store"

_log = logging.getLogger(__name__)


def options_config(args: CommonArgs) -> dict:
    """The options of `args` (an experiment's `Args`) that can change a number, as plain values."""
    if not dataclasses.is_dataclass(args) or isinstance(args, type):
        raise TypeError(f"args must be an experiment's Args dataclass, got {type(args).__name__}")
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.name not in NOT_IN_KEY}


def grid_store(args: CommonArgs) -> SweepStore:
    """The sweep store of the run `args` describes: `<args.out>/store/`."""
    return SweepStore(Path(args.out) / STORE_FOLDER)


def _json_ready(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"a grid item returned a {type(value).__name__}, which has no JSON form: {value!r}")


def as_stored(result: Any) -> Any:
    """`result` as the store holds it: through one JSON round trip (tuples become lists, keys strings)."""
    return json.loads(json.dumps(_json_ready(result)))


@dataclasses.dataclass(frozen=True)
class _StoredItem:
    """fn with its result put in stored form (a class, not a closure, so that executors can pickle it)."""

    fn: Callable

    def __call__(self, *item):
        return as_stored(self.fn(*item))


def run_grid(
    args: CommonArgs,
    name: str,
    fn: Callable,
    items: Sequence[tuple],
    labels: Sequence[Mapping],
    *,
    stage: str | None = None,
    executor: ExecutorLike | None = None,
) -> list:
    """`[fn(*item) for item in items]` through the store at `<args.out>/store/` (module docstring).

    `stage` names one of several grids of an experiment (e.g. "exact" fits whose results feed a
    "stochastic" grid): each stage has its own store file, so `fresh` on a later stage keeps the items
    an earlier stage of the same run has just computed.  Returns the results in the order of `items`,
    each in stored form (`as_stored`).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be the experiment's name, got {name!r}")
    if not callable(fn):
        raise TypeError(f"fn must be a function of one work item, got {type(fn).__name__}")
    items, labels = list(items), list(labels)
    if len(items) != len(labels):
        raise ValueError(f"items and labels must have one entry each per work item, got {len(items)} and {len(labels)}")
    if any(not isinstance(item, tuple) for item in items):
        raise TypeError("items must be tuples of fn's arguments")
    options = options_config(args)
    configs = [{"experiment": name, "stage": stage, "options": options, "item": label} for label in labels]
    if len({config_key(config) for config in configs}) != len(configs):
        raise ValueError("labels must tell the work items apart: two items have the same label")
    store = grid_store(args)
    stored_fn = _StoredItem(fn)
    item_fn = stored_fn
    bar = None
    if executor is None and getattr(args, "progress", False) and len(items) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc=f"{name}: items", leave=False)

        def item_fn(*item):
            result = stored_fn(*item)
            bar.update()
            return result

    try:
        results = run_items(
            item_fn,
            items,
            configs,
            sweep_config={"experiment": name, "stage": stage, "options": options},
            store=store,
            fresh=bool(getattr(args, "fresh", False)),
            executor=executor,
        )
    finally:
        if bar is not None:
            bar.close()
    _log.info("%s: %d items read from %s, %d computed", name, store.loaded, store.directory, store.computed)
    return results
