"""Estimators batched over replicate datasets: closed forms, a Newton solver, and finite-class argmins.

* Closed forms where the math gives one (spec §2): RKL's prior smoothing,
  RLHF's pi0 · exp(R / beta), the forward-KL estimator pi_R.
* A batched damped Newton solver in torch for every other objective, over
  tabular softmax logits [R, X, A].  Every objective here is separable across
  prompts, so the Hessian is block-diagonal with one A × A block per
  (replicate, prompt); all blocks are built and solved at once.
* The argmin over an explicit finite class of K policies (the theorems'
  setting, A1): one product of the data's counts with the per-cell losses.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from synthalign._checks import broadcast_shape, check_positive
from synthalign.data import PairData, PreferenceData
from synthalign.evaluate import data_weights, make_context, per_prompt_loss
from synthalign.metrics import kl_per_prompt
from synthalign.policies import Policy, as_logp
from synthalign.registry import EvalContext, Objective, get_objective

_LINE_SEARCH_STEPS = 12
_ARMIJO = 1e-4
_LOGIT_FLOOR = -1e3
_CELL_BUDGET = 2**24  # elements per chunk of per-replicate cell losses in argmin_over_class (128 MiB in float64)


@dataclasses.dataclass(frozen=True, eq=False)
class FitResult:
    """What `fit` returns.

    Attributes:
      policy: the fitted policies, batch [R].
      objective: objective name.
      beta: KL weight used.
      method: "closed_form" or "newton".
      converged: [R] bool: for every prompt the gradient is below `tol` or the Newton
        decrement is at float resolution (always True for closed forms).
      iterations: Newton iterations run (0 for closed forms).
      grad_norm: [R] largest absolute gradient entry at the end.
      separable: [R, X] bool for labelled-pair objectives: the comparison graph of
        prompt x is not strongly connected (some response unobserved, or a group
        of responses never loses to the rest).  A logistic-type loss (PMLE, DPO,
        reward model) then has no finite minimizer at beta = 0 without a ridge:
        the logits fitted there grow until the gradient falls below `tol`.
      reward: for a reward-model objective (`fits_reward`), R̂ = gamma · (centred
        log-probabilities), [R, X, A].
      loss: [R] the objective (without the ridge) at the fitted policy.
    """

    policy: Policy
    objective: str
    beta: float
    method: str
    converged: Tensor
    iterations: int
    grad_norm: Tensor
    separable: Tensor | None
    reward: Tensor | None
    loss: Tensor


def comparison_graph_separable(counts: Tensor) -> Tensor:
    """[R, X] bool: the directed win graph of each prompt is not strongly connected.

    Zermelo/Ford condition: the Bradley–Terry likelihood has a finite maximizer
    iff, for every split of the responses into two groups, each group beats the
    other at least once.  Computed by boolean transitive closure (log2 A matrix
    products).
    """
    A = counts.shape[-1]
    reach = (counts > 0) | torch.eye(A, dtype=torch.bool, device=counts.device)
    for _ in range(max(1, math.ceil(math.log2(A)))):
        reach_f = reach.to(torch.float32)
        reach = (reach_f @ reach_f) > 0
    return ~reach.all(dim=(-1, -2))


def _resolve_reward(obj: Objective, data, reward, reward_ridge: float) -> Tensor | None:
    if not obj.needs_reward or reward is not None:
        return reward
    if data.is_population:
        return data.world.true_reward
    if not isinstance(data, PreferenceData):
        raise ValueError(f"objective {obj.name!r} needs a reward; pass reward=... (unlabelled pairs cannot fit one)")
    return fit_reward_model(data, ridge=reward_ridge).reward


def fit_reward_model(data: PreferenceData, *, ridge: float = 1e-2, **kwargs) -> FitResult:
    """Tabular Bradley–Terry maximum likelihood (eq. 9), batched over replicates.

    Decision (spec §5): a tiny ridge keeps R̂ finite on separable data.  It is
    (ridge/2) Σ_x Σ_a (R(x,a) − mean_a R(x,·))²/gamma² on the *summed* loss
    (see `fit`), so its pull vanishes as 1/n and R̂ stays consistent.  The
    returned `reward` is centred per prompt.
    """
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
    **params,
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
      init: initial logits [X, A] or [R, X, A]; default pi0's log-probabilities
        (clipped at −1000, i.e. probability 0 in float64), and zeros for a
        reward-model objective (`fits_reward`).
      max_iter, tol: Newton iteration cap and gradient tolerance (default 1e-10
        in float64, 1e-5 in float32).
      **params: the objective's hyper-parameters (e.g. tau for IPO).
    """
    obj = get_objective(objective)
    beta = check_positive(beta, "beta", allow_zero=True)
    ridge = check_positive(ridge, "ridge", allow_zero=True)
    if not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    world = data.world
    resolved = obj.resolve_params(params)
    reward = _resolve_reward(obj, data, reward, reward_ridge)
    ctx = make_context(obj, world, reward, resolved)
    pair_weight, prompt_weight, total = data_weights(obj, data)
    separable = None
    if obj.data == "preferences" and pair_weight is not None:
        separable = comparison_graph_separable(pair_weight)

    if obj.closed_form is not None and ridge == 0.0:
        policy = obj.closed_form(ctx.reward, world, beta, resolved)
        logp = policy.logp.expand(data.replicates, *policy.logp.shape[-2:]) if policy.logp.dim() == 2 else policy.logp
        loss = per_prompt_loss(obj, logp, pair_weight, prompt_weight, ctx, beta).sum(-1) / total
        ones = torch.ones(logp.shape[0], dtype=torch.bool, device=logp.device)
        return FitResult(
            policy=Policy(logp, world.prompt_dist),
            objective=obj.name,
            beta=beta,
            method="closed_form",
            converged=ones,
            iterations=0,
            grad_norm=torch.zeros(logp.shape[0], dtype=logp.dtype, device=logp.device),
            separable=separable,
            reward=None,
            loss=loss,
        )

    dtype = data.counts.dtype
    if tol is None:
        tol = 1e-10 if dtype == torch.float64 else 1e-5
    tol = check_positive(tol, "tol", allow_zero=True)
    shape = (data.replicates, world.n_prompts, world.n_responses)
    if init is None:
        start = torch.zeros(shape, dtype=dtype, device=world.device) if obj.fits_reward else world.reference.logp
    else:
        start = torch.as_tensor(init, dtype=dtype, device=world.device)
    theta = start.clamp_min(_LOGIT_FLOOR).expand(shape).clone()
    step_cap = 4.0 * max(1.0, 1.0 / world.gamma)  # a trust region: logits move on the scale 1/gamma
    problem = _Problem(obj, pair_weight, prompt_weight, total, ctx, beta, ridge, step_cap=step_cap)
    theta, iterations, grad, converged = problem.newton(theta, max_iter=max_iter, tol=tol)
    logp = torch.log_softmax(theta, dim=-1)
    grad_norm = grad.abs().amax(dim=(-1, -2))
    with torch.no_grad():
        loss = per_prompt_loss(obj, logp, pair_weight, prompt_weight, ctx, beta).sum(-1) / total
    fitted_reward = None
    if obj.fits_reward:
        fitted_reward = world.gamma * (logp - logp.mean(dim=-1, keepdim=True))
    return FitResult(
        policy=Policy(logp, world.prompt_dist),
        objective=obj.name,
        beta=beta,
        method="newton",
        converged=converged.all(dim=-1),
        iterations=iterations,
        grad_norm=grad_norm,
        separable=separable,
        reward=fitted_reward,
        loss=loss,
    )


@dataclasses.dataclass
class _Problem:
    """The batched per-(replicate, prompt) objective and its exact derivatives in the logits."""

    obj: Objective
    pair_weight: Tensor | None
    prompt_weight: Tensor
    total: Tensor
    ctx: EvalContext
    beta: float
    ridge: float
    step_cap: float

    def values(self, theta: Tensor) -> Tensor:
        """Per-(replicate, prompt) objective, [..., R, X]."""
        logp = torch.log_softmax(theta, dim=-1)
        value = per_prompt_loss(self.obj, logp, self.pair_weight, self.prompt_weight, self.ctx, self.beta)
        value = value / self.total.unsqueeze(-1)
        if self.ridge > 0:
            centred = theta - theta.mean(dim=-1, keepdim=True)
            value = value + 0.5 * self._ridge_weight(theta) * centred.square().sum(dim=-1)
        return value

    def _ridge_weight(self, theta: Tensor) -> Tensor:
        """ridge / (total weight of the replicate), [R, 1]: the ridge acts on the summed loss."""
        return (self.ridge / self.total).unsqueeze(-1).to(theta.dtype)

    def derivatives(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(values [R, X], gradient [R, X, A], Hessian [R, X, A, A]) in the logits."""
        A = theta.shape[-1]
        theta = theta.detach()
        probs = torch.softmax(theta, dim=-1)
        logp = torch.log_softmax(theta, dim=-1)
        scale = self.total.unsqueeze(-1)
        value = theta.new_zeros(theta.shape[:-1])
        grad = torch.zeros_like(theta)
        hess = theta.new_zeros(*theta.shape, A)

        if self.obj.kind == "pair":
            # Elementwise derivatives of the pair loss in its two log-probability
            # arguments, assembled into the gradient and Hessian in logp, then
            # pushed through logp = theta − logsumexp(theta).
            g_logp, h_logp, pair_value = self._pair_derivatives(logp)
            value = value + pair_value / scale
            g_logp, h_logp = g_logp / scale.unsqueeze(-1), h_logp / scale[..., None, None]
            g_sum = g_logp.sum(dim=-1, keepdim=True)
            grad = grad + g_logp - probs * g_sum
            row = h_logp.sum(dim=-1, keepdim=True)  # H 1
            col = h_logp.sum(dim=-2, keepdim=True)  # 1ᵀ H
            both = row.sum(dim=-2, keepdim=True)
            p_col, p_row = probs.unsqueeze(-1), probs.unsqueeze(-2)
            jhj = h_logp - row * p_row - p_col * col + p_col * both * p_row
            softmax_hess = torch.diag_embed(probs) - probs.unsqueeze(-1) * probs.unsqueeze(-2)
            hess = hess + jhj - g_sum.unsqueeze(-1) * softmax_hess

        if self.obj.kind == "prompt" or self.beta > 0:
            p_value, p_grad, p_hess = self._prompt_derivatives(theta)
            value, grad, hess = value + p_value, grad + p_grad, hess + p_hess

        if self.ridge > 0:
            centred = theta - theta.mean(dim=-1, keepdim=True)
            ridge = self._ridge_weight(theta)
            value = value + 0.5 * ridge * centred.square().sum(dim=-1)
            grad = grad + ridge.unsqueeze(-1) * centred
            eye = torch.eye(A, dtype=theta.dtype, device=theta.device)
            hess = hess + ridge[..., None, None] * (eye - 1.0 / A)
        return value, grad, hess

    def _pair_derivatives(self, logp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(gradient [.., X, A], Hessian [.., X, A, A] in logp, weighted pair loss per prompt [.., X])."""
        weight = self.pair_weight
        if self.obj.margin_derivatives is not None:
            return self._margin_pair_derivatives(logp)
        cell_shape = broadcast_shape(logp.unsqueeze(-1).shape, weight.shape)
        first = logp.unsqueeze(-1).expand(cell_shape).clone().requires_grad_(True)
        second = logp.unsqueeze(-2).expand(cell_shape).clone().requires_grad_(True)
        with torch.enable_grad():
            values = self.obj.pair_values(logp, self.ctx, weight, first=first, second=second)
            weighted = torch.where(weight > 0, weight * values, torch.zeros_like(values))
            d_first, d_second = _grads(weighted.sum(), (first, second), create_graph=True)
            d_ff, d_fs = _grads(d_first.sum(), (first, second), retain_graph=True)
            (d_ss,) = _grads(d_second.sum(), (second,))
        grad = d_first.detach().sum(dim=-1) + d_second.detach().sum(dim=-2)
        hess = torch.diag_embed(d_ff.sum(dim=-1) + d_ss.sum(dim=-2)) + d_fs + d_fs.transpose(-1, -2)
        return grad, hess, weighted.detach().sum(dim=(-1, -2))

    def _margin_pair_derivatives(self, logp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # ℓ(cell i, j) = h(Δ_ij), Δ_ij = l_i − l_j: ∂/∂l_i = h', ∂/∂l_j = −h', and the
        # Hessian block of the cell is h'' [[1, −1], [−1, 1]] (zero on the diagonal cells i = j).
        weight = self.pair_weight
        used = weight > 0
        values = self.obj.pair_values(logp, self.ctx, weight)
        first, second = self.obj.pair_values(logp, self.ctx, weight, fn=self.obj.margin_derivatives)
        zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
        weighted = torch.where(used, weight * values, zero)
        w_first = torch.where(used, weight * first, zero)
        w_second = torch.where(used, weight * second, zero)
        grad = w_first.sum(dim=-1) - w_first.sum(dim=-2)
        hess = torch.diag_embed(w_second.sum(dim=-1) + w_second.sum(dim=-2)) - w_second - w_second.transpose(-1, -2)
        return grad, hess, weighted.sum(dim=(-1, -2))

    def _prompt_derivatives(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        A = theta.shape[-1]
        theta = theta.clone().requires_grad_(True)
        with torch.enable_grad():
            logp = torch.log_softmax(theta, dim=-1)
            used = self.prompt_weight > 0
            value = theta.new_zeros(theta.shape[:-1])
            if self.obj.kind == "prompt":
                terms = self.obj.prompt_values(logp, self.ctx)
                value = value + torch.where(used, self.prompt_weight * terms, torch.zeros_like(terms))
            if self.beta > 0:
                kl = kl_per_prompt(logp, self.ctx.ref_logp)
                value = value + torch.where(used, self.beta * self.prompt_weight * kl, torch.zeros_like(kl))
            value = value / self.total.unsqueeze(-1)
            (grad,) = _grads(value.sum(), (theta,), create_graph=True)
            columns = [_grads(grad[..., a].sum(), (theta,), retain_graph=True)[0] for a in range(A)]
        hess = torch.stack(columns, dim=-1)
        return value.detach(), grad.detach(), hess

    def newton(self, theta: Tensor, *, max_iter: int, tol: float) -> tuple[Tensor, int, Tensor, Tensor]:
        """Damped Newton with a batched Armijo line search; returns (theta, iterations, gradient, converged).

        A problem (one replicate and prompt) stops when its largest gradient entry
        is at most `tol`; when it sits at float resolution — Newton decrement
        gᵀH⁻¹g (twice the predicted decrease) below 10·eps·(1 + |f|) while the
        gradient no longer halves, three iterations in a row (a gradient noise
        floor above `tol`); or when no step length passes the line search.  The
        first two count as converged; a stalled problem is reported not converged.
        """
        shape = theta.shape[:-1]
        done = torch.zeros(shape, dtype=torch.bool, device=theta.device)
        converged = torch.zeros_like(done)
        precision_streak = torch.zeros(shape, dtype=torch.long, device=theta.device)
        previous_norm = torch.full(shape, float("inf"), dtype=theta.dtype, device=theta.device)
        grad = torch.zeros_like(theta)
        iterations = 0
        for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is returned
            value, grad, hess = self.derivatives(theta)
            if not torch.isfinite(value).all():
                raise ValueError(
                    "the objective is infinite at the starting point (the data put weight on responses the "
                    "initial policy gives probability 0); pass init=..."
                )
            direction = _newton_direction(grad, hess)
            decrement = -(grad * direction).sum(dim=-1)
            grad_norm = grad.abs().amax(dim=-1)
            small_gradient = grad_norm <= tol
            at_precision = decrement.abs() <= 10 * torch.finfo(value.dtype).eps * (1.0 + value.abs())
            stuck = at_precision & (grad_norm > 0.5 * previous_norm)
            previous_norm = grad_norm
            precision_streak = torch.where(stuck, precision_streak + 1, torch.zeros_like(precision_streak))
            finished = small_gradient | (precision_streak >= 3)
            converged = converged | (finished & ~done)
            done = done | finished
            if bool(done.all()):
                break
            active = ~done
            direction = torch.where(active.unsqueeze(-1), direction, torch.zeros_like(direction))
            largest = direction.abs().amax(dim=-1, keepdim=True)
            direction = direction * torch.clamp(self.step_cap / largest.clamp_min(1e-300), max=1.0)
            slope = (grad * direction).sum(dim=-1)
            theta, stalled = self._line_search(theta, direction, value, slope, active)
            done = done | stalled
        else:
            _, grad, _ = self.derivatives(theta)
            converged = converged | (grad.abs().amax(dim=-1) <= tol)
        return theta, iterations, grad, converged

    def _line_search(self, theta, direction, value, slope, active) -> tuple[Tensor, Tensor]:
        """Per-problem backtracking: halve the step of the problems that fail Armijo, up to 12 times.

        Returns the new logits and the active problems where no step was accepted.
        """
        step = torch.ones_like(value)
        pending = active.clone()
        with torch.no_grad():
            for _ in range(_LINE_SEARCH_STEPS):
                trial = self.values(theta + step.unsqueeze(-1) * direction)
                # Armijo up to float resolution (Hager & Zhang's approximate condition), so that
                # Newton keeps shrinking the gradient once decreases fall below eps·|f|.
                noise = 10 * torch.finfo(value.dtype).eps * (1.0 + value.abs())
                ok = (trial <= value + _ARMIJO * step * slope + noise) & torch.isfinite(trial)
                pending = pending & ~ok
                if not pending.any():
                    break
                step = torch.where(pending, 0.5 * step, step)
            # A problem that never met the condition does not move.
            step = torch.where(pending | ~active, torch.zeros_like(step), step)
        return theta + step.unsqueeze(-1) * direction, pending


def _grads(output: Tensor, inputs, **kwargs):
    if not output.requires_grad:  # the loss is constant (or linear) in these inputs
        return tuple(torch.zeros_like(x) for x in inputs)
    grads = torch.autograd.grad(output, inputs, allow_unused=True, **kwargs)
    return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True))


def _newton_direction(grad: Tensor, hess: Tensor) -> Tensor:
    """Newton direction −H⁻¹g per block, the gauge direction (adding a constant to the logits) projected out.

    Blocks are solved by Cholesky of H + (s/A)·11ᵀ + 1e-12·s·I (s the block's
    scale); the 11ᵀ term removes the gauge null space without changing the
    step, since g ⊥ 1.  Blocks where that fails (an indefinite Hessian: the
    KL term is not convex in the logits) use |eigenvalues| instead.
    """
    A = grad.shape[-1]
    hess = 0.5 * (hess + hess.transpose(-1, -2))
    scale = hess.diagonal(dim1=-2, dim2=-1).abs().amax(dim=-1).clamp_min(1.0)[..., None, None]
    eye = torch.eye(A, dtype=hess.dtype, device=hess.device)
    regularized = hess + scale * (1.0 / A + 1e-12 * eye)
    factor, info = torch.linalg.cholesky_ex(regularized)
    direction = -torch.cholesky_solve(grad.unsqueeze(-1), factor).squeeze(-1)
    failed = info > 0
    if failed.any():
        eigenvalues, vectors = torch.linalg.eigh(hess[failed])
        floor = eigenvalues.abs().amax(dim=-1, keepdim=True).clamp_min(1.0) * 1e-8
        inverse = 1.0 / torch.maximum(eigenvalues.abs(), floor)
        coeff = (vectors.transpose(-1, -2) @ grad[failed].unsqueeze(-1)).squeeze(-1)
        direction[failed] = -(vectors @ (inverse * coeff).unsqueeze(-1)).squeeze(-1)
    direction = torch.where(torch.isfinite(direction), direction, torch.zeros_like(direction))
    return direction - direction.mean(dim=-1, keepdim=True)


@dataclasses.dataclass(frozen=True, eq=False)
class ClassFit:
    """Argmin over a finite class: `index` [R], `policy` (batch [R]) and the losses [R, K]."""

    index: Tensor
    policy: Policy
    losses: Tensor


def argmin_over_class(
    objective: str | Objective,
    data: PreferenceData | PairData,
    candidates: Policy | Tensor,
    *,
    beta: float = 0.0,
    reward: Tensor | None = None,
    reward_ridge: float = 1e-2,
    chunk_size: int = 4096,
    **params,
) -> ClassFit:
    """pi_hat = argmin over the K candidates of the empirical objective, for every replicate (A1's setting).

    With a reward shared by all replicates the losses are one matrix product,
    counts [R, cells] @ per-cell losses [cells, K]; with a per-replicate reward
    [R, X, A] they are an einsum.  Candidates are processed `chunk_size` at a
    time so memory stays O(chunk_size × cells) (with a per-replicate reward the
    chunk shrinks so that chunk × R × cells stays near 2^24 elements).  A cell of positive weight
    where a candidate's loss is +inf makes that candidate's loss +inf.
    """
    obj = get_objective(objective)
    beta = check_positive(beta, "beta", allow_zero=True)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    logp_all = as_logp(candidates, "candidates").to(data.counts.dtype)
    world = data.world
    if logp_all.dim() != 3 or logp_all.shape[-2:] != (world.n_prompts, world.n_responses):
        raise ValueError(
            f"candidates must have shape [K, {world.n_prompts}, {world.n_responses}], got {tuple(logp_all.shape)}"
        )
    reward = _resolve_reward(obj, data, reward, reward_ridge)
    ctx = make_context(obj, world, reward, obj.resolve_params(params))
    pair_weight, prompt_weight, total = data_weights(obj, data)
    per_replicate_reward = ctx.reward is not None and ctx.reward.dim() == 3
    R = data.replicates
    if per_replicate_reward:
        # Cells then depend on the replicate: keep a chunk's [chunk, R, X, A, A] tensors near
        # _CELL_BUDGET elements whatever R is.
        cells = R * world.n_prompts * world.n_responses**2
        chunk_size = max(1, min(chunk_size, _CELL_BUDGET // cells))
    chunks = []
    for start in range(0, logp_all.shape[0], chunk_size):
        logp = logp_all[start : start + chunk_size]
        if per_replicate_reward:
            # [K, R, X, A] policies against [R, ...] rewards: cells depend on the replicate.
            expanded = logp.unsqueeze(1)
            losses = per_prompt_loss(obj, expanded, pair_weight, prompt_weight, ctx, beta).sum(-1)
            chunks.append((losses / total).transpose(0, 1))
            continue
        unit_ctx = ctx
        if obj.kind == "pair":
            cell_loss = obj.pair_values(logp, unit_ctx, None).reshape(logp.shape[0], -1)  # [K, cells]
            pair_part = _weighted_matmul(pair_weight.reshape(R, -1), cell_loss)
        else:
            prompt_loss = obj.prompt_values(logp, unit_ctx)  # [K, X]
            pair_part = _weighted_matmul(prompt_weight, prompt_loss)
        if beta > 0:
            pair_part = pair_part + beta * _weighted_matmul(prompt_weight, kl_per_prompt(logp, ctx.ref_logp))
        chunks.append(pair_part / total.unsqueeze(-1))
    losses = torch.cat(chunks, dim=-1)
    index = losses.argmin(dim=-1)
    return ClassFit(index=index, policy=Policy(logp_all[index], world.prompt_dist), losses=losses)


def _weighted_matmul(weight: Tensor, values: Tensor) -> Tensor:
    """weight [R, C] @ values[K, C]ᵀ where 0 · inf counts as 0 and w > 0 at an inf makes the row inf."""
    finite = torch.where(torch.isfinite(values), values, torch.zeros_like(values))
    out = weight @ finite.transpose(0, 1)
    infinite = ((weight > 0).to(values.dtype) @ (values == float("inf")).to(values.dtype).transpose(0, 1)) > 0
    return torch.where(infinite, torch.full_like(out, float("inf")), out)
