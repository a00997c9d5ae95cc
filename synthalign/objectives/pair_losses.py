"""The rest of the zoo's pair losses: SimPO, online DPO, XPO, SPPO, NCA, BCO, APO, KTO, chi-PO, SFT.

Conventions (naming, lengths, TRL) are `synthalign.objectives.zoo`'s.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from synthalign._checks import as_tensor, check_positive, check_same_shape, weighted_reduce
from synthalign.objectives._pairwise import (
    _CHIPO_CAP_MARGIN,
    _PAIR_NAMES,
    _check_inputs,
    _check_offset,
    _difference,
    _lengths,
    _log_ratios,
    _pair_inputs,
    _per_token_margin,
)
from synthalign.objectives.dpo_family import f_dpo_loss, f_ipo_loss

__all__ = [
    "simpo_loss",
    "online_dpo_loss",
    "xpo_loss",
    "sppo_loss",
    "nca_pair_loss",
    "bco_pair_loss",
    "apo_zero_loss",
    "apo_down_loss",
    "kto_pair_loss",
    "chipo_loss",
    "sft_loss",
]


def simpo_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor | None = None,
    ref_logp_rejected: Tensor | None = None,
    *,
    gamma: float,
    target_margin: float = 0.0,
    length_chosen: Tensor | float | None = None,
    length_rejected: Tensor | float | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """SimPO: reference-free, length-normalised, with a target reward margin.

        loss = −ln σ(γ · [ln π(a⁺)/|a⁺| − ln π(a⁻)/|a⁻|] − m)

    Meng, Xia & Chen 2024, https://arxiv.org/abs/2405.14734.  The paper writes β for our γ
    and γ for our target margin m; in TRL it is `CPOTrainer(loss_type="simpo")` with `beta` = γ and
    `simpo_gamma` = m (fed with per-token average log-probabilities).  The reference log-probabilities
    are accepted for a uniform signature and ignored.

    Args:
        gamma: reward scale (SimPO's β).
        target_margin: m ≥ 0 (SimPO's γ); the paper tunes γ/β around 0.5.
        length_chosen, length_rejected: token counts |a⁺|, |a⁻| (default 1).
    """
    gamma = check_positive(gamma, "gamma")
    target_margin = check_positive(target_margin, "target_margin", allow_zero=True)
    lc, lr = _check_inputs(logp_chosen=logp_chosen, logp_rejected=logp_rejected)
    margin = _per_token_margin(lc, lr, length_chosen, length_rejected)
    return weighted_reduce(-F.logsigmoid(gamma * margin - target_margin), weight, reduction)


def online_dpo_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    loss_type: str = "sigmoid",
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Online DPO: the DPO (or IPO) loss on pairs sampled from the current policy.

        sigmoid: −ln σ(γΔ)        ipo: (Δ − 1/(2γ))²   (per sequence, no length normalisation)

    Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback",
    https://arxiv.org/abs/2402.04792.  The loss is DPO's; what makes it online is the data: both
    responses are drawn from π_t (the current policy, treated as a constant sample) and labelled by a
    judge or reward model, so on a finite world the exact population loss uses
    weight = D(x) π_t(a|x) π_t(b|x) P(a ≻ b|x) with π_t detached.  TRL's
    `trl.experimental.online_dpo.OnlineDPOTrainer` uses exactly these two formulas on summed sequence
    log-probabilities.

    Args:
        gamma: preference temperature (TRL's `beta`).
        loss_type: "sigmoid" (DPO) or "ipo" (IPO with τ = γ, per sequence).
    """
    if loss_type not in ("sigmoid", "ipo"):
        raise ValueError(f"loss_type must be 'sigmoid' or 'ipo', got {loss_type!r}")
    pair = (logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    if loss_type == "sigmoid":
        return f_dpo_loss(*pair, gamma=gamma, weight=weight, reduction=reduction)
    return f_ipo_loss(*pair, gamma=gamma, normalize_length=False, weight=weight, reduction=reduction)


def xpo_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    logp_exploration: Tensor,
    gamma: float,
    alpha: float = 1e-5,
    loss_type: str = "sigmoid",
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Exploratory Preference Optimization, XPO: online DPO plus an optimism term.

        loss = online_dpo_loss + α · ln π(ã|x),    ã ∼ π0(·|x)

    Xie et al. 2024, "Exploratory Preference Optimization", Algorithm 1,
    https://arxiv.org/abs/2405.21046.  Lowering the policy's likelihood of responses the reference
    would produce pushes it to explore; `logp_exploration` is ln π(ã|x) of such a response (in the
    paper's practical version and TRL's former `XPOTrainer`, the reference model's completion of the
    prompt in the pair).  TRL 1.16 has no XPO trainer.

    Args:
        logp_exploration: ln π(ã|x) for the exploration response, broadcastable with the pair.
        gamma: preference temperature (TRL's `beta`).
        alpha: α ≥ 0, the weight of the exploration term (TRL's former default 1e-5).
        loss_type: "sigmoid" or "ipo", as in `online_dpo_loss`.
    """
    alpha = check_positive(alpha, "alpha", allow_zero=True)
    logp_exploration = as_tensor(logp_exploration, "logp_exploration")
    pair = _pair_inputs(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    check_same_shape((*pair, logp_exploration), (*_PAIR_NAMES, "logp_exploration"))
    dpo = online_dpo_loss(*pair, gamma=gamma, loss_type=loss_type, reduction="none")
    return weighted_reduce(dpo + alpha * logp_exploration, weight, reduction)


# ----------------------------------------------------------------------------------------------------------------------
# Squared and hinge losses
# ----------------------------------------------------------------------------------------------------------------------


def sppo_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    win_prob_chosen: Tensor | float = 1.0,
    win_prob_rejected: Tensor | float = 0.0,
    average_pair: bool = False,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Self-Play Preference Optimization, SPPO (TRL `loss_type="sppo_hard"` with the defaults).

        loss = (h⁺ − (P⁺ − ½)/γ)² + (h⁻ − (P⁻ − ½)/γ)²      [× ½ with average_pair=True]

    Wu et al. 2024, "Self-Play Preference Optimization for Language Model Alignment", eq. (4.7),
    https://arxiv.org/abs/2405.00675, with η = 1/γ and π0 the previous iterate π_t.  P± = P̂(a± ≻ π_t|x)
    are the estimated win rates of each response against the current policy.  Conventions:

    * the defaults P⁺ = 1, P⁻ = 0 are TRL's hard version (targets ±1/(2γ)); the paper estimates P±
      with a preference model (pass tensors).
    * TRL sums the two squared errors; the paper's loss is the empirical mean over the sampled
      responses, i.e. half of that sum for one pair: `average_pair=True`.

    Args:
        gamma: 1/η (TRL's `beta`).
        win_prob_chosen, win_prob_rejected: P⁺, P⁻ ∈ [0, 1] (floats or broadcastable tensors).
        average_pair: halve the sum (the paper's per-response mean) instead of TRL's sum.
    """
    gamma = check_positive(gamma, "gamma")
    if not isinstance(average_pair, bool):
        raise ValueError(f"average_pair must be a bool, got {average_pair!r}")
    h_chosen, h_rejected = _log_ratios(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    probs = []
    for value, name in ((win_prob_chosen, "win_prob_chosen"), (win_prob_rejected, "win_prob_rejected")):
        prob = as_tensor(value, name, dtype=h_chosen.dtype, device=h_chosen.device)
        if ((prob < 0) | (prob > 1)).any():
            raise ValueError(f"{name} must lie in [0, 1], got range [{prob.min().item()}, {prob.max().item()}]")
        probs.append(prob)
    loss = (h_chosen - (probs[0] - 0.5) / gamma).square() + (h_rejected - (probs[1] - 0.5) / gamma).square()
    return weighted_reduce(0.5 * loss if average_pair else loss, weight, reduction)


# ----------------------------------------------------------------------------------------------------------------------
# Losses on the two log-ratios separately
# ----------------------------------------------------------------------------------------------------------------------


def nca_pair_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Noise Contrastive Alignment, pairwise NCA (TRL `loss_type="nca_pair"`).

        loss = −ln σ(γh⁺) − ½ ln σ(−γh⁺) − ½ ln σ(−γh⁻)

    Chen et al. 2024, "Noise Contrastive Alignment of Language Models with Explicit Rewards", NCA loss
    for K = 2 with binary preference rewards, https://arxiv.org/abs/2402.05369.  Unlike DPO it acts on
    each log-ratio, so it cannot lower the chosen response's likelihood.

    Args:
        gamma: preference temperature (TRL's `beta`).
    """
    gamma = check_positive(gamma, "gamma")
    h_chosen, h_rejected = _log_ratios(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    reward_chosen, reward_rejected = gamma * h_chosen, gamma * h_rejected
    loss = -F.logsigmoid(reward_chosen) - 0.5 * F.logsigmoid(-reward_chosen) - 0.5 * F.logsigmoid(-reward_rejected)
    return weighted_reduce(loss, weight, reduction)


def bco_pair_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    delta: Tensor | float = 0.0,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Binary Classifier Optimization on pairs (TRL `loss_type="bco_pair"`).

        loss = −ln σ(γh⁺ − δ) − ln σ(−(γh⁻ − δ))

    Jung et al. 2024, "Binary Classifier Optimization for Large Language Model Alignment",
    https://arxiv.org/abs/2404.04656: a logistic classifier of chosen against rejected with implicit
    reward γh, shifted by the reward shift δ.  The paper (and TRL before 1.x) sets δ to a running
    mean of the batch rewards (γh⁺ + γh⁻)/2, treated as a constant; TRL 1.16 uses δ = 0 (the default
    here).  Pass δ explicitly — e.g. the exact mean reward on a finite world — to get the paper's form;
    a tensor δ is used as given, so detach it to treat it as a constant.

    Args:
        gamma: preference temperature (TRL's `beta`).
        delta: reward shift δ, a finite float or a tensor broadcastable with the pair.
    """
    gamma = check_positive(gamma, "gamma")
    delta = _check_offset(delta, "delta")
    h_chosen, h_rejected = _log_ratios(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    loss = -F.logsigmoid(gamma * h_chosen - delta) - F.logsigmoid(-(gamma * h_rejected - delta))
    return weighted_reduce(loss, weight, reduction)


def apo_zero_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Anchored Preference Optimization, APO-zero (TRL `loss_type="apo_zero"`).

        loss = (1 − σ(γh⁺)) + σ(γh⁻)

    D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive Revisions", eq. (7),
    https://arxiv.org/abs/2408.06266: raise the chosen and lower the rejected likelihood, for chosen
    responses better than the model's own.  1 − σ(x) is computed as σ(−x).

    Args:
        gamma: preference temperature (TRL's `beta`).
    """
    gamma = check_positive(gamma, "gamma")
    h_chosen, h_rejected = _log_ratios(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    loss = torch.sigmoid(-gamma * h_chosen) + torch.sigmoid(gamma * h_rejected)
    return weighted_reduce(loss, weight, reduction)


def apo_down_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Anchored Preference Optimization, APO-down (TRL `loss_type="apo_down"`).

        loss = σ(γh⁺) + (1 − σ(γ(h⁺ − h⁻)))

    D'Oosterlinck et al. 2024, eq. (8), https://arxiv.org/abs/2408.06266: lower both likelihoods,
    the rejected one more, for chosen responses worse than the model's own.

    Args:
        gamma: preference temperature (TRL's `beta`).
    """
    gamma = check_positive(gamma, "gamma")
    h_chosen, h_rejected = _log_ratios(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    loss = torch.sigmoid(gamma * h_chosen) + torch.sigmoid(-gamma * _difference(h_chosen, h_rejected))
    return weighted_reduce(loss, weight, reduction)


def kto_pair_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    z0: Tensor | float = 0.0,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """KTO applied to a pair: the chosen response as desirable, the rejected one as undesirable.

        loss = λ_D (1 − σ(γ(h⁺ − z0))) + λ_U (1 − σ(γ(z0 − h⁻)))

    Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization",
    https://arxiv.org/abs/2402.01306 (the constant λ_y of the paper's loss is dropped).  The reference
    point z0 estimates KL(π ‖ π0) and carries no gradient in the paper; here it is an explicit
    argument: a float, or a tensor used as given (detach it, or pass the exact KL of a finite world,
    e.g. `exact_kl_estimator_expectation(..., kind="k1")`).  z0 = 0 is TRL's `KTOTrainer` without KL
    estimation.  TRL's former `loss_type="kto_pair"` estimated z0 per batch as the clamped (≥ 0) mean
    of the other side's log-ratios and averaged the two terms (half of this sum).

    Args:
        gamma: preference temperature (KTO's β).
        z0: the reference point, a finite float or a tensor broadcastable with the pair.
        desirable_weight, undesirable_weight: λ_D, λ_U > 0.
    """
    gamma = check_positive(gamma, "gamma")
    desirable_weight = check_positive(desirable_weight, "desirable_weight")
    undesirable_weight = check_positive(undesirable_weight, "undesirable_weight")
    z0 = _check_offset(z0, "z0")
    h_chosen, h_rejected = _log_ratios(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    loss = desirable_weight * torch.sigmoid(-gamma * (h_chosen - z0)) + undesirable_weight * torch.sigmoid(
        -gamma * (z0 - h_rejected)
    )
    return weighted_reduce(loss, weight, reduction)


def chipo_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    reward_bound: float,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """χ²-Preference Optimization, χPO: DPO with the link φ(z) = z + ln z and a clipped margin.

        φ_h(h) = e^h + h   (φ at z = π/π0 = e^h),
        loss = −ln σ(clip_{2R}[γ φ_h(h⁺) − γ φ_h(h⁻)]),   clip_{c}(x) = max(−c, min(c, x))

    Huang et al. 2024, "Correcting the Mythos of KL-Regularization: Direct Alignment without
    Overoptimization via Chi-Squared Preference Optimization", Algorithm 1,
    https://arxiv.org/abs/2407.13399: the link of DPO's implicit reward, ln z, becomes z + ln z, which
    regularises with χ² + KL and is provably robust to overoptimisation.  R is the reward bound R_max of
    the paper.  Not in TRL.

    φ is increasing, so the margin has the sign of h⁺ − h⁻ and |margin| = γ(e^max(1 − e^−|Δ|) + |Δ|).
    When max(h⁺, h⁻) exceeds ln(2R/γ) + 40 the clip is saturated for every pair of distinct floats,
    so such pairs get the constant ±2R (zero gradient) without evaluating e^h; tied pairs (h⁺ = h⁻,
    e.g. the same response twice) get margin 0.  Values and gradients are thus finite for any finite
    log-probabilities.  `reward_bound=math.inf` removes the clip, and then e^h overflows once h > ~709.

    Args:
        gamma: preference temperature (the paper's β).
        reward_bound: R > 0; the margin is clipped to [−2R, 2R].
    """
    gamma = check_positive(gamma, "gamma")
    try:
        reward_bound = float(reward_bound)
    except (TypeError, ValueError) as err:
        raise ValueError(f"reward_bound must be a real number, got {reward_bound!r}") from err
    if not reward_bound > 0:
        raise ValueError(f"reward_bound must be > 0 (math.inf for no clipping), got {reward_bound}")
    bound = 2.0 * reward_bound
    h_chosen, h_rejected = _log_ratios(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    h_chosen, h_rejected = torch.broadcast_tensors(h_chosen, h_rejected)
    gap = _difference(h_chosen, h_rejected)
    if math.isinf(bound):
        margin = gamma * (torch.exp(h_chosen) - torch.exp(h_rejected) + gap)
        margin = torch.where(gap == 0, torch.zeros_like(margin), margin)
        return weighted_reduce(-F.logsigmoid(margin), weight, reduction)
    cap = math.log(bound / gamma) + _CHIPO_CAP_MARGIN
    with torch.no_grad():
        saturated = (torch.maximum(h_chosen, h_rejected) > cap) & (gap != 0)
        saturated_margin = torch.sign(gap) * bound
    zero = torch.zeros_like(gap)
    safe_chosen = torch.where(saturated, zero, h_chosen).clamp(max=cap)
    safe_rejected = torch.where(saturated, zero, h_rejected).clamp(max=cap)
    safe_gap = torch.where(saturated, zero, gap)
    margin = gamma * (torch.exp(safe_chosen) - torch.exp(safe_rejected) + safe_gap)
    margin = torch.where(saturated, saturated_margin, margin.clamp(min=-bound, max=bound))
    return weighted_reduce(-F.logsigmoid(margin), weight, reduction)


def sft_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor | None = None,
    ref_logp_chosen: Tensor | None = None,
    ref_logp_rejected: Tensor | None = None,
    *,
    length_chosen: Tensor | float | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of the chosen response (TRL `loss_type="sft"`).

        loss = −Σ_i w_i ln π(a⁺_i) / Σ_i w_i |a⁺_i|      (reduction "mean")

    Supervised fine-tuning on the preferred responses, used as an auxiliary term of preference losses
    (e.g. RPO, Pang et al. 2024, https://arxiv.org/abs/2404.19733; MPO, Wang et al. 2024,
    https://arxiv.org/abs/2411.10442, which TRL's `loss_weights` reproduces).  As in TRL the mean is
    per token: sequence NLLs are summed and divided by the total number of tokens (with lengths 1, the
    mean NLL per pair).  `reduction="none"` and "sum" give w_i · (−ln π(a⁺_i)).  The other arguments
    are accepted for a uniform signature and ignored.

    Args:
        length_chosen: token counts |a⁺| (default 1).
    """
    lc = as_tensor(logp_chosen, "logp_chosen")
    length_chosen = _lengths(length_chosen, "length_chosen", lc)
    if length_chosen is None:
        return weighted_reduce(-lc, weight, reduction)
    # Weighting the per-token NLL by w·|a⁺| makes "mean" the per-token mean and "sum"/"none" the NLL.
    token_weight = length_chosen if weight is None else weight.to(lc.dtype) * length_chosen
    return weighted_reduce(-lc / length_chosen, token_weight, reduction)
