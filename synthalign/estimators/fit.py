"""`fit`: tabular softmax policies fitted to every replicate of a dataset at once.

An objective's declared closed form (spec §2: RKL's prior smoothing, RLHF's
pi0 · exp(R / beta), the forward-KL estimator pi_R) is used where it has one; every
other objective is minimized by the batched Newton solver of
`synthalign.estimators.newton`.  The finite-class argmins are
`synthalign.estimators.finite_class`'s.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from synthalign._checks import check_init, check_positive, check_reward
from synthalign.estimators.certificate import Certificate, certify, component_labels
from synthalign.estimators.newton import NewtonProblem
from synthalign.evaluate import data_weights, make_context
from synthalign.registry.protocol import Objective, get_objective
from synthalign.worlds.datasets import CellData, PairData, PreferenceData, check_data
from synthalign.worlds.policy import Policy

if TYPE_CHECKING:
    from synthalign.worlds.tabular import World

__all__ = ["FitResult", "comparison_graph_separable", "resolve_reward", "fit_reward_model", "fit"]

_LOGIT_FLOOR = -1e3


@dataclasses.dataclass(frozen=True, eq=False)
class FitResult:
    """What `fit` returns.

    Attributes:
      policy: the fitted policies, batch [R].
      objective: objective name.
      beta: KL weight used.
      method: "closed_form" or "newton".
      converged: [R] bool: the policy is certified to be *the* minimizer: the first-order
        optimality condition on the simplex holds to `tol` (Frank–Wolfe gap and logit
        gradient, `synthalign.estimators.certificate`), the minimizer is unique and its
        logits are finite.  `status` says why not, otherwise.
      status: one of "optimal", "non_unique", "no_finite_minimizer", "not_converged"
        per replicate (`Certificate.status`).
      certificate: the full `Certificate` (gap per prompt, the direction of divergence,
        the range of the mass on unobserved responses over the minimizer set).
      iterations: Newton iterations run (0 for closed forms).
      grad_norm: [R] largest absolute gradient entry at the end.
      separable: [R, X] bool for labelled-pair objectives: the comparison graph of
        prompt x is not strongly connected (some response unobserved, or a group
        of responses never loses to the rest).  A logistic-type loss (PMLE, DPO,
        reward model) then has no finite minimizer at beta = 0 without a ridge
        (status "no_finite_minimizer" or, with blind directions, "non_unique").
      reward: for a reward-model objective (`fits_reward`), R̂ = gamma · (centred
        log-probabilities), [R, X, A].
      loss: [R] the objective (without the ridge) at the fitted policy.
    """

    policy: Policy
    objective: str
    beta: float
    method: str
    converged: Tensor
    status: tuple[str, ...]
    certificate: Certificate
    iterations: int
    grad_norm: Tensor
    separable: Tensor | None
    reward: Tensor | None
    loss: Tensor


def _default_start(world: World, beta: float) -> Tensor:
    """pi0's log-probabilities; at beta = 0 its zeros at the prompt's smallest nonzero log-probability."""
    logp = world.reference.logp
    if beta > 0:
        return logp
    finite = torch.isfinite(logp)
    smallest = torch.where(finite, logp, torch.full_like(logp, math.inf)).amin(dim=-1, keepdim=True)
    return torch.where(finite, logp, smallest)


def comparison_graph_separable(counts: Tensor) -> Tensor:
    """[R, X] bool: the directed win graph of each prompt is not strongly connected.

    Zermelo/Ford condition: the Bradley–Terry likelihood has a finite maximizer
    iff, for every split of the responses into two groups, each group beats the
    other at least once.  A prompt whose cells all have positive weight (the
    population law) is connected at once; the others are checked by one
    strongly-connected-components search (`component_labels`, scipy.sparse.csgraph,
    O(A + edges)) over all their graphs.
    """
    return (component_labels(counts > 0, "strong") != 0).any(dim=-1)


def resolve_reward(obj: Objective, data: CellData, reward: Tensor | None, reward_ridge: float) -> Tensor | None:
    """The reward an objective needs: `reward` if given, on the population law the world's true
    reward, else the Bradley–Terry fit R̂ on `data` (eq. 9); None when the objective needs no reward."""
    if not obj.needs_reward or reward is not None:
        return reward
    if data.is_population:
        return data.world.true_reward
    if not isinstance(data, PreferenceData):
        raise ValueError(f"objective {obj.name!r} needs a reward; pass reward=... (unlabelled pairs cannot fit one)")
    return fit_reward_model(data, ridge=reward_ridge).reward


def fit_reward_model(data: PreferenceData, *, ridge: float = 1e-2, **kwargs: Any) -> FitResult:
    """Tabular Bradley–Terry maximum likelihood (eq. 9), batched over replicates.

    Decision (spec §5): a tiny ridge keeps R̂ finite on separable data.  It is
    (ridge/2) Σ_x Σ_a (R(x,a) − mean_a R(x,·))²/gamma² on the *summed* loss
    (see `fit`), so its pull vanishes as 1/n and R̂ stays consistent.  The
    returned `reward` is centred per prompt.
    """
    check_data(data)
    return fit("reward_model", data, ridge=ridge, **kwargs)


def fit(
    objective: str | Objective,
    data: PreferenceData | PairData,
    *,
    beta: float = 0.0,
    reward: Tensor | None = None,
    ridge: float = 0.0,
    reward_ridge: float = 1e-2,
    init: Tensor | None = None,
    max_iter: int = 100,
    tol: float | None = None,
    **params: float,
) -> FitResult:
    """Fits a tabular softmax policy to every replicate of `data` at once.

    Args:
      objective: a registered name ("pmle", "dpo", "rkl", ...) or an `Objective`.
      data: labelled `PreferenceData` (counts or population law) or unlabelled `PairData`.
      beta: weight of KL(pi ‖ pi0), >= 0.
      reward: R̂ [X, A] or [R, X, A] for objectives that need one; when omitted it
        is fitted on `data` by `fit_reward_model(ridge=reward_ridge)` (the true
        reward for the population law).
      ridge: (ridge/2) Σ_x Σ_a (theta_xa − mean_a theta_x)² added to the summed
        loss, i.e. divided by the replicate's total weight (n for counts, 1 for
        the population law) in the mean loss: a pull worth `ridge` pseudo-pairs
        that vanishes as n grows.  It keeps logistic-type fits finite on
        separable data.
      init: initial logits [X, A] or [R, X, A]; default pi0's log-probabilities —
        at beta > 0 clipped at −1000 (probability 0 in float64, where the KL forbids
        mass), at beta = 0 with pi0's zeros raised to the prompt's smallest nonzero
        log-probability (the loss does not forbid them, and a start at probability 0
        has no gradient to leave it) — and zeros for a reward-model objective
        (`fits_reward`).
      max_iter, tol: Newton iteration cap and gradient tolerance (default 1e-10
        in float64, 1e-5 in float32).
      **params: the objective's hyper-parameters (e.g. tau for IPO).
    """
    check_init(init, check_data(data))
    check_reward(reward, data.world)
    obj = get_objective(objective)
    beta = check_positive(beta, "beta", allow_zero=True)
    ridge = check_positive(ridge, "ridge", allow_zero=True)
    if obj.needs_reference or beta > 0:  # pi0(a) = 0 becomes e^-1000 (0 in float64): ln(pi/pi0) stays finite
        data = dataclasses.replace(data, world=data.world.floor_reference(_LOGIT_FLOOR))
    if not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    world = data.world
    resolved = obj.resolve_params(params)
    reward = resolve_reward(obj, data, reward, reward_ridge)
    ctx = make_context(obj, world, reward, resolved)
    pair_weight, prompt_weight, total = data_weights(obj, data)
    separable = None
    if obj.data == "preferences" and pair_weight is not None:
        separable = comparison_graph_separable(pair_weight)

    dtype = data.counts.dtype
    if tol is None:
        tol = 1e-10 if dtype == torch.float64 else 1e-5
    tol = check_positive(tol, "tol", allow_zero=True)
    step_cap = 4.0 * max(1.0, 1.0 / world.gamma)  # a trust region: logits move on the scale 1/gamma
    problem = NewtonProblem(obj, pair_weight, prompt_weight, total, ctx, beta, ridge, step_cap=step_cap)

    gap = None
    if obj.closed_form is not None and ridge == 0.0:
        method, iterations = "closed_form", 0
        policy = obj.closed_form(ctx.reward, world, beta, resolved)
        logp = policy.logp.expand(data.replicates, *policy.logp.shape[-2:]) if policy.logp.dim() == 2 else policy.logp
        theta = logp.clamp_min(_LOGIT_FLOOR)
        _, grad, _ = problem.derivatives(theta)
    else:
        method = "newton"
        shape = (data.replicates, world.n_prompts, world.n_responses)
        if init is None:
            zeros = torch.zeros(shape, dtype=dtype, device=world.device)
            start = zeros if obj.fits_reward else _default_start(world, beta)
        else:
            start = torch.as_tensor(init, dtype=dtype, device=world.device)
        theta = start.clamp_min(_LOGIT_FLOOR).expand(shape).clone()
        theta, iterations, grad, _, gap = problem.newton(theta, max_iter=max_iter, tol=tol)
        logp = torch.log_softmax(theta, dim=-1)
    certificate = certify(problem, theta, grad, tol=tol, prompt_dist=world.prompt_dist, gap=gap)
    with torch.no_grad():
        loss = problem.per_prompt_loss(logp).sum(-1) / total
    fitted_reward = None
    if obj.fits_reward:
        fitted_reward = world.gamma * (logp - logp.mean(dim=-1, keepdim=True))
    return FitResult(
        policy=Policy(logp, world.prompt_dist),
        objective=obj.name,
        beta=beta,
        method=method,
        converged=certificate.converged,
        status=certificate.status,
        certificate=certificate,
        iterations=iterations,
        grad_norm=certificate.grad_norm,
        separable=separable,
        reward=fitted_reward,
        loss=loss,
    )
