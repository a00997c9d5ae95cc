"""Per-sample estimators of KL(π ‖ π0) used by RLHF code, and their exact expectations (spec §6 item 14)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from synthalign._checks import safe_log_ratio, weighted_reduce
from synthalign.objectives._pairwise import _check_inputs

__all__ = ["KL_ESTIMATOR_KINDS", "kl_estimator", "exact_kl_estimator_expectation"]

KL_ESTIMATOR_KINDS = ("k1", "k2", "k3")


def _kl_inputs(logp: Tensor, ref_logp: Tensor, kind: str) -> tuple[Tensor, Tensor]:
    """The kind checked, and (ln π, ln π0) as real tensors with shapes that broadcast."""
    if kind not in KL_ESTIMATOR_KINDS:
        raise ValueError(f"kind must be one of {KL_ESTIMATOR_KINDS}, got {kind!r}")
    return _check_inputs(logp=logp, ref_logp=ref_logp)


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
    logp, ref_logp = _kl_inputs(logp, ref_logp, kind)
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
    logp, ref_logp = _kl_inputs(logp, ref_logp, kind)
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
