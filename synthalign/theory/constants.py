"""The constants of the paper's theorems for a world and a finite class (spec §3).

The boundedness constant R of A2, the coverage coefficients C_Π, C_ℛ (Def. 3) and C_0
(Thm 14), and `world_constants`, which gathers them and evaluates the bounds of
`synthalign.theory.bounds` with them.

Conventions: a policy is a tensor of log-probabilities [..., X, A], normalized
over the last dimension, -inf for a zero-probability response; a finite class
is a tensor [K, X, A]; every quantity is computed in float64.  Functions over a
class work on blocks of `chunk_size` members (pairs of members for C_0) so that
memory stays bounded when K × X × A is large; `None` picks a block of about
2^22 numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import torch
from torch import Tensor

from synthalign._checks import as_tensor, check_int, check_positive, safe_log_ratio
from synthalign.theory.bounds import (
    _THEOREMS,
    prop12_bound,
    thm4_bound,
    thm6_bound,
    thm7_bound,
    thm14_intermediate_bound,
)

__all__ = [
    "centred_reward",
    "boundedness_constant",
    "coverage_ratios",
    "coverage_coefficient",
    "coverage_coefficient_pairs",
    "WorldConstants",
    "world_constants",
]

_DTYPE = torch.float64


_NORMALIZATION_TOL = 1e-6


_BLOCK_NUMBERS = 2**22


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


def _blocks(total: int, size: int) -> Iterator[slice]:
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def _chunk(chunk_size: int | None, numbers_per_item: int) -> int:
    if chunk_size is None:
        return max(1, _BLOCK_NUMBERS // max(1, numbers_per_item))
    return check_int(chunk_size, "chunk_size")


def _mu_expectation(values: Tensor, behavior_probs: Tensor) -> Tensor:
    """E_{a∼μ(x)} values over μ's support: responses with μ(a|x) = 0 never contribute (no 0·inf)."""
    weighted = torch.where(behavior_probs > 0, behavior_probs * values, torch.zeros_like(values))
    return weighted.sum(dim=-1)


def centred_reward(logp: Tensor, behavior_logp: Tensor, gamma: float) -> Tensor:
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


def boundedness_constant(class_logp: Tensor, behavior_logp: Tensor, *, chunk_size: int | None = None) -> float:
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
    class_logp: Tensor,
    target_logp: Tensor,
    behavior_logp: Tensor,
    prompt_dist: Tensor,
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
    class_logp: Tensor,
    target_logp: Tensor,
    behavior_logp: Tensor,
    prompt_dist: Tensor,
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
    class_logp: Tensor,
    target_logp: Tensor,
    reference_logp: Tensor,
    prompt_dist: Tensor,
    gamma: float,
    *,
    behavior_logp: Tensor | None = None,
    centring: str = "mu",
    chunk_size: int | None = None,
) -> float:
    """The pairwise coverage coefficient C_0 of Thm 14 (spec §3):

        C_0 = max_{π, π' ∈ Π} E_{x∼𝒟, a∼π*}[(ΔR̄_π − ΔR̄_π')²] / E_{x∼𝒟, a∼π0}[(ΔR̄_π − ΔR̄_π')²].

    ΔR̄_π − ΔR̄_π' = R̄_π − R̄_π' (π* cancels), computed as γ(d − E_c d) with
    d = ln π − ln π' and the centre c:

    * `centring="mu"` (default): c = μ, as in every R̄ of the spec (§1, §3);
      `behavior_logp=None` takes μ = π0, the setting of Thm 14;
    * `centring="reference"`: c = π0.  Thm 14's proof bounds the distillation
      error on π0's responses, where the quantity controlled by the data is
      E_{π0}[(d − E_{π0} d)²], a variance under π0; the step that moves it to π*
      needs the ratio with that centring.  When μ = π0 the two coincide; when
      μ ≠ π0 they differ (the π0-centred denominator is the smallest over all
      centres, Var_{π0} d ≤ E_{π0}[(d − c)²], so neither ratio bounds the other
      in general), and `world_constants` reports both.  The ratio is
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
    if centring not in ("mu", "reference"):
        raise ValueError(f"centring must be 'mu' or 'reference', got {centring!r}")
    if centring == "reference":
        behavior_logp = reference_logp
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


@dataclasses.dataclass(frozen=True)
class WorldConstants:
    """The constants of a world and finite classes that the theorems of spec §4 use.

    Attributes:
      R: A2's boundedness constant over Π ∪ {π*} ∪ 𝒫_γ(ℛ) (equal to A2's R over
        Π when A1 and A5 hold).
      C_Pi: coverage of the policy class Π (Def. 3).
      C_R: coverage of the reward-induced class 𝒫_γ(ℛ) (A5), or None.
      C_0: Thm 14's pairwise coverage over Π (π* vs π0), μ-centred as the spec
        defines it, or None.
      C_0_reference: the same with the π0 centring of Thm 14's proof
        (`coverage_coefficient_pairs(centring="reference")`), or None; equal to
        C_0 when μ = π0.
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
    C_0_reference: float | None = None

    def bound(self, theorem: str, n: float, delta: float, *, corrected: bool = True, c0_centring: str = "mu") -> float:
        """The right-hand side of `theorem` ("prop12", "thm4", "thm6", "thm14", "thm7") at n, δ.

        "thm14" is Thm 14's intermediate bound on E_{π*}[(ΔR̄_π̂)²], with C_0 centred
        as `c0_centring` says ("mu": `C_0`, "reference": `C_0_reference`); "prop12"
        is in preference scale; the others bound E_x KL(π*‖π̂).  `corrected` is
        ignored by "prop12", which has no sigmoid step.
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
        if c0_centring not in ("mu", "reference"):
            raise ValueError(f"c0_centring must be 'mu' or 'reference', got {c0_centring!r}")
        c0 = self.C_0 if c0_centring == "mu" else self.C_0_reference
        if c0 is None:
            raise ValueError("theorem 'thm14' needs C_0: call world_constants with compute_c0=True")
        return thm14_intermediate_bound(
            n,
            self.R,
            c0,
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
    target_logp: Tensor,
    behavior_logp: Tensor,
    reference_logp: Tensor,
    prompt_dist: Tensor,
    gamma: float,
    policy_class_logp: Tensor,
    reward_class_logp: Tensor | None = None,
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
      compute_c0: compute C_0 (O(K²) pairs, weighted by π* vs π0) with both centrings:
        μ's (`C_0`) and π0's (`C_0_reference`, computed again only when μ ≠ π0).
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
    C_0 = C_0_reference = None
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
        same = torch.equal(_log_policy(behavior_logp, "behavior_logp", ndim=2), reference_logp)
        C_0_reference = (
            C_0
            if same
            else coverage_coefficient_pairs(
                policy_class_logp,
                target_logp,
                reference_logp,
                prompt_dist,
                gamma,
                centring="reference",
                chunk_size=chunk_size,
            )
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
        C_0_reference=C_0_reference,
    )
