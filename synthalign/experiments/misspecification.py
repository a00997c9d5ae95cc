"""Misspecification: a restricted reward class leaves a floor under the 1/n rate, and reward over-optimization.

World: `World.random` (X prompts, A responses, mu = pi0, pi* independent).  Reward classes: linear
features ℛ_d = {φ_{:d}(x, a)·w} with φ one N(0, 1) draw [X, A, d_max] whose first d columns are used, so
the classes are nested; low-rank classes R = c(x) + U[x]·V[a] of rank k (`LowRankClass`, realizable once
k ≥ min(X, A − 1); its sampled fits start at its population fit); plus the tabular class (one-hot features,
realizable: floor 0).  For each class:

* the exact floor KL(π* ‖ π_{R̂∞}) with R̂∞ the population BT fit in the class
  (`synthalign.estimators.misspecification.approximation_floor`);
* the measured error E KL(π* ‖ π_{R̂n}) over n = 2^k, `replicates` datasets each (the RKL estimator at
  β = 0 is π_{R̂n} itself, spec §2), fitted by least squares as floor + c/n on the upper half of the n
  grid (the expansion floor + c/n + O(n^{-3/2}) is asymptotic); 95% intervals for both by a bootstrap
  over replicates (the same resampled replicates at every n).

Over-optimization (Gao, Schulman, Hilton 2023): with the misspecified R̂∞ of the smallest class, RLHF's
optimum π_β ∝ π0 exp(R̂∞/β) over a decreasing β grid: KL(π_β ‖ π0) against the proxy gain in R̂∞, the gold
gain in R* = γ ln π*, the true win rate P(π_β ≻ π0) and KL(π* ‖ π_β) — all exact.

Expected: the fitted floor's interval covers the exact floor for every class, and the tabular class has
floor 0.  The floor need not shrink as the linear class grows: R̂∞ is the Bradley–Terry projection of the
law under mu ⊗ mu, not the KL projection of π*, so a class that fits the preferences better can induce a
π_{R̂∞} farther from π* in KL(π* ‖ ·).  The proxy gain grows monotonically with KL while the gold gain and
the true win rate need not.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from concurrent.futures import Executor

import numpy as np
import torch

import synthalign as sa
from synthalign.estimators.misspecification import (
    LowRankClass,
    approximation_floor,
    fit_reward_class,
    overoptimization_curve,
    random_features,
    warm_started,
)
from synthalign.experiments._common import (
    CommonArgs,
    check_log2_range,
    check_positive,
    column_legend,
    log2_grid,
    new_figure,
    save_figure,
    write_record,
)
from synthalign.experiments._grid import run_grid
from synthalign.experiments._plots import band_line, style_axes

__all__ = [
    "NAME",
    "Args",
    "floor_rate_fit",
    "class_errors",
    "low_rank_classes",
    "class_dimension",
    "run",
    "plot",
    "summary",
]

NAME = "misspecification"
_SIZES = {
    # size: (largest log2 n, replicates, bootstrap resamples)
    "quick": (12, 20, 200),
    "default": (16, 200, 1000),
    "full": (20, 1000, 2000),
}


@dataclasses.dataclass
class Args(CommonArgs):
    """Options of the misspecification experiment (CommonArgs plus these)."""

    n_prompts: int = 4
    """|X|"""
    n_responses: int = 8
    """|A|"""
    gamma: float = 0.5
    """preference tilt"""
    logit_scale: float = 1.0
    """logit scale of pi* and pi0"""
    dims: tuple[int, ...] = (2, 4, 8)
    """feature dimensions of the linear reward classes (nested: the first d columns of one draw)"""
    ranks: tuple[int, ...] = (1, 2)
    """ranks k of the low-rank reward classes R = c(x) + U[x]·V[a] (`LowRankClass`)"""
    log2_n_min: int = 6
    """smallest n is 2^log2_n_min"""
    log2_n_max: int | None = None
    """largest n is 2^log2_n_max; None: 12 quick, 16 default, 20 full"""
    ridge: float = 1e-3
    """ridge of the reward fits on the summed loss (keeps separable small samples finite)"""
    betas: tuple[float, ...] = tuple(float(b) for b in np.logspace(1, -2, 13))
    """beta grid of the over-optimization curve"""
    plot: bool = True
    """write the PNG plot"""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.dims = tuple(int(d) for d in self.dims)
        if not self.dims or min(self.dims) < 1:
            raise ValueError(f"dims must be positive integers, got {self.dims!r}")
        self.ranks = tuple(int(k) for k in self.ranks)
        if self.ranks and min(self.ranks) < 1:
            raise ValueError(f"ranks must be positive integers, got {self.ranks!r}")
        check_positive(self, "gamma", "logit_scale", "ridge")
        check_log2_range(self.log2_n_min, self.sized(self.log2_n_max, _SIZES, 0))

    @property
    def ns(self) -> list[int]:
        return log2_grid(self.log2_n_min, self.sized(self.log2_n_max, _SIZES, 0))

    @property
    def n_replicates(self) -> int:
        return self.sized(self.replicates, _SIZES, 1)


def floor_rate_fit(ns: Sequence[int], errors: np.ndarray, resamples: int, seed: int) -> dict:
    """Least squares of the mean error on [1, 1/n]: floor + c/n, with 95% bootstrap intervals over replicates.

    errors [len(ns), R]; the bootstrap resamples replicate indices (the same at every n, as the datasets
    of one replicate index are independent across n but identically drawn).
    """
    design = np.stack([np.ones(len(ns)), 1.0 / np.asarray(ns, dtype=float)], axis=1)

    def solve(mean: np.ndarray) -> np.ndarray:
        return np.linalg.lstsq(design, mean, rcond=None)[0]

    floor, slope = solve(errors.mean(axis=1))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, errors.shape[1], size=(resamples, errors.shape[1]))
    boot = np.stack([solve(errors[:, pick].mean(axis=1)) for pick in picks])  # resamples × 2, tiny solves
    low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    return {"floor": floor, "floor_ci": [low[0], high[0]], "c": slope, "c_ci": [low[1], high[1]]}


def class_errors(world: sa.World, features: torch.Tensor | LowRankClass, n: int, args: Args) -> list[float]:
    """One work item: KL(π* ‖ π_R̂n) of the class with these features, on each of the replicate datasets of size n."""
    data = world.sample_preferences(n, args.n_replicates, seed=args.seed * 100003 + n)
    fit = fit_reward_class(data, features, ridge=args.ridge)
    policy = sa.reward_policy(fit.reward, world.gamma, world.prompt_dist)
    return sa.forward_kl(world.target, policy).cpu().tolist()


def low_rank_classes(args: Args) -> dict[str, LowRankClass]:
    """The low-rank reward classes of `args.ranks`, by name (their floors and fits: `LowRankClass`)."""
    return {f"low-rank k={k}": LowRankClass(k, seed=args.seed) for k in args.ranks}


def class_dimension(reward_class: torch.Tensor | LowRankClass, n_prompts: int, n_responses: int) -> int:
    """Free parameters of a class: d for linear features [X, A, d]; (X + A)·k for rank k."""
    if isinstance(reward_class, LowRankClass):
        return (n_prompts + n_responses) * reward_class.rank
    return int(reward_class.shape[-1])


def run(args: Args, *, executor: Executor | None = None) -> dict:
    """Floors and rates of every reward class, then the over-optimization curve; writes the JSON and PNG.

    Each (class, n) is one work item of the sweep store (`synthalign.experiments._grid`): finished items
    are kept in `<out>/store/` and reused by a rerun; `executor` runs them in parallel.  Low-rank fits
    start at the class's population optimum (`warm_started`).
    """
    start = time.time()
    world = sa.World.random(
        args.n_prompts, args.n_responses, gamma=args.gamma, logit_scale=args.logit_scale, seed=args.seed
    ).to(device=args.device)
    X, A = args.n_prompts, args.n_responses
    big = random_features(X, A, max(args.dims), seed=args.seed + 1).to(world.device)
    classes = {f"linear d={d}": big[..., :d] for d in args.dims}
    classes.update(low_rank_classes(args))
    classes["tabular"] = torch.eye(X * A, dtype=world.dtype, device=world.device).reshape(X, A, X * A)
    resamples = _SIZES[args.size][2]
    results = {"ns": args.ns, "fit_ns": args.ns[len(args.ns) // 2 :], "classes": {}}
    floors = {name: approximation_floor(world, features) for name, features in classes.items()}
    warm = {name: warm_started(features, floors[name]) for name, features in classes.items()}
    items = [(world, warm[name], n, args) for name in classes for n in args.ns]
    labels = [{"class": name, "n": n} for name in classes for n in args.ns]
    measured = iter(run_grid(args, NAME, class_errors, items, labels, executor=executor))
    for name, features in classes.items():
        exact = floors[name]
        errors = np.array([next(measured) for _ in args.ns], dtype=np.float64)
        upper = len(args.ns) // 2
        decomposition = floor_rate_fit(args.ns[upper:], errors[upper:], resamples, args.seed)
        results["classes"][name] = {
            "dim": class_dimension(features, X, A),
            "exact_floor": exact["floor"],
            "mean_error": errors.mean(axis=1).tolist(),
            "q10": np.quantile(errors, 0.1, axis=1).tolist(),
            "q90": np.quantile(errors, 0.9, axis=1).tolist(),
            **decomposition,
            "floor_covered": bool(decomposition["floor_ci"][0] <= exact["floor"] <= decomposition["floor_ci"][1]),
        }
    smallest = classes[f"linear d={min(args.dims)}"]
    misspecified = approximation_floor(world, smallest)["reward"]
    curve = overoptimization_curve(world, misspecified, list(args.betas))
    logp = torch.stack([sa.rlhf_policy(misspecified, world.reference, b).logp for b in args.betas])
    gold = world.true_reward.clamp_min(-1e300)
    curve["gold_gain"] = ((logp.exp() - world.reference.probs) * gold).sum(-1) @ world.prompt_dist
    results["overoptimization"] = {k: v.tolist() for k, v in curve.items()}
    results["seconds"] = time.time() - start
    write_record(args, NAME, results)
    if args.plot:
        plot(results, args)
    return results


def plot(results: dict, args: Args) -> None:
    """misspecification.png and .svg: error against n per reward class (left), over-optimization (right)."""
    fig, (left, right) = new_figure(1, 2, figsize=(12.5, 4.8))
    ns = np.asarray(results["ns"], dtype=float)
    left.set_xscale("log")  # log-log before anything is drawn
    left.set_yscale("log")
    for index, (name, entry) in enumerate(results["classes"].items()):
        color = f"C{index}"
        # A floor at rounding level (the realizable tabular class) is 0: not drawn on the log scale.
        zero_floor = entry["exact_floor"] < 1e-12
        floor_text = "0 (realizable)" if zero_floor else f"{entry['exact_floor']:.3g}"
        label = f"{name}: exact floor {floor_text}"
        band_line(left, ns, entry["mean_error"], entry["q10"], entry["q90"], "o", edge=True, color=color, label=label)
        fit_ns = np.asarray(results["fit_ns"], dtype=float)
        left.plot(fit_ns, np.maximum(entry["floor"] + entry["c"] / fit_ns, 1e-12), "-", color=color)
        if not zero_floor:
            left.axhline(entry["exact_floor"], color=color, ls=":")
    title = (
        "RKL at β = 0 per reward class: mean (dots), 10–90% band over datasets;\n"
        "lines: least-squares floor + c/n on the upper half of n; dotted: the exact floor"
    )
    ylabel = "forward KL  E_x KL(π* ‖ π_R̂n)  (nats)"
    style_axes(left, xscale=None, yscale=None, xlabel="n (preference pairs)", ylabel=ylabel, title=title, title_size=9)
    curve = results["overoptimization"]
    right.plot(curve["kl_reference"], curve["proxy_gain"], "o-", label="proxy gain E_π R̂∞ − E_π0 R̂∞")
    right.plot(curve["kl_reference"], curve["gold_gain"], "s-", label="gold gain E_π R* − E_π0 R*  (R* = γ ln π*)")
    right.plot(
        curve["kl_reference"], np.asarray(curve["true_win_rate"]) - 0.5, "^-", label="true win rate P(π ≻ π0) − 1/2"
    )
    right.axhline(0, color="0.5", lw=0.8)
    style_axes(
        right,
        xscale=None,
        yscale=None,
        xlabel="KL(π_β ‖ π0)  (nats; β decreases to the right)",
        ylabel="gain over π0 (reward units; win rate: probability)",
        title="over-optimization: RLHF optimum π_β ∝ π0·exp(R̂∞/β) with the smallest class's R̂∞",
        title_size=9,
        grid="major",
    )
    fig.tight_layout()
    save_figure(fig, args, "misspecification.png")


def summary(results: dict) -> str:
    """The floor + c/n table per reward class and its legend, then the over-optimization peak."""
    lines = [
        "error = floor + c/n (95% bootstrap intervals) against the exact floor KL(pi* || pi_R̂∞)",
        f"{'class':>14} | {'exact floor':>11} | {'fitted floor':>12} {'floor 95% CI':>24} | {'c':>8} {'c 95% CI':>20}",
    ]
    for name, e in results["classes"].items():
        lines.append(
            f"{name:>14} | {e['exact_floor']:11.4g} | {e['floor']:12.4g} [{e['floor_ci'][0]:10.4g}, "
            f"{e['floor_ci'][1]:10.4g}] | {e['c']:8.3g} [{e['c_ci'][0]:8.3g}, {e['c_ci'][1]:8.3g}]"
        )
    fit_ns = results["fit_ns"]
    lines.append(
        column_legend(
            {
                "class": "reward class: linear in the first d of one draw of N(0, 1) features (nested), or tabular "
                "(one-hot: realizable, floor 0)",
                "exact floor": "KL(pi* || pi_R̂∞) in nats, R̂∞ the population Bradley-Terry fit in the class (exact)",
                "fitted floor": f"the constant of a least-squares fit floor + c/n to the mean forward KL over "
                f"n = {fit_ns[0]}..{fit_ns[-1]} (nats; may be negative when the floor is 0)",
                "floor 95% CI": "bootstrap interval of the fitted floor over replicate datasets",
                "c": "the 1/n coefficient of the same fit (nats × pairs)",
                "c 95% CI": "bootstrap interval of c",
            }
        )
    )
    curve = results["overoptimization"]
    best = int(np.argmax(curve["gold_gain"]))
    lines.append(
        f"over-optimization: gold gain peaks at KL {curve['kl_reference'][best]:.3g} (beta {curve['beta'][best]:.3g}); "
        f"true win rate at the smallest beta {curve['true_win_rate'][-1]:.3f}; {results['seconds']:.1f} s"
    )
    return "\n".join(lines)
