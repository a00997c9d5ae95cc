"""Tests of `synthalign.testing.battery`: each check catches the broken objective with the defect it aims at."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _check_objectives import _failed, mean_over_pairs
from hypothesis import given, settings

import synthalign as sa
from synthalign.testing import check_objective, worlds

# register=False keeps the registry of the test process unchanged.


@sa.objective("naive_margin", register=False)
def naive_margin(logp_chosen, logp_rejected, *, gamma):
    # -inf - (-inf) = NaN on the cell (a, a) of a zero-probability response a, which mu can propose.
    return -F.logsigmoid(gamma * (logp_chosen - logp_rejected))


@sa.objective("batch_centred", register=False)
def batch_centred(logp_chosen, logp_rejected, *, gamma):
    # Centres the margins over the batch, as some implementations do: same shape, but couples the cells.
    margin = gamma * (logp_chosen - logp_rejected)
    return -F.logsigmoid(margin - margin.mean())


@sa.objective("naive_probability", register=False)
def naive_probability(logp_chosen, logp_rejected, *, gamma):
    # -ln[pi(a+)^g / (pi(a+)^g + pi(a-)^g)] through exp: 0/0 = NaN once both probabilities underflow.
    chosen, rejected = torch.exp(gamma * logp_chosen), torch.exp(gamma * logp_rejected)
    return -torch.log(chosen / (chosen + rejected))


class _LogSigmoidWrongGrad(torch.autograd.Function):
    """ln σ(x) with the derivative σ(x) instead of σ(−x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.logsigmoid(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)


@sa.objective("wrong_gradient", register=False)
def wrong_gradient(logp_chosen, logp_rejected, *, gamma):
    return -_LogSigmoidWrongGrad.apply(gamma * (logp_chosen - logp_rejected))


class _LogSigmoidOnceDifferentiable(torch.autograd.Function):
    """ln σ(x) with the right derivative, computed outside autograd: no second derivative."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.logsigmoid(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(-x.detach())


@sa.objective("no_second_derivative", register=False)
def no_second_derivative(logp_chosen, logp_rejected, *, gamma):
    return -_LogSigmoidOnceDifferentiable.apply(gamma * (logp_chosen - logp_rejected))


@sa.objective("order_dependent", register=False)
def order_dependent(logp_chosen, logp_rejected, *, gamma):
    # Weighs each pair by its position along the last axis.
    loss = -F.logsigmoid(gamma * (logp_chosen - logp_rejected))
    position = torch.arange(loss.shape[-1], dtype=loss.dtype) if loss.dim() else torch.zeros(())
    return loss * (1 + position)


@sa.objective("label_dependent_unlabelled", data="pairs", register=False)
def label_dependent_unlabelled(logp_chosen, logp_rejected, target_margin, *, gamma):
    # On unlabelled pairs the (chosen, rejected) slot is only the draw order, so this loss depends on it.
    return -F.logsigmoid(gamma * (logp_chosen - logp_rejected))


def _stateful_objective():
    calls = []

    @sa.objective("running_offset", register=False)
    def running_offset(logp_chosen, logp_rejected, *, gamma):
        # Hidden state: every call adds one to an offset (a running baseline updated on each use).
        calls.append(1)
        return -F.logsigmoid(gamma * (logp_chosen - logp_rejected)) + float(len(calls))

    return running_offset


@pytest.mark.parametrize("broken", [mean_over_pairs, batch_centred], ids=lambda o: o.name)
def test_non_elementwise_losses_fail(broken):
    report = check_objective(broken, checks=("elementwise", "weight_consistency", "finite_extreme"))
    assert {"elementwise", "weight_consistency"} <= _failed(report)
    assert report["finite_extreme"].passed


def test_nan_at_extreme_inputs_fails():
    report = check_objective(naive_probability, checks=("finite_extreme", "gradcheck", "elementwise"))
    assert _failed(report) == {"finite_extreme"}
    # At moderate inputs the naive formula is fine: the extreme check is what finds it.


def test_untied_zero_probabilities_fail():
    report = check_objective(naive_margin, checks=("zero_probability", "finite_extreme", "gradcheck"))
    assert _failed(report) == {"zero_probability"}
    assert "loss is NaN" in report["zero_probability"].detail


def test_wrong_gradient_fails_gradcheck():
    report = check_objective(wrong_gradient, checks=("gradcheck", "finite_extreme", "weight_consistency"))
    assert _failed(report) == {"gradcheck"}
    assert "GradcheckError" in report["gradcheck"].detail


def test_missing_second_derivative_fails_gradgradcheck():
    report = check_objective(no_second_derivative, checks=("gradcheck", "gradgradcheck"))
    assert _failed(report) == {"gradgradcheck"}


def test_position_dependent_loss_fails_order_invariance():
    report = check_objective(order_dependent, checks=("pair_order_invariance",))
    assert _failed(report) == {"pair_order_invariance"}


def test_unlabelled_loss_depending_on_draw_order_fails_swap_symmetry():
    report = check_objective(label_dependent_unlabelled, checks=("pair_swap_symmetry",))
    assert _failed(report) == {"pair_swap_symmetry"}
    assert report["pair_swap_symmetry"].values["form"] == "loss"


def test_likelihood_form_rejects_a_non_likelihood():
    # IPO's squared loss is no negative log-likelihood: declaring the form must fail.
    report = check_objective("ipo", swap_symmetry="likelihood", checks=("pair_swap_symmetry",))
    assert _failed(report) == {"pair_swap_symmetry"}


def test_hidden_state_fails_exact_vs_sampled():
    report = check_objective(_stateful_objective(), checks=("exact_vs_sampled",))
    assert _failed(report) == {"exact_vs_sampled"}


@settings(max_examples=15, deadline=None)
@given(worlds(zero_probability=True))
def test_weight_consistency_holds_on_random_worlds(world):
    # Counts, explicit pairs and the population law agree for every built-in pair objective, on worlds
    # with gamma from 1e-3 to 1e3 and zero-probability responses.
    for name in ("pmle", "dpo", "distillation", "rebel"):
        report = check_objective(name, world=world, checks=("weight_consistency",))
        assert report.passed, report["weight_consistency"].detail
