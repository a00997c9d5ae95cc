"""What the torch count sampler's spread over n is made of: per-draw binomial costs, and the draws per n.

    python benchmarks/records/binomial_costs.py OUT_JSON

Two measurements in one run, one thread:

1. the cost of one draw of `torch.binomial` and of `synthalign.worlds._binomial.sample_binomial`
   (which sends means below 20 to its vectorized inversion) on a [1000, 512] level, p = 1/2 in every
   column, counts spread uniformly over [1.8, 2.2] × 2·mean (so means of 0.9 to 1.1 × mean), median
   of 5 timed calls, both samplers alternating;
2. for the benchmark's sampling workload (`World.paper_toy(seed=0)`, R = 1000), per n: the number
   of binomial draws of the splitting tree (every node of every level, for every replicate), how
   many of them have a count above zero, and the sampler's median time over 5 calls.

The tree draws the same ~R·C binomials at every n; what changes with n is how many have a count
above zero (a zero count costs a few ns, any other draw tens to hundreds), and the mean of those
that do.  So the cost at n = 2^5, where most counts are zero, bounds the spread from below, whatever
the sampler's algorithm: (time at the costliest n) / (time at n = 2^5).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

import synthalign as sa
from synthalign.worlds import torch_sampling
from synthalign.worlds._binomial import sample_binomial
from synthalign.worlds.preferences import population_preferences

MEANS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 256.0, 1e4, 1e9, 1e15)
EXPONENTS = (5, 10, 15, 20, 25, 30, 35, 40)
REPEATS = 5


def _median_ns(call, draws: int, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) / draws * 1e9


def per_draw_costs(generator: torch.Generator) -> list[dict]:
    """ns per draw of torch.binomial and sample_binomial at each mean (module docstring, item 1)."""
    rows, columns = 1000, 512
    prob = torch.full((1, columns), 0.5, dtype=torch.float64)
    out = []
    for mean in MEANS:
        spread = torch.empty(rows, columns, dtype=torch.float64).uniform_(1.8, 2.2, generator=generator)
        count = torch.floor(spread * mean)
        samplers = {
            "torch.binomial": lambda count=count: torch.binomial(count, prob.expand_as(count), generator=generator),
            "sample_binomial": lambda count=count: sample_binomial(count, prob, generator),
        }
        costs = {name: [] for name in samplers}
        for _ in range(REPEATS):  # alternating, one timed call each
            for name, draw in samplers.items():
                costs[name].append(_median_ns(draw, count.numel(), 1))
        row = {"mean": mean, **{name: statistics.median(values) for name, values in costs.items()}}
        print(f"mean {mean:8g}: " + ", ".join(f"{name} {row[name]:7.1f} ns" for name in samplers))
        out.append(row)
    return out


def draws_per_n(generator: torch.Generator) -> list[dict]:
    """Per n: binomial draws of the tree, those with a positive count, and the sampler's time (item 2)."""
    world = sa.World.paper_toy(seed=0)
    law = population_preferences(world).counts[0]
    seen: list[tuple[int, int]] = []

    def counting(count, prob, gen):
        seen.append((count.numel(), int(count.count_nonzero())))
        return sample_binomial(count, prob, gen)

    out = []
    for e in EXPONENTS:
        torch_sampling.sample_binomial = counting
        try:
            seen.clear()
            torch_sampling.sample_counts(law, 2**e, 1000, generator)
        finally:
            torch_sampling.sample_binomial = sample_binomial
        draws, positive = sum(d for d, _ in seen), sum(p for _, p in seen)
        milliseconds = _median_ns(lambda e=e: sa.sample_preferences_torch(world, 2**e, 1000, generator), 1) / 1e6
        print(f"n = 2^{e}: {draws} draws, {positive} with a positive count, {milliseconds:.1f} ms")
        out.append({"n": f"2^{e}", "draws": draws, "positive": positive, "median_ms": milliseconds})
    return out


def main() -> None:
    torch.set_num_threads(1)
    out_path = sys.argv[1]
    generator = torch.Generator().manual_seed(0)
    record = {"per_draw_ns": per_draw_costs(generator), "per_n": draws_per_n(generator)}
    times = [row["median_ms"] for row in record["per_n"]]
    record["spread"] = max(times) / min(times)
    print(f"spread (slowest / fastest n) {record['spread']:.2f}")
    with open(out_path, "w") as handle:
        json.dump(record, handle, indent=1)


if __name__ == "__main__":
    main()
