"""Figure 1 of the paper (spec §5): RLHF with beta tuned per n saturates, RKL keeps falling.

Setting, with the spec's Decisions:

* the toy world `World.paper_toy(seed, logit_scale)`: |X| = |A| = 10, gamma = 0.5,
  logits of pi* and pi0 i.i.d. N(0, logit_scale²), D uniform, mu = pi0;
  logit scales 0.1 (the paper's, a weak signal) and 1.0;
* R̂ = tabular Bradley–Terry maximum likelihood (eq. 9) with a tiny ridge,
  the objective of `synthalign.fit_reward_model`;
* RLHF (eq. 1) and RKL (eq. 15) in closed form (spec §2):
  RLHF p ∝ pi0 · exp(R̂/beta), RKL p ∝ pi0^(beta/(beta+gamma)) · exp(R̂/(beta+gamma));
* beta chosen per n and per dataset by the oracle forward KL over a log grid
  (RKL's grid also holds beta = 0; RLHF needs beta > 0) — or, with
  `beta_choice="heldout"`, by the preference log-loss of the policy on held-out
  pairs (a fraction of each dataset's n pairs);
* many replicate datasets per n; the median and a quantile band are reported.

Two exact references are drawn with the curves:

* RLHF's population floor, min over beta of E_x KL(pi* ‖ pi0 · pi*^(gamma/beta) / Z)
  (spec §6.7: with R̂ = gamma ln pi* the RLHF optimum is pi0 · pi*^(gamma/beta)).
  t = gamma/beta ↦ that KL is convex (ln Z is convex in t, the rest is linear),
  so the floor is found by safeguarded Newton steps on its derivative, to machine precision;
* the asymptotic mean forward KL of unregularized RKL (beta = 0, i.e. pi_R̂),
  c / n with c = ½ Σ_x tr(F_x I_x⁺): I_x is the Bradley–Terry Fisher information
  of one pair in prompt x's logits and F_x = D(x)(diag pi* − pi* pi*ᵀ) the Hessian
  of the forward KL, both at the truth.  This is the 1/n rate of Thm 7.

Performance: datasets are counts and the policies are closed forms, so every
(beta, replicate, n) is one batched tensor program.  The Bradley–Terry fit
uses the loss's explicit gradient and Hessian (a graph Laplacian per prompt)
instead of the generic autograd Newton of `synthalign.fit`; it solves the same
objective (tests compare the two).
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch
from torch import Tensor

import synthalign as sa
from synthalign._types import ExecutorLike
from synthalign.experiments._common import (
    CommonArgs,
    band_stats,
    column_legend,
    new_figure,
    one_cpu_thread,
    save_figure,
    write_record,
)
from synthalign.experiments._grid import run_grid
from synthalign.theory.references import (
    closed_form_coefficients,
    closed_form_forward_kl,
    closed_form_logits,
    kl_target_reference,
    rkl_asymptotic_constant,
    rlhf_population_floor,
)

__all__ = ["NAME", "METHODS", "Args", "run_scale", "run", "plot", "summary"]

NAME = "fig1"
METHODS = ("rlhf", "rkl")
_SIZES = {
    # size: (largest log2 n, replicates, betas)
    "quick": (16, 40, 30),
    "default": (16, 100, 40),
    "full": (20, 400, 60),
}


@dataclasses.dataclass
class Args(CommonArgs):
    """Options of the Figure 1 experiment (CommonArgs plus these)."""

    log2_n_min: int = 5
    """smallest n is 2^log2_n_min (the paper: 5)"""
    log2_n_max: int | None = None
    """largest n is 2^log2_n_max; None: 16 (the paper), 20 with size 'full'"""
    logit_scales: tuple[float, ...] = (0.1, 1.0)
    """standard deviations of the logits of pi* and pi0 (the paper: 0.1)"""
    n_betas: int | None = None
    """size of the log-spaced beta grid; None: 30 quick, 40 default, 60 full"""
    beta_min: float = 1e-3
    """smallest positive beta of the grid"""
    beta_max: float = 1e3
    """largest beta of the grid (beta -> inf gives pi0)"""
    beta_choice: str = "oracle"
    """'oracle' (true forward KL, the spec's Decision) or 'heldout' (held-out preference log-loss)"""
    heldout_fraction: float = 0.2
    """with beta_choice='heldout': the fraction of each dataset's n pairs held out"""
    ridge_sum: float = 1e-2
    """ridge of the reward-model fit on the summed log-likelihood (Decision, spec §5; the `ridge` of
    sa.fit_reward_model): keeps R̂ finite on separable data, and its shrinkage vanishes as n grows"""
    reward_tol: float = 1e-9
    """gradient tolerance of the reward-model Newton solver"""
    band: tuple[float, float] = (0.1, 0.9)
    """quantiles of the band drawn around the median"""
    plot: bool = True
    """write the PNG plots"""

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.log2_n_min, int) or self.log2_n_min < 1:
            raise ValueError(f"log2_n_min must be a positive integer, got {self.log2_n_min!r}")
        top = self.log2_n_max if self.log2_n_max is not None else _SIZES[self.size][0]
        if not isinstance(top, int) or not self.log2_n_min < top <= 40:
            raise ValueError(f"log2_n_max must be an integer in ({self.log2_n_min}, 40], got {top!r}")
        self.logit_scales = tuple(float(s) for s in self.logit_scales)
        if not self.logit_scales or any(not (math.isfinite(s) and s > 0) for s in self.logit_scales):
            raise ValueError(f"logit_scales must be positive numbers, got {self.logit_scales!r}")
        if self.n_betas is not None and (not isinstance(self.n_betas, int) or self.n_betas < 30):
            raise ValueError(f"n_betas must be an integer >= 30 (the spec asks for a fine grid), got {self.n_betas!r}")
        if not 0 < self.beta_min < self.beta_max < math.inf:
            raise ValueError(f"need 0 < beta_min < beta_max < inf, got {self.beta_min}, {self.beta_max}")
        if self.beta_choice not in ("oracle", "heldout"):
            raise ValueError(f"beta_choice must be 'oracle' or 'heldout', got {self.beta_choice!r}")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must lie in (0, 1), got {self.heldout_fraction}")
        if not (math.isfinite(self.ridge_sum) and self.ridge_sum > 0):
            raise ValueError(f"ridge_sum must be > 0 (it keeps R̂ finite on separable data), got {self.ridge_sum}")
        if not 0 < self.band[0] < 0.5 < self.band[1] < 1:
            raise ValueError(f"band must be two quantiles around the median, got {self.band!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    @property
    def ns(self) -> list[int]:
        top = self.log2_n_max if self.log2_n_max is not None else _SIZES[self.size][0]
        return [2**k for k in range(self.log2_n_min, top + 1)]

    @property
    def n_replicates(self) -> int:
        return self.replicates if self.replicates is not None else _SIZES[self.size][1]

    @property
    def betas(self) -> list[float]:
        count = self.n_betas if self.n_betas is not None else _SIZES[self.size][2]
        return np.geomspace(self.beta_min, self.beta_max, count).tolist()


# ----------------------------------------------------------------------------- experiment


def _seed(*keys: int) -> int:
    """An independent integer seed for each (master seed, scale, n, stream)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def _heldout_loss(world: sa.World, heldout: Tensor, logp: Tensor) -> Tensor:
    """The PMLE pair loss (eq. 4, the preference log-loss) of each policy on held-out counts: [B, R]."""
    data = sa.PreferenceData(heldout, None, world)  # totals are per replicate, whatever its n
    return torch.stack([sa.empirical_loss("pmle", data, logp[b]) for b in range(logp.shape[0])])


def run_scale(args: Args, scale_index: int, scale: float) -> dict:
    """Every n, replicate and beta of one logit scale."""
    ns, replicates = args.ns, args.n_replicates
    world = sa.World.paper_toy(args.seed, logit_scale=scale, device=args.device)
    heldout = None
    if args.beta_choice == "oracle":
        train = [
            world.sample_preferences(n, replicates, seed=_seed(args.seed, scale_index, k, 0)) for k, n in enumerate(ns)
        ]
    else:
        held = [max(1, round(args.heldout_fraction * n)) for n in ns]
        if any(h >= n for h, n in zip(held, ns, strict=True)):
            raise ValueError(f"heldout_fraction={args.heldout_fraction} leaves no training pairs at n={ns[0]}")
        train = [
            world.sample_preferences(n - h, replicates, seed=_seed(args.seed, scale_index, k, 0))
            for k, (n, h) in enumerate(zip(ns, held, strict=True))
        ]
        heldout = torch.cat(
            [
                world.sample_preferences(h, replicates, seed=_seed(args.seed, scale_index, k, 1)).counts
                for k, h in enumerate(held)
            ]
        )
    # Every n in one batch [N·R, X, A, A]: the fit normalizes each replicate by its own total
    # count, and its ridge acts on the summed loss, so stacking changes nothing.
    stacked = sa.PreferenceData(torch.cat([data.counts for data in train]), None, world)
    fitted = sa.fit_reward_model(stacked, ridge=args.ridge_sum, tol=args.reward_tol)
    reward, grad_norm = fitted.reward, fitted.grad_norm

    betas = torch.tensor(args.betas, dtype=world.dtype, device=world.device)
    grids = {"rlhf": betas, "rkl": torch.cat([betas.new_zeros(1), betas])}
    result = {"reward_fit_max_grad": float(grad_norm.max())}
    for method in METHODS:
        grid = grids[method]
        ref_weight, reward_scale = closed_form_coefficients(method, grid, world.gamma)
        fkl = closed_form_forward_kl(world, reward, ref_weight, reward_scale)  # [B, N·R]
        if heldout is None:
            criterion = fkl
        else:
            logits = closed_form_logits(reward, world.reference.logp, ref_weight, reward_scale)
            criterion = _heldout_loss(world, heldout, torch.log_softmax(logits, dim=-1))
        choice = criterion.argmin(dim=0)
        chosen = fkl.gather(0, choice.unsqueeze(0)).squeeze(0).view(len(ns), replicates)
        chosen_beta = grid[choice].view(len(ns), replicates)
        stats = band_stats(chosen, args.band)
        stats["beta_median"] = chosen_beta.median(dim=-1).values.tolist()
        # How often the choice sits at an end of the grid (0 is a real value for RKL, not an edge).
        edge = (choice == grid.numel() - 1) | ((choice == 0) & (grid[0] > 0))
        stats["beta_at_grid_edge"] = edge.view(len(ns), replicates).to(world.dtype).mean(dim=-1).tolist()
        if method == "rkl":
            stats["beta0"] = band_stats(fkl[0].view(len(ns), replicates), args.band)
        result[method] = stats
    floor, floor_beta = rlhf_population_floor(world)
    constant = rkl_asymptotic_constant(world)
    result.update(
        {
            "rlhf_floor": floor,
            "rlhf_floor_beta": floor_beta,
            "kl_target_reference": kl_target_reference(world),
            "rkl_asymptotic_constant": constant,
            "rkl_asymptote": [constant / n for n in ns],
        }
    )
    return result


def run(args: Args, *, executor: ExecutorLike | None = None) -> dict:
    """Runs every logit scale, writes fig1.json and the plots, returns the results.

    Each logit scale is one work item of the sweep store (`synthalign.experiments._grid`): finished
    scales are kept in `<out>/store/` and reused by a rerun; `executor` runs them in parallel.
    """
    with one_cpu_thread(args.device):
        return _run(args, executor)


def _run(args: Args, executor=None) -> dict:
    start = time.perf_counter()
    results = {
        "n": args.ns,
        "replicates": args.n_replicates,
        "betas": args.betas,
        "beta_choice": args.beta_choice,
        "band": list(args.band),
        "scales": {},
    }
    items = [(args, scale_index, scale) for scale_index, scale in enumerate(args.logit_scales)]
    labels = [{"scale_index": scale_index, "scale": scale} for _, scale_index, scale in items]
    entries = run_grid(args, NAME, run_scale, items, labels, executor=executor)
    for (_, _, scale), entry in zip(items, entries, strict=True):
        results["scales"][str(scale)] = entry
    results["seconds"] = time.perf_counter() - start
    if args.plot:
        plot(results, args)
    write_record(args, NAME, results)
    return results


def plot(results: dict, args: Args) -> None:
    """fig1.png and fig1.svg: forward KL against n, both methods, every scale, with the exact floor and c/n."""
    from matplotlib import ticker

    ns = np.asarray(results["n"])
    scales = list(results["scales"])
    colors = {"rlhf": "tab:red", "rkl": "tab:blue"}
    labels = {"rlhf": "RLHF (eq. 1)", "rkl": "RKL (eq. 15)"}
    choice = "oracle β (true forward KL)" if results["beta_choice"] == "oracle" else "β by held-out log-loss"
    band = results["band"]
    fig, axes = new_figure(1, len(scales), figsize=(5.2 * len(scales), 4.6), squeeze=False)
    for ax, scale in zip(axes[0], scales, strict=True):
        res = results["scales"][scale]
        top = max(max(res[method]["high"]) for method in METHODS)
        for method in METHODS:
            stats = res[method]
            ax.plot(ns, stats["median"], "o-", ms=3, color=colors[method], label=f"{labels[method]}, median")
            ax.fill_between(
                ns,
                stats["low"],
                stats["high"],
                color=colors[method],
                alpha=0.2,
                lw=0,
                label=f"{labels[method]}, {band[0]:.0%}–{band[1]:.0%} of datasets",
            )
        ax.axhline(res["rlhf_floor"], color=colors["rlhf"], ls="--", lw=1, label="RLHF population floor (exact)")
        ax.axhline(res["kl_target_reference"], color="0.5", ls="-.", lw=1, label="KL(π* ‖ π0): π0 itself (β → ∞)")
        asymptote = np.asarray(res["rkl_asymptote"])
        shown = asymptote <= 1.5 * top
        ax.plot(ns[shown], asymptote[shown], ":", color=colors["rkl"], lw=1.2, label="RKL at β = 0: c/n (asymptotic)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        # Plain-text tick labels: matplotlib's default log labels go through mathtext, slow to set up.
        ax.xaxis.set_major_locator(ticker.FixedLocator(ns[::2]))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"2^{math.log2(value):.0f}"))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        for which in ("major", "minor"):
            formatter = ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5))
            getattr(ax.yaxis, f"set_{which}_formatter")(formatter)
        ax.set_xlabel("n (preference pairs per dataset)")
        ax.set_ylabel("forward KL  E_x KL(π* ‖ π̂)  (nats)")
        ax.set_title(f"logit scale {scale} (logits of π*, π0 ~ N(0, {scale}²))", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    handles, legend_labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, legend_labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(
        f"Figure 1: forward KL of RLHF and RKL against n, {choice} per dataset;\n"
        f"median and {band[0]:.0%}–{band[1]:.0%} band over {results['replicates']} datasets per n",
        fontsize=11,
    )
    fig.subplots_adjust(left=0.08, right=0.98, top=0.84, bottom=0.24, wspace=0.22)
    save_figure(fig, args, "fig1.png")


def summary(results: dict) -> str:
    """A table of medians and bands per scale and n, its column legend, then the exact references."""
    low, high = results["band"]
    replicates = results["replicates"]
    lines = [
        f"Figure 1: E_x KL(pi* || pi_hat), median [{low:.0%}, {high:.0%}] over {replicates} datasets; "
        f"beta by {results['beta_choice']} choice over {len(results['betas'])} values (RKL also beta=0)",
        f"{'scale':>5} {'n':>7} | {'RLHF':^28} | {'RKL':^28} | {'RKL c/n':>9}",
    ]
    for scale, res in results["scales"].items():
        for k, n in enumerate(results["n"]):
            cells = []
            for method in METHODS:
                stats = res[method]
                cells.append(f"{stats['median'][k]:9.3g} [{stats['low'][k]:7.3g}, {stats['high'][k]:7.3g}]")
            lines.append(f"{scale:>5} {n:>7} | {cells[0]:^28} | {cells[1]:^28} | {res['rkl_asymptote'][k]:9.3g}")
    criterion = "the true forward KL (oracle)" if results["beta_choice"] == "oracle" else "the held-out log-loss"
    lines.append(
        column_legend(
            {
                "scale": "standard deviation of the logits of pi* and pi0 (toy world: |X| = |A| = 10, gamma = 0.5)",
                "n": "preference pairs per dataset",
                "RLHF": f"forward KL E_x KL(pi* || pi_hat) of RLHF (eq. 1) in nats, beta chosen per dataset by "
                f"{criterion}: median [{low:.0%}, {high:.0%} quantiles] over {replicates} datasets",
                "RKL": "the same for RKL (eq. 15), whose beta grid also holds beta = 0",
                "RKL c/n": "asymptotic mean forward KL of RKL at beta = 0, c/n with c = 1/2 sum_x tr(F_x I_x^+) "
                "(Fisher information at the truth): tuned RKL stays under it at small n and meets it as n grows",
            }
        )
    )
    for scale, res in results["scales"].items():
        beta = res["rlhf_floor_beta"]
        lines.append(
            f"scale {scale}: RLHF population floor {res['rlhf_floor']:.4g} at beta = {beta:.4g}; "
            f"KL(pi* || pi0) = {res['kl_target_reference']:.4g}; "
            f"RKL beta=0 asymptote {res['rkl_asymptotic_constant']:.4g}/n"
        )
    return "\n".join(lines)
