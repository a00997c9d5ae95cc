"""Finite policy classes that contain pi* (A1) (spec §3–4).

The theorems of spec §4 are about an estimator pi_hat = argmin over a finite
class Π of an empirical objective, with π* ∈ Π (A1), and, for distillation and
RKL, a reward R̂ = argmin over a finite reward class ℛ of the Bradley–Terry loss
(eq. 9) whose induced policies 𝒫_γ(ℛ) lie in Π (A5).  This module builds such
classes:

* `perturbation_class`: π* with its logits perturbed at a chosen radius (seeded);
* `grid_class`: π* tilted along a few directions on a grid of step sizes (a
  direction ln q − ln π* moves π* toward a policy q, e.g. toward μ);
* `list_class`: a user-given list of policies, with π* added if missing;
* `reward_class`: the reward-induced class 𝒫_γ(ℛ) = {π_R ∝ e^{R/γ} : R ∈ ℛ};
* `union_class`: Π ∪ Π' (e.g. 𝒫_γ(ℛ) ∪ extra members, so that A5 holds).

The theorems' estimators over such classes are `synthalign.estimators.finite_class`'s.

A class is a `PolicyClass`: a `Policy` with batch [K] (so every metric and
`argmin_over_class` take it directly) that also records where π* is
(`target_index`).  K × X × A float64 numbers are held in memory: 100,000 members
of a 10 × 10 world take 80 MB.  The argmin streams over the members
`chunk_size` at a time (`argmin_over_class`'s argument), so its working memory
is O(chunk_size × X × A²), not O(K × X × A²).

What a class is for — which constants it has (R, C_Π, C_ℛ, C_0) — is
`synthalign.bounds`'s business; which n and how many replicates, `synthalign.sweeps`'s.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthalign._checks import (
    InputTypeError,
    as_tensor,
    check_bool,
    check_dims,
    check_logp,
    check_positive,
    check_seed,
    describe,
)
from synthalign._types import DeviceLike, DTypeLike
from synthalign.worlds.checks import check_class_logp
from synthalign.worlds.policy import Policy
from synthalign.worlds.tabular import World

if TYPE_CHECKING:
    from synthalign._types import PolicyLike

__all__ = [
    "PolicyClass",
    "grid_class",
    "list_class",
    "perturbation_class",
    "reward_class",
    "union_class",
]

# Two members closer than this in every log-probability are the same policy.
_SAME_POLICY_ATOL = 1e-9


@dataclasses.dataclass(frozen=True, eq=False)
class PolicyClass(Policy):
    """A finite policy class Π: a `Policy` with batch [K] that knows where π* is.

    Attributes:
      logp: log-probabilities of the K members, [K, X, A].
      prompt_dist: D, [X] (optional, as for any `Policy`).
      target_index: the index k with logp[k] = ln π* (A1).
      name: a short description (how the class was built), for records and plots.
    """

    target_index: int = 0
    name: str = ""

    def __post_init__(self):
        super().__post_init__()
        if self.logp.dim() != 3:
            raise ValueError(f"a PolicyClass needs logp of shape [K, X, A], got {tuple(self.logp.shape)}")
        index = self.target_index
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.logp.shape[0]:
            raise ValueError(f"target_index must be an int in [0, {self.logp.shape[0]}), got {index!r}")
        if not isinstance(self.name, str):
            raise InputTypeError(f"name must be a str, got {describe(self.name)}")

    @property
    def size(self) -> int:
        """|Π|, the number of members K."""
        return self.logp.shape[0]

    def __len__(self) -> int:
        return self.size

    @property
    def target(self) -> Policy:
        """π*, the member at `target_index`."""
        return Policy(self.logp[self.target_index], self.prompt_dist)

    @property
    def policy(self) -> Policy:
        """The members as a plain `Policy` with batch [K]."""
        return Policy(self.logp, self.prompt_dist)

    def rewards(self, gamma: float) -> Tensor:
        """The rewards the members induce, R_π = γ ln π (spec §1), [K, X, A].

        Each member π is 𝒫_γ of its own reward, so a policy class read this way is
        a reward class ℛ with 𝒫_γ(ℛ) = Π.
        """
        gamma = check_positive(gamma, "gamma")
        return gamma * self.logp

    def to(self, device: DeviceLike = None, dtype: DTypeLike = None) -> PolicyClass:
        prompt_dist = None if self.prompt_dist is None else self.prompt_dist.to(device=device, dtype=dtype)
        return PolicyClass(self.logp.to(device=device, dtype=dtype), prompt_dist, self.target_index, self.name)

    def __repr__(self) -> str:
        return (
            f"PolicyClass(K={self.size}, X={self.n_prompts}, A={self.n_responses}, "
            f"target_index={self.target_index}, name={self.name!r})"
        )


# ------------------------------------------------------------------ constructors


def _target_logp(target) -> tuple[Tensor, Tensor | None]:
    """(ln π* [X, A], D or None) from a World, a single Policy, or a tensor of log-probabilities."""
    if isinstance(target, World):
        return target.target.logp, target.prompt_dist
    if isinstance(target, Policy):
        if target.logp.dim() != 2:
            raise ValueError(f"target must be a single policy [X, A], got batch shape {tuple(target.batch_shape)}")
        return target.logp, target.prompt_dist
    if isinstance(target, Tensor):
        logp = check_logp(target, "target").to(torch.float64)
        check_dims(logp, "target", ("X", "A"))
        return logp, None
    raise InputTypeError(f"target must be a World, a Policy or a tensor of log-probabilities, got {describe(target)}")


def _check_size(size, name: str = "size", minimum: int = 2) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {size!r}")
    return size


def _centred_unit(directions: Tensor, support: Tensor) -> Tensor:
    """Directions [..., X, A] centred per prompt over π*'s support and scaled to norm 1 per prompt.

    Adding a constant to a prompt's logits leaves the policy unchanged, so only
    the centred part of a perturbation moves the policy; its Euclidean norm per
    prompt is what "radius" means below.  Entries outside the support are 0.
    """
    full = bool(support.all())
    if not full:
        directions = torch.where(support, directions, torch.zeros_like(directions))
    count = support.sum(dim=-1, keepdim=True).to(directions.dtype)
    centred = directions - directions.sum(dim=-1, keepdim=True) / count
    if not full:
        centred = torch.where(support, centred, torch.zeros_like(centred))
    norm = centred.square().sum(dim=-1, keepdim=True).sqrt()
    # A prompt with a single supported response cannot be perturbed (its norm is 0).
    return centred / torch.where(norm > 0, norm, torch.ones_like(norm))


def _softmax_members(target_logp: Tensor, offsets: Tensor) -> Tensor:
    """log-softmax(ln π* + offsets), keeping π*'s zero-probability responses at zero."""
    support = torch.isfinite(target_logp)
    if not bool(support.all()):
        offsets = torch.where(support, offsets, torch.zeros_like(offsets))
    return torch.log_softmax(target_logp + offsets, dim=-1)


def perturbation_class(
    target: PolicyLike,
    size: int,
    radius: float | tuple[float, float],
    *,
    seed: int,
    target_index: int = 0,
    weights: Tensor | None = None,
) -> PolicyClass:
    """π* and `size` − 1 random perturbations of its logits (A1 holds by construction).

    Member k ≠ target_index has logits ln π*(·|x) + r_k u_k(x) where u_k(x) is a
    standard Gaussian vector centred over π*'s support and scaled to Euclidean
    norm 1, independently for every prompt; so every prompt's centred logits
    move by exactly r_k.  `radius` is r_k for every member, or a pair (low, high)
    from which each r_k is drawn uniformly (a spread of distances to π*).
    Responses with π* = 0 stay at zero.

    Args:
      target: π* as a `World` (its D is kept), a single `Policy`, or log-probabilities [X, A].
      size: K >= 2, the number of members including π*.
      radius: r > 0, or (low, high) with 0 <= low <= high, high > 0.
      seed: seeds the perturbations (same seed, same class).
      target_index: where π* is placed.
      weights: optional non-negative [X, A] multiplying the Gaussian vectors before they
        are centred and scaled, to aim the perturbations at some responses: e.g.
        π*(a|x)^k puts them where π* has its mass, which is where a behaviour policy μ
        that avoids π*'s favourites cannot see them (a large coverage constant C_Π).
    """
    target_logp, prompt_dist = _target_logp(target)
    size = _check_size(size)
    seed = check_seed(seed)
    if weights is not None:
        weights = as_tensor(weights, "weights", dtype=torch.float64)
        if weights.shape != target_logp.shape:
            raise ValueError(f"weights must have shape {tuple(target_logp.shape)}, got {tuple(weights.shape)}")
        if not torch.isfinite(weights).all() or (weights < 0).any():
            raise ValueError("weights must be finite and non-negative")
    low, high = _check_radius(radius)
    if isinstance(target_index, bool) or not isinstance(target_index, int) or not 0 <= target_index < size:
        raise ValueError(f"target_index must be an int in [0, {size}), got {target_index!r}")
    generator = torch.Generator().manual_seed(int(seed))
    shape = (size - 1, *target_logp.shape)
    # Drawn on the CPU (the same numbers on every device), then moved to π*'s device.
    device = target_logp.device
    noise = torch.randn(shape, generator=generator, dtype=torch.float64).to(device)
    if weights is not None:
        noise = noise * weights.to(device)
    directions = _centred_unit(noise, torch.isfinite(target_logp))
    radii = low + (high - low) * torch.rand(size - 1, generator=generator, dtype=torch.float64).to(device)
    members = _softmax_members(target_logp, radii[:, None, None] * directions)
    logp = torch.cat([members[:target_index], target_logp.unsqueeze(0), members[target_index:]])
    label = f"{radius:g}" if low == high else f"U[{low:g}, {high:g}]"
    aimed = "" if weights is None else " (weighted)"
    return PolicyClass(logp, prompt_dist, target_index, f"perturbations{aimed} of pi* at radius {label}, seed {seed}")


def _check_radius(radius) -> tuple[float, float]:
    if isinstance(radius, (tuple, list)):
        if len(radius) != 2:
            raise ValueError(f"radius must be a number or a pair (low, high), got {radius!r}")
        low = check_positive(radius[0], "radius[0]", allow_zero=True)
        high = check_positive(radius[1], "radius[1]")
        if low > high:
            raise ValueError(f"radius must have low <= high, got {radius!r}")
        return low, high
    value = check_positive(radius, "radius")
    return value, value


def grid_class(
    target: PolicyLike,
    directions: Tensor | int,
    steps: Sequence[float],
    *,
    seed: int = 0,
) -> PolicyClass:
    """π* tilted along D directions on a grid: logits ln π* + Σ_d t_d v_d for every (t_1, …, t_D) ∈ steps^D.

    The class has len(steps)^D members; π* is the member with every t_d = 0, so
    `steps` must contain 0.  Member order is lexicographic in (t_1, …, t_D).

    Args:
      target: π* as a `World`, a single `Policy`, or log-probabilities [X, A].
      directions: logit offsets v_d, [D, X, A] or [X, A] (used as given: the
        direction ln q − ln π* with step 1 reaches q exactly), or an int D to
        draw D Gaussian directions centred and scaled to norm 1 per prompt
        (steps are then per-prompt radii).
      steps: the grid of coefficients t, containing 0.
      seed: seeds the random directions (ignored for given ones).
    """
    target_logp, prompt_dist = _target_logp(target)
    support = torch.isfinite(target_logp)
    seed = check_seed(seed)
    values = _check_steps(steps)
    if isinstance(directions, int) and not isinstance(directions, bool):
        _check_size(directions, "directions", minimum=1)
        generator = torch.Generator().manual_seed(int(seed))
        noise = torch.randn((directions, *target_logp.shape), generator=generator, dtype=torch.float64)
        vectors = _centred_unit(noise.to(target_logp.device), support)
        how = f"{directions} random directions, seed {seed}"
    else:
        vectors = as_tensor(directions, "directions", dtype=torch.float64, device=target_logp.device)
        if vectors.dim() == 2:
            vectors = vectors.unsqueeze(0)
        if vectors.dim() != 3 or vectors.shape[-2:] != target_logp.shape:
            raise ValueError(
                f"directions must have shape [D, {target_logp.shape[0]}, {target_logp.shape[1]}], "
                f"got {tuple(vectors.shape)}"
            )
        if not torch.isfinite(vectors[:, support]).all():
            raise ValueError("directions must be finite where pi* has positive probability")
        vectors = torch.where(support, vectors, torch.zeros_like(vectors))
        how = f"{vectors.shape[0]} given directions"
    if 0.0 not in values:
        raise ValueError(f"steps must contain 0 so that pi* is a member (A1), got {values}")
    if len(set(values)) != len(values):
        raise ValueError(f"steps must be distinct, got {values}")
    grid = torch.tensor(
        list(itertools.product(values, repeat=vectors.shape[0])), dtype=torch.float64, device=target_logp.device
    )  # [K, D]
    offsets = torch.einsum("kd,dxa->kxa", grid, vectors)
    logp = _softmax_members(target_logp, offsets)
    target_index = int((grid == 0).all(dim=-1).nonzero()[0, 0])
    # The member at t = 0 is π* up to rounding; store π* exactly.
    logp[target_index] = target_logp
    return PolicyClass(logp, prompt_dist, target_index, f"grid of pi* along {how}, steps {values}")


def _check_steps(steps) -> list[float]:
    if isinstance(steps, (str, bytes)) or not isinstance(steps, (Sequence, Tensor)):
        raise InputTypeError(f"steps must be a sequence of numbers containing 0, got {describe(steps)}")
    try:
        values = [float(t) for t in steps]
    except (TypeError, ValueError) as err:
        raise InputTypeError(f"steps must be a sequence of numbers containing 0, got {describe(steps)}") from err
    if not values or not all(math.isfinite(t) for t in values):
        raise ValueError(f"steps must be a non-empty sequence of finite numbers, got {steps!r}")
    return values


def list_class(
    members: Sequence[Policy | Tensor] | Tensor | Policy,
    target: PolicyLike,
    *,
    add_target: bool = True,
) -> PolicyClass:
    """A class from user-given policies; π* is located among them (A1) or, with `add_target`, put first.

    Args:
      members: a Policy with batch [K], a tensor of log-probabilities [K, X, A], or
        a sequence of single policies / [X, A] log-probability tensors.
      target: π* (a `World`, a `Policy` or log-probabilities [X, A]).
      add_target: when π* is not among the members (within 1e-9 in every
        log-probability), prepend it; False raises ValueError instead.
    """
    target_logp, prompt_dist = _target_logp(target)
    add_target = check_bool(add_target, "add_target")
    if isinstance(members, Policy):
        logp = members.logp
    elif isinstance(members, Tensor):
        logp = check_logp(members, "members").to(torch.float64)
    else:
        if isinstance(members, (str, bytes)) or not isinstance(members, Sequence):
            raise InputTypeError(
                f"members must be policies, a sequence of policies or a tensor, got {describe(members)}"
            )
        if len(members) == 0:
            raise ValueError("members must not be empty")
        rows = [m.logp if isinstance(m, Policy) else check_logp(m, f"members[{i}]") for i, m in enumerate(members)]
        shapes = {tuple(r.shape) for r in rows}
        if len(shapes) != 1:
            raise ValueError(f"members must all have the same shape [X, A], got {sorted(shapes)}")
        logp = torch.stack(rows)
    logp = logp.to(torch.float64)
    if logp.dim() == 2:
        logp = logp.unsqueeze(0)
    if logp.dim() != 3 or logp.shape[-2:] != target_logp.shape:
        X, A = target_logp.shape
        raise ValueError(f"members must have shape [K, {X}, {A}], got {tuple(logp.shape)}")
    check_class_logp(logp, "members")  # normalized rows, as every member is a policy
    found = _find(logp, target_logp)
    if found is None:
        if not add_target:
            raise ValueError("pi* is not among members (A1 fails); pass add_target=True to prepend it")
        logp = torch.cat([target_logp.unsqueeze(0), logp])
        found = 0
    return PolicyClass(logp, prompt_dist, found, f"list of {logp.shape[0]} policies")


def _find(logp: Tensor, target_logp: Tensor) -> int | None:
    same = torch.isclose(logp, target_logp, rtol=0.0, atol=_SAME_POLICY_ATOL) | (logp == target_logp)
    hits = same.flatten(1).all(dim=1).nonzero()
    return None if hits.numel() == 0 else int(hits[0, 0])


def reward_class(
    rewards: Tensor,
    gamma: float,
    target: PolicyLike,
    *,
    add_target: bool = True,
) -> PolicyClass:
    """The reward-induced class 𝒫_γ(ℛ) = {π_R(a|x) ∝ exp(R(x,a)/γ) : R ∈ ℛ} (spec §1, A5).

    Member m is π_{R_m}; its induced reward γ ln π_{R_m} (`PolicyClass.rewards`)
    equals R_m up to a per-prompt constant, which no preference probability sees.
    The true reward R* = γ ln π* is located among the members (A1 for ℛ) or,
    with `add_target`, prepended.

    Args:
      rewards: ℛ as a tensor [M, X, A] (−inf allowed: that response gets probability 0).
      gamma: the preference tilt γ > 0 of the world.
      target: π* (a `World`, a `Policy` or log-probabilities [X, A]).
      add_target: prepend R* when no member induces π*; False raises ValueError.
    """
    gamma = check_positive(gamma, "gamma")
    add_target = check_bool(add_target, "add_target")
    rewards = as_tensor(rewards, "rewards", dtype=torch.float64)
    if rewards.dim() == 2:
        rewards = rewards.unsqueeze(0)
    if rewards.dim() != 3:
        raise ValueError(f"rewards must have shape [M, X, A], got {tuple(rewards.shape)}")
    if (rewards == math.inf).any():
        raise ValueError("rewards contain +inf")
    if torch.isneginf(rewards).all(dim=-1).any():
        raise ValueError("rewards must leave every prompt at least one finite response")
    induced = list_class(torch.log_softmax(rewards / gamma, dim=-1), target, add_target=add_target)
    return dataclasses.replace(induced, name=f"reward-induced class of {rewards.shape[0]} rewards, gamma {gamma:g}")


def union_class(first: PolicyClass, *others: PolicyClass) -> PolicyClass:
    """Π ∪ Π' ∪ …: the members of `first` followed by those of `others`.

    π* keeps `first`'s index; the copies of π* in `others` (at their
    `target_index`) are dropped so that it is counted once in |Π|.  Use it to
    build a policy class containing a reward-induced class (A5):
    `union_class(reward_class(...), perturbation_class(...))`.
    """
    classes = (first, *others)
    names = ["first", *(f"others[{i}]" for i in range(len(others)))]
    for name, member in zip(names, classes, strict=True):
        if not isinstance(member, PolicyClass):
            raise InputTypeError(f"{name} must be a PolicyClass, got {describe(member)}")
        if member.logp.shape[-2:] != first.logp.shape[-2:]:
            got, expected = tuple(member.logp.shape[-2:]), tuple(first.logp.shape[-2:])
            raise ValueError(f"{name} has [X, A] = {got}, expected {expected} (those of first)")
    for name, other in zip(names[1:], others, strict=True):
        if _find(other.target.logp.unsqueeze(0), first.target.logp) is None:
            raise ValueError(f"{name} has a different pi* than first")
    parts = [first.logp]
    for other in others:
        keep = torch.ones(other.size, dtype=torch.bool)
        keep[other.target_index] = False
        parts.append(other.logp[keep])
    logp = torch.cat(parts)
    name = " + ".join(c.name or f"{c.size} members" for c in classes)
    return PolicyClass(logp, first.prompt_dist, first.target_index, name)
