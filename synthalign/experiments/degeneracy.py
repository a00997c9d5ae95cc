"""Degenerate estimators (spec §2): RLHF collapses or underfits; unregularized PMLE/DPO are blind off the data.

Part A — RLHF's dilemma.  With R̂ = gamma ln pi* + c the RLHF optimum is
pi0 · pi*^(gamma/beta) (spec §6.7), not pi* for any beta:

* on the population reward R*, beta -> 0 collapses the policy onto argmax R*
  (entropy -> 0) and the forward KL grows like 1/beta; the best fixed beta
  leaves the exact floor min_beta KL(pi* ‖ pi0 pi*^(gamma/beta)/Z) > 0;
* with data (R̂ fitted by Bradley–Terry maximum likelihood on n pairs), a fixed
  beta (the floor's own, the most favourable) converges to that floor, a schedule
  beta_n = beta_fixed · (n_min/n)^power -> 0 collapses (entropy falls, forward KL
  grows), while RKL at beta = 0 (pi_R̂) goes to 0.

Part B — PMLE (eq. 4/5) and DPO (eq. 6) on small datasets.  Most prompts'
comparison graphs are then separable (`fit(...).separable`) and some responses
never appear in a pair.  Every figure comes from a fit whose optimality
certificate holds (`FitResult.certificate`; the record keeps the certified
fraction and the statuses):

* at beta = 0 the loss depends only on log-ratios between observed responses, so
  the minimizer set is not a point: the mass on unobserved responses ranges over
  the whole interval the certificate derives (0 to 1 on prompts with data), and two
  solver starts (pi0's logits, and the first fit with its mass moved onto the unobserved
  responses) reach certified minimizers of the same loss with unobserved mass near 0
  and near 1.  "PMLE starves unobserved responses" is therefore no property of
  the objective, only of a start;
* with beta > 0 the loss sees the unobserved responses: at the optimum every
  unobserved u of a prompt with data satisfies ln(pi(u)/pi0(u)) = KL(pi ‖ pi0) ≥ 0
  (stationarity in u's logit), so pi(u) ≥ pi0(u) — pi keeps pi0's shape, scaled up,
  where there is no data, at every beta > 0 and so in the limit beta -> 0+; moving
  mass there raises the loss by exactly beta times the change of the weighted KL;
* observed losers on separable data go to probability 0 at beta = 0 (status
  "no_finite_minimizer").  At beta > 0 the record reports where they end (the smallest
  observed log-probability); the boundary is then a local minimizer but not always the
  one the solver certifies, so no claim is asserted.
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import Executor

import numpy as np
import torch
from torch import Tensor

import synthalign as sa
from synthalign.experiments._common import (
    CommonArgs,
    band_stats,
    check_integer,
    check_positive,
    derive_seed,
    new_figure,
    one_cpu_thread,
    write_record,
)
from synthalign.experiments._grid import run_grid
from synthalign.experiments._plots import band_line, bound_line, finish_figure, style_axes
from synthalign.theory.references import kl_target_reference, rlhf_population_floor

__all__ = [
    "NAME",
    "Args",
    "population_sweep",
    "rlhf_at_n",
    "rlhf_with_data",
    "unobserved_responses",
    "offline_fit_report",
    "offline_fit_at_n",
    "offline_small_data",
    "run",
    "plot",
    "summary",
]

NAME = "degeneracy"
_SIZES = {
    # size: (log2 n of part A, replicates, small n of part B, regularized betas of part B)
    "quick": ((6, 9, 12, 15), 12, (20, 100), (1.0,)),
    "default": ((6, 8, 10, 12, 14, 16), 40, (20, 50, 100, 300), (0.1, 1.0)),
    "full": ((6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18), 100, (20, 50, 100, 200, 500, 1000), (0.01, 0.1, 1.0)),
}


@dataclasses.dataclass
class Args(CommonArgs):
    """Options of the degeneracy experiment (CommonArgs plus these)."""

    logit_scale: float = 1.0
    """logit standard deviation of the toy world World.paper_toy"""
    n_betas: int = 30
    """beta values of the population sweep (log grid from beta_min to beta_max)"""
    beta_min: float = 1e-3
    """smallest beta of the population sweep"""
    beta_max: float = 1e2
    """largest beta of the population sweep"""
    fixed_beta: float | None = None
    """part A's fixed beta; None: the beta of RLHF's population floor (the most favourable)"""
    schedule_power: float = 0.5
    """part A's schedule beta_n = fixed_beta · (n_min / n)^schedule_power"""
    ridge_sum: float = 1e-2
    """reward-model ridge (that of sa.fit_reward_model, which acts on the summed log-likelihood)"""
    objectives: tuple[str, ...] = ("pmle", "dpo")
    """part B's offline objectives"""
    regularized_betas: tuple[float, ...] | None = None
    """part B's beta > 0 values; None: (1.0,) quick, (0.1, 1.0) default, (0.01, 0.1, 1.0) full"""
    mass_shift: float = 20.0
    """logit added to the unobserved responses to show the beta = 0 loss is blind to them"""
    max_iter: int = 300
    """Newton iterations of part B's fits (each stops when its certificate holds; the record keeps
    the certified fraction)"""
    plot: bool = True
    """write the PNG plot"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "logit_scale", "beta_min", "beta_max", "schedule_power", "ridge_sum", "mass_shift")
        if self.beta_min >= self.beta_max:
            raise ValueError(f"need beta_min < beta_max, got {self.beta_min}, {self.beta_max}")
        check_integer("n_betas", self.n_betas, 2)
        if self.fixed_beta is not None and not (math.isfinite(self.fixed_beta) and self.fixed_beta > 0):
            raise ValueError(f"fixed_beta must be > 0 or None, got {self.fixed_beta!r}")
        self.objectives = tuple(self.objectives)
        unknown = [name for name in self.objectives if name not in ("pmle", "dpo")]
        if unknown or not self.objectives:
            raise ValueError(f"objectives must be among ('pmle', 'dpo'), got {self.objectives!r}")
        if self.regularized_betas is not None:
            self.regularized_betas = tuple(float(b) for b in self.regularized_betas)
            if not self.regularized_betas or any(not (math.isfinite(b) and b > 0) for b in self.regularized_betas):
                raise ValueError(f"regularized_betas must be positive numbers, got {self.regularized_betas!r}")
        check_integer("max_iter", self.max_iter, 1)  # (device and seed: CommonArgs)

    @property
    def ns(self) -> list[int]:
        return [2**k for k in _SIZES[self.size][0]]

    @property
    def n_replicates(self) -> int:
        return self.sized(self.replicates, _SIZES, 1)

    @property
    def small_ns(self) -> list[int]:
        return list(_SIZES[self.size][2])

    @property
    def betas_positive(self) -> tuple[float, ...]:
        return self.sized(self.regularized_betas, _SIZES, 3)


# ----------------------------------------------------------------------------- part A: RLHF's dilemma


def population_sweep(world: sa.World, betas: list[float]) -> dict:
    """RLHF's closed form on the true reward R* = gamma ln pi* for every beta: entropy, forward KL, argmax mass."""
    reward = world.true_reward
    top = reward.argmax(dim=-1, keepdim=True)
    entropy, forward_kl, argmax_mass = [], [], []
    for beta in betas:
        policy = sa.rlhf_policy(reward, world.reference, beta)
        entropy.append(float(sa.entropy(policy)))
        forward_kl.append(float(sa.forward_kl(world.target, policy)))
        argmax_mass.append(float((world.prompt_dist * policy.probs.gather(-1, top).squeeze(-1)).sum()))
    return {"betas": betas, "entropy": entropy, "forward_kl": forward_kl, "argmax_mass": argmax_mass}


def rlhf_at_n(world: sa.World, fixed_beta: float, schedule_beta: float, k: int, n: int, args: Args) -> dict:
    """One work item of part A: [2, R] forward KL and entropy of every method on the datasets of the k-th n."""
    with one_cpu_thread(args.device):
        data = world.sample_preferences(n, args.n_replicates, seed=derive_seed(args.seed, 0, k))
        reward = sa.fit_reward_model(data, ridge=args.ridge_sum, tol=1e-9, max_iter=50).reward
        policies = {
            "rlhf_fixed": sa.rlhf_policy(reward, world.reference, fixed_beta),
            "rlhf_schedule": sa.rlhf_policy(reward, world.reference, schedule_beta),
            "rkl_beta0": sa.rkl_policy(reward, world.reference, world.gamma, 0.0),
        }
        return {
            name: torch.stack([sa.forward_kl(world.target, policy), sa.entropy(policy, prompt_dist=world.prompt_dist)])
            for name, policy in policies.items()
        }


def rlhf_with_data(args: Args, world: sa.World, fixed_beta: float, executor: Executor | None = None) -> dict:
    """Fixed beta, beta_n -> 0, and RKL at beta = 0, on R̂ fitted to n pairs, for every n (one work item each)."""
    ns, replicates = args.ns, args.n_replicates
    schedule = [fixed_beta * (ns[0] / n) ** args.schedule_power for n in ns]
    methods = {"rlhf_fixed": [], "rlhf_schedule": [], "rkl_beta0": []}
    items = [(world, fixed_beta, schedule[k], k, n, args) for k, n in enumerate(ns)]
    labels = [{"k": k, "n": n} for k, n in enumerate(ns)]
    for measured in run_grid(args, NAME, rlhf_at_n, items, labels, stage="rlhf", executor=executor):
        for name, rows in measured.items():
            methods[name].append(torch.tensor(rows, dtype=torch.float64, device=world.device))
    result = {"n": ns, "fixed_beta": fixed_beta, "schedule_betas": schedule}
    floor, _ = rlhf_population_floor(world)
    for name, rows in methods.items():
        stacked = torch.stack(rows)  # [N, 2, R]
        result[name] = {"forward_kl": band_stats(stacked[:, 0]), "entropy": band_stats(stacked[:, 1])}
        # Against RLHF's exact floor (a lower bound for RLHF on R*, approached with data): mean/floor
        # with its standard error, at every n.
        forward = stacked[:, 0]
        result[name]["forward_kl_over_floor"] = {
            "mean": (forward.mean(dim=-1) / floor).tolist(),
            "se": (forward.std(dim=-1) / math.sqrt(replicates) / floor).tolist(),
        }
    return result


# ----------------------------------------------------------------------------- part B: blind off the data


def unobserved_responses(counts: Tensor) -> Tensor:
    """[R, X, A] bool: response a of prompt x appears in no pair with another response."""
    A = counts.shape[-1]
    off_diagonal = counts * (1 - torch.eye(A, dtype=counts.dtype, device=counts.device))
    return (off_diagonal.sum(dim=-1) + off_diagonal.sum(dim=-2)) == 0


def _mass(probs: Tensor, mask: Tensor, prompt_dist: Tensor) -> Tensor:
    """E_x Σ_{a in mask} p(a|x), [..., R]."""
    return (prompt_dist * (probs * mask).sum(dim=-1)).sum(dim=-1)


def _status_counts(fitted: sa.FitResult) -> dict:
    return {status: fitted.status.count(status) for status in sorted(set(fitted.status))}


def offline_fit_report(args: Args, world: sa.World, data: sa.PreferenceData, objective: str, beta: float) -> dict:
    """Fits `objective` with KL weight beta on every replicate and measures what happens off the data.

    Every figure is read off a certified fit (`FitResult.certificate`): the record keeps the
    certified fraction and the statuses.  At beta = 0 the fit is repeated from a second start
    (the fitted logits with `mass_shift` added on the unobserved responses of prompts with
    data) to show the minimizer set: the same loss, a different unobserved mass, both inside
    the range the certificate derives.
    """
    fitted = sa.fit(objective, data, beta=beta, max_iter=args.max_iter)
    certificate = fitted.certificate
    logp = fitted.policy.logp  # [R, X, A]
    unobserved = unobserved_responses(data.counts)
    prompt_weight = data.prompt_counts  # [R, X]
    with_data = prompt_weight > 0
    observed = ~unobserved & with_data.unsqueeze(-1)
    relevant = unobserved & with_data.unsqueeze(-1)

    # Where observed losers went: the smallest log-probability among observed responses.
    min_observed_logp = torch.where(observed, logp, torch.full_like(logp, math.inf)).amin(dim=(-1, -2))

    # Move (almost) all the mass of every prompt with data onto its unobserved responses.
    shift = args.mass_shift * relevant.to(logp.dtype)
    moved = torch.log_softmax(logp + shift, dim=-1)
    loss_before = sa.empirical_loss(objective, data, logp, beta=beta)
    loss_after = sa.empirical_loss(objective, data, moved, beta=beta)
    share = prompt_weight / prompt_weight.sum(dim=-1, keepdim=True)
    ref_logp = world.reference.logp
    kl_change = (share * (sa.kl_per_prompt(moved, ref_logp) - sa.kl_per_prompt(logp, ref_logp))).sum(dim=-1)

    report = {
        "forward_kl": band_stats(sa.forward_kl(world.target, fitted.policy)),
        "entropy": band_stats(sa.entropy(fitted.policy)),
        "unobserved_mass": band_stats(certificate.unobserved_mass),
        "min_observed_logp": band_stats(min_observed_logp),
        # replicates with no finite minimizer (beta = 0 and a one-way edge: the certificate's direction)
        "diverging_fraction": float((~certificate.finite).to(torch.float64).mean()),
        "min_observed_logp_diverging": min_observed_logp[~certificate.finite].tolist(),
        "certified": float(certificate.certified.to(torch.float64).mean()),
        "status": _status_counts(fitted),
        "largest_gap": float(certificate.gap.max()),
        "iterations": fitted.iterations,
        "loss_change_after_shift": (loss_after - loss_before).tolist(),
        "weighted_kl_change_after_shift": kl_change.tolist(),
    }
    reference_kl = kl_target_reference(world)
    report["worse_than_reference"] = float(
        (sa.forward_kl(world.target, fitted.policy) > reference_kl).to(torch.float64).mean()
    )
    if beta == 0:
        # The minimizer set: a second start, and the range of the unobserved mass over the set.
        shifted = sa.fit(objective, data, beta=0.0, max_iter=args.max_iter, init=moved)
        report["shifted_start"] = {
            "certified": float(shifted.certificate.certified.to(torch.float64).mean()),
            "status": _status_counts(shifted),
            "unobserved_mass": shifted.certificate.unobserved_mass.tolist(),
            "largest_loss_difference": float((shifted.loss - fitted.loss).abs().max()),
        }
        report["unobserved_mass_each"] = certificate.unobserved_mass.tolist()
        report["unobserved_mass_range"] = certificate.unobserved_mass_range.tolist()
        return report
    # beta > 0, stationarity in an unobserved logit (a prompt with data): its logit gradient is
    # beta·(w_x/n)·pi_u·(ln(pi_u/pi0_u) − KL(pi(x) ‖ pi0(x))), so |ln(pi_u/pi0_u) − KL| ≤ slack with
    # slack = |g| / (beta·(w_x/n)·pi_u) plus the rounding of the three logarithms subtracted
    # (4 eps (|ln pi_u| + |ln pi0_u| + KL)).  Since KL ≥ 0, pi_u ≥ pi0_u e^(−slack): pi keeps (at
    # least) pi0's mass where there is no data — the beta -> 0+ limit of these minimizers too.
    kl_prompt = sa.kl_per_prompt(logp, ref_logp)  # [R, X]
    log_ratio = logp - ref_logp
    error = (log_ratio - kl_prompt.unsqueeze(-1)).abs()
    eps = torch.finfo(logp.dtype).eps
    rounding = 4 * eps * (logp.abs() + ref_logp.abs() + kl_prompt.unsqueeze(-1))
    slack = fitted.grad_norm.view(-1, 1, 1) / (beta * share.unsqueeze(-1) * logp.exp()) + rounding
    none = torch.zeros_like(error)
    report["unobserved_stationarity_error"] = band_stats(torch.where(relevant, error, none).amax(dim=(-1, -2)))
    report["unobserved_stationarity_error_over_slack"] = float(torch.where(relevant, error / slack, none).max())
    smallest = torch.where(relevant, log_ratio, torch.full_like(log_ratio, math.inf)).amin(dim=(-1, -2))
    report["unobserved_log_ratio_min"] = float(smallest.min())
    report["unobserved_slack_max"] = float(torch.where(relevant, slack, none).max())
    return report


def offline_fit_at_n(world: sa.World, k: int, n: int, objective: str, beta: float, args: Args) -> dict:
    """One work item of part B: `offline_fit_report` of one objective and beta on the datasets of the k-th small n."""
    with one_cpu_thread(args.device):
        data = world.sample_preferences(n, args.n_replicates, seed=derive_seed(args.seed, 1, k))
        return offline_fit_report(args, world, data, objective, beta)


def offline_small_data(args: Args, world: sa.World, executor: Executor | None = None) -> dict:
    """Part B for every small n, objective and beta (0 and the regularized ones): one work item each."""
    betas = (0.0, *args.betas_positive)
    result = {
        "n": args.small_ns,
        "betas": list(betas),
        "separable_fraction": [],
        "prompts_with_unobserved": [],
        "target_unobserved_mass": [],
        "reference_unobserved_mass": [],
        "fits": {objective: {str(beta): [] for beta in betas} for objective in args.objectives},
    }
    for k, n in enumerate(args.small_ns):
        data = world.sample_preferences(n, args.n_replicates, seed=derive_seed(args.seed, 1, k))
        unobserved = unobserved_responses(data.counts)
        result["separable_fraction"].append(float(sa.comparison_graph_separable(data.counts).to(torch.float64).mean()))
        result["prompts_with_unobserved"].append(float(unobserved.any(dim=-1).to(torch.float64).mean()))
        result["target_unobserved_mass"].append(band_stats(_mass(world.target.probs, unobserved, world.prompt_dist)))
        result["reference_unobserved_mass"].append(
            band_stats(_mass(world.reference.probs, unobserved, world.prompt_dist))
        )
    cells = [
        (k, n, objective, beta) for k, n in enumerate(args.small_ns) for objective in args.objectives for beta in betas
    ]
    items = [(world, k, n, objective, beta, args) for k, n, objective, beta in cells]
    labels = [{"k": k, "n": n, "objective": objective, "beta": beta} for k, n, objective, beta in cells]
    reports = run_grid(args, NAME, offline_fit_at_n, items, labels, stage="small_data", executor=executor)
    for (_, _, objective, beta), report in zip(cells, reports, strict=True):
        result["fits"][objective][str(beta)].append(report)
    return result


# ----------------------------------------------------------------------------- experiment


def run(args: Args, *, executor: Executor | None = None) -> dict:
    """Parts A and B; writes degeneracy.json and degeneracy.png; returns the results.

    Each n of part A, and each (small n, objective, beta) of part B, is one work item of the sweep
    store (`synthalign.experiments._grid`, one stage per part): finished items are kept in
    `<out>/store/` and reused by a rerun; `executor` runs them in parallel.
    """
    with one_cpu_thread(args.device):
        return _run(args, executor)


def _run(args: Args, executor: Executor | None = None) -> dict:
    from tqdm import tqdm

    world = sa.World.paper_toy(args.seed, logit_scale=args.logit_scale, device=args.device)
    floor, floor_beta = rlhf_population_floor(world)
    fixed_beta = args.fixed_beta if args.fixed_beta is not None else floor_beta
    if not math.isfinite(fixed_beta):
        raise ValueError("RLHF's floor is at beta = inf in this world; pass fixed_beta")
    betas = np.geomspace(args.beta_min, args.beta_max, args.n_betas).tolist()
    steps = tqdm(total=3, desc="degeneracy", disable=None if args.progress else True, leave=False)
    results = {
        "world": {
            "logit_scale": args.logit_scale,
            "gamma": world.gamma,
            "target_entropy": float(sa.entropy(world.target)),
            "kl_target_reference": kl_target_reference(world),
            "rlhf_floor": floor,
            "rlhf_floor_beta": floor_beta,
        }
    }
    results["population"] = population_sweep(world, betas)
    steps.update()
    results["rlhf_data"] = rlhf_with_data(args, world, fixed_beta, executor)
    steps.update()
    results["small_data"] = offline_small_data(args, world, executor)
    steps.update()
    steps.close()
    if args.plot:
        plot(results, args)
    write_record(args, NAME, results)
    return results


def plot(results: dict, args: Args) -> None:
    """degeneracy.png: the population sweep, RLHF with data, and the small-data fits."""
    from matplotlib import colormaps

    world, pop, data, small = results["world"], results["population"], results["rlhf_data"], results["small_data"]
    fig, axes = new_figure(2, 4, figsize=(20, 8.4))
    ax = axes[0][0]
    ax.loglog(pop["betas"], pop["forward_kl"], "o-", ms=3, color="tab:red", label="RLHF on R*")
    ax.axhline(world["rlhf_floor"], color="tab:red", ls="--", lw=1, label="floor (best beta)")
    ax.axhline(world["kl_target_reference"], color="0.5", ls="-.", lw=1, label="pi0")
    beta_axis = {"xscale": None, "yscale": None, "xlabel": "beta (KL weight)", "legend_size": 8}  # scales set
    style_axes(ax, ylabel="E_x KL(pi* ‖ pi) (nats)", title="population: forward KL against beta", **beta_axis)
    ax = axes[0][1]
    ax.semilogx(pop["betas"], pop["entropy"], "o-", ms=3, color="tab:red", label="entropy of RLHF on R*")
    ax.semilogx(pop["betas"], pop["argmax_mass"], "s-", ms=3, color="tab:purple", label="mass on argmax R*")
    ax.axhline(world["target_entropy"], color="k", ls=":", lw=1, label="entropy of pi*")
    ylabel = "entropy E_x H(pi) (nats); mass (probability)"
    style_axes(ax, ylabel=ylabel, title="population: collapse as beta -> 0", **beta_axis)
    styles = {
        "rlhf_fixed": ("tab:red", f"RLHF, fixed beta = {data['fixed_beta']:.3g}"),
        "rlhf_schedule": ("tab:orange", f"RLHF, beta_n ∝ n^-{args.schedule_power:g} -> 0"),
        "rkl_beta0": ("tab:blue", "RKL, beta = 0"),
    }
    for ax, metric in ((axes[0][2], "forward_kl"), (axes[1][0], "entropy")):
        for name, (color, label) in styles.items():
            stats = data[name][metric]
            band_line(
                ax, data["n"], stats["median"], stats["low"], stats["high"], alpha=0.2, ms=3, color=color, label=label
            )
    axes[0][2].axhline(world["rlhf_floor"], color="tab:red", ls="--", lw=1, label="RLHF floor")
    ylabel = "E_x KL(pi* ‖ pi_hat) (nats), median and 10–90%"
    style_axes(axes[0][2], ylabel=ylabel, title="with data: forward KL", legend_size=8)
    axes[1][0].axhline(world["target_entropy"], color="k", ls=":", lw=1, label="entropy of pi*")
    ylabel = "E_x H(pi_hat) (nats), median and 10–90%"
    style_axes(axes[1][0], yscale=None, ylabel=ylabel, title="with data: entropy", legend_size=8)
    markers = {"pmle": "o", "dpo": "s"}
    for objective, by_beta in small["fits"].items():
        for index, (beta, reports) in enumerate(by_beta.items()):
            color = colormaps["viridis"](index / max(1, len(by_beta) - 1))
            label = f"{objective}, beta = {float(beta):g}"
            fkl = [r["forward_kl"]["median"] for r in reports]
            mass = [r["unobserved_mass"]["median"] for r in reports]
            axes[1][1].plot(small["n"], fkl, marker=markers[objective], ms=4, color=color, label=label)
            axes[1][2].plot(small["n"], mass, marker=markers[objective], ms=4, color=color, label=label)
            if float(beta) == 0:
                second = [float(np.median(r["shifted_start"]["unobserved_mass"])) for r in reports]
                label = f"{objective}, beta = 0, start with mass moved"
                axes[1][2].plot(small["n"], second, marker=markers[objective], ms=4, ls="--", color=color, label=label)
    axes[1][1].axhline(world["kl_target_reference"], color="0.5", ls="-.", lw=1, label="pi0")
    style_axes(axes[1][1], xscale="log", ylabel="median E_x KL(pi* ‖ pi_hat) (nats)", title="small data: forward KL")
    for key, style, label in (("target_unobserved_mass", ":", "pi*"), ("reference_unobserved_mass", "-.", "pi0")):
        axes[1][2].plot(small["n"], [q["median"] for q in small[key]], style, color="0.3", label=label)
    title = "small data: mass where there is no data (certified fits)"
    style_axes(axes[1][2], xscale="log", yscale=None, ylabel="median E_x pi(unobserved responses | x)", title=title)
    # The checks' tightness at every n: RLHF at fixed beta over its exact floor (a lower bound), and the
    # stationarity error on unobserved responses over its certified slack (held: <= 1).
    ax = axes[0][3]
    over = data["rlhf_fixed"]["forward_kl_over_floor"]
    ax.errorbar(data["n"], over["mean"], yerr=over["se"], marker="o", ms=3, capsize=2, color="tab:red")
    bound_line(ax, label="floor")
    title = f"RLHF at fixed beta = {data['fixed_beta']:.3g} over its floor"
    style_axes(ax, yscale=None, ylabel="mean E_x KL(pi* ‖ pi_hat) / floor (± s.e.)", title=title, legend_size=8)
    ax = axes[1][3]
    for objective, by_beta in small["fits"].items():
        for index, (beta, reports) in enumerate(by_beta.items()):
            if float(beta) == 0:
                continue
            color = colormaps["viridis"](index / max(1, len(by_beta) - 1))
            ratio = [max(r["unobserved_stationarity_error_over_slack"], 1e-300) for r in reports]
            ax.plot(
                small["n"], ratio, marker=markers[objective], ms=4, color=color, label=f"{objective}, beta = {beta}"
            )
    bound_line(ax, label="slack")
    title = "beta > 0: stationarity on unobserved responses"
    style_axes(ax, xscale="log", ylabel="max |ln(pi/pi0) − KL| / certified slack", title=title)
    title = (
        f"Degenerate estimators on World.paper_toy(logit_scale={world['logit_scale']:g}), gamma = {world['gamma']:g}"
    )
    spacing = dict(left=0.06, right=0.98, top=0.91, bottom=0.07, wspace=0.28, hspace=0.32)
    finish_figure(fig, args, "degeneracy.png", title=title, title_size=None, **spacing)


def summary(results: dict) -> str:
    world, pop, data, small = results["world"], results["population"], results["rlhf_data"], results["small_data"]
    lines = [
        f"RLHF on the true reward: entropy {pop['entropy'][-1]:.3g} at beta = {pop['betas'][-1]:.3g} -> "
        f"{pop['entropy'][0]:.3g} at beta = {pop['betas'][0]:.3g} (pi*: {world['target_entropy']:.3g}); "
        f"forward KL {pop['forward_kl'][0]:.3g} at the smallest beta; "
        f"best achievable (floor) {world['rlhf_floor']:.4g} at beta = {world['rlhf_floor_beta']:.4g}",
        "",
        "With data (median over replicates): forward KL | entropy",
        f"{'n':>7} | {'RLHF fixed beta':>16} | {'RLHF beta_n->0':>16} | {'RKL beta=0':>16} | {'fixed/floor':^15}",
    ]
    for k, n in enumerate(data["n"]):
        cells = [
            f"{data[name]['forward_kl']['median'][k]:7.3g} | {data[name]['entropy']['median'][k]:5.3g}"
            for name in ("rlhf_fixed", "rlhf_schedule", "rkl_beta0")
        ]
        over = data["rlhf_fixed"]["forward_kl_over_floor"]
        lines.append(
            f"{n:>7} | {cells[0]:>16} | {cells[1]:>16} | {cells[2]:>16} | {over['mean'][k]:6.3f} ± {over['se'][k]:.3f}"
        )
    lines += [
        "  n: preference pairs per dataset",
        "  RLHF fixed beta: median E_x KL(pi* ‖ pi_hat) (nats) | median entropy (nats), at the floor's beta",
        "  RLHF beta_n->0: the same with beta_n = beta_fixed (n_min/n)^schedule_power",
        "  RKL beta=0: the same for pi_R̂",
        "  fixed/floor: RLHF at fixed beta, its mean forward KL over the exact floor min_beta KL ± s.e.",
    ]
    lines += [
        "",
        "Small data (medians): forward KL, mass on unobserved responses, smallest observed log-prob, "
        "loss change when the mass is moved onto unobserved responses (max |.|)",
    ]
    for k, n in enumerate(small["n"]):
        lines.append(
            f"n = {n}: separable prompts {small['separable_fraction'][k]:.0%}; unobserved mass of "
            f"pi* {small['target_unobserved_mass'][k]['median']:.3f}, "
            f"pi0 {small['reference_unobserved_mass'][k]['median']:.3f}"
        )
        for objective, by_beta in small["fits"].items():
            for beta, reports in by_beta.items():
                report = reports[k]
                change = max(abs(v) for v in report["loss_change_after_shift"])
                line = (
                    f"    {objective:>4} beta={float(beta):<5g} certified {report['certified']:.0%}  "
                    f"KL {report['forward_kl']['median']:8.3g}  "
                    f"unobserved mass {report['unobserved_mass']['median']:.3f}  "
                    f"min log p {report['min_observed_logp']['median']:7.1f}  loss change {change:.2g}"
                )
                if float(beta) == 0:
                    second = report["shifted_start"]["unobserved_mass"]
                    low = min(r[0] for r in report["unobserved_mass_range"])
                    high = max(r[1] for r in report["unobserved_mass_range"])
                    line += (
                        f"  | shifted start: mass median {float(np.median(second)):.3f}, "
                        f"loss diff {report['shifted_start']['largest_loss_difference']:.1e}; "
                        f"range over minimizers [{low:.2f}, {high:.2f}]"
                    )
                else:
                    line += (
                        f"  | min ln(pi/pi0) on unobserved {report['unobserved_log_ratio_min']:.3g}, "
                        f"stationarity error median {report['unobserved_stationarity_error']['median']:.1e} "
                        f"(error/slack max {report['unobserved_stationarity_error_over_slack']:.2g})"
                    )
                lines.append(line)
    lines += [
        "  certified: fraction of fits whose optimality certificate holds",
        "  KL: median E_x KL(pi* ‖ pi_hat) (nats)",
        "  unobserved mass: median E_x pi(unobserved responses | x)",
        "  min log p: median smallest observed log-probability",
        "  loss change: largest |loss change| after moving the mass onto unobserved responses",
        "  shifted start (beta = 0): the second start's median unobserved mass and largest loss difference",
        "  range over minimizers (beta = 0): the certificate's range of the unobserved mass over the minimizer set",
        "  min ln(pi/pi0) (beta > 0): the smallest log-ratio on unobserved responses (>= 0 up to the slack)",
        "  stationarity error (beta > 0): median |ln(pi/pi0) − KL| on unobserved responses (nats)",
        "  error/slack max (beta > 0): the largest error over its certified slack, the check's tightness (<= 1)",
    ]
    return "\n".join(lines)
