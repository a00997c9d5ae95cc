"""Helpers shared by the sweep-store tests (tests/test_grid.py, tests/test_grid_experiments.py)."""

from __future__ import annotations

import json
from pathlib import Path

from synthalign.experiments._grid import STORE_FOLDER


def comparable_record(out: Path, name: str) -> str:
    """The JSON record without `created`, `config.out`, `config.fresh` and any `seconds`: what two runs share."""
    record = json.loads((out / f"{name}.json").read_text())
    record.pop("created")
    record["config"].pop("out")
    record["config"].pop("fresh")

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if "seconds" not in k}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return json.dumps(strip(record))


def store_lines(out: Path) -> list[dict]:
    """Every complete item line of the store files under `out`, in file order (as the store reads them: a line
    cut short by a kill, and closed by the next append, is skipped)."""
    entries = []
    for path in sorted((out / STORE_FOLDER).glob("*.jsonl")):
        for line in path.read_text().splitlines(keepends=True):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if line.endswith("\n"):
                entries.append(entry)
    return entries
