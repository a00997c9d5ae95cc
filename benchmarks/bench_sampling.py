"""Benchmark: device-native sampling and enumeration (issue: sequence worlds and torch sampling).

    python benchmarks/bench_sampling.py [--device cpu|cuda] [--replicates 1000] [--cells 1000000]

Reports, each with the ratio to a memory-bandwidth floor measured in the same run (a plain
copy of a tensor of the same bytes as the result):

* 1,000 replicate count datasets over 10^6 cells (`sample_counts`, binomial tree splitting),
  drawn `--chunk` replicates at a time so the [R, C] result never has to fit in memory at once;
* 10^6 sequences of length 8 sampled ancestrally from a tabular autoregressive policy;
* enumerating a ~10^6-sequence world (V = 3, L = 19: 2^20 − 1 sequences) and one exact forward KL.
"""

from __future__ import annotations

import argparse
import time

import torch

import synthalign as sa
from synthalign.worlds.autoregressive import TabularAutoregressive
from synthalign.worlds.sequence import SequenceWorld


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str) -> tuple[float, object]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


def _copy_floor(n_bytes: int, device: str) -> float:
    """Seconds to copy a buffer of `n_bytes` (read + write), best of 3."""
    source = torch.empty(n_bytes // 8, dtype=torch.float64, device=device).fill_(1.0)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(3):
        seconds, _ = _timed(lambda: target.copy_(source), device)
        best = min(best, seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--cells", type=int, default=10**6)
    parser.add_argument("--chunk", type=int, default=50, help="replicates drawn per call")
    parser.add_argument("--sequences", type=int, default=10**6)
    parser.add_argument("--length", type=int, default=8)
    args = parser.parse_args()
    device = args.device
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")

    # 1. count datasets
    probs = torch.rand(args.cells, dtype=torch.float64, device=device, generator=torch.Generator(device).manual_seed(0))
    generator = torch.Generator(device).manual_seed(1)
    total = torch.zeros((), dtype=torch.float64, device=device)

    def counts():
        nonlocal total
        for start in range(0, args.replicates, args.chunk):
            size = min(args.chunk, args.replicates - start)
            total = total + sa.sample_counts(probs, 2**30, size, generator).sum()
        return total

    seconds, _ = _timed(counts, device)
    floor = _copy_floor(args.replicates * args.cells * 8, device) if args.replicates * args.cells <= 2**31 else None
    if floor is None:
        floor = _copy_floor(args.chunk * args.cells * 8, device) * (args.replicates / args.chunk)
    print(
        f"counts: {args.replicates} replicates x {args.cells} cells, n = 2^30: {seconds:.2f} s "
        f"({seconds / args.replicates * 1e3:.1f} ms/replicate); copy floor {floor:.3f} s; ratio {seconds / floor:.0f}x"
    )

    # 2. ancestral sampling of sequences
    world = SequenceWorld.random(vocab_size=4, max_length=args.length, n_prompts=4, seed=0, device=device)
    policy = TabularAutoregressive(world.target, world.space)
    prompts = torch.arange(world.n_prompts, device=device)
    per_prompt = args.sequences // world.n_prompts
    seconds, ids = _timed(lambda: policy.sample(prompts, per_prompt, generator), device)
    floor = _copy_floor(ids.numel() * args.length * 8, device)
    print(
        f"sequences: {ids.numel()} of length <= {args.length} (V = 4): {seconds:.2f} s; "
        f"copy floor (tokens, int64) {floor:.4f} s; ratio {seconds / floor:.0f}x"
    )

    # 3. enumeration and one exact forward KL
    def enumerate_and_kl():
        big = SequenceWorld.random(vocab_size=3, max_length=19, n_prompts=1, seed=0, device=device)
        tab = big.as_tabular()
        return tab.n_responses, sa.forward_kl(tab.target, tab.reference).item()

    seconds, (n_sequences, kl) = _timed(enumerate_and_kl, device)
    floor = _copy_floor(n_sequences * 3 * 8, device)
    print(
        f"enumerate {n_sequences} sequences + forward KL = {kl:.4f}: {seconds:.2f} s; "
        f"copy floor (3 tables) {floor:.4f} s; ratio {seconds / floor:.0f}x"
    )


if __name__ == "__main__":
    main()
