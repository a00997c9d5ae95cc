"""Targets under a general preference law: the symmetric preference game per prompt.

For a preference matrix P[x, a, b] = P(a ≻ b | x) with P + Pᵀ = 1, the preference game of Nash
learning from human feedback (Munos et al. 2023, arXiv 2312.00886, §3–4) is, per prompt,

    J(π, π') = P(π ≻ π') − β KL(π ‖ π0) + β KL(π' ‖ π0),   P(π ≻ π') = Σ_ab π(a) π'(b) P[a, b],

a symmetric constant-sum game (π maximizes, π' minimizes).  Its value is 1/2.

* β = 0: a Nash equilibrium is a von Neumann winner, a π with P(π ≻ b) ≥ 1/2 for every b
  (Dudík et al. 2015, "Contextual dueling bandits"); it is the optimum of a small linear programme,
  solved here per prompt with scipy's HiGHS (`von_neumann_winner`).  It need not be unique.
* β > 0: the game is strongly concave–convex and its Nash equilibrium is unique and symmetric,
  the fixed point π(a) ∝ π0(a) exp(P(a ≻ π)/β) (Munos et al. 2023, eq. in §4; the best response to
  π' is π0 exp(P(· ≻ π')/β)); `regularized_nash` solves it to float64 precision by Newton's method.
* `duality_gap(π)`: max_{π1} J(π1, π) − min_{π2} J(π, π2), the quantity the Nash-learning literature
  reports (Zhou, Fazel, Du 2025, arXiv 2503.08942, "EGPO", §2), in closed form:
      gap(π) = 2 M(π) + 2β KL(π ‖ π0) − 1,   M(π) = max_{π1} P(π1 ≻ π) − β KL(π1 ‖ π0)
             = β ln Σ_a π0(a) exp(P(a ≻ π)/β)     (Gibbs' variational principle; max_a P(a ≻ π) at β = 0),
  using P(π ≻ π2) = 1 − P(π2 ≻ π).  gap ≥ 0, with equality exactly at the equilibrium.  Averaged
  over prompts with D (the game separates over x).

Nothing here samples or fits; the iterations that approach these targets are
`synthalign.estimators.nash`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.optimize import linprog
from torch import Tensor

from synthalign._checks import check_int, check_positive
from synthalign._exports import flat_names
from synthalign.metrics import kl_per_prompt
from synthalign.worlds.laws import check_preference_matrix
from synthalign.worlds.policy import Policy, as_logp
from synthalign.worlds.preferences import preference_matrix

if TYPE_CHECKING:
    from synthalign.worlds.tabular import World

__all__ = [*flat_names(__name__), "game_matrix", "is_condorcet_winner", "win_rates"]

# Residual of the fixed-point equation (in log-probabilities) at which Newton stops: a few ulps
# of numbers of order ln A / β.
_NEWTON_TOL = 1e-12


def game_matrix(world_or_matrix: World | Tensor) -> Tensor:
    """P[x, a, b] of a world's law (`preference_matrix`), or a given tensor, checked (P + Pᵀ = 1)."""
    if isinstance(world_or_matrix, Tensor):
        return check_preference_matrix(world_or_matrix, "matrix")
    return preference_matrix(world_or_matrix)


def win_rates(matrix: Tensor, policy: Policy | Tensor) -> Tensor:
    """P(a ≻ π | x) = Σ_b P[x, a, b] π(b|x), [..., X, A]."""
    probs = as_logp(policy).exp()
    return torch.einsum("xab,...xb->...xa", matrix, probs)


def best_response(matrix: Tensor, policy: Policy | Tensor, reference: Policy | Tensor, beta: float) -> Policy:
    """argmax_{π1} P(π1 ≻ π) − β KL(π1 ‖ π0) = π0 · exp(P(· ≻ π)/β) normalized (β > 0)."""
    beta = check_positive(beta, "beta")
    ref = as_logp(reference, "reference")
    return Policy(torch.log_softmax(ref + win_rates(matrix, policy) / beta, dim=-1))


def is_condorcet_winner(matrix: Tensor) -> Tensor:
    """[X, A] booleans: response a beats every other response with probability > 1/2."""
    off_diagonal = ~torch.eye(matrix.shape[-1], dtype=torch.bool, device=matrix.device)
    return ((matrix > 0.5) | ~off_diagonal).all(dim=-1)


def von_neumann_winner(matrix: Tensor, prompt_dist: Tensor | None = None) -> Policy:
    """A Nash equilibrium of the unregularized game per prompt: max_π min_b P(π ≻ b), by linear programming.

    Variables (π, v): maximize v subject to Σ_a π(a) P[a, b] ≥ v for every b, Σ π = 1, π ≥ 0
    (the maximin LP of a matrix game, von Neumann 1928; Dudík et al. 2015 for dueling bandits).
    The optimum v is the game's value 1/2.  HiGHS returns a vertex; with several equilibria
    (ties) any one of them.  Raises RuntimeError when the solver fails.
    """
    matrix = check_preference_matrix(matrix, "matrix")
    if matrix.dim() != 3:
        raise ValueError(f"matrix must have shape [X, A, A], got {tuple(matrix.shape)}")
    X, A = matrix.shape[0], matrix.shape[-1]
    table = matrix.detach().to("cpu", torch.float64).numpy()
    cost = np.zeros(A + 1)
    cost[-1] = -1.0
    a_eq = np.concatenate([np.ones((1, A)), np.zeros((1, 1))], axis=1)
    bounds = [(0.0, None)] * A + [(None, None)]
    rows = []
    for x in range(X):  # one small LP per prompt
        a_ub = np.concatenate([-table[x].T, np.ones((A, 1))], axis=1)
        result = linprog(cost, A_ub=a_ub, b_ub=np.zeros(A), A_eq=a_eq, b_eq=[1.0], bounds=bounds, method="highs")
        if result.status != 0:
            raise RuntimeError(f"linprog failed on prompt {x}: {result.message}")
        rows.append(np.clip(result.x[:A], 0.0, None))
    probs = torch.as_tensor(np.stack(rows), dtype=matrix.dtype, device=matrix.device)
    probs = probs / probs.sum(-1, keepdim=True)
    return Policy(torch.log(probs), prompt_dist)


def regularized_nash(
    matrix: Tensor,
    reference: Policy | Tensor,
    beta: float,
    *,
    tol: float = _NEWTON_TOL,
    max_iterations: int = 200,
) -> Policy:
    """The unique Nash equilibrium of the β-regularized game (β > 0): π = π0 · exp(P(· ≻ π)/β) / Z.

    Newton's method on G(θ) = θ − ln π0 − P softmax(θ)/β in the logits θ, per prompt (batched).
    Its Jacobian I − P J/β, J = diag π − ππᵀ, equals I − S J/β with S = P − 1/2 skew-symmetric
    (1ᵀJ = 0), whose eigenvalues 1 − iλ/β (λ real: S J is similar to the skew J^½ S J^½) never
    vanish: each step is well defined.  For global convergence the iteration follows β down from
    a large value (where π ≈ π0) to the requested one, halving, each solve started at the last;
    at each β a damped step is accepted when it reduces |G|.  π0 needs full support (otherwise the
    equilibrium lives on π0's support: restrict the matrix first).  Raises RuntimeError when the
    residual does not reach `tol` · max(1, 1/β).
    """
    beta = check_positive(beta, "beta")
    max_iterations = check_int(max_iterations, "max_iterations")
    matrix = check_preference_matrix(matrix, "matrix")
    ref = as_logp(reference, "reference")
    prompt_dist = reference.prompt_dist if isinstance(reference, Policy) else None
    if not torch.isfinite(ref).all():
        raise ValueError("reference must have full support for regularized_nash")
    skew = matrix - 0.5
    schedule = [beta]
    while schedule[-1] < 4.0:
        schedule.append(schedule[-1] * 2.0)
    # The term P π / β is of size 1/β: its float64 rounding is of order 1e-16/β, so the
    # tolerance on the residual scales with max(1, 1/β).
    theta = ref.clone()
    for level in reversed(schedule):
        theta = _newton_fixed_point(theta, ref, skew, level, tol * max(1.0, 1.0 / level), max_iterations)
    tol = tol * max(1.0, 1.0 / beta)
    residual = _residual(theta, ref, skew, beta).abs().max()
    if not residual <= tol:
        raise RuntimeError(f"regularized_nash did not converge: residual {float(residual):.3g} > {tol:g}")
    return Policy(torch.log_softmax(theta, dim=-1), prompt_dist)


def _residual(theta: Tensor, ref: Tensor, skew: Tensor, beta: float) -> Tensor:
    """G(θ) centred per prompt: the fixed-point equation in log-probabilities, free of the normalizer."""
    probs = torch.softmax(theta, dim=-1)
    g = theta - ref - torch.einsum("xab,xb->xa", skew, probs) / beta
    return g - g.mean(dim=-1, keepdim=True)


def _newton_fixed_point(theta, ref, skew, beta, tol, max_iterations):
    eye = torch.eye(theta.shape[-1], dtype=theta.dtype, device=theta.device)
    residual = _residual(theta, ref, skew, beta)
    for _ in range(max_iterations):
        size = residual.abs().amax(dim=-1)
        if float(size.max()) <= tol:
            break
        probs = torch.softmax(theta, dim=-1)
        jac_softmax = torch.diag_embed(probs) - probs.unsqueeze(-1) * probs.unsqueeze(-2)
        jacobian = eye - skew @ jac_softmax / beta
        step = -torch.linalg.solve(jacobian, residual.unsqueeze(-1)).squeeze(-1)
        scale = torch.ones_like(size)
        for _ in range(30):  # backtracking per prompt until |G| decreases
            trial = theta + scale.unsqueeze(-1) * step
            trial_residual = _residual(trial, ref, skew, beta)
            worse = trial_residual.abs().amax(dim=-1) >= size
            worse &= size > tol
            if not worse.any():
                break
            scale = torch.where(worse, scale / 2, scale)
        theta, residual = trial, trial_residual
    return theta


def duality_gap(
    policy: Policy | Tensor,
    matrix: Tensor,
    *,
    beta: float = 0.0,
    reference: Policy | Tensor | None = None,
    prompt_dist: Tensor | None = None,
    per_prompt: bool = False,
) -> Tensor:
    """The exact duality gap of π in the β-regularized preference game (module docstring), [...].

    gap = 2 β ln Σ_a π0(a) e^{P(a ≻ π)/β} + 2 β KL(π ‖ π0) − 1 for β > 0, 2 max_a P(a ≻ π) − 1 at β = 0;
    averaged over prompts with `prompt_dist` (else the policy's, else uniform) unless `per_prompt`.
    """
    beta = check_positive(beta, "beta", allow_zero=True)
    logp = as_logp(policy)
    rates = win_rates(matrix, logp)
    if beta == 0.0:
        best = rates.amax(dim=-1)
        gap = 2.0 * best - 1.0
    else:
        if reference is None:
            raise ValueError("reference is needed for the regularized game (beta > 0)")
        ref = as_logp(reference, "reference")
        best = beta * torch.logsumexp(ref + rates / beta, dim=-1)
        gap = 2.0 * best + 2.0 * beta * kl_per_prompt(logp, ref) - 1.0
    if per_prompt:
        return gap
    if prompt_dist is None and isinstance(policy, Policy):
        prompt_dist = policy.prompt_dist
    if prompt_dist is None:
        return gap.mean(dim=-1)
    return (gap * prompt_dist).sum(dim=-1)
