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

from synthalign._checks import as_tensor

_NORMALIZATION_TOL = 1e-6


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
        logp = self.logp
        if logp.dim() < 2:
            raise ValueError(f"Policy.logp must have shape [..., X, A], got {tuple(logp.shape)}")
        if torch.isnan(logp).any():
            raise ValueError("Policy.logp contains NaN")
        if (logp == float("inf")).any():
            raise ValueError("Policy.logp contains +inf")
        total = torch.logsumexp(logp, dim=-1)
        if not torch.allclose(total, torch.zeros_like(total), atol=_NORMALIZATION_TOL):
            worst = total.abs().max().item()
            raise ValueError(f"Policy.logp rows must be normalized (logsumexp = 0); worst |logsumexp| = {worst:.3g}")
        if self.prompt_dist is not None:
            check_distribution(self.prompt_dist, "prompt_dist")
            if self.prompt_dist.shape[-1] != logp.shape[-2]:
                raise ValueError(f"prompt_dist has {self.prompt_dist.shape[-1]} prompts but logp has {logp.shape[-2]}")

    @classmethod
    def from_logits(cls, logits, prompt_dist: Tensor | None = None) -> Policy:
        """The softmax policy of `logits` [..., X, A]; -inf logits give zero probability."""
        logits = as_tensor(logits, "logits")
        if (logits == float("inf")).any():
            raise ValueError("logits contain +inf")
        return cls(torch.log_softmax(logits, dim=-1), prompt_dist)

    @classmethod
    def from_probs(cls, probs, prompt_dist: Tensor | None = None) -> Policy:
        """A policy from probabilities [..., X, A] (validated, then renormalized exactly)."""
        probs = as_tensor(probs, "probs")
        check_distribution(probs, "probs")
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

    def to(self, device=None, dtype=None) -> Policy:
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


def check_distribution(probs: Tensor, name: str, tol: float = _NORMALIZATION_TOL) -> None:
    """Checks non-negative, finite, normalized along the last dimension."""
    if not torch.isfinite(probs).all():
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    if (probs < 0).any():
        raise ValueError(f"{name} must be non-negative; minimum is {probs.min().item():.3g}")
    total = probs.sum(dim=-1)
    if not torch.allclose(total, torch.ones_like(total), atol=tol):
        worst = (total - 1).abs().max().item()
        raise ValueError(f"{name} must sum to 1 over its last dimension; worst |sum - 1| = {worst:.3g}")


def as_logp(policy: Policy | Tensor, name: str = "policy") -> Tensor:
    """The log-probability tensor of a Policy, or a tensor taken as log-probabilities."""
    if isinstance(policy, Policy):
        return policy.logp
    if isinstance(policy, Tensor):
        if torch.isnan(policy).any():
            raise ValueError(f"{name} contains NaN")
        return policy
    raise ValueError(f"{name} must be a Policy or a tensor of log-probabilities, got {type(policy).__name__}")
