"""Exact online DPO under a pair sampler: which sampler makes the iteration converge, and how fast.

Where `synthalign.estimators.onpolicy` samples pairs from the current policy and follows a stochastic
gradient, the iteration here sums DPO's pair loss (eq. 6) exactly over the pair law of a sampler —
uniform, on-policy, or a mixture tilted by the true or the implicit reward — and takes exact gradient
steps per prompt, so that the samplers' convergence rates are compared without sampling noise
(`dpo_linear_rate` predicts the linear ones).  The pair law is held at π_t within a step: the
semi-gradient of `synthalign.estimators.gradient_check`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthalign.objectives.paper import dpo_loss
from synthalign.worlds.preferences import preference_matrix

if TYPE_CHECKING:
    from synthalign.worlds.tabular import World

__all__ = ["DPO_SAMPLERS", "sampler_pair_weights", "dpo_linear_rate", "SamplerRun", "exact_online_dpo"]

DPO_SAMPLERS = ("uniform", "onpolicy", "mix_reward", "mix_policy")


def _tilted_mixture(tilt: Tensor) -> tuple[Tensor, Tensor]:
    """The mixed sampler of `sampler_pair_weights` for a tilt t [X, A]: (p [X, A, A], alpha [X])."""
    A = tilt.shape[-1]
    plus, minus = torch.log_softmax(tilt, dim=-1), torch.log_softmax(-tilt, dim=-1)
    # alpha = A² / (A² + Z₊Z₋), Z± = Σ_a e^{±t(a)}, in log space.
    log_z = torch.logsumexp(tilt, dim=-1) + torch.logsumexp(-tilt, dim=-1)
    alpha = torch.sigmoid(2.0 * torch.log(torch.tensor(float(A), dtype=tilt.dtype)) - log_z)
    tilted = (plus[..., :, None] + minus[..., None, :]).exp()
    return alpha[..., None, None] / A**2 + (1.0 - alpha[..., None, None]) * tilted, alpha


def sampler_pair_weights(sampler: str, logp: Tensor, world: World) -> tuple[Tensor, Tensor | None]:
    """The law p(a, b | x) of the ordered pair (first a, second b) an online DPO sampler draws, [X, A, A].

    * "uniform": a, b i.i.d. uniform over the responses (the paper's DPO-Unif);
    * "onpolicy": a, b i.i.d. from the current policy π_t;
    * "mix_reward", "mix_policy": the mixture α U ⊗ U + (1 − α) π₊ ⊗ π₋ of the uniform pair with a
      tilted pair, π₊ ∝ e^{t}, π₋ ∝ e^{−t}, for a tilt t: the true reward r* = γ ln π* ("mix_reward")
      or the current implicit reward h_t = γ ln(π_t/π0) ("mix_policy"), and α = A²/(A² + Z₊Z₋),
      Z± = Σ_a e^{±t(a)}.

    **Decision** (the exact formulas of Shi, Zhou, Du 2024, arXiv 2409.19605, "DPO-Mix-R" and
    "DPO-Mix-P", were not available here): the mixed samplers are defined by the property their
    quadratic convergence rests on — the symmetrized pair weight is then
    p(a, b) + p(b, a) = (α/A²)(2 + e^{Δt} + e^{−Δt}) = (α/A²) / σ'(Δt), Δt = t(a) − t(b), which
    cancels the curvature σ'(Δr) of the logistic loss, so that the exact gradient step of
    `exact_online_dpo` is a Newton step at the optimum; α is the one mixing weight that gives exactly
    that.  Returns (p, α [X]) — α None for the unmixed samplers.
    """
    if sampler not in DPO_SAMPLERS:
        raise ValueError(f"sampler must be one of {DPO_SAMPLERS}, got {sampler!r}")
    A = logp.shape[-1]
    if sampler == "uniform":
        return torch.full((*logp.shape, A), 1.0 / A**2, dtype=logp.dtype, device=logp.device), None
    if sampler == "onpolicy":
        probs = logp.detach().exp()
        return probs[..., :, None] * probs[..., None, :], None
    if sampler == "mix_reward":
        tilt = world.true_reward
    else:
        tilt = world.gamma * (logp.detach() - world.reference.logp)
    if not torch.isfinite(tilt).all():
        raise ValueError(f"sampler {sampler!r} needs a finite tilt: pi* and pi0 need full support")
    return _tilted_mixture(tilt)


def _dpo_population_loss(logp: Tensor, pair_law: Tensor, world: World) -> Tensor:
    """Σ_ab p(a, b)[P(a ≻ b) ℓ(a, b) + P(b ≻ a) ℓ(b, a)] per prompt, ℓ = DPO's pair loss (eq. 6), [X]."""
    ref = world.reference.logp
    first_wins = preference_matrix(world)

    def loss(chosen: Tensor, rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor) -> Tensor:
        return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, gamma=world.gamma, reduction="none")

    a, b = logp[..., :, None].expand(pair_law.shape), logp[..., None, :].expand(pair_law.shape)
    ref_a, ref_b = ref[..., :, None].expand(pair_law.shape), ref[..., None, :].expand(pair_law.shape)
    per_pair = first_wins * loss(a, b, ref_a, ref_b) + (1.0 - first_wins) * loss(b, a, ref_b, ref_a)
    return (pair_law * per_pair).sum(dim=(-1, -2))


def dpo_linear_rate(world: World, sampler: str) -> tuple[Tensor, Tensor]:
    """(optimal constant step η [X], linear contraction ρ [X]) of exact online DPO at its limit.

    Near the limit π_lim ∝ π0 π* the error e = h − r* (h = γ ln π/π0, centred per prompt) follows
    e ← (I − η γ² L) e, L the Laplacian of the weights W_ab = (p(a, b) + p(b, a)) σ'(Δr*_ab) of the
    sampler's pair law at π_lim; on centred vectors its eigenvalues are those of L but the 0.  The best
    constant step is η = 2/(γ²(λ₂ + λ_max)), contracting by ρ = (λ_max − λ₂)/(λ_max + λ₂) per step.
    For the mixed samplers W is constant (α/A²), λ₂ = λ_max and ρ = 0: faster than linear.
    """
    limit = _dpo_limit(world)
    pair_law, _ = sampler_pair_weights(sampler, limit, world)
    r = world.true_reward
    delta = r[..., :, None] - r[..., None, :]
    weights = (pair_law + pair_law.transpose(-1, -2)) * torch.sigmoid(delta) * torch.sigmoid(-delta)
    laplacian = torch.diag_embed(weights.sum(-1)) - weights
    eigenvalues = torch.linalg.eigvalsh(laplacian)  # ascending; the first is 0 (constant vector)
    low, high = eigenvalues[..., 1], eigenvalues[..., -1]
    return 2.0 / (world.gamma**2 * (low + high)), (high - low) / (high + low)


def _dpo_limit(world: World) -> Tensor:
    """DPO's population minimizer under any full-support pair law of the BT world: π ∝ π0 π*."""
    if world.law is not None and type(world.law).__name__ != "BradleyTerry":
        raise ValueError("exact_online_dpo compares samplers on spec §1's Bradley–Terry law (world.law None)")
    return torch.log_softmax(world.reference.logp + world.target.logp, dim=-1)


@dataclasses.dataclass(frozen=True)
class SamplerRun:
    """Exact online DPO under one pair sampler.

    Attributes:
      sampler: one of `DPO_SAMPLERS`.
      logp: iterates π_0 … π_T, [T+1, X, A].
      error: max over prompts and responses of |centred γ ln(π_t/π_lim)|, π_lim ∝ π0 π*, [T+1].
      eta: the step per prompt of the linear samplers ([X]), None for the mixed ones (Newton step).
      rate: the predicted linear contraction ρ per prompt (`dpo_linear_rate`), [X].
    """

    sampler: str
    logp: Tensor
    error: Tensor
    eta: Tensor | None
    rate: Tensor


def exact_online_dpo(world: World, sampler: str, *, iterations: int, start: Tensor | None = None) -> SamplerRun:
    """Gradient descent in the logits on each prompt's exact online DPO loss under `sampler`'s pair law.

    Each step recomputes the pair law at π_t (held fixed within the step: the semi-gradient of
    `gradient_check`, summed exactly instead of sampled), labels from the world's BT law, and steps
    θ_x ← θ_x − η_x ∇_{θ_x} L_x per prompt (the problem separates over x; the paper analyses one).
    Steps: the linear samplers use their best constant step at the limit (`dpo_linear_rate`); the
    mixed samplers use η = A/(γ² α_t), the Newton step of their curvature-cancelling weights
    (`sampler_pair_weights`).  `start`: initial log-probabilities (default π0).
    """
    if not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    limit = _dpo_limit(world)
    eta, rate = dpo_linear_rate(world, sampler)
    mixed = sampler.startswith("mix")
    theta = (world.reference.logp if start is None else torch.as_tensor(start, dtype=world.dtype)).clone()
    A = theta.shape[-1]
    iterates = [torch.log_softmax(theta, dim=-1)]
    for _ in range(iterations):
        leaf = theta.detach().requires_grad_(True)
        logp = torch.log_softmax(leaf, dim=-1)
        pair_law, alpha = sampler_pair_weights(sampler, logp, world)
        (grad,) = torch.autograd.grad(_dpo_population_loss(logp, pair_law, world).sum(), leaf)
        step = A / (world.gamma**2 * alpha) if mixed else eta
        theta = theta - step[..., None] * grad
        iterates.append(torch.log_softmax(theta, dim=-1))
    stacked = torch.stack(iterates)
    gap = stacked - limit
    error = world.gamma * (gap - gap.mean(-1, keepdim=True)).abs().amax(dim=(-1, -2))
    return SamplerRun(sampler, stacked, error, None if mixed else eta, rate)
