"""Gradient estimators: what REINFORCE and RLOO with k1/k2/k3 KL estimators follow, exactly (spec §6 item 14).

For RKL (eq. 15) and RLHF (eq. 1) with beta > 0 and the true reward R* = γ ln π*, on a tabular
world (`World.random`) and a sequence world (`SequenceWorld.random`, per-prefix logits), every
score-function estimator (REINFORCE, RLOO) × KL estimator (k1, k2, k3) × placement (in the loss,
in the reward), and the exact KL(π‖π0) on the table as the control.  The entropy term of eq. 15
is −γ ln π in the reward throughout (its correct placement).  Per row:

1. The exact expected gradient at a random point θ (π0's logits plus N(0, point_scale²) noise:
   at θ = π0 every KL gradient vanishes and the laws cannot be told apart), summed over the
   finite space (`gradient_check.gradient_law`): its relative error to the law the library
   declares for it, and its cosine and relative error to the true gradient of the objective.
2. The exact trace of the covariance of one step's gradient with m = `samples` draws per
   prompt.  REINFORCE averages m i.i.d. terms: tr Cov_a(u)/m (`exact_gradient_variance`).
   RLOO's is a U-statistic of order 2 with the symmetric kernel
       k(a, b) = −½ (r(a) − r(b)) (∇ln π(a) − ∇ln π(b)) + ½ (∇ℓ(a) + ∇ℓ(b)),
   so Var = 2/(m(m−1)) · [2(m−2) ζ1 + ζ2], ζ1 = tr Cov_a E_b k(a, b), ζ2 = tr Cov_{a,b} k(a, b)
   (Hoeffding), computed here over the enumerated pairs.  Both are checked against the
   sample covariance of `variance_draws` sampled gradients.
3. Training from π0 with `score_function_fit` (Adam, `steps` steps of `samples` draws per prompt,
   `replicates` independent runs): the final forward KL to the objective's optimum (the closed
   forms of spec §2: prior smoothing for RKL, π0·exp(R/β) for RLHF) and to π*, mean ± s.e.
"""

from __future__ import annotations

import dataclasses
import math
import time
from concurrent.futures import Executor

import numpy as np
import torch

import synthalign as sa
from synthalign.estimators.gradient_check import exact_gradient_variance, expected_gradient, gradient_law
from synthalign.estimators.onpolicy import (
    loss_terms,
    make_parametrization,
    sample_reward,
    sampled_score_function_gradients,
    score_function_fit,
)
from synthalign.experiments._common import (
    CommonArgs,
    OptionError,
    check_integer,
    check_positive,
    column_legend,
    derive_seed,
    new_figure,
    one_cpu_thread,
    random_world,
    save_figure,
    write_record,
)
from synthalign.experiments._grid import run_grid

__all__ = [
    "NAME",
    "OBJECTIVES",
    "WORLDS",
    "ESTIMATORS",
    "CONFIGS",
    "TRUE_LAW",
    "Args",
    "make_worlds",
    "evaluation_point",
    "optimum",
    "exact_variance",
    "row_seed",
    "measure_row",
    "run",
    "label",
    "plot",
    "summary",
]

NAME = "gradient-estimators"
OBJECTIVES = ("rkl", "rlhf")
WORLDS = ("tabular", "sequence")
ESTIMATORS = ("reinforce", "rloo")
CONFIGS = tuple(
    [(kind, placement) for kind in ("k1", "k2", "k3") for placement in ("reward", "loss")] + [("exact", "exact")]
)
"""(KL estimator, placement); ("exact", "exact") is KL(π‖π0) computed on the table, the control."""
TRUE_LAW = ("∇KL(π‖π0)", "∇(−H)")
_SIZES = {
    # size: (replicates, steps, variance_draws)
    "quick": (8, 70, 1000),
    "default": (32, 400, 20000),
    "full": (128, 1000, 100000),
}


@dataclasses.dataclass
class Args(CommonArgs):
    """Options of the gradient-estimators experiment (CommonArgs plus these)."""

    tabular_prompts: int = 3
    """|X| of the tabular world"""
    tabular_responses: int = 4
    """|A| of the tabular world"""
    vocab_size: int = 3
    """V of the sequence world (EOS included)"""
    max_length: int = 3
    """L of the sequence world"""
    sequence_prompts: int = 2
    """|X| of the sequence world"""
    gamma: float = 0.5
    """preference tilt of both worlds (the entropy coefficient of eq. 15)"""
    logit_scale: float = 1.0
    """logit scale of pi* and pi0 in both worlds"""
    beta: float = 0.5
    """weight of KL(pi ‖ pi0) in both objectives"""
    point_scale: float = 1.0
    """the exact gradients are taken at pi0's logits plus N(0, point_scale²) noise"""
    samples: int = 8
    """responses drawn per prompt per step (training and the variance)"""
    steps: int | None = None
    """Adam steps of each training run; None: 70 quick, 400 default, 1000 full"""
    lr: float = 0.05
    """Adam learning rate"""
    law_tol: float = 1e-10
    """relative error under which an expected gradient equals a candidate law"""
    variance_draws: int | None = None
    """sampled gradients per row for the empirical variance; None: 1000 quick, 20000 default, 1e5 full"""
    plot: bool = True
    """write the PNG plot"""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("tabular_prompts", "sequence_prompts", "max_length"):
            check_integer(name, getattr(self, name), 1)
        check_integer("tabular_responses", self.tabular_responses, 2)
        check_integer("vocab_size", self.vocab_size, 2)
        check_positive(self, "gamma", "logit_scale", "beta", "point_scale", "lr", "law_tol")
        check_integer("samples", self.samples, 2)  # RLOO needs two
        for name in ("steps", "variance_draws"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
                raise OptionError(name, f"{name} must be an integer >= 2 or None, got {value!r}")

    @property
    def n_replicates(self) -> int:
        return self.sized(self.replicates, _SIZES, 0)

    @property
    def n_steps(self) -> int:
        return self.sized(self.steps, _SIZES, 1)

    @property
    def n_draws(self) -> int:
        return self.sized(self.variance_draws, _SIZES, 2)


# ----------------------------------------------------------------------------- worlds and the point θ


def make_worlds(args: Args) -> dict[str, sa.World | sa.SequenceWorld]:
    """The tabular world and the sequence world, both with pi0 = mu independent of pi*."""
    tabular = random_world(args, n_prompts=args.tabular_prompts, n_responses=args.tabular_responses)
    sequence = sa.SequenceWorld.random(
        vocab_size=args.vocab_size,
        max_length=args.max_length,
        n_prompts=args.sequence_prompts,
        gamma=args.gamma,
        logit_scale=args.logit_scale,
        seed=args.seed,
        device=args.device,
    )
    return {"tabular": tabular, "sequence": sequence}


def evaluation_point(world: sa.World | sa.SequenceWorld, args: Args, seed: int) -> torch.Tensor:
    """π0's logits plus N(0, point_scale²) noise: a generic θ ≠ π0, where the KL laws differ."""
    base = world.reference if isinstance(world, sa.SequenceWorld) else world.reference.logp
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(base.shape, generator=generator, dtype=torch.float64) * args.point_scale
    return base + noise.to(device=base.device, dtype=base.dtype)


def optimum(world: sa.World | sa.SequenceWorld, objective: str, beta: float) -> sa.Policy:
    """The exact minimizer of eq. 15 / eq. 1 with R* over the (enumerated) responses (spec §2)."""
    tab = world.as_tabular() if isinstance(world, sa.SequenceWorld) else world
    if objective == "rkl":
        return sa.rkl_policy(tab.true_reward, tab.reference, tab.gamma, beta)
    return sa.rlhf_policy(tab.true_reward, tab.reference, beta)


# ----------------------------------------------------------------------------- exact variance


def exact_variance(
    world: sa.World | sa.SequenceWorld,
    logits: torch.Tensor,
    objective: str,
    *,
    beta: float,
    estimator: str,
    kl_estimator: str,
    kl_placement: str,
    samples: int,
) -> float:
    """tr Cov of one step's score-function gradient with `samples` draws per prompt, exactly.

    REINFORCE: tr Cov_a(u)/m with u(a) = −r(a)∇ln π(a) + ∇ℓ(a); RLOO: Hoeffding's variance of
    the order-2 U-statistic with the kernel of the module docstring.  Prompts are independent
    and weighed by D: the total is Σ_x D(x)² · (that of prompt x).  The "exact" placement adds a
    deterministic term, hence no variance.
    """
    tab = world.as_tabular() if isinstance(world, sa.SequenceWorld) else world
    entropy_coef = tab.gamma if objective == "rkl" else 0.0
    options = dict(entropy_coef=entropy_coef, beta=beta, kl_placement=kl_placement, entropy_placement="reward")
    ref, reward = tab.reference.logp, tab.true_reward.clamp_min(-1e3 * tab.gamma)
    base = logits.detach()
    table = make_parametrization(world, base).table()
    prob = table.exp()
    r = sample_reward(table, ref, reward, kl_kind=kl_estimator, **options)  # [X, N], detached

    def log_prob(theta: torch.Tensor) -> torch.Tensor:
        return make_parametrization(world, theta).table()

    def pathwise(theta: torch.Tensor) -> torch.Tensor:
        return loss_terms(make_parametrization(world, theta).table(), ref, kl_kind=kl_estimator, **options)

    score = torch.autograd.functional.jacobian(log_prob, base, vectorize=True).reshape(*prob.shape, -1)
    path = torch.autograd.functional.jacobian(pathwise, base, vectorize=True).reshape(*prob.shape, -1)
    support = (prob > 0).unsqueeze(-1)
    score, path = torch.where(support, score, 0.0), torch.where(support, path, 0.0)
    r = torch.where(prob > 0, r, 0.0)
    m = samples
    if estimator == "reinforce":
        u = -r.unsqueeze(-1) * score + path  # [X, N, |θ|]
        mean = (prob.unsqueeze(-1) * u).sum(dim=1, keepdim=True)
        per_prompt = (prob * (u - mean).square().sum(dim=-1)).sum(dim=1) / m
    else:
        # k(a, b) [X, N, N, |θ|]
        dr = r.unsqueeze(-1) - r.unsqueeze(-2)
        ds = score.unsqueeze(2) - score.unsqueeze(1)
        kernel = -0.5 * dr.unsqueeze(-1) * ds + 0.5 * (path.unsqueeze(2) + path.unsqueeze(1))
        pair = prob.unsqueeze(-1) * prob.unsqueeze(-2)  # [X, N, N]
        mean = (pair.unsqueeze(-1) * kernel).sum(dim=(1, 2))  # [X, |θ|]
        zeta2 = (pair * (kernel - mean[:, None, None]).square().sum(dim=-1)).sum(dim=(1, 2))
        conditional = (prob.unsqueeze(1).unsqueeze(-1) * kernel).sum(dim=2)  # E_b k(a, b), [X, N, |θ|]
        zeta1 = (prob * (conditional - mean[:, None]).square().sum(dim=-1)).sum(dim=1)
        per_prompt = 2.0 / (m * (m - 1)) * (2 * (m - 2) * zeta1 + zeta2)
    return float((tab.prompt_dist.square() * per_prompt).sum())


# ----------------------------------------------------------------------------- one row


def row_seed(args: Args, *parts: int) -> int:
    """The seed of one row (or world) of the sweep, derived from the master seed and the row's indices."""
    return derive_seed(args.seed, *parts)


def measure_row(
    world: sa.World | sa.SequenceWorld,
    point: torch.Tensor,
    objective: str,
    estimator: str,
    kind: str,
    placement: str,
    args: Args,
    seed: int,
) -> dict:
    """One work item: the declared law, exact and sampled variance, and training result of one row."""
    kl_kind = "k1" if kind == "exact" else kind
    kwargs = dict(beta=args.beta, estimator=estimator, kl_estimator=kl_kind, kl_placement=placement)
    law = gradient_law(world, point, objective, entropy_placement="reward", tol=args.law_tol, **kwargs)
    expected = expected_gradient(world, point, objective, entropy_placement="reward", **kwargs)
    variance = exact_variance(world, point, objective, samples=args.samples, **kwargs)
    library_variance = None
    if estimator == "reinforce" and placement != "exact":
        library_variance = float(
            exact_gradient_variance(
                world,
                point,
                objective,
                beta=args.beta,
                kl_estimator=kl_kind,
                kl_placement=placement,
                samples=args.samples,
            )
        )
    draws = sampled_score_function_gradients(
        world,
        point,
        objective,
        entropy_placement="reward",
        samples=args.samples,
        replicates=args.n_draws,
        seed=seed,
        **kwargs,
    )
    deviation = (draws - draws.mean(dim=0)).square().sum(dim=-1) * args.n_draws / (args.n_draws - 1)
    sampled_mean_error = float((draws.mean(dim=0) - expected).norm() / expected.norm())

    fitted = score_function_fit(
        world,
        objective,
        entropy_placement="reward",
        samples=args.samples,
        steps=args.n_steps,
        lr=args.lr,
        replicates=args.n_replicates,
        seed=seed + 1,
        **kwargs,
    )
    tab = world.as_tabular() if isinstance(world, sa.SequenceWorld) else world
    to_optimum = sa.forward_kl(optimum(world, objective, args.beta), fitted.policy)
    to_target = sa.forward_kl(tab.target, fitted.policy)
    sqrt_r = math.sqrt(args.n_replicates)
    return {
        "estimator": estimator,
        "kl_estimator": kind,
        "kl_placement": placement,
        "declared": list(law.declared),
        "matched": [list(m) for m in law.matched],
        "declared_relative_error": law.relative_errors[law.declared],
        "as_declared": law.as_declared,
        "cosine": law.true_cosine,
        "relative_error": law.true_relative_error,
        "expected_gradient_norm": float(expected.norm()),
        "variance": variance,
        "variance_per_sample": variance * args.samples,
        "library_variance": library_variance,
        "sampled_variance": float(deviation.mean()),
        "sampled_variance_se": float(deviation.std() / math.sqrt(args.n_draws)),
        "sampled_mean_relative_error": sampled_mean_error,
        "kl_to_optimum": to_optimum.tolist(),
        "kl_to_optimum_mean": float(to_optimum.mean()),
        "kl_to_optimum_se": float(to_optimum.std() / sqrt_r),
        "kl_to_target": to_target.tolist(),
        "kl_to_target_mean": float(to_target.mean()),
        "kl_to_target_se": float(to_target.std() / sqrt_r),
    }


# ----------------------------------------------------------------------------- experiment


def run(args: Args, *, executor: Executor | None = None) -> dict:
    """Every (world, objective, estimator, KL estimator, placement) row; writes the JSON and PNG.

    Each row is one work item of the sweep store (`synthalign.experiments._grid`): finished rows are
    kept in `<out>/store/` and reused by a rerun; `executor` runs them in parallel.
    """
    with one_cpu_thread(args.device):
        return _run(args, executor)


def _run(args: Args, executor: Executor | None = None) -> dict:
    start = time.perf_counter()
    results = {"replicates": args.n_replicates, "steps": args.n_steps, "samples": args.samples, "worlds": {}}
    worlds = make_worlds(args)
    points = {name: evaluation_point(w, args, seed=row_seed(args, i)) for i, (name, w) in enumerate(worlds.items())}
    items, labels = [], []
    for w_index, (world_name, world) in enumerate(worlds.items()):
        for o_index, objective in enumerate(OBJECTIVES):
            for e_index, estimator in enumerate(ESTIMATORS):
                for c_index, (kind, placement) in enumerate(CONFIGS):
                    seed = row_seed(args, w_index, o_index, e_index, c_index)
                    items.append((world, points[world_name], objective, estimator, kind, placement, args, seed))
                    labels.append(
                        {
                            "world": world_name,
                            "objective": objective,
                            "estimator": estimator,
                            "kl_estimator": kind,
                            "kl_placement": placement,
                        }
                    )
    measured = iter(run_grid(args, NAME, measure_row, items, labels, executor=executor))
    for world_name, world in worlds.items():
        point = points[world_name]
        tab = world.as_tabular() if isinstance(world, sa.SequenceWorld) else world
        entry = {
            "n_prompts": tab.n_prompts,
            "n_responses": tab.n_responses,
            "n_parameters": int(point.numel()),
            "kl_target_reference": float(sa.forward_kl(tab.target, tab.reference)),
            "objectives": {},
        }
        for objective in OBJECTIVES:
            best = optimum(world, objective, args.beta)
            rows = [next(measured) for _ in range(len(ESTIMATORS) * len(CONFIGS))]
            entry["objectives"][objective] = {
                "kl_target_optimum": float(sa.forward_kl(tab.target, best)),
                "kl_optimum_reference": float(sa.forward_kl(best, tab.reference)),
                "rows": rows,
            }
        results["worlds"][world_name] = entry
    all_rows = [row for w in results["worlds"].values() for o in w["objectives"].values() for row in o["rows"]]
    results["all_as_declared"] = all(row["as_declared"] for row in all_rows)
    results["worst_declared_relative_error"] = max(row["declared_relative_error"] for row in all_rows)
    results["seconds"] = time.perf_counter() - start
    if args.plot:
        plot(results, args)
    write_record(args, NAME, results)
    return results


def label(row: dict) -> str:
    """The row's name in the figure and the table: its score-function estimator, KL estimator and placement."""
    where = "exact KL" if row["kl_placement"] == "exact" else f"{row['kl_estimator']} in {row['kl_placement']}"
    return f"{row['estimator']}: {where}"


def plot(results: dict, args: Args) -> None:
    """gradient_estimators.png and .svg: final KL to the optimum per row (± s.e.), one panel per world × objective."""
    from matplotlib.patches import Patch

    fig, axes = new_figure(len(WORLDS), len(OBJECTIVES), figsize=(12, 8.4), squeeze=False)
    for i, world_name in enumerate(WORLDS):
        for j, objective in enumerate(OBJECTIVES):
            ax = axes[i][j]
            rows = results["worlds"][world_name]["objectives"][objective]["rows"]
            y = np.arange(len(rows))
            means = [row["kl_to_optimum_mean"] for row in rows]
            errors = [row["kl_to_optimum_se"] for row in rows]
            colors = ["tab:green" if row["cosine"] > 1 - 1e-9 else "tab:red" for row in rows]
            ax.barh(y, means, xerr=errors, color=colors, alpha=0.8)
            ax.set_yticks(y, [f"{label(row)} (cos {row['cosine']:.2f})" for row in rows], fontsize=7)
            ax.set_xscale("log")
            ax.invert_yaxis()
            ax.set_title(f"{world_name} world, {objective.upper()} (β = {args.beta:g})", fontsize=9)
            ax.set_xlabel(f"KL(optimum ‖ π) after {results['steps']} Adam steps (nats, log scale)", fontsize=8)
            ax.grid(True, axis="x", which="both", alpha=0.3)
    legend = [
        Patch(color="tab:green", alpha=0.8, label="expected gradient = true gradient (cosine 1)"),
        Patch(color="tab:red", alpha=0.8, label="expected gradient ≠ true gradient"),
    ]
    fig.legend(handles=legend, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(
        "Final distance to the objective's optimum per score-function estimator × KL estimator × placement\n"
        f"({results['samples']} samples per prompt per step; bars: mean ± s.e. over {results['replicates']} runs; "
        "cos: cosine of the exact expected gradient to the true one)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    save_figure(fig, args, "gradient_estimators.png")


def summary(results: dict) -> str:
    """One line per row: its declared law, cosine and relative error, variance, final KL ± s.e.; then the legend."""
    lines = [
        f"{results['samples']} samples per step, {results['steps']} Adam steps, {results['replicates']} runs; "
        f"every expected gradient equals its declared law: {results['all_as_declared']} "
        f"(worst relative error {results['worst_declared_relative_error']:.1e})"
    ]
    header = (
        f"{'row':>23} | {'declared law':>26} | {'cosine':>7} | {'rel.err':>7} | {'tr Cov (m)':>10} | "
        f"{'KL(opt‖pi) ± s.e.':>21} | {'KL(pi*‖pi) ± s.e.':>21}"
    )
    for world_name, entry in results["worlds"].items():
        for objective, block in entry["objectives"].items():
            lines += [
                f"{world_name} world ({entry['n_responses']} responses, {entry['n_parameters']} parameters), "
                f"{objective}: KL(pi* ‖ optimum) = {block['kl_target_optimum']:.4f}",
                header,
            ]
            for row in block["rows"]:
                lines.append(
                    f"{label(row):>23} | {row['declared'][0]:>26} | {row['cosine']:7.4f} | "
                    f"{row['relative_error']:7.3f} | {row['variance']:10.4g} | "
                    f"{row['kl_to_optimum_mean']:10.3g} ± {row['kl_to_optimum_se']:8.2g} | "
                    f"{row['kl_to_target_mean']:10.3g} ± {row['kl_to_target_se']:8.2g}"
                )
    runs = f"mean ± standard error over {results['replicates']} training runs from pi0, {results['steps']} Adam steps"
    lines.append(
        column_legend(
            {
                "row": "score-function estimator (REINFORCE, or RLOO's leave-one-out baseline): KL estimator "
                "k1 = -ln r, k2 = (ln r)^2/2 or k3 = r - 1 - ln r (r = pi0/pi), placed in the reward "
                "(score function) or in the loss (differentiated on fixed samples); exact KL: KL(pi‖pi0) on the table",
                "declared law": "the gradient the library declares this row's expectation to be (checked exactly)",
                "cosine": "cosine between the row's exact expected gradient and the true gradient of the objective "
                "(1: it follows the true gradient)",
                "rel.err": "|E[g] - true gradient| / |true gradient|, at the same random point",
                "tr Cov (m)": f"trace of the exact covariance of one step's gradient, m = {results['samples']} "
                "samples per prompt",
                "KL(opt‖pi) ± s.e.": f"KL(optimum ‖ trained policy) in nats, the optimum in closed form: {runs}",
                "KL(pi*‖pi) ± s.e.": "the same to pi* (the optimum is not pi* when beta > 0: see KL(pi* ‖ optimum))",
            }
        )
    )
    lines.append(
        "Identical entries are expected: a REINFORCE row and the RLOO row of the same KL estimator and placement "
        "share the declared law, cosine and rel.err, because RLOO's baseline has mean zero and changes only the "
        "variance; k1 in the reward, k2 in the loss and the exact KL share the law ∇KL(pi‖pi0); and REINFORCE "
        "with k1 in the reward and with k2 in the loss draw the same per-sample gradient ln(pi/pi0)·∇ln pi, "
        "hence the same tr Cov (their training runs draw independent samples)."
    )
    lines.append(f"{results['seconds']:.1f} s")
    return "\n".join(lines)
