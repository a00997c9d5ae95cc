"""Preference laws beside the gamma-tilted Bradley–Terry law: P(a ≻ b | x) as a value a world can carry.

A law is a frozen value with one job: `matrix(world)` returns P[x, a, b] = P(a ≻ b | x), shape
[X, A, A], with P + Pᵀ = 1 (so P[x, a, a] = 1/2).  A `World` given `law=` labels its pairs with it
(`synthalign.worlds.preferences.preference_matrix` dispatches on `world.law`), so the population law
over cells, both count samplers and every loss take it unchanged; `law=None` is the paper's law.

* `BradleyTerry` — the gamma-tilted BT law of spec §1, σ(γ ln[π*(a)/π*(b)]), of the world's target
  or of a given policy: the default, made explicit.
* `LinkLaw` — BT with a misspecified link: F(scale · γ ln[π*(a)/π*(b)]) for a symmetric CDF F
  (F(−t) = 1 − F(t)): "logistic" (BT itself at scale 1), "probit", "cauchit".
* `thurstone` — Thurstone's Case V (Thurstone 1927): utilities γ ln π*(a) plus i.i.d. N(0, σ²)
  noise, so P(a ≻ b) = Φ(γ ln[π*(a)/π*(b)] / (σ√2)); a `LinkLaw` with the probit link.
* `GeneralLaw` — any tensor P[x, a, b] with P + Pᵀ = 1: random (σ of a Gaussian skew-symmetric
  matrix), with ties (pairs at exactly 1/2), and with planted Condorcet cycles of chosen strength.

Targets under these laws (von Neumann winners, KL-regularized Nash equilibria, duality gaps) are
`synthalign.theory.games`'s.  Under a law other than spec §1's, `World.true_reward` (γ ln π*) is not the
law's reward — none may exist — so objectives that need R̂ should be given one fitted on the law's data
(`synthalign.fit_reward_model`) rather than the population default.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthalign._checks import (
    as_tensor,
    check_finite_float,
    check_float_dtype,
    check_int,
    check_positive,
    check_table_shape,
    safe_log_ratio,
    seeded_generator,
)
from synthalign._types import DeviceLike, DTypeLike
from synthalign.worlds.policy import Policy

if TYPE_CHECKING:
    from synthalign.worlds.tabular import World

__all__ = ["BradleyTerry", "GeneralLaw", "LINKS", "LinkLaw", "PreferenceLaw", "check_preference_matrix", "thurstone"]

# |P + Pᵀ − 1| allowed in a user's matrix: a few float64 roundings of numbers of order 1.
_SKEW_TOL = 1e-12

# A law's tensor may be of any floating dtype (a world converts it to its own); an integer one would round S.
_LAW_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _logistic(t: Tensor) -> Tensor:
    return torch.sigmoid(t)


def _probit(t: Tensor) -> Tensor:
    return torch.special.ndtr(t)


def _cauchit(t: Tensor) -> Tensor:
    return 0.5 + torch.atan(t) / math.pi


LINKS = {"logistic": _logistic, "probit": _probit, "cauchit": _cauchit}
"""Symmetric links F (F(−t) = 1 − F(t)) by name."""


def check_preference_matrix(matrix: Tensor, name: str = "matrix") -> Tensor:
    """Checks P[..., a, b] ∈ [0, 1] with P + Pᵀ = 1 (to 1e-12) and returns it."""
    if not isinstance(matrix, Tensor) or matrix.dim() < 2 or matrix.shape[-1] != matrix.shape[-2]:
        shape = tuple(matrix.shape) if isinstance(matrix, Tensor) else type(matrix).__name__
        raise ValueError(f"{name} must be a tensor of shape [..., A, A], got {shape}")
    if not torch.isfinite(matrix).all() or (matrix < 0).any() or (matrix > 1).any():
        raise ValueError(f"{name} must hold probabilities in [0, 1]")
    deviation = float((matrix + matrix.transpose(-1, -2) - 1).abs().max())
    if deviation > _SKEW_TOL:
        raise ValueError(f"{name} must satisfy P + Pᵀ = 1; largest |P + Pᵀ − 1| = {deviation:.3g}")
    return matrix


class PreferenceLaw:
    """The protocol of a preference law: `matrix(world)` -> P [X, A, A]; `to(device, dtype)`."""

    def matrix(self, world: World) -> Tensor:  # pragma: no cover - the protocol
        raise NotImplementedError

    def to(self, device: DeviceLike = None, dtype: DTypeLike = None) -> PreferenceLaw:
        return self

    def validate(self, world: World) -> None:
        """Raises ValueError (naming `law`) unless the law gives a valid [X, A, A] matrix on `world`."""
        try:
            matrix = self.matrix(world)
        except (ValueError, RuntimeError, IndexError) as err:
            raise ValueError(f"law {self!r} does not apply to this world: {err}") from err
        expected = (world.n_prompts, world.n_responses, world.n_responses)
        if tuple(matrix.shape) != expected:
            raise ValueError(f"law gives a matrix of shape {tuple(matrix.shape)}, expected {expected}")
        check_preference_matrix(matrix, "law's matrix")


def _target_logp(target: Policy | None, world) -> Tensor:
    return world.target.logp if target is None else target.logp.to(world.prompt_dist)


@dataclasses.dataclass(frozen=True, eq=False)
class LinkLaw(PreferenceLaw):
    """P(a ≻ b | x) = F(scale · γ · ln[π*(a|x)/π*(b|x)]) for a symmetric link F.

    Attributes:
      link: a name in `LINKS` ("logistic", "probit", "cauchit").
      target: the policy whose log-ratios drive the law (None: the world's pi*).
      scale: a positive factor on the margin; the logistic link at scale 1 is spec §1's law.
      gamma: the tilt (None: the world's gamma).
    Two responses of probability zero are tied at 1/2 (`safe_log_ratio`), as in spec §1's law.
    """

    link: str = "logistic"
    target: Policy | None = None
    scale: float = 1.0
    gamma: float | None = None

    def __post_init__(self) -> None:
        if self.link not in LINKS:
            raise ValueError(f"link must be one of {sorted(LINKS)}, got {self.link!r}")
        if self.target is not None and not isinstance(self.target, Policy):
            raise ValueError(f"target must be a Policy or None, got {type(self.target).__name__}")
        object.__setattr__(self, "scale", check_positive(self.scale, "scale"))
        if self.gamma is not None:
            object.__setattr__(self, "gamma", check_positive(self.gamma, "gamma"))

    def matrix(self, world: World) -> Tensor:
        logp = _target_logp(self.target, world)
        gamma = world.gamma if self.gamma is None else self.gamma
        margin = safe_log_ratio(logp.unsqueeze(-1), logp.unsqueeze(-2))
        return LINKS[self.link](self.scale * gamma * margin)

    def to(self, device: DeviceLike = None, dtype: DTypeLike = None) -> LinkLaw:
        target = None if self.target is None else self.target.to(device=device, dtype=dtype)
        return dataclasses.replace(self, target=target)

    def __repr__(self) -> str:
        return f"LinkLaw(link={self.link!r}, scale={self.scale:g}, target={'pi*' if self.target is None else 'given'})"


class BradleyTerry(LinkLaw):
    """Spec §1's gamma-tilted Bradley–Terry law σ(γ ln[π*(a)/π*(b)]) as an explicit law.

    `World(..., law=BradleyTerry())` gives exactly the numbers of a world without a law: the
    logistic link at scale 1 is `synthalign.worlds.preferences.preference_probability`'s formula.
    """

    def __init__(self, target: Policy | None = None, gamma: float | None = None) -> None:
        super().__init__(link="logistic", target=target, scale=1.0, gamma=gamma)

    def to(self, device: DeviceLike = None, dtype: DTypeLike = None) -> BradleyTerry:
        target = None if self.target is None else self.target.to(device=device, dtype=dtype)
        return BradleyTerry(target, self.gamma)

    def __repr__(self) -> str:
        return f"BradleyTerry(target={'pi*' if self.target is None else 'given'})"


def thurstone(target: Policy | None = None, noise: float = 1.0, gamma: float | None = None) -> LinkLaw:
    """Thurstone's Case V law (Thurstone 1927, "A law of comparative judgment"): utilities
    u(a) = γ ln π*(a|x) observed with i.i.d. N(0, noise²) errors, so
    P(a ≻ b) = P(u(a) + ε_a > u(b) + ε_b) = Φ((u(a) − u(b)) / (noise · √2))."""
    noise = check_positive(noise, "noise")
    return LinkLaw("probit", target=target, scale=1.0 / (noise * math.sqrt(2.0)), gamma=gamma)


@dataclasses.dataclass(frozen=True, eq=False)
class GeneralLaw(PreferenceLaw):
    """An arbitrary preference tensor P[x, a, b] with P + Pᵀ = 1, validated at construction.

    No pi* need exist with P = σ(γ Δ ln π*): with cycles none does, and the natural target is a
    Nash equilibrium (`synthalign.theory.games`).  The world's pi* is ignored by this law.
    """

    probs: Tensor

    def __post_init__(self) -> None:
        probs = as_tensor(self.probs, "probs")
        if probs.dim() != 3:
            raise ValueError(f"probs must have shape [X, A, A], got {tuple(probs.shape)}")
        check_preference_matrix(probs, "probs")
        object.__setattr__(self, "probs", probs)

    def matrix(self, world: World) -> Tensor:
        return self.probs.to(dtype=world.dtype, device=world.device)

    def to(self, device: DeviceLike = None, dtype: DTypeLike = None) -> GeneralLaw:
        return GeneralLaw(self.probs.to(device=device, dtype=dtype))

    @property
    def n_prompts(self) -> int:
        return self.probs.shape[0]

    @property
    def n_responses(self) -> int:
        return self.probs.shape[-1]

    @classmethod
    def from_skew(cls, skew: Tensor) -> GeneralLaw:
        """P = σ(S) for a skew-symmetric logit matrix S [X, A, A] (Sᵀ = −S gives P + Pᵀ = 1 exactly)."""
        skew = as_tensor(skew, "skew")
        if skew.dim() != 3 or skew.shape[-1] != skew.shape[-2]:
            raise ValueError(f"skew must have shape [X, A, A], got {tuple(skew.shape)}")
        if not torch.equal(skew, -skew.transpose(-1, -2)):
            raise ValueError("skew must be exactly skew-symmetric (S = −Sᵀ)")
        # σ(S) and σ(−S) = 1 − σ(S) are computed separately; make Pᵀ = 1 − P hold to the last bit.
        upper = torch.triu(torch.sigmoid(skew), diagonal=1)
        lower = torch.tril(1.0 - upper.transpose(-1, -2), diagonal=-1)
        return cls(upper + lower + 0.5 * torch.eye(skew.shape[-1], dtype=skew.dtype))

    @classmethod
    def random(
        cls,
        n_prompts: int = 3,
        n_responses: int = 5,
        *,
        scale: float = 1.0,
        tie_fraction: float = 0.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> GeneralLaw:
        """P = σ(S), S skew-symmetric with i.i.d. N(0, scale²) entries above the diagonal.

        `tie_fraction` sets that fraction of the unordered pairs {a, b} (chosen at random) to a
        tie, P(a ≻ b) = 1/2 exactly.  Such a P is intransitive almost surely once A ≥ 3.
        """
        n_prompts, n_responses = check_table_shape(n_prompts, n_responses)
        if not 0.0 <= tie_fraction <= 1.0:
            raise ValueError(f"tie_fraction must lie in [0, 1], got {tie_fraction}")
        scale = check_positive(scale, "scale")
        check_float_dtype(dtype, allowed=_LAW_DTYPES)
        generator = seeded_generator(seed)
        shape = (n_prompts, n_responses, n_responses)
        upper = torch.triu(torch.randn(shape, generator=generator, dtype=torch.float64) * scale, diagonal=1)
        tied = torch.rand(shape, generator=generator, dtype=torch.float64) < tie_fraction
        upper = upper.masked_fill(tied, 0.0)
        return cls.from_skew((upper - upper.transpose(-1, -2)).to(dtype))

    @classmethod
    def cyclic(
        cls,
        n_prompts: int = 3,
        n_responses: int = 3,
        *,
        strength: float = 2.0,
        cycle_length: int | None = None,
        transitive_scale: float = 0.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> GeneralLaw:
        """A planted Condorcet cycle: P = σ(s_a − s_b + strength · C_ab).

        C is the cycle 0 ≻ 1 ≻ … ≻ k−1 ≻ 0 over the first k = `cycle_length` responses (default
        all): C[a, a+1 mod k] = +1, C[a+1 mod k, a] = −1, 0 elsewhere.  s are transitive scores,
        i.i.d. N(0, transitive_scale²) per prompt and response (0: a pure cycle; with k = A = 3
        and no scores this is rock–paper–scissors, whose Nash equilibrium is uniform).
        For k ≥ 3 and strength > |s| differences the majority relation is cyclic: no Condorcet
        winner exists.  `transitive_scale` may be any finite real: its sign only negates the
        draws, and N(0, σ²) is the law of −s as of s.
        """
        n_prompts, n_responses = check_table_shape(n_prompts, n_responses, min_responses=3)
        k = n_responses if cycle_length is None else check_int(cycle_length, "cycle_length", minimum=3)
        if k > n_responses:
            raise ValueError(f"cycle_length must lie in [3, n_responses={n_responses}], got {cycle_length}")
        strength = check_positive(strength, "strength", allow_zero=True)
        transitive_scale = check_finite_float(transitive_scale, "transitive_scale")
        check_float_dtype(dtype, allowed=_LAW_DTYPES)
        generator = seeded_generator(seed)
        index = torch.arange(k)
        cycle = torch.zeros(n_responses, n_responses, dtype=torch.float64)
        cycle[index, (index + 1) % k] = 1.0
        cycle = cycle - cycle.T
        scores = torch.randn(n_prompts, n_responses, generator=generator, dtype=torch.float64) * transitive_scale
        skew = scores.unsqueeze(-1) - scores.unsqueeze(-2) + strength * cycle
        return cls.from_skew(skew.to(dtype))

    def __repr__(self) -> str:
        return f"GeneralLaw(X={self.n_prompts}, A={self.n_responses})"
