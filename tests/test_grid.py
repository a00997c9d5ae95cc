"""Experiment grids through the sweep store (synthalign/experiments/_grid.py): kill -9 and resume, --fresh, Dask.

The record of a run is compared without what differs between any two runs (`created`, the `out`
folder, wall-clock `seconds`): everything else, every number included, must be identical.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from store_records import comparable_record, store_lines

from synthalign.cli import experiment_args, main
from synthalign.experiments import load
from synthalign.experiments._common import OptionError
from synthalign.experiments._grid import STORE_FOLDER, options_config, run_grid

ROOT = Path(__file__).resolve().parents[1]
NAME = "misspecification"
# Reward classes (linear, low-rank, tabular) × 4 sample sizes: work items of a few hundredths of a second each.
SMALL = ["--quick", "--replicates", "4", "--set", "log2_n_max=9", "--set", "plot=false", "--no-progress"]


def _args(out: Path, *extra: str, name: str = NAME, options=SMALL):
    return experiment_args(name, ["--out", str(out), *options, *extra])


def _n_items(options=SMALL) -> int:
    """Work items of a misspecification run: one per (reward class, n)."""
    args = experiment_args(NAME, list(options))
    return (len(args.dims) + len(args.ranks) + 1) * len(args.ns)


ITEMS = _n_items()


def _record(out: Path, name: str = NAME) -> str:
    return comparable_record(out, name)


_lines = store_lines


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    load(NAME).run(_args(out))
    return out


def test_a_rerun_reads_every_item_back_and_writes_the_same_record(uninterrupted, tmp_path):
    items = len(_lines(uninterrupted))
    assert items == ITEMS
    out = tmp_path / "run"
    load(NAME).run(_args(out))
    assert _record(out) == _record(uninterrupted)
    assert len(_lines(out)) == items
    load(NAME).run(_args(out))  # everything read back: nothing appended
    assert len(_lines(out)) == items
    assert _record(out) == _record(uninterrupted)
    load(NAME).run(_args(out, "--fresh"))  # recomputed from scratch, the store file replaced
    assert len(_lines(out)) == items
    assert _record(out) == _record(uninterrupted)


def test_a_store_cut_mid_line_resumes_computing_only_the_missing_items(uninterrupted, tmp_path):
    out = tmp_path / "run"
    load(NAME).run(_args(out))
    (path,) = (out / STORE_FOLDER).glob("*.jsonl")
    lines = path.read_text().splitlines(keepends=True)
    kept = 5
    path.write_text("".join(lines[:kept]) + lines[kept][: len(lines[kept]) // 2])  # as a kill mid-write leaves it
    (out / f"{NAME}.json").unlink()
    load(NAME).run(_args(out))
    entries = _lines(out)
    before = {entry["item"] for entry in entries[:kept]}
    appended = [entry["item"] for entry in entries[kept:]]
    assert len(appended) == len(lines) - kept and not before & set(appended)
    assert _record(out) == _record(uninterrupted)


def test_other_options_are_other_items(uninterrupted, tmp_path):
    out = tmp_path / "run"
    load(NAME).run(_args(out))
    load(NAME).run(_args(out, "--seed", "1"))
    assert len(_lines(out)) == 2 * ITEMS  # the items of seed 1 are new
    assert "out" not in options_config(_args(out)) and "seed" in options_config(_args(out))


def test_kill_minus_nine_mid_grid_then_rerun_recomputes_no_finished_item(uninterrupted, tmp_path):
    out = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        from synthalign.cli import main
        main(["run", {NAME!r}, "--out", {str(out)!r}, *{SMALL!r}])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None and len(_safe_lines(out)) < 2:
            time.sleep(0.005)
        assert process.poll() is None, "the run ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    finished = _lines(out)
    assert 2 <= len(finished) < ITEMS and not (out / f"{NAME}.json").exists()
    assert main(["run", NAME, "--out", str(out), *SMALL]) == 0
    entries = _lines(out)
    before = {entry["item"] for entry in finished}
    appended = [entry["item"] for entry in entries[len(finished) :]]
    recomputed = len(before & set(appended))
    print(f"\nkill -9 after {len(finished)} of {ITEMS} items; finished items recomputed on the rerun: {recomputed}")
    assert recomputed == 0 and len(appended) == ITEMS - len(finished)
    assert _record(out) == _record(uninterrupted)


def _safe_lines(out: Path) -> list[dict]:
    try:
        return _lines(out)
    except OSError:
        return []


def test_thread_pool_gives_the_serial_record(uninterrupted, tmp_path):
    out = tmp_path / "pool"
    with ThreadPoolExecutor(max_workers=2) as executor:
        load(NAME).run(_args(out), executor=executor)
    assert _record(out) == _record(uninterrupted)


def test_dask_local_cluster_gives_the_serial_record(uninterrupted, tmp_path):
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "dask"
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        with distributed.Client(cluster) as client:
            assert len(client.scheduler_info()["workers"]) == 2
            load(NAME).run(_args(out), executor=client)
    same = _record(out) == _record(uninterrupted)
    print(f"\n{NAME}: Dask LocalCluster (2 workers) record == serial record: {same}")
    assert same


GRADIENT = ["--quick", "--replicates", "2", "--set", "steps=6", "--set", "variance_draws=50", "--set", "plot=false"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, options",
    [
        (NAME, SMALL),
        ("gradient-estimators", [*GRADIENT, "--no-progress"]),
        ("fig1", ["--quick", "--set", "log2_n_max=8", "--replicates", "6", "--set", "plot=false", "--no-progress"]),
    ],
)
def test_dask_worker_processes_give_the_serial_record(name, options, tmp_path):
    """Two worker processes (items pickled to them and back), against a serial run."""
    distributed = pytest.importorskip("distributed")
    serial, spread = tmp_path / "serial", tmp_path / "dask"
    load(name).run(_args(serial, name=name, options=options))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            load(name).run(_args(spread, name=name, options=options), executor=client)
    same = _record(spread, name) == _record(serial, name)
    print(f"\n{name}: Dask LocalCluster (2 worker processes) record == serial record: {same}")
    assert same


def test_fresh_is_an_option_of_every_run_and_documented(tmp_path, capsys):
    assert _args(tmp_path, "--fresh").fresh is True and _args(tmp_path).fresh is False
    with pytest.raises(OptionError, match="fresh"):
        type(_args(tmp_path))(out=str(tmp_path), fresh="yes")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "OUT/store/" in " ".join(capsys.readouterr().out.split())


def test_run_grid_refuses_bad_grids(tmp_path):
    args = _args(tmp_path)
    with pytest.raises(ValueError, match="labels"):
        run_grid(args, NAME, abs, [(1,), (2,)], [{"a": 1}])
    with pytest.raises(ValueError, match="labels"):
        run_grid(args, NAME, abs, [(1,), (2,)], [{"a": 1}, {"a": 1}])
    with pytest.raises(TypeError, match="items"):
        run_grid(args, NAME, abs, [1], [{"a": 1}])
    with pytest.raises(TypeError, match="JSON"):
        run_grid(args, NAME, object, [()], [{"a": 2}])
    assert run_grid(args, NAME, abs, [(-1,), (2.5,)], [{"a": 3}, {"a": 4}]) == [1, 2.5]
