"""The conformance checks of an objective's loss, one function per check, each (objective, options) -> CheckResult.

Values, gradients, weights, symmetries and sampling: checks that evaluate the loss and never fit it.
The checks that fit the objective (closed form, population minimizer, degeneracy) are
`synthalign.testing.minimizer_checks`'; `synthalign.testing.checks` names them all and runs them, and
the module docstring of `synthalign.testing` says what each checks.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from synthalign.evaluate import (
    cell_values,
    empirical_loss,
    make_context,
    pair_inputs,
    population_loss,
    prompt_inputs,
    prompt_values,
)
from synthalign.metrics import kl_per_prompt
from synthalign.registry.protocol import Objective
from synthalign.testing.report import CheckOptions, CheckResult
from synthalign.testing.strategies import EXTREME_GAMMAS, EXTREME_LOGIT
from synthalign.worlds.datasets import PairData, PreferenceData, counts_to_list
from synthalign.worlds.preferences import population_pairs, population_preferences
from synthalign.worlds.tabular import World

__all__ = [
    "CONSISTENCY_TOL",
    "SUM_RTOL",
    "OP_RTOL",
    "check_finite_extreme",
    "check_zero_probability",
    "check_gradcheck",
    "check_gradgradcheck",
    "check_weight_consistency",
    "check_pair_order_invariance",
    "swap_not_applicable",
    "check_pair_swap_symmetry",
    "check_elementwise",
    "check_exact_vs_sampled",
]

# Forward KL below which a fitted policy counts as equal to another (pi*, or a declared minimizer).
# Newton stops at a gradient of 1e-10; the distance left is of order |grad|²/curvature ~ 1e-20
# for curvatures above 1e-6, so 1e-8 separates "equal" from "different" with room on both sides.
CONSISTENCY_TOL = 1e-8
# Float64 sums of at most ~10^3 terms differ by at most ~10^3 · 2.2e-16 ≈ 2e-13 relatively whatever
# their order; 1e-10 is a comfortable bound for values that must agree exactly in exact arithmetic.
SUM_RTOL = 1e-10
# A few float64 operations on the same numbers, in another order: rounding of order 1e-15.
OP_RTOL = 1e-12


def _generator(opts: CheckOptions, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(opts.seed * 1000 + salt)


def _random_logp(generator: torch.Generator, *shape: int, scale: float = 1.0) -> Tensor:
    logits = scale * torch.randn(*shape, generator=generator, dtype=torch.float64)
    return torch.log_softmax(logits, dim=-1)


def _reward(obj: Objective, opts: CheckOptions, world: World) -> Tensor | None:
    if not obj.needs_reward:
        return None
    if opts.reward is not None:
        return torch.as_tensor(opts.reward, dtype=world.dtype)
    return world.true_reward


def _loss_kwargs(obj: Objective, opts: CheckOptions, reward: Tensor | None) -> dict:
    kwargs = dict(opts.params)
    if obj.needs_reward:
        kwargs["reward"] = reward
    return kwargs


def _population_data(obj: Objective, world: World):
    return population_pairs(world) if obj.data == "pairs" else population_preferences(world)


def _sample(obj: Objective, world: World, n: int, replicates: int, seed: int):
    if obj.data == "pairs":
        return world.sample_pairs(n, replicates, seed=seed)
    return world.sample_preferences(n, replicates, seed=seed)


def _direct_values(
    obj: Objective,
    opts: CheckOptions,
    world: World,
    logp: Tensor,
    reward: Tensor | None,
    prompt: Tensor,
    first: Tensor | None = None,
    second: Tensor | None = None,
) -> Tensor:
    """The objective's own fn on explicit items, without the cell machinery: per pair (prompt, first, second),
    or per prompt for a prompt objective, plus beta KL(pi(x) ‖ pi0(x)) of the item's prompt (computed here
    independently of `synthalign.evaluate.prompt_values`).  Shape of `prompt`."""
    ref = world.reference.logp

    def items(table: Tensor | None):
        if table is None:
            return None
        return (table[prompt, first], table[prompt, second]) if obj.kind == "pair" else table[prompt]

    if obj.kind == "pair":
        inputs = pair_inputs(obj, items(logp), reference=items(ref), reward=items(reward), gamma=world.gamma)
    else:
        inputs = prompt_inputs(obj, items(logp), reference=items(ref), reward=items(reward), gamma=world.gamma)
    values = torch.broadcast_to(obj.fn(**inputs, **opts.params), prompt.shape)
    if opts.beta > 0:
        # Written out here on purpose, not taken from `evaluate.kl_regularizer`: `check_weight_consistency`
        # compares these values with `empirical_loss` and `population_loss`, which add evaluate's.
        values = values + opts.beta * kl_per_prompt(logp, ref)[prompt]
    return values


def _max_rel_diff(a: Tensor, b: Tensor) -> float:
    """max |a − b| / max(1, |a|, |b|) with equal infinities counted as equal."""
    a, b = torch.broadcast_tensors(a.detach(), b.detach())
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))
    scale = torch.maximum(torch.ones_like(a), torch.maximum(a.abs(), b.abs()))
    diff = torch.where(same, torch.zeros_like(a), (a - b).abs() / scale)
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
    return float(diff.max()) if diff.numel() else 0.0


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def check_finite_extreme(obj: Objective, opts: CheckOptions) -> CheckResult:
    problems, evaluated = [], 0
    generator = _generator(opts, 1)
    X, A = 2, 4
    for gamma in EXTREME_GAMMAS:

        def extreme() -> Tensor:
            return (2 * torch.rand(X, A, generator=generator, dtype=torch.float64) - 1) * EXTREME_LOGIT

        world = World.from_tensors(
            target=extreme(),
            reference=extreme(),
            behavior=torch.randn(X, A, generator=generator, dtype=torch.float64),
            gamma=gamma,
            kind="logits",
        )
        reward = gamma * world.target.logp if obj.needs_reward else None
        theta = extreme().requires_grad_(True)
        datasets = {"population": _population_data(obj, world), "sampled": _sample(obj, world, 64, 2, opts.seed)}
        for label, data in datasets.items():
            where = f"gamma={gamma:g}, {label}"
            logp = torch.log_softmax(theta, dim=-1)
            loss = empirical_loss(obj, data, logp, beta=opts.beta, **_loss_kwargs(obj, opts, reward))
            evaluated += 1
            if not torch.isfinite(loss).all():
                problems.append(f"{where}: loss = {loss.detach().tolist()}")
                continue
            (grad,) = torch.autograd.grad(loss.sum(), theta)
            if not torch.isfinite(grad).all():
                problems.append(f"{where}: gradient has {int((~torch.isfinite(grad)).sum())} non-finite entries")
        # Every cell, including those the data gives weight 0 (the framework masks those).
        ctx = make_context(obj, world, reward, obj.resolve_params(opts.params))
        with torch.no_grad():
            logp = torch.log_softmax(theta, dim=-1)
            values = cell_values(obj, logp, ctx, None) if obj.kind == "pair" else prompt_values(obj, logp, ctx, 0.0)
        if not torch.isfinite(values).all():
            problems.append(f"gamma={gamma:g}: {int((~torch.isfinite(values)).sum())} non-finite per-cell values")
    detail = (
        f"value and gradient finite on {evaluated} losses at logits in ±{EXTREME_LOGIT:g}, gamma in {EXTREME_GAMMAS}"
        if not problems
        else "; ".join(problems[:4])
    )
    return CheckResult("finite_extreme", not problems, detail, {"problems": len(problems)})


def check_zero_probability(obj: Objective, opts: CheckOptions) -> CheckResult:
    """NaN-freedom with exactly-zero probabilities: a value may be +inf where the math says so
    (e.g. pi puts no mass on an observed chosen response) and an input the objective cannot
    evaluate may be refused with ValueError, but a value is never NaN, and a finite value has a
    NaN-free gradient."""
    problems, scenarios, rejected = [], 0, 0
    generator = _generator(opts, 2)
    X, A = 3, 4
    for gamma in EXTREME_GAMMAS:
        # Responses 0 and 1 of every prompt: pi gives them probability 0; mu never proposes them.
        unobserved = torch.zeros(X, A, dtype=torch.bool)
        unobserved[:, :2] = True
        behavior = torch.randn(X, A, generator=generator, dtype=torch.float64).masked_fill(unobserved, -math.inf)
        world = World.from_tensors(
            target=torch.randn(X, A, generator=generator, dtype=torch.float64),
            reference=torch.randn(X, A, generator=generator, dtype=torch.float64),
            behavior=behavior,
            gamma=gamma,
            kind="logits",
        )
        theta = torch.randn(X, A, generator=generator, dtype=torch.float64)
        reward = world.true_reward if obj.needs_reward else None  # finite: this pi* has full support
        cases = [("pi zero where mu is zero", world, theta, unobserved, reward)]
        # pi* with zeros: then R* = gamma ln pi* is -inf there (the default reward of population losses).
        target_zero = torch.zeros(X, A, dtype=torch.bool)
        target_zero[:, -1] = True
        zero_world = World.from_tensors(
            target=torch.randn(X, A, generator=generator, dtype=torch.float64).masked_fill(target_zero, -math.inf),
            reference=torch.randn(X, A, generator=generator, dtype=torch.float64),
            behavior=torch.randn(X, A, generator=generator, dtype=torch.float64),
            gamma=gamma,
            kind="logits",
        )
        zero_reward = zero_world.true_reward if obj.needs_reward else None
        cases.append(("pi* zero, R* = gamma ln pi*", zero_world, theta, torch.zeros_like(target_zero), zero_reward))
        cases.append(
            ("pi = pi* with zeros", zero_world, zero_world.target.logp.clamp_min(-1e300), target_zero, zero_reward)
        )
        # pi0 with zeros on responses mu proposes (the data covers them): the log-ratios ln(pi/pi0) of the
        # DPO family are -inf - (-inf) there unless formed per response first.
        ref_zero = torch.zeros(X, A, dtype=torch.bool)
        ref_zero[:, 0] = True
        ref_world = World.from_tensors(
            target=torch.randn(X, A, generator=generator, dtype=torch.float64),
            reference=torch.randn(X, A, generator=generator, dtype=torch.float64).masked_fill(ref_zero, -math.inf),
            behavior=torch.randn(X, A, generator=generator, dtype=torch.float64),
            gamma=gamma,
            kind="logits",
        )
        ref_reward = ref_world.true_reward if obj.needs_reward else None
        cases.append(("pi0 zero where mu is not, pi zero there", ref_world, theta, ref_zero, ref_reward))
        cases.append(("pi = pi0 with zeros where mu is not", ref_world, ref_world.reference.logp, ref_zero, ref_reward))
        for label, w, start, mask, reward in cases:
            theta_leaf = start.clone().requires_grad_(True)
            datasets = {"population": _population_data(obj, w), "sampled": _sample(obj, w, 64, 2, opts.seed)}
            for data_label, data in datasets.items():
                scenarios += 1
                where = f"gamma={gamma:g}, {label}, {data_label}"
                logp = torch.log_softmax(theta_leaf.masked_fill(mask, -math.inf), dim=-1)
                try:
                    loss = empirical_loss(obj, data, logp, beta=opts.beta, **_loss_kwargs(obj, opts, reward))
                except ValueError:
                    rejected += 1  # refusing an input it cannot evaluate, with a ValueError, is allowed
                    continue
                if torch.isnan(loss).any():
                    problems.append(f"{where}: loss is NaN")
                    continue
                if not torch.isfinite(loss).all():
                    if label.startswith("pi = pi0") and obj.needs_reference:
                        # pi = pi0: every ln(pi/pi0) is 0 (0/0 read as 1), so the loss is the finite one of h = 0.
                        problems.append(f"{where}: loss {loss.detach().tolist()} at pi = pi0, expected finite")
                    continue
                (grad,) = torch.autograd.grad(loss.sum(), theta_leaf)
                if torch.isnan(grad).any():
                    problems.append(f"{where}: finite loss {_fmt(float(loss.sum()))} but NaN gradient")
    detail = (
        f"no NaN in {scenarios} losses with zero-probability responses"
        + (f" ({rejected} refused with ValueError)" if rejected else "")
        + "; finite values have NaN-free gradients"
        if not problems
        else "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
    )
    return CheckResult("zero_probability", not problems, detail, {"problems": len(problems)})


def _gradient_functions(obj: Objective, opts: CheckOptions):
    world = opts.check_world()
    reward = _reward(obj, opts, world)
    kwargs = _loss_kwargs(obj, opts, reward)
    data = _sample(obj, world, 40, 2, opts.seed)

    def population(theta):
        return population_loss(obj, world, torch.log_softmax(theta, dim=-1), beta=opts.beta, **kwargs)

    def empirical(theta):
        return empirical_loss(obj, data, torch.log_softmax(theta, dim=-1), beta=opts.beta, **kwargs)

    theta = torch.randn(world.n_prompts, world.n_responses, generator=_generator(opts, 3), dtype=torch.float64)
    return {"population": population, "empirical": empirical}, theta.requires_grad_(True)


def _run_gradcheck(name: str, obj: Objective, opts: CheckOptions, checker) -> CheckResult:
    functions, theta = _gradient_functions(obj, opts)
    problems = []
    for label, fn in functions.items():
        try:
            checker(fn, (theta,), raise_exception=True)
        except Exception as err:  # GradcheckError, or an error raised inside the objective
            message = str(err).strip().splitlines()
            problems.append(f"{label} loss: {type(err).__name__}: {' '.join(message[:3])[:300]}")
    what = "first" if name == "gradcheck" else "second"
    detail = (
        f"autograd {what} derivatives match finite differences (float64) for the population and empirical loss"
        if not problems
        else "; ".join(problems)
    )
    return CheckResult(name, not problems, detail)


def check_gradcheck(obj: Objective, opts: CheckOptions) -> CheckResult:
    return _run_gradcheck("gradcheck", obj, opts, torch.autograd.gradcheck)


def check_gradgradcheck(obj: Objective, opts: CheckOptions) -> CheckResult:
    return _run_gradcheck("gradgradcheck", obj, opts, torch.autograd.gradgradcheck)


def check_weight_consistency(obj: Objective, opts: CheckOptions) -> CheckResult:
    world = opts.check_world()
    reward = _reward(obj, opts, world)
    kwargs = _loss_kwargs(obj, opts, reward)
    logp = _random_logp(_generator(opts, 4), world.n_prompts, world.n_responses)
    data = _sample(obj, world, 40, 3, opts.seed)
    pairs = data.to_list(seed=opts.seed) if isinstance(data, PreferenceData) else _pair_list(data, opts.seed)
    from_counts = empirical_loss(obj, data, logp, beta=opts.beta, **kwargs)
    explicit = _direct_values(obj, opts, world, logp, reward, pairs.prompt, pairs.chosen, pairs.rejected).mean(-1)
    repeats = 3
    repeated_counts = type(data)(data.counts * repeats, data.n_pairs * repeats, world)
    from_repeated_counts = empirical_loss(obj, repeated_counts, logp, beta=opts.beta, **kwargs)
    tiled = [index.repeat(1, repeats) for index in (pairs.prompt, pairs.chosen, pairs.rejected)]
    repeated_explicit = _direct_values(obj, opts, world, logp, reward, *tiled).mean(-1)

    law = _population_data(obj, world).counts[0]
    cells = torch.nonzero(law > 0, as_tuple=True)
    cell_values = _direct_values(obj, opts, world, logp, reward, *cells)
    direct_population = (law[cells] * cell_values).sum() / law.sum()
    exact = population_loss(obj, world, logp, beta=opts.beta, **kwargs)

    gaps = {
        "counts vs explicit pairs": _max_rel_diff(from_counts, explicit),
        "counts x3 vs explicit pairs repeated 3 times": _max_rel_diff(from_repeated_counts, repeated_explicit),
        "counts vs counts x3": _max_rel_diff(from_counts, from_repeated_counts),
        "population loss vs law-weighted fn": _max_rel_diff(exact, direct_population),
    }
    bad = {k: v for k, v in gaps.items() if not v <= SUM_RTOL}
    if bad:
        detail = "; ".join(f"{k}: relative gap {_fmt(v)} (> {SUM_RTOL:g})" for k, v in bad.items())
    else:
        detail = f"4 ways of weighting agree to relative {_fmt(max(gaps.values()))} (<= {SUM_RTOL:g})"
    return CheckResult("weight_consistency", not bad, detail, gaps)


def _pair_list(data: PairData, seed: int):
    return counts_to_list(data, seed=seed)


def check_pair_order_invariance(obj: Objective, opts: CheckOptions) -> CheckResult:
    world = opts.check_world()
    reward = _reward(obj, opts, world)
    logp = _random_logp(_generator(opts, 5), world.n_prompts, world.n_responses)
    data = _sample(obj, world, 40, 3, opts.seed)
    pairs = data.to_list(seed=opts.seed) if isinstance(data, PreferenceData) else _pair_list(data, opts.seed)
    index = (pairs.prompt, pairs.chosen, pairs.rejected)
    generator = _generator(opts, 6)
    order = torch.argsort(torch.rand(pairs.prompt.shape, generator=generator, dtype=torch.float64), dim=-1)
    permuted = tuple(torch.gather(i, 1, order) for i in index)
    values = _direct_values(obj, opts, world, logp, reward, *index)
    values_permuted = _direct_values(obj, opts, world, logp, reward, *permuted)
    per_pair_gap = _max_rel_diff(torch.gather(values, 1, order), values_permuted)
    mean_gap = _max_rel_diff(values.mean(-1), values_permuted.mean(-1))
    gaps = {"per-pair losses": per_pair_gap, "mean loss": mean_gap}
    passed = per_pair_gap <= OP_RTOL and mean_gap <= SUM_RTOL
    detail = (
        f"permuting {pairs.n_pairs} pairs permutes their losses (gap {_fmt(per_pair_gap)}) "
        f"and keeps the mean (gap {_fmt(mean_gap)})"
    )
    if not passed:
        detail = "NOT invariant: " + detail + f"; tolerances {OP_RTOL:g} per pair, {SUM_RTOL:g} for the mean"
    return CheckResult("pair_order_invariance", passed, detail, gaps)


def _swap_form(obj: Objective, opts: CheckOptions) -> str | None:
    if obj.kind == "prompt":
        return None
    if opts.swap_symmetry == "auto":
        if obj.swap_symmetry is not None:
            return obj.swap_symmetry
        return "loss" if obj.data == "pairs" else None
    return opts.swap_symmetry


def swap_not_applicable(obj: Objective, opts: CheckOptions) -> str | None:
    if obj.kind == "prompt":
        return "a prompt objective takes no pairs"
    if _swap_form(obj, opts) is None:
        return "labelled pairs without a declared form (pass swap_symmetry='likelihood' or 'loss')"
    return None


def check_pair_swap_symmetry(obj: Objective, opts: CheckOptions) -> CheckResult:
    reason = swap_not_applicable(obj, opts)
    if reason:
        return CheckResult("pair_swap_symmetry", None, reason)
    form = _swap_form(obj, opts)
    world = opts.check_world()
    reward = _reward(obj, opts, world)
    logp = _random_logp(_generator(opts, 7), world.n_prompts, world.n_responses, scale=2.0)
    X, A = world.n_prompts, world.n_responses
    prompt, first, second = torch.meshgrid(torch.arange(X), torch.arange(A), torch.arange(A), indexing="ij")
    # The framework adds beta KL(pi ‖ pi0) per prompt, not per pair: compare the pair loss alone.
    pair_only = dataclasses.replace(opts, beta=0.0)
    cell = _direct_values(obj, pair_only, world, logp, reward, prompt, first, second)
    swapped = cell.transpose(-1, -2)
    if form == "loss":
        gap = _max_rel_diff(cell, swapped)
        what = "l(a, b) = l(b, a)"
    else:
        total = torch.logaddexp(-cell, -swapped)  # ln[P(a ≻ b) + P(b ≻ a)], 0 for a likelihood
        gap = float(total.abs().max())
        what = "exp(-l(a, b)) + exp(-l(b, a)) = 1"
    passed = gap <= OP_RTOL
    detail = f"{form} form, {what}: largest deviation {_fmt(gap)} over {cell.numel()} cells (tolerance {OP_RTOL:g})"
    return CheckResult("pair_swap_symmetry", passed, detail, {"form": form, "deviation": gap})


def check_elementwise(obj: Objective, opts: CheckOptions) -> CheckResult:
    world = opts.check_world()
    reward = _reward(obj, opts, world)
    ctx = make_context(obj, world, reward, obj.resolve_params(opts.params))
    B, X, A = 2, world.n_prompts, world.n_responses
    logp = _random_logp(_generator(opts, 8), B, X, A)
    delta = 0.25
    leaks = []
    with torch.no_grad():
        if obj.kind == "pair":
            # Full-cell copies of the two log-probability arguments, as the Newton solver passes them.
            first = logp.unsqueeze(-1).expand(B, X, A, A).clone()
            second = logp.unsqueeze(-2).expand(B, X, A, A).clone()
            base = cell_values(obj, logp, ctx, None, first=first, second=second)
            if base.shape != first.shape:
                return CheckResult(
                    "elementwise", False, f"fn returned shape {tuple(base.shape)} for {tuple(first.shape)} cells"
                )
            for argument, tensor in (("logp_chosen", first), ("logp_rejected", second)):
                for cell in range(tensor.numel()):
                    moved = tensor.clone()
                    moved.view(-1)[cell] -= delta
                    args = (
                        {"first": moved, "second": second}
                        if argument == "logp_chosen"
                        else {"first": first, "second": moved}
                    )
                    out = cell_values(obj, logp, ctx, None, **args)
                    changed = torch.broadcast_to(out != base, base.shape).clone()
                    changed.view(-1)[cell] = False
                    if changed.any():
                        leaks.append(f"{argument} of cell {cell} changed {int(changed.sum())} other cells")
            unit, count = "cells", 2 * first.numel()
        else:
            base = prompt_values(obj, logp, ctx, 0.0)
            if base.shape != logp.shape[:-1]:
                return CheckResult(
                    "elementwise", False, f"fn returned shape {tuple(base.shape)} for {tuple(logp.shape[:-1])} prompts"
                )
            for b in range(B):
                for x in range(X):
                    moved = logp.clone()
                    moved[b, x] = torch.log_softmax(moved[b, x] + delta * torch.arange(A, dtype=logp.dtype), -1)
                    changed = torch.broadcast_to(prompt_values(obj, moved, ctx, 0.0) != base, base.shape).clone()
                    changed[b, x] = False
                    if changed.any():
                        leaks.append(f"prompt {x} of replicate {b} changed {int(changed.sum())} other prompts")
            unit, count = "prompts", B * X
    if leaks:
        detail = f"{len(leaks)} of {count} perturbations leak (the solver needs separable losses): " + "; ".join(
            leaks[:2]
        )
    else:
        detail = f"perturbing each of {count} {unit} (2 replicates) changes only its own output"
    return CheckResult("elementwise", not leaks, detail, {"leaks": len(leaks)})


def check_exact_vs_sampled(obj: Objective, opts: CheckOptions) -> CheckResult:
    world = opts.check_world()
    reward = _reward(obj, opts, world)
    kwargs = _loss_kwargs(obj, opts, reward)
    logp = _random_logp(_generator(opts, 9), world.n_prompts, world.n_responses)
    replicates, n = 400, 32
    data = _sample(obj, world, n, replicates, opts.seed)
    sampled = empirical_loss(obj, data, logp, beta=opts.beta, **kwargs)
    exact = float(population_loss(obj, world, logp, beta=opts.beta, **kwargs))
    mean = float(sampled.mean())
    stderr = float(sampled.std()) / math.sqrt(replicates)
    # The empirical loss is a mean of n i.i.d. per-pair terms (prompt terms for on-policy objectives),
    # so it is unbiased for the population loss; 4 standard errors of the mean over replicates leave a
    # two-sided false-alarm probability of 6e-5 (normal approximation).  The float64 allowance covers a
    # loss with no variance at all.
    allowed = 4 * stderr + 1e-12 * max(1.0, abs(exact))
    gap = abs(mean - exact)
    passed = gap <= allowed
    detail = (
        f"mean over {replicates} datasets of n={n}: {_fmt(mean)} vs population {_fmt(exact)}; "
        f"|gap| = {_fmt(gap)} {'<=' if passed else '>'} 4 SE = {_fmt(4 * stderr)}"
    )
    return CheckResult("exact_vs_sampled", passed, detail, {"mean": mean, "population": exact, "stderr": stderr})
