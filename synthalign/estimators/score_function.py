"""What one score-function gradient is, from samples: the per-sample terms, the surrogate, and its configuration.

The score-function (REINFORCE / RLOO) gradient of RKL (eq. 15) or RLHF (eq. 1) from m responses
per prompt, with the KL(π‖π0) term estimated per sample by k1, k2 or k3 (spec §6 item 14) and it
and the entropy term placed in the reward, in the loss, or computed exactly:

* `GradientConfig`: those choices (estimator, KL estimator and placement, entropy placement, β,
  samples per prompt), validated once; `gradient_config` builds one from a call's keywords
  (`GradientOptions`), which is how every score-function estimator takes them;
* `sample_reward`, `loss_terms`, `score_function_surrogate`: pure functions of log-probability
  tensors of the samples (no world, no sampling), shared by `synthalign.estimators.onpolicy`
  (training on worlds), `synthalign.estimators.gradient_check` (their exact expectations) and
  `synthalign.bridge` (language models).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TypedDict

import torch
from torch import Tensor

from synthalign._checks import InputTypeError, check_int, check_positive
from synthalign.evaluate import kl_regularizer
from synthalign.metrics import entropy_per_prompt
from synthalign.objectives.kl_estimators import KL_ESTIMATOR_KINDS, kl_estimator

__all__ = [
    "ESTIMATORS",
    "PLACEMENTS",
    "SampleTerms",
    "GradientConfig",
    "GradientOptions",
    "gradient_config",
    "sample_reward",
    "loss_terms",
    "score_function_surrogate",
]

ESTIMATORS = ("reinforce", "rloo")
PLACEMENTS = ("reward", "loss", "exact")


def _check_choice(value: str, options: tuple[str, ...], name: str) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


class SampleTerms(TypedDict):
    """The keywords of `sample_reward` and `loss_terms`: c (the entropy coefficient), β and where each term goes."""

    entropy_coef: float
    beta: float
    kl_kind: str
    kl_placement: str
    entropy_placement: str


@dataclasses.dataclass(frozen=True)
class GradientConfig:
    """How a score-function gradient of RKL (eq. 15) or RLHF (eq. 1) is formed from samples of π.

    Attributes:
      beta: the weight β ≥ 0 of KL(π‖π0).
      estimator: "reinforce", or "rloo" (each sample's reward less the mean of the others').
      kl_estimator: the per-sample estimate k of ln(π/π0): "k1", "k2" or "k3" (spec §6 item 14).
      kl_placement: where β·k goes: "reward" (in the reward that multiplies the score), "loss"
        (differentiated directly, samples held fixed), or "exact" (β·KL(π‖π0) on the full table).
      entropy_placement: where the entropy term of eq. 15 goes, with the same three choices (RKL only).
      samples: responses drawn per prompt (RLOO needs 2); the exact expectations do not depend on it.

    Every field is checked here, once: a bad one raises a ValueError naming it.
    """

    beta: float = 0.0
    estimator: str = "rloo"
    kl_estimator: str = "k1"
    kl_placement: str = "reward"
    entropy_placement: str = "reward"
    samples: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", check_positive(self.beta, "beta", allow_zero=True))
        _check_choice(self.estimator, ESTIMATORS, "estimator")
        _check_choice(self.kl_estimator, KL_ESTIMATOR_KINDS, "kl_estimator")
        _check_choice(self.kl_placement, PLACEMENTS, "kl_placement")
        _check_choice(self.entropy_placement, PLACEMENTS, "entropy_placement")
        object.__setattr__(self, "samples", check_int(self.samples, "samples"))

    @property
    def needs_table(self) -> bool:
        """Whether a term is computed on the full table (placed "exact")."""
        return "exact" in (self.kl_placement, self.entropy_placement)

    @property
    def kl_exact(self) -> bool:
        """Whether β·KL(π‖π0) is computed on the full table (placed "exact", β > 0)."""
        return self.kl_placement == "exact" and self.beta > 0

    def exact_terms(self, table: Tensor, ref_table: Tensor | None, entropy_coef: float) -> Tensor:
        """The per-prompt terms placed "exact", on full tables [..., X, N] → [..., X].

        −c·H(π) (eq. 15's entropy term, c = `entropy_coef`) and β·KL(π‖π0) (through
        `evaluate.kl_regularizer`, the one place it is formed); zero where neither is placed "exact".
        `ref_table` (ln π0) is read only when `kl_exact`, and may be None otherwise.
        """
        value = torch.zeros(table.shape[:-1], dtype=table.dtype, device=table.device)
        if self.entropy_placement == "exact" and entropy_coef:
            value = value - entropy_coef * entropy_per_prompt(table)
        if self.kl_exact:
            if ref_table is None:
                raise ValueError("ref_table is needed when beta·KL is placed 'exact'")
            value = value + kl_regularizer(table, ref_table, self.beta)
        return value

    def terms(self, entropy_coef: float) -> SampleTerms:
        """The keywords of `sample_reward`, `loss_terms` and `score_function_surrogate` (but the estimator)."""
        return SampleTerms(
            entropy_coef=entropy_coef,
            beta=self.beta,
            kl_kind=self.kl_estimator,
            kl_placement=self.kl_placement,
            entropy_placement=self.entropy_placement,
        )


class GradientOptions(TypedDict, total=False):
    """The keywords of the score-function estimators (`score_function_fit`, `gradient_check.expected_gradient`, …).

    `reward`: R̂ over the (enumerated) responses, [(R,) X, N], default the true reward γ ln π*;
    `config`: a `GradientConfig`, default the function's own; and any field of `GradientConfig`,
    which overrides the one of `config`.
    """

    reward: Tensor | None
    config: GradientConfig | None
    beta: float
    estimator: str
    kl_estimator: str
    kl_placement: str
    entropy_placement: str
    samples: int


_CONFIG_FIELDS = tuple(field.name for field in dataclasses.fields(GradientConfig))


def gradient_config(options: Mapping[str, object], default: GradientConfig) -> GradientConfig:
    """The `GradientConfig` of a call's keywords (`GradientOptions`): `config` (else `default`) with the fields given.

    A keyword that is neither `reward`, `config` nor a field raises an error naming it.
    """
    unknown = sorted(set(options) - {"reward", "config", *_CONFIG_FIELDS})
    if unknown:
        raise InputTypeError(
            f"unexpected keyword argument(s) {unknown}: the options are reward, config and {_CONFIG_FIELDS}"
        )
    config = options.get("config")
    if config is None:
        config = default
    elif not isinstance(config, GradientConfig):
        raise InputTypeError(f"config must be a GradientConfig or None, got {type(config).__name__}")
    fields = {name: options[name] for name in _CONFIG_FIELDS if name in options}
    return dataclasses.replace(config, **fields) if fields else config


def sample_reward(
    logp: Tensor,
    ref_logp: Tensor,
    reward: Tensor,
    *,
    entropy_coef: float,
    beta: float,
    kl_kind: str,
    kl_placement: str,
    entropy_placement: str,
) -> Tensor:
    """The per-sample reward that multiplies the score ∇ln π(a) (all detached):

        r(a) = R̂(x,a) − c·ln π(a) [entropy in the reward] − β·k(a) [KL in the reward]

    with c the entropy coefficient of eq. 15 (γ; 0 for RLHF) and k the KL estimator of
    spec §6 item 14 on r = π0/π.
    """
    logp, ref_logp = logp.detach(), ref_logp.detach()
    value = reward.detach().to(logp.dtype)
    if entropy_placement == "reward" and entropy_coef:
        value = value - entropy_coef * logp
    if kl_placement == "reward" and beta:
        value = value - beta * kl_estimator(logp, ref_logp, kl_kind)
    return value


def loss_terms(
    logp: Tensor,
    ref_logp: Tensor,
    *,
    entropy_coef: float,
    beta: float,
    kl_kind: str,
    kl_placement: str,
    entropy_placement: str,
) -> Tensor:
    """The per-sample terms differentiated directly (samples held fixed):

    c·ln π(a) [entropy in the loss: the k1 estimate of −H] + β·k(a) [KL in the loss].
    """
    value = torch.zeros_like(logp)
    if entropy_placement == "loss" and entropy_coef:
        value = value + entropy_coef * logp
    if kl_placement == "loss" and beta:
        value = value + beta * kl_estimator(logp, ref_logp, kl_kind)
    return value


def score_function_surrogate(
    logp: Tensor,
    ref_logp: Tensor,
    reward: Tensor,
    *,
    estimator: str = "rloo",
    entropy_coef: float = 0.0,
    beta: float = 0.0,
    kl_kind: str = "k1",
    kl_placement: str = "reward",
    entropy_placement: str = "reward",
) -> Tensor:
    """Per-prompt surrogate whose gradient is the score-function estimate, from m samples [..., m].

        REINFORCE: (1/m) Σ_i [ −sg(r_i) ln π(a_i) + ℓ_i ]
        RLOO:      (1/m) Σ_i [ −sg(r_i − (1/(m−1)) Σ_{j≠i} r_j) ln π(a_i) + ℓ_i ]

    with r from `sample_reward` and ℓ from `loss_terms`.  Its expected gradient, exactly:
    `synthalign.estimators.gradient_check.expected_gradient`.  Returns [...].
    """
    _check_choice(estimator, ESTIMATORS, "estimator")
    terms = SampleTerms(
        entropy_coef=entropy_coef,
        beta=beta,
        kl_kind=kl_kind,
        kl_placement=kl_placement,
        entropy_placement=entropy_placement,
    )
    r = sample_reward(logp, ref_logp, reward, **terms)
    m = logp.shape[-1]
    if estimator == "rloo":
        if m < 2:
            raise ValueError(f"RLOO needs at least 2 samples per prompt, got {m}")
        r = r - (r.sum(dim=-1, keepdim=True) - r) / (m - 1)
    surrogate = -r * logp + loss_terms(logp, ref_logp, **terms)
    return surrogate.mean(dim=-1)
