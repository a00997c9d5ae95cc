"""The sweep store (synthalign/store.py): resume after kill -9, `fresh`, executors, bit-identical records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import synthalign as sa
from synthalign.store import SweepStore, config_key

NS = (32, 64, 128, 256)


@pytest.fixture(scope="module")
def world():
    return sa.World.random(3, 4, seed=5)


def _sweep(world, **kwargs):
    return sa.rate_sweep(world, "pmle", NS, replicates=6, seed=3, ridge=1.0, **kwargs)


def _record(result) -> str:
    return json.dumps(result.to_dict(), sort_keys=True)


@pytest.fixture(scope="module")
def serial(world):
    return _record(_sweep(world))


def test_store_persists_items_and_a_rerun_recomputes_nothing(world, serial, tmp_path):
    store = SweepStore(tmp_path)
    assert _record(_sweep(world, store=store)) == serial
    assert (store.loaded, store.computed) == (0, len(NS))
    (path,) = tmp_path.glob("*.jsonl")
    lines = path.read_text().splitlines()
    assert len(lines) == len(NS) and all(set(json.loads(line)) == {"item", "config", "result"} for line in lines)
    again = SweepStore(tmp_path)
    assert _record(_sweep(world, store=again)) == serial
    assert (again.loaded, again.computed) == (len(NS), 0)
    fresh = SweepStore(tmp_path)
    assert _record(_sweep(world, store=fresh, fresh=True)) == serial
    assert (fresh.loaded, fresh.computed) == (0, len(NS))


def test_a_line_cut_short_is_recomputed_and_other_configurations_do_not_reuse_items(world, serial, tmp_path):
    _sweep(world, store=SweepStore(tmp_path))
    (path,) = tmp_path.glob("*.jsonl")
    text = path.read_text()
    path.write_text(text[: len(text) - 25])  # the last item's line cut short, as by a kill mid-write
    store = SweepStore(tmp_path)
    assert _record(_sweep(world, store=store)) == serial
    assert (store.loaded, store.computed) == (len(NS) - 1, 1)
    # Another seed is another sweep: nothing reused.
    other = SweepStore(tmp_path)
    sa.rate_sweep(world, "pmle", NS, replicates=6, seed=4, ridge=1.0, store=other)
    assert other.loaded == 0
    assert config_key({"a": 1}) != config_key({"a": 2})


@pytest.mark.parametrize(
    "size",
    [
        pytest.param((4, 5, 30), id="small"),
        pytest.param((6, 8, 150), id="larger", marks=pytest.mark.slow),
    ],
)
def test_kill_minus_nine_mid_sweep_then_resume_recomputes_no_finished_item(tmp_path, size):
    n_prompts, n_responses, replicates = size
    ns = tuple(2**k for k in range(5, 15))
    script = textwrap.dedent(
        f"""
        import synthalign as sa
        world = sa.World.random({n_prompts}, {n_responses}, seed=1)
        sa.rate_sweep(world, "pmle", {ns!r}, replicates={replicates}, seed=0, ridge=1.0, store={str(tmp_path)!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 120
    finished_before = 0
    try:
        while time.monotonic() < deadline and process.poll() is None:
            files = list(tmp_path.glob("*.jsonl"))
            if files:
                finished_before = files[0].read_text().count("\n")
                if finished_before >= 2:
                    break
            time.sleep(0.005)
        assert process.poll() is None, "the sweep ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    (path,) = tmp_path.glob("*.jsonl")
    persisted = path.read_text().count("\n")  # items finished when the kill landed
    assert 2 <= persisted < len(ns)
    world = sa.World.random(n_prompts, n_responses, seed=1)
    store = SweepStore(tmp_path)
    resumed = sa.rate_sweep(world, "pmle", ns, replicates=replicates, seed=0, ridge=1.0, store=store)
    recomputed_finished = store.computed - (len(ns) - persisted)
    print(f"\nkill -9 after {persisted} of {len(ns)} items; items recomputed on resume: {recomputed_finished}")
    assert store.loaded == persisted and recomputed_finished == 0
    uninterrupted = sa.rate_sweep(world, "pmle", ns, replicates=replicates, seed=0, ridge=1.0)
    assert _record(resumed) == _record(uninterrupted)


@pytest.mark.parametrize("workers", [1, 3])
def test_thread_pool_executor_gives_the_serial_record(world, serial, workers):
    with ThreadPoolExecutor(max_workers=workers) as executor:
        assert _record(_sweep(world, executor=executor)) == serial


def test_interrupted_distributed_run_resumed_serially_gives_the_serial_record(world, serial, tmp_path):
    store = SweepStore(tmp_path)
    sa.rate_sweep(world, "pmle", NS[:2], replicates=6, seed=3, ridge=1.0, store=store)
    # The same items under a longer sweep are another sweep file; copy the finished lines across, as a
    # sweep killed after two items would have left them.
    (partial,) = tmp_path.glob("*.jsonl")
    full = SweepStore(tmp_path / "full")
    _sweep(world, store=full)
    (full_path,) = (tmp_path / "full").glob("*.jsonl")
    full_path.write_text("".join(full_path.read_text().splitlines(keepends=True)[:2]))
    partial.unlink()
    with ThreadPoolExecutor(max_workers=2) as executor:
        resumed = SweepStore(tmp_path / "full")
        assert _record(_sweep(world, store=resumed, executor=executor)) == serial
    assert (resumed.loaded, resumed.computed) == (2, len(NS) - 2)


def test_dask_local_cluster_gives_the_serial_record(world, serial):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        with distributed.Client(cluster) as client:
            assert len(client.scheduler_info()["workers"]) == 2
            record = _record(_sweep(world, executor=client))
            pool = _record(_sweep(world, executor=client.get_executor()))
    print("\nDask LocalCluster (2 workers) record == serial record:", record == serial)
    assert record == serial and pool == serial


def test_store_refuses_an_unwritable_directory(tmp_path):
    target = tmp_path / "file"
    target.write_text("not a directory")
    with pytest.raises(ValueError, match="store directory"):
        SweepStore(target / "sub")
    with pytest.raises(ValueError, match="executor"):
        sa.rate_sweep(sa.World.random(2, 3), "pmle", (8,), replicates=2, executor=object())


def test_atomic_write_keeps_the_old_file_when_the_writer_dies(tmp_path):
    from synthalign.store import atomic_write

    path = tmp_path / "rates.json"
    atomic_write(path, lambda temporary: temporary.write_text('{"old": 1}'))

    def dies_midway(temporary):
        temporary.write_text('{"new"')  # half a record, then the process is interrupted
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies_midway)
    assert path.read_text() == '{"old": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rates.json"]  # no temporary left behind


def test_unwritable_out_is_refused_before_any_work(tmp_path):
    from synthalign.experiments._common import CommonArgs, OptionError

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OptionError, match="not a writable folder"):
        CommonArgs(out=str(blocker / "sub"))
