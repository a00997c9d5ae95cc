"""Validation and shared pieces of the pair losses: checked inputs, log-ratios, f-divergence scores, lengths."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from synthalign._checks import (
    as_tensor,
    check_finite_float,
    check_positive,
    check_same_shape,
    safe_difference,
    safe_log_ratio,
    weighted_reduce,
)

DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")

_PAIR_NAMES = ("logp_chosen", "logp_rejected", "ref_logp_chosen", "ref_logp_rejected")
_LN2 = math.log(2.0)
# Margin, in nats above ln(bound / gamma), beyond which chi-PO's clip is saturated for every pair of
# distinct log-ratios: two distinct floats near m differ by at least 2^-53 m, and
# e^m · 2^-54 m >= bound / gamma once m >= ln(bound / gamma) + 54 ln 2 (= 37.4).
_CHIPO_CAP_MARGIN = 40.0


def _check_inputs(**tensors: Tensor) -> tuple[Tensor, ...]:
    """The inputs as real tensors (lists and numpy arrays converted), NaN-free, with shapes that broadcast."""
    names = tuple(tensors)
    values = tuple(as_tensor(value, name) for name, value in tensors.items())
    check_same_shape(values, names)
    return values


def _pair_inputs(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected) -> tuple[Tensor, ...]:
    values = (logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    return _check_inputs(**dict(zip(_PAIR_NAMES, values, strict=True)))


def _log_ratios(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected) -> tuple[Tensor, Tensor]:
    """(h⁺, h⁻) = (ln π(a⁺)/π0(a⁺), ln π(a⁻)/π0(a⁻))."""
    lc, lr, rc, rr = _pair_inputs(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    return safe_log_ratio(lc, rc), safe_log_ratio(lr, rr)


_difference = safe_difference


def _check_offset(value: Tensor | float, name: str) -> Tensor | float:
    """A finite float, or a tensor used as given once it is finite everywhere (a reward shift, a reference point)."""
    if not isinstance(value, Tensor):
        return check_finite_float(value, name)
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} must be finite")
    return value


def _check_interval(value, name: str, low: float, high: float, *, low_open: bool, high_open: bool) -> float:
    value = check_finite_float(value, name)
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


def _per_token_margin(
    score_chosen: Tensor, score_rejected: Tensor, length_chosen, length_rejected, *, normalize: bool = True
) -> Tensor:
    """score⁺/|a⁺| − score⁻/|a⁻|: the margin of the per-token convention, the token counts checked (default 1).

    With `normalize=False` the counts are still checked but the scores are not divided (per-sequence margin).
    """
    length_chosen = _lengths(length_chosen, "length_chosen", score_chosen)
    length_rejected = _lengths(length_rejected, "length_rejected", score_rejected)
    if normalize:
        score_chosen = _per_token(score_chosen, length_chosen)
        score_rejected = _per_token(score_rejected, length_rejected)
    return _difference(score_chosen, score_rejected)


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


def _f_margin(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, gamma, divergence, divergence_alpha):
    """ρ = γΔ = γ · [f'(π(a⁺)/π0(a⁺)) − f'(π(a⁻)/π0(a⁻))], the scaled margin of the f-DPO family.

    f-DPO's margin (Wang et al. 2023, https://arxiv.org/abs/2309.16240; the reverse KL gives DPO's, eq. 6 of
    the paper); `gamma` is checked by the caller, the divergence here.
    """
    score_chosen, score_rejected = _scores(
        logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, divergence, divergence_alpha
    )
    return gamma * _difference(score_chosen, score_rejected)


def _with_doc(doc: str):
    def decorate(fn):
        fn.__doc__ = fn.__doc__.replace("{divergence}", doc)
        return fn

    return decorate


def _smoothed_logistic(logits: Tensor, eps: float) -> Tensor:
    """−(1 − ε) ln σ(z) − ε ln σ(−z) at z = `logits`: the logistic loss with labels flipped at rate ε.

    cDPO's loss (Mitchell 2023, https://ericmitchell.ai/cdpo.pdf) and AOT's per-quantile loss (Melnyk et al.
    2024, https://arxiv.org/abs/2406.05882).
    """
    return -(1.0 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)


def _sorted_coupling_loss(upper: Tensor, lower: Tensor, gamma: float, eps: float, dim: int, reduction: str) -> Tensor:
    """AOT's loss of the 1-D optimal-transport (sorting) coupling of two batches along `dim`.

    The k-th smallest of `upper` is paired with the k-th smallest of `lower`, and each quantile pair
    costs the smoothed logistic loss of γ(upper_(k) − lower_(k)) (Melnyk et al. 2024,
    https://arxiv.org/abs/2406.05882).  No per-pair weight exists for a sorted coupling, so the
    reduction is unweighted.
    """
    upper_sorted, _ = torch.sort(upper, dim=dim)
    lower_sorted, _ = torch.sort(lower, dim=dim)
    return weighted_reduce(_smoothed_logistic(gamma * _difference(upper_sorted, lower_sorted), eps), None, reduction)
