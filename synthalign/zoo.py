"""The objective zoo: published preference losses as pure functions over log-probabilities.

Every pairwise loss has the shape

    <name>_loss(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *,
                gamma, <hyper-parameters>, weight=None, reduction="mean")

where the four tensors hold ln π(a⁺|x), ln π(a⁻|x), ln π0(a⁺|x), ln π0(a⁻|x) for each pair (any
broadcastable shapes), and `weight` serves the three uses of `synthalign.objectives` (explicit pairs,
a dataset held as counts, the exact population loss).  Reference-free losses (SimPO, SFT) accept and
ignore the reference arguments so that every zoo entry can be called the same way.

Notation used in the docstrings: h⁺ = ln[π(a⁺)/π0(a⁺)] and h⁻ = ln[π(a⁻)/π0(a⁻)] are the log-ratios
(two −inf read as a tie, 0, via `safe_log_ratio`), and Δ = h⁺ − h⁻ is the DPO margin.

**Naming.** `gamma` is the preference temperature, the coefficient DPO papers and TRL call β (spec §1:
the paper puts γ where DPO papers put β).  In synthalign `beta` always weighs a KL(π ‖ π0) regularizer,
so no function here has a `beta` argument.

**Sequences.** On a finite response set a response is a single token: its length is 1 and per-token
and per-sequence conventions coincide.  Losses whose published or TRL form divides by the response
length take `length_chosen` / `length_rejected` (token counts, default 1) so that both conventions
can be reproduced.

**TRL.** `TRL_LOSS_TYPES` maps every `loss_type` of `trl.DPOTrainer` (TRL 1.16) to the function here
that reproduces it; `tests/test_zoo_trl.py` checks values and gradients against TRL itself.  Where TRL
and the paper disagree, the docstring says which convention is the default and a keyword selects the
other.

This module holds pair losses and KL estimators only.  The objectives of the paper synthalign
validates (PMLE, distillation, RKL, RLHF, …) live in `synthalign.objectives`; fitting them is
`synthalign.estimators`' job.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from synthalign._checks import (
    as_tensor,
    check_positive,
    check_same_shape,
    safe_log_ratio,
    weighted_reduce,
)

DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
KL_ESTIMATOR_KINDS = ("k1", "k2", "k3")

_PAIR_NAMES = ("logp_chosen", "logp_rejected", "ref_logp_chosen", "ref_logp_rejected")
_LN2 = math.log(2.0)
# Margin, in nats above ln(bound / gamma), beyond which chi-PO's clip is saturated for every pair of
# distinct log-ratios: two distinct floats near m differ by at least 2^-53 m, and
# e^m · 2^-54 m >= bound / gamma once m >= ln(bound / gamma) + 54 ln 2 (= 37.4).
_CHIPO_CAP_MARGIN = 40.0


# ----------------------------------------------------------------------------------------------------------------------
# Validation and shared pieces
# ----------------------------------------------------------------------------------------------------------------------


def _pair_inputs(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected) -> tuple[Tensor, ...]:
    values = (logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    tensors = tuple(as_tensor(value, name) for value, name in zip(values, _PAIR_NAMES, strict=True))
    check_same_shape(tensors, _PAIR_NAMES)
    return tensors


def _log_ratios(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected) -> tuple[Tensor, Tensor]:
    """(h⁺, h⁻) = (ln π(a⁺)/π0(a⁺), ln π(a⁻)/π0(a⁻))."""
    lc, lr, rc, rr = _pair_inputs(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    return safe_log_ratio(lc, rc), safe_log_ratio(lr, rr)


def _difference(a: Tensor, b: Tensor) -> Tensor:
    """a − b, with two equal infinite scores (two zero-probability responses) read as a tie, 0.

    Only infinite ties are replaced, so the gradient of a finite tie is still (1, −1).
    """
    diff = a - b
    return torch.where(torch.isinf(a) & (a == b), torch.zeros_like(diff), diff)


def _check_real(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a real number, got {value!r}") from err
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_interval(value, name: str, low: float, high: float, *, low_open: bool, high_open: bool) -> float:
    value = _check_real(value, name)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must lie in {interval}, got {value}")
    return value


def _check_divergence(divergence: str, divergence_alpha: float) -> float:
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    return check_positive(divergence_alpha, "divergence_alpha")


def _lengths(length, name: str, like: Tensor) -> Tensor | None:
    if length is None:
        return None
    length = as_tensor(length, name, dtype=like.dtype, device=like.device)
    if (length <= 0).any():
        raise ValueError(f"{name} must be > 0 (a token count), got min {length.min().item()}")
    return length


def _per_token(score: Tensor, length: Tensor | None) -> Tensor:
    return score if length is None else score / length


def _f_score(log_ratio: Tensor, divergence: str, divergence_alpha: float) -> Tensor:
    """f'(u) at u = π/π0 = e^h, normalised so that f'(1) = 0 (the additive constant cancels in Δ).

    reverse KL: ln u;  forward KL: 1 − 1/u;  Jensen–Shannon: ln(2u/(1+u));
    α-divergence (Wang et al. 2023, Table 1): (1 − u^(−α))/α.
    """
    if divergence == "reverse_kl":
        return log_ratio
    if divergence == "forward_kl":
        return -torch.expm1(-log_ratio)
    if divergence == "js_divergence":
        return _LN2 + F.logsigmoid(log_ratio)
    return -torch.expm1(-divergence_alpha * log_ratio) / divergence_alpha


_DIVERGENCE_DOC = """divergence: the f-divergence of f-DPO (Wang et al. 2023, https://arxiv.org/abs/2309.16240)
            whose f'(π/π0) replaces the log-ratio h; one of `DIVERGENCES`, default "reverse_kl" (plain h).
            The scores are f'(u) normalised to f'(1) = 0 as in TRL: forward KL 1 − 1/u, JS ln(2u/(1+u)),
            α-divergence (1 − u^(−α))/α.  Only "reverse_kl" and "js_divergence" stay finite for
            arbitrarily small or large ratios; the others are exponential in h.
        divergence_alpha: α of the α-divergence in the paper's parameterisation (α → 0 is reverse KL,
            α = 1 forward KL).  TRL's `f_alpha_divergence_coef` is 1 − α."""


def _scores(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, divergence, divergence_alpha):
    divergence_alpha = _check_divergence(divergence, divergence_alpha)
    h_chosen, h_rejected = _log_ratios(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    return _f_score(h_chosen, divergence, divergence_alpha), _f_score(h_rejected, divergence, divergence_alpha)


def _with_doc(doc: str):
    def decorate(fn):
        fn.__doc__ = fn.__doc__.replace("{divergence}", doc)
        return fn

    return decorate


# ----------------------------------------------------------------------------------------------------------------------
# Logistic (sigmoid) family
# ----------------------------------------------------------------------------------------------------------------------


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
    score_chosen, score_rejected = _scores(
        logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, divergence, divergence_alpha
    )
    loss = -F.logsigmoid(gamma * _difference(score_chosen, score_rejected))
    return weighted_reduce(loss, weight, reduction)


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
    length_chosen = _lengths(length_chosen, "length_chosen", score_chosen)
    length_rejected = _lengths(length_rejected, "length_rejected", score_rejected)
    margin = _difference(_per_token(score_chosen, length_chosen), _per_token(score_rejected, length_rejected))
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
    logits = gamma * _difference(h_chosen, h_rejected)
    loss = -(1.0 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)
    return weighted_reduce(loss, weight, reduction)


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
    score_chosen, score_rejected = _scores(
        logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, divergence, divergence_alpha
    )
    logits = gamma * _difference(score_chosen, score_rejected)
    loss = (-(1.0 - eps) * F.logsigmoid(logits) + eps * F.logsigmoid(-logits)) / (1.0 - 2.0 * eps)
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
    score_chosen, score_rejected = _scores(
        logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, divergence, divergence_alpha
    )
    logits = gamma * _difference(score_chosen, score_rejected)
    # Beyond |logits| = 1e4 both sigmoids are exactly 0 or 1 in float32 and float64, so the clamp
    # changes no finite value; at ±inf it avoids 0 · (−inf) and gives the limit −ln(1 − ε) or −ln ε.
    logits = logits.clamp(-1e4, 1e4)
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
    score_chosen, score_rejected = _scores(
        logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, divergence, divergence_alpha
    )
    rho = gamma * _difference(score_chosen, score_rejected)
    logistic = torch.sigmoid(-rho / tau) * -F.logsigmoid(rho)
    exponential = torch.exp(F.logsigmoid(rho / tau) - rho)
    return weighted_reduce(logistic + exponential, weight, reduction)


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
    policy_margin, _ = torch.sort(safe_log_ratio(lc, lr), dim=dim)
    ref_margin, _ = torch.sort(safe_log_ratio(rc, rr), dim=dim)
    logits = gamma * _difference(policy_margin, ref_margin)
    loss = -(1.0 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)
    return weighted_reduce(loss, None, reduction)


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
    sorted_chosen, _ = torch.sort(h_chosen, dim=dim)
    sorted_rejected, _ = torch.sort(h_rejected, dim=dim)
    logits = gamma * _difference(sorted_chosen, sorted_rejected)
    loss = -(1.0 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)
    return weighted_reduce(loss, None, reduction)


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
    lc = as_tensor(logp_chosen, "logp_chosen")
    lr = as_tensor(logp_rejected, "logp_rejected")
    check_same_shape((lc, lr), _PAIR_NAMES[:2])
    length_chosen = _lengths(length_chosen, "length_chosen", lc)
    length_rejected = _lengths(length_rejected, "length_rejected", lr)
    margin = _difference(_per_token(lc, length_chosen), _per_token(lr, length_rejected))
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
    if loss_type == "sigmoid":
        return f_dpo_loss(
            logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, gamma=gamma, weight=weight,
            reduction=reduction,
        )
    if loss_type == "ipo":
        return f_ipo_loss(
            logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, gamma=gamma, normalize_length=False,
            weight=weight, reduction=reduction,
        )
    raise ValueError(f"loss_type must be 'sigmoid' or 'ipo', got {loss_type!r}")


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
    score_chosen, score_rejected = _scores(
        logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, divergence, divergence_alpha
    )
    loss = torch.relu(1.0 - gamma * _difference(score_chosen, score_rejected))
    return weighted_reduce(loss, weight, reduction)


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
    length_chosen = _lengths(length_chosen, "length_chosen", score_chosen)
    length_rejected = _lengths(length_rejected, "length_rejected", score_rejected)
    if normalize_length:
        score_chosen = _per_token(score_chosen, length_chosen)
        score_rejected = _per_token(score_rejected, length_rejected)
    margin = _difference(score_chosen, score_rejected)
    return weighted_reduce((margin - 1.0 / (2.0 * gamma)).square(), weight, reduction)


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
    if isinstance(delta, Tensor):
        if not torch.isfinite(delta).all():
            raise ValueError("delta must be finite")
    else:
        delta = _check_real(delta, "delta")
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
    if isinstance(z0, Tensor):
        if not torch.isfinite(z0).all():
            raise ValueError("z0 must be finite")
    else:
        z0 = _check_real(z0, "z0")
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


# ----------------------------------------------------------------------------------------------------------------------
# KL estimators (spec §6 item 14)
# ----------------------------------------------------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in KL_ESTIMATOR_KINDS:
        raise ValueError(f"kind must be one of {KL_ESTIMATOR_KINDS}, got {kind!r}")


def kl_estimator(
    logp: Tensor,
    ref_logp: Tensor,
    kind: str = "k1",
    *,
    weight: Tensor | None = None,
    reduction: str = "none",
) -> Tensor:
    """Per-sample estimators of KL(π ‖ π0) used by RLHF code, for samples a ∼ π.

        r = π0(a)/π(a),   k1 = −ln r,   k2 = ½ (ln r)²,   k3 = r − 1 − ln r

    Schulman 2020, "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html (spec §6 item
    14).  k1 and k3 are unbiased for KL(π ‖ π0) (k3 ≥ 0 always); k2 is biased but its gradient, taken
    on fixed samples, is unbiased for ∇KL(π ‖ π0), while k3's is unbiased for ∇KL(π0 ‖ π) and k1's
    has mean zero.  See `exact_kl_estimator_expectation` for the exact expectations.

    Args:
        logp: ln π(a) of the samples.
        ref_logp: ln π0(a) of the same samples.
        kind: "k1", "k2" or "k3".
        weight, reduction: as for the losses; the default returns the per-sample values.
    """
    _check_kind(kind)
    logp, ref_logp = as_tensor(logp, "logp"), as_tensor(ref_logp, "ref_logp")
    check_same_shape((logp, ref_logp), ("logp", "ref_logp"))
    log_r = safe_log_ratio(ref_logp, logp)
    if kind == "k1":
        value = -log_r
    elif kind == "k2":
        value = 0.5 * log_r.square()
    else:
        value = torch.expm1(log_r) - log_r
    return weighted_reduce(value, weight, reduction)


def exact_kl_estimator_expectation(
    logp: Tensor,
    ref_logp: Tensor,
    kind: str = "k1",
    *,
    detach_weights: bool = True,
) -> Tensor:
    """E_{a∼π}[k(a)] computed exactly on a finite response set (last dimension).

        Σ_a sg(π(a)) · k(a)      (sg = stop-gradient, with detach_weights=True)

    The value is the estimator's expectation: E[k1] = E[k3] = KL(π ‖ π0) (when π0 covers π's support;
    in general E[k3] = KL(π ‖ π0) − π0(outside supp π)), E[k2] = ½ E[(ln r)²].  With the weights
    detached, autograd returns E_{a∼π}[∇k(a)] — the gradient RL code obtains by back-propagating the
    estimator on fixed samples — not ∇E[k]; spec §6 item 14: E[∇k1] = 0, E[∇k2] = ∇KL(π ‖ π0),
    E[∇k3] = ∇KL(π0 ‖ π).  With `detach_weights=False` autograd returns ∇E[k] instead.

    π(a)·r(a) is evaluated as exp(ln π(a) + ln π0(a) − ln π(a)), so responses whose probability
    underflows still contribute their π0 mass; responses with π(a) = 0 exactly (ln π = −inf) are never
    sampled and contribute 0.

    Args:
        logp: ln π [..., A], normalised over the last dimension.
        ref_logp: ln π0 [..., A].
        kind: "k1", "k2" or "k3".
        detach_weights: stop the gradient through the sampling weights π(a) (default True).

    Returns:
        A tensor of shape [...].
    """
    _check_kind(kind)
    logp, ref_logp = as_tensor(logp, "logp"), as_tensor(ref_logp, "ref_logp")
    check_same_shape((logp, ref_logp), ("logp", "ref_logp"))
    if logp.dim() == 0:
        raise ValueError("logp must have a response dimension (the last one)")
    logp, ref_logp = torch.broadcast_tensors(logp, ref_logp)
    with torch.no_grad():
        total = torch.logsumexp(logp, dim=-1)
        tolerance = 1e-6 if logp.dtype == torch.float64 else 1e-3
        if (total.abs() > tolerance).any():
            raise ValueError(
                f"logp must be normalised over the last dimension, got logsumexp up to {total.abs().max().item():.3g}"
            )
    supported = logp > -math.inf
    zero = torch.zeros_like(logp)
    safe_logp = torch.where(supported, logp, zero)
    safe_ref = torch.where(supported, ref_logp, zero)
    log_weight = safe_logp.detach() if detach_weights else safe_logp
    log_r = safe_ref - safe_logp  # finite ln π, so no −inf − (−inf)
    prob = torch.exp(log_weight)
    if kind == "k1":
        term = prob * -log_r
    elif kind == "k2":
        term = prob * 0.5 * log_r.square()
    else:
        term = torch.exp(log_weight + log_r) - prob - prob * log_r
    return torch.where(supported, term, zero).sum(dim=-1)


# ----------------------------------------------------------------------------------------------------------------------
# Registries
# ----------------------------------------------------------------------------------------------------------------------

ZOO_LOSSES: dict[str, Callable[..., Tensor]] = {
    "f_dpo": f_dpo_loss,
    "length_normalized_dpo": length_normalized_dpo_loss,
    "conservative_dpo": conservative_dpo_loss,
    "robust_dpo": robust_dpo_loss,
    "exo_pair": exo_pair_loss,
    "discopop": discopop_loss,
    "aot": aot_loss,
    "aot_unpaired": aot_unpaired_loss,
    "simpo": simpo_loss,
    "online_dpo": online_dpo_loss,
    "xpo": xpo_loss,
    "hinge": hinge_loss,
    "f_ipo": f_ipo_loss,
    "sppo": sppo_loss,
    "nca_pair": nca_pair_loss,
    "bco_pair": bco_pair_loss,
    "apo_zero": apo_zero_loss,
    "apo_down": apo_down_loss,
    "kto_pair": kto_pair_loss,
    "chipo": chipo_loss,
    "sft": sft_loss,
}
"""Every pair loss of the zoo by name (the function name without `_loss`)."""

TRL_LOSS_TYPES: dict[str, str] = {
    "sigmoid": "f_dpo_loss",
    "hinge": "hinge_loss",
    "ipo": "f_ipo_loss",
    "exo_pair": "exo_pair_loss",
    "nca_pair": "nca_pair_loss",
    "robust": "robust_dpo_loss",
    "bco_pair": "bco_pair_loss",
    "sppo_hard": "sppo_loss",
    "aot": "aot_loss",
    "aot_unpaired": "aot_unpaired_loss",
    "apo_zero": "apo_zero_loss",
    "apo_down": "apo_down_loss",
    "discopop": "discopop_loss",
    "sft": "sft_loss",
    "sigmoid_norm": "length_normalized_dpo_loss",
}
"""`trl.DPOConfig.loss_type` (TRL 1.16) → the synthalign function that reproduces it, with TRL's `beta`
passed as `gamma`, `label_smoothing`, `discopop_tau` as `tau`, `f_divergence_type` as `divergence` and
`f_alpha_divergence_coef` as 1 − `divergence_alpha`."""
