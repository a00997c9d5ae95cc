"""A smoke run of the benchmark (benchmarks/bench.py) at tiny sizes: it runs, and its record reads back."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_tiny_run_writes_a_comparable_record(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--tiny", "--repeats", "1", "--only", "population_loss", "derivatives", "separable", "--out", str(out)]
    bench.main(args)
    record = json.loads(out.read_text())
    workloads = {r["workload"] for r in record["records"]}
    assert workloads == {"population_loss", "derivatives", "separable"}
    assert all(r["ratio"] > 0 for r in record["records"])
    bench.main([*args[:-2], "--compare", str(out)])
    assert "new / reference" in capsys.readouterr().out
