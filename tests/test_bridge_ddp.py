"""Two real processes (torchrun, gloo on the CPU) train exactly as one process does on the same global batches.

`tests/bridge_ddp_worker.py` trains a tiny Llama with an offline pair objective, a pair objective with
beta·KL sampled on-policy, RKL and distillation on pairs from the current policy, on global batches of
7 rows (shards of 3 and 4) whose weights differ by up to 9×, with micro-batches of 2 rows.  Normalizing
the weights per shard or per micro-batch would move the parameters by far more than float rounding
(`test_bridge_trainers.py` shows the size of that effect); here they must agree to float32 rounding.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")

WORKER = pathlib.Path(__file__).with_name("bridge_ddp_worker.py")
MICRO_BATCH = "2"
# float32 parameters after 2 SGD steps; a sum split across two processes rounds differently.
TOLERANCE = 1e-6


def _worker():
    spec = importlib.util.spec_from_file_location("bridge_ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torchrun() -> list[str]:
    found = shutil.which("torchrun", path=str(pathlib.Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "two.pt"
    root = str(pathlib.Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    command = [*_torchrun(), "--nproc_per_node", "2", "--standalone", str(WORKER), str(out), MICRO_BATCH]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return torch.load(out)


@pytest.fixture
def one_process_accelerator():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield accelerate.Accelerator(cpu=True)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_two_processes_train_as_one(two_process_results, one_process_accelerator):
    worker = _worker()
    assert two_process_results["num_processes"] == 2
    assert one_process_accelerator.num_processes == 1
    initial = [p.detach() for p in worker.tiny_llama(0).parameters()]
    for name, case in worker.CASES.items():
        single = worker.train(accelerator=one_process_accelerator, **case)  # whole micro-batches of 7 rows
        double = two_process_results[name]
        moved = max((p - q).abs().max().item() for p, q in zip(single, initial, strict=True))
        assert moved > 1e-3, f"{name}: training did not move the parameters"
        gap = max((p - q).abs().max().item() for p, q in zip(single, double, strict=True))
        assert gap <= TOLERANCE, f"{name}: 2 processes differ from 1 by {gap:.3g}"
