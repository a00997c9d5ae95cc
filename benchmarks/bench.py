"""The synthalign benchmark: every hot path over a range of sizes, as ratios to a floor measured in the same run.

Run:  python benchmarks/bench.py [--quick] [--device cpu|cuda] [--repeats 5] [--out bench.json]
                                 [--only WORKLOAD ...] [--fit-size A] [--compare REF_JSON]
                                 [--fig1-reference OLD_CHECKOUT]

Each workload is timed `repeats` times (at least 5 for a record worth reading) after one
warm-up run; the record holds the median, the minimum and maximum, their spread
((max − min) / median) and the ratio of the median to the workload's floor, a cost measured
in the same run that the workload cannot beat by much:

* population loss and solver derivatives: a plain copy of the cell table's bytes
  (reading and writing X·A² float64 once); the derivatives with the whole Hessian
  (`derivatives`) and with its upper triangle only, as the Newton solver asks for them
  (`derivatives_solver`);
* Newton fits: the fit's own batched Cholesky solves (iterations × one
  `cholesky_ex` + `cholesky_solve` of the same [R, X, A, A] shape);
* argmin over a class with per-replicate rewards: the plain argmin over the same
  class with one shared reward;
* the batched count fit: the per-sample Adam PMLE written the usual way
  (explicit pair tensors, one replicate at a time, 500 steps), as a speed-up;
  and 1,000 replicates at n = 4096 against the 2 s target;
* sampling (torch and numpy count samplers): its own cheapest n over n = 2^5 … 2^40
  (cost should not grow with n);
* count datasets over many cells (10^4 … 10^6, `sample_counts`), ancestral sampling of
  sequences and the enumeration of a sequence world: a plain copy of the result's bytes;
* the command line: the 0.5 s target itself;
* `synthalign run fig1` at its default size: with `--fig1-reference OLD_CHECKOUT`, the same
  command run from that checkout, in alternation with the current one (target: at most 1/3).

Timings use one CPU thread (`torch.set_num_threads(1)`) unless --threads says
otherwise.  `--device cuda` runs every workload on the GPU (the memory and numpy ones stay
on the CPU); on a machine without one it stops with an error.  The JSON record (`--out`)
can be compared with a later one (`--compare REF_JSON` prints new / reference for every
workload both hold).  The script uses only public names that have existed since the first
benchmark (the sequence workloads are skipped where they are missing), so it can time an
older checkout (`PYTHONPATH=<old checkout>`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import synthalign as sa
from synthalign.estimators.derivatives import LogitObjective
from synthalign.evaluate import data_weights, make_context
from synthalign.registry.protocol import get_objective

ADAM_STEPS = 500


class Bench:
    def __init__(self, device: str, repeats: int):
        self.device = torch.device(device)
        self.repeats = repeats
        self.records: list[dict] = []

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def times(self, fn, repeats: int | None = None) -> list[float]:
        fn()  # warm-up
        self.sync()
        out = []
        for _ in range(repeats or self.repeats):
            start = time.perf_counter()
            fn()
            self.sync()
            out.append(time.perf_counter() - start)
        return out

    def interleaved(self, fns: dict, repeats: int | None = None) -> dict[str, list[float]]:
        """Times of each of `fns`, run in turn within every repeat (after one warm-up each).

        On a loaded machine the load drifts during a run; timing a workload and its floor
        (or the sizes of a sweep) in alternation exposes them to the same load, so their
        ratio is what the run measures.
        """
        for fn in fns.values():
            fn()
        self.sync()
        out = {name: [] for name in fns}
        for _ in range(repeats or self.repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                self.sync()
                out[name].append(time.perf_counter() - start)
        return out

    def record(self, workload: str, params: dict, times: list[float], floor: float | None, target: str, **extra):
        """One record; `times` are seconds, or MiB for a memory workload (extra `unit="MiB"`)."""
        median = statistics.median(times)
        unit = extra.get("unit", "s")
        scale, shown = (1e3, "ms") if unit == "s" else (1.0, "MiB")
        entry = {
            "workload": workload,
            "params": params,
            "median_s": median,
            "min_s": min(times),
            "max_s": max(times),
            "spread": (max(times) - min(times)) / median if median > 0 else 0.0,
            "runs": len(times),
            "floor_s": floor,
            "ratio": None if floor is None else median / floor,
            "target": target,
            **extra,
        }
        self.records.append(entry)
        ratio = "" if floor is None else f"  ratio {entry['ratio']:8.2f}"
        size = ", ".join(f"{k}={v}" for k, v in params.items())
        print(
            f"{workload:<24} {size:<34} median {median * scale:10.1f} {shown}  [{min(times) * scale:.1f}, "
            f"{max(times) * scale:.1f}]{ratio}  {target}",
            flush=True,
        )
        return entry


def copy_floor(bench: Bench, elements: int) -> float:
    return statistics.median(bench.times(copier(bench, elements)))


def copier(bench: Bench, elements: int):
    """A plain copy of `elements` float64 (read once, written once): the memory-bandwidth floor."""
    source = torch.rand(elements, dtype=torch.float64, device=bench.device)
    target = torch.empty_like(source)
    return lambda: target.copy_(source)


def cholesky_time(bench: Bench, shape: tuple[int, ...]) -> float:
    A = shape[-1]
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(*shape[:-2], A, 8, generator=generator, dtype=torch.float64).to(bench.device)
    spd = base @ base.transpose(-1, -2) + torch.eye(A, dtype=torch.float64, device=bench.device)
    grad = torch.randn(*shape[:-1], 1, generator=generator, dtype=torch.float64).to(bench.device)

    def solve():
        factor, _ = torch.linalg.cholesky_ex(spd, upper=True)  # as the Newton solver factors
        torch.cholesky_solve(grad, factor, upper=True)

    return statistics.median(bench.times(solve))


def big_world(bench: Bench, A: int, X: int = 10) -> sa.World:
    return sa.World.random(X, A, seed=0, device=bench.device)


def bench_population_loss(bench: Bench, sizes) -> None:
    for A in sizes:
        world = big_world(bench, A)
        policy = sa.Policy.from_logits(torch.zeros(10, A, dtype=torch.float64, device=bench.device))
        timed = bench.interleaved(
            {"copy": copier(bench, 10 * A * A), "loss": lambda w=world, p=policy: sa.population_loss("pmle", w, p)}
        )
        floor, times = statistics.median(timed["copy"]), timed["loss"]
        bench.record("population_loss", {"objective": "pmle", "X": 10, "A": A}, times, floor, "ratio <= 5")


def bench_derivatives(bench: Bench, sizes) -> None:
    obj = get_objective("pmle")
    for A in sizes:
        world = big_world(bench, A)
        data = sa.population_preferences(world)
        pair_weight, prompt_weight, total = data_weights(obj, data)
        ctx = make_context(obj, world, None, obj.resolve_params({}))
        problem = LogitObjective(obj, pair_weight, prompt_weight, total, ctx, 0.0, 0.0)
        theta = world.reference.logp.unsqueeze(0).clone()
        derivatives = problem.derivatives
        copy = copier(bench, 10 * A * A)
        # The whole symmetric Hessian, and only its upper triangle: what the Newton solver asks for
        # (where the checkout has that option).
        workloads = {"copy": copy, "derivatives": lambda d=derivatives, t=theta: d(t)}
        if "upper_only" in inspect.signature(derivatives).parameters:
            workloads["upper"] = lambda d=derivatives, t=theta: d(t, upper_only=True)
        timed = bench.interleaved(workloads)
        floor = statistics.median(timed["copy"])
        params = {"objective": "pmle", "X": 10, "A": A}
        bench.record("derivatives", params, timed["derivatives"], floor, "ratio <= 5")
        if "upper" in timed:
            bench.record("derivatives_solver", {**params, "hessian": "upper"}, timed["upper"], floor, "ratio <= 5")
        del problem, derivatives, data, pair_weight


def bench_fits(bench: Bench, cases) -> None:
    for objective, A, kwargs in cases:
        world = big_world(bench, A)
        obj = get_objective(objective)
        data = sa.population_pairs(world) if obj.data == "pairs" else sa.population_preferences(world)
        result = {}

        def run(o=objective, d=data, k=kwargs, result=result):
            result["fit"] = sa.fit(o, d, **k)

        times = bench.times(run)
        fitted = result["fit"]
        floor = fitted.iterations * cholesky_time(bench, (1, 10, A, A))
        params = {"objective": objective, "X": 10, "A": A, **{k: v for k, v in kwargs.items()}}
        bench.record(
            "fit_population",
            params,
            times,
            floor,
            "ratio <= 3" if A >= 1000 else "",
            iterations=fitted.iterations,
            converged=bool(fitted.converged.all()),
        )


def bench_separable(bench: Bench, sizes) -> None:
    for A in sizes:
        counts = sa.population_preferences(big_world(bench, A)).counts
        floor = copy_floor(bench, counts.numel())
        times = bench.times(lambda c=counts: sa.comparison_graph_separable(c))
        bench.record("separable", {"X": 10, "A": A}, times, floor, "")


def bench_class(bench: Bench, members: int, replicates: int, objective: str = "distillation") -> None:
    world = sa.World.paper_toy(seed=0, device=bench.device)
    generator = torch.Generator().manual_seed(0)
    logits = world.target.logp + 0.3 * torch.randn(members, 10, 10, generator=generator, dtype=torch.float64).to(
        bench.device
    )
    candidates = torch.log_softmax(logits, dim=-1)
    obj = get_objective(objective)
    if obj.data == "pairs":
        data = sa.PairData(
            world.sample_preferences(4096, replicates, seed=1).counts, 4096, world
        )  # the pairs of a labelled sample, without labels
    else:
        data = world.sample_preferences(4096, replicates, seed=1)
    shared = world.true_reward
    per_replicate = shared + 0.05 * torch.randn(replicates, 10, 10, generator=generator, dtype=torch.float64).to(
        bench.device
    )
    timed = bench.interleaved(
        {
            "shared": lambda: sa.argmin_over_class(objective, data, candidates, reward=shared),
            "per_rep": lambda: sa.argmin_over_class(objective, data, candidates, reward=per_replicate),
        }
    )
    params = {"objective": objective, "K": members, "R": replicates}
    base = bench.record("class_argmin_shared", params, timed["shared"], None, "")
    bench.record("class_argmin_per_rep", params, timed["per_rep"], base["median_s"], "ratio <= 3")


def bench_fit_over_class(bench: Bench, members: int, replicates: int) -> None:
    world = sa.World.paper_toy(seed=0, device=bench.device)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(members, 10, 10, generator=generator, dtype=torch.float64).to(bench.device)
    candidates = torch.log_softmax(world.target.logp + 0.3 * noise, dim=-1)
    data = world.sample_preferences(256, replicates, seed=1)
    timed = bench.interleaved(
        {
            "plain": lambda: sa.argmin_over_class("pmle", data, candidates),
            "fit": lambda: sa.fit_over_class("distillation", data, candidates, reward_class=candidates),
        }
    )
    base = bench.record("class_argmin_pmle", {"K": members, "R": replicates}, timed["plain"], None, "")
    params = {"objective": "distillation", "K": members, "R": replicates}
    bench.record("fit_over_class", params, timed["fit"], base["median_s"], "ratio <= 3")


def bench_sampling(bench: Bench, replicates: int, exponents) -> None:
    """Count datasets of n = 2^e pairs: the torch sampler (the target) and numpy's, each over every n."""
    world = sa.World.paper_toy(seed=0, device=bench.device)
    cpu_world = world.to("cpu")
    samplers = {
        "sampling_torch": lambda n: sa.sample_preferences_torch(world, n, replicates, 1),
        "sampling_numpy": lambda n: cpu_world.sample_preferences(n, replicates, seed=1),
    }
    for name, sample in samplers.items():
        timed = bench.interleaved({e: (lambda e=e, sample=sample: sample(2**e)) for e in exponents})
        medians = {}
        for e in exponents:
            medians[e] = statistics.median(timed[e])
            bench.record(name, {"R": replicates, "n": f"2^{e}"}, timed[e], None, "")
        spread = f"2^{min(exponents)}..2^{max(exponents)}"
        target = "ratio <= 2" if name == "sampling_torch" else ""
        bench.record(
            f"{name}_spread", {"R": replicates, "n": spread}, [max(medians.values())], min(medians.values()), target
        )


def adam_pmle_one_replicate(prompt, chosen, rejected, X, A, gamma, device) -> torch.Tensor:
    """Per-sample PMLE as usually written: explicit pair tensors, full-batch Adam, 500 steps."""
    logits = torch.zeros(X, A, dtype=torch.float64, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.05)
    for _ in range(ADAM_STEPS):
        optimizer.zero_grad()
        logp = torch.log_softmax(logits, dim=-1)
        margin = gamma * (logp[prompt, chosen] - logp[prompt, rejected])
        loss = -torch.nn.functional.logsigmoid(margin).mean()
        loss.backward()
        optimizer.step()
    return logits.detach()


def bench_count_fit(bench: Bench, replicates: int, n: int) -> None:
    world = sa.World.paper_toy(seed=0, device=bench.device)
    data = world.sample_preferences(n, replicates, seed=1)
    times = bench.times(lambda: sa.fit("pmle", data))
    per_replicate = [t / replicates for t in times]
    pairs = data[0].to_list(seed=2)
    prompt, chosen, rejected = (t[0].to(bench.device) for t in (pairs.prompt, pairs.chosen, pairs.rejected))
    adam = bench.times(
        lambda: adam_pmle_one_replicate(prompt, chosen, rejected, 10, 10, world.gamma, bench.device),
        repeats=bench.repeats,
    )
    base = bench.record("adam_pmle_per_replicate", {"n": n, "steps": ADAM_STEPS}, adam, None, "")
    entry = bench.record("count_fit_per_replicate", {"R": replicates, "n": n}, per_replicate, None, "speed-up >= 1000")
    entry["speedup"] = base["median_s"] / entry["median_s"]
    print(f"{'':<24} batched count fit is {entry['speedup']:.0f}x faster per replicate than per-sample Adam")


def bench_count_fit_many(bench: Bench, replicates: int, n: int) -> None:
    """PMLE fitted to `replicates` datasets of the toy world at once, against the 2 s target."""
    world = sa.World.paper_toy(seed=0, device=bench.device)
    data = world.sample_preferences(n, replicates, seed=1)
    result = {}

    def run():
        result["fit"] = sa.fit("pmle", data)

    times = bench.times(run)
    fitted = result["fit"]
    bench.record(
        "count_fit",
        {"R": replicates, "n": n},
        times,
        2.0,
        "ratio <= 1 (2 s)",
        iterations=fitted.iterations,
        converged=int(fitted.converged.sum()),
    )


def bench_counts_cells(bench: Bench, cells_sizes, replicates: int, chunk: int, n: int = 2**30) -> None:
    """`sample_counts` over many cells (binomial tree splitting), `chunk` replicates per call, against a copy
    of the [R, C] result's bytes."""
    for cells in cells_sizes:
        generator = torch.Generator(bench.device).manual_seed(0)
        probs = torch.rand(cells, dtype=torch.float64, device=bench.device, generator=generator)
        sampler = torch.Generator(bench.device).manual_seed(1)

        def draw(probs=probs, sampler=sampler):
            for start in range(0, replicates, chunk):
                sa.sample_counts(probs, n, min(chunk, replicates - start), sampler)

        copy = copier(bench, min(chunk, replicates) * cells)
        chunks = -(-replicates // chunk)
        timed = bench.interleaved({"copy": copy, "counts": draw})
        floor = statistics.median(timed["copy"]) * chunks
        bench.record(
            "counts_cells", {"R": replicates, "C": cells, "n": f"2^{n.bit_length() - 1}"}, timed["counts"], floor, ""
        )


def bench_sequences(bench: Bench, sizes, length: int = 8) -> None:
    """Ancestral sampling of sequences from a tabular autoregressive policy, against a copy of the tokens."""
    SequenceWorld, TabularAutoregressive = (
        getattr(sa, "SequenceWorld", None),
        getattr(sa, "TabularAutoregressive", None),
    )
    if SequenceWorld is None or TabularAutoregressive is None:
        print("sequences: skipped (no SequenceWorld in this checkout)")
        return
    world = SequenceWorld.random(vocab_size=4, max_length=length, n_prompts=4, seed=0, device=bench.device)
    policy = TabularAutoregressive(world.target, world.space)
    prompts = torch.arange(world.n_prompts, device=bench.device)
    generator = torch.Generator(bench.device).manual_seed(1)
    for count in sizes:
        per_prompt = count // world.n_prompts
        copy = copier(bench, per_prompt * world.n_prompts * length)
        timed = bench.interleaved({"copy": copy, "sample": lambda k=per_prompt: policy.sample(prompts, k, generator)})
        bench.record(
            "sequence_sampling",
            {"sequences": count, "L": length, "V": 4},
            timed["sample"],
            statistics.median(timed["copy"]),
            "",
        )


def bench_enumerate(bench: Bench, lengths, vocab: int = 3) -> None:
    """Enumerating a sequence world (every sequence of length <= L over V tokens) and one exact forward KL,
    against a copy of three tables of that many float64."""
    SequenceWorld = getattr(sa, "SequenceWorld", None)
    if SequenceWorld is None:
        print("enumerate: skipped (no SequenceWorld in this checkout)")
        return
    for length in lengths:
        size = {}

        def run(length=length, size=size):
            tabular = SequenceWorld.random(vocab, length, 1, seed=0, device=bench.device).as_tabular()
            size["sequences"] = tabular.n_responses
            return sa.forward_kl(tabular.target, tabular.reference)

        run()  # also tells the size of the floor
        timed = bench.interleaved({"copy": copier(bench, 3 * size["sequences"]), "enumerate": run})
        bench.record(
            "enumerate_kl",
            {"V": vocab, "L": length, "sequences": size["sequences"]},
            timed["enumerate"],
            statistics.median(timed["copy"]),
            "",
        )


def child_peak(code: str) -> float:
    """Peak resident memory (MiB) a fresh interpreter adds while running `code`, beyond its imports.

    The kernel's high-water mark is reset after the imports (`/proc/self/clear_refs`), so the
    peak of `code` is measured even when it stays below the import-time peak; where that reset
    is unavailable, the rise of `ru_maxrss` is reported instead.
    """
    script = (
        "import resource, synthalign as sa, torch\n"
        "torch.set_num_threads(1)\n"
        "def status(key):\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith(key):\n"
        "            return int(line.split()[1])\n"
        "try:\n"
        "    open('/proc/self/clear_refs', 'w').write('5')\n"
        "    base, peak = status('VmRSS:'), lambda: status('VmHWM:')\n"
        "except OSError:\n"
        "    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"{code}\n"
        "print((peak() - base) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=os.environ)
    return float(out.stdout.strip().splitlines()[-1])


def bench_memory(bench: Bench, A: int, members: int) -> None:
    table = 10 * A * A * 8 / 2**20
    peak = child_peak(
        f"w = sa.World.random(10, {A}, seed=0)\n"
        f"p = sa.Policy.from_logits(torch.zeros(10, {A}, dtype=torch.float64))\n"
        "sa.population_loss('pmle', w, p)"
    )
    bench.record(
        "peak_memory_population",
        {"A": A, "table_MiB": round(table, 1)},
        [peak],
        table,
        "peak <= 2 tables + chunk budget",
        unit="MiB",
    )
    peak = child_peak(
        "w = sa.World.paper_toy(seed=0)\n"
        f"c = torch.log_softmax(w.target.logp + 0.3 * torch.randn({members}, 10, 10, dtype=torch.float64), -1)\n"
        "d = sa.PairData(w.sample_preferences(4096, 100, seed=1).counts, 4096, w)\n"
        "r = w.true_reward + 0.05 * torch.randn(100, 10, 10, dtype=torch.float64)\n"
        "sa.argmin_over_class('distillation', d, c, reward=r)"
    )
    classes = members * 1000 * 8 / 2**20
    bench.record(
        "peak_memory_class",
        {"K": members, "R": 100, "class_MiB": round(classes, 1)},
        [peak],
        classes,
        "peak <= class + chunk budget",
        unit="MiB",
    )


def bench_cli(bench: Bench) -> None:
    probe = (
        "import sys\n"
        "from synthalign.cli import main\n"
        "sys.argv[1:] = {args!r}\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write('TORCH=%d\\n' % ('torch' in sys.modules))\n"
    )
    for args in (["--help"], ["list"]):
        code = probe.format(args=args)
        imported = []

        def call(c=code, imported=imported):
            out = subprocess.run([sys.executable, "-c", c], capture_output=True, text=True, env=os.environ)
            imported.append("TORCH=1" in out.stderr)

        times = bench.times(call)
        bench.record("cli", {"args": " ".join(args)}, times, 0.5, "ratio <= 1, torch not imported", torch=imported[-1])


def fig1_command(root: pathlib.Path, out: str, device: str) -> tuple[list[str], dict]:
    """`synthalign run fig1` at its default size into the fresh folder `out`, with the code of `root`."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "synthalign.cli", "run", "fig1", "--out", out, "--no-progress"]
    if device != "cpu":
        command += ["--device", device]
    return command, env


def bench_fig1(bench: Bench, repeats: int, reference: str | None = None) -> None:
    """The command-line run of fig1 at its default size, each run into a new folder (no store to reuse).

    With `reference` (the root of an older checkout) the same command is run from that checkout
    in alternation with this one, so both see the same load; the record `fig1_vs_reference`
    holds this run's median over the reference's (target: at most 1/3).
    """
    roots = {"fig1_run": pathlib.Path(__file__).resolve().parents[1]}
    if reference is not None:
        roots["fig1_reference"] = pathlib.Path(reference).resolve()
    device = bench.device.type

    def runner(root):
        def run():
            with tempfile.TemporaryDirectory() as out:
                command, env = fig1_command(root, out, device)
                subprocess.run(command, capture_output=True, check=True, env=env, cwd=root)

        return run

    out = {name: [] for name in roots}
    for _ in range(repeats):  # no warm-up: each run is a fresh interpreter
        for name, root in roots.items():
            start = time.perf_counter()
            runner(root)()
            out[name].append(time.perf_counter() - start)
    current = bench.record("fig1_run", {"size": "default"}, out["fig1_run"], None, "")
    if reference is not None:
        old = bench.record(
            "fig1_reference",
            {"size": "default", "checkout": str(roots["fig1_reference"])},
            out["fig1_reference"],
            None,
            "",
        )
        ratios = [a / b for a, b in zip(out["fig1_run"], out["fig1_reference"], strict=True)]
        entry = bench.record(
            "fig1_vs_reference", {"size": "default"}, [current["median_s"]], old["median_s"], "ratio <= 1/3"
        )
        entry["pair_ratios"] = ratios
        print(f"{'':<24} per-pair ratios (current / reference): " + ", ".join(f"{r:.3f}" for r in ratios))


def print_compare(records: list[dict], reference_path: str) -> None:
    reference = json.loads(pathlib.Path(reference_path).read_text())
    ref = {(r["workload"], json.dumps(r["params"], sort_keys=True)): r for r in reference["records"]}
    print(f"\nagainst {reference_path} ({reference.get('meta', {}).get('commit', '?')}): new / reference median")
    for r in records:
        old = ref.get((r["workload"], json.dumps(r["params"], sort_keys=True)))
        if old is None or not old["median_s"]:
            continue
        size = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        unit, scale = ("MiB", 1.0) if r.get("unit") == "MiB" else ("ms", 1e3)
        ratios = ""
        if r.get("ratio") is not None and old.get("ratio") is not None:
            ratios = f"   ratio to floor {old['ratio']:.2f} -> {r['ratio']:.2f}"
        print(
            f"{r['workload']:<24} {size:<34} {old['median_s'] * scale:10.1f} {unit} -> "
            f"{r['median_s'] * scale:10.1f} {unit}   x{r['median_s'] / old['median_s']:.3f}{ratios}"
        )


WORKLOADS = (
    "population_loss",
    "derivatives",
    "fit",
    "separable",
    "class",
    "sampling",
    "count_fit",
    "counts_cells",
    "sequences",
    "memory",
    "cli",
    "fig1",
)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu or cuda)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per workload (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="write the JSON record here")
    parser.add_argument("--only", nargs="*", choices=WORKLOADS, default=None, help="run only these workloads")
    parser.add_argument("--compare", default=None, metavar="REF_JSON", help="print ratios against an earlier record")
    parser.add_argument("--fit-size", type=int, default=None, metavar="A", help="time only the fits with A responses")
    parser.add_argument(
        "--fig1-reference",
        default=None,
        metavar="OLD_CHECKOUT",
        help="with the fig1 workload: also time fig1 from this older checkout, in alternation (ratio in one run)",
    )
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # the test suite's smoke run
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be positive")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.fig1_reference is not None and not (pathlib.Path(args.fig1_reference) / "synthalign").is_dir():
        parser.error(f"--fig1-reference: {args.fig1_reference} holds no synthalign package")
    if args.compare is not None:
        try:
            reference = json.loads(pathlib.Path(args.compare).read_text())
        except (OSError, ValueError) as error:
            parser.error(f"--compare: cannot read {args.compare} as JSON ({error})")
        if not isinstance(reference, dict) or not isinstance(reference.get("records"), list):
            parser.error(f"--compare: {args.compare} is not a record of this benchmark (no 'records' list)")
    torch.set_num_threads(args.threads)
    bench = Bench(args.device, args.repeats)
    only = set(args.only or WORKLOADS)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, commit {commit}")

    if args.tiny:
        big, fits, members, reps = (50,), [("pmle", 30, {}), ("rkl", 20, {"ridge": 1e-8})], 200, 8
        cells, sequences, lengths, many = (1000,), (1000,), (5,), (8, 2**8)
    elif args.quick:
        big = (1000, 2000)
        fits = [("pmle", 300, {}), ("pmle", 1000, {}), ("pmle", 300, {"beta": 0.1}), ("rkl", 300, {"ridge": 1e-8})]
        members, reps = 10_000, 100
        cells, sequences, lengths, many = (10**4, 10**5, 10**6), (10**4, 10**5, 10**6), (13, 16), (1000, 4096)
    else:
        big = (300, 1000, 2000)
        fits = [
            ("pmle", 100, {}),
            ("pmle", 300, {}),
            ("pmle", 1000, {}),
            ("distillation", 300, {}),
            ("pmle", 300, {"beta": 0.1}),
            ("rkl", 300, {"ridge": 1e-8}),
        ]
        members, reps = 100_000, 100
        cells, sequences, lengths, many = (10**4, 10**5, 10**6), (10**4, 10**5, 10**6), (13, 16, 19), (1000, 4096)
    if args.fit_size is not None:
        fits = [case for case in fits if case[1] == args.fit_size]
    if "population_loss" in only:
        bench_population_loss(bench, big)
    if "derivatives" in only:
        bench_derivatives(bench, big)
    if "fit" in only:
        bench_fits(bench, fits)
    if "separable" in only:
        bench_separable(bench, big[-1:])
    if "class" in only:
        bench_class(bench, members, reps)
        bench_fit_over_class(bench, min(members, 10_000), reps)
    if "sampling" in only:
        exponents = (5, 20) if args.tiny else (5, 10, 15, 20, 25, 30, 35, 40)
        bench_sampling(bench, 10 if args.tiny else 1000, exponents)
    if "count_fit" in only:
        bench_count_fit(bench, 4 if args.tiny else 100, 2**10 if args.tiny else 2**16)
        bench_count_fit_many(bench, *many)
    if "counts_cells" in only:
        bench_counts_cells(bench, cells, 10 if args.tiny else 20, 10 if args.tiny else 20)
    if "sequences" in only:
        bench_sequences(bench, sequences)
        bench_enumerate(bench, lengths)
    if "memory" in only and bench.device.type == "cpu":
        bench_memory(bench, big[-1], members)
    if "cli" in only:
        bench_cli(bench)
    if "fig1" in only and not args.tiny:
        bench_fig1(bench, args.repeats, args.fig1_reference)

    record = {
        "meta": {
            "commit": commit,
            "torch": torch.__version__,
            "device": args.device,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "quick": args.quick,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "maxrss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
        "records": bench.records,
    }
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(record, indent=1))
        print(f"wrote {args.out}")
    if args.compare:
        print_compare(bench.records, args.compare)


if __name__ == "__main__":
    main()
