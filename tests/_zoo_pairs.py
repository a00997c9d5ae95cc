"""Shared inputs of the zoo-loss tests: float64 tensors, the running example, random and extreme pairs."""

from __future__ import annotations

import math

import torch

F64 = torch.float64
LN = math.log


def t(*values, dtype=F64, requires_grad=False):
    return torch.tensor(values, dtype=dtype, requires_grad=requires_grad)


# A two-pair running example: π(a⁺) = 0.6, π(a⁻) = 0.2, π0 uniform over four responses (0.25 each).
LOGP_CHOSEN, LOGP_REJECTED, REF = t(LN(0.6)), t(LN(0.2)), t(LN(0.25))


def example(fn, **kwargs):
    return fn(LOGP_CHOSEN, LOGP_REJECTED, REF, REF, **kwargs).item()


def _random_pairs(n=7, seed=0, dtype=F64, requires_grad=False):
    """Log-probs of n pairs drawn from random policies over 4 responses (distinct pairs, no ties)."""
    generator = torch.Generator().manual_seed(seed)
    logp = torch.log_softmax(torch.randn(n, 4, generator=generator, dtype=F64), dim=-1)
    ref = torch.log_softmax(torch.randn(n, 4, generator=generator, dtype=F64), dim=-1)
    pairs = [logp[:, 0], logp[:, 1], ref[:, 0], ref[:, 1]]
    return [p.to(dtype).clone().requires_grad_(requires_grad) for p in pairs]


def _naive_log_sigmoid(x):
    return torch.log(1.0 / (1.0 + torch.exp(-x)))


def _extreme_pairs(dtype, seed, requires_grad=True):
    """All 36 ordered pairs (ties included) of 6 responses, from logits ±1e4 (exactly or uniformly)."""
    generator = torch.Generator().manual_seed(seed)
    if seed % 2 == 0:
        draw = lambda: 1e4 * (2.0 * torch.randint(0, 2, (6,), generator=generator) - 1.0)  # noqa: E731
    else:
        draw = lambda: 1e4 * (2.0 * torch.rand(6, generator=generator, dtype=F64) - 1.0)  # noqa: E731
    logits = draw().to(dtype).requires_grad_(requires_grad)
    ref_logits = draw().to(dtype).requires_grad_(requires_grad)
    logp, ref = torch.log_softmax(logits, dim=-1), torch.log_softmax(ref_logits, dim=-1)
    chosen, rejected = torch.cartesian_prod(torch.arange(6), torch.arange(6)).unbind(-1)
    return (logits, ref_logits), (logp[chosen], logp[rejected], ref[chosen], ref[rejected])
