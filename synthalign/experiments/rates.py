"""Rates: PMLE, distillation and RKL converge at rate 1/n and respect the explicit bounds (spec §4).

Two parts, each on its own small world (`World.random`, mu = pi0 independent of pi*):

A. Tabular softmax class.  For every n = 2^k and R replicate datasets:
   * PMLE (eq. 4, beta = 0): `synthalign.fit("pmle")`, no regularization, as the paper;
   * RKL (eq. 15, beta = 0): closed form pi_R̂ with R̂ the tabular Bradley–Terry MLE (eq. 9);
   * distillation (eq. 11, pairs from mu = the pairs of D_n without labels, soft labels from
     the same R̂): Newton over the tabular class.
   The log-log slope of the mean forward KL E_x KL(pi* ‖ pi_hat) against n is fitted with a
   bootstrap CI (`synthalign.sweeps.check_rate`): every theorem predicts -1.
   Decisions: the sweep starts at n = 2^log2_n_min, where the comparison graph of every prompt
   is strongly connected in (almost) every dataset (the fraction that is not is recorded), so
   the unregularized maximum likelihood exists and neither PMLE nor R̂ needs a ridge; a ridge
   `ridge_sum` on R̂'s summed loss is available (default 0).  Even a small fixed ridge is
   not harmless here: a response that mu rarely draws has little Fisher information, and a
   ridge of 2e-5 moves the forward KL by several percent at n = 512.
   In the tabular class the three estimators have the same minimizer: PMLE's objective is
   eq. 9 on pi_R, RKL at beta = 0 returns pi_R̂, and distillation's loss is 0 at pi_R̂.  Their
   curves coincide up to the solver's tolerance; the record says so rather than hiding it.  The
   exact asymptote c/n of pi_R̂ (Fisher information, from the fig1 experiment) is drawn with them.

B. Finite classes (the theorems' own setting, A1, A5).  ℛ: π* and `reward_class_size` − 1
   perturbations of its logits (𝒫_γ(ℛ) given as the induced policies); Π = 𝒫_γ(ℛ) ∪ more
   perturbations, `class_size` members in all.  PMLE = argmin over Π; distillation and RKL fit
   R̂ = argmin over ℛ of eq. 9, then take the argmin over Π (`synthalign.classes.fit_over_class`).
   At every n the measured (1 − δ)-quantile of the forward KL is compared with the corrected
   bounds of Thms 4, 6, 7 (`synthalign.bounds`, Lemma 8's ¼; the printed ones are recorded
   too), and PMLE's preference-scale error with Prop. 12.  The worst measured/bound ratio is
   reported: the bounds hold but are loose by orders of magnitude — mostly the e^{4R}-type
   factors and C_Π/γ², the price of the worst case over all worlds.  A finite class's error
   reaches exactly 0 once the argmin finds π*, so no slope is fitted there; the fraction of
   datasets with pi_hat = π* is recorded.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

import numpy as np
import torch

import synthalign as sa
from synthalign.experiments._common import (
    CommonArgs,
    check_delta,
    check_integer,
    check_log2_range,
    check_positive,
    check_radius,
    class_constants,
    log2_grid,
    new_figure,
    over_bound,
    random_world,
    slope_cells,
    verdict_word,
    write_record,
)
from synthalign.experiments._grid import run_grid
from synthalign.experiments._plots import band_line, bound_line, finish_figure, slope_text, style_axes
from synthalign.stats import check_bound, check_rate, fit_slope
from synthalign.sweeps import SweepResult, rate_sweep
from synthalign.theory.references import rkl_asymptotic_constant
from synthalign.worlds.classes import PolicyClass, perturbation_class, union_class

__all__ = [
    "NAME",
    "METHODS",
    "THEOREMS",
    "LABELS",
    "COLORS",
    "Args",
    "tabular_estimators",
    "tabular_world",
    "stacked_sweep",
    "tabular_item",
    "run_tabular",
    "make_classes",
    "finite_item",
    "run_finite",
    "run",
    "plot",
    "summary",
]

NAME = "rates"
METHODS = ("pmle", "distillation", "rkl")
THEOREMS = {"pmle": "thm4", "distillation": "thm6", "rkl": "thm7"}
LABELS = {"pmle": "PMLE (eq. 4)", "distillation": "distillation (eq. 11)", "rkl": "RKL (eq. 15)"}
COLORS = {"pmle": "tab:green", "distillation": "tab:orange", "rkl": "tab:blue"}
_SIZES = {
    # size: (largest log2 n of part A, replicates, |Π| of part B, largest log2 n of part B)
    "quick": (13, 64, 256, 12),
    "default": (16, 200, 2048, 14),
    "full": (20, 1000, 16384, 16),
}


@dataclasses.dataclass
class Args(CommonArgs):
    """Options of the rates experiment (CommonArgs plus these)."""

    n_prompts: int = 3
    """|X| of both worlds"""
    n_responses: int = 4
    """|A| of both worlds"""
    gamma: float = 0.5
    """preference tilt of the tabular world (part A)"""
    logit_scale: float = 1.0
    """logit scale of pi* and pi0 in the tabular world (part A)"""
    log2_n_min: int = 9
    """part A fits the slope from n = 2^log2_n_min (where PMLE's data are non-separable w.h.p.)"""
    log2_n_max: int | None = None
    """part A's largest n is 2^log2_n_max; None: 13 quick, 16 default, 20 full"""
    ridge_sum: float = 0.0
    """ridge of R̂ (that of sa.fit_reward_model, on the summed log-likelihood); 0: none"""
    solver_tol: float = 1e-8
    """Newton gradient tolerance; a gradient g moves the KL by O(g²), far below 1/n here"""
    class_gamma: float = 0.5
    """preference tilt of the finite-class world (part B)"""
    class_logit_scale: float = 0.1
    """logit scale of pi* and pi0 in part B (small: it sets A2's R and so the bounds' e^{4R})"""
    class_size: int | None = None
    """|Π| of part B; None: 256 quick, 2048 default, 16384 full"""
    reward_class_size: int = 16
    """|ℛ| of part B (𝒫_γ(ℛ) ⊆ Π, A5)"""
    radius: tuple[float, float] = (0.02, 0.3)
    """members' per-prompt logit distance to π* is drawn uniformly in this range"""
    class_log2_n_min: int = 5
    """part B's smallest n is 2^class_log2_n_min"""
    class_log2_n_max: int | None = None
    """part B's largest n; None: 12 quick, 14 default, 16 full"""
    delta: float = 0.1
    """the bounds hold with probability >= 1 - delta: compare with the (1 - delta)-quantile"""
    expected_slope: float = -1.0
    """the rate every theorem predicts"""
    n_boot: int = 2000
    """bootstrap resamples of the slope's CI"""
    plot: bool = True
    """write the PNG plots"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_log2_range(self.log2_n_min, self.sized(self.log2_n_max, _SIZES, 0))
        names = ("class_log2_n_min", "class_log2_n_max")
        check_log2_range(self.class_log2_n_min, self.sized(self.class_log2_n_max, _SIZES, 3), names=names)
        check_integer("class_size", self.policy_class_size, 2)
        check_integer("reward_class_size", self.reward_class_size, 2)
        if self.reward_class_size > self.policy_class_size:
            raise ValueError(f"reward_class_size {self.reward_class_size} exceeds class_size {self.policy_class_size}")
        check_delta(self.delta)
        self.radius = check_radius(self.radius)
        if not (math.isfinite(self.ridge_sum) and self.ridge_sum >= 0):
            raise ValueError(f"ridge_sum must be a non-negative number, got {self.ridge_sum!r}")
        check_positive(self, "gamma", "logit_scale", "class_gamma", "class_logit_scale", "solver_tol")

    @property
    def ns(self) -> list[int]:
        return log2_grid(self.log2_n_min, self.sized(self.log2_n_max, _SIZES, 0))

    @property
    def class_ns(self) -> list[int]:
        return log2_grid(self.class_log2_n_min, self.sized(self.class_log2_n_max, _SIZES, 3))

    @property
    def n_replicates(self) -> int:
        return self.sized(self.replicates, _SIZES, 1)

    @property
    def policy_class_size(self) -> int:
        return self.sized(self.class_size, _SIZES, 2)


# ----------------------------------------------------------------------------- part A: tabular class


def tabular_estimators(args: Args) -> dict[str, Callable[[sa.PreferenceData], sa.Policy]]:
    """The three tabular estimators as callables data -> Policy (beta = 0)."""

    def reward(data: sa.PreferenceData) -> torch.Tensor:
        return sa.fit_reward_model(data, ridge=args.ridge_sum, tol=args.solver_tol).reward

    def pmle(data: sa.PreferenceData) -> sa.Policy:
        return sa.fit("pmle", data, tol=args.solver_tol).policy

    def distillation(data: sa.PreferenceData) -> sa.Policy:
        # Pairs from mu: the pairs of D_n with their labels dropped; soft labels σ(R̂(a) − R̂(b)).
        return sa.fit("distillation", data, reward=reward(data), tol=args.solver_tol).policy

    def rkl(data: sa.PreferenceData) -> sa.Policy:
        return sa.fit("rkl", data, reward=reward(data)).policy  # closed form pi_R̂ at beta = 0

    return {"pmle": pmle, "distillation": distillation, "rkl": rkl}


def tabular_world(args: Args) -> sa.World:
    """The world of part A."""
    return random_world(args)


def stacked_sweep(ns: Sequence[int], rows: list[dict], estimator: str, seed: int) -> SweepResult:
    """The `rate_sweep` result of one method from its work items (one per n, each `rate_sweep` at that n alone)."""
    columns = {key: torch.stack([torch.tensor(row[key], dtype=torch.float64) for row in rows]) for key in rows[0]}
    values = columns.pop("forward_kl")
    return SweepResult(
        ns=tuple(ns),
        values=values,
        metric="forward_kl",
        estimator=estimator,
        seed=seed,
        mean=values.mean(dim=1),
        median=torch.from_numpy(np.quantile(values.numpy(), 0.5, axis=-1)),
        quantiles={},
        extra=columns,
    )


def _sweep_row(sweep: SweepResult) -> dict:
    """The one n of a `rate_sweep` result, every metric, JSON-ready."""
    return {"forward_kl": sweep.values[0].tolist(), **{key: value[0].tolist() for key, value in sweep.extra.items()}}


def tabular_item(args: Args, method: str, n: int) -> dict:
    """One work item of part A: the method's forward KL on the replicate datasets of size n.

    `rate_sweep` draws the datasets of size n from SeedSequence([seed, n]) whatever the other ns,
    so a sweep over one n is that n's row of the sweep over all.
    """
    world = tabular_world(args)
    estimator = tabular_estimators(args)[method]
    return _sweep_row(rate_sweep(world, estimator, [n], replicates=args.n_replicates, seed=args.seed))


def run_tabular(args: Args, executor: Executor | None = None) -> dict:
    """Part A: mean forward KL against n and its fitted slope, per method (one work item per method and n)."""
    world = tabular_world(args)
    ns, replicates = args.ns, args.n_replicates
    # rate_sweep draws the datasets of size n from SeedSequence([seed, n]): every method sees the same data.
    separable = []
    for n in ns:
        data = world.sample_preferences(n, replicates, seed=np.random.SeedSequence([args.seed, n]))
        separable.append(float(sa.comparison_graph_separable(data.counts).any(dim=-1).double().mean()))
    result = {
        "ns": ns,
        "world": _describe(world),
        "separable_fraction": separable,
        "asymptotic_constant": rkl_asymptotic_constant(world),
        "methods": {},
    }
    items = [(args, method, n) for method in METHODS for n in ns]
    labels = [{"method": method, "n": n} for method in METHODS for n in ns]
    rows = iter(run_grid(args, NAME, tabular_item, items, labels, stage="tabular", executor=executor))
    for method in METHODS:
        sweep = stacked_sweep(ns, [next(rows) for _ in ns], method, args.seed)
        slope = fit_slope(ns, sweep.values, n_boot=args.n_boot, seed=args.seed)
        verdict = check_rate(ns, sweep.values, args.expected_slope, n_boot=args.n_boot, seed=args.seed)
        result["methods"][method] = {
            "mean": sweep.mean.tolist(),
            "mean_se": (sweep.values.std(dim=1) / math.sqrt(replicates)).tolist(),
            "median": sweep.median.tolist(),
            "q10": sweep.quantile(0.1).tolist(),
            "q90": sweep.quantile(0.9).tolist(),
            "values": sweep.values.tolist(),
            "slope": dataclasses.asdict(slope),
            "verdict": verdict.to_dict(),
        }
    return result


# ----------------------------------------------------------------------------- part B: finite classes


def make_classes(args: Args, world: sa.World) -> tuple[PolicyClass, PolicyClass]:
    """(𝒫_γ(ℛ), Π): ℛ's induced policies first, so Π ⊇ 𝒫_γ(ℛ) (A5) and π* sits at index 0 of both."""
    reward_members = perturbation_class(world, args.reward_class_size, args.radius, seed=args.seed + 1)
    extra_size = args.policy_class_size - args.reward_class_size + 1  # its copy of π* is dropped by the union
    extra = perturbation_class(world, extra_size, args.radius, seed=args.seed + 2)
    return reward_members, union_class(reward_members, extra)


def finite_item(
    world: sa.World, reward_members: PolicyClass, policy_class: PolicyClass, method: str, n: int, args: Args
) -> dict:
    """One work item of part B: the method's argmin over Π on the replicate datasets of size n, both metrics."""
    extra = {"preference_squared_error": lambda target, policy: sa.preference_squared_error(world, policy)}
    sweep = rate_sweep(
        world,
        method,
        [n],
        replicates=args.n_replicates,
        seed=args.seed,
        candidates=policy_class,
        reward_class=None if method == "pmle" else reward_members,
        extra_metrics=extra,
    )
    return _sweep_row(sweep)


def run_finite(args: Args, executor: Executor | None = None) -> dict:
    """Part B: (1 − δ)-quantiles of the forward KL against the corrected bounds of Thms 4, 6, 7 and Prop. 12.

    One work item per method and n.
    """
    world = random_world(args, gamma=args.class_gamma, logit_scale=args.class_logit_scale)
    reward_members, policy_class = make_classes(args, world)
    constants = class_constants(world, policy_class.logp, reward_members.logp, compute_c0=False)
    ns, delta = args.class_ns, args.delta
    n_tensor = torch.tensor(ns, dtype=torch.float64)
    result = {
        "ns": ns,
        "world": _describe(world),
        "delta": delta,
        "constants": dataclasses.asdict(constants),
        "policy_class": policy_class.name,
        "methods": {},
    }
    items = [(world, reward_members, policy_class, method, n, args) for method in METHODS for n in ns]
    labels = [{"method": method, "n": n} for method in METHODS for n in ns]
    rows = iter(run_grid(args, NAME, finite_item, items, labels, stage="finite", executor=executor))
    for method in METHODS:
        sweep = stacked_sweep(ns, [next(rows) for _ in ns], method, args.seed)
        theorem = THEOREMS[method]
        corrected = constants.bound(theorem, n_tensor, delta, corrected=True)
        printed = constants.bound(theorem, n_tensor, delta, corrected=False)
        verdict = check_bound(ns, sweep.values, corrected, delta=delta, label=f"corrected {theorem} bound")
        # The order statistic check_bound compares, and its ratio to the bound at every n (with its
        # 95% CI): how tight the bound is, not only whether it held.
        measured = over_bound(sweep.values, corrected, 1 - delta)
        entry = {
            "theorem": theorem,
            "quantile": sweep.quantile(1 - delta).tolist(),
            "measured_quantile": measured["quantile"],
            "measured_over_bound": measured["ratio"],
            "measured_over_bound_ci": measured["ratio_ci"],
            "mean": sweep.mean.tolist(),
            "bound_corrected": corrected.tolist(),
            "bound_printed": printed.tolist(),
            "verdict": verdict.to_dict(),
            "fraction_exact": (sweep.values == 0).double().mean(dim=1).tolist(),
            "values": sweep.values.tolist(),
        }
        if method == "pmle":
            preference = sweep.extra["preference_squared_error"]
            prop12 = [sa.bounds.prop12_bound(n, constants.class_size, delta) for n in ns]
            entry["preference_quantile"] = np.quantile(preference.numpy(), 1 - delta, axis=1).tolist()
            entry["prop12_bound"] = prop12
            measured = over_bound(preference, prop12, 1 - delta)
            entry["prop12_measured_over_bound"] = measured["ratio"]
            entry["prop12_measured_over_bound_ci"] = measured["ratio_ci"]
            entry["prop12_verdict"] = check_bound(ns, preference, prop12, delta=delta, label="Prop. 12 bound").to_dict()
        result["methods"][method] = entry
    return result


def _describe(world: sa.World) -> dict:
    return {
        "n_prompts": world.n_prompts,
        "n_responses": world.n_responses,
        "gamma": world.gamma,
        "kl_target_behavior": float(sa.forward_kl(world.target, world.behavior)),
    }


# ----------------------------------------------------------------------------- experiment


def run(args: Args, *, executor: Executor | None = None) -> dict:
    """Runs both parts, writes rates.json and rates.png, returns the results.

    Each (part, method, n) is one work item of the sweep store (`synthalign.experiments._grid`, one
    stage per part): finished items are kept in `<out>/store/` and reused by a rerun; `executor`
    runs them in parallel.
    """
    start = time.perf_counter()
    results = {"replicates": args.n_replicates, "tabular": run_tabular(args, executor)}
    results["tabular_seconds"] = time.perf_counter() - start
    results["finite"] = run_finite(args, executor)
    results["seconds"] = time.perf_counter() - start
    results["all_bounds_hold"] = all(m["verdict"]["passed"] for m in results["finite"]["methods"].values())
    results["worst_bound_ratio"] = max(m["verdict"]["worst_ratio"] for m in results["finite"]["methods"].values())
    if args.plot:
        plot(results, args)
    write_record(args, NAME, results)
    return results


def plot(results: dict, args: Args) -> None:
    """rates.png: (A) mean forward KL against n; (B) quantiles against the bounds; (C) measured/bound against n."""
    fig, (left, right, tight) = new_figure(1, 3, figsize=(16, 4.4))
    tab = results["tabular"]
    ns = np.asarray(tab["ns"], dtype=float)
    for method in METHODS:
        res = tab["methods"][method]
        label = f"{LABELS[method]}: {slope_text(res['slope'])}"
        band_line(left, ns, res["mean"], res["q10"], res["q90"], alpha=0.12, ms=3, color=COLORS[method], label=label)
    left.plot(ns, tab["asymptotic_constant"] / ns, "k:", lw=1, label="c/n (Fisher asymptote of pi_R̂)")
    title = f"A. tabular class: mean and 10–90% band, {results['replicates']} datasets"
    style_axes(left, ylabel="E_x KL(pi* ‖ pi_hat) (nats)", title=title, title_size=9)

    fin = results["finite"]
    ns = np.asarray(fin["ns"], dtype=float)
    q = 1 - fin["delta"]
    for method in METHODS:
        res = fin["methods"][method]
        shown = np.where(np.asarray(res["measured_quantile"]) > 0, res["measured_quantile"], np.nan)
        right.plot(ns, shown, "o-", ms=3, color=COLORS[method], label=f"{LABELS[method]}: {q:g}-quantile")
        right.plot(ns, res["bound_corrected"], "--", color=COLORS[method], lw=1, label=f"{res['theorem']} (corrected)")
        ratio = np.where(np.asarray(res["measured_over_bound"]) > 0, res["measured_over_bound"], np.nan)
        low, high = (np.where(np.asarray(side) > 0, side, np.nan) for side in res["measured_over_bound_ci"])
        label = f"{LABELS[method]} / {res['theorem']}"
        band_line(tight, ns, ratio, low, high, ms=3, color=COLORS[method], label=label)
    prop12 = np.asarray(fin["methods"]["pmle"]["prop12_measured_over_bound"])
    tight.plot(
        ns, np.where(prop12 > 0, prop12, np.nan), "s--", ms=3, color="k", label="PMLE preference error / Prop. 12"
    )
    bound_line(tight, ls=":")
    k = fin["constants"]
    title = (
        f"B. |Π|={k['class_size']}, |ℛ|={k['reward_class_size']}, R={k['R']:.2f}, C_Π={k['C_Pi']:.2f} "
        "(zero quantiles not drawn)"
    )
    style_axes(right, ylabel="E_x KL(pi* ‖ pi_hat) (nats)", title=title, title_size=9)
    title = "B. tightness of each bound, 95% CI shaded (held: below 1)"
    style_axes(tight, ylabel=f"measured {q:g}-quantile / corrected bound", title=title, title_size=9)
    finish_figure(fig, args, "rates.png", wspace=0.3)


def summary(results: dict) -> str:
    """Slopes with CIs (part A) and the bound checks (part B)."""
    tab, fin = results["tabular"], results["finite"]
    lines = [
        f"A. tabular class, n = {tab['ns'][0]}..{tab['ns'][-1]}, {results['replicates']} datasets per n "
        f"(separable fraction at the smallest n: {tab['separable_fraction'][0]:.3f})",
        f"{'method':>13} | {'slope':>7} | {'95% CI':^18} | {'mean*n at largest n':^19} | verdict",
    ]
    for method in METHODS:
        res = tab["methods"][method]
        scaled = res["mean"][-1] * tab["ns"][-1]
        scaled_se = res["mean_se"][-1] * tab["ns"][-1]
        ok = verdict_word(res["verdict"])
        lines.append(f"{method:>13} | {slope_cells(res['slope'])} | {scaled:9.2f} ± {scaled_se:6.2f} | {ok}")
    lines += [
        "  method: the estimator",
        "  slope: least-squares log-log slope of the mean E_x KL(pi* ‖ pi_hat) against n",
        "  95% CI: percentile bootstrap over the datasets of each n",
        "  mean*n: n times the mean error at the largest n ± its standard error (nats)",
        "  verdict: check_rate (the expected slope inside the CI, the CI narrower than 0.5)",
        f"   Fisher asymptote of pi_R̂: mean*n -> {tab['asymptotic_constant']:.2f}",
    ]
    k = fin["constants"]
    lines += [
        f"B. finite classes: |Π| = {k['class_size']}, |ℛ| = {k['reward_class_size']}, R = {k['R']:.3f}, "
        f"C_Π = {k['C_Pi']:.3f}, C_ℛ = {k['C_R']:.3f}, gamma = {k['gamma']}, delta = {fin['delta']}",
        f"{'method':>13} | {'bound':>5} | {'worst q/bound':>13} | {'at n':>6} | {'bound at n_max':>14} | "
        f"{'P(pi_hat=pi*) at n_max':>22} | verdict",
    ]
    for method in METHODS:
        res = fin["methods"][method]
        v = res["verdict"]
        lines.append(
            f"{method:>13} | {res['theorem']:>5} | {v['worst_ratio']:13.3g} | {v['worst_n']:>6} | "
            f"{res['bound_corrected'][-1]:14.4g} | {res['fraction_exact'][-1]:22.3f} | {verdict_word(v)}"
        )
    v = fin["methods"]["pmle"]["prop12_verdict"]
    lines.append(
        f"{'pmle':>13} | prop12 | {v['worst_ratio']:12.3g} | {v['worst_n']:>6} | (preference scale) | {verdict_word(v)}"
    )
    lines += [
        "  method: the estimator",
        "  bound: the theorem whose corrected bound is checked",
        "  worst q/bound: the largest over n of the measured (1-δ)-quantile (an order statistic) / the bound",
        "  at n: the n where that ratio occurs",
        "  bound at n_max: the corrected bound at the largest n (nats)",
        "  P(pi_hat=pi*) at n_max: fraction of datasets whose argmin is pi*",
        "  verdict: check_bound (the quantile within the bound at every n)",
        "measured/bound at every n:",
        f"{'':>13}   " + " ".join(f"{'n=' + str(n):>9}" for n in fin["ns"]),
    ]
    for method in METHODS:
        res = fin["methods"][method]
        lines.append(f"{method:>13} | " + " ".join(f"{r:9.2g}" for r in res["measured_over_bound"]))
    ratios = fin["methods"]["pmle"]["prop12_measured_over_bound"]
    lines.append(f"{'pmle prop12':>13} | " + " ".join(f"{r:9.2g}" for r in ratios))
    lines.append(
        f"every corrected bound held at every n: {results['all_bounds_hold']}; "
        f"worst ratio {results['worst_bound_ratio']:.3g}; {results['seconds']:.1f} s"
    )
    return "\n".join(lines)
