"""A batched damped Newton solver over tabular softmax logits [R, X, A].

Every objective here is separable across prompts, so the Hessian is
block-diagonal with one A × A block per (replicate, prompt); all blocks are built
and solved at once.  The objective and its derivatives come from
`synthalign.evaluate` (the one binding of an objective's inputs).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from synthalign._checks import broadcast_shape
from synthalign.evaluate import EvalContext, cell_inputs, cell_values, per_prompt_loss, prompt_values
from synthalign.registry.protocol import Objective

_LINE_SEARCH_STEPS = 12
_ARMIJO = 1e-4


@dataclasses.dataclass
class NewtonProblem:
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
            values = cell_values(self.obj, logp, self.ctx, weight, first=first, second=second)
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
        inputs = cell_inputs(self.obj, logp, self.ctx, weight)
        values = self.obj.fn(**inputs, **self.ctx.params)
        first, second = self.obj.margin_derivatives(**inputs, **self.ctx.params)
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
            terms = prompt_values(self.obj, logp, self.ctx, self.beta)
            value = torch.where(used, self.prompt_weight * terms, torch.zeros_like(terms))
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
