"""Tests of `synthalign.objectives.kl_estimators`: the k1/k2/k3 identities of spec §6 item 14 on a finite space."""

from __future__ import annotations

import math

import pytest
import torch
from _zoo_pairs import F64, LN, _extreme_pairs, _random_pairs, t

from synthalign.objectives import kl_estimators


def test_kl_estimators_by_hand():
    # π = (½, ½), π0 = (¼, ¾): KL(π‖π0) = ½ ln 2 + ½ ln(2/3) = 0.143841 = E[k1] = E[k3]
    # E[k2] = ½·(½ (ln ½)² + ½ (ln 1.5)²) = 0.161214
    logp, ref = t(LN(0.5), LN(0.5)), t(LN(0.25), LN(0.75))
    kl = 0.143841036
    assert kl_estimators.exact_kl_estimator_expectation(logp, ref, "k1").item() == pytest.approx(kl, abs=1e-9)
    assert kl_estimators.exact_kl_estimator_expectation(logp, ref, "k3").item() == pytest.approx(kl, abs=1e-9)
    assert kl_estimators.exact_kl_estimator_expectation(logp, ref, "k2").item() == pytest.approx(0.161213742, abs=1e-9)
    # per sample at a = 0: r = ½ → k1 = ln 2, k2 = ½(ln 2)², k3 = ½ − 1 + ln 2 = 0.193147
    assert kl_estimators.kl_estimator(logp, ref, "k3")[0].item() == pytest.approx(0.193147181, abs=1e-9)


@pytest.mark.parametrize("kind", kl_estimators.KL_ESTIMATOR_KINDS)
def test_gradcheck_kl_estimators(kind):
    logp, _, ref, _ = _random_pairs(7, seed=5, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: kl_estimators.kl_estimator(a, b, kind), (logp, ref))
    logits = torch.randn(2, 5, dtype=F64, requires_grad=True)
    ref_logp = torch.log_softmax(torch.randn(2, 5, dtype=F64), dim=-1)
    # With detached weights the gradient is E[∇k], not the derivative of the value, by design (tested
    # in test_kl_estimator_expectations); gradcheck applies to the attached form.
    assert torch.autograd.gradcheck(
        lambda x: kl_estimators.exact_kl_estimator_expectation(
            torch.log_softmax(x, dim=-1), ref_logp, kind, detach_weights=False
        ),
        (logits,),
    )


@pytest.mark.parametrize("kind", kl_estimators.KL_ESTIMATOR_KINDS)
def test_exact_kl_expectation_is_finite_at_extreme_logits(kind):
    for seed in (0, 1):
        (logits, ref_logits), _ = _extreme_pairs(F64, seed)
        value = kl_estimators.exact_kl_estimator_expectation(
            torch.log_softmax(logits, -1), torch.log_softmax(ref_logits, -1), kind
        )
        assert torch.isfinite(value)
        assert all(torch.isfinite(g).all() for g in torch.autograd.grad(value, (logits, ref_logits)))


def _policies(seed=0, shape=(3, 5)):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=generator, dtype=F64).requires_grad_(True)
    ref_logp = torch.log_softmax(torch.randn(shape, generator=generator, dtype=F64), dim=-1)
    return logits, ref_logp


def _exact_kls(logits, ref_logp):
    logp = torch.log_softmax(logits, dim=-1)
    forward = (logp.exp() * (logp - ref_logp)).sum(-1)  # KL(π ‖ π0)
    reverse = (ref_logp.exp() * (ref_logp - logp)).sum(-1)  # KL(π0 ‖ π)
    return logp, forward, reverse


def _grad(value, logits):
    return torch.autograd.grad(value.sum(), logits, retain_graph=True)[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_estimator_expectations(seed):
    logits, ref_logp = _policies(seed)
    logp, forward, reverse = _exact_kls(logits, ref_logp)
    expectation = {
        kind: kl_estimators.exact_kl_estimator_expectation(logp, ref_logp, kind)
        for kind in kl_estimators.KL_ESTIMATOR_KINDS
    }
    # E[k1] = E[k3] = KL(π ‖ π0)
    torch.testing.assert_close(expectation["k1"], forward)
    torch.testing.assert_close(expectation["k3"], forward)
    # E[∇k1] = 0, E[∇k2] = ∇KL(π ‖ π0), E[∇k3] = ∇KL(π0 ‖ π)
    torch.testing.assert_close(_grad(expectation["k1"], logits), torch.zeros_like(logits))
    torch.testing.assert_close(_grad(expectation["k2"], logits), _grad(forward, logits))
    torch.testing.assert_close(_grad(expectation["k3"], logits), _grad(reverse, logits))
    # E[∇k2] ≠ ∇E[k2]: the identity is about the sample gradient, not the gradient of the expectation.
    k2_full = kl_estimators.exact_kl_estimator_expectation(logp, ref_logp, "k2", detach_weights=False)
    assert not torch.allclose(_grad(k2_full, logits), _grad(forward, logits))
    # With the weights attached, ∇E[k1] = ∇E[k3] = ∇KL(π ‖ π0).
    for kind in ("k1", "k3"):
        full = kl_estimators.exact_kl_estimator_expectation(logp, ref_logp, kind, detach_weights=False)
        torch.testing.assert_close(_grad(full, logits), _grad(forward, logits))


def test_exact_expectation_is_the_weighted_sum_of_per_sample_estimators():
    logits, ref_logp = _policies(3)
    logp = torch.log_softmax(logits, dim=-1)
    for kind in kl_estimators.KL_ESTIMATOR_KINDS:
        per_sample = kl_estimators.kl_estimator(logp, ref_logp, kind)
        by_hand = (logp.detach().exp() * per_sample).sum(-1)
        exact = kl_estimators.exact_kl_estimator_expectation(logp, ref_logp, kind)
        torch.testing.assert_close(exact, by_hand)
        torch.testing.assert_close(_grad(exact, logits), _grad(by_hand, logits))


def test_exact_expectation_on_a_partial_support():
    # π(a2) = 0: a2 is never sampled.  E[k1] = KL(π ‖ π0); E[k3] = KL(π ‖ π0) − π0(a2) since E_π[r] = π0(supp π).
    logp = t(LN(0.5), LN(0.5), -math.inf)
    ref = t(LN(0.25), LN(0.25), LN(0.5))
    kl = 0.5 * LN(2.0) * 2  # Σ π ln(π/π0) = ln 2
    assert kl_estimators.exact_kl_estimator_expectation(logp, ref, "k1").item() == pytest.approx(kl)
    assert kl_estimators.exact_kl_estimator_expectation(logp, ref, "k3").item() == pytest.approx(kl - 0.5)


def test_exact_expectation_keeps_the_mass_of_underflowing_responses():
    # π(a1) = e^−2e4 underflows to 0, but π(a1)·r(a1) = π0(a1) = ½ must still count: E[k3] ≈ KL.
    logp = t(0.0, -2e4)
    ref = t(LN(0.5), LN(0.5))
    assert kl_estimators.exact_kl_estimator_expectation(logp, ref, "k3").item() == pytest.approx(LN(2.0))
    assert kl_estimators.exact_kl_estimator_expectation(logp, ref, "k1").item() == pytest.approx(LN(2.0))
