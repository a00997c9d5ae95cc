"""Tests of `synthalign.objectives._pairwise`: the f-divergence scores and the validation of the pair inputs."""

from __future__ import annotations

import math

import pytest
import torch
from _zoo_pairs import LN, _naive_log_sigmoid, _random_pairs, t

from synthalign.objectives import kl_estimators, zoo


def _reference_alpha_dpo(lc, lr, rc, rr, *, gamma, divergence_alpha):
    f_prime = lambda u: (1 - u ** (-divergence_alpha)) / divergence_alpha  # noqa: E731
    return -_naive_log_sigmoid(gamma * (f_prime(torch.exp(lc - rc)) - f_prime(torch.exp(lr - rr)))).mean()


@pytest.mark.parametrize("alpha", [0.3, 0.5, 2.0])
def test_alpha_divergence_matches_reference(alpha):
    inputs = _random_pairs(5, seed=4)
    ours = zoo.f_dpo_loss(*inputs, gamma=0.7, divergence="alpha_divergence", divergence_alpha=alpha)
    torch.testing.assert_close(ours, _reference_alpha_dpo(*inputs, gamma=0.7, divergence_alpha=alpha))


@pytest.mark.parametrize("divergence", zoo.DIVERGENCES)
def test_gradcheck_divergences(divergence):
    inputs = _random_pairs(7, seed=2, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *x: zoo.f_ipo_loss(*x, gamma=0.5, divergence=divergence, divergence_alpha=0.3), inputs
    )


def test_rejects_bad_tensors():
    lc, lr, rc, rr = _random_pairs()
    with pytest.raises(ValueError, match="shapes do not broadcast"):
        zoo.f_dpo_loss(lc, lr[:3], rc, rr, gamma=1.0)
    with pytest.raises(ValueError, match="logp_chosen contains NaN"):
        zoo.f_dpo_loss(torch.full_like(lc, math.nan), lr, rc, rr, gamma=1.0)
    with pytest.raises(ValueError, match="kind"):
        kl_estimators.kl_estimator(lc, rc, "k4")
    with pytest.raises(ValueError, match="normalised"):
        kl_estimators.exact_kl_estimator_expectation(t(-1.0, -1.0), t(LN(0.5), LN(0.5)), "k1")
