"""A batched damped Newton solver over tabular softmax logits [R, X, A].

Every objective here is separable across prompts, so the Hessian is
block-diagonal with one A × A block per (replicate, prompt); all blocks are built
and solved at once.  The objective's value and derivatives in the logits come
from `synthalign.estimators.derivatives`.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from synthalign.estimators.derivatives import LogitObjective

_LINE_SEARCH_STEPS = 12
_ARMIJO = 1e-4


@dataclasses.dataclass
class NewtonProblem(LogitObjective):
    """`LogitObjective` minimized by damped Newton; `step_cap` bounds a step's largest logit move."""

    step_cap: float

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
