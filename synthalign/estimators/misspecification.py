"""Misspecified reward classes: linear-feature Bradley–Terry rewards, their approximation floor, over-optimization.

The paper's rates (spec §4) assume realizability (A1: π* ∈ Π, and R* ∈ ℛ for the reward class).  With a
restricted class ℛ_φ = {R(x, a) = φ(x, a)·w : w ∈ R^d} (features φ [X, A, d]) the reward model of eq. 9
converges, as n → ∞, to the population minimizer R̂∞ = argmin_{R ∈ ℛ_φ} E[−ln σ(R(a⁺) − R(a⁻))], and
π_{R̂n} → π_{R̂∞} ≠ π*.  So the error splits as

    E KL(π* ‖ π_{R̂n}) ≈ KL(π* ‖ π_{R̂∞})  +  c / n        (approximation floor + estimation error),

the floor exact here (`approximation_floor`) and the 1/n part measured (`synthalign.experiments.misspecification`).

* `feature_reward_fit(data, features, ridge)`: the BT maximum-likelihood w over labelled counts, batched over
  replicates, by Newton's method on the convex logistic loss (ridge/2 · |w|² on the summed loss).
* `overoptimization_curve(world, reward, betas)`: RLHF's optimum π_β ∝ π0 exp(R̂/β) (eq. 1) over a grid of
  β, with its KL(π_β ‖ π0), the proxy gain E_{π_β} R̂ − E_{π0} R̂, the true win rate P(π_β ≻ π0) under the
  world's law and KL(π* ‖ π_β): the over-optimization curve of Gao, Schulman, Hilton 2023 (arXiv
  2210.10760), exact.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from synthalign._checks import as_tensor, check_positive
from synthalign.metrics import forward_kl, kl_divergence
from synthalign.theory.closed_forms import reward_policy, rlhf_policy
from synthalign.worlds.datasets import PreferenceData
from synthalign.worlds.preferences import preference_matrix

__all__ = ["FeatureFit", "approximation_floor", "feature_reward_fit", "overoptimization_curve", "random_features"]


def random_features(n_prompts: int, n_responses: int, dim: int, *, seed: int = 0, dtype=torch.float64) -> Tensor:
    """φ(x, a) i.i.d. N(0, 1) in R^dim, [X, A, dim]: a linear reward class of dimension dim."""
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(n_prompts, n_responses, dim, generator=generator, dtype=torch.float64).to(dtype)


@dataclasses.dataclass(frozen=True)
class FeatureFit:
    """A fitted linear-feature reward: weights [R, d], reward [R, X, A] (centred per prompt), convergence."""

    weights: Tensor
    reward: Tensor
    converged: Tensor
    iterations: int


def feature_reward_fit(
    data: PreferenceData, features: Tensor, *, ridge: float = 0.0, tol: float = 1e-10, max_iterations: int = 100
) -> FeatureFit:
    """argmin_w Σ_cells counts · softplus(−(φ(x,a⁺) − φ(x,a⁻))·w) + ridge/2 |w|² (eq. 9 over ℛ_φ), per replicate.

    Newton's method with a halving line search; the gradient −Σ c σ(−m) Δφ and Hessian Σ c σ(m)σ(−m) Δφ Δφᵀ
    (m = Δφ·w) are written out.  Without a ridge the minimizer is finite when the data are not separable
    in ℛ_φ (always so for a population law of full support).
    """
    if not isinstance(data, PreferenceData):
        raise ValueError(f"data must be a PreferenceData, got {type(data).__name__}")
    features = as_tensor(features, "features", dtype=data.counts.dtype, device=data.counts.device)
    R, X, A, _ = data.counts.shape
    if features.dim() != 3 or features.shape[:2] != (X, A):
        raise ValueError(f"features must have shape [X={X}, A={A}, d], got {tuple(features.shape)}")
    ridge = check_positive(ridge, "ridge", allow_zero=True)
    d = features.shape[-1]
    diff = features.unsqueeze(2) - features.unsqueeze(1)  # [X, A, A, d]: φ(a⁺) − φ(a⁻)
    counts = data.counts

    def loss(w):
        margin = torch.einsum("xabd,rd->rxab", diff, w)
        return (counts * torch.nn.functional.softplus(-margin)).sum(dim=(1, 2, 3)) + 0.5 * ridge * w.square().sum(-1)

    w = torch.zeros(R, d, dtype=counts.dtype, device=counts.device)
    eye = torch.eye(d, dtype=counts.dtype, device=counts.device)
    converged = torch.zeros(R, dtype=torch.bool, device=counts.device)
    iterations = 0
    for _ in range(max_iterations):
        iterations += 1
        margin = torch.einsum("xabd,rd->rxab", diff, w)
        grad = -torch.einsum("rxab,xabd->rd", counts * torch.sigmoid(-margin), diff) + ridge * w
        curvature = counts * torch.sigmoid(margin) * torch.sigmoid(-margin)
        hessian = torch.einsum("rxab,xabd,xabe->rde", curvature, diff, diff) + (ridge + 1e-12) * eye
        converged = grad.abs().amax(-1) <= tol * counts.sum(dim=(1, 2, 3)).clamp_min(1.0)
        if bool(converged.all()):
            break
        step = -torch.linalg.solve(hessian, grad.unsqueeze(-1)).squeeze(-1)
        scale = torch.ones(R, 1, dtype=w.dtype, device=w.device)
        current = loss(w)
        for _ in range(40):
            worse = loss(w + scale * step) > current + 1e-15 * current.abs()
            if not worse.any():
                break
            scale = torch.where(worse.unsqueeze(-1), scale / 2, scale)
        w = torch.where(converged.unsqueeze(-1), w, w + scale * step)
    reward = torch.einsum("xad,rd->rxa", features, w)
    reward = reward - reward.mean(-1, keepdim=True)
    return FeatureFit(w, reward, converged, iterations)


def approximation_floor(world, features: Tensor, *, ridge: float = 0.0) -> dict:
    """The n → ∞ limit: R̂∞ fitted on the population law, π_{R̂∞} ∝ exp(R̂∞/γ), and KL(π* ‖ π_{R̂∞})."""
    fit = feature_reward_fit(world.population_preferences(), features, ridge=ridge)
    policy = reward_policy(fit.reward[0], world.gamma, world.prompt_dist)
    return {"reward": fit.reward[0], "policy": policy, "floor": float(forward_kl(world.target, policy))}


def overoptimization_curve(world, reward: Tensor, betas) -> dict:
    """RLHF optima π_β ∝ π0 exp(R̂/β) over `betas`: KL(π_β‖π0), proxy gain, true win rate vs π0, KL(π*‖π_β).

    The true win rate is P(π_β ≻ π0) = E_x Σ_ab π_β(a) π0(b) P(a ≻ b | x) under the world's law.
    """
    reward = as_tensor(reward, "reward", dtype=world.dtype, device=world.device)
    betas = as_tensor(betas, "betas", dtype=world.dtype, device=world.device)
    if betas.dim() != 1 or not (betas > 0).all():
        raise ValueError("betas must be a 1-D tensor of positive numbers")
    ref = world.reference
    logp = torch.stack([rlhf_policy(reward, ref, float(beta)).logp for beta in betas])  # a short grid
    policies = logp.exp()
    kl_ref = kl_divergence(logp, ref.logp, prompt_dist=world.prompt_dist)
    proxy = ((policies - ref.probs) * reward).sum(-1) @ world.prompt_dist
    wins = torch.einsum("bxa,xc,xac->bx", policies, ref.probs, preference_matrix(world)) @ world.prompt_dist
    kl_target = kl_divergence(world.target.logp.expand_as(logp), logp, prompt_dist=world.prompt_dist)
    return {"beta": betas, "kl_reference": kl_ref, "proxy_gain": proxy, "true_win_rate": wins, "kl_target": kl_target}
