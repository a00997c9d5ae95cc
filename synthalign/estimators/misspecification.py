"""Misspecified reward classes: linear-feature Bradley–Terry rewards, their approximation floor, over-optimization.

The paper's rates (spec §4) assume realizability (A1: π* ∈ Π, and R* ∈ ℛ for the reward class).  With a
restricted class ℛ_φ = {R(x, a) = φ(x, a)·w : w ∈ R^d} (features φ [X, A, d]) the reward model of eq. 9
converges, as n → ∞, to the population minimizer R̂∞ = argmin_{R ∈ ℛ_φ} E[−ln σ(R(a⁺) − R(a⁻))], and
π_{R̂n} → π_{R̂∞} ≠ π*.  So the error splits as

    E KL(π* ‖ π_{R̂n}) ≈ KL(π* ‖ π_{R̂∞})  +  c / n        (approximation floor + estimation error),

the floor exact here (`approximation_floor`) and the 1/n part measured (`synthalign.experiments.misspecification`).

* `feature_reward_fit(data, features, ridge)`: the BT maximum-likelihood w over labelled counts, batched over
  replicates, by Newton's method on the convex logistic loss (ridge/2 · |w|² on the summed loss).
* `LowRankClass(rank)`: the low-rank class R = c(x) + U Vᵀ (rank k), fitted by damped Newton on (U, V)
  from several starts; `fit_reward_class` fits either kind.
* `overoptimization_curve(world, reward, betas)`: RLHF's optimum π_β ∝ π0 exp(R̂/β) (eq. 1) over a grid of
  β, with its KL(π_β ‖ π0), the proxy gain E_{π_β} R̂ − E_{π0} R̂, the true win rate P(π_β ≻ π0) under the
  world's law and KL(π* ‖ π_β): the over-optimization curve of Gao, Schulman, Hilton 2023 (arXiv
  2210.10760), exact.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthalign._checks import as_tensor, check_positive
from synthalign._types import ArrayLike
from synthalign.metrics import forward_kl, kl_divergence
from synthalign.theory.closed_forms import reward_policy, rlhf_policy
from synthalign.worlds.datasets import PreferenceData
from synthalign.worlds.preferences import preference_matrix

if TYPE_CHECKING:
    from synthalign._types import RewardClass
    from synthalign.worlds.tabular import World

__all__ = [
    "FeatureFit",
    "LowRankClass",
    "approximation_floor",
    "feature_reward_fit",
    "fit_reward_class",
    "overoptimization_curve",
    "random_features",
    "warm_started",
]


def random_features(
    n_prompts: int, n_responses: int, dim: int, *, seed: int = 0, dtype: torch.dtype = torch.float64
) -> Tensor:
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
    data: PreferenceData,
    features: Tensor,
    *,
    ridge: float = 0.0,
    tol: float = 1e-10,
    max_iterations: int = 100,
    init: Tensor | None = None,
) -> FeatureFit:
    """argmin_w Σ_cells counts · softplus(−(φ(x,a⁺) − φ(x,a⁻))·w) + ridge/2 |w|² (eq. 9 over ℛ_φ), per replicate.

    Newton's method with a halving line search; the gradient −Σ c σ(−m) Δφ and Hessian Σ c σ(m)σ(−m) Δφ Δφᵀ
    (m = Δφ·w) are written out.  Without a ridge the minimizer is finite when the data are not separable
    in ℛ_φ (always so for a population law of full support).  `features` is [X, A, d], or [R, X, A, d]
    with one feature map per replicate (the low-rank fit's alternating steps); `init` starts w ([R, d]).
    """
    if not isinstance(data, PreferenceData):
        raise ValueError(f"data must be a PreferenceData, got {type(data).__name__}")
    features = as_tensor(features, "features", dtype=data.counts.dtype, device=data.counts.device)
    R, X, A, _ = data.counts.shape
    if (
        features.dim() not in (3, 4)
        or features.shape[-3:-1] != (X, A)
        or (features.dim() == 4 and features.shape[0] != R)
    ):
        raise ValueError(f"features must have shape [X={X}, A={A}, d] or [R={R}, X, A, d], got {tuple(features.shape)}")
    ridge = check_positive(ridge, "ridge", allow_zero=True)
    features = features.expand(R, *features.shape[-3:])
    d = features.shape[-1]
    diff = features.unsqueeze(3) - features.unsqueeze(2)  # [R, X, A, A, d]: φ(a⁺) − φ(a⁻)
    counts = data.counts

    def loss(w):
        margin = torch.einsum("rxabd,rd->rxab", diff, w)
        return (counts * torch.nn.functional.softplus(-margin)).sum(dim=(1, 2, 3)) + 0.5 * ridge * w.square().sum(-1)

    if init is None:
        w = torch.zeros(R, d, dtype=counts.dtype, device=counts.device)
    else:
        w = as_tensor(init, "init", dtype=counts.dtype, device=counts.device).expand(R, d).clone()
    eye = torch.eye(d, dtype=counts.dtype, device=counts.device)
    converged = torch.zeros(R, dtype=torch.bool, device=counts.device)
    iterations = 0
    for _ in range(max_iterations):
        iterations += 1
        margin = torch.einsum("rxabd,rd->rxab", diff, w)
        grad = -torch.einsum("rxab,rxabd->rd", counts * torch.sigmoid(-margin), diff) + ridge * w
        curvature = counts * torch.sigmoid(margin) * torch.sigmoid(-margin)
        hessian = torch.einsum("rxab,rxabd,rxabe->rde", curvature, diff, diff) + (ridge + 1e-12) * eye
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
    reward = torch.einsum("rxad,rd->rxa", features, w)
    reward = reward - reward.mean(-1, keepdim=True)
    return FeatureFit(w, reward, converged, iterations)


@dataclasses.dataclass(frozen=True)
class LowRankClass:
    """The reward class ℛ_k = {R(x, a) = c(x) + U[x]·V[a] : U ∈ R^{X×k}, V ∈ R^{A×k}}: rank-k reward matrices.

    The Bradley–Terry likelihood sees R only through R(x, a) − R(x, b) = U[x]·(V[a] − V[b]), so c(x) is free
    and ℛ_k is realizable (contains R* = γ ln π* up to c(x)) once k ≥ min(X, A − 1).  Not a linear class
    and not convex in (U, V): `fit` runs a damped (Levenberg–Marquardt) Newton iteration on the joint
    parameters — exact gradient and Hessian by automatic differentiation, batched over replicates, the
    damping λ divided by 3 after an accepted step and multiplied by 3 after a rejected one — from
    `restarts` random starts, and keeps per replicate the start of the lowest penalized loss.

    Attributes:
      rank: k.
      restarts: random starts (the best one is kept).
      max_iterations: damped Newton steps per start.
      tol: the fit counts as converged when max |gradient| ≤ tol · (total count).
      seed: seed of the starts.
      init: a start (U, V) flattened, [(X + A)·k] (e.g. the population fit's `FeatureFit.weights[0]`):
        then the one start, no random restarts — near the population optimum Newton converges in a few
        steps, which makes fits on large samples cheap (a small sample may prefer another basin).
    """

    rank: int
    restarts: int = 2
    max_iterations: int = 100
    tol: float = 1e-7
    seed: int = 0
    init: Tensor | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        for name in ("rank", "restarts", "max_iterations"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def fit(self, data: PreferenceData, *, ridge: float = 0.0) -> FeatureFit:
        """The penalized BT fit (ridge/2 (|U|² + |V|²) on the summed loss) in ℛ_k, per replicate."""
        if not isinstance(data, PreferenceData):
            raise ValueError(f"data must be a PreferenceData, got {type(data).__name__}")
        ridge = check_positive(ridge, "ridge", allow_zero=True)
        counts = data.counts
        R, X, A, _ = counts.shape
        k, dtype, device = self.rank, counts.dtype, counts.device
        size = (X + A) * k

        def loss(theta: Tensor, cell_counts: Tensor) -> Tensor:  # one replicate: theta [size]
            u, v = theta[: X * k].reshape(X, k), theta[X * k :].reshape(A, k)
            reward = u @ v.T
            margin = reward.unsqueeze(-1) - reward.unsqueeze(-2)
            penalty = 0.5 * ridge * theta.square().sum()
            return (cell_counts * torch.nn.functional.softplus(-margin)).sum() + penalty

        grad_fn = torch.func.vmap(torch.func.grad(loss))
        # Reverse over reverse, not `torch.func.hessian` (forward over reverse): forward-mode AD levels are
        # process-global and break when work items run in threads (a thread pool, Dask threads).
        hess_fn = torch.func.vmap(torch.func.jacrev(torch.func.grad(loss)))
        value_fn = torch.func.vmap(loss)
        eye = torch.eye(size, dtype=dtype, device=device)
        scale = self.tol * counts.sum(dim=(1, 2, 3)).clamp_min(1.0)
        generator = torch.Generator().manual_seed(self.seed)
        best_value = best_theta = best_converged = None
        for _ in range(1 if self.init is not None else self.restarts):
            if self.init is not None:
                theta = (
                    as_tensor(self.init, "init", dtype=dtype, device=device).reshape(1, size).expand(R, size).clone()
                )
            else:
                theta = torch.randn(R, size, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)
            damping = torch.ones(R, dtype=dtype, device=device)
            value = value_fn(theta, counts)
            converged = torch.zeros(R, dtype=torch.bool, device=device)
            for _ in range(self.max_iterations):
                grad = grad_fn(theta, counts)
                converged = grad.abs().amax(-1) <= scale
                if bool(converged.all()):
                    break
                hessian = hess_fn(theta, counts)
                # H + λ(|diag H| + 1) I: positive definite for λ large enough, Newton as λ → 0.
                shift = (
                    damping[:, None, None] * (hessian.diagonal(dim1=-2, dim2=-1).abs().amax(-1) + 1.0)[:, None, None]
                )
                step = -torch.linalg.solve(hessian + shift * eye, grad.unsqueeze(-1)).squeeze(-1)
                trial = theta + step
                trial_value = value_fn(trial, counts)
                accept = (trial_value < value) & ~converged & torch.isfinite(trial_value)
                theta = torch.where(accept[:, None], trial, theta)
                value = torch.where(accept, trial_value, value)
                damping = torch.where(accept, damping / 3, damping * 3).clamp(1e-12, 1e12)
            if best_value is None:
                best_value, best_theta, best_converged = value, theta, converged
            else:
                better = value < best_value
                best_value = torch.where(better, value, best_value)
                best_theta = torch.where(better[:, None], theta, best_theta)
                best_converged = torch.where(better, converged, best_converged)
        u, v = best_theta[:, : X * k].reshape(R, X, k), best_theta[:, X * k :].reshape(R, A, k)
        reward = torch.einsum("rxk,rak->rxa", u, v)
        reward = reward - reward.mean(-1, keepdim=True)
        return FeatureFit(best_theta, reward, best_converged, self.max_iterations)


def _bt_loss(data: PreferenceData, reward: Tensor) -> Tensor:
    """Σ_cells counts · softplus(−(R(a⁺) − R(a⁻))), per replicate, [R]."""
    margin = reward.unsqueeze(-1) - reward.unsqueeze(-2)
    return (data.counts * torch.nn.functional.softplus(-margin)).sum(dim=(1, 2, 3))


def warm_started(reward_class: RewardClass, floor: dict) -> RewardClass:
    """A `LowRankClass` started at the population fit of `approximation_floor`'s result; other classes unchanged."""
    if isinstance(reward_class, LowRankClass):
        return dataclasses.replace(reward_class, init=floor["parameters"])
    return reward_class


def fit_reward_class(data: PreferenceData, reward_class: RewardClass, *, ridge: float = 0.0) -> FeatureFit:
    """The BT fit in a reward class: features [X, A, d] (a linear class) or a `LowRankClass`."""
    if isinstance(reward_class, LowRankClass):
        return reward_class.fit(data, ridge=ridge)
    return feature_reward_fit(data, reward_class, ridge=ridge)


def approximation_floor(world: World, features: RewardClass, *, ridge: float = 0.0) -> dict:
    """The n → ∞ limit: R̂∞ fitted on the population law, π_{R̂∞} ∝ exp(R̂∞/γ), and KL(π* ‖ π_{R̂∞}).

    `features`: a linear class's features [X, A, d], or a `LowRankClass`.
    """
    fit = fit_reward_class(world.population_preferences(), features, ridge=ridge)
    policy = reward_policy(fit.reward[0], world.gamma, world.prompt_dist)
    floor = float(forward_kl(world.target, policy))
    return {"reward": fit.reward[0], "policy": policy, "floor": floor, "parameters": fit.weights[0]}


def overoptimization_curve(world: World, reward: ArrayLike, betas: ArrayLike) -> dict:
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
