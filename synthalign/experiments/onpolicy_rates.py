"""On-policy rates: does RKL trained by stochastic gradients attain the O(1/n) of its population objective?

A `SequenceWorld` (token sequences up to length L, pi*, pi0 = mu per-prefix tabular models,
gamma-tilted preferences over whole sequences).  For every n = 2^k and R replicate datasets
of n labelled pairs from mu (counts over the enumerated world, `.as_tabular()`):

Exact estimators (Newton or closed form on the enumerated world, beta = 0):
  * PMLE (eq. 4) and DPO (eq. 6): `sa.fit`.  DPO is not consistent: its population minimizer
    is pi0·pi*/Z (spec §2), so its error is measured to that policy (and to pi* for the record);
  * R̂ = the Bradley–Terry MLE (eq. 9, `sa.fit_reward_model`, no ridge: the sweep starts at an n
    where every comparison graph is connected — the separable fraction is recorded);
  * distillation on the pairs of D_n (pairs from mu, eq. 11) with soft labels from R̂: `sa.fit`;
  * RKL (eq. 15, beta = 0): its exact minimizer pi_R̂ (closed form) — the reference curve.

Stochastic estimators (per-prefix logits from pi0, Adam, samples of the current policy only):
  * RKL by RLOO score-function gradients with the entropy in the reward (`score_function_fit`);
  * distillation on pairs from the current policy pi_t (Algorithm 1, `onpolicy_pair_fit`).
  Both have the same exact minimizer as RKL: pi_R̂ (distillation's loss is 0 there whatever
  full-support law draws the pairs).  So the optimization error of a run is KL(pi_R̂ ‖ pi_sgd),
  measured on the same data, and its statistical error is the reference curve.  Each is run at
  every sampling budget m (responses per prompt per step; distillation draws m/2 pairs) with the
  same steps and step-size schedule (Adam restarted at each lr of `lr_schedule`), all n ×
  replicates in one batched run.  The optimization error does not fall with n, so the rate can
  only appear where it is below the statistical error; the record gives both at every n.

Slopes of the mean forward KL against n with bootstrap CIs (`check_rate`, expected −1, CI width
at most `max_ci_width`) for every curve; for each stochastic method, the smallest budget whose
slope passes is "the budget at which the rate appears".
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from concurrent.futures import Executor

import numpy as np
import torch

import synthalign as sa
from synthalign.estimators.onpolicy import onpolicy_pair_fit, score_function_fit
from synthalign.experiments._common import (
    CommonArgs,
    OptionError,
    check_integer,
    check_log2_range,
    check_positive,
    column_legend,
    derive_seed,
    log2_grid,
    mean_se,
    new_figure,
    one_cpu_thread,
    save_figure,
    slope_cells,
    verdict_word,
    write_record,
)
from synthalign.experiments._grid import run_grid
from synthalign.experiments._plots import slope_text, style_axes
from synthalign.stats import check_rate, fit_slope

__all__ = [
    "NAME",
    "EXACT",
    "STOCHASTIC",
    "LABELS",
    "COLORS",
    "Args",
    "exact_at_n",
    "exact_fits",
    "train",
    "stochastic_run",
    "curve",
    "run",
    "plot",
    "summary",
]

NAME = "onpolicy-rates"
EXACT = ("pmle", "dpo", "distillation_mu", "rkl_exact")
STOCHASTIC = ("rkl_sgd", "distillation_pit")
LABELS = {
    "pmle": "PMLE (Newton)",
    "dpo": "DPO (Newton), to pi0·pi*",
    "distillation_mu": "distillation, pairs from mu (Newton)",
    "rkl_exact": "RKL exact minimizer pi_R̂",
    "rkl_sgd": "RKL, RLOO stochastic gradients",
    "distillation_pit": "distillation, pairs from pi_t (SGD)",
}
COLORS = {
    "pmle": "tab:green",
    "dpo": "tab:purple",
    "distillation_mu": "tab:orange",
    "rkl_exact": "black",
    "rkl_sgd": "tab:blue",
    "distillation_pit": "tab:red",
}
_SIZES = {
    # size: (largest log2 n, replicates, sampling budgets, steps)
    "quick": (12, 8, (2, 32), 90),
    "default": (17, 24, (2, 4, 16, 64), 300),
    "full": (19, 100, (2, 4, 16, 64, 256), 900),
}


@dataclasses.dataclass
class Args(CommonArgs):
    """Options of the onpolicy-rates experiment (CommonArgs plus these)."""

    vocab_size: int = 3
    """V of the sequence world (EOS included)"""
    max_length: int = 3
    """L of the sequence world"""
    n_prompts: int = 2
    """|X| of the sequence world"""
    gamma: float = 0.5
    """preference tilt (and RKL's entropy coefficient)"""
    logit_scale: float = 0.5
    """logit scale of pi*'s and pi0's next-token logits"""
    log2_n_min: int = 10
    """smallest n is 2^log2_n_min (where R̂'s maximum likelihood exists in (almost) every dataset)"""
    log2_n_max: int | None = None
    """largest n is 2^log2_n_max; None: 12 quick, 17 default, 19 full"""
    budgets: tuple[int, ...] | None = None
    """sampling budgets m (responses per prompt per step); None: (2, 32) quick, (2, 4, 16, 64) default"""
    steps: int | None = None
    """Adam steps of each stochastic run, split evenly over lr_schedule; None: 90 quick, 300 default"""
    lr_schedule: tuple[float, ...] = (0.1, 0.03, 0.01)
    """Adam learning rates, one phase each (Adam restarts at each)"""
    solver_tol: float = 1e-10
    """Newton gradient tolerance of the exact fits"""
    expected_slope: float = -1.0
    """the rate of the population objectives (Thms 4, 6, 7)"""
    max_ci_width: float = 0.5
    """check_rate's widest conclusive CI"""
    n_boot: int = 2000
    """bootstrap resamples of each slope's CI"""
    plot: bool = True
    """write the PNG plot"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_integer("n_prompts", self.n_prompts, 1)
        check_integer("max_length", self.max_length, 1)
        check_integer("vocab_size", self.vocab_size, 2)
        check_positive(self, "gamma", "logit_scale", "solver_tol", "max_ci_width")
        check_log2_range(self.log2_n_min, self.sized(self.log2_n_max, _SIZES, 0), limit=30)
        if self.budgets is not None:
            self.budgets = tuple(self.budgets)
            if not self.budgets or any(
                isinstance(m, bool) or not isinstance(m, int) or m < 2 or m % 2 for m in self.budgets
            ):
                raise OptionError("budgets", f"budgets must be even integers >= 2 (m/2 pairs), got {self.budgets!r}")
        self.lr_schedule = tuple(float(lr) for lr in self.lr_schedule)
        if not self.lr_schedule or not all(math.isfinite(lr) and lr > 0 for lr in self.lr_schedule):
            raise OptionError("lr_schedule", f"lr_schedule must be positive numbers, got {self.lr_schedule!r}")
        if self.steps is not None and (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < len(self.lr_schedule)
        ):
            raise OptionError("steps", f"steps must be an integer >= len(lr_schedule), got {self.steps!r}")
        check_integer("n_boot", self.n_boot, 100)

    @property
    def ns(self) -> list[int]:
        return log2_grid(self.log2_n_min, self.sized(self.log2_n_max, _SIZES, 0))

    @property
    def n_replicates(self) -> int:
        return self.sized(self.replicates, _SIZES, 1)

    @property
    def sampling_budgets(self) -> tuple[int, ...]:
        return self.sized(self.budgets, _SIZES, 2)

    @property
    def n_steps(self) -> int:
        return self.sized(self.steps, _SIZES, 3)


# ----------------------------------------------------------------------------- the exact fits, per n


def exact_at_n(world: sa.SequenceWorld, n: int, args: Args) -> dict:
    """One work item: every exact estimator on the replicate datasets of size n, and R̂ per dataset."""
    tab = world.as_tabular()
    dpo_limit = sa.Policy.from_logits(tab.reference.logp + tab.target.logp)
    data = tab.sample_preferences(n, args.n_replicates, seed=np.random.SeedSequence([args.seed, n]))
    separable = float(sa.comparison_graph_separable(data.counts).any(dim=-1).double().mean())
    reward_fit = sa.fit_reward_model(data, ridge=0.0, tol=args.solver_tol)
    reward = reward_fit.reward
    pmle = sa.fit("pmle", data, tol=args.solver_tol)
    dpo = sa.fit("dpo", data, tol=args.solver_tol)
    distillation = sa.fit("distillation", data, reward=reward, tol=args.solver_tol)
    rkl = sa.fit("rkl", data, reward=reward)  # closed form pi_R̂ at beta = 0
    # A dataset whose comparison graph is not strongly connected has no finite BT maximizer: there the
    # certificate says so (status "no_finite_minimizer") instead of claiming convergence.
    finite = ~sa.comparison_graph_separable(data.counts).any(dim=-1)
    fits = (reward_fit, pmle, dpo, distillation)
    values = {
        "pmle": sa.forward_kl(tab.target, pmle.policy),
        "dpo": sa.forward_kl(dpo_limit, dpo.policy),
        "dpo_to_target": sa.forward_kl(tab.target, dpo.policy),
        "distillation_mu": sa.forward_kl(tab.target, distillation.policy),
        "rkl_exact": sa.forward_kl(tab.target, rkl.policy),
    }
    return {
        "values": values,
        "reward": reward,
        "separable_fraction": separable,
        "newton_converged": all(bool(f.converged[finite].all()) for f in fits),
    }


def exact_fits(world: sa.SequenceWorld, args: Args, executor: Executor | None = None) -> dict:
    """Every exact estimator on the same datasets; R̂ per dataset for the stochastic runs.

    Each n is one work item of the sweep store (stage "exact").
    """
    tab = world.as_tabular()
    items = [(world, n, args) for n in args.ns]
    labels = [{"n": n} for n in args.ns]
    per_n = run_grid(args, NAME, exact_at_n, items, labels, stage="exact", executor=executor)
    like = dict(dtype=tab.dtype, device=tab.device)
    values = {name: torch.tensor([item["values"][name] for item in per_n], **like) for name in per_n[0]["values"]}
    reward = torch.cat([torch.tensor(item["reward"], **like) for item in per_n])  # [len(ns)·R, X, N], n-major
    return {
        "values": values,  # [len(ns), R]
        "reward": reward,
        "minimizer": sa.reward_policy(reward, tab.gamma, tab.prompt_dist),
        "separable_fraction": [item["separable_fraction"] for item in per_n],
        "newton_converged": [item["newton_converged"] for item in per_n],
    }


# ----------------------------------------------------------------------------- the stochastic runs


def train(
    world: sa.SequenceWorld, method: str, reward: torch.Tensor, budget: int, args: Args, seed: int
) -> tuple[sa.Policy, torch.Tensor]:
    """One batched run over every (n, replicate): Adam restarted at each lr of the schedule."""
    replicates = reward.shape[0]
    phase_steps = [args.n_steps // len(args.lr_schedule)] * len(args.lr_schedule)
    phase_steps[-1] += args.n_steps - sum(phase_steps)
    init, losses = None, []
    for phase, (lr, steps) in enumerate(zip(args.lr_schedule, phase_steps, strict=True)):
        phase_seed = derive_seed(seed, phase)
        common = dict(reward=reward, steps=steps, lr=lr, replicates=replicates, seed=phase_seed, init=init)
        if method == "rkl_sgd":
            fitted = score_function_fit(
                world, "rkl", estimator="rloo", entropy_placement="reward", samples=budget, **common
            )
        else:
            fitted = onpolicy_pair_fit(world, "distillation", pairs=budget // 2, **common)
        init, losses = fitted.parameters, losses + [fitted.losses]
    return fitted.policy, torch.cat(losses)


def stochastic_run(
    world: sa.SequenceWorld,
    method: str,
    reward: torch.Tensor,
    minimizer: sa.Policy,
    budget: int,
    args: Args,
    seed: int,
) -> dict:
    """One work item: one method at one sampling budget over every (n, replicate), against π* and π_R̂."""
    tab = world.as_tabular()
    policy, losses = train(world, method, reward, budget, args, seed)
    return {
        "to_target": sa.forward_kl(tab.target, policy),
        "optimization": sa.forward_kl(minimizer, policy),
        "final_loss_mean": float(losses[-1].mean()),
    }


def curve(ns: Sequence[int], values: torch.Tensor, args: Args) -> dict:
    """One estimator's errors [len(ns), R] against n: mean ± s.e., median, the values, the slope and its verdict."""
    slope = fit_slope(ns, values, n_boot=args.n_boot, seed=args.seed)
    verdict = check_rate(
        ns, values, args.expected_slope, max_ci_width=args.max_ci_width, n_boot=args.n_boot, seed=args.seed
    )
    return {
        **mean_se(values),
        "values": values.tolist(),
        "slope": dataclasses.asdict(slope),
        "verdict": verdict.to_dict(),
    }


# ----------------------------------------------------------------------------- experiment


def run(args: Args, *, executor: Executor | None = None) -> dict:
    """Exact and stochastic estimators over n; writes onpolicy_rates.json and onpolicy_rates.png.

    Each n of the exact fits, and each (method, budget) of the stochastic runs, is one work item of the
    sweep store (`synthalign.experiments._grid`): finished items are kept in `<out>/store/` and reused by
    a rerun; `executor` runs them in parallel.
    """
    with one_cpu_thread(args.device):
        return _run(args, executor)


def _run(args: Args, executor: Executor | None = None) -> dict:
    start = time.perf_counter()
    world = sa.SequenceWorld.random(
        vocab_size=args.vocab_size,
        max_length=args.max_length,
        n_prompts=args.n_prompts,
        gamma=args.gamma,
        logit_scale=args.logit_scale,
        seed=args.seed,
        device=args.device,
    )
    tab = world.as_tabular()
    ns, replicates = args.ns, args.n_replicates
    exact = exact_fits(world, args, executor)
    results = {
        "ns": ns,
        "replicates": replicates,
        "world": {
            "vocab_size": args.vocab_size,
            "max_length": args.max_length,
            "n_prompts": tab.n_prompts,
            "n_sequences": tab.n_responses,
            "gamma": tab.gamma,
            "kl_target_reference": float(sa.forward_kl(tab.target, tab.reference)),
            "min_behavior_probability": float(tab.behavior.logp.exp().min()),
        },
        "separable_fraction": exact["separable_fraction"],
        "newton_converged": exact["newton_converged"],
        "exact_seconds": time.perf_counter() - start,
        "exact": {name: curve(ns, exact["values"][name], args) for name in EXACT},
        "dpo_to_target_mean": exact["values"]["dpo_to_target"].mean(dim=1).tolist(),
        "stochastic": {},
    }
    statistical = exact["values"]["rkl_exact"]
    items, labels = [], []
    for m_index, method in enumerate(STOCHASTIC):
        for b_index, budget in enumerate(args.sampling_budgets):
            seed = derive_seed(args.seed, 1000 + m_index, b_index)
            items.append((world, method, exact["reward"], exact["minimizer"], budget, args, seed))
            labels.append({"method": method, "budget": budget})
    runs = iter(run_grid(args, NAME, stochastic_run, items, labels, stage="stochastic", executor=executor))
    like = dict(dtype=tab.dtype, device=tab.device)
    for method in STOCHASTIC:
        per_budget = {}
        for budget in args.sampling_budgets:
            measured = next(runs)
            to_target = torch.tensor(measured["to_target"], **like).reshape(len(ns), replicates)
            optimization = torch.tensor(measured["optimization"], **like).reshape(len(ns), replicates)
            entry = curve(ns, to_target, args)
            entry["optimization_error_mean"] = optimization.mean(dim=1).tolist()
            entry["optimization_error_se"] = (optimization.std(dim=1) / math.sqrt(replicates)).tolist()
            entry["optimization_over_statistical"] = (optimization.mean(dim=1) / statistical.mean(dim=1)).tolist()
            entry["final_loss_mean"] = measured["final_loss_mean"]
            entry["responses_per_step"] = budget * tab.n_prompts
            per_budget[str(budget)] = entry
        passing = [int(b) for b, e in per_budget.items() if e["verdict"]["passed"]]
        results["stochastic"][method] = {
            "budgets": per_budget,
            "rate_appears_at_budget": min(passing) if passing else None,
        }
    results["steps"] = args.n_steps
    results["lr_schedule"] = list(args.lr_schedule)
    results["seconds"] = time.perf_counter() - start
    if args.plot:
        plot(results, args)
    write_record(args, NAME, results)
    return results


def plot(results: dict, args: Args) -> None:
    """onpolicy_rates.png and .svg: (left) forward KL against n, every method; (right) optimization error against n."""
    fig, (left, right) = new_figure(1, 2, figsize=(12.5, 5.0))
    ns = np.asarray(results["ns"], dtype=float)
    coincide = _coinciding(results)
    for name, entry in results["exact"].items():
        style = "-" if name == "rkl_exact" else "o-"
        note = " (on RKL's exact curve: the same policy pi_R̂)" if name in coincide and name != "rkl_exact" else ""
        label = f"{LABELS[name]}{note}: {slope_text(entry['slope'])}"
        left.plot(ns, entry["mean"], style, ms=3, color=COLORS[name], lw=2 if name == "rkl_exact" else 1, label=label)
    for method, block in results["stochastic"].items():
        budgets = list(block["budgets"])
        for i, budget in enumerate(budgets):
            entry = block["budgets"][budget]
            style = {"ms": 3, "color": COLORS[method], "alpha": 0.35 + 0.65 * (i + 1) / len(budgets)}
            name = f"{LABELS[method]}, m={budget}"
            left.plot(ns, entry["mean"], "s--", label=f"{name}: {slope_text(entry['slope'])}", **style)
            right.plot(ns, entry["optimization_error_mean"], "s--", label=name, **style)
    right.plot(ns, results["exact"]["rkl_exact"]["mean"], "k-", lw=2, label="statistical error KL(π* ‖ π_R̂)")
    title = (
        f"sequence world, {results['world']['n_sequences']} sequences: error against n, mean over "
        f"{results['replicates']} datasets per n; slope [95% CI]"
    )
    ylabel = "mean forward KL  E_x KL(π* ‖ π̂)  (nats; DPO: to π0·π*/Z)"
    style_axes(left, ylabel=ylabel, title=title, title_size=9, legend_size=6)
    title = (
        f"optimization error after {results['steps']} Adam steps (lr {results['lr_schedule']}), "
        "m = responses per prompt per step"
    )
    ylabel = "mean optimization error  E_x KL(π_R̂ ‖ π_sgd)  (nats)"
    style_axes(right, ylabel=ylabel, title=title, title_size=9, legend_size=6)
    fig.tight_layout()
    save_figure(fig, args, "onpolicy_rates.png")


def _rate_cells(entry: dict) -> str:
    """The slope, CI and mean-at-the-largest-n cells of a row of the summary table."""
    return f"{slope_cells(entry['slope'])} | {entry['mean'][-1]:13.3g}"


def _coinciding(results: dict) -> list[str]:
    """The exact methods whose printed row equals that of RKL's exact minimizer (rkl_exact included)."""
    reference = _rate_cells(results["exact"]["rkl_exact"])
    return [name for name, entry in results["exact"].items() if _rate_cells(entry) == reference]


def _identical_rows_note(results: dict) -> str | None:
    """Why exact rows of the table coincide, with how many datasets give the very same policy; None if none do."""
    coincide = _coinciding(results)
    if len(coincide) < 2:
        return None
    reference = np.asarray(results["exact"]["rkl_exact"]["values"])
    same = np.ones(reference.shape, dtype=bool)
    for name in coincide:
        values = np.asarray(results["exact"][name]["values"])
        same &= np.abs(values - reference) <= 1e-6 * np.abs(reference)
    total, agree = same.size, int(same.sum())
    separable = round(sum(results["separable_fraction"]) * results["replicates"])
    names = "; ".join(LABELS[name] for name in coincide)
    note = (
        f"Identical rows ({names}): in the full tabular class over the enumerated sequences these fits are one "
        "policy, pi_R̂, wherever the Bradley-Terry maximum likelihood R̂ exists (PMLE is that MLE in the "
        "parametrization R = gamma ln pi; distillation's loss is 0 at pi_R̂; RKL at beta = 0 is pi_R̂, spec §2). "
        f"They agree to 1e-6 relative on {agree} of {total} datasets"
    )
    if agree == total:
        return note + "."
    if total - agree <= separable:
        return note + (
            f"; the other {total - agree}: no more than the separable datasets ({separable}), where no finite R̂ "
            "exists and the fits need not agree."
        )
    return note + f" ({separable} datasets are separable)."


def summary(results: dict) -> str:
    """Slopes with CIs per method and budget; the budget at which each stochastic method attains the rate; legend."""
    w = results["world"]
    ns = results["ns"]
    lines = [
        f"sequence world V={w['vocab_size']}, L={w['max_length']}, X={w['n_prompts']} ({w['n_sequences']} sequences), "
        f"n = {ns[0]}..{ns[-1]}, {results['replicates']} datasets per n; separable at the smallest n: "
        f"{results['separable_fraction'][0]:.3f}",
        f"{'method':>41} | {'slope':>7} | {'95% CI':^18} | {'mean at n_max':>13} | {'opt/stat at n_max':>17} | verdict",
    ]
    for name, entry in results["exact"].items():
        lines.append(f"{LABELS[name]:>41} | {_rate_cells(entry)} | {'':>17} | {verdict_word(entry['verdict'])}")
    for method, block in results["stochastic"].items():
        for budget, entry in block["budgets"].items():
            name, ok = f"{LABELS[method]}, m={budget}", verdict_word(entry["verdict"])
            lines.append(
                f"{name:>41} | {_rate_cells(entry)} | {entry['optimization_over_statistical'][-1]:17.3g} | {ok}"
            )
        lines.append(f"{'':>41}   rate appears at budget m = {block['rate_appears_at_budget']}")
    lines.append(
        column_legend(
            {
                "method": "estimator; exact ones solved by Newton or in closed form at beta = 0, stochastic ones "
                "trained by Adam from pi0 with m responses per prompt per step",
                "slope": "least-squares slope of log mean forward KL against log n (the theorems: -1)",
                "95% CI": "bootstrap interval of the slope over the replicate datasets",
                "mean at n_max": f"mean E_x KL(pi* || pi_hat) at n = {ns[-1]}, nats (DPO: KL to its population "
                "minimizer pi0·pi*/Z, as it is not consistent)",
                "opt/stat at n_max": "optimization error KL(pi_R̂ || pi_sgd) over statistical error "
                "KL(pi* || pi_R̂) at n_max (blank for the exact solvers)",
                "verdict": "pass when -1 lies in the 95% CI and the CI is narrow enough to tell 1/n from "
                "1/sqrt(n) (check_rate)",
            }
        )
    )
    note = _identical_rows_note(results)
    if note is not None:
        lines.append(note)
    lines.append(f"{results['steps']} steps, lr {results['lr_schedule']}; {results['seconds']:.1f} s")
    return "\n".join(lines)
