"""Strong base model (Thm 14): distillation on π0's responses, as π0 approaches π*.

Setting (finite classes, beta = 0), for reference mixes m from 1 (π0 independent of π*)
to 0 (π0 = π*), `World.random(reference_mix=m)`:

* R̂ = argmin over a finite reward class ℛ (R* and perturbations of it) of eq. 9 on n
  labelled pairs from mu;
* distillation (eq. 11) on n *unlabelled pairs drawn from π0*
  (`world.sample_pairs(policy=world.reference)`), soft labels σ(R̂(a) − R̂(b)):
  π̂ = argmin over Π, a class of π* and perturbations of it;
* baselines on the same R̂: distillation on n pairs from mu (Thm 6's setting), and π_R̂
  (RKL at beta = 0).

Two behaviour policies: `mu = pi0` (the labelled pairs also come from π0, the usual case of a
strong base model: C_ℛ improves with m too) and `mu fixed` (mu independent of π* and of m, so
only the distillation pairs move with π0: the C_0 of Thm 14 alone).

Decision: ℛ's members other than R* are *not* in Π (A5 dropped).  With 𝒫_γ(ℛ) ⊆ Π the
distillation loss, a sum of KL(Bern(p̃) ‖ Bern(p_π)) ≥ 0, is 0 at π_R̂, so π̂ = π_R̂ whatever
the pairs are and π0 could not matter.

Measured at every m: C_0 and C_ℛ (Def. 3, Thm 14), the forward KL E_x KL(π* ‖ π̂) (mean ± s.e.),
and E_{x, a∼π*}[(ΔR̄_π̂)²] against Thm 14's intermediate bound
8 e^{4γR}[C_0 ln(2|Π|/δ) + 2 C_ℛ ln(2|ℛ|/δ)]/n (corrected: 32 for 8, `synthalign.bounds`),
its (1 − δ)-quantile compared at every m.

What it finds (see the record): the bound holds and falls with C_0, but distillation's error on
π0's responses does not measurably fall as π0 → π* (with mu fixed it tends to rise): with soft
labels from R̂ there is no label noise, so the distillation step's only error is how the pairs
project π_R̂ onto Π, and weighting that projection by π0 ≈ π* copies R̂'s errors exactly where π*
has its mass.  π_R̂ itself improves when mu = π0 (the reward model's data cover π* better: C_ℛ
falls).
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch

import synthalign as sa
from synthalign.bounds import centred_reward, world_constants
from synthalign.estimators.finite_class import fit_over_class
from synthalign.experiments._common import CommonArgs, save_figure, write_record
from synthalign.metrics import average_over_prompts
from synthalign.stats import check_bound
from synthalign.worlds.classes import perturbation_class

NAME = "strong-base"
SETTINGS = ("mu=pi0", "mu fixed")
ESTIMATES = ("distill_pi0", "distill_mu", "pi_rhat")
LABELS = {
    "distill_pi0": "distillation on pi0's pairs (Thm 14)",
    "distill_mu": "distillation on mu's pairs (Thm 6)",
    "pi_rhat": "pi_R̂ (RKL, beta=0)",
}
COLORS = {"distill_pi0": "tab:orange", "distill_mu": "tab:gray", "pi_rhat": "tab:blue"}
_SIZES = {
    # size: (replicates, reference mixes, |Π|)
    "quick": (400, (1.0, 0.0), 512),
    "default": (400, (1.0, 0.75, 0.5, 0.25, 0.0), 1024),
    "full": (2000, (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0), 8192),
}


@dataclasses.dataclass
class Args(CommonArgs):
    """Options of the strong-base experiment (CommonArgs plus these)."""

    n_prompts: int = 3
    """|X|"""
    n_responses: int = 6
    """|A|"""
    gamma: float = 0.5
    """preference tilt"""
    logit_scale: float = 1.0
    """logit scale of pi*, pi0 and mu"""
    n: int = 1024
    """labelled pairs for R̂, and unlabelled pairs for distillation"""
    mixes: tuple[float, ...] | None = None
    """reference mixes m (pi0 = pi* at 0); None: by size"""
    class_size: int | None = None
    """|Π|; None: 512 quick, 1024 default, 8192 full (C_0 costs O(|Π|²))"""
    reward_class_size: int = 16
    """|ℛ|"""
    radius: tuple[float, float] = (0.05, 1.0)
    """members' per-prompt logit distance to pi*, drawn uniformly in this range"""
    delta: float = 0.1
    """compare the (1 - delta)-quantile with the bound"""
    plot: bool = True
    """write the PNG plot"""

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be a positive int, got {self.n!r}")
        if any(not 0 <= m <= 1 for m in self.reference_mixes) or not self.reference_mixes:
            raise ValueError(f"mixes must lie in [0, 1], got {self.reference_mixes!r}")
        if not isinstance(self.policy_class_size, int) or self.policy_class_size < 2:
            raise ValueError(f"class_size must be an int >= 2, got {self.class_size!r}")
        if not isinstance(self.reward_class_size, int) or self.reward_class_size < 2:
            raise ValueError(f"reward_class_size must be an int >= 2, got {self.reward_class_size!r}")
        self.radius = tuple(float(r) for r in self.radius)
        if len(self.radius) != 2 or not 0 <= self.radius[0] <= self.radius[1] or self.radius[1] <= 0:
            raise ValueError(f"radius must be (low, high) with 0 <= low <= high, high > 0, got {self.radius!r}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must lie in (0, 1), got {self.delta}")
        for name in ("gamma", "logit_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")

    @property
    def n_replicates(self) -> int:
        return self.replicates if self.replicates is not None else _SIZES[self.size][0]

    @property
    def reference_mixes(self) -> tuple[float, ...]:
        return tuple(float(m) for m in (self.mixes if self.mixes is not None else _SIZES[self.size][1]))

    @property
    def policy_class_size(self) -> int:
        return self.class_size if self.class_size is not None else _SIZES[self.size][2]


def make_world(args: Args, mix: float, setting: str) -> sa.World:
    # The seed fixes pi* and the noises: pi0 interpolates between pi* and an independent
    # policy; "mu fixed" draws mu independently of pi* (behavior_mix = 1), the same for every m.
    return sa.World.random(
        args.n_prompts,
        args.n_responses,
        gamma=args.gamma,
        logit_scale=args.logit_scale,
        reference_mix=mix,
        behavior_mix=None if setting == "mu=pi0" else 1.0,
        seed=args.seed,
        device=args.device,
    )


def reward_error(world: sa.World, logp: torch.Tensor) -> torch.Tensor:
    """E_{x∼D, a∼π*}[(R̄_π − R̄_π*)²] per policy (Thm 14's left side), R̄ centred with mu."""
    delta = centred_reward(logp, world.behavior.logp, world.gamma) - centred_reward(
        world.target.logp, world.behavior.logp, world.gamma
    )
    probs = world.target.probs
    per_prompt = torch.where(probs > 0, probs * delta.square(), torch.zeros_like(probs)).sum(dim=-1)
    return average_over_prompts(per_prompt, world.prompt_dist)


def _stats(values: torch.Tensor) -> dict:
    return {
        "mean": float(values.mean()),
        "se": float(values.std() / math.sqrt(values.numel())),
        "median": float(values.median()),
    }


def run(args: Args) -> dict:
    """Every setting and mix; writes strong-base.json and .png."""
    start = time.perf_counter()
    reference_world = make_world(args, 0.0, "mu=pi0")
    # ℛ and Π are drawn with different seeds, so no member of ℛ but R* lies in Π (A5 dropped).
    reward_members = perturbation_class(reference_world, args.reward_class_size, args.radius, seed=args.seed + 11)
    policy_class = perturbation_class(reference_world, args.policy_class_size, args.radius, seed=args.seed + 2)
    replicates, delta = args.n_replicates, args.delta
    results = {
        "n": args.n,
        "replicates": replicates,
        "mixes": list(args.reference_mixes),
        "delta": delta,
        "class_size": policy_class.size,
        "reward_class_size": reward_members.size,
        "settings": {},
    }
    for setting_index, setting in enumerate(SETTINGS):
        rows = []
        for mix_index, mix in enumerate(args.reference_mixes):
            world = make_world(args, mix, setting)
            seeds = np.random.SeedSequence([args.seed, setting_index, mix_index]).spawn(3)
            labelled = world.sample_preferences(args.n, replicates, seed=seeds[0])
            pairs_pi0 = world.sample_pairs(args.n, replicates, seed=seeds[1], policy=world.reference)
            pairs_mu = world.sample_pairs(args.n, replicates, seed=seeds[2])
            fits = {
                "distill_pi0": fit_over_class(
                    "distillation", pairs_pi0, policy_class, reward_class=reward_members, reward_data=labelled
                ),
                "distill_mu": fit_over_class(
                    "distillation", pairs_mu, policy_class, reward_class=reward_members, reward_data=labelled
                ),
            }
            policies = {name: fit.policy.logp for name, fit in fits.items()}
            policies["pi_rhat"] = reward_members.logp[fits["distill_pi0"].reward_index]
            constants = world_constants(
                world.target.logp,
                world.behavior.logp,
                world.reference.logp,
                world.prompt_dist,
                world.gamma,
                policy_class.logp,
                reward_members.logp,
                compute_c0=True,
            )
            row = {
                "mix": mix,
                "kl_target_reference": float(sa.forward_kl(world.target, world.reference)),
                "constants": dataclasses.asdict(constants),
                "bound_corrected": float(constants.bound("thm14", args.n, delta, corrected=True)),
                "bound_printed": float(constants.bound("thm14", args.n, delta, corrected=False)),
                "reward_exact": float(
                    (fits["distill_pi0"].reward_index == reward_members.target_index).double().mean()
                ),
            }
            for name, logp in policies.items():
                forward = sa.forward_kl(world.target, sa.Policy(logp, world.prompt_dist))
                squared = reward_error(world, logp)
                row[name] = {
                    "forward_kl": _stats(forward),
                    "reward_error": _stats(squared),
                    "reward_error_quantile": float(np.quantile(squared.cpu().numpy(), 1 - delta, method="higher")),
                }
                if name == "distill_pi0":
                    # Thm 14 bounds distillation on π0's pairs: its (1 − δ)-quantile at this n.
                    verdict = check_bound(
                        [args.n],
                        squared[None, :],
                        [row["bound_corrected"]],
                        delta=delta,
                        label=f"corrected Thm 14 intermediate bound at mix {mix:g}",
                    )
                    row["bound_verdict"] = verdict.to_dict()
            rows.append(row)
        worst = max(rows, key=lambda row: row["bound_verdict"]["worst_ratio"])
        verdict = {
            "passed": all(row["bound_verdict"]["passed"] for row in rows),
            "worst_ratio": worst["bound_verdict"]["worst_ratio"],
            "worst_mix": worst["mix"],
            "reason": "; ".join(row["bound_verdict"]["reason"] for row in rows),
        }
        first, last = rows[0], rows[-1]
        gains = {}
        for name in ESTIMATES:
            a, b = first[name]["forward_kl"], last[name]["forward_kl"]
            gains[name] = {"ratio": b["mean"] / a["mean"], "z": (a["mean"] - b["mean"]) / math.hypot(a["se"], b["se"])}
        results["settings"][setting] = {"rows": rows, "bound_verdict": verdict, "gain_first_to_last": gains}
    results["seconds"] = time.perf_counter() - start
    if args.plot:
        plot(results, args)
    write_record(args, NAME, results)
    return results


def plot(results: dict, args: Args) -> None:
    """strong-base.png: forward KL against C_0, one panel per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SETTINGS), figsize=(11, 4.2), squeeze=False)
    for ax, setting in zip(axes[0], SETTINGS, strict=True):
        rows = results["settings"][setting]["rows"]
        C0 = [row["constants"]["C_0"] for row in rows]
        for name in ESTIMATES:
            means = [row[name]["forward_kl"]["mean"] for row in rows]
            ses = [row[name]["forward_kl"]["se"] for row in rows]
            ax.errorbar(C0, means, yerr=ses, marker="o", ms=4, capsize=2, color=COLORS[name], label=LABELS[name])
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set(xlabel="C_0 (Thm 14; 1 at pi0 = pi*)", ylabel="mean E_x KL(pi* || pi_hat)")
        ax.set_title(f"{setting}: reference mix {rows[0]['mix']:g} -> {rows[-1]['mix']:g}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"n = {results['n']}, |Π| = {results['class_size']}, |ℛ| = {results['reward_class_size']}, "
        f"{results['replicates']} datasets",
        fontsize=10,
        y=1.02,
    )
    save_figure(fig, args, "strong-base.png")


def summary(results: dict) -> str:
    """Per setting and mix: constants, errors, and the bound check."""
    lines = [
        f"Strong base (Thm 14): n = {results['n']}, |Π| = {results['class_size']}, "
        f"|ℛ| = {results['reward_class_size']}, {results['replicates']} datasets; mean forward KL ± s.e."
    ]
    for setting, res in results["settings"].items():
        lines.append(f"[{setting}]")
        lines.append(
            f"{'mix':>5} {'C_0':>7} {'C_ℛ':>6} | "
            + " | ".join(f"{name:^17}" for name in ESTIMATES)
            + f" | {'q(ΔR̄²)':>8} {'Thm14 bd':>9}"
        )
        for row in res["rows"]:
            cells = " | ".join(
                f"{row[n]['forward_kl']['mean']:.4f} ± {row[n]['forward_kl']['se']:.4f}" for n in ESTIMATES
            )
            k = row["constants"]
            lines.append(
                f"{row['mix']:>5g} {k['C_0']:7.2f} {k['C_R']:6.2f} | {cells} | "
                f"{row['distill_pi0']['reward_error_quantile']:8.4f} {row['bound_corrected']:9.3g}"
            )
        gains = ", ".join(f"{n} x{g['ratio']:.2f} (z={g['z']:.1f})" for n, g in res["gain_first_to_last"].items())
        lines.append(f"   error at mix {res['rows'][-1]['mix']:g} / at mix {res['rows'][0]['mix']:g}: {gains}")
        v = res["bound_verdict"]
        lines.append(
            f"   Thm 14 (corrected) held at every mix: {v['passed']}; worst quantile/bound "
            f"{v['worst_ratio']:.3g} at mix {v['worst_mix']:g}"
        )
    lines.append(f"{results['seconds']:.1f} s")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line
