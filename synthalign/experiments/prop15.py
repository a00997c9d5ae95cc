"""Prop. 15: reverse KL against forward KL for fitted policies, and the factor (4R ∨ 1) e^{8R+1}/R².

Prop. 15 says E_x KL(π̂ ‖ π*) ≤ ((4R ∨ 1) e^{8R+1}/R²) · E_x KL(π* ‖ π̂) for policies of a class
satisfying A2 with constant R.  Here every fitted policy is checked against it:

* tabular fits on `World.random` (mu = pi0): PMLE (eq. 4, beta = 0, no regularization) and RKL
  (π_R̂ with the tabular Bradley–Terry R̂, ridge `ridge_sum` on the summed loss), n = 2^k, R datasets each.
  The class is {π̂, π*}: R is A2's constant of those two policies (`synthalign.bounds`,
  max |ln π(a|x) − E_{a'∼mu} ln π(a'|x)|), per fit;
* the theorems' finite class: PMLE = argmin over a perturbation class Π of π*; R is A2's
  constant of Π, one number for every fit.

Recorded per n: the ratio reverse/forward (median, max), the factor, and the slack
reverse / (factor · forward) (the inequality holds iff it is <= 1).  Also checked: A2 implies
|ln π̂ − ln π*| <= 4R (spec §4, "π̂/π* ∈ (0, e^{4R}]").

A sharper, elementary check of the same fits: with t = π̂/π*, forward = Σ D π* (t − 1 − ln t) and
reverse = Σ D π* (t ln t − t + 1), so reverse/forward lies between the extreme termwise ratios
h(s) = (s e^s − e^s + 1)/(e^s − 1 − s), s = ln t, i.e. in [h(−L), h(L)] with L = max |ln t| (h is
increasing, h(0) = 1).  With L <= 4R this gives reverse <= h(4R) · forward, h(4R) ≈ 4R for large R,
against Prop. 15's e^{8R+1}/R²-type factor.

Expected: the inequality holds with room to spare.  The factor is at least
16 e³ ≈ 321 (its minimum, at R = ¼), while reverse/forward → 1 as π̂ → π* (both are
½ χ² to second order), so the factor is loose by two orders of magnitude or more.
"""

from __future__ import annotations

import dataclasses
import math
import time
from concurrent.futures import Executor

import numpy as np
import torch

import synthalign as sa
from synthalign.bounds import boundedness_constant, centred_reward, prop15_factor
from synthalign.estimators.finite_class import fit_over_class
from synthalign.experiments._common import (
    CommonArgs,
    check_integer,
    check_log2_range,
    check_positive,
    check_radius,
    log2_grid,
    new_figure,
    random_world,
    write_record,
)
from synthalign.experiments._grid import run_grid
from synthalign.experiments._plots import bound_line, finish_figure, style_axes
from synthalign.worlds.classes import PolicyClass, perturbation_class

__all__ = [
    "NAME",
    "ESTIMATORS",
    "COLORS",
    "Args",
    "pair_radius",
    "termwise_ratio",
    "measure",
    "summarize",
    "estimators_at_n",
    "run",
    "plot",
    "summary",
]

NAME = "prop15"
ESTIMATORS = ("tabular pmle", "tabular rkl", "class pmle")
COLORS = {"tabular pmle": "tab:green", "tabular rkl": "tab:blue", "class pmle": "tab:purple"}
_SIZES = {
    # size: (largest log2 n, replicates, |Π|)
    "quick": (12, 50, 256),
    "default": (16, 200, 2048),
    "full": (20, 1000, 16384),
}


@dataclasses.dataclass
class Args(CommonArgs):
    """Options of the Prop. 15 experiment (CommonArgs plus these)."""

    n_prompts: int = 3
    """|X|"""
    n_responses: int = 4
    """|A|"""
    gamma: float = 0.5
    """preference tilt"""
    logit_scale: float = 0.3
    """logit scale of pi* and pi0 (small: R near ¼, where the factor is smallest)"""
    log2_n_min: int = 5
    """smallest n is 2^log2_n_min"""
    log2_n_max: int | None = None
    """largest n is 2^log2_n_max; None: 12 quick, 16 default, 20 full"""
    ridge_sum: float = 1e-2
    """ridge of R̂ on the summed log-likelihood (the ridge of sa.fit_reward_model, which acts on the summed loss)"""
    solver_tol: float = 1e-8
    """Newton gradient tolerance"""
    class_size: int | None = None
    """|Π| of the finite class; None: 256 quick, 2048 default, 16384 full"""
    radius: tuple[float, float] = (0.05, 1.0)
    """members' per-prompt logit distance to pi*, drawn uniformly in this range"""
    plot: bool = True
    """write the PNG plot"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_log2_range(self.log2_n_min, self.sized(self.log2_n_max, _SIZES, 0))
        check_integer("class_size", self.policy_class_size, 2)
        self.radius = check_radius(self.radius)
        check_positive(self, "gamma", "logit_scale", "ridge_sum", "solver_tol")

    @property
    def ns(self) -> list[int]:
        return log2_grid(self.log2_n_min, self.sized(self.log2_n_max, _SIZES, 0))

    @property
    def n_replicates(self) -> int:
        return self.sized(self.replicates, _SIZES, 1)

    @property
    def policy_class_size(self) -> int:
        return self.sized(self.class_size, _SIZES, 2)


def pair_radius(world: sa.World, logp: torch.Tensor) -> torch.Tensor:
    """A2's R of the class {π̂_r, π*} for every fit r: max over both of |ln π − E_mu ln π|, [R]."""
    own = centred_reward(logp, world.behavior.logp, 1.0).abs().amax(dim=(-1, -2))
    target = centred_reward(world.target.logp, world.behavior.logp, 1.0).abs().max()
    return torch.maximum(own, target)


def termwise_ratio(s: torch.Tensor) -> torch.Tensor:
    """h(s) = (s e^s − e^s + 1)/(e^s − 1 − s): the ratio of reverse to forward KL terms at ln(π̂/π*) = s.

    Both parts are s²/2 + O(s³) near 0, where the quotient is evaluated by its series
    1 + s/3 + s²/18 (relative error below 1e-9 for |s| < 1e-3); h(0) = 1.
    """
    small = s.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(s), s)
    direct = (safe * torch.exp(safe) - torch.expm1(safe)) / (torch.expm1(safe) - safe)
    series = 1 + s / 3 + s.square() / 18
    return torch.where(small, series, direct)


def measure(world: sa.World, logp: torch.Tensor, radius: torch.Tensor) -> dict:
    """Forward and reverse KL, the factor and the slack of Prop. 15, for fits [R, X, A]."""
    policy = sa.Policy(logp, world.prompt_dist)
    forward = sa.forward_kl(world.target, policy)
    reverse = sa.reverse_kl(world.target, policy)
    # prop15_factor is a scalar function; R takes few distinct values and this is not a hot path.
    factor = torch.tensor([prop15_factor(float(r)) for r in radius.tolist()], dtype=torch.float64, device=radius.device)
    bound = torch.where(forward > 0, factor * forward, torch.zeros_like(forward))  # inf · 0 = 0: π̂ = π*
    slack = torch.where(reverse > 0, reverse / bound, torch.zeros_like(reverse))
    ratio = torch.where(forward > 0, reverse / forward, torch.full_like(forward, math.nan))
    # A2 ⇒ |ln π̂ − ln π*| ≤ 4R wherever both are positive (spec §4).
    support = torch.isfinite(world.target.logp) & torch.isfinite(logp)
    gap = torch.where(support, (logp - world.target.logp).abs(), torch.zeros_like(logp)).amax(dim=(-1, -2))
    # reverse/forward within [h(−L), h(L)], L = max |ln π̂/π*| (module docstring).
    low, high = termwise_ratio(-gap), termwise_ratio(gap)
    within = torch.where(forward > 0, (ratio >= low * (1 - 1e-9)) & (ratio <= high * (1 + 1e-9)), True)
    return {
        "forward": forward,
        "reverse": reverse,
        "R": radius,
        "factor": factor,
        "slack": slack,
        "ratio": ratio,
        "log_ratio_over_4R": gap / (4 * radius),
        "within_termwise": within,
        "termwise_factor": termwise_ratio(4 * radius),
        # the termwise bound's own tightness: reverse / (h(L) · forward)
        "termwise_slack": torch.where(forward > 0, ratio / high, torch.zeros_like(forward)),
    }


def summarize(measured: dict) -> dict:
    """The record of one estimator at one n from `measure`'s tensors: means, ratios, factors, slacks, the checks."""
    ratio = measured["ratio"]
    finite = ratio[~torch.isnan(ratio)]
    slack = measured["slack"]
    return {
        "forward_mean": float(measured["forward"].mean()),
        "forward_se": float(measured["forward"].std() / math.sqrt(measured["forward"].numel())),
        "reverse_mean": float(measured["reverse"].mean()),
        "ratio_median": float(finite.median()) if finite.numel() else math.nan,
        "ratio_mean": float(finite.mean()) if finite.numel() else math.nan,
        "ratio_se": float(finite.std() / math.sqrt(finite.numel())) if finite.numel() > 1 else math.nan,
        "ratio_max": float(finite.max()) if finite.numel() else math.nan,
        "fits_with_error": int(finite.numel()),
        "R_min": float(measured["R"].min()),
        "R_max": float(measured["R"].max()),
        "factor_min": float(measured["factor"].min()),
        "slack_max": float(slack.max()),
        # Prop. 15's tightness at this n: reverse / (factor · forward), the median over the fits with an error
        "slack_median": float(slack[~torch.isnan(ratio)].median()) if finite.numel() else 0.0,
        "termwise_slack_max": float(measured["termwise_slack"].max()),
        "holds": bool((measured["slack"] <= 1).all()),
        "log_ratio_over_4R_max": float(measured["log_ratio_over_4R"].max()),
        "within_termwise": bool(measured["within_termwise"].all()),
        "termwise_factor_min": float(measured["termwise_factor"].min()),
        "forward": measured["forward"].tolist(),
        "reverse": measured["reverse"].tolist(),
    }


def estimators_at_n(world: sa.World, policy_class: PolicyClass, class_radius: float, n: int, args: Args) -> dict:
    """One work item: every estimator fitted on the replicate datasets of size n, summarized by name."""
    replicates = args.n_replicates
    data = world.sample_preferences(n, replicates, seed=np.random.SeedSequence([args.seed, n]))
    pmle = sa.fit("pmle", data, tol=args.solver_tol).policy.logp
    reward = sa.fit_reward_model(data, ridge=args.ridge_sum, tol=args.solver_tol).reward
    rkl = sa.fit("rkl", data, reward=reward).policy.logp
    chosen = fit_over_class("pmle", data, policy_class).policy.logp
    fits = {
        "tabular pmle": (pmle, pair_radius(world, pmle)),
        "tabular rkl": (rkl, pair_radius(world, rkl)),
        "class pmle": (chosen, torch.full((replicates,), class_radius, dtype=torch.float64, device=chosen.device)),
    }
    return {name: {"n": n, **summarize(measure(world, logp, radius))} for name, (logp, radius) in fits.items()}


def run(args: Args, *, executor: Executor | None = None) -> dict:
    """Every estimator and n; writes prop15.json and prop15.png.

    Each n (all estimators on its datasets) is one work item of the sweep store
    (`synthalign.experiments._grid`): finished items are kept in `<out>/store/` and reused by a
    rerun; `executor` runs them in parallel.
    """
    start = time.perf_counter()
    world = random_world(args)
    policy_class = perturbation_class(world, args.policy_class_size, args.radius, seed=args.seed + 2)
    class_radius = boundedness_constant(policy_class.logp, world.behavior.logp)
    ns, replicates = args.ns, args.n_replicates
    results = {
        "ns": ns,
        "replicates": replicates,
        "class_size": policy_class.size,
        "class_R": class_radius,
        "class_factor": prop15_factor(class_radius),
        "factor_minimum": prop15_factor(0.25),
        "estimators": {name: [] for name in ESTIMATORS},
    }
    items = [(world, policy_class, class_radius, n, args) for n in ns]
    labels = [{"n": n} for n in ns]
    for rows in run_grid(args, NAME, estimators_at_n, items, labels, executor=executor):
        for name, row in rows.items():
            results["estimators"][name].append(row)
    results["holds_everywhere"] = all(row["holds"] for rows in results["estimators"].values() for row in rows)
    results["within_termwise_everywhere"] = all(
        row["within_termwise"] for rows in results["estimators"].values() for row in rows
    )
    results["worst_slack"] = max(row["slack_max"] for rows in results["estimators"].values() for row in rows)
    results["seconds"] = time.perf_counter() - start
    if args.plot:
        plot(results, args)
    write_record(args, NAME, results)
    return results


def plot(results: dict, args: Args) -> None:
    """prop15.png: reverse against forward KL of every fit; their ratio and the factor; measured/bound against n."""
    fig, (left, right, tight) = new_figure(1, 3, figsize=(16, 4.5))
    ns = np.asarray(results["ns"], dtype=float)
    lows = []
    for name in ESTIMATORS:
        rows = results["estimators"][name]
        forward = np.concatenate([row["forward"] for row in rows])
        reverse = np.concatenate([row["reverse"] for row in rows])
        keep = (forward > 0) & (reverse > 0)
        left.scatter(forward[keep], reverse[keep], s=3, alpha=0.3, color=COLORS[name], label=name)
        lows.append(forward[keep].min() if keep.any() else 1.0)
        right.errorbar(
            ns,
            [row["ratio_mean"] for row in rows],
            yerr=[row["ratio_se"] for row in rows],
            marker="o",
            ms=3,
            capsize=2,
            color=COLORS[name],
            label=f"{name}: mean reverse/forward ± s.e.",
        )
        right.plot(
            ns, [row["factor_min"] for row in rows], "--", lw=1, color=COLORS[name], label=f"{name}: smallest factor"
        )
        for key, style, what in (("slack_max", "o-", "max"), ("slack_median", "s:", "median")):
            values = np.asarray([row[key] for row in rows], dtype=float)
            tight.plot(
                ns, np.where(values > 0, values, np.nan), style, ms=3, color=COLORS[name], label=f"{name}: {what}"
            )
    grid = np.geomspace(min(lows), left.get_xlim()[1], 50)
    left.plot(grid, grid, "k:", lw=1, label="reverse = forward")
    left.plot(grid, results["factor_minimum"] * grid, "r--", lw=1, label="factor's minimum 16e³ × forward")
    style_axes(
        left,
        xscale="log",
        xlabel="forward E_x KL(pi* ‖ pi_hat) (nats)",
        ylabel="reverse E_x KL(pi_hat ‖ pi*) (nats)",
        title="every fit: reverse against forward KL",
    )
    style_axes(right, ylabel="reverse / forward KL (dimensionless)", title="the ratio against Prop. 15's factor")
    bound_line(tight)
    ylabel, title = "reverse / (factor · forward)", "tightness of Prop. 15 (held: below 1)"
    style_axes(tight, ylabel=ylabel, title=title, legend_size=6)
    title = (
        f"Prop. 15 on {results['replicates']} datasets per n; finite class |Π| = {results['class_size']}, "
        f"R = {results['class_R']:.2f}"
    )
    finish_figure(fig, args, "prop15.png", title=title, wspace=0.3, top=0.85)


def summary(results: dict) -> str:
    """Per estimator and n: ratios, factor and slack."""
    lines = [
        f"Prop. 15: reverse KL <= factor(R) · forward KL; factor >= 16e³ = {results['factor_minimum']:.1f}",
        f"{'estimator':>13} {'n':>7} | {'fwd mean':>9} {'rev/fwd med':>11} {'max':>8} | {'R range':^15} "
        f"{'min factor':>10} {'h(4R)':>7} | {'max slack':>9} {'med slack':>9} {'|log ratio|/4R':>14}",
    ]
    for name in ESTIMATORS:
        for row in results["estimators"][name]:
            lines.append(
                f"{name:>13} {row['n']:>7} | {row['forward_mean']:9.3g} {row['ratio_median']:11.3f} "
                f"{row['ratio_max']:8.3f} | [{row['R_min']:5.2f}, {row['R_max']:6.2f}] {row['factor_min']:10.3g} "
                f"{row['termwise_factor_min']:7.3g} | "
                f"{row['slack_max']:9.2e} {row['slack_median']:9.2e} {row['log_ratio_over_4R_max']:14.3f}"
            )
    lines += [
        "  estimator: the fitted policies",
        "  n: preference pairs per dataset",
        "  fwd mean: mean forward E_x KL(pi* ‖ pi_hat) (nats)",
        "  rev/fwd med: median reverse/forward KL over the fits with an error",
        "  max: the largest reverse/forward KL",
        "  R range: A2's constant over the fits",
        "  min factor: Prop. 15's smallest factor (4R ∨ 1)e^{8R+1}/R²",
        "  h(4R): the termwise factor at L = 4R",
        "  max slack: the largest reverse / (factor · forward), the bound's tightness (held: <= 1)",
        "  med slack: its median over the fits with an error",
        "  |log ratio|/4R: the largest |ln pi_hat − ln pi*| over 4R (A2 implies <= 1)",
    ]
    lines.append(
        f"holds for every fit: {results['holds_everywhere']}; worst slack {results['worst_slack']:.3g}; "
        f"reverse/forward within [h(-L), h(L)] for every fit: {results['within_termwise_everywhere']}; "
        f"{results['seconds']:.1f} s"
    )
    return "\n".join(lines)
