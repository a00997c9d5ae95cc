"""Distances between policies and other measurements, batched over replicates.

Every metric takes policies of shape [..., X, A] (a `Policy` or a tensor of
log-probabilities), works per prompt, and averages over x ~ D.  D is taken from
the `prompt_dist` argument, else from the first policy that carries one, else
uniform.  Zero-probability responses are handled exactly: 0·ln 0 = 0, and a
divergence is +inf (never NaN) when p puts mass where q has none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthalign._checks import (
    InputTypeError,
    as_tensor,
    check_logp,
    check_prompt_dist,
    check_same_device,
    check_same_shape,
    describe,
    safe_log_ratio,
)
from synthalign._exports import flat_names
from synthalign.worlds.checks import check_policy_for_world, check_world
from synthalign.worlds.policy import Policy
from synthalign.worlds.preferences import preference_matrix

if TYPE_CHECKING:
    from synthalign._types import PolicyLike
    from synthalign.worlds.tabular import World

__all__ = [*flat_names(__name__), "average_over_prompts", "expectation_per_prompt"]


def _prompt_dist(prompt_dist, *policies) -> Tensor | None:
    if prompt_dist is not None:
        logp = policies[0].logp if isinstance(policies[0], Policy) else policies[0]
        n_prompts = logp.shape[-2] if isinstance(logp, Tensor) and logp.dim() >= 2 else None
        return check_prompt_dist(prompt_dist, "prompt_dist", n_prompts=n_prompts)
    for policy in policies:
        if isinstance(policy, Policy) and policy.prompt_dist is not None:
            return policy.prompt_dist
    return None


def _log_probs(**policies) -> tuple[Tensor, ...]:
    """The log-probabilities of named policies: a Policy, or a tensor checked as normalized log-probabilities
    [..., X, A]; shapes must broadcast and devices agree."""
    logps = tuple(_one_logp(policy, name) for name, policy in policies.items())
    check_same_shape(logps, tuple(policies))
    check_same_device(dict(zip(policies, logps, strict=True)))
    return logps


def _one_logp(policy, name: str) -> Tensor:
    if isinstance(policy, Policy):
        return policy.logp
    if not isinstance(policy, Tensor):
        raise InputTypeError(
            f"{name} must be a Policy or a tensor of log-probabilities [..., X, A], got {describe(policy)}"
        )
    return check_logp(policy, name)


def average_over_prompts(per_prompt: Tensor, prompt_dist: Tensor | None) -> Tensor:
    """E_{x~D} of a [..., X] tensor (uniform D when None); zero-weight prompts never give NaN."""
    if prompt_dist is None:
        return per_prompt.mean(dim=-1)
    prompt_dist = prompt_dist.to(per_prompt.dtype)
    weighted = torch.where(prompt_dist > 0, prompt_dist * per_prompt, torch.zeros_like(per_prompt))
    return weighted.sum(dim=-1)


def expectation_per_prompt(p: Tensor, values: Tensor) -> Tensor:
    """Σ_a p(a) v(a) with 0 · v = 0 even where v = ±inf, [..., X].

    The values are masked before the product, not after it: a product
    p · (−inf) masked afterwards has a NaN gradient (0 · −inf) in p.
    """
    values = values.to(p.dtype)
    safe = torch.where(p > 0, values, torch.zeros_like(values))
    return (p * safe).sum(dim=-1)


def kl_per_prompt(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """KL(p(·|x) ‖ q(·|x)) = Σ_a p (ln p − ln q) for every prompt, [..., X].

    A building block of the objectives, evaluated inside solvers' iterations: its inputs are taken
    as normalized log-probabilities without checks.  `kl_divergence` is the checked entry point.
    """
    return expectation_per_prompt(logp.exp(), safe_log_ratio(logp, ref_logp))


def entropy_per_prompt(logp: Tensor) -> Tensor:
    """H(p(·|x)) = −Σ_a p ln p for every prompt, [..., X] (unchecked, as `kl_per_prompt`; `entropy` checks)."""
    return -expectation_per_prompt(logp.exp(), logp)


def forward_kl(target: PolicyLike, estimate: PolicyLike, *, prompt_dist: Tensor | None = None) -> Tensor:
    """E_x KL(pi* ‖ pi_hat): the paper's error measure (spec §1, §4)."""
    return _expected_kl(prompt_dist, target=target, estimate=estimate)


def reverse_kl(target: PolicyLike, estimate: PolicyLike, *, prompt_dist: Tensor | None = None) -> Tensor:
    """E_x KL(pi_hat ‖ pi*) (Prop. 15's left side)."""
    return _expected_kl(prompt_dist, target=target, estimate=estimate, reverse=True)


def kl_divergence(policy: PolicyLike, reference: PolicyLike, *, prompt_dist: Tensor | None = None) -> Tensor:
    """E_x KL(pi ‖ pi0): the regularizer weighed by beta in every objective."""
    return _expected_kl(prompt_dist, policy=policy, reference=reference)


def _expected_kl(prompt_dist: Tensor | None, *, reverse: bool = False, **policies: PolicyLike) -> Tensor:
    """E_x KL(p ‖ q) of two named policies p, q (the names are the arguments' in errors); KL(q ‖ p) if `reverse`."""
    dist = _prompt_dist(prompt_dist, *policies.values())
    p_logp, q_logp = _log_probs(**policies)
    if reverse:
        p_logp, q_logp = q_logp, p_logp
    return average_over_prompts(kl_per_prompt(p_logp, q_logp), dist)


def squared_hellinger(p: PolicyLike, q: PolicyLike, *, prompt_dist: Tensor | None = None) -> Tensor:
    """E_x H²(p, q) with H² = 1 − Σ_a sqrt(p q) (the convention with values in [0, 1])."""
    dist = _prompt_dist(prompt_dist, p, q)
    p_logp, q_logp = _log_probs(p=p, q=q)
    overlap = torch.exp(0.5 * (p_logp + q_logp)).sum(dim=-1)
    return average_over_prompts((1.0 - overlap).clamp_min(0.0), dist)


def total_variation(p: PolicyLike, q: PolicyLike, *, prompt_dist: Tensor | None = None) -> Tensor:
    """E_x TV(p, q) = E_x ½ Σ_a |p − q|."""
    dist = _prompt_dist(prompt_dist, p, q)
    p_logp, q_logp = _log_probs(p=p, q=q)
    per_prompt = 0.5 * (p_logp.exp() - q_logp.exp()).abs().sum(dim=-1)
    return average_over_prompts(per_prompt, dist)


def entropy(policy: PolicyLike, *, prompt_dist: Tensor | None = None) -> Tensor:
    """E_x H(pi(·|x))."""
    (logp,) = _log_probs(policy=policy)
    return average_over_prompts(entropy_per_prompt(logp), _prompt_dist(prompt_dist, policy))


def expected_reward(policy: PolicyLike, reward: Tensor, *, prompt_dist: Tensor | None = None) -> Tensor:
    """E_{x, a~pi} R(x, a); responses of zero probability contribute 0 even where R = −inf."""
    (logp,) = _log_probs(policy=policy)
    reward = as_tensor(reward, "reward", dtype=logp.dtype)
    check_same_device({"policy": logp, "reward": reward})
    check_same_shape((logp, reward), ("policy", "reward"))
    per_prompt = expectation_per_prompt(logp.exp(), reward)
    return average_over_prompts(per_prompt, _prompt_dist(prompt_dist, policy))


def preference_squared_error(world: World, policy: PolicyLike) -> Tensor:
    """E_{x; a,b~mu} [(P_pi(a≻b|x) − P_pi*(a≻b|x))²]: the left side of Prop. 12."""
    # P_pi is invariant to adding c(x) to ln pi (spec §6.1): unnormalized log-probabilities are welcome here.
    logp = check_policy_for_world(policy, check_world(world), normalized=False)
    mu = world.behavior.probs
    pair_weight = world.prompt_dist[:, None, None] * mu[:, :, None] * mu[:, None, :]
    diff = preference_matrix(logp, world.gamma) - preference_matrix(world)
    return (pair_weight * diff.square()).sum(dim=(-1, -2, -3))


def win_rate(world: World, policy: PolicyLike, *, against: PolicyLike | None = None) -> Tensor:
    """E_x Σ_{a,b} pi(a|x) pi0(b|x) P*(a ≻ b | x): how often pi beats pi0 (or `against`) under the true law."""
    check_policy_for_world(policy, check_world(world))
    opponent = world.reference if against is None else against
    check_policy_for_world(opponent, world, "against")
    policy_logp, against_logp = _log_probs(policy=policy, against=opponent)
    p, q = policy_logp.exp(), against_logp.exp()
    wins = torch.einsum("...xa,...xb,xab->...x", p, q, preference_matrix(world))
    return average_over_prompts(wins, world.prompt_dist)
