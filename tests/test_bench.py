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
    assert workloads == {"population_loss", "derivatives", "derivatives_solver", "separable"}
    assert all(r["ratio"] > 0 for r in record["records"])
    bench.main([*args[:-2], "--compare", str(out)])
    assert "new / reference" in capsys.readouterr().out


def test_bench_tiny_sampling_workloads_record_their_floors(bench, tmp_path):
    out = tmp_path / "bench.json"
    bench.main(["--tiny", "--repeats", "1", "--only", "sampling", "counts_cells", "sequences", "--out", str(out)])
    records = {r["workload"]: r for r in json.loads(out.read_text())["records"]}
    assert {"sampling_torch_spread", "counts_cells", "sequence_sampling", "enumerate_kl"} <= set(records)
    for name in ("counts_cells", "sequence_sampling", "enumerate_kl"):
        assert records[name]["floor_s"] > 0 and records[name]["ratio"] > 0
        assert records[name]["spread"] >= 0


def test_bench_fig1_reference_must_be_a_checkout(bench, tmp_path):
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--only", "fig1", "--fig1-reference", str(tmp_path)])


def test_bench_compare_must_be_a_benchmark_record(bench, tmp_path):
    # Checked before any workload runs: a file of another format (a fit_ratio.py record) or no file.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"A": 1000, "ratio": 2.0}))
    for path in (other, tmp_path / "missing.json"):
        with pytest.raises(SystemExit):
            bench.main(["--tiny", "--only", "separable", "--compare", str(path)])
