"""One population PMLE fit against its own Cholesky solves, timed in turn in one run.

    python benchmarks/records/fit_ratio.py A OUT_JSON

The floor is iterations × one batched `cholesky_ex` + `cholesky_solve` of the fit's
[1, 10, A, A] shape; two fits are timed (the first includes warm-up), the ratio uses the faster.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

import synthalign as sa


def main() -> None:
    torch.set_num_threads(1)
    A, out = int(sys.argv[1]), sys.argv[2]
    data = sa.population_preferences(sa.World.random(10, A, seed=0))
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(1, 10, A, 8, generator=generator, dtype=torch.float64)
    spd = base @ base.transpose(-1, -2) + torch.eye(A, dtype=torch.float64)
    grad = torch.randn(1, 10, A, 1, generator=generator, dtype=torch.float64)

    def cholesky() -> float:
        start = time.perf_counter()
        factor, _ = torch.linalg.cholesky_ex(spd, upper=True)  # as the Newton solver factors
        torch.cholesky_solve(grad, factor, upper=True)
        return time.perf_counter() - start

    fits, solves = [], []
    for _ in range(2):
        solves.append(cholesky())
        start = time.perf_counter()
        result = sa.fit("pmle", data)
        fits.append(time.perf_counter() - start)
        solves.append(cholesky())
    floor = result.iterations * statistics.median(solves)
    record = {
        "A": A,
        "fit_s": fits,
        "cholesky_s": solves,
        "iterations": result.iterations,
        "converged": bool(result.converged.all()),
        "ratio": min(fits) / floor,
    }
    print(json.dumps(record))
    with open(out, "w") as handle:
        json.dump(record, handle)


if __name__ == "__main__":
    main()
