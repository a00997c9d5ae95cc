"""Closed-form minimizers on a finite response set (spec §2), per prompt.

* the reward-induced LM pi_R ∝ exp(R / gamma) (spec §1);
* RLHF's optimum pi0 · exp(R / beta) (eq. 1);
* RKL's optimum, "prior smoothing", pi0^(beta/(beta+gamma)) · exp(R / (beta+gamma)) (eq. 15);
* the population minimizers of objectives that are not consistent (DPO, IPO, REBEL, SFT, ...),
  which the registry declares and the conformance suite verifies.

Every function returns a `Policy`; none fits anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from synthalign._checks import as_tensor, check_positive
from synthalign._exports import flat_names
from synthalign.worlds.policy import Policy, as_logp
from synthalign.worlds.preferences import preference_matrix
from synthalign.worlds.tabular import World

__all__ = [
    *flat_names(__name__),
    "dpo_minimizer",
    "forward_kl_minimizer",
    "gamma_ipo_minimizer",
    "ipo_minimizer",
    "ipo_tilt",
    "rebel_minimizer",
    "rkl_minimizer",
    "rlhf_minimizer",
    "sft_minimizer",
    "target_minimizer",
    "tilted_reference",
    "win_rate_against_behavior",
]


def reward_policy(reward: Tensor, gamma: float, prompt_dist: Tensor | None = None) -> Policy:
    """The LM induced by a reward, pi_R(a|x) ∝ exp(R(x,a)/gamma) (spec §1)."""
    gamma = check_positive(gamma, "gamma")
    reward = as_tensor(reward, "reward")
    return Policy(torch.log_softmax(reward / gamma, dim=-1), prompt_dist)


def rlhf_policy(reward: Tensor, reference: Policy | Tensor, beta: float) -> Policy:
    """Closed-form RLHF optimum (eq. 1 / spec §2): p ∝ pi0 · exp(R / beta), beta > 0."""
    beta = check_positive(beta, "beta")
    reward = as_tensor(reward, "reward")
    ref = as_logp(reference, "reference")
    prompt_dist = reference.prompt_dist if isinstance(reference, Policy) else None
    return Policy(_normalize(ref + reward / beta), prompt_dist)


def rkl_policy(reward: Tensor, reference: Policy | Tensor, gamma: float, beta: float) -> Policy:
    """Closed-form reverse-KL optimum of eq. 15 ("prior smoothing", spec §2).

    Minimizing -p·r - gamma H(p) + beta KL(p || p0) gives
    p ∝ p0^(beta/(beta+gamma)) · exp(r / (beta+gamma)); at beta = 0 this is the
    reward-induced policy pi_R.  Responses with p0 = 0 keep probability 0 when
    beta > 0 (0^alpha = 0), and are free at beta = 0 (p0^0 = 1).
    """
    gamma = check_positive(gamma, "gamma")
    beta = check_positive(beta, "beta", allow_zero=True)
    reward = as_tensor(reward, "reward")
    ref = as_logp(reference, "reference")
    prompt_dist = reference.prompt_dist if isinstance(reference, Policy) else None
    if beta == 0.0:
        logits = reward / gamma + torch.zeros_like(ref)
    else:
        alpha = beta / (beta + gamma)
        # alpha * (-inf) = -inf for alpha > 0: zero-probability responses stay at zero.
        logits = alpha * ref + reward / (beta + gamma)
    return Policy(_normalize(logits), prompt_dist)


def _normalize(logits: Tensor) -> Tensor:
    return torch.log_softmax(logits, dim=-1)


# ------------------------------------------------------------------ population minimizers
#
# Signature (reward, world, beta, params) -> Policy, that of `Objective.closed_form` and
# `Objective.expected_minimizer`; all at beta = 0 with mu of full support.


def tilted_reference(world: World, log_tilt: Tensor) -> Policy:
    """pi ∝ pi0 · exp(log_tilt), the shape of every DPO-family minimizer."""
    return Policy(torch.log_softmax(world.reference.logp + log_tilt, dim=-1), world.prompt_dist)


def win_rate_against_behavior(world: World) -> Tensor:
    """P*(a ≻ mu | x) = Σ_b mu(b|x) P*(a ≻ b | x), [X, A]."""
    return torch.einsum("xab,xb->xa", preference_matrix(world), world.behavior.probs)


def target_minimizer(reward: Tensor | None, world: World, beta: float, params: Mapping[str, Any]) -> Policy:
    """pi* itself: the minimizer of a consistent objective (spec §6.13)."""
    return Policy(world.target.logp, world.prompt_dist)


def dpo_minimizer(reward: Tensor | None, world: World, beta: float, params: Mapping[str, Any]) -> Policy:
    """DPO's population minimizer (eq. 6): pi ∝ pi0 · pi*.

    DPO is logistic in gamma (u(a⁺) − u(a⁻)) with u = ln pi − ln pi0 while the labels
    follow σ(gamma ln[pi*(a)/pi*(b)]); matching the margins on every pair gives
    u = ln pi* + c(x).
    """
    return tilted_reference(world, world.target.logp)


def ipo_tilt(world: World, tau: float) -> Tensor:
    """ln(pi/pi0) − E_mu ln(pi/pi0) at IPO's minimizer: (2 P*(a ≻ mu) − 1)/(2 tau).

    With u = ln pi − ln pi0 and c = 1/(2 tau), setting the derivative in u_a of
    Σ_{a,b} mu(a) mu(b) [P_ab (u_a − u_b − c)² + P_ba (u_b − u_a − c)²] to zero and
    using P_ab + P_ba = 1 gives u_a − E_mu u = c (2 P(a ≻ mu) − 1).
    """
    return (2.0 * win_rate_against_behavior(world) - 1.0) / (2.0 * tau)


def ipo_minimizer(reward: Tensor | None, world: World, beta: float, params: Mapping[str, Any]) -> Policy:
    """IPO's population minimizer (Azar et al. 2024): pi ∝ pi0 · exp((2 P*(a ≻ mu) − 1)/(2 tau))."""
    return tilted_reference(world, ipo_tilt(world, params["tau"]))


def gamma_ipo_minimizer(reward: Tensor | None, world: World, beta: float, params: Mapping[str, Any]) -> Policy:
    """IPO's minimizer with tau = the world's gamma (the zoo's f-IPO with the reverse KL)."""
    return tilted_reference(world, ipo_tilt(world, world.gamma))


def rebel_minimizer(reward: Tensor | None, world: World, beta: float, params: Mapping[str, Any]) -> Policy:
    """REBEL's minimizer (eq. 10): pi ∝ pi0 · exp(eta R̂); the squared loss is 0 when h(a, b) = eta (R̂(a) − R̂(b))."""
    return tilted_reference(world, params["eta"] * reward)


def sft_minimizer(reward: Tensor | None, world: World, beta: float, params: Mapping[str, Any]) -> Policy:
    """pi ∝ mu · P*(· ≻ mu): SFT on the chosen responses.

    The population loss −Σ_a w_a ln pi(a) with w_a = Σ_b mu(a) mu(b) P*(a ≻ b) (the
    probability that a is drawn and chosen) is a cross-entropy, minimized by pi = w / Σ w.
    """
    logits = world.behavior.logp + win_rate_against_behavior(world).log()
    return Policy(torch.log_softmax(logits, dim=-1), world.prompt_dist)


def rlhf_minimizer(reward: Tensor | None, world: World, beta: float, params: Mapping[str, Any]) -> Policy:
    """RLHF's optimum pi0 · exp(R̂ / beta) (eq. 1); beta > 0."""
    if beta <= 0:
        raise ValueError("RLHF's optimum needs beta > 0 (at beta = 0 it is the argmax of the reward)")
    return rlhf_policy(reward, world.reference, beta)


def rkl_minimizer(reward: Tensor | None, world: World, beta: float, params: Mapping[str, Any]) -> Policy:
    """RKL's optimum (eq. 15): prior smoothing of pi0 with R̂."""
    return rkl_policy(reward, world.reference, world.gamma, beta)


def forward_kl_minimizer(reward: Tensor | None, world: World, beta: float, params: Mapping[str, Any]) -> Policy:
    """argmin_pi KL(pi_R̂ ‖ pi) = pi_R̂ (spec §2, last note); defined at beta = 0 only."""
    if beta != 0:
        raise ValueError("the forward-KL estimator is defined at beta = 0 only")
    return reward_policy(reward, world.gamma)
