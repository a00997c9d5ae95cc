"""General preferences: the exact duality gap of Nash-style methods and of DPO/RKL on random and cyclic P.

Worlds: X prompts, A responses, a random pi0 (logits N(0, 1)), D uniform, and two preference
families (`synthalign.worlds.laws.GeneralLaw`): "random" (σ of a Gaussian skew-symmetric matrix,
scale `random_scale`) and "cyclic" (a planted Condorcet cycle over all responses, `cycle_strength`,
on transitive scores of scale `transitive_scale`).  The game is the β-regularized preference game
(`synthalign.theory.games`); its unique equilibrium π_β is computed exactly by Newton's method.

Measured (`synthalign.estimators.nash`):

* against iterations: the exact duality gap of Nash-MD, online IPO and extragradient (β-regularized
  game, last iterate) and of SPPO (the β = 0 game, average iterate, its own target) over
  `iterations` steps of exact win rates;
* against n: the same after `iterations` steps when every win-rate vector is estimated from n
  labelled pairs (median and 10–90% band over replicates);
* DPO and RKL on the same law with pairs from mu = pi0: their population minimizers (the BT
  projection of P, `tests/test_nash.py`) and fits from n offline pairs, whose β-regularized gap
  stays away from 0 — they target the BT projection, not the equilibrium.  RKL uses R̂ fitted on
  the same pairs (ridge `ridge`) and β; DPO is unregularized (eq. 6).

Expected: extragradient's gap falls linearly to float64 zero; online IPO converges more slowly at
the step size it tolerates; Nash-MD with a constant step stalls at an O(η) bias; SPPO's average
gap falls like 1/T (its last iterate does not converge on cyclic P); sampled gaps fall with n to
the exact floor; DPO and RKL stay at a constant gap.
"""

from __future__ import annotations

import dataclasses
import math
import time
from concurrent.futures import Executor

import torch

import synthalign as sa
from synthalign.estimators.nash import NASH_METHODS, NashTrace, nash_iterations
from synthalign.estimators.onpolicy import DPO_SAMPLERS, exact_online_dpo
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
from synthalign.theory.games import duality_gap, regularized_nash
from synthalign.worlds.laws import GeneralLaw

__all__ = [
    "NAME",
    "FAMILIES",
    "OFFLINE",
    "COLORS",
    "Args",
    "make_world",
    "family_part",
    "run",
    "LABELS",
    "SAMPLER_ITERATIONS",
    "sampler_comparison",
    "sampler_summary",
    "plot",
    "summary",
]

NAME = "general-preferences"
FAMILIES = ("random", "cyclic")
OFFLINE = ("dpo", "rkl")
COLORS = {
    "nash_md": "tab:orange",
    "online_ipo": "tab:blue",
    "sppo": "tab:purple",
    "extragradient": "tab:green",
    "dpo": "tab:red",
    "rkl": "tab:brown",
}
_SIZES = {
    # size: (iterations, largest log2 n, replicates)
    "quick": (40, 8, 4),
    "default": (400, 16, 16),
    "full": (1000, 20, 64),
}


@dataclasses.dataclass
class Args(CommonArgs):
    """Options of the general-preferences experiment (CommonArgs plus these)."""

    n_prompts: int = 4
    """|X|"""
    n_responses: int = 6
    """|A|"""
    beta: float = 0.1
    """KL weight of the regularized game (and of RKL)"""
    gamma: float = 0.5
    """the world's gamma (the temperature of DPO's margin)"""
    random_scale: float = 2.0
    """scale of the Gaussian skew-symmetric logits of the random family"""
    cycle_strength: float = 2.0
    """logit strength of the planted cycle"""
    transitive_scale: float = 0.5
    """scale of the transitive scores under the cycle"""
    eta: float = 1.0
    """step size of Nash-MD, SPPO and extragradient"""
    eta_ipo: float = 0.05
    """step size of online IPO (gradient descent in the logits, a different scale from the mirror steps)"""
    iterations: int | None = None
    """iterations; None: 40 quick, 400 default, 1000 full"""
    log2_n_min: int = 6
    """smallest n (pairs per win-rate evaluation) is 2^log2_n_min"""
    log2_n_max: int | None = None
    """largest n is 2^log2_n_max; None: 8 quick, 16 default, 20 full"""
    ridge: float = 1e-2
    """ridge of R̂ for RKL fitted from n pairs"""
    plot: bool = True
    """write the PNG plot"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "beta", "gamma", "random_scale", "cycle_strength", "eta", "eta_ipo", "ridge")
        if self.eta * self.beta > 1:
            raise ValueError(f"eta * beta must be at most 1 (Nash-MD's mixture), got {self.eta * self.beta:g}")
        if self.n_prompts < 1 or self.n_responses < 3:
            raise ValueError(f"need n_prompts >= 1 and n_responses >= 3, got {self.n_prompts}, {self.n_responses}")
        check_log2_range(self.log2_n_min, self.sized(self.log2_n_max, _SIZES, 1), equal=True)

    @property
    def n_iterations(self) -> int:
        return self.sized(self.iterations, _SIZES, 0)

    @property
    def ns(self) -> list[int]:
        return log2_grid(self.log2_n_min, self.sized(self.log2_n_max, _SIZES, 1), step=2)

    @property
    def n_replicates(self) -> int:
        return self.sized(self.replicates, _SIZES, 2)


def make_world(args: Args, family: str) -> sa.World:
    """pi0 random, D uniform, the family's law; pi* and mu are pi0 (the law ignores pi*)."""
    generator = torch.Generator().manual_seed(args.seed)
    logits = torch.randn(args.n_prompts, args.n_responses, generator=generator, dtype=torch.float64)
    if family == "random":
        law = GeneralLaw.random(args.n_prompts, args.n_responses, scale=args.random_scale, seed=args.seed + 1)
    else:
        law = GeneralLaw.cyclic(
            args.n_prompts,
            args.n_responses,
            strength=args.cycle_strength,
            transitive_scale=args.transitive_scale,
            seed=args.seed + 1,
        )
    world = sa.World.from_tensors(target=logits, reference=logits, gamma=args.gamma, kind="logits")
    return world.replace(law=law).to(device=args.device)


def _gap(trace: NashTrace) -> torch.Tensor:
    """The gap each method is judged by: SPPO's average in the β = 0 game, the others' last iterate at β."""
    return trace.average_gap_unregularized if trace.method == "sppo" else trace.gap


def _quantiles(values: torch.Tensor) -> dict:
    q = torch.quantile(values, torch.tensor([0.1, 0.5, 0.9], dtype=values.dtype, device=values.device))
    return {"q10": float(q[0]), "median": float(q[1]), "q90": float(q[2])}


def _offline_gaps(world: sa.World, data: sa.PreferenceData, args: Args) -> torch.Tensor:
    """β-regularized gaps of DPO and RKL fitted on `data` (population law or counts), [2, R]."""
    matrix = sa.preference_matrix(world)
    reward = sa.fit_reward_model(data, ridge=0.0 if data.is_population else args.ridge).reward
    fits = {"dpo": sa.fit("dpo", data), "rkl": sa.fit("rkl", data, beta=args.beta, reward=reward)}
    return torch.stack(
        [
            duality_gap(
                fits[name].policy, matrix, beta=args.beta, reference=world.reference, prompt_dist=world.prompt_dist
            )
            for name in OFFLINE
        ]
    )


def family_part(args: Args, family: str, part: str) -> dict:
    """One work item: the equilibrium, one Nash method (exact curve and every n), or the offline fits."""
    world = make_world(args, family)
    matrix = sa.preference_matrix(world)
    if part == "equilibrium":
        nash = regularized_nash(matrix, world.reference, args.beta)
        return {"equilibrium_gap": float(duality_gap(nash, matrix, beta=args.beta, reference=world.reference))}
    T = args.n_iterations
    if part in NASH_METHODS:
        eta = args.eta_ipo if part == "online_ipo" else args.eta
        exact = nash_iterations(part, matrix, world.reference, beta=args.beta, eta=eta, iterations=T)
        rows = []
        for n in args.ns:
            sampled = nash_iterations(
                part,
                matrix,
                world.reference,
                beta=args.beta,
                eta=eta,
                iterations=T,
                n_pairs=n,
                replicates=args.n_replicates,
                seed=args.seed * 1000 + n,
            )
            rows.append({"n": n, **_quantiles(_gap(sampled)[-1])})
        return {"curve": _gap(exact)[:, 0].tolist(), "final": float(_gap(exact)[-1, 0]), "vs_n": rows}
    population = _offline_gaps(world, world.population_preferences(), args)
    entry = {"final": {name: float(population[index, 0]) for index, name in enumerate(OFFLINE)}}
    entry["vs_n"] = {name: [] for name in OFFLINE}
    for n in args.ns:
        data = world.sample_preferences(n, args.n_replicates, seed=args.seed * 1000 + n)
        gaps = _offline_gaps(world, data, args)
        for index, name in enumerate(OFFLINE):
            entry["vs_n"][name].append({"n": n, **_quantiles(gaps[index])})
    return entry


def run(args: Args, *, executor: Executor | None = None) -> dict:
    """Every family's equilibrium, Nash methods and offline fits; writes the JSON and PNG.

    Each (family, part) is one work item of the sweep store (`synthalign.experiments._grid`):
    finished items are kept in `<out>/store/` and reused by a rerun; `executor` runs them in parallel.
    """
    start = time.time()
    T = args.n_iterations
    results = {"families": {}, "ns": args.ns, "iterations": T}
    parts = ("equilibrium", *NASH_METHODS, "offline")
    items = [(args, family, part) for family in FAMILIES for part in parts]
    labels = [{"family": family, "part": part} for _, family, part in items]
    computed = run_grid(args, NAME, family_part, items, labels, executor=executor)
    done = {(family, part): value for (_, family, part), value in zip(items, computed, strict=True)}
    for family in FAMILIES:
        gap = done[family, "equilibrium"]["equilibrium_gap"]
        entry = {"equilibrium_gap": gap, "curves": {}, "vs_n": {}, "final": {}}
        for method in NASH_METHODS:
            part = done[family, method]
            entry["curves"][method] = part["curve"]
            entry["final"][method] = part["final"]
            entry["vs_n"][method] = part["vs_n"]
        offline = done[family, "offline"]
        for name in OFFLINE:
            entry["final"][name] = offline["final"][name]
            entry["vs_n"][name] = offline["vs_n"][name]
        results["families"][family] = entry
    results["samplers"] = sampler_comparison(args)
    results["seconds"] = time.time() - start
    write_record(args, NAME, results)
    if args.plot:
        plot(results, args)
    return results


LABELS = {
    "nash_md": "Nash-MD",
    "online_ipo": "online IPO",
    "sppo": "SPPO (average iterate, β = 0 game)",
    "extragradient": "extragradient",
    "dpo": "DPO (eq. 6), pairs from π0",
    "rkl": "RKL (eq. 15) on R̂, pairs from π0",
}


SAMPLER_ITERATIONS = 30
"""Exact online DPO steps per pair sampler (the mixed ones reach float64 rounding in fewer than 10)."""


def _convergence_orders(error: list[float], low: float = 1e-13, high: float = 0.1) -> list[float]:
    """ln(e_{t+2}/e_{t+1}) / ln(e_{t+1}/e_t) over consecutive errors inside [low, high]: 1 linear, 2 quadratic."""
    orders = []
    for t in range(len(error) - 2):
        e0, e1, e2 = error[t : t + 3]
        if low < e2 and e0 < high and e0 > e1 > e2:
            orders.append(math.log(e2 / e1) / math.log(e1 / e0))
    return orders


def sampler_comparison(args: Args) -> dict:
    """Uniform vs on-policy vs mixed pair samplers for exact online DPO on a Bradley–Terry world.

    World: pi0 as `make_world`'s, pi* with independent N(0, 1) logits, the BT law at the experiment's
    gamma (the samplers' claim, Shi, Zhou, Du 2024, is about BT preferences).  Each sampler runs
    `SAMPLER_ITERATIONS` exact gradient steps (`synthalign.estimators.onpolicy.exact_online_dpo`; the
    mixed samplers as defined there); recorded: the error max |γ ln(π_t/π_lim)| (centred) per step, the
    first iteration below 1e-10, the predicted linear contraction ρ and the measured last ratio in the
    linear regime, and the convergence order estimates.
    """
    generator = torch.Generator().manual_seed(args.seed)
    reference = torch.randn(args.n_prompts, args.n_responses, generator=generator, dtype=torch.float64)
    target = torch.randn(args.n_prompts, args.n_responses, generator=generator, dtype=torch.float64)
    world = sa.World.from_tensors(target=target, reference=reference, gamma=args.gamma, kind="logits")
    rows = {}
    for sampler in DPO_SAMPLERS:
        run = exact_online_dpo(world, sampler, iterations=SAMPLER_ITERATIONS)
        error = run.error.tolist()
        below = [t for t, e in enumerate(error) if e < 1e-10]
        # The linear regime: consecutive errors below 1e-3 and above rounding (linear samplers only).
        ratios = [b / a for a, b in zip(error[:-1], error[1:], strict=True) if 1e-11 < b and a < 1e-3]
        rows[sampler] = {
            "error": error,
            "iterations_to_1e-10": below[0] if below else None,
            "predicted_rate": float(run.rate.max()),
            "measured_rate": ratios[-1] if ratios and run.eta is not None else None,
            "orders": _convergence_orders(error),
        }
    return rows


def sampler_summary(results: dict) -> str:
    """One line per pair sampler: iterations to 1e-10, predicted and measured linear rate, largest order."""
    lines = [f"exact online DPO, {SAMPLER_ITERATIONS} steps: sampler | to 1e-10 | rho predicted | measured | order"]
    for sampler, row in results["samplers"].items():
        measured = "-" if row["measured_rate"] is None else f"{row['measured_rate']:.3g}"
        order = f"{max(row['orders']):.2f}" if row["orders"] else "-"
        lines.append(
            f"{sampler:>11} | {row['iterations_to_1e-10']} | {row['predicted_rate']:.3g} | {measured} | {order}"
        )
    return "\n".join(lines)


def plot(results: dict, args: Args) -> None:
    """general_preferences.png and .svg: exact gap against iterations (left), gap after T iterations against n."""
    fig, axes = new_figure(2, 2, figsize=(11.5, 8.4))
    T = results["iterations"]
    for row, family in enumerate(FAMILIES):
        entry = results["families"][family]
        ax = axes[row, 0]
        for method, curve in entry["curves"].items():
            ax.semilogy([max(g, 1e-17) for g in curve], color=COLORS[method], label=LABELS[method])
        for name in OFFLINE:
            ax.axhline(entry["final"][name], color=COLORS[name], ls="--", label=f"{LABELS[name]}: population minimizer")
        # Both panels set their log scales before drawing (semilogy here, then below), and have no grid.
        panel = {"xscale": None, "yscale": None, "title_size": 9, "grid": None}
        title = f"{family} P: exact duality gap against iterations (exact win rates)"
        style_axes(ax, xlabel="iteration", ylabel="duality gap (0 at the equilibrium; log scale)", title=title, **panel)
        ax = axes[row, 1]
        ax.set_xscale("log")
        ax.set_yscale("log")
        for method, rows in entry["vs_n"].items():
            ns, low, median, high = ([r[key] for r in rows] for key in ("n", "q10", "median", "q90"))
            band_line(ax, ns, median, low, high, edge=True, color=COLORS[method], label=LABELS[method])
        title = f"{family} P: duality gap after {T} iterations, win rates estimated from n pairs"
        xlabel = "n (preference pairs per win-rate estimate; DPO, RKL: pairs in the dataset)"
        style_axes(ax, xlabel=xlabel, ylabel="duality gap: median, 10–90% band", title=title, **panel)
    fig.suptitle(
        f"General preferences (|X| = {args.n_prompts}, |A| = {args.n_responses}, β = {args.beta:g}): gap of the "
        "β-regularized preference game, last iterate; SPPO: average iterate in the β = 0 game",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    save_figure(fig, args, "general_preferences.png")


def summary(results: dict) -> str:
    """The duality-gap table: method × family, exact after T iterations and sampled at the largest n; its legend."""
    largest = results["ns"][-1]
    T = results["iterations"]
    columns = [f"{family} {kind}" for family in FAMILIES for kind in ("exact", f"n={largest}")]
    lines = [
        f"duality gap after {T} iterations (exact | median at n = {largest} per evaluation)",
        f"{'method':>14} | " + " | ".join(f"{column:>12}" for column in columns),
    ]
    for method in (*NASH_METHODS, *OFFLINE):
        cells = []
        for family in FAMILIES:
            entry = results["families"][family]
            cells.append(f"{entry['final'][method]:12.2e}")
            cells.append(f"{entry['vs_n'][method][-1]['median']:12.2e}")
        lines.append(f"{method:>14} | " + " | ".join(cells))
    legend = {
        "method": "Nash-MD, online IPO, extragradient (last iterate, beta-regularized game), SPPO (average iterate, "
        "beta = 0 game), DPO and RKL (fits on pairs from pi0; they target the Bradley-Terry projection of P)",
    }
    for family in FAMILIES:
        law = "random skew-symmetric P" if family == "random" else "P with a planted Condorcet cycle"
        legend[f"{family} exact"] = (
            f"{law}: exact duality gap after {T} iterations with exact win rates (DPO, RKL: their population minimizer)"
        )
        legend[f"{family} n={largest}"] = (
            f"the same, median over the replicate runs, every win rate estimated from n = {largest} labelled "
            f"pairs (DPO, RKL: fitted on n = {largest} pairs)"
        )
    lines.append(column_legend(legend))
    lines.append(f"{results['seconds']:.1f} s")
    return "\n".join(lines)
