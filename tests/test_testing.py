"""Tests for synthalign.testing: the strategies generate valid inputs, and the checks catch broken objectives.

Each deliberately broken objective below has one known defect; the test asserts that the check aimed at
that defect fails (and, where the defect cannot affect it, that an unrelated check still passes, so the
failure is the check's doing and not a crash of the battery).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import synthalign as sa
from synthalign.testing import (
    CHECKS,
    CheckReport,
    check_objective,
    log_probs,
    parametrize_with_checks,
    policies,
    preference_datasets,
    worlds,
)

SETTINGS = settings(max_examples=40, deadline=None)


# ------------------------------------------------------------------ objectives, correct and broken

# register=False keeps the registry of the test process unchanged.


def margin(logp_a, logp_b):
    """ln[pi(a)/pi(b)], with two zero-probability responses read as a tie (synthalign's convention)."""
    return torch.where(torch.isinf(logp_a) & (logp_a == logp_b), torch.zeros_like(logp_a), logp_a - logp_b)


@sa.objective("user_pmle", register=False)
def user_pmle(logp_chosen, logp_rejected, *, gamma):
    return -F.logsigmoid(gamma * margin(logp_chosen, logp_rejected))


@sa.objective("user_dpo", register=False)
def user_dpo(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *, gamma):
    return -F.logsigmoid(gamma * (margin(logp_chosen, logp_rejected) - margin(ref_logp_chosen, ref_logp_rejected)))


@sa.objective("naive_margin", register=False)
def naive_margin(logp_chosen, logp_rejected, *, gamma):
    # -inf - (-inf) = NaN on the cell (a, a) of a zero-probability response a, which mu can propose.
    return -F.logsigmoid(gamma * (logp_chosen - logp_rejected))


@sa.objective("sign_flipped_dpo", register=False)
def sign_flipped_dpo(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *, gamma):
    return -F.logsigmoid(-gamma * (margin(logp_chosen, logp_rejected) - margin(ref_logp_chosen, ref_logp_rejected)))


@sa.objective("mean_over_pairs", register=False)
def mean_over_pairs(logp_chosen, logp_rejected, *, gamma):
    # Reduces over the cells: the framework needs one loss per cell.
    return -F.logsigmoid(gamma * (logp_chosen - logp_rejected)).mean()


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


def _dpo_minimizer(reward, world, beta, params):
    return sa.Policy(torch.log_softmax(world.reference.logp + world.target.logp, dim=-1))


# ------------------------------------------------------------------ the checks on correct objectives


def test_user_objective_passes_every_applicable_check():
    report = check_objective(user_pmle, consistent=True, swap_symmetry="likelihood", raise_on_failure=True)
    assert isinstance(report, CheckReport)
    assert [r.name for r in report.results] == list(CHECKS)
    assert report.passed and not report.failures
    assert report["closed_form"].passed is None  # no closed form declared
    assert report["population_minimizer"].values["forward_kl"] < 1e-8


def test_declared_minimizer_is_checked():
    report = check_objective(
        user_dpo, consistent=False, expected_minimizer=_dpo_minimizer, checks="population_minimizer"
    )
    result = report["population_minimizer"]
    assert result.passed, result.detail
    assert result.values["forward_kl_to_expected"] < 1e-8
    # The same fit against pi* instead: DPO is not consistent on a generic world.
    assert not check_objective(user_dpo, consistent=True, checks="population_minimizer").passed


def test_user_objective_gets_losses_fit_and_rate_sweep():
    from synthalign.sweeps import rate_sweep

    world = sa.World.random(3, 4, seed=1)
    pmle = sa.get_objective("pmle")
    data = world.sample_preferences(64, 3, seed=0)
    policy = sa.Policy(world.reference.logp)
    torch.testing.assert_close(
        sa.population_loss(user_pmle, world, policy), sa.population_loss(pmle, world, policy), rtol=1e-13, atol=0
    )
    torch.testing.assert_close(
        sa.empirical_loss(user_pmle, data, policy), sa.empirical_loss(pmle, data, policy), rtol=1e-13, atol=0
    )
    ours, builtin = sa.fit(user_pmle, data, ridge=1e-3), sa.fit(pmle, data, ridge=1e-3)
    torch.testing.assert_close(ours.policy.logp, builtin.policy.logp, rtol=0, atol=1e-8)
    sweep = rate_sweep(world, user_pmle, ns=(2**8, 2**14), replicates=20, seed=0)
    # PMLE is consistent: the forward KL falls as O(1/n) (Thm 4), a factor ~64 here; a fall by 8x is
    # far inside the replicate noise of 20 datasets.
    assert sweep.median[1] < sweep.median[0] / 8


# ------------------------------------------------------------------ the checks catch broken objectives


def _failed(report: CheckReport) -> set[str]:
    return {r.name for r in report.failures}


def test_sign_flip_fails_the_minimizer_checks():
    report = check_objective(
        sign_flipped_dpo,
        consistent=False,
        expected_minimizer=_dpo_minimizer,
        swap_symmetry="likelihood",
        checks=("population_minimizer", "pair_swap_symmetry", "gradcheck"),
    )
    # Flipping the sign keeps a valid likelihood and smooth derivatives; only the minimizer gives it away.
    assert _failed(report) == {"population_minimizer"}
    assert "not the declared minimizer" in report["population_minimizer"].detail


def test_sign_flipped_pmle_is_not_consistent():
    @sa.objective("sign_flipped_pmle", register=False)
    def sign_flipped_pmle(logp_chosen, logp_rejected, *, gamma):
        return -F.logsigmoid(-gamma * (logp_chosen - logp_rejected))

    report = check_objective(sign_flipped_pmle, consistent=True, checks="population_minimizer")
    assert _failed(report) == {"population_minimizer"}


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


def test_wrong_closed_form_fails():
    def uniform(reward, world, beta, params):
        return sa.Policy(torch.full_like(world.target.logp, -math.log(world.n_responses)))

    @sa.objective("rkl_wrong_closed_form", data="prompts", closed_form=uniform, register=False)
    def rkl_wrong_closed_form(logp, reward, *, gamma):
        return sa.rkl_loss(logp, reward, gamma=gamma, reduction="none")

    report = check_objective(rkl_wrong_closed_form, checks=("closed_form",))
    assert _failed(report) == {"closed_form"}


def test_an_objective_that_raises_fails_instead_of_crashing_the_battery():
    @sa.objective("raises", register=False)
    def raises(logp_chosen, logp_rejected, *, gamma):
        raise RuntimeError("boom")

    report = check_objective(raises)
    not_applicable = {r.name for r in report.results if r.passed is None}
    assert _failed(report) == set(CHECKS) - not_applicable
    assert "RuntimeError: boom" in report["gradcheck"].detail


def test_raise_on_failure_names_the_failed_checks():
    with pytest.raises(AssertionError, match=r"'mean_over_pairs' failed .*\n  - elementwise: "):
        check_objective(mean_over_pairs, checks=("finite_extreme", "elementwise"), raise_on_failure=True)


def test_report_text_lists_every_check():
    report = check_objective(mean_over_pairs, checks=("finite_extreme", "elementwise", "closed_form"))
    text = str(report)
    assert "1 FAILED" in text and "not applicable" in text and "passed" in text
    with pytest.raises(KeyError, match="no check named"):
        report["gradcheck"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta": -1.0}, "beta"),
        ({"swap_symmetry": "both"}, "swap_symmetry"),
        ({"consistent": 1}, "consistent"),
        ({"checks": ("gradcheck", "nonsense")}, "checks"),
        ({"params": {"tau": 0.1}}, "hyper-parameter"),
        ({"seed": -1}, "seed"),
        ({"expected_minimizer": 3}, "expected_minimizer"),
    ],
)
def test_bad_options_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_objective("pmle", **kwargs)


# ------------------------------------------------------------------ parametrize_with_checks


def _items(decorator):
    (argnames, params), _ = decorator.args, decorator.kwargs
    assert argnames == "objective, check"
    return params


def test_parametrize_makes_one_item_per_objective_and_check():
    params = _items(parametrize_with_checks(["pmle", ("rlhf", {"beta": 1.0})], checks=("gradcheck", "closed_form")))
    assert [p.id for p in params] == ["pmle-gradcheck", "pmle-closed_form", "rlhf-gradcheck", "rlhf-closed_form"]
    skipped = {p.id for p in params if any(m.name == "skip" for m in p.marks)}
    assert skipped == {"pmle-closed_form"}  # pmle has no closed form
    assert params[3].values[1].options.beta == 1.0


def test_parametrized_checks_raise_on_broken_objectives():
    params = _items(parametrize_with_checks([mean_over_pairs], checks=("elementwise", "finite_extreme")))
    failing, passing = params
    with pytest.raises(AssertionError, match="mean_over_pairs: check elementwise failed"):
        failing.values[1](failing.values[0])
    assert passing.values[1](passing.values[0]).passed


def test_parametrize_marks_expected_failures_strict():
    params = _items(
        parametrize_with_checks(
            [mean_over_pairs], checks=("elementwise",), expected_failures={("mean_over_pairs", "elementwise"): "why"}
        )
    )
    (mark,) = params[0].marks
    assert mark.name == "xfail" and mark.kwargs["strict"] and mark.kwargs["reason"] == "why"
    with pytest.raises(ValueError, match="expected_failures"):
        parametrize_with_checks(["pmle"], checks=("elementwise",), expected_failures={("dpo", "elementwise"): "x"})


def test_not_applicable_check_skips_when_called():
    params = _items(parametrize_with_checks(["pmle"], checks=("closed_form",)))
    with pytest.raises(pytest.skip.Exception, match="not applicable"):
        params[0].values[1](params[0].values[0])


# ------------------------------------------------------------------ strategies


@SETTINGS
@given(worlds())
def test_worlds_are_valid_and_dialled(world):
    assert 1 <= world.n_prompts <= 4 and 2 <= world.n_responses <= 5
    assert 1e-3 <= world.gamma <= 1e3
    for policy in (world.target, world.reference, world.behavior):
        assert torch.isfinite(policy.logp).all()
    assert world.dtype == torch.float64


@SETTINGS
@given(worlds(n_prompts=3, n_responses=4, gamma=(0.1, 10.0), zero_probability=True))
def test_zero_probability_worlds_keep_every_row_alive(world):
    assert world.n_prompts == 3 and world.n_responses == 4 and 0.1 <= world.gamma <= 10.0
    for policy in (world.target, world.behavior):
        assert (policy.logp > -math.inf).any(dim=-1).all()
    assert torch.isfinite(world.reference.logp).all()
    assert world.prompt_dist.sum() == pytest.approx(1.0) and (world.prompt_dist > 0).any()
    # The population law is a probability distribution whatever the zeros.
    assert float(world.population_preferences().counts.sum()) == pytest.approx(1.0, abs=1e-12)


def test_strategies_reach_the_corners():
    # The property tests above only help if the corners are drawn: both ends of the gamma range,
    # zero-probability responses and zero-weight prompts.
    gammas, zero_responses, zero_prompts = set(), [], []

    @settings(max_examples=100, deadline=None, database=None, derandomize=True)
    @given(worlds(n_prompts=2, n_responses=3, zero_probability=True))
    def collect(world):
        gammas.add(world.gamma)
        zero_responses.append(bool((world.target.logp == -math.inf).any()))
        zero_prompts.append(bool((world.prompt_dist == 0).any()))

    collect()
    assert 1e-3 in gammas and 1e3 in gammas
    assert any(zero_responses) and any(zero_prompts)


@SETTINGS
@given(log_probs((2, 3, 5), neg_inf=True))
def test_log_probs_are_normalized_and_extreme_but_valid(logp):
    assert logp.shape == (2, 3, 5) and logp.dtype == torch.float64
    assert not torch.isnan(logp).any() and (logp < math.inf).all()
    assert torch.allclose(torch.logsumexp(logp, dim=-1), torch.zeros(2, 3, dtype=torch.float64), atol=1e-12)
    # log_softmax of logits in ±1e4: every finite entry is at least −2e4 − ln 5.
    assert (logp[torch.isfinite(logp)] >= -2e4 - math.log(5)).all()
    sa.Policy(logp)  # accepted by the library


@SETTINGS
@given(st.data())
def test_log_probs_without_neg_inf_are_finite(data):
    logp = data.draw(log_probs((4, 3)))
    assert torch.isfinite(logp).all()


@SETTINGS
@given(policies(worlds(n_prompts=2, n_responses=3), batch_shape=(4,)))
def test_policies_carry_the_world_and_batch(policy):
    assert policy.logp.shape == (4, 2, 3) and policy.prompt_dist is not None


@SETTINGS
@given(st.data())
def test_preference_datasets_are_counts_of_the_world(data):
    world = data.draw(worlds(zero_probability=True))
    dataset = data.draw(preference_datasets(world, n=(1, 64), replicates=(1, 3)))
    assert isinstance(dataset, sa.PreferenceData) and dataset.world is world
    counts = dataset.counts
    assert (counts >= 0).all() and torch.equal(counts, counts.round())
    assert (counts.sum(dim=(1, 2, 3)) == dataset.n_pairs).all() and 1 <= dataset.n_pairs <= 64
    impossible = world.population_preferences().counts[0] == 0
    assert (counts[:, impossible] == 0).all()
    unlabelled = data.draw(preference_datasets(world, labelled=False, n=8, replicates=2))
    assert isinstance(unlabelled, sa.PairData) and unlabelled.replicates == 2


@settings(max_examples=15, deadline=None)
@given(worlds(zero_probability=True))
def test_weight_consistency_holds_on_random_worlds(world):
    # Counts, explicit pairs and the population law agree for every built-in pair objective, on worlds
    # with gamma from 1e-3 to 1e3 and zero-probability responses.
    for name in ("pmle", "dpo", "distillation", "rebel"):
        report = check_objective(name, world=world, checks=("weight_consistency",))
        assert report.passed, report["weight_consistency"].detail


@pytest.mark.parametrize(
    "strategy, match",
    [
        (lambda: worlds(n_prompts=(3, 1)), "n_prompts"),
        (lambda: worlds(n_responses=1), "n_responses"),
        (lambda: worlds(gamma=(0.0, 1.0)), "gamma"),
        (lambda: log_probs((3, 1)), "shape"),
        (lambda: preference_datasets("world"), "world"),
    ],
)
def test_strategy_arguments_are_validated(strategy, match):
    with pytest.raises(ValueError, match=match):
        strategy()
