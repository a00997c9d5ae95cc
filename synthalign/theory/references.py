"""Exact references for the paper's closed-form estimators on a finite world (spec §2, §5, §6.7).

* the closed-form optima of RLHF (eq. 1) and RKL (eq. 15) for a whole grid of beta at once,
  with their forward KL to pi* computed without a [beta, replicate, X, A] tensor of policies;
* RLHF's population floor min_beta KL(pi* ‖ pi0 · pi*^(gamma/beta)/Z), the dilemma of spec §2;
* the asymptotic constant c of RKL's (= the BT MLE's) forward KL ≈ c/n, from the Fisher
  information of the preference model.

Figure 1's experiment and the degeneracy and rates experiments measure against these.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from synthalign._checks import check_int, check_positive
from synthalign.metrics import average_over_prompts, expectation_per_prompt
from synthalign.worlds.preferences import population_preferences
from synthalign.worlds.tabular import World

__all__ = [
    "closed_form_coefficients",
    "closed_form_forward_kl",
    "closed_form_logits",
    "kl_target_reference",
    "rkl_asymptotic_constant",
    "rlhf_population_floor",
]


def closed_form_coefficients(method: str, betas: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """(weight of ln pi0, weight of R̂) in the log of the closed-form optimum, one pair per beta (spec §2).

    RLHF (eq. 1): p ∝ pi0 · exp(R̂/beta) → (1, 1/beta), beta > 0.
    RKL (eq. 15): p ∝ pi0^(beta/(beta+gamma)) · exp(R̂/(beta+gamma)) → (beta/(beta+gamma), 1/(beta+gamma));
    at beta = 0 this is pi_R̂ and pi0 drops out (as in `synthalign.rkl_policy`).
    """
    if method == "rlhf":
        if bool((betas <= 0).any()):
            raise ValueError("RLHF's closed form needs beta > 0")
        return torch.ones_like(betas), 1.0 / betas
    if method == "rkl":
        if bool((betas < 0).any()):
            raise ValueError("RKL's closed form needs beta >= 0")
        return betas / (betas + gamma), 1.0 / (betas + gamma)
    raise ValueError(f"method must be 'rlhf' or 'rkl', got {method!r}")


def closed_form_logits(reward: Tensor, ref_logp: Tensor, ref_weight: Tensor, reward_scale: Tensor) -> Tensor:
    """Unnormalized log-probabilities ref_weight · ln pi0 + reward_scale · R̂: [B, *reward.shape]."""
    shape = (-1,) + (1,) * reward.dim()
    ref_weight, reward_scale = ref_weight.view(shape), reward_scale.view(shape)
    # 0 · ln pi0 must be 0 even where pi0 = 0 (RKL at beta = 0 ignores pi0).
    prior = torch.where(ref_weight > 0, ref_weight * ref_logp, torch.zeros_like(ref_weight * ref_logp))
    return prior + reward_scale * reward


def closed_form_forward_kl(world: World, reward: Tensor, ref_weight: Tensor, reward_scale: Tensor) -> Tensor:
    """E_x KL(pi* ‖ p_b) for p_b ∝ pi0^ref_weight_b · exp(reward_scale_b · R̂), every b and replicate: [B, R].

    With z the unnormalized log-probabilities, KL(pi* ‖ p) = Σ_a pi* ln pi* − Σ_a pi* z_a + logsumexp_a z_a,
    and Σ_a pi* z_a = ref_weight · (pi*·ln pi0) + reward_scale · (pi*·R̂) needs no [B, R, X, A] tensor:
    only the logsumexp does.  Equals `synthalign.forward_kl` of the normalized policies.
    """
    target = world.target.probs
    ref_logp = world.reference.logp
    normalizer = torch.logsumexp(closed_form_logits(reward, ref_logp, ref_weight, reward_scale), dim=-1)  # [B, R, X]
    shape = (-1,) + (1,) * (reward.dim() - 1)
    ref_weight, reward_scale = ref_weight.view(shape), reward_scale.view(shape)
    target_ref = ref_weight * expectation_per_prompt(target, ref_logp)  # [B, 1, X]
    target_ref = torch.where(ref_weight > 0, target_ref, torch.zeros_like(target_ref))
    target_reward = reward_scale * expectation_per_prompt(target, reward)
    per_prompt = expectation_per_prompt(target, world.target.logp) - target_ref - target_reward
    return average_over_prompts(per_prompt + normalizer, world.prompt_dist)


def rlhf_population_floor(world: World, *, tol: float = 1e-13, max_iter: int = 200) -> tuple[float, float]:
    """(min over beta of E_x KL(pi* ‖ pi0 · pi*^(gamma/beta)/Z), the minimizing beta) — spec §6.7.

    With t = gamma/beta the KL is f(t) = E_x[Σ π* ln π* − Σ π*(ln π0 + t ln π*) + ln Z_x(t)],
    convex in t with f'(t) = E_x[E_{q_t} ln π* − E_{π*} ln π*] and f''(t) = E_x Var_{q_t}(ln π*),
    q_t ∝ π0 π*^t.  The minimizer over t ≥ 0 is found by Newton's method on f', kept inside
    a bracket [low, high] with f'(low) < 0 ≤ f'(high) (bisection when a step leaves it);
    t = 0 (beta = inf) is pi0 itself.  Responses with pi* = 0 get q_t = 0 for t > 0.
    Newton stops when a step or the bracket is within `tol` (finite, > 0) relative to max(1, t),
    or after `max_iter` (an integer >= 1) steps.
    """
    tol = check_positive(tol, "tol")
    max_iter = check_int(max_iter, "max_iter")
    target, ref, dist = world.target.logp, world.reference.logp, world.prompt_dist
    target_p = target.exp()
    support = target_p > 0
    log_target = torch.where(support, target, torch.zeros_like(target))
    target_mean = float((dist * expectation_per_prompt(target_p, target)).sum())

    def policy(t: float) -> Tensor:
        logits = torch.where(support, ref + t * log_target, torch.full_like(ref, -math.inf)) if t > 0 else ref
        return torch.log_softmax(logits, dim=-1)

    def derivatives(t: float) -> tuple[float, float]:
        probs = policy(t).exp()
        mean = expectation_per_prompt(probs, target)
        second = (probs * (log_target - mean.unsqueeze(-1)).square()).sum(dim=-1)
        return float((dist * mean).sum()) - target_mean, float((dist * second).sum())

    def kl_at(t: float) -> float:
        return float((dist * expectation_per_prompt(target_p, target - policy(t))).sum())

    slope, _ = derivatives(0.0)
    if slope >= 0:
        return kl_at(0.0), math.inf
    low, high = 0.0, 1.0
    while derivatives(high)[0] < 0:
        low, high = high, 2.0 * high
        if high > 1e12:
            return kl_at(high), world.gamma / high
    t = 0.5 * (low + high)
    for _ in range(max_iter):
        slope, curvature = derivatives(t)
        if slope < 0:
            low = t
        else:
            high = t
        step = t - slope / curvature if curvature > 0 else math.nan
        t_next = step if low < step < high else 0.5 * (low + high)
        if abs(t_next - t) <= tol * max(1.0, t) or high - low <= tol * max(1.0, t):
            t = t_next
            break
        t = t_next
    return kl_at(t), world.gamma / t


def kl_target_reference(world: World) -> float:
    """E_x KL(pi* ‖ pi0): what beta -> inf (the policy pi0 itself) achieves."""
    target = world.target.logp
    return float((world.prompt_dist * expectation_per_prompt(target.exp(), target - world.reference.logp)).sum())


def rkl_asymptotic_constant(world: World) -> float:
    """c such that E KL(pi* ‖ pi_R̂) ≈ c/n for the Bradley–Terry MLE R̂ (RKL at beta = 0).

    √n (theta_hat − theta*) → N(0, I⁺) per prompt on the centred logits, and
    KL(pi* ‖ softmax(theta)) ≈ ½ δᵀ F δ, so E KL ≈ (1/2n) Σ_x tr(F_x I_x⁺).  I_x is
    the Hessian of the population reward-model loss at the truth (the expected
    Hessian of one pair's loss, independent of the labels): gamma² L(W) with
    W_ab = (c_ab + c_ba) σ(m)σ(−m) on the population cells c.
    """
    law = population_preferences(world).counts[0]
    law = law / law.sum()
    theta = world.target.logp
    margin = world.gamma * (theta.unsqueeze(-1) - theta.unsqueeze(-2))
    curvature = (law + law.transpose(-1, -2)) * torch.sigmoid(margin) * torch.sigmoid(-margin)
    fisher = world.gamma**2 * (torch.diag_embed(curvature.sum(dim=-1)) - curvature)
    A = world.n_responses
    ones = torch.full((A, A), 1.0 / A, dtype=fisher.dtype, device=fisher.device)
    # (I + 11ᵀ/A)⁻¹ = I⁺ + 11ᵀ/A on a connected graph, and F 1 = 0, so the trace is tr(F I⁺).
    inverse = torch.linalg.inv(fisher + ones)
    probs = world.target.probs
    hessian_kl = world.prompt_dist[:, None, None] * (
        torch.diag_embed(probs) - probs.unsqueeze(-1) * probs.unsqueeze(-2)
    )
    return 0.5 * float(torch.einsum("xab,xba->", hessian_kl, inverse))
