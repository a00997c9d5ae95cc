"""The work items of rates, prop15, onpolicy-gap, strong-base, degeneracy and sequence-gap, through the sweep store.

For each experiment, at a tiny size: a first run stores one line per work item; a rerun reads every
item back (the store gains no line) and writes the same record.  Records are compared without what
differs between any two runs (`created`, the `out` folder, `fresh`, wall-clock `seconds`), as in
tests/test_grid.py.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from store_records import comparable_record, store_lines

from synthalign.cli import experiment_args
from synthalign.experiments import load, rates, sequence_gap, strong_base

COMMON = ["--quick", "--set", "plot=false", "--no-progress"]


def _rates_items(args) -> int:
    return len(rates.METHODS) * (len(args.ns) + len(args.class_ns))


def _prop15_items(args) -> int:
    return len(args.ns)


def _strong_base_items(args) -> int:
    classes = 2  # with and without A5
    return len(strong_base.SETTINGS) * classes * len(args.reference_mixes) * len(args.sample_sizes)


def _onpolicy_gap_items(args) -> int:
    return len(args.behavior_tilts) * len(args.sample_sizes) * len(args.aims)


def _degeneracy_items(args) -> int:
    return len(args.ns) + len(args.small_ns) * len(args.objectives) * (1 + len(args.betas_positive))


def _sequence_gap_items(args) -> int:
    points = len(args.ns) + len(args.behavior_tilts) - 1  # every n at tilt 0, the largest n at the others
    return points * args.n_replicates * len(sequence_gap.METHODS)


# (experiment, options beyond COMMON, work items of one run): the smallest sizes that still run every loop.
CASES = [
    (
        "rates",
        ["--replicates", "4", "--set", "log2_n_max=10", "--set", "class_log2_n_max=6", "--set", "class_size=8"]
        + ["--set", "reward_class_size=4", "--set", "n_boot=100"],
        _rates_items,
    ),
    ("prop15", ["--replicates", "4", "--set", "log2_n_max=6", "--set", "class_size=8"], _prop15_items),
    ("strong-base", ["--replicates", "4", "--set", "ns=16,64", "--set", "class_size=8"], _strong_base_items),
    (
        "onpolicy-gap",
        ["--replicates", "4", "--set", "ns=64,256", "--set", "tilts=0,1", "--set", "class_sizes=16,32"],
        _onpolicy_gap_items,
    ),
    ("degeneracy", ["--replicates", "4", "--set", "n_betas=5"], _degeneracy_items),
    ("sequence-gap", ["--set", "steps=3", "--set", "log2_ns=6,7", "--set", "tilts=0,2"], _sequence_gap_items),
]


def _args(name: str, out: Path, options: list[str], *extra: str):
    return experiment_args(name, ["--out", str(out), *COMMON, *options, *extra])


_record = comparable_record
_lines = store_lines


@pytest.mark.parametrize("name, options, items", CASES, ids=[case[0] for case in CASES])
def test_a_rerun_recomputes_nothing_and_writes_the_same_record(name, options, items, tmp_path):
    out = tmp_path / "run"
    args = _args(name, out, options)
    load(name).run(args)
    first = _record(out, name)
    stored = _lines(out)
    assert len(stored) == items(args) > 1
    assert len({entry["item"] for entry in stored}) == len(stored)  # one line per work item
    (out / f"{name}.json").unlink()
    load(name).run(_args(name, out, options))  # every item read back from the store
    assert len(_lines(out)) == len(stored)
    assert _record(out, name) == first


@pytest.mark.parametrize("name", ["rates", "onpolicy-gap", "degeneracy"])
def test_a_thread_pool_gives_the_serial_record(name, tmp_path):
    """Items finishing in any order, on other threads, combine into the serial record."""
    (options,) = [case[1] for case in CASES if case[0] == name]
    serial, pooled = tmp_path / "serial", tmp_path / "pool"
    load(name).run(_args(name, serial, options))
    with ThreadPoolExecutor(max_workers=2) as executor:
        load(name).run(_args(name, pooled, options), executor=executor)
    assert _record(pooled, name) == _record(serial, name)


def test_a_rerun_with_another_seed_computes_new_items(tmp_path):
    name, options, items = CASES[1]
    out = tmp_path / "run"
    load(name).run(_args(name, out, options))
    load(name).run(_args(name, out, options, "--seed", "1"))
    assert len(_lines(out)) == 2 * items(_args(name, out, options))


@pytest.mark.slow
@pytest.mark.parametrize("name, options", [case[:2] for case in CASES], ids=[case[0] for case in CASES])
def test_worker_processes_give_the_serial_record(name, options, tmp_path):
    """Two spawned worker processes (every item pickled to them and back), against a serial run."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    serial, spread = tmp_path / "serial", tmp_path / "pool"
    load(name).run(_args(name, serial, options))
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as executor:
        load(name).run(_args(name, spread, options), executor=executor)
    assert _record(spread, name) == _record(serial, name)
