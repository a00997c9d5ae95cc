"""The conformance checks that fit an objective: its closed form, its population minimizer, small data.

Each is (objective, options) -> CheckResult and runs `synthalign.estimators.fit`; the checks of the
loss itself are `synthalign.testing.battery`'s, whose inputs (worlds, rewards, datasets) these share.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from synthalign.estimators.fit import fit
from synthalign.evaluate import population_loss
from synthalign.metrics import entropy, forward_kl
from synthalign.registry.protocol import Objective
from synthalign.testing.battery import CONSISTENCY_TOL, _fmt, _loss_kwargs, _population_data, _reward
from synthalign.testing.report import CheckOptions, CheckResult
from synthalign.worlds.policy import Policy, as_logp

__all__ = ["check_closed_form", "check_degeneracy", "check_population_minimizer"]


def _fit_kwargs(obj: Objective, opts: CheckOptions) -> dict:
    """The options' hyper-parameters, and their reward for an objective that needs one (else `fit` fits R̂)."""
    kwargs = dict(opts.params)
    if obj.needs_reward and opts.reward is not None:
        kwargs["reward"] = opts.reward
    return kwargs


def check_closed_form(obj: Objective, opts: CheckOptions) -> CheckResult:
    if obj.closed_form is None:
        return CheckResult("closed_form", None, "no closed form declared")
    world = opts.check_world()
    data = _population_data(obj, world)
    fit_kwargs = _fit_kwargs(obj, opts)
    closed = fit(obj, data, beta=opts.beta, **fit_kwargs)
    newton = fit(dataclasses.replace(obj, closed_form=None), data, beta=opts.beta, **fit_kwargs)
    distance = float(forward_kl(closed.policy, newton.policy).max())
    theta = closed.policy.logp[0].clone().requires_grad_(True)
    reward = _reward(obj, opts, world)
    loss = population_loss(obj, world, torch.log_softmax(theta, -1), beta=opts.beta, **_loss_kwargs(obj, opts, reward))
    (grad,) = torch.autograd.grad(loss, theta)
    grad_norm = float(grad.abs().max())
    converged = bool(newton.converged.all())
    reached = distance < CONSISTENCY_TOL
    detail = (
        f"Newton ({newton.iterations} iterations, {'converged' if converged else 'NOT converged'}) reaches the "
        f"closed form: KL(closed ‖ newton) = {_fmt(distance)} ({'<' if reached else '>='} "
        f"{CONSISTENCY_TOL:g}); gradient at the closed form {_fmt(grad_norm)}"
    )
    return CheckResult("closed_form", converged and reached, detail, {"kl": distance, "grad_norm": grad_norm})


def check_population_minimizer(obj: Objective, opts: CheckOptions) -> CheckResult:
    world = opts.check_world()
    data = _population_data(obj, world)
    fit_kwargs = _fit_kwargs(obj, opts)
    result = fit(obj, data, beta=opts.beta, **fit_kwargs)
    policy = result.policy[0]
    kl_target = float(forward_kl(world.target, policy))
    converged = bool(result.converged.all())
    values = {"forward_kl": kl_target, "converged": converged, "method": result.method}
    problems = []
    if not converged:
        problems.append(f"the fit did not converge (largest gradient {_fmt(float(result.grad_norm.max()))})")
    consistent = kl_target < CONSISTENCY_TOL
    finding = (
        f"recovers pi*: KL(pi* ‖ pi) = {_fmt(kl_target)}"
        if consistent
        else f"converges to a policy other than pi*: KL(pi* ‖ pi) = {_fmt(kl_target)}"
    )
    # Options given to the check override what the objective itself declares.
    declared = opts.consistent if opts.consistent is not None else obj.consistent
    expected_minimizer = opts.expected_minimizer or obj.expected_minimizer
    if declared is not None and declared != consistent:
        problems.append(f"declared consistent={declared} but it {finding}")
    if expected_minimizer is not None:
        reward = fit_kwargs.get("reward", world.true_reward if obj.needs_reward else None)
        expected = expected_minimizer(reward, world, opts.beta, obj.resolve_params(opts.params))
        expected = Policy(as_logp(expected, "expected_minimizer"), world.prompt_dist)
        kl_expected = float(forward_kl(expected, policy))
        values["forward_kl_to_expected"] = kl_expected
        finding += f"; KL(expected ‖ pi) = {_fmt(kl_expected)}"
        if not kl_expected < CONSISTENCY_TOL:
            problems.append(f"the fit is not the declared minimizer: KL(expected ‖ pi) = {_fmt(kl_expected)}")
    detail = f"fit ({result.method}, {result.iterations} iterations) on the population law {finding}"
    if problems:
        detail = "; ".join(problems) + f" [{detail}]"
    return CheckResult("population_minimizer", not problems, detail, values)


def check_degeneracy(obj: Objective, opts: CheckOptions) -> CheckResult:
    """A report more than a test: fails only when a fit on small data breaks (error or non-finite loss).

    Every objective is fitted on the same labelled datasets of n = X·A pairs; objectives that need R̂
    get it fitted on those labels (`fit`'s default), unless `reward` is given.
    """
    world = opts.check_world()
    X, A = world.n_prompts, world.n_responses
    n, replicates = X * A, 16
    data = world.sample_preferences(n, replicates, seed=opts.seed)
    fit_kwargs = _fit_kwargs(obj, opts)
    result = fit(obj, data, beta=opts.beta, **fit_kwargs)
    if not torch.isfinite(result.loss).all():
        return CheckResult("degeneracy", False, f"non-finite loss after fitting n={n} pairs: {result.loss.tolist()}")
    counts = data.counts
    seen_response = (counts.sum(-1) + counts.sum(-2)) > 0  # [R, X, A]
    seen_prompt = seen_response.any(-1)  # [R, X]
    prompt_weight = world.prompt_dist * seen_prompt
    prompt_weight = prompt_weight / prompt_weight.sum(-1, keepdim=True)

    def unobserved_mass(logp: Tensor) -> Tensor:
        mass = torch.where(~seen_response, logp.exp(), torch.zeros_like(logp)).sum(-1)
        return (prompt_weight * mass).sum(-1)

    fitted_mass = float(unobserved_mass(result.policy.logp).mean())
    target_mass = float(unobserved_mass(world.target.logp.expand_as(result.policy.logp)).mean())
    fitted_entropy = float(entropy(result.policy).mean())
    target_entropy = float(entropy(world.target))
    converged = float(result.converged.to(torch.float64).mean())
    values = {
        "n": n,
        "entropy": fitted_entropy,
        "target_entropy": target_entropy,
        "unobserved_mass": fitted_mass,
        "target_unobserved_mass": target_mass,
        "converged_fraction": converged,
    }
    detail = (
        f"n={n} pairs, {replicates} datasets: entropy {_fmt(fitted_entropy)} vs H(pi*) {_fmt(target_entropy)}; "
        f"mass on unobserved responses {_fmt(fitted_mass)} vs pi*'s {_fmt(target_mass)}; "
        f"{100 * converged:.0f}% of fits converged"
    )
    if result.separable is not None:
        separable = float(result.separable.to(torch.float64).mean())
        values["separable_fraction"] = separable
        detail += f"; {100 * separable:.0f}% of (dataset, prompt) comparison graphs separable"
    return CheckResult("degeneracy", True, detail, values)
