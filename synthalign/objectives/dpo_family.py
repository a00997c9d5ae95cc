"""The DPO family of the zoo: losses of the margin Δ = h⁺ − h⁻ of the two log-ratios h = ln(π/π0).

f-DPO and its length-normalized form, cDPO, rDPO, EXO, DiscoPOP, the hinge (SLiC), f-IPO, and
AOT's two batch forms.  Conventions (naming, lengths, TRL) are `synthalign.objectives.zoo`'s; the code
calls the scaled margin ρ = γΔ (DiscoPOP's notation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from synthalign._checks import check_positive, safe_log_ratio, weighted_reduce
from synthalign.objectives._pairwise import (
    _DIVERGENCE_DOC,
    _check_interval,
    _difference,
    _f_margin,
    _log_ratios,
    _pair_inputs,
    _per_token_margin,
    _scores,
    _smoothed_logistic,
    _sorted_coupling_loss,
    _with_doc,
)

__all__ = [
    "f_dpo_loss",
    "length_normalized_dpo_loss",
    "conservative_dpo_loss",
    "robust_dpo_loss",
    "exo_pair_loss",
    "discopop_loss",
    "hinge_loss",
    "f_ipo_loss",
    "aot_loss",
    "aot_unpaired_loss",
]


@_with_doc(_DIVERGENCE_DOC)
def f_dpo_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    divergence: str = "reverse_kl",
    divergence_alpha: float = 0.5,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """DPO and its f-divergence generalisation (TRL `loss_type="sigmoid"`).

        loss = −ln σ(γ · [f'(π(a⁺)/π0(a⁺)) − f'(π(a⁻)/π0(a⁻))])

    With the default reverse KL, f'(u) = ln u and this is DPO (Rafailov et al. 2023, eq. 7,
    https://arxiv.org/abs/2305.18290; eq. 6 of Yun et al., arXiv 2506.01523), equal to
    `synthalign.objectives.dpo_loss`.  Other divergences: f-DPO (Wang et al. 2023,
    https://arxiv.org/abs/2309.16240).

    Args:
        gamma: preference temperature (TRL's `beta`).
        {divergence}
    """
    gamma = check_positive(gamma, "gamma")
    rho = _f_margin(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, gamma, divergence, divergence_alpha)
    return weighted_reduce(-F.logsigmoid(rho), weight, reduction)


@_with_doc(_DIVERGENCE_DOC)
def length_normalized_dpo_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    length_chosen: Tensor | float | None = None,
    length_rejected: Tensor | float | None = None,
    divergence: str = "reverse_kl",
    divergence_alpha: float = 0.5,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Length-normalised DPO, LN-DPO (TRL `loss_type="sigmoid_norm"`).

        loss = −ln σ(γ · [f'(π(a⁺)/π0(a⁺))/|a⁺| − f'(π(a⁻)/π0(a⁻))/|a⁻|])

    DPO on per-token average log-ratios (Ahrabian et al. 2024, "A Practical Analysis of Human
    Alignment with *PO", https://arxiv.org/abs/2407.15229).  With lengths 1 (the tabular default) it
    is `f_dpo_loss`.

    Args:
        gamma: preference temperature (TRL's `beta`).
        length_chosen, length_rejected: token counts |a⁺|, |a⁻| (default 1).
        {divergence}
    """
    gamma = check_positive(gamma, "gamma")
    score_chosen, score_rejected = _scores(
        logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, divergence, divergence_alpha
    )
    margin = _per_token_margin(score_chosen, score_rejected, length_chosen, length_rejected)
    return weighted_reduce(-F.logsigmoid(gamma * margin), weight, reduction)


def conservative_dpo_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    label_smoothing: float,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Conservative DPO, cDPO: DPO with labels flipped with probability ε.

        loss = −(1 − ε) ln σ(γΔ) − ε ln σ(−γΔ)

    Mitchell 2023, "A note on DPO with noisy preferences and relationship to IPO"
    (https://ericmitchell.ai/cdpo.pdf), analysed as a biased estimator in Chowdhury et al. 2024
    (https://arxiv.org/abs/2403.00409).  Older TRL versions applied it through `label_smoothing` with
    `loss_type="sigmoid"`; TRL 1.16's "sigmoid" ignores `label_smoothing`, and the same formula survives
    only in `CPOTrainer` (reference-free).  ε = 0 is DPO.

    Args:
        gamma: preference temperature.
        label_smoothing: ε ∈ [0, 1], the assumed label-flip probability.
    """
    gamma = check_positive(gamma, "gamma")
    eps = _check_interval(label_smoothing, "label_smoothing", 0.0, 1.0, low_open=False, high_open=False)
    h_chosen, h_rejected = _log_ratios(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    return weighted_reduce(_smoothed_logistic(gamma * _difference(h_chosen, h_rejected), eps), weight, reduction)


@_with_doc(_DIVERGENCE_DOC)
def robust_dpo_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    label_smoothing: float,
    divergence: str = "reverse_kl",
    divergence_alpha: float = 0.5,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Robust DPO, rDPO (TRL `loss_type="robust"`): an unbiased loss under label-flip rate ε.

        loss = [−(1 − ε) ln σ(γΔ) + ε ln σ(−γΔ)] / (1 − 2ε)

    Chowdhury, Kini & Natarajan 2024, https://arxiv.org/abs/2403.00409.  Unlike cDPO it can be
    negative.  ε = 0 is DPO.

    Args:
        gamma: preference temperature (TRL's `beta`).
        label_smoothing: the flip rate ε ∈ [0, 1/2) (TRL's `label_smoothing`).
        {divergence}
    """
    gamma = check_positive(gamma, "gamma")
    eps = _check_interval(label_smoothing, "label_smoothing", 0.0, 0.5, low_open=False, high_open=True)
    rho = _f_margin(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, gamma, divergence, divergence_alpha)
    loss = (-(1.0 - eps) * F.logsigmoid(rho) + eps * F.logsigmoid(-rho)) / (1.0 - 2.0 * eps)
    return weighted_reduce(loss, weight, reduction)


@_with_doc(_DIVERGENCE_DOC)
def exo_pair_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    label_smoothing: float = 1e-3,
    divergence: str = "reverse_kl",
    divergence_alpha: float = 0.5,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """EXO for pairwise preferences (TRL `loss_type="exo_pair"`).

        loss = KL(Bern(σ(γΔ)) ‖ Bern(1 − ε))
             = σ(γΔ)[ln σ(γΔ) − ln(1 − ε)] + σ(−γΔ)[ln σ(−γΔ) − ln ε]

    Ji et al. 2024, "Towards Efficient Exact Optimization of Language Model Alignment", eq. (16) with
    K = 2, https://arxiv.org/abs/2402.00856: the reverse KL from the model's preference distribution to
    a smoothed label distribution (1 − ε, ε) (mode seeking, where DPO's cross-entropy is mean seeking).
    The paper's separate temperatures β_π and β_r are folded into γ and ε, as in TRL.

    Args:
        gamma: preference temperature (TRL's `beta`).
        label_smoothing: ε ∈ (0, 1); the paper recommends 1e-3.  ε = 0 makes the loss infinite.
        {divergence}
    """
    gamma = check_positive(gamma, "gamma")
    eps = _check_interval(label_smoothing, "label_smoothing", 0.0, 1.0, low_open=True, high_open=True)
    rho = _f_margin(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, gamma, divergence, divergence_alpha)
    # Beyond |ρ| = 1e4 both sigmoids are exactly 0 or 1 in float32 and float64, so the clamp
    # changes no finite value; at ±inf it avoids 0 · (−inf) and gives the limit −ln(1 − ε) or −ln ε.
    logits = rho.clamp(-1e4, 1e4)
    log_q_win, log_q_lose = F.logsigmoid(logits), F.logsigmoid(-logits)
    loss = torch.sigmoid(logits) * (log_q_win - math.log1p(-eps)) + torch.sigmoid(-logits) * (
        log_q_lose - math.log(eps)
    )
    return weighted_reduce(loss, weight, reduction)


@_with_doc(_DIVERGENCE_DOC)
def discopop_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    tau: float = 0.05,
    divergence: str = "reverse_kl",
    divergence_alpha: float = 0.5,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """DiscoPOP, the log-ratio modulated loss (TRL `loss_type="discopop"`).

        ρ = γΔ,   loss = (1 − σ(ρ/τ)) · (−ln σ(ρ)) + σ(ρ/τ) · e^(−ρ)

    Lu et al. 2024, "Discovering Preference Optimization Algorithms with and for Large Language
    Models", eq. (5), https://arxiv.org/abs/2406.08414.  The exponential branch is evaluated as
    exp(ln σ(ρ/τ) − ρ), so it stays finite for very negative ρ whenever τ < 1 (where TRL's
    σ(ρ/τ)·e^(−ρ) gives 0·inf).

    Args:
        gamma: preference temperature (TRL's `beta`).
        tau: the modulation temperature τ > 0 (TRL's `discopop_tau`); the paper uses 0.05.
        {divergence}
    """
    gamma = check_positive(gamma, "gamma")
    tau = check_positive(tau, "tau")
    rho = _f_margin(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, gamma, divergence, divergence_alpha)
    logistic = torch.sigmoid(-rho / tau) * -F.logsigmoid(rho)
    exponential = torch.exp(F.logsigmoid(rho / tau) - rho)
    return weighted_reduce(logistic + exponential, weight, reduction)


@_with_doc(_DIVERGENCE_DOC)
def hinge_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    divergence: str = "reverse_kl",
    divergence_alpha: float = 0.5,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """SLiC-style hinge loss (TRL `loss_type="hinge"`).

        loss = max(0, 1 − γΔ)

    Zhao et al. 2023, "SLiC-HF", https://arxiv.org/abs/2305.10425.  This is TRL's convention:
    reference log-ratios and margin 1/γ.  The paper's calibration loss max(0, δ − ln π(a⁺) + ln π(a⁻))
    is hinge_loss(...)/γ with γ = 1/δ and the reference log-probabilities set to zero.

    Args:
        gamma: preference temperature (TRL's `beta`); the margin in Δ is 1/γ.
        {divergence}
    """
    gamma = check_positive(gamma, "gamma")
    rho = _f_margin(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, gamma, divergence, divergence_alpha)
    return weighted_reduce(torch.relu(1.0 - rho), weight, reduction)


@_with_doc(_DIVERGENCE_DOC)
def f_ipo_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    length_chosen: Tensor | float | None = None,
    length_rejected: Tensor | float | None = None,
    normalize_length: bool = True,
    divergence: str = "reverse_kl",
    divergence_alpha: float = 0.5,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """IPO (TRL `loss_type="ipo"`), optionally with an f-divergence score.

        loss = (f'(π(a⁺)/π0(a⁺))/|a⁺| − f'(π(a⁻)/π0(a⁻))/|a⁻| − 1/(2γ))²

    Azar et al. 2024, "A General Theoretical Paradigm to Understand Learning from Human Preferences",
    eq. (17), https://arxiv.org/abs/2310.12036, with γ the paper's τ.  Two conventions:

    * `normalize_length=True` (default, TRL's DPOTrainer): log-ratios divided by the token counts.  TRL
      reports that the IPO authors confirmed this per-token form is the one behind the paper's results.
    * `normalize_length=False`: the paper's eq. (17) on whole-sequence log-ratios (also what
      `OnlineDPOTrainer` and `CPOTrainer` compute on their inputs).

    With lengths 1 (the tabular default) both coincide and equal `synthalign.objectives.ipo_loss`
    with τ = γ.

    Args:
        gamma: the IPO regularisation τ (TRL's `beta`).
        length_chosen, length_rejected: token counts |a⁺|, |a⁻| (default 1).
        normalize_length: divide by the token counts (True) or not (False).
        {divergence}
    """
    gamma = check_positive(gamma, "gamma")
    if not isinstance(normalize_length, bool):
        raise ValueError(f"normalize_length must be a bool, got {normalize_length!r}")
    score_chosen, score_rejected = _scores(
        logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, divergence, divergence_alpha
    )
    margin = _per_token_margin(score_chosen, score_rejected, length_chosen, length_rejected, normalize=normalize_length)
    return weighted_reduce((margin - 1.0 / (2.0 * gamma)).square(), weight, reduction)


def aot_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    label_smoothing: float = 0.0,
    dim: int = -1,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Alignment via optimal transport, paired form (TRL `loss_type="aot"`).

        m_i = ln π(a⁺_i)/π(a⁻_i),  m0_i = ln π0(a⁺_i)/π0(a⁻_i),
        δ_(k) = m_(k) − m0_(k)   (the k-th smallest of each, sorted separately along `dim`),
        loss_k = −(1 − ε) ln σ(γ δ_(k)) − ε ln σ(−γ δ_(k))

    Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal Transport",
    https://arxiv.org/abs/2406.05882: first-order stochastic dominance of the policy's margin
    distribution over the reference's, enforced by the 1-D optimal transport (sorting) coupling within
    the batch.  The loss therefore depends on the whole batch along `dim`; `reduction="none"` returns
    the losses of the sorted quantile pairs, not of the input pairs.  Per-pair weights are not
    defined for a sorted coupling (TRL refuses WPO weighting for the same reason): `weight` must be
    None.

    Args:
        gamma: preference temperature (TRL's `beta`).
        label_smoothing: ε ∈ [0, 1] (TRL's `label_smoothing`).
        dim: the dimension that holds the pairs of one batch (TRL sorts its 1-D batch).
    """
    gamma = check_positive(gamma, "gamma")
    eps = _check_interval(label_smoothing, "label_smoothing", 0.0, 1.0, low_open=False, high_open=False)
    if weight is not None:
        raise ValueError("weight must be None for aot_loss: sorting the batch couples quantiles, not input pairs")
    lc, lr, rc, rr = _pair_inputs(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    return _sorted_coupling_loss(safe_log_ratio(lc, lr), safe_log_ratio(rc, rr), gamma, eps, dim, reduction)


def aot_unpaired_loss(
    logp_chosen: Tensor,
    logp_rejected: Tensor,
    ref_logp_chosen: Tensor,
    ref_logp_rejected: Tensor,
    *,
    gamma: float,
    label_smoothing: float = 0.0,
    dim: int = -1,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Alignment via optimal transport, unpaired form (TRL `loss_type="aot_unpaired"`).

        δ_(k) = h⁺_(k) − h⁻_(k)   (chosen and rejected log-ratios sorted separately along `dim`),
        loss_k = −(1 − ε) ln σ(γ δ_(k)) − ε ln σ(−γ δ_(k))

    Melnyk et al. 2024, https://arxiv.org/abs/2406.05882: dominance of the chosen reward distribution
    over the rejected one, for data where chosen and rejected responses need not come in pairs.  Same
    batch semantics as `aot_loss`: `weight` must be None.

    Args:
        gamma: preference temperature (TRL's `beta`).
        label_smoothing: ε ∈ [0, 1] (TRL's `label_smoothing`).
        dim: the dimension that holds the responses of one batch.
    """
    gamma = check_positive(gamma, "gamma")
    eps = _check_interval(label_smoothing, "label_smoothing", 0.0, 1.0, low_open=False, high_open=False)
    if weight is not None:
        raise ValueError("weight must be None for aot_unpaired_loss: sorting the batch couples quantiles")
    h_chosen, h_rejected = _log_ratios(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    h_chosen, h_rejected = torch.broadcast_tensors(h_chosen, h_rejected)
    return _sorted_coupling_loss(h_chosen, h_rejected, gamma, eps, dim, reduction)
