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

from synthalign._logistic_pairs import carry_distillation_weights
from synthalign.estimators.certificate import mass_moves, reduced_gradient
from synthalign.estimators.derivatives import LogitObjective

__all__ = ["NewtonProblem"]

_LINE_SEARCH_STEPS = 12
_ARMIJO = 1e-4


@dataclasses.dataclass
class NewtonProblem(LogitObjective):
    """`LogitObjective` minimized by damped Newton; `step_cap` bounds a step's largest logit move."""

    step_cap: float

    def newton(self, theta: Tensor, *, max_iter: int, tol: float) -> tuple[Tensor, int, Tensor, Tensor, Tensor]:
        """Damped Newton with a batched Armijo line search; returns (theta, iterations, gradient, done, gap).

        A problem (one replicate and prompt) stops when the certificate of
        `synthalign.estimators.certificate` holds: its largest logit gradient is at
        most `tol` — or sits at float resolution (Newton decrement gᵀH⁻¹g below
        10·eps·(1 + |f|) while the gradient no longer halves, three iterations in a
        row) — *and* no move of mass onto one response lowers the objective by more
        than `tol` (`mass_move_gap`); or when no step length passes the line search
        (then `certify` says whether the certificate holds there).  A problem that is
        stationary in the logits but fails the second half takes the best mass move
        (a Frank–Wolfe step) instead of a Newton step.  `gap` [R, X] is the mass-move
        gap at the returned theta of the problems that stopped on the certificate, NaN
        elsewhere (`certify` computes the rest).
        """
        shape = theta.shape[:-1]
        done = torch.zeros(shape, dtype=torch.bool, device=theta.device)
        precision_streak = torch.zeros(shape, dtype=torch.long, device=theta.device)
        previous_norm = torch.full(shape, float("inf"), dtype=theta.dtype, device=theta.device)
        grad = torch.zeros_like(theta)
        known_gap = torch.full(shape, float("nan"), dtype=theta.dtype, device=theta.device)
        kl_weight = self.beta * self.prompt_weight / self.total.unsqueeze(-1) if self.beta > 0 else None
        iterations = 0
        ahead = None  # the derivatives at theta, when the last line search computed them
        for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is returned
            value, grad, hess = self.derivatives(theta, upper_only=True) if ahead is None else ahead
            ahead = None
            if not torch.isfinite(value).all():
                raise ValueError(
                    "the objective is infinite at the starting point (the data put weight on responses the "
                    "initial policy gives probability 0); pass init=..."
                )
            logp = torch.log_softmax(theta, dim=-1)
            reduced = reduced_gradient(grad, logp, kl_weight, self.ctx.ref_logp)
            kkt, usable = _kkt_where_starved(grad, hess, logp, reduced)
            direction = _hessian_direction(grad, hess)
            del hess  # released, so that the next call of `derivatives` can write its Hessian into the same memory
            decrement = -(grad * direction).sum(dim=-1)
            grad_norm = grad.abs().amax(dim=-1)
            at_precision = decrement.abs() <= 10 * torch.finfo(value.dtype).eps * (1.0 + value.abs())
            stuck = at_precision & (grad_norm > 0.5 * previous_norm)
            previous_norm = grad_norm
            precision_streak = torch.where(stuck, precision_streak + 1, torch.zeros_like(precision_streak))
            stationary = (grad_norm <= tol) | (precision_streak >= 3)
            # The certificate's second half, checked only where the first holds (it costs about 12 evaluations).
            # Where it fails, Newton is stuck at a point whose logit gradient hides a response that wants
            # mass: the best of those moves (a Frank–Wolfe step with a line search over t) is taken
            # instead of a Newton step.
            finished = stationary & ~done
            moved = torch.zeros_like(finished)
            if finished.any():
                gap, moved_logp = _mass_moves_of(self, theta, finished)
                moved = finished & (gap > tol)
                finished = finished & (gap <= tol)
                known_gap = torch.where(finished, gap, known_gap)
                theta_moved = torch.where(moved.unsqueeze(-1), moved_logp, theta)
            done = done | finished
            if bool(done.all()):
                break
            active = ~done
            # The KKT step is capped per logit: a response of tiny mass that wants mass moves by up to
            # step_cap whatever the losers' (much longer) moves are.
            kkt = kkt.clamp(-self.step_cap, self.step_cap)
            usable = usable & ((grad * kkt).sum(dim=-1) < 0) & active
            # Where the Hessian step is the only candidate, its full step is tried with the derivatives
            # there: when every problem accepts it (the rule near the optimum) they are the next
            # iteration's, and the line search costs no evaluation of its own.
            look_ahead = not bool(usable.any()) and not bool(moved.any())
            theta_h, stalled_h, value_h, ahead = self._capped_step(theta, direction, grad, value, active, look_ahead)
            theta_k, stalled_k, value_k = theta, torch.zeros_like(usable), value
            if usable.any():
                theta_k, stalled_k, value_k, _ = self._capped_step(theta, kkt, grad, value, usable)
            # The KKT step wins ties: its decrease is invisible in float64 exactly when it matters
            # (moving a response from mass e^-80 towards its optimum changes f by ~e^-80).
            noise = 10 * torch.finfo(value.dtype).eps * (1.0 + value.abs())
            take_kkt = usable & ~stalled_k & (stalled_h | (value_k <= value_h + noise))
            theta = torch.where(take_kkt.unsqueeze(-1), theta_k, theta_h)
            done = done | (stalled_h & ~take_kkt & ~moved)
            if moved.any():
                theta = torch.where(moved.unsqueeze(-1), theta_moved, theta)
        else:
            grad = (self.derivatives(theta, upper_only=True) if ahead is None else ahead)[1]
        return theta, iterations, grad, done, known_gap

    def _capped_step(
        self, theta: Tensor, direction: Tensor, grad: Tensor, value: Tensor, active: Tensor, look_ahead: bool = False
    ) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, Tensor, Tensor] | None]:
        """The direction capped at `step_cap` in its largest logit move, then line-searched.

        With `look_ahead` the full step is evaluated by `derivatives`; returned last when every
        active problem accepts it (the new logits are then that point), else None.
        """
        direction = torch.where(active.unsqueeze(-1), direction, torch.zeros_like(direction))
        largest = direction.abs().amax(dim=-1, keepdim=True)
        direction = direction * torch.clamp(self.step_cap / largest.clamp_min(1e-300), max=1.0)
        slope = (grad * direction).sum(dim=-1)
        ahead = self.derivatives(theta + direction, upper_only=True) if look_ahead else None
        theta, pending, accepted, full = self._line_search(
            theta, direction, value, slope, active, None if ahead is None else ahead[0]
        )
        return theta, pending, accepted, ahead if full else None

    def _line_search(
        self, theta: Tensor, direction: Tensor, value: Tensor, slope: Tensor, active: Tensor, first: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, bool]:
        """Per-problem backtracking: halve the step of the problems that fail Armijo, up to 12 times.

        `first` is the values at the full step where already known.  Returns the new logits, the
        active problems where no step was accepted, the new values, and whether every active
        problem took the full step.
        """
        step = torch.ones_like(value)
        pending = active.clone()
        accepted = value.clone()
        full = False
        with torch.no_grad():
            for attempt in range(_LINE_SEARCH_STEPS):
                if attempt == 0 and first is not None:
                    trial = first
                else:
                    trial = self.values(theta + step.unsqueeze(-1) * direction)
                # Armijo up to float resolution (Hager & Zhang's approximate condition), so that
                # Newton keeps shrinking the gradient once decreases fall below eps·|f|.
                noise = 10 * torch.finfo(value.dtype).eps * (1.0 + value.abs())
                ok = (trial <= value + _ARMIJO * step * slope + noise) & torch.isfinite(trial)
                accepted = torch.where(pending & ok, trial, accepted)
                pending = pending & ~ok
                if not pending.any():
                    full = attempt == 0
                    break
                step = torch.where(pending, 0.5 * step, step)
            # A problem that never met the condition does not move.
            step = torch.where(pending | ~active, torch.zeros_like(step), step)
        return theta + step.unsqueeze(-1) * direction, pending, accepted, full


_FLOOR = 1e-12
"""The regularization of `_hessian_direction`, relative to the block's scale."""

_STARVED = 1e3 * _FLOOR
"""A response is starved when its Hessian diagonal is at most this fraction of its block's scale."""


def _kkt_where_starved(grad: Tensor, hess: Tensor, logp: Tensor, reduced: Tensor) -> tuple[Tensor, Tensor]:
    """`_kkt_direction` in the blocks with a starved response that wants mass (v_a < 0); 0 and False elsewhere.

    Elsewhere every response that wants mass has a Hessian diagonal at least 1000 times
    the regularization floor of `_hessian_direction`, so the Hessian step sees it (to a
    relative 1e-3) and the KKT system, an LU solve (twice a Cholesky), is not built.
    """
    diagonal = hess.diagonal(dim1=-2, dim2=-1)
    scale = diagonal.abs().amax(dim=-1, keepdim=True).clamp_min(1.0)
    wanting = torch.isfinite(reduced) & (reduced < 0)
    starved = (wanting & (diagonal.abs() <= _STARVED * scale)).any(dim=-1)
    if bool(starved.all()):
        return _kkt_direction(grad, _symmetric(hess), logp, reduced)
    kkt, usable = torch.zeros_like(grad), torch.zeros_like(starved)
    if bool(starved.any()):
        blocks = _symmetric(hess[starved])
        kkt[starved], usable[starved] = _kkt_direction(grad[starved], blocks, logp[starved], reduced[starved])
    return kkt, usable


def _symmetric(upper: Tensor) -> Tensor:
    """The symmetric matrices [.., A, A] whose upper triangle (with the diagonal) is that of `upper` (a new tensor)."""
    return torch.triu(upper).add_(torch.triu(upper, diagonal=1).transpose(-1, -2))


def _mass_moves_of(problem: NewtonProblem, theta: Tensor, which: Tensor) -> tuple[Tensor, Tensor]:
    """`mass_moves` of the problems (replicate, prompt) where `which` [R, X] holds; gap NaN and theta's elsewhere.

    The problems are separable, so the chosen ones are evaluated as replicates of one prompt each.
    """
    if bool(which.all()):
        return mass_moves(problem, theta)
    R, X, A = theta.shape
    rows, prompts = which.nonzero(as_tuple=True)

    ctx = problem.ctx
    sub = dataclasses.replace(
        problem,
        pair_weight=None
        if problem.pair_weight is None
        else problem.pair_weight.expand(R, X, A, A)[rows, prompts].unsqueeze(1),
        prompt_weight=problem.prompt_weight.expand(R, X)[rows, prompts].unsqueeze(1),
        total=problem.total.expand(R)[rows],
        ctx=dataclasses.replace(
            ctx,
            ref_logp=ctx.ref_logp.expand(R, X, A)[rows, prompts].unsqueeze(1),
            reward=None if ctx.reward is None else ctx.reward.expand(R, X, A)[rows, prompts].unsqueeze(1),
        ),
    )
    if sub.pair_weight is not None and ctx.reward is not None:  # distillation's soft table, picked, not taken again

        def pick(table: Tensor) -> Tensor:
            return table.expand(R, X, *table.shape[2:])[rows, prompts].unsqueeze(1)

        carry_distillation_weights(
            problem._pair_cache,
            problem.pair_weight,
            ctx.reward.to(theta.dtype),
            sub._pair_cache,
            sub.pair_weight,
            sub.ctx.reward.to(theta.dtype),
            pick,
        )
    sub_gap, sub_logp = mass_moves(sub, theta[rows, prompts].unsqueeze(1))
    gap = torch.full((R, X), float("nan"), dtype=theta.dtype, device=theta.device)
    gap[rows, prompts] = sub_gap[:, 0]
    moved_logp = torch.log_softmax(theta, dim=-1)
    moved_logp[rows, prompts] = sub_logp[:, 0]
    return gap, moved_logp


def _kkt_direction(grad: Tensor, hess: Tensor, logp: Tensor, reduced: Tensor) -> tuple[Tensor, Tensor]:
    """Newton on the KKT residual per block, and [..] bool where it is a finite descent direction.

    In the logits a response's row of the gradient and Hessian both carry its mass
    pi_a (g = pi ∘ v), so a response of tiny mass whose objective wants mass (v_a < 0)
    is invisible to −H⁻¹g once pi_a is below the regularization floor.  Newton on the
    residual v itself removes the factor: since ∂g/∂theta = diag(pi) ∂v/∂theta +
    diag(v)(diag(pi) − pi piᵀ), the step Δ with ∂v/∂theta Δ = −v in the rows where
    v_a < 0 solves M Δ = −g with M = H − diag(min(v, 0))(diag(pi) − pi piᵀ); the rows
    are scaled by their largest entry (which removes pi_a) and the gauge (M 1 = 0) is
    fixed by not moving the most probable response.  At a KKT point v = 0 on the
    support and M = H, so the local quadratic rate is kept.  Returns None where that
    step is not a finite descent direction (`NewtonProblem.newton` then takes the
    Hessian step alone; elsewhere it line-searches both and keeps the better).
    """
    A = grad.shape[-1]
    probs = logp.exp()
    wanting = torch.where(torch.isfinite(reduced), reduced.clamp_max(0.0), torch.zeros_like(reduced))
    # system = H − diag(wanting) (diag(p) − ppᵀ), with the pinned response's row and column those
    # of the identity, each row scaled by its largest entry: built in one [.., A, A] buffer.
    system = torch.mul(probs.unsqueeze(-1), probs.unsqueeze(-2)).neg_()  # the Jacobian off the diagonal
    jacobian_diagonal = probs - probs * probs
    system.diagonal(dim1=-2, dim2=-1).copy_(jacobian_diagonal)
    system.mul_(wanting.unsqueeze(-1))
    torch.sub(hess, system, out=system)
    rhs = -grad
    pinned = torch.nn.functional.one_hot(probs.argmax(dim=-1), A).to(torch.bool)
    system.masked_fill_(pinned.unsqueeze(-1), 0.0).masked_fill_(pinned.unsqueeze(-2), 0.0)
    system.diagonal(dim1=-2, dim2=-1).masked_fill_(pinned, 1.0)
    rhs = torch.where(pinned, torch.zeros_like(rhs), rhs)
    row_scale = torch.maximum(system.amax(dim=-1), system.amin(dim=-1).neg()).clamp_min(1e-300)
    system.div_(row_scale.unsqueeze(-1))
    rhs = rhs / row_scale
    solution, info = torch.linalg.solve_ex(system, rhs.unsqueeze(-1))
    kkt = solution.squeeze(-1)
    kkt = kkt - kkt.mean(dim=-1, keepdim=True)
    slope = (grad * kkt).sum(dim=-1)
    usable = (info == 0) & torch.isfinite(kkt).all(dim=-1) & (slope < 0)
    return torch.where(usable.unsqueeze(-1), kkt, torch.zeros_like(kkt)), usable


_SHIFTS = tuple(10.0**exponent for exponent in range(-8, 3))
"""Levenberg–Marquardt shifts of `_hessian_direction`, relative to the block's scale, tried in turn."""


def _shifted_direction(blocks: Tensor, grad: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """(−(H + mu·I)⁻¹g [N, A] with the smallest mu in `_SHIFTS`·scale that Cholesky accepts, [N] bool solved)."""
    solved = torch.zeros(blocks.shape[:-2], dtype=torch.bool, device=blocks.device)
    direction = torch.zeros_like(grad)
    for shift in _SHIFTS:
        pending = (~solved).nonzero().squeeze(-1)
        trial = blocks[pending]
        trial.diagonal(dim1=-2, dim2=-1).add_(scale[pending] * shift)
        factor, info = torch.linalg.cholesky_ex(trial, upper=True)
        ok = info == 0
        done = pending[ok]
        direction[done] = -torch.cholesky_solve(grad[done].unsqueeze(-1), factor[ok], upper=True).squeeze(-1)
        solved[done] = True
        if bool(solved.all()):
            break
    return direction, solved


def _hessian_direction(grad: Tensor, hess: Tensor) -> Tensor:
    """Newton direction −H⁻¹g per block, the gauge direction (adding a constant to the logits) projected out.

    Blocks are solved by Cholesky of H + (s/A)·11ᵀ + `_FLOOR`·s·I (s the block's
    scale); the 11ᵀ term removes the gauge null space without changing the
    step, since g ⊥ 1.  Blocks where that fails (an indefinite Hessian: the
    KL term is not convex in the logits) add mu·I, mu the smallest of
    `_SHIFTS`·s that makes the block positive definite (Levenberg–Marquardt:
    a Cholesky per rung, not an eigendecomposition, which costs some ten);
    blocks where none does use |eigenvalues|.  All read only the upper triangle
    (and the diagonal) of the symmetric H, which is all that
    `LogitObjective.derivatives(..., upper_only=True)` guarantees; H is
    overwritten: the shift is added in place, without an [.., A, A] temporary.
    """
    A = grad.shape[-1]
    scale = hess.diagonal(dim1=-2, dim2=-1).abs().amax(dim=-1).clamp_min(1.0)[..., None, None]
    shift = scale * (1.0 / A)
    regularized = hess.add_(shift)
    regularized.diagonal(dim1=-2, dim2=-1).add_(scale[..., 0] * _FLOOR)
    factor, info = torch.linalg.cholesky_ex(regularized, upper=True)
    direction = -torch.cholesky_solve(grad.unsqueeze(-1), factor, upper=True).squeeze(-1)
    failed = info > 0
    if failed.any():
        index = failed.nonzero(as_tuple=True)
        direction[index], solved = _shifted_direction(regularized[index], grad[index], scale[index][..., 0])
        failed[index] = ~solved
    if failed.any():
        hess = regularized[failed]
        hess.diagonal(dim1=-2, dim2=-1).sub_(scale[failed][..., 0] * _FLOOR)
        eigenvalues, vectors = torch.linalg.eigh(hess.sub_(shift[failed]), UPLO="U")
        floor = eigenvalues.abs().amax(dim=-1, keepdim=True).clamp_min(1.0) * 1e-8
        inverse = 1.0 / torch.maximum(eigenvalues.abs(), floor)
        coeff = (vectors.transpose(-1, -2) @ grad[failed].unsqueeze(-1)).squeeze(-1)
        direction[failed] = -(vectors @ (inverse * coeff).unsqueeze(-1)).squeeze(-1)
    direction = torch.where(torch.isfinite(direction), direction, torch.zeros_like(direction))
    return direction - direction.mean(dim=-1, keepdim=True)
