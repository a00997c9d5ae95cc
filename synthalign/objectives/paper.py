"""The paper's objectives as pure functions over log-probabilities (spec §2).

Pairwise losses take the log-probabilities of the chosen and rejected
responses (any broadcastable shapes) and an optional `weight`:

* explicit pairs: weight None (each pair counts once);
* a dataset held as counts: weight = count of the cell (x, a+, a-);
* the exact population loss: weight = probability of the cell.

With `reduction="mean"` the result is sum(w·l) / sum(w), i.e. the (1/n) Σ of
the paper.  On-policy losses (RKL, RLHF) take whole policies [..., X, A] and an
optional `prompt_weight` [X] (the prompts of D_n as counts, or D itself).

Naming: `gamma` is always the preference tilt of spec §1 (the temperature DPO
papers call beta) and `beta` always weighs KL(pi ‖ pi0).  The KL term of PMLE
and distillation (eq. 5, 12) depends on the whole policy, not on the pair, so
it is the separate `kl_penalty`; `synthalign.registry` adds it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from synthalign._checks import check_positive, double_log_ratio, safe_log_ratio, weighted_reduce
from synthalign.metrics import entropy_per_prompt, expectation_per_prompt, kl_per_prompt
from synthalign.objectives._pairwise import _check_inputs

__all__ = [
    "reward_model_loss",
    "pmle_loss",
    "bernoulli_kl_logits",
    "distillation_loss",
    "dpo_loss",
    "ipo_loss",
    "rebel_loss",
    "kl_penalty",
    "rkl_loss",
    "rlhf_loss",
]


def _margin(logp_chosen: Tensor, logp_rejected: Tensor) -> Tensor:
    return safe_log_ratio(logp_chosen, logp_rejected)


def reward_model_loss(
    reward_chosen: Tensor, reward_rejected: Tensor, *, weight: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """Bradley–Terry reward-model loss (eq. 9): −ln σ(R(x,a+) − R(x,a−))."""
    reward_chosen, reward_rejected = _check_inputs(reward_chosen=reward_chosen, reward_rejected=reward_rejected)
    loss = -F.logsigmoid(safe_log_ratio(reward_chosen, reward_rejected))
    return weighted_reduce(loss, weight, reduction)


def pmle_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    *,
    gamma: float,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Preference MLE pair term (eq. 4/5): −ln σ(γ ln[π(a+|x)/π(a−|x)]).

    Eq. 5 adds β KL(π ‖ π0), see `kl_penalty`.
    """
    gamma = check_positive(gamma, "gamma")
    logp_chosen, logp_rejected = _check_inputs(logp_chosen=logp_chosen, logp_rejected=logp_rejected)
    loss = -F.logsigmoid(gamma * _margin(logp_chosen, logp_rejected))
    return weighted_reduce(loss, weight, reduction)


def bernoulli_kl_logits(target_logit: Tensor, logit: Tensor) -> Tensor:
    """KL(Bern(σ(t)) ‖ Bern(σ(m))) computed from logits, exact at t = ±inf."""
    p_pos, p_neg = torch.sigmoid(target_logit), torch.sigmoid(-target_logit)
    pos = p_pos * (F.logsigmoid(target_logit) - F.logsigmoid(logit))
    neg = p_neg * (F.logsigmoid(-target_logit) - F.logsigmoid(-logit))
    return torch.where(p_pos > 0, pos, torch.zeros_like(pos)) + torch.where(p_neg > 0, neg, torch.zeros_like(neg))


def distillation_loss(
    logp_a: Tensor,
    logp_b: Tensor,
    target_margin: Tensor,
    *,
    gamma: float,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Preference distillation pair term (eq. 11/12): KL(Bern(p̃) ‖ Bern(p_π)).

    p̃ = σ(target_margin) with target_margin = R̂(x,a) − R̂(x,b), and
    p_π = σ(γ ln[π(a|x)/π(b|x)]).  Equals soft-label BCE − H(Bern(p̃)) (spec §6.3);
    with target_margin = +inf (p̃ = 1) it is the PMLE loss.  Eq. 12 adds
    β KL(π ‖ π0), see `kl_penalty`.
    """
    gamma = check_positive(gamma, "gamma")
    logp_a, logp_b, target_margin = _check_inputs(logp_a=logp_a, logp_b=logp_b, target_margin=target_margin)
    loss = bernoulli_kl_logits(target_margin, gamma * _margin(logp_a, logp_b))
    return weighted_reduce(loss, weight, reduction)


def _reference_margin(
    logp_chosen: Tensor, logp_rejected: Tensor, ref_logp_chosen: Tensor, ref_logp_rejected: Tensor, **others: Tensor
) -> tuple[Tensor, ...]:
    """(h = ln[π(a+)π0(a−) / (π(a−)π0(a+))], *others): the inputs checked together, h never NaN.

    The log-ratios against pi0 come first (`double_log_ratio`): pi0(a) = 0 on an observed
    response would give −inf − (−inf) otherwise.  `others` (a reward pair) are checked with them.
    """
    checked = _check_inputs(
        logp_chosen=logp_chosen,
        logp_rejected=logp_rejected,
        ref_logp_chosen=ref_logp_chosen,
        ref_logp_rejected=ref_logp_rejected,
        **others,
    )
    return (double_log_ratio(*checked[:4]), *checked[4:])


def dpo_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """DPO (eq. 6): −ln σ(γ ln[π(a+)/π(a−)] − γ ln[π0(a+)/π0(a−)])."""
    gamma = check_positive(gamma, "gamma")
    (h,) = _reference_margin(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    loss = -F.logsigmoid(gamma * h)
    return weighted_reduce(loss, weight, reduction)


def _infinite_residual(residual: Tensor) -> Tensor:
    """A residual ∞ − ∞ (a response of probability zero on both sides of a log-ratio) is read as +inf.

    The squared losses then report an infinite loss at such a cell instead of NaN.
    """
    if not torch.isnan(residual).any():
        return residual
    return torch.where(torch.isnan(residual), torch.full_like(residual, float("inf")), residual)


def ipo_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    tau: float,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """IPO (Azar et al. 2024, arXiv 2310.12036): (ln[π(a+)π0(a−) / (π(a−)π0(a+))] − 1/(2τ))²."""
    tau = check_positive(tau, "tau")
    (h,) = _reference_margin(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    return weighted_reduce(_infinite_residual(h - 1.0 / (2.0 * tau)).square(), weight, reduction)


def rebel_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    reward_chosen: Tensor,
    reward_rejected: Tensor,
    *,
    eta: float,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """REBEL (eq. 10): (ln[π(a+)π0(a−) / (π(a−)π0(a+))] − η (R̂(a+) − R̂(a−)))².

    In eq. 10 the log-ratio is against the previous iterate; one REBEL step from
    π0 uses π0 there.  Its minimizer is π ∝ π0 · exp(η R̂).
    """
    eta = check_positive(eta, "eta")
    h, reward_chosen, reward_rejected = _reference_margin(
        logp_chosen,
        logp_rejected,
        ref_logp_chosen,
        ref_logp_rejected,
        reward_chosen=reward_chosen,
        reward_rejected=reward_rejected,
    )
    target = eta * safe_log_ratio(reward_chosen, reward_rejected)
    return weighted_reduce(_infinite_residual(h - target).square(), weight, reduction)


def kl_penalty(
    logp: Tensor, ref_logp: Tensor, *, prompt_weight: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """KL(π(·|x) ‖ π0(·|x)) per prompt, computed exactly on the finite space (eq. 1, 5, 12, 15)."""
    logp, ref_logp = _check_inputs(logp=logp, ref_logp=ref_logp)
    return weighted_reduce(kl_per_prompt(logp, ref_logp), prompt_weight, reduction)


def rkl_loss(
    logp: Tensor,
    reward: Tensor,
    *,
    gamma: float,
    beta: float = 0.0,
    ref_logp: Tensor | None = None,
    prompt_weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Reverse-KL objective (eq. 15), per prompt: −E_{a~π} R̂(x,a) − γ H(π(x)) + β KL(π(x) ‖ π0(x)).

    `logp` and `reward` are [..., X, A]; `prompt_weight` [X] holds the prompts of
    D_n as counts (or D for the population loss).
    """
    gamma = check_positive(gamma, "gamma")
    logp, reward = _check_inputs(logp=logp, reward=reward)
    per_prompt = -expectation_per_prompt(logp.exp(), reward) - gamma * entropy_per_prompt(logp)
    per_prompt = per_prompt + _beta_kl(logp, ref_logp, beta)
    return weighted_reduce(per_prompt, prompt_weight, reduction)


def rlhf_loss(
    logp: Tensor,
    reward: Tensor,
    *,
    beta: float,
    ref_logp: Tensor | None = None,
    prompt_weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """RLHF (eq. 1) as a loss, per prompt: −E_{a~π} R̂(x,a) + β KL(π(x) ‖ π0(x))."""
    logp, reward = _check_inputs(logp=logp, reward=reward)
    per_prompt = -expectation_per_prompt(logp.exp(), reward) + _beta_kl(logp, ref_logp, beta)
    return weighted_reduce(per_prompt, prompt_weight, reduction)


def _beta_kl(logp: Tensor, ref_logp: Tensor | None, beta: float) -> Tensor:
    beta = check_positive(beta, "beta", allow_zero=True)
    if beta == 0.0:
        return torch.zeros(logp.shape[:-1], dtype=logp.dtype, device=logp.device)
    if ref_logp is None:
        raise ValueError("ref_logp is required when beta > 0")
    logp, ref_logp = _check_inputs(logp=logp, ref_logp=ref_logp)
    return beta * kl_per_prompt(logp, ref_logp)
