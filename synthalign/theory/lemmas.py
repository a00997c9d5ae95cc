"""Lemmas 8, 9 and 10 of the paper (spec §4) as the functions their inequalities bound, and ψ (spec §3).

Tests check the inequalities numerically; `synthalign.theory.bounds` uses ψ in the theorems' constants.
Every quantity is computed in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from synthalign._checks import as_tensor, check_positive

__all__ = ["psi", "lemma9_factor", "lemma8_lower", "lemma9_upper", "lemma10_lower"]

_DTYPE = torch.float64
# Slope of the sigmoid lower bound |σ(u) − σ(v)| ≥ c e^{−(|u|∨|v|)} |u − v|, proved in Lemma 8.
_LEMMA8_SLOPE = 0.25


def _psi_of_log(t: Tensor) -> Tensor:
    """ψ(e^t) = (e^t − 1 − t)/t², with the series Σ_k t^k/(k+2)! near t = 0 (value ½ at 0)."""
    small = t.abs() < 0.1
    safe = torch.where(small, torch.ones_like(t), t)
    direct = (torch.expm1(safe) - safe) / safe.square()
    direct = torch.where(safe == math.inf, torch.full_like(t, math.inf), direct)
    direct = torch.where(safe == -math.inf, torch.zeros_like(t), direct)
    series = torch.zeros_like(t)
    for k in range(10, -1, -1):  # Horner; the truncation error is below 1e-20 for |t| < 0.1
        series = series * t + 1.0 / math.factorial(k + 2)
    return torch.where(small, series, direct)


def _like_input(result: Tensor, value):
    return result if isinstance(value, Tensor) else (result.item() if result.dim() == 0 else result)


def psi(z: float | Tensor) -> float | Tensor:
    """ψ(z) = (z − 1 − ln z)/(ln z)² (spec §3), continued by its limit ψ(1) = ½.

    ψ is increasing on (0, ∞) with ψ(0+) = 0 and ψ(∞) = ∞; it is the best
    constant in z − 1 − ln z ≤ ψ(z_max)(ln z)² for z ≤ z_max (Lemma 9).
    Accepts a float (returns a float) or a tensor (returns a float64 tensor).
    """
    z_t = as_tensor(z, "z", dtype=_DTYPE)
    if (z_t <= 0).any():
        raise ValueError(f"z must be > 0, got {z}")
    return _like_input(_psi_of_log(torch.log(z_t)), z)


def lemma9_factor(r_max: float | Tensor) -> float | Tensor:
    """Lemma 9's constant ½ ∨ ψ(r_max) (spec §3–4); equal to ψ(r_max) when r_max ≥ 1."""
    r_t = as_tensor(r_max, "r_max", dtype=_DTYPE)
    if (r_t <= 0).any():
        raise ValueError(f"r_max must be > 0, got {r_max}")
    return _like_input(torch.clamp(_psi_of_log(torch.log(r_t)), min=0.5), r_max)


def _lemma9_factor_of_log(log_r_max: float) -> float:
    return max(0.5, _psi_of_log(torch.tensor(log_r_max, dtype=_DTYPE)).item())


def lemma8_lower(a: float | Tensor, b: float | Tensor) -> float | Tensor:
    """Lemma 8's lower bound on |σ(a) − σ(b)|: ¼ e^{−(|a| ∨ |b|)} |a − b| (spec §4).

    The printed proofs of Thms 4, 6, 7, 14 use twice this value, which fails near
    0 (σ'(0) = ¼): see the module docstring.
    """
    a_t = as_tensor(a, "a", dtype=_DTYPE)
    b_t = as_tensor(b, "b", dtype=_DTYPE)
    scale = torch.exp(-torch.maximum(a_t.abs(), b_t.abs()))
    return _like_input(_LEMMA8_SLOPE * scale * (a_t - b_t).abs(), a if isinstance(a, Tensor) else b)


def lemma9_upper(r: float | Tensor, r_max: float) -> float | Tensor:
    """Lemma 9's upper bound on r − 1 − ln r: (½ ∨ ψ(r_max)) (ln r)², for r ∈ (0, r_max], r_max > 1.

    Lemma 9 also gives the cruder (r_max / (ln r_max)²)(ln r)², which is larger.
    """
    r_t = as_tensor(r, "r", dtype=_DTYPE)
    r_max = check_positive(r_max, "r_max")
    if not r_max > 1:
        raise ValueError(f"r_max must be > 1, got {r_max}")
    if (r_t <= 0).any() or (r_t > r_max).any():
        raise ValueError(f"r must lie in (0, r_max] = (0, {r_max}], got {r}")
    factor = _lemma9_factor_of_log(math.log(r_max))
    return _like_input(factor * torch.log(r_t).square(), r)


def lemma10_lower(r: float | Tensor, r_min: float) -> float | Tensor:
    """Lemma 10's lower bound on r − 1 − ln r: (ln r)² / (e · (ln(1/r_min) ∨ 1)), for r ≥ r_min > 0.

    Tight at r = r_min = 1/e.
    """
    r_t = as_tensor(r, "r", dtype=_DTYPE)
    r_min = check_positive(r_min, "r_min")
    if (r_t < r_min).any():
        raise ValueError(f"r must be >= r_min = {r_min}, got {r}")
    scale = math.e * max(math.log(1.0 / r_min), 1.0)
    return _like_input(torch.log(r_t).square() / scale, r)
