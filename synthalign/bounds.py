"""The constants and right-hand sides of the paper's finite-class theorems (spec §3–4).

This module turns a synthetic world into the numbers its theorems speak about:
the boundedness constant R of A2, the coverage coefficients C_Π, C_ℛ (Def. 3)
and C_0 (Thm 14), and the right-hand sides of Prop. 12, Thms 4, 6, 7, 14 and
Prop. 15 at a given sample size n and confidence δ.  Lemmas 8, 9 and 10 are
exposed as the functions their inequalities bound so that tests can check them.
Fitting estimators and measuring their errors is left to other modules; an
experiment compares the two.

Conventions: a policy is a tensor of log-probabilities [..., X, A], normalized
over the last dimension, -inf for a zero-probability response; a finite class
is a tensor [K, X, A]; every quantity is computed in float64.  Functions over a
class work on blocks of `chunk_size` members (pairs of members for C_0) so that
memory stays bounded when K × X × A is large; `None` picks a block of about
2^22 numbers.

Constants (spec §4, Decision).  The proofs of Thms 4, 6, 14 (and, as argued at
`thm7_bound`, Thm 7) convert a squared preference error into a squared reward
error with |σ(u) − σ(v)| ≥ ½ e^{−(|u|∨|v|)} |u − v|, which is false (u = 0.001,
v = 0); Lemma 8 proves it with ¼.  Every bound that goes through this step takes
`corrected`: `True` (the default, and what synthalign reports) uses Lemma 8's ¼,
`False` reproduces the constant as printed.  The chain is

    E_{x; a,b∼μ}[(P_π(a≻b|x) − P_π*(a≻b|x))²] ≤ 4 ln(·)/n               (Prop. 12)
    (P_π − P_π*)² ≥ c² e^{−4γR} (ΔR̄_π(a) − ΔR̄_π(b))²          (Lemma 8 with slope c,
                                       |u|, |v| ≤ 2γR because |R̄| ≤ γR under A2)
    E_{a,b∼μ}[(ΔR̄(a) − ΔR̄(b))²] = 2 E_μ[ΔR̄²]     (spec §6.11; ΔR̄ is μ-centred)
    ⇒ E_μ[ΔR̄_π²] ≤ (4 / (2c²)) e^{4γR} ln(·)/n,

so the squared-reward constant 4/(2c²) is 8 with the printed c = ½ (the "8" of
Thm 14's intermediate bound; Thms 4, 6 print 16 = 2·8 and Thm 7's reward term
16 = 2·8) and 32 with c = ¼.  The corrected bounds are exactly 4 = (½ / ¼)²
times the printed ones in every term that passes through this step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import torch
from torch import Tensor

from synthalign._checks import as_tensor, check_positive, safe_log_ratio

__all__ = [
    "WorldConstants",
    "boundedness_constant",
    "centred_reward",
    "coverage_coefficient",
    "coverage_coefficient_pairs",
    "coverage_ratios",
    "lemma8_lower",
    "lemma9_factor",
    "lemma9_upper",
    "lemma10_lower",
    "prop12_bound",
    "prop15_factor",
    "psi",
    "thm4_bound",
    "thm6_bound",
    "thm7_bound",
    "thm14_intermediate_bound",
    "world_constants",
]

_DTYPE = torch.float64
_NORMALIZATION_TOL = 1e-6
_BLOCK_NUMBERS = 2**22
# Slope of the sigmoid lower bound |σ(u) − σ(v)| ≥ c e^{−(|u|∨|v|)} |u − v|.
_LEMMA8_SLOPE = 0.25  # proved in Lemma 8
_PRINTED_SLOPE = 0.5  # used by the printed proofs of Thms 4, 6, 7, 14; false near 0
# Prop. 12: squared preference error ≤ 4 ln(|Π|/δ)/n.
_PREFERENCE_CONSTANT = 4.0
_THEOREMS = ("prop12", "thm4", "thm6", "thm14", "thm7")


# --------------------------------------------------------------------------- validation


def _log_policy(value, name: str, *, ndim: int | None = None) -> Tensor:
    """float64 log-probabilities with rows normalized over the last dimension."""
    logp = as_tensor(value, name, dtype=_DTYPE)
    if logp.dim() < 2 or (ndim is not None and logp.dim() != ndim):
        expected = "[..., X, A]" if ndim is None else ("[X, A]" if ndim == 2 else "[K, X, A]")
        raise ValueError(f"{name} must have shape {expected}, got {tuple(logp.shape)}")
    if logp.numel() == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(logp.shape)}")
    if (logp == math.inf).any():
        raise ValueError(f"{name} contains +inf; log-probabilities must be <= 0")
    rows = logp.reshape(-1, logp.shape[-1])
    worst = 0.0
    for block in _blocks(rows.shape[0], max(1, _BLOCK_NUMBERS // rows.shape[1])):
        total = torch.logsumexp(rows[block], dim=-1)
        worst = max(worst, (total.abs().max().item()))
    if not worst <= _NORMALIZATION_TOL:
        raise ValueError(
            f"{name} must be normalized log-probabilities over its last dimension "
            f"(logsumexp = 0 within {_NORMALIZATION_TOL:g}); worst |logsumexp| = {worst:.3g}"
        )
    return logp


def _match(logp: Tensor, name: str, shape: torch.Size, reference_name: str) -> None:
    if logp.shape[-2:] != shape:
        raise ValueError(f"{name} has [X, A] = {tuple(logp.shape[-2:])} but {reference_name} has {tuple(shape)}")


def _prompt_dist(value, n_prompts: int) -> Tensor:
    dist = as_tensor(value, "prompt_dist", dtype=_DTYPE)
    if dist.shape != (n_prompts,):
        raise ValueError(f"prompt_dist must have shape [X] = ({n_prompts},), got {tuple(dist.shape)}")
    if not torch.isfinite(dist).all() or (dist < 0).any():
        raise ValueError("prompt_dist must be finite and non-negative")
    total = dist.sum().item()
    if abs(total - 1.0) > _NORMALIZATION_TOL:
        raise ValueError(f"prompt_dist must sum to 1, got {total:.6g}")
    return dist


def _check_n(n):
    """n > 0 as a float, or a float64 tensor of sample sizes (the bound is then a tensor)."""
    if isinstance(n, Tensor):
        n = as_tensor(n, "n", dtype=_DTYPE)
        if not (torch.isfinite(n) & (n > 0)).all():
            raise ValueError(f"n must be finite and > 0, got {n}")
        return n
    return check_positive(n, "n")


def _check_delta(delta) -> float:
    try:
        delta = float(delta)
    except (TypeError, ValueError) as err:
        raise ValueError(f"delta must be a real number, got {delta!r}") from err
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in the open interval (0, 1), got {delta}")
    return delta


def _check_size(size, name: str) -> float:
    try:
        size = float(size)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a real number, got {size!r}") from err
    if not (math.isfinite(size) and size >= 1.0):
        raise ValueError(f"{name} must be a finite number >= 1, got {size}")
    return size


def _check_constant(value, name: str) -> float:
    """A world constant (R, C_Π, …): >= 0; +inf is allowed and gives an infinite bound."""
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a real number, got {value!r}") from err
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be >= 0 (inf allowed), got {value}")
    return value


def _blocks(total: int, size: int) -> Iterator[slice]:
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def _chunk(chunk_size: int | None, numbers_per_item: int) -> int:
    if chunk_size is None:
        return max(1, _BLOCK_NUMBERS // max(1, numbers_per_item))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return chunk_size


# --------------------------------------------------------------------------- centred rewards


def _mu_expectation(values: Tensor, behavior_probs: Tensor) -> Tensor:
    """E_{a∼μ(x)} values over μ's support: responses with μ(a|x) = 0 never contribute (no 0·inf)."""
    weighted = torch.where(behavior_probs > 0, behavior_probs * values, torch.zeros_like(values))
    return weighted.sum(dim=-1)


def centred_reward(logp, behavior_logp, gamma: float) -> Tensor:
    """The μ-centred reward R̄_π(x,a) = γ ln π(a|x) − E_{a'∼μ(x)} γ ln π(a'|x) (spec §1).

    Args:
      logp: log π, shape [..., X, A].
      behavior_logp: log μ, shape [X, A] (or broadcastable to `logp`).
      gamma: the preference tilt γ > 0.

    Returns:
      R̄_π with the shape of `logp`.  The expectation runs over μ's support only.
      Where π(a|x) = 0 the value is -inf; where π puts zero mass on part of μ's
      support, E_μ ln π = -inf and R̄_π(x, ·) is +inf at every response π supports
      (A2 fails there; `boundedness_constant` returns inf).
    """
    gamma = check_positive(gamma, "gamma")
    logp = _log_policy(logp, "logp")
    behavior_logp = _log_policy(behavior_logp, "behavior_logp")
    _match(logp, "logp", behavior_logp.shape[-2:], "behavior_logp")
    mean = _mu_expectation(logp, behavior_logp.exp())
    centred = logp - mean.unsqueeze(-1)
    # -inf - (-inf): a zero-probability response of a policy with an infinite centre.
    centred = torch.where(logp == -math.inf, torch.full_like(centred, -math.inf), centred)
    return gamma * centred


def boundedness_constant(class_logp, behavior_logp, *, chunk_size: int | None = None) -> float:
    """The smallest R satisfying A2 for the class (spec §3):

        R = max_{π ∈ Π, x, a} |ln π(a|x) − E_{a'∼μ(x)} ln π(a'|x)|,

    so that |R̄_π| ≤ γR.  A2 quantifies over every prompt and every response, so
    a member with a zero-probability response anywhere — inside or outside μ's
    support — has an infinite centred reward and the result is `inf`.  μ itself
    may have zero-probability responses: the centre is E over μ's support.

    Args:
      class_logp: log-probabilities of the class members, [K, X, A].
      behavior_logp: log μ, [X, A].
      chunk_size: members per block (memory ∝ chunk_size × X × A).
    """
    class_logp = _log_policy(class_logp, "class_logp", ndim=3)
    behavior_logp = _log_policy(behavior_logp, "behavior_logp", ndim=2)
    _match(class_logp, "class_logp", behavior_logp.shape, "behavior_logp")
    behavior_probs = behavior_logp.exp()
    size = _chunk(chunk_size, behavior_logp.numel())
    radius = 0.0
    for block in _blocks(class_logp.shape[0], size):
        logp = class_logp[block]
        if (logp == -math.inf).any():
            return math.inf
        centred = logp - _mu_expectation(logp, behavior_probs).unsqueeze(-1)
        radius = max(radius, centred.abs().max().item())
    return radius


# --------------------------------------------------------------------------- coverage


def _ratios_from_log_ratio(
    log_ratio: Tensor,
    behavior_probs: Tensor,
    numerator_weight: Tensor,
    denominator_weight: Tensor,
    relevant: Tensor,
    gamma: float,
) -> Tensor:
    """E_num[(γ(d − E_μ d))²] / E_den[(γ(d − E_μ d))²] per leading index, d = `log_ratio` [..., X, A].

    γ(d − E_μ d) is ΔR̄ = R̄_π − R̄_π' for d = ln π − ln π' (spec §1).  NaN marks 0/0
    (the two policies agree wherever the weights look: skipped by the caller);
    inf marks a zero denominator under a positive numerator, and a d that is
    infinite where a weight or the μ-centre looks at it (ΔR̄ is then undefined
    and no finite coefficient is certified).
    """
    finite = torch.isfinite(log_ratio)
    broken = (~finite & relevant).flatten(-2).any(dim=-1)
    log_ratio = torch.where(finite, log_ratio, torch.zeros_like(log_ratio))
    delta = gamma * (log_ratio - _mu_expectation(log_ratio, behavior_probs).unsqueeze(-1))
    squared = delta.square()
    numerator = (numerator_weight * squared).flatten(-2).sum(dim=-1)
    denominator = (denominator_weight * squared).flatten(-2).sum(dim=-1)
    ratio = numerator / denominator  # 0/0 -> nan, positive/0 -> inf
    return torch.where(broken, torch.full_like(ratio, math.inf), ratio)


def _max_ratio(ratios: Tensor) -> float:
    """Def. 3's smallest C: the largest ratio, NaN (0/0) skipped; 0 when every member is skipped."""
    kept = ratios[~torch.isnan(ratios)]
    return kept.max().item() if kept.numel() else 0.0


def coverage_ratios(
    class_logp,
    target_logp,
    behavior_logp,
    prompt_dist,
    gamma: float,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """Per member, E_{x∼𝒟, a∼π*}[ΔR̄_π²] / E_{x∼𝒟, a∼μ}[ΔR̄_π²] with ΔR̄_π = R̄_π − R̄_π* (Def. 3).

    ΔR̄_π is computed directly as γ(d − E_μ d), d = ln π − ln π*, which is exactly
    0 for a member identical to π* (the two -inf of a shared zero count as equal).

    Returns:
      float64 tensor [K]: the ratio; NaN for a member with 0/0 (equal to π* on the
      supports of μ and π* at prompts 𝒟 charges — Def. 3's inequality holds for
      every C, so the member is skipped); inf for a member with a zero
      denominator and a positive numerator, or with ΔR̄ infinite on those supports.
    """
    gamma = check_positive(gamma, "gamma")
    class_logp = _log_policy(class_logp, "class_logp", ndim=3)
    target_logp = _log_policy(target_logp, "target_logp", ndim=2)
    behavior_logp = _log_policy(behavior_logp, "behavior_logp", ndim=2)
    shape = target_logp.shape
    _match(class_logp, "class_logp", shape, "target_logp")
    _match(behavior_logp, "behavior_logp", shape, "target_logp")
    dist = _prompt_dist(prompt_dist, shape[0]).unsqueeze(-1)
    behavior_probs = behavior_logp.exp()
    target_probs = target_logp.exp()
    numerator_weight = dist * target_probs
    denominator_weight = dist * behavior_probs
    relevant = (dist > 0) & ((behavior_probs > 0) | (target_probs > 0))
    size = _chunk(chunk_size, target_logp.numel())
    out = [
        _ratios_from_log_ratio(
            safe_log_ratio(class_logp[block], target_logp),
            behavior_probs,
            numerator_weight,
            denominator_weight,
            relevant,
            gamma,
        )
        for block in _blocks(class_logp.shape[0], size)
    ]
    return torch.cat(out)


def coverage_coefficient(
    class_logp,
    target_logp,
    behavior_logp,
    prompt_dist,
    gamma: float,
    *,
    chunk_size: int | None = None,
) -> float:
    """The coverage coefficient C_{Π'} of Def. 3 (spec §3):

        C_{Π'} = max_{π ∈ Π'} E_{x∼𝒟, a∼π*(x)}[ΔR̄_π²] / E_{x∼𝒟, a∼μ(x)}[ΔR̄_π²],

    the smallest C with E_{π*}[ΔR̄_π²] ≤ C E_μ[ΔR̄_π²] for every member.  Members
    with 0/0 (equal to π* where the expectations look, π* itself under A1)
    satisfy the inequality for every C and are skipped; a class of such members
    only has C = 0.  A zero denominator under a positive numerator gives inf.
    γ cancels in the ratio; it is kept so that the numbers are Def. 3's
    E[ΔR̄²] in reward units.  Pass the reward-induced class 𝒫_γ(ℛ) as
    `class_logp` for C_ℛ (A5).  See `coverage_ratios` for the per-member values.
    """
    ratios = coverage_ratios(class_logp, target_logp, behavior_logp, prompt_dist, gamma, chunk_size=chunk_size)
    return _max_ratio(ratios)


def coverage_coefficient_pairs(
    class_logp,
    target_logp,
    reference_logp,
    prompt_dist,
    gamma: float,
    *,
    behavior_logp=None,
    chunk_size: int | None = None,
) -> float:
    """The pairwise coverage coefficient C_0 of Thm 14 (spec §3):

        C_0 = max_{π, π' ∈ Π} E_{x∼𝒟, a∼π*}[(ΔR̄_π − ΔR̄_π')²] / E_{x∼𝒟, a∼π0}[(ΔR̄_π − ΔR̄_π')²].

    ΔR̄_π − ΔR̄_π' = R̄_π − R̄_π' (π* cancels), computed as γ(d − E_μ d) with
    d = ln π − ln π'.  The centring is μ's, as in every R̄ (spec §1);
    `behavior_logp=None` takes μ = π0, the setting of Thm 14.  The ratio is
    symmetric in (π, π'), so each unordered pair of distinct members is visited
    once; 0/0 pairs are skipped and a zero denominator under a positive
    numerator gives inf, as in `coverage_coefficient`.  O(K²) pairs, in blocks
    of at most `chunk_size` pairs (memory ∝ chunk_size × X × A).
    """
    gamma = check_positive(gamma, "gamma")
    class_logp = _log_policy(class_logp, "class_logp", ndim=3)
    target_logp = _log_policy(target_logp, "target_logp", ndim=2)
    reference_logp = _log_policy(reference_logp, "reference_logp", ndim=2)
    behavior_logp = reference_logp if behavior_logp is None else _log_policy(behavior_logp, "behavior_logp", ndim=2)
    shape = target_logp.shape
    _match(class_logp, "class_logp", shape, "target_logp")
    _match(reference_logp, "reference_logp", shape, "target_logp")
    _match(behavior_logp, "behavior_logp", shape, "target_logp")
    dist = _prompt_dist(prompt_dist, shape[0]).unsqueeze(-1)
    behavior_probs = behavior_logp.exp()
    target_probs = target_logp.exp()
    reference_probs = reference_logp.exp()
    numerator_weight = dist * target_probs
    denominator_weight = dist * reference_probs
    relevant = (dist > 0) & ((behavior_probs > 0) | (target_probs > 0) | (reference_probs > 0))
    side = math.isqrt(_chunk(chunk_size, target_logp.numel()))
    side = max(1, side)
    members = class_logp.shape[0]
    index = torch.arange(members)
    best = 0.0
    for rows in _blocks(members, side):
        for cols in _blocks(members, side):
            if cols.stop <= rows.start + 1:
                continue  # every pair here has j <= i
            ratios = _ratios_from_log_ratio(
                safe_log_ratio(class_logp[rows].unsqueeze(1), class_logp[cols].unsqueeze(0)),
                behavior_probs,
                numerator_weight,
                denominator_weight,
                relevant,
                gamma,
            )
            upper = index[rows].unsqueeze(1) < index[cols].unsqueeze(0)
            best = max(best, _max_ratio(ratios[upper]))
    return best


# --------------------------------------------------------------------------- ψ and the lemmas


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


def psi(z):
    """ψ(z) = (z − 1 − ln z)/(ln z)² (spec §3), continued by its limit ψ(1) = ½.

    ψ is increasing on (0, ∞) with ψ(0+) = 0 and ψ(∞) = ∞; it is the best
    constant in z − 1 − ln z ≤ ψ(z_max)(ln z)² for z ≤ z_max (Lemma 9).
    Accepts a float (returns a float) or a tensor (returns a float64 tensor).
    """
    z_t = as_tensor(z, "z", dtype=_DTYPE)
    if (z_t <= 0).any():
        raise ValueError(f"z must be > 0, got {z}")
    return _like_input(_psi_of_log(torch.log(z_t)), z)


def lemma9_factor(r_max):
    """Lemma 9's constant ½ ∨ ψ(r_max) (spec §3–4); equal to ψ(r_max) when r_max ≥ 1."""
    r_t = as_tensor(r_max, "r_max", dtype=_DTYPE)
    if (r_t <= 0).any():
        raise ValueError(f"r_max must be > 0, got {r_max}")
    return _like_input(torch.clamp(_psi_of_log(torch.log(r_t)), min=0.5), r_max)


def _lemma9_factor_of_log(log_r_max: float) -> float:
    return max(0.5, _psi_of_log(torch.tensor(log_r_max, dtype=_DTYPE)).item())


def lemma8_lower(a, b):
    """Lemma 8's lower bound on |σ(a) − σ(b)|: ¼ e^{−(|a| ∨ |b|)} |a − b| (spec §4).

    The printed proofs of Thms 4, 6, 7, 14 use twice this value, which fails near
    0 (σ'(0) = ¼): see the module docstring.
    """
    a_t = as_tensor(a, "a", dtype=_DTYPE)
    b_t = as_tensor(b, "b", dtype=_DTYPE)
    scale = torch.exp(-torch.maximum(a_t.abs(), b_t.abs()))
    return _like_input(_LEMMA8_SLOPE * scale * (a_t - b_t).abs(), a if isinstance(a, Tensor) else b)


def lemma9_upper(r, r_max):
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


def lemma10_lower(r, r_min):
    """Lemma 10's lower bound on r − 1 − ln r: (ln r)² / (e · (ln(1/r_min) ∨ 1)), for r ≥ r_min > 0.

    Tight at r = r_min = 1/e.
    """
    r_t = as_tensor(r, "r", dtype=_DTYPE)
    r_min = check_positive(r_min, "r_min")
    if (r_t < r_min).any():
        raise ValueError(f"r must be >= r_min = {r_min}, got {r}")
    scale = math.e * max(math.log(1.0 / r_min), 1.0)
    return _like_input(torch.log(r_t).square() / scale, r)


# --------------------------------------------------------------------------- right-hand sides


def _exp(x: float) -> float:
    return math.exp(x) if x < 709.0 else math.inf


def _reward_scale_constant(corrected: bool) -> float:
    """4/(2c²): E_μ[ΔR̄²] ≤ (4/(2c²)) e^{4γR} × (the ln(·)/n of Prop. 12); 32 corrected, 8 printed."""
    slope = _LEMMA8_SLOPE if corrected else _PRINTED_SLOPE
    return _PREFERENCE_CONSTANT / (2.0 * slope**2)


def _times(coverage: float, factor: float) -> float:
    # A trivial class (C = 0) has a zero bound whatever the other factors.
    return 0.0 if coverage == 0.0 else coverage * factor


def _kl_from_reward_error(R: float, gamma: float) -> float:
    """Thms 4, 6: E_x KL(π*‖π̂) ≤ (½ ∨ ψ(e^{4R})) · 2(2R²e^{4R} + 3)/γ² · E_{π*}[ΔR̄²] (Lemma 9, A2)."""
    if R == math.inf:
        return math.inf
    return _lemma9_factor_of_log(4.0 * R) * 2.0 * (2.0 * R**2 * _exp(4.0 * R) + 3.0) / gamma**2


def prop12_bound(n, class_size, delta: float):
    """Prop. 12 (PMLE, preference scale): E_{x; a,b∼μ}[(P_π̂ − P_π*)²] ≤ 4 ln(|Π|/δ)/n.

    No sigmoid slope enters, so there is no corrected variant.
    """
    n = _check_n(n)
    size = _check_size(class_size, "class_size")
    delta = _check_delta(delta)
    return _PREFERENCE_CONSTANT * math.log(size / delta) / n


def thm4_bound(n, R: float, C_Pi: float, gamma: float, class_size, delta: float, *, corrected: bool = True):
    """Thm 4 (PMLE): E_x KL(π*‖π̂) ≤ (½ ∨ ψ(e^{4R})) · 16(2R²e^{4R} + 3) · C_Π e^{4γR}/γ² · ln(|Π|/δ)/n.

    The printed 16 = 2 · 8, where 8 = 4/(2c²) with the proof's slope c = ½
    (module docstring).  `corrected=True` (default) uses Lemma 8's c = ¼: the
    16 becomes 64 and the bound is 4 times the printed one.
    """
    n = _check_n(n)
    R = _check_constant(R, "R")
    C_Pi = _check_constant(C_Pi, "C_Pi")
    gamma = check_positive(gamma, "gamma")
    size = _check_size(class_size, "class_size")
    delta = _check_delta(delta)
    reward_error = _times(C_Pi, _reward_scale_constant(corrected) * _exp(4.0 * gamma * R))
    return _times(reward_error, _kl_from_reward_error(R, gamma)) * math.log(size / delta) / n


def thm6_bound(
    n,
    R: float,
    C_Pi: float,
    gamma: float,
    class_size,
    reward_class_size,
    delta: float,
    *,
    corrected: bool = True,
):
    """Thm 6 (distillation, pairs from μ):

        E_x KL(π*‖π̂) ≤ (½ ∨ ψ(e^{4R})) · 16(2R²e^{4R} + 3) · C_Π e^{4γR}/γ² · [ln(2|Π|/δ) + 2 ln(2|ℛ|/δ)]/n.

    As in Thm 4 the printed 16 = 2 · 4/(2c²) with c = ½; `corrected=True`
    (default) uses c = ¼, turning 16 into 64 (4 times the printed bound).
    """
    n = _check_n(n)
    R = _check_constant(R, "R")
    C_Pi = _check_constant(C_Pi, "C_Pi")
    gamma = check_positive(gamma, "gamma")
    size = _check_size(class_size, "class_size")
    reward_size = _check_size(reward_class_size, "reward_class_size")
    delta = _check_delta(delta)
    logs = math.log(2.0 * size / delta) + 2.0 * math.log(2.0 * reward_size / delta)
    reward_error = _times(C_Pi, _reward_scale_constant(corrected) * _exp(4.0 * gamma * R))
    return _times(reward_error, _kl_from_reward_error(R, gamma)) * logs / n


def thm14_intermediate_bound(
    n,
    R: float,
    C_0: float,
    C_R: float,
    gamma: float,
    class_size,
    reward_class_size,
    delta: float,
    *,
    corrected: bool = True,
):
    """Thm 14's intermediate bound (distillation on π0's responses), a bound on E_{x, a∼π*}[(ΔR̄_π̂)²]:

        E_{π*}[(ΔR̄_π̂)²] ≤ 8 e^{4γR} [C_0 ln(2|Π|/δ) + 2 C_ℛ ln(2|ℛ|/δ)]/n.

    The printed 8 is 4/(2c²) with c = ½; `corrected=True` (default) uses c = ¼,
    turning 8 into 32 (4 times the printed bound).  Thm 14's KL statement is
    given only up to constants (≲) and is not computed.
    """
    n = _check_n(n)
    R = _check_constant(R, "R")
    C_0 = _check_constant(C_0, "C_0")
    C_R = _check_constant(C_R, "C_R")
    gamma = check_positive(gamma, "gamma")
    size = _check_size(class_size, "class_size")
    reward_size = _check_size(reward_class_size, "reward_class_size")
    delta = _check_delta(delta)
    scale = _reward_scale_constant(corrected) * _exp(4.0 * gamma * R)
    weighted = _times(C_0, math.log(2.0 * size / delta)) + _times(C_R, 2.0 * math.log(2.0 * reward_size / delta))
    return _times(weighted, scale) / n


def thm7_bound(
    n,
    R: float,
    C_R: float,
    gamma: float,
    class_size,
    reward_class_size,
    delta: float,
    *,
    corrected: bool = True,
):
    """Thm 7 (RKL):

        E_x KL(π*‖π̂) ≤ (1 ∨ 2ψ(e^{4R})) · (16R² ln(2|Π|²/δ)/n + 16 C_ℛ(R²e^{4R} + 1) e^{4γR}/γ² · ln(2|ℛ|/δ)/n).

    The first term is the on-policy step over Π: no preference data and no
    sigmoid enter it, and it is the same in both variants.  The second term is
    the error of the reward model fitted on μ's pairs, and it goes through the
    same ½-slope step as Thms 4, 6, 14.  This is inferred from the structure, as
    the step is not displayed: with (1 ∨ 2ψ) = 2(½ ∨ ψ) (Lemma 9 after
    (u + v)² ≤ 2u² + 2v²) the printed second term reads

        2(½ ∨ ψ) · 2 · [(R²e^{4R} + 1)/γ²] · [8 e^{4γR} C_ℛ ln(2|ℛ|/δ)/n],

    whose last bracket is Thm 14's bound on E_{π*}[ΔR̄²] with 8 = 4/(2c²), c = ½.
    Had the proof used c = ¼ (bracket 32), the factor converting E_{π*}[ΔR̄²]
    into the squared log-ratio of π_R̂ to π* would be (R²e^{4R} + 1)/(4γ²), which
    tends to 1/(4γ²) as R → 0; but with μ = π* that squared log-ratio is
    ≈ Var_{π*}(ΔR̄)/γ² = E_{π*}[ΔR̄²]/γ², so the factor must be at least about
    1/γ².  The printed 16 therefore comes from c = ½.  `corrected=True`
    (default) multiplies the second term by 4 (its 16 becomes 64).
    """
    n = _check_n(n)
    R = _check_constant(R, "R")
    C_R = _check_constant(C_R, "C_R")
    gamma = check_positive(gamma, "gamma")
    size = _check_size(class_size, "class_size")
    reward_size = _check_size(reward_class_size, "reward_class_size")
    delta = _check_delta(delta)
    prefactor = 2.0 * _lemma9_factor_of_log(4.0 * R) if R < math.inf else math.inf
    on_policy = 16.0 * R**2 * math.log(2.0 * size**2 / delta)
    if R == math.inf:
        reward_kl = math.inf
    else:
        reward_kl = 2.0 * (R**2 * _exp(4.0 * R) + 1.0) / gamma**2
    reward_error = _times(C_R, _reward_scale_constant(corrected) * _exp(4.0 * gamma * R))
    reward_term = _times(reward_error, reward_kl) * math.log(2.0 * reward_size / delta)
    return prefactor * (on_policy + reward_term) / n


def prop15_factor(R: float) -> float:
    """Prop. 15: E_x KL(π̂‖π*) ≤ ((4R ∨ 1) e^{8R+1}/R²) · E_x KL(π*‖π̂); returns the factor (R > 0)."""
    R = check_positive(R, "R")
    return max(4.0 * R, 1.0) * _exp(8.0 * R + 1.0) / R**2


# --------------------------------------------------------------------------- a world's constants


@dataclasses.dataclass(frozen=True)
class WorldConstants:
    """The constants of a world and finite classes that the theorems of spec §4 use.

    Attributes:
      R: A2's boundedness constant over Π ∪ {π*} ∪ 𝒫_γ(ℛ) (equal to A2's R over
        Π when A1 and A5 hold).
      C_Pi: coverage of the policy class Π (Def. 3).
      C_R: coverage of the reward-induced class 𝒫_γ(ℛ) (A5), or None.
      C_0: Thm 14's pairwise coverage over Π (π* vs π0), or None.
      class_size: |Π|.
      reward_class_size: |ℛ|, or None.
      gamma: the preference tilt γ.
      realizable: whether π* is a member of Π (A1), up to 1e-9 in log-probability.
    """

    R: float
    C_Pi: float
    C_R: float | None
    C_0: float | None
    class_size: int
    reward_class_size: int | None
    gamma: float
    realizable: bool = True

    def bound(self, theorem: str, n, delta: float, *, corrected: bool = True):
        """The right-hand side of `theorem` ("prop12", "thm4", "thm6", "thm14", "thm7") at n, δ.

        "thm14" is Thm 14's intermediate bound on E_{π*}[(ΔR̄_π̂)²]; "prop12" is in
        preference scale; the others bound E_x KL(π*‖π̂).  `corrected` is ignored
        by "prop12", which has no sigmoid step.
        """
        if theorem not in _THEOREMS:
            raise ValueError(f"theorem must be one of {_THEOREMS}, got {theorem!r}")
        if theorem == "prop12":
            return prop12_bound(n, self.class_size, delta)
        if theorem == "thm4":
            return thm4_bound(n, self.R, self.C_Pi, self.gamma, self.class_size, delta, corrected=corrected)
        if self.reward_class_size is None or self.C_R is None:
            raise ValueError(f"theorem {theorem!r} needs a reward class: pass reward_class_logp to world_constants")
        if theorem == "thm6":
            return thm6_bound(
                n, self.R, self.C_Pi, self.gamma, self.class_size, self.reward_class_size, delta, corrected=corrected
            )
        if theorem == "thm7":
            return thm7_bound(
                n, self.R, self.C_R, self.gamma, self.class_size, self.reward_class_size, delta, corrected=corrected
            )
        if self.C_0 is None:
            raise ValueError("theorem 'thm14' needs C_0: call world_constants with compute_c0=True")
        return thm14_intermediate_bound(
            n,
            self.R,
            self.C_0,
            self.C_R,
            self.gamma,
            self.class_size,
            self.reward_class_size,
            delta,
            corrected=corrected,
        )


def _contains(class_logp: Tensor, target_logp: Tensor, chunk_size: int) -> bool:
    for block in _blocks(class_logp.shape[0], chunk_size):
        close = torch.isclose(class_logp[block], target_logp, rtol=0.0, atol=1e-9)
        if close.flatten(1).all(dim=1).any():
            return True
    return False


def world_constants(
    target_logp,
    behavior_logp,
    reference_logp,
    prompt_dist,
    gamma: float,
    policy_class_logp,
    reward_class_logp=None,
    *,
    compute_c0: bool = True,
    chunk_size: int | None = None,
) -> WorldConstants:
    """R (A2), C_Π (Def. 3), C_ℛ (A5) and C_0 (Thm 14) of a world and its classes, together.

    Args:
      target_logp, behavior_logp, reference_logp: log π*, log μ, log π0, each [X, A].
      prompt_dist: 𝒟, [X].
      gamma: the preference tilt γ > 0.
      policy_class_logp: Π as log-probabilities, [K, X, A].
      reward_class_logp: 𝒫_γ(ℛ) as normalized log-probabilities of the reward-induced
        policies π_R ∝ e^{R/γ}, [M, X, A]; every constant here is invariant to
        the per-prompt normalizer.  None leaves C_ℛ and |ℛ| unset.
      compute_c0: compute C_0 (O(K²) pairs; centred with μ, weighted by π* vs π0).
      chunk_size: members (pairs for C_0) per block.
    """
    target_logp = _log_policy(target_logp, "target_logp", ndim=2)
    policy_class_logp = _log_policy(policy_class_logp, "policy_class_logp", ndim=3)
    _match(policy_class_logp, "policy_class_logp", target_logp.shape, "target_logp")
    members = [policy_class_logp, target_logp.unsqueeze(0)]
    if reward_class_logp is not None:
        reward_class_logp = _log_policy(reward_class_logp, "reward_class_logp", ndim=3)
        _match(reward_class_logp, "reward_class_logp", target_logp.shape, "target_logp")
        members.append(reward_class_logp)
    gamma = check_positive(gamma, "gamma")
    R = max(boundedness_constant(m, behavior_logp, chunk_size=chunk_size) for m in members)
    C_Pi = coverage_coefficient(
        policy_class_logp, target_logp, behavior_logp, prompt_dist, gamma, chunk_size=chunk_size
    )
    C_R = None
    if reward_class_logp is not None:
        C_R = coverage_coefficient(
            reward_class_logp, target_logp, behavior_logp, prompt_dist, gamma, chunk_size=chunk_size
        )
    reference_logp = _log_policy(reference_logp, "reference_logp", ndim=2)
    C_0 = None
    if compute_c0:
        C_0 = coverage_coefficient_pairs(
            policy_class_logp,
            target_logp,
            reference_logp,
            prompt_dist,
            gamma,
            behavior_logp=behavior_logp,
            chunk_size=chunk_size,
        )
    return WorldConstants(
        R=R,
        C_Pi=C_Pi,
        C_R=C_R,
        C_0=C_0,
        class_size=policy_class_logp.shape[0],
        reward_class_size=None if reward_class_logp is None else reward_class_logp.shape[0],
        gamma=gamma,
        realizable=_contains(policy_class_logp, target_logp, _chunk(chunk_size, target_logp.numel())),
    )
