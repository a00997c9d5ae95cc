"""Finite preference worlds: the known ground truth every experiment is run on.

A `World` is an immutable value holding the prompt distribution D, the target
pi*, the reference pi0, the behaviour policy mu that proposes the responses to
be labelled, and the preference tilt gamma of spec §1.  It is validated once at
construction; every other module can then trust its tensors.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from synthalign._checks import (
    InputTypeError,
    as_tensor,
    check_device,
    check_finite_float,
    check_float_dtype,
    check_positive,
    check_prompt_dist,
    check_same_device,
    check_table_shape,
    describe,
    seeded_generator,
)
from synthalign._types import ArrayLike, DeviceLike, DTypeLike, Seed
from synthalign.worlds.checks import TabularWorld
from synthalign.worlds.datasets import PairData, PreferenceData, PreferenceList
from synthalign.worlds.laws import PreferenceLaw
from synthalign.worlds.policy import Policy
from synthalign.worlds.preferences import population_preferences
from synthalign.worlds.sampling import sample_pairs, sample_preference_list, sample_preferences

__all__ = ["World"]


class _OverPrompts:
    """What a world reads off its prompt distribution D: the number of prompts, its dtype and device."""

    prompt_dist: Tensor

    @property
    def n_prompts(self) -> int:
        return self.prompt_dist.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.prompt_dist.dtype

    @property
    def device(self) -> torch.device:
        return self.prompt_dist.device


@dataclasses.dataclass(frozen=True)
class _DialedLogits:
    """The dials of `World.random` and `SequenceWorld.random`, validated, and the logits they draw.

    Logits of pi* are θ* ~ N(0, logit_scale²); pi0's are (1 − reference_mix) θ* + reference_mix ξ with ξ
    fresh noise of the same scale; mu's are built the same way with `behavior_mix` (None: mu = pi0) and
    then shifted by −behavior_tilt · θ*.
    """

    reference_mix: float
    behavior_mix: float | None
    logit_scale: float
    behavior_tilt: float

    def __post_init__(self) -> None:
        _check_mix(self.reference_mix, "reference_mix")
        if self.behavior_mix is not None:
            _check_mix(self.behavior_mix, "behavior_mix", expected="[0, 1] or be None")
        object.__setattr__(self, "logit_scale", check_positive(self.logit_scale, "logit_scale"))
        object.__setattr__(self, "behavior_tilt", check_finite_float(self.behavior_tilt, "behavior_tilt"))

    def draw(self, shape: tuple[int, ...], generator: torch.Generator) -> dict[str, Tensor]:
        """{"target", "reference", "behavior"} logits of `shape`, float64, drawn from `generator` in that order."""

        def noise():
            return torch.randn(shape, generator=generator, dtype=torch.float64) * self.logit_scale

        target = noise()
        reference = (1 - self.reference_mix) * target + self.reference_mix * noise()
        if self.behavior_mix is None:
            behavior = reference.clone()
        else:
            behavior = (1 - self.behavior_mix) * target + self.behavior_mix * noise()
        return {"target": target, "reference": reference, "behavior": behavior - self.behavior_tilt * target}


@dataclasses.dataclass(frozen=True, eq=False)
class World(_OverPrompts, TabularWorld):
    """A contextual-bandit world with a known target distribution.

    Attributes:
      prompt_dist: D, shape [X].
      target: pi*, the policy whose gamma-tilted Bradley–Terry law labels pairs.
      reference: pi0, the reference (SFT) policy of every KL(pi || pi0) term.
      behavior: mu, the policy that draws the two responses of each pair.
      gamma: the preference tilt (spec §1), > 0.
      law: the preference law labelling pairs (`synthalign.worlds.laws`); None is spec §1's
        gamma-tilted Bradley–Terry law of pi*.
    """

    prompt_dist: Tensor
    target: Policy
    reference: Policy
    behavior: Policy
    gamma: float
    law: PreferenceLaw | None = None

    def __post_init__(self) -> None:
        check_positive(self.gamma, "gamma")
        if not isinstance(self.prompt_dist, Tensor):
            raise InputTypeError(f"prompt_dist must be a 1-D tensor of shape [X], got {describe(self.prompt_dist)}")
        check_prompt_dist(self.prompt_dist, "prompt_dist")
        n_prompts = self.prompt_dist.shape[0]
        shape = None
        for field in ("target", "reference", "behavior"):
            policy = getattr(self, field)
            if not isinstance(policy, Policy):
                raise InputTypeError(f"{field} must be a Policy, got {describe(policy)}")
            if policy.logp.dim() != 2:
                raise ValueError(f"{field} must have shape [X, A], got {tuple(policy.logp.shape)}")
            if policy.n_prompts != n_prompts:
                raise ValueError(f"{field} has {policy.n_prompts} prompts but prompt_dist has {n_prompts}")
            if shape is not None and policy.logp.shape != shape:
                raise ValueError(f"{field} has shape {tuple(policy.logp.shape)}, expected {tuple(shape)}")
            shape = policy.logp.shape
            check_same_device({field: policy.logp, "prompt_dist": self.prompt_dist})
            if policy.logp.dtype != self.prompt_dist.dtype:
                raise ValueError(f"{field} has dtype {policy.logp.dtype} but prompt_dist has {self.prompt_dist.dtype}")
            # Policies of a world always carry its prompt distribution.
            if policy.prompt_dist is None or policy.prompt_dist is not self.prompt_dist:
                object.__setattr__(self, field, Policy(policy.logp, self.prompt_dist))
        object.__setattr__(self, "gamma", float(self.gamma))
        if self.law is not None:
            if not isinstance(self.law, PreferenceLaw):
                raise ValueError(f"law must be a PreferenceLaw or None, got {type(self.law).__name__}")
            self.law.validate(self)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_tensors(
        cls,
        *,
        target: ArrayLike,
        reference: ArrayLike,
        behavior: ArrayLike | None = None,
        prompt_dist: ArrayLike | None = None,
        gamma: float,
        kind: str = "probs",
        dtype: torch.dtype = torch.float64,
        device: DeviceLike = None,
    ) -> World:
        """A world from user tensors of shape [X, A].

        Args:
          target, reference, behavior: pi*, pi0, mu as probabilities (`kind="probs"`)
            or logits (`kind="logits"`); behavior defaults to the reference.
          prompt_dist: D over X prompts; uniform when omitted.
          gamma: preference tilt, > 0.
        """
        if kind not in ("probs", "logits"):
            raise ValueError(f"kind must be 'probs' or 'logits', got {kind!r}")
        device = check_device(device)
        if target is None or reference is None:
            raise InputTypeError("target and reference are required tensors of shape [X, A]")
        make = Policy.from_probs if kind == "probs" else Policy.from_logits
        policies = {}
        given = _given_tensors(dtype, device, target=target, reference=reference, behavior=behavior)
        for name, tensor in given.items():
            if tensor.dim() != 2:
                raise ValueError(f"{name} must have shape [X, A], got {tuple(tensor.shape)}")
            if name != "target" and tensor.shape != policies["target"].logp.shape:
                target_shape = tuple(policies["target"].logp.shape)
                what = (
                    f"{tensor.shape[0]} prompts"
                    if tensor.shape[0] != target_shape[0]
                    else f"shape {tuple(tensor.shape)}"
                )
                raise ValueError(f"{name} has {what} but target has shape {target_shape}: both must be [X, A]")
            try:
                policies[name] = make(tensor)
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from err
        policies.setdefault("behavior", policies["reference"])
        prompt_dist = _prompt_dist_or_uniform(prompt_dist, policies["target"].n_prompts, dtype, device)
        return cls(prompt_dist=prompt_dist, gamma=gamma, **policies)

    @classmethod
    def paper_toy(
        cls,
        seed: int = 0,
        *,
        logit_scale: float = 0.1,
        gamma: float = 0.5,
        n_prompts: int = 10,
        n_responses: int = 10,
        dtype: torch.dtype = torch.float64,
        device: DeviceLike = None,
    ) -> World:
        """The toy world of the paper's Figure 1 (spec §5).

        |X| = |A| = 10, gamma = 0.5, logits of pi* and pi0 i.i.d. N(0, logit_scale^2)
        for each prompt, D uniform, and mu = pi0 (the spec's Decision).
        """
        # World.random's draw with an independent pi0 (reference_mix = 1) and mu = pi0.
        return cls.random(
            n_prompts, n_responses, gamma=gamma, logit_scale=logit_scale, seed=seed, dtype=dtype, device=device
        )

    @classmethod
    def random(
        cls,
        n_prompts: int = 5,
        n_responses: int = 8,
        *,
        gamma: float = 0.5,
        logit_scale: float = 1.0,
        reference_mix: float = 1.0,
        behavior_mix: float | None = None,
        behavior_tilt: float = 0.0,
        zero_fraction: float = 0.0,
        prompt_concentration: float | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        device: DeviceLike = None,
    ) -> World:
        """A random world whose distances between pi*, pi0 and mu are dialed.

        Logits of pi* are N(0, logit_scale^2).  pi0's logits are
        (1 - reference_mix) * theta* + reference_mix * xi with xi independent noise
        of the same scale, so reference_mix = 0 gives pi0 = pi* and 1 an
        independent pi0.  mu's logits are built the same way with `behavior_mix`
        (None: mu = pi0) and then shifted by -behavior_tilt * theta*: a positive
        tilt moves mu's mass away from where pi* puts it, which makes the coverage
        constants of Def. 3 large.  `zero_fraction` sets that fraction of pi*'s
        responses (never all of a prompt's) to probability exactly zero.
        `prompt_concentration` draws D from a Dirichlet with that concentration
        (None: uniform).
        """
        dials = _DialedLogits(reference_mix, behavior_mix, logit_scale, behavior_tilt)
        _check_mix(zero_fraction, "zero_fraction")
        shape = check_table_shape(n_prompts, n_responses)
        check_float_dtype(dtype)
        generator = seeded_generator(seed)
        logits = dials.draw(shape, generator)
        if zero_fraction > 0:
            target = logits["target"]
            dropped = torch.rand(shape, generator=generator, dtype=torch.float64) < zero_fraction
            keep = target.argmax(dim=-1, keepdim=True)
            dropped.scatter_(-1, keep, False)
            logits["target"] = target.masked_fill(dropped, float("-inf"))
        prompt_dist = None
        if prompt_concentration is not None:
            concentration = check_positive(prompt_concentration, "prompt_concentration")
            gammas = torch._standard_gamma(torch.full((shape[0],), concentration, dtype=torch.float64), generator)
            prompt_dist = (gammas + 1e-12) / (gammas + 1e-12).sum()
        return cls.from_tensors(
            **logits, prompt_dist=prompt_dist, gamma=gamma, kind="logits", dtype=dtype, device=device
        )

    # ------------------------------------------------------------------ accessors

    @property
    def n_responses(self) -> int:
        return self.target.n_responses

    @property
    def true_reward(self) -> Tensor:
        """R* = gamma ln pi*(a|x) (spec §1), shape [X, A]; -inf where pi* is zero."""
        return self.gamma * self.target.logp

    def to(self, device: DeviceLike = None, dtype: DTypeLike = None) -> World:
        prompt_dist = self.prompt_dist.to(device=device, dtype=dtype)
        return World(
            prompt_dist=prompt_dist,
            target=Policy(self.target.logp.to(device=device, dtype=dtype)),
            reference=Policy(self.reference.logp.to(device=device, dtype=dtype)),
            behavior=Policy(self.behavior.logp.to(device=device, dtype=dtype)),
            gamma=self.gamma,
            law=None if self.law is None else self.law.to(device=device, dtype=dtype),
        )

    def floor_reference(self, floor: float) -> World:
        """A copy whose pi0 gives log-probability `floor` (not -inf) to its zero-probability responses.

        With floor = -1000, e^floor is 0 in float64 while ln(pi / pi0) stays finite for a
        policy of logits at the same floor: what a tabular softmax fit needs to minimize a
        reference-relative objective (DPO, IPO, REBEL, ...) or beta · KL(pi ‖ pi0) where pi0
        has zeros.  Returns `self` when pi0 has none.
        """
        logp = self.reference.logp
        if not torch.isneginf(logp).any():
            return self
        return self.replace(reference=Policy(logp.clamp_min(float(floor))))

    def replace(self, **changes: Any) -> World:
        """A copy with some fields changed (e.g. `world.replace(gamma=2.0)`), re-validated."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.update(changes)
        return World(**fields)

    # ------------------------------------------------------------------ data

    def population_preferences(self) -> PreferenceData:
        """The exact law of one labelled pair as a `PreferenceData` of probabilities."""
        return population_preferences(self)

    def sample_preferences(self, n: int, replicates: int = 1, seed: Seed = None, **kwargs: Any) -> PreferenceData:
        """`replicates` independent datasets of n labelled pairs, held as counts."""
        return sample_preferences(self, n, replicates=replicates, seed=seed, **kwargs)

    def sample_pairs(
        self, n: int, replicates: int = 1, seed: Seed = None, *, policy: Policy | None = None, **kwargs: Any
    ) -> PairData:
        """Unlabelled pairs (a, b) drawn from mu (or `policy`), held as counts."""
        return sample_pairs(self, n, replicates=replicates, seed=seed, policy=policy, **kwargs)

    def sample_preference_list(self, n: int, replicates: int = 1, seed: Seed = None, **kwargs: Any) -> PreferenceList:
        """Labelled pairs as explicit index tensors, for per-sample code."""
        return sample_preference_list(self, n, replicates=replicates, seed=seed, **kwargs)

    def __repr__(self) -> str:
        law = "" if self.law is None else f", law={self.law!r}"
        return f"World(X={self.n_prompts}, A={self.n_responses}, gamma={self.gamma}{law}, dtype={self.dtype})"


def _given_tensors(dtype: torch.dtype, device: DeviceLike, **values: ArrayLike | None) -> dict[str, Tensor]:
    """The values given (not None) as tensors of `dtype` on `device`, in order: the policies of a `from_tensors`."""
    check_float_dtype(dtype)
    given = {name: value for name, value in values.items() if value is not None}
    return {name: as_tensor(value, name, dtype=dtype, device=device) for name, value in given.items()}


def _prompt_dist_or_uniform(
    prompt_dist: ArrayLike | None, n_prompts: int, dtype: torch.dtype, device: DeviceLike
) -> Tensor:
    """D as a tensor of `dtype` on `device`; uniform over the `n_prompts` prompts when not given."""
    if prompt_dist is None:
        prompt_dist = torch.full((n_prompts,), 1.0 / n_prompts, dtype=dtype, device=device)
    return as_tensor(prompt_dist, "prompt_dist", dtype=dtype, device=device)


def _check_mix(value, name: str, expected: str = "[0, 1]") -> float:
    value = check_positive(value, name, allow_zero=True)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in {expected}, got {value}")
    return value
