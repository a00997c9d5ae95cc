"""Tests of `synthalign.worlds.policy`: the Policy container, its constructors and its validation."""

from __future__ import annotations

import math

import pytest
import torch

import synthalign as sa

DTYPE = torch.float64


def uniform(X, A):
    return torch.full((X, A), 1.0 / A, dtype=DTYPE)


def test_policy_constructors_and_accessors():
    probs = torch.tensor([[[0.2, 0.8], [0.5, 0.5]], [[1.0, 0.0], [0.3, 0.7]]], dtype=DTYPE)  # [2, 2, 2]
    policy = sa.Policy.from_probs(probs)
    assert policy.batch_shape == (2,) and policy.n_prompts == 2 and policy.n_responses == 2
    torch.testing.assert_close(policy.probs, probs)
    assert policy.logp[1, 0, 1].item() == -math.inf
    torch.testing.assert_close(policy[1].probs, probs[1])
    logits = torch.tensor([[0.0, math.log(4.0)]], dtype=DTYPE)  # softmax = (1/5, 4/5)
    torch.testing.assert_close(sa.Policy.from_logits(logits).probs, torch.tensor([[0.2, 0.8]], dtype=DTYPE))


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: sa.Policy(torch.zeros(2, 3, dtype=DTYPE)), "normalized"),
        (lambda: sa.Policy(torch.full((2, 3), float("nan"))), "NaN"),
        (lambda: sa.Policy(torch.zeros(3)), r"\[\.\.\., X, A\]"),
        (lambda: sa.Policy.from_probs(torch.ones(2, 3)), "probs must sum to 1"),
        (lambda: sa.Policy.from_probs(torch.tensor([[1.5, -0.5]])), "probs must be non-negative"),
        (lambda: sa.Policy.from_logits(torch.tensor([[math.inf, 0.0]])), r"\+inf"),
        (lambda: sa.Policy(torch.log(uniform(2, 3)), torch.ones(3, dtype=DTYPE) / 3), "prompt_dist has 3"),
        (lambda: sa.Policy(torch.log(uniform(2, 3)))[0, 0], "keep the"),
    ],
)
def test_policy_rejects_bad_inputs(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()
