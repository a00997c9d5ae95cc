"""Tabular policies: conditional distributions pi(a | x) on a finite world.

A `Policy` holds normalized log-probabilities of shape [..., X, A] (leading
dimensions index replicates or class members) and, optionally, the prompt
distribution over which divergences are averaged.  Log-space storage lets a
response have probability exactly zero (log-probability -inf).

The closed forms of spec §2 (pi_R, the RLHF and RKL optima) are
`synthalign.theory.closed_forms`'s.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from synthalign._checks import (
    InputTypeError,
    as_tensor,
    check_dims,
    check_distribution,
    check_floating,
    check_logp,
    check_prompt_dist,
    check_same_device,
    describe,
)
from synthalign._types import ArrayLike, DeviceLike, DTypeLike

__all__ = ["Policy", "as_logp", "check_distribution"]


@dataclasses.dataclass(frozen=True, eq=False)
class Policy:
    """A (batch of) tabular policies pi(a | x).

    Attributes:
      logp: log-probabilities, shape [..., X, A], each row normalized.
      prompt_dist: optional distribution over prompts, shape [X], used by the
        metrics to average over x ~ D.
    """

    logp: Tensor
    prompt_dist: Tensor | None = None

    def __post_init__(self):
        if not isinstance(self.logp, Tensor):
            raise InputTypeError(
                f"Policy.logp must be a torch.Tensor [..., X, A] of log-probabilities, got {describe(self.logp)} "
                "(Policy.from_probs and Policy.from_logits take lists and numpy arrays)"
            )
        check_logp(self.logp, "Policy.logp")
        if self.prompt_dist is not None:
            prompt_dist = check_prompt_dist(self.prompt_dist, "prompt_dist", n_prompts=self.logp.shape[-2])
            object.__setattr__(self, "prompt_dist", prompt_dist)
            check_same_device({"Policy.logp": self.logp, "prompt_dist": self.prompt_dist})

    @classmethod
    def from_logits(cls, logits: ArrayLike, prompt_dist: Tensor | None = None) -> Policy:
        """The softmax policy of `logits` [..., X, A]; -inf logits give zero probability."""
        logits = check_floating(as_tensor(logits, "logits"), "logits", what="logits")
        check_dims(logits, "logits", ("X", "A"), batch=True)
        if (logits == float("inf")).any():
            raise ValueError("logits contain +inf")
        if logits.dim() >= 1 and torch.isneginf(logits).all(dim=-1).any():
            raise ValueError(
                "logits have a row that is all -inf (a distribution needs one response of probability > 0)"
            )
        return cls(torch.log_softmax(logits, dim=-1), prompt_dist)

    @classmethod
    def from_probs(cls, probs: ArrayLike, prompt_dist: Tensor | None = None) -> Policy:
        """A policy from probabilities [..., X, A] (validated, then renormalized exactly)."""
        probs = check_distribution(as_tensor(probs, "probs") if not isinstance(probs, Tensor) else probs, "probs")
        check_dims(probs, "probs", ("X", "A"), batch=True)
        logp = torch.log(probs)
        return cls(logp - torch.logsumexp(logp, dim=-1, keepdim=True), prompt_dist)

    @property
    def probs(self) -> Tensor:
        return self.logp.exp()

    @property
    def n_prompts(self) -> int:
        return self.logp.shape[-2]

    @property
    def n_responses(self) -> int:
        return self.logp.shape[-1]

    @property
    def batch_shape(self) -> torch.Size:
        return self.logp.shape[:-2]

    def to(self, device: DeviceLike = None, dtype: DTypeLike = None) -> Policy:
        prompt_dist = None if self.prompt_dist is None else self.prompt_dist.to(device=device, dtype=dtype)
        return Policy(self.logp.to(device=device, dtype=dtype), prompt_dist)

    def __getitem__(self, index) -> Policy:
        """Indexes the batch dimensions: `fitted.policy[3]` is replicate 3."""
        logp = self.logp[index]
        if logp.dim() < 2:
            raise ValueError("indexing a Policy must keep the [X, A] dimensions")
        return Policy(logp, self.prompt_dist)

    def __repr__(self) -> str:
        return f"Policy(batch_shape={tuple(self.batch_shape)}, X={self.n_prompts}, A={self.n_responses})"


def as_logp(policy: Policy | Tensor, name: str = "policy") -> Tensor:
    """The log-probability tensor of a Policy, or a tensor taken as log-probabilities."""
    if isinstance(policy, Policy):
        return policy.logp
    if isinstance(policy, Tensor):
        return check_logp(policy, name, normalized=False)
    raise InputTypeError(
        f"{name} must be a Policy or a tensor of log-probabilities [..., X, A], got {describe(policy)}"
    )
