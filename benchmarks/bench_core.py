"""Core benchmarks: sampling cost independent of n, batched PMLE fit, one exact population loss.

Run:  python benchmarks/bench_core.py [--replicates 1000] [--repeats 3]

Prints the best of `repeats` wall-clock timings for each task.  Targets (on a
2-core CPU): sampling 1,000 datasets of n = 2^30 within 2x of n = 2^5 (the cost
is bounded in n: one binomial draw per cell, and numpy stops early once a small
n is used up, which is why small n is the fastest); fitting PMLE to 1,000
replicates of the toy world in at most 2 s.
"""

from __future__ import annotations

import argparse
import time

import torch

import synthalign as sa


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=1000, help="replicate datasets")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    args = parser.parse_args(argv)

    world = sa.World.paper_toy(seed=0)
    rows = []
    sampling = {}
    for exponent in (5, 10, 15, 20, 30, 40):
        seconds = best_time(lambda e=exponent: world.sample_preferences(2**e, args.replicates, seed=1), args.repeats)
        sampling[exponent] = seconds
        rows.append((f"sample {args.replicates} datasets, n = 2^{exponent}", seconds))
    ratio = sampling[30] / sampling[5]
    spread = max(sampling.values()) / min(sampling.values())

    data = world.sample_preferences(4096, args.replicates, seed=1)
    holder = {}

    def fit_pmle():
        holder["fit"] = sa.fit("pmle", data)

    rows.append((f"fit PMLE to {args.replicates} replicates (n = 4096)", best_time(fit_pmle, args.repeats)))
    fitted = holder["fit"]

    big = sa.World.random(10, 1000, seed=0)
    policy = sa.Policy.from_logits(torch.zeros(10, 1000, dtype=torch.float64))
    seconds = best_time(lambda: sa.population_loss("pmle", big, policy), args.repeats)
    rows.append(("exact population PMLE loss, X = 10, A = 1,000", seconds))

    width = max(len(name) for name, _ in rows)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds * 1e3:9.1f} ms")
    print(f"sampling ratio n=2^30 / n=2^5: {ratio:.2f} (target <= 2); slowest / fastest over n: {spread:.2f}")
    print(
        f"PMLE fit: {fitted.iterations} Newton iterations, converged {int(fitted.converged.sum())}/{args.replicates}"
    )


if __name__ == "__main__":
    main()
