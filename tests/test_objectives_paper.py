"""Tests of `synthalign.objectives.paper`: the paper's pure losses (spec §2) and IPO.

For every loss: a value derived by hand (arithmetic in the comment), a slow and
obviously-correct reference (a Python loop over pairs or responses, naive
formulas on 0-d tensors) compared in value and gradient, `gradcheck` in
float64, bad inputs, and extreme but valid inputs.
"""

from __future__ import annotations

import math

import pytest
import torch

import synthalign as sa

DTYPE = torch.float64
INF = float("inf")


def t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=DTYPE)


# --------------------------------------------------------------------------- hand-derived values


def test_reward_model_loss_hand_value():
    # R(a+) − R(a−) = 1 − 0 = 1 → −ln σ(1) = ln(1 + e^{−1}) = ln(1.367879) = 0.313262
    loss = sa.reward_model_loss(t(1.0), t(0.0))
    assert loss.item() == pytest.approx(0.3132616875182229, rel=1e-12)


def test_pmle_loss_hand_value():
    # margin = 0.5·ln(0.6/0.2) = 0.5·ln 3 = 0.549306; e^{−margin} = 3^{−1/2} = 0.577350
    # loss = ln(1 + 0.577350) = 0.455746
    loss = sa.pmle_loss(t(math.log(0.6)), t(math.log(0.2)), gamma=0.5)
    assert loss.item() == pytest.approx(math.log1p(3**-0.5), rel=1e-12)
    assert loss.item() == pytest.approx(0.45574639440832615, rel=1e-12)


def test_distillation_loss_hand_value():
    # p̃ = σ(ln 4) = 4/5 = 0.8; p_π = σ(0.5·ln 3) = √3/(√3 + 1) = 0.633975
    # KL = 0.8·ln(0.8/0.633975) + 0.2·ln(0.2/0.366025) = 0.8·0.232603 + 0.2·(−0.604385) = 0.065205
    loss = sa.distillation_loss(t(math.log(0.6)), t(math.log(0.2)), t(math.log(4.0)), gamma=0.5)
    p_pi = math.sqrt(3) / (math.sqrt(3) + 1)
    assert loss.item() == pytest.approx(0.8 * math.log(0.8 / p_pi) + 0.2 * math.log(0.2 / (1 - p_pi)), rel=1e-12)
    assert loss.item() == pytest.approx(0.06520519973694927, rel=1e-12)


def test_dpo_loss_hand_value():
    # h = ln(0.6/0.2) − ln(0.2/0.4) = ln 3 + ln 2 = ln 6; margin = 0.5·ln 6 = 0.895880
    # e^{−margin} = 6^{−1/2} = 0.408248 → loss = ln(1.408248) = 0.342347
    loss = sa.dpo_loss(t(math.log(0.6)), t(math.log(0.2)), t(math.log(0.2)), t(math.log(0.4)), gamma=0.5)
    assert loss.item() == pytest.approx(math.log1p(6**-0.5), rel=1e-12)


def test_ipo_loss_hand_value():
    # h = ln 6 = 1.791759 (as for DPO); 1/(2τ) = 1/(2·0.25) = 2 → (1.791759 − 2)² = 0.043364
    loss = sa.ipo_loss(t(math.log(0.6)), t(math.log(0.2)), t(math.log(0.2)), t(math.log(0.4)), tau=0.25)
    assert loss.item() == pytest.approx((math.log(6) - 2) ** 2, rel=1e-12)
    assert loss.item() == pytest.approx(0.04336411865618139, rel=1e-10)


def test_rebel_loss_hand_value():
    # h = ln 6 = 1.791759; η(R+ − R−) = 0.5·(3 − 1) = 1 → (1.791759 − 1)² = 0.626883
    loss = sa.rebel_loss(
        t(math.log(0.6)), t(math.log(0.2)), t(math.log(0.2)), t(math.log(0.4)), t(3.0), t(1.0), eta=0.5
    )
    assert loss.item() == pytest.approx((math.log(6) - 1) ** 2, rel=1e-12)


def test_kl_penalty_hand_value():
    # KL((½, ½) ‖ (¼, ¾)) = ½ ln(½/¼) + ½ ln(½/¾) = ½ ln 2 + ½ ln(2/3) = ½ ln(4/3) = 0.143841
    loss = sa.kl_penalty(t(math.log(0.5), math.log(0.5)), t(math.log(0.25), math.log(0.75)))
    assert loss.item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-12)


def test_rkl_loss_hand_value():
    # π = (½, ½), R = (1, 0), γ = 0.5, β = 0.2, π0 = (¼, ¾):
    # −E_π R = −0.5; γ H(π) = 0.5·ln 2 = 0.346574; β KL = 0.2·½ ln(4/3) = 0.028768
    # loss = −0.5 − 0.346574 + 0.028768 = −0.817805
    logp, reward, ref = t(math.log(0.5), math.log(0.5)), t(1.0, 0.0), t(math.log(0.25), math.log(0.75))
    loss = sa.rkl_loss(logp, reward, gamma=0.5, beta=0.2, ref_logp=ref)
    assert loss.item() == pytest.approx(-0.5 - 0.5 * math.log(2) + 0.2 * 0.5 * math.log(4 / 3), rel=1e-12)
    assert loss.item() == pytest.approx(-0.8178053830347947, rel=1e-12)


def test_rlhf_loss_hand_value():
    # Same inputs as RKL without the entropy term: −0.5 + 0.028768 = −0.471232
    logp, reward, ref = t(math.log(0.5), math.log(0.5)), t(1.0, 0.0), t(math.log(0.25), math.log(0.75))
    loss = sa.rlhf_loss(logp, reward, beta=0.2, ref_logp=ref)
    assert loss.item() == pytest.approx(-0.5 + 0.2 * 0.5 * math.log(4 / 3), rel=1e-12)


def test_weighted_mean_sum_and_none_reductions():
    # Two pairs with margins γ·ln 3 and γ·ln(1/3) at γ = 1: losses ln(1 + 1/3) = 0.287682 and ln 4 = 1.386294.
    # Weights (3, 1): mean = (3·0.287682 + 1.386294)/4 = 0.562335; sum = 2.249340; none = (0.863046, 1.386294).
    chosen, rejected = t(math.log(0.6), math.log(0.2)), t(math.log(0.2), math.log(0.6))
    losses = (math.log(4 / 3), math.log(4.0))
    weight = t(3.0, 1.0)
    mean = sa.pmle_loss(chosen, rejected, gamma=1.0, weight=weight)
    total = sa.pmle_loss(chosen, rejected, gamma=1.0, weight=weight, reduction="sum")
    each = sa.pmle_loss(chosen, rejected, gamma=1.0, weight=weight, reduction="none")
    assert mean.item() == pytest.approx((3 * losses[0] + losses[1]) / 4, rel=1e-12)
    assert total.item() == pytest.approx(3 * losses[0] + losses[1], rel=1e-12)
    torch.testing.assert_close(each, t(3 * losses[0], losses[1]), rtol=1e-12, atol=0)
    # Without weights the mean is over pairs: (0.287682 + 1.386294)/2.
    assert sa.pmle_loss(chosen, rejected, gamma=1.0).item() == pytest.approx(sum(losses) / 2, rel=1e-12)


def test_prompt_weight_averages_over_prompts():
    # Two prompts with KL 0 and ½ ln(4/3); prompt weights (1, 3) → mean = 3·0.143841/4 = 0.107881.
    logp = t(math.log(0.5), math.log(0.5)).expand(2, 2)
    ref = torch.stack([logp[0], t(math.log(0.25), math.log(0.75))])
    loss = sa.kl_penalty(logp, ref, prompt_weight=t(1.0, 3.0))
    assert loss.item() == pytest.approx(0.75 * 0.5 * math.log(4 / 3), rel=1e-12)


# --------------------------------------------------------------------------- slow references


def _sigmoid(z):
    return 1.0 / (1.0 + torch.exp(-z))


def reference_pair_loss(name, inputs, params, weight):
    """Loops over pairs, one naive formula per objective, weighted mean Σ w ℓ / Σ w."""
    n = weight.shape[0]
    total, weight_sum = 0.0, 0.0
    for i in range(n):
        row = {key: value[i] for key, value in inputs.items()}
        if name == "reward_model":
            value = -torch.log(_sigmoid(row["reward_chosen"] - row["reward_rejected"]))
        elif name == "pmle":
            value = -torch.log(_sigmoid(params["gamma"] * (row["logp_chosen"] - row["logp_rejected"])))
        elif name == "distillation":
            p_target = _sigmoid(row["target_margin"])
            p_model = _sigmoid(params["gamma"] * (row["logp_a"] - row["logp_b"]))
            value = p_target * torch.log(p_target / p_model) + (1 - p_target) * torch.log(
                (1 - p_target) / (1 - p_model)
            )
        else:
            h = (row["logp_chosen"] - row["logp_rejected"]) - (row["ref_logp_chosen"] - row["ref_logp_rejected"])
            if name == "dpo":
                value = -torch.log(_sigmoid(params["gamma"] * h))
            elif name == "ipo":
                value = (h - 1.0 / (2.0 * params["tau"])) ** 2
            elif name == "rebel":
                value = (h - params["eta"] * (row["reward_chosen"] - row["reward_rejected"])) ** 2
            else:
                raise AssertionError(name)
        total = total + weight[i] * value
        weight_sum = weight_sum + weight[i]
    return total / weight_sum


def reference_prompt_loss(name, logp, reward, ref_logp, params, prompt_weight):
    """Loops over prompts and responses: Σ_x w_x [−Σ_a p R − γ H + β KL] / Σ_x w_x."""
    total, weight_sum = 0.0, 0.0
    for x in range(logp.shape[0]):
        expected, entropy, kl = 0.0, 0.0, 0.0
        for a in range(logp.shape[1]):
            p = torch.exp(logp[x, a])
            expected = expected + p * reward[x, a]
            entropy = entropy - p * logp[x, a]
            kl = kl + p * (logp[x, a] - ref_logp[x, a])
        if name == "rkl":
            value = -expected - params["gamma"] * entropy + params["beta"] * kl
        elif name == "rlhf":
            value = -expected + params["beta"] * kl
        elif name == "kl_penalty":
            value = kl
        else:
            raise AssertionError(name)
        total = total + prompt_weight[x] * value
        weight_sum = weight_sum + prompt_weight[x]
    return total / weight_sum


PAIR_CASES = {
    "reward_model": (("reward_chosen", "reward_rejected"), {}),
    "pmle": (("logp_chosen", "logp_rejected"), {"gamma": 0.7}),
    "distillation": (("logp_a", "logp_b", "target_margin"), {"gamma": 0.7}),
    "dpo": (("logp_chosen", "logp_rejected", "ref_logp_chosen", "ref_logp_rejected"), {"gamma": 0.7}),
    "ipo": (("logp_chosen", "logp_rejected", "ref_logp_chosen", "ref_logp_rejected"), {"tau": 0.3}),
    "rebel": (
        ("logp_chosen", "logp_rejected", "ref_logp_chosen", "ref_logp_rejected", "reward_chosen", "reward_rejected"),
        {"eta": 0.8},
    ),
}

PAIR_FUNCTIONS = {
    "reward_model": sa.reward_model_loss,
    "pmle": sa.pmle_loss,
    "distillation": sa.distillation_loss,
    "dpo": sa.dpo_loss,
    "ipo": sa.ipo_loss,
    "rebel": sa.rebel_loss,
}


def _pair_inputs(names, n=7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = {}
    for name in names:
        values = torch.randn(n, generator=generator, dtype=DTYPE)
        # log-probabilities are negative; rewards and margins of either sign
        inputs[name] = -values.abs() - 0.1 if "logp" in name else 2.0 * values
    weight = torch.randint(1, 6, (n,), generator=generator).to(DTYPE)
    return inputs, weight


def _call_pair(name, inputs, params, weight):
    names = PAIR_CASES[name][0]
    return PAIR_FUNCTIONS[name](*(inputs[k] for k in names), weight=weight, **params)


@pytest.mark.parametrize("name", sorted(PAIR_CASES))
def test_pair_loss_matches_reference_in_value_and_gradient(name):
    names, params = PAIR_CASES[name]
    inputs, weight = _pair_inputs(names)
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    ref_leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    value = _call_pair(name, leaves, params, weight)
    expected = reference_pair_loss(name, ref_leaves, params, weight)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-14)
    grads = torch.autograd.grad(value, list(leaves.values()))
    ref_grads = torch.autograd.grad(expected, list(ref_leaves.values()))
    for key, grad, ref_grad in zip(leaves, grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-13, msg=f"gradient in {key}")


PROMPT_CASES = {
    "rkl": {"gamma": 0.6, "beta": 0.3},
    "rkl_beta0": {"gamma": 0.6, "beta": 0.0},
    "rlhf": {"beta": 0.3},
    "kl_penalty": {},
}


def _call_prompt(case, logp, reward, ref_logp, prompt_weight):
    params = PROMPT_CASES[case]
    if case.startswith("rkl"):
        return sa.rkl_loss(logp, reward, ref_logp=ref_logp, prompt_weight=prompt_weight, **params)
    if case == "rlhf":
        return sa.rlhf_loss(logp, reward, ref_logp=ref_logp, prompt_weight=prompt_weight, **params)
    return sa.kl_penalty(logp, ref_logp, prompt_weight=prompt_weight)


def _prompt_inputs(seed=0, X=3, A=4):
    generator = torch.Generator().manual_seed(seed)
    theta = torch.randn(X, A, generator=generator, dtype=DTYPE)
    reward = torch.randn(X, A, generator=generator, dtype=DTYPE)
    ref_logp = torch.log_softmax(torch.randn(X, A, generator=generator, dtype=DTYPE), dim=-1)
    prompt_weight = torch.randint(1, 6, (X,), generator=generator).to(DTYPE)
    return theta, reward, ref_logp, prompt_weight


@pytest.mark.parametrize("case", sorted(PROMPT_CASES))
def test_prompt_loss_matches_reference_in_value_and_gradient(case):
    theta, reward, ref_logp, prompt_weight = _prompt_inputs()
    leaves = [theta.clone().requires_grad_(True), reward.clone().requires_grad_(True)]
    ref_leaves = [theta.clone().requires_grad_(True), reward.clone().requires_grad_(True)]
    value = _call_prompt(case, torch.log_softmax(leaves[0], -1), leaves[1], ref_logp, prompt_weight)
    params = {"gamma": 0.0, "beta": 0.0, **PROMPT_CASES[case]}
    name = case.removesuffix("_beta0")
    expected = reference_prompt_loss(
        name, torch.log_softmax(ref_leaves[0], -1), ref_leaves[1], ref_logp, params, prompt_weight
    )
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-14)
    grads = torch.autograd.grad(value, leaves, allow_unused=True)
    ref_grads = torch.autograd.grad(expected, ref_leaves, allow_unused=True)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        if ref_grad is None:  # kl_penalty does not read the reward
            assert grad is None or torch.all(grad == 0)
            continue
        torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-13)


# --------------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("name", sorted(PAIR_CASES))
def test_pair_loss_gradcheck(name):
    names, params = PAIR_CASES[name]
    inputs, weight = _pair_inputs(names, n=4, seed=1)
    leaves = [inputs[k].clone().requires_grad_(True) for k in names]

    def loss(*args):
        return PAIR_FUNCTIONS[name](*args, weight=weight, **params)

    assert torch.autograd.gradcheck(loss, leaves, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("case", sorted(PROMPT_CASES))
def test_prompt_loss_gradcheck(case):
    theta, reward, ref_logp, prompt_weight = _prompt_inputs(seed=1)
    leaves = [theta.requires_grad_(True), reward.requires_grad_(True), ref_logp.clone().requires_grad_(True)]

    def loss(theta, reward, ref_logp):
        return _call_prompt(case, torch.log_softmax(theta, -1), reward, ref_logp, prompt_weight)

    assert torch.autograd.gradcheck(loss, leaves, eps=1e-6, atol=1e-8, rtol=1e-6)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("gamma", [0.0, -1.0, float("nan"), INF])
def test_bad_gamma_is_rejected(gamma):
    x = t(-1.0)
    for call in (
        lambda: sa.pmle_loss(x, x, gamma=gamma),
        lambda: sa.distillation_loss(x, x, x, gamma=gamma),
        lambda: sa.dpo_loss(x, x, x, x, gamma=gamma),
        lambda: sa.rkl_loss(x, x, gamma=gamma),
    ):
        with pytest.raises(ValueError, match="gamma"):
            call()


@pytest.mark.parametrize("value", [0.0, -0.5, float("nan")])
def test_bad_tau_and_eta_are_rejected(value):
    x = t(-1.0)
    with pytest.raises(ValueError, match="tau"):
        sa.ipo_loss(x, x, x, x, tau=value)
    with pytest.raises(ValueError, match="eta"):
        sa.rebel_loss(x, x, x, x, x, x, eta=value)


def test_negative_beta_is_rejected():
    logp = torch.log_softmax(torch.zeros(2, 3, dtype=DTYPE), -1)
    with pytest.raises(ValueError, match="beta"):
        sa.rkl_loss(logp, torch.zeros(2, 3, dtype=DTYPE), gamma=1.0, beta=-0.1, ref_logp=logp)
    with pytest.raises(ValueError, match="beta"):
        sa.rlhf_loss(logp, torch.zeros(2, 3, dtype=DTYPE), beta=-1e-9, ref_logp=logp)


def test_missing_reference_with_positive_beta_is_rejected():
    logp = torch.log_softmax(torch.zeros(2, 3, dtype=DTYPE), -1)
    with pytest.raises(ValueError, match="ref_logp"):
        sa.rlhf_loss(logp, torch.zeros(2, 3, dtype=DTYPE), beta=0.5)


@pytest.mark.parametrize("name", sorted(PAIR_CASES))
def test_nan_inputs_are_rejected_by_name(name):
    names, params = PAIR_CASES[name]
    for bad in names:
        inputs, weight = _pair_inputs(names, n=3)
        inputs[bad] = inputs[bad].clone()
        inputs[bad][1] = float("nan")
        with pytest.raises(ValueError, match=f"{bad} contains NaN"):
            _call_pair(name, inputs, params, weight)


def test_nan_in_prompt_loss_inputs_is_rejected_by_name():
    theta, reward, ref_logp, _ = _prompt_inputs()
    logp = torch.log_softmax(theta, -1)
    bad_reward = reward.clone()
    bad_reward[0, 0] = float("nan")
    with pytest.raises(ValueError, match="reward contains NaN"):
        sa.rkl_loss(logp, bad_reward, gamma=1.0)
    with pytest.raises(ValueError, match="reward contains NaN"):
        sa.rlhf_loss(logp, bad_reward, beta=0.0)
    bad_ref = ref_logp.clone()
    bad_ref[1, 2] = float("nan")
    with pytest.raises(ValueError, match="ref_logp contains NaN"):
        sa.kl_penalty(logp, bad_ref)
    with pytest.raises(ValueError, match="ref_logp contains NaN"):
        sa.rkl_loss(logp, reward, gamma=1.0, beta=0.1, ref_logp=bad_ref)


def test_shapes_that_do_not_broadcast_are_rejected_by_name():
    with pytest.raises(ValueError, match=r"logp_chosen\(3,\).*logp_rejected\(4,\)"):
        sa.pmle_loss(torch.zeros(3, dtype=DTYPE), torch.zeros(4, dtype=DTYPE), gamma=1.0)
    with pytest.raises(ValueError, match="target_margin"):
        sa.distillation_loss(torch.zeros(3, dtype=DTYPE), torch.zeros(3, dtype=DTYPE), torch.zeros(2), gamma=1.0)
    with pytest.raises(ValueError, match="ref_logp_rejected"):
        sa.dpo_loss(*(torch.zeros(3, dtype=DTYPE),) * 3, torch.zeros(5, dtype=DTYPE), gamma=1.0)
    with pytest.raises(ValueError, match="ref_logp"):
        sa.kl_penalty(torch.zeros(3, 4, dtype=DTYPE), torch.zeros(3, 5, dtype=DTYPE))
    with pytest.raises(ValueError, match="reward"):
        sa.rkl_loss(torch.zeros(3, 4, dtype=DTYPE), torch.zeros(2, 4, dtype=DTYPE), gamma=1.0)
    with pytest.raises(ValueError, match="weight"):
        sa.pmle_loss(torch.zeros(3, dtype=DTYPE), torch.zeros(3, dtype=DTYPE), gamma=1.0, weight=torch.ones(2))


def test_bad_weights_and_reduction_are_rejected():
    x = torch.zeros(2, dtype=DTYPE)
    with pytest.raises(ValueError, match="weight must be non-negative"):
        sa.pmle_loss(x, x, gamma=1.0, weight=t(1.0, -1.0))
    with pytest.raises(ValueError, match="weight contains NaN"):
        sa.pmle_loss(x, x, gamma=1.0, weight=t(1.0, float("nan")))
    with pytest.raises(ValueError, match="weight sums to zero"):
        sa.pmle_loss(x, x, gamma=1.0, weight=t(0.0, 0.0))
    with pytest.raises(ValueError, match="reduction"):
        sa.pmle_loss(x, x, gamma=1.0, reduction="average")


# --------------------------------------------------------------------------- extreme but valid inputs


EXTREME_GAMMAS = [1e-3, 1e-1, 1.0, 1e1, 1e3]


def _extreme_logits():
    # Per row: a response at +1e4, one at −1e4 and one at 0 (probabilities 1, 0 and e^{−1e4} = 0 in float64).
    return t(1e4, -1e4, 0.0, 1.0).reshape(1, 4).repeat(2, 1) * t(1.0, -1.0).reshape(2, 1)


@pytest.mark.parametrize("gamma", EXTREME_GAMMAS)
@pytest.mark.parametrize("name", sorted(PAIR_CASES))
def test_pair_losses_are_finite_at_extreme_logits(name, gamma):
    names, _ = PAIR_CASES[name]
    # the objective's own scale parameter (gamma, tau or eta) takes the extreme value
    params = {key: gamma for key in PAIR_CASES[name][1]}
    theta = _extreme_logits().requires_grad_(True)
    ref_theta = _extreme_logits().flip(-1).requires_grad_(True)
    logp, ref_logp = torch.log_softmax(theta, -1), torch.log_softmax(ref_theta, -1)
    # all ordered pairs (i, j) of the four responses with i != j; every log-probability is finite
    i, j = torch.triu_indices(4, 4, offset=1)
    i, j = torch.cat([i, j]), torch.cat([j, i])
    sources = {
        "logp_chosen": logp[:, i],
        "logp_rejected": logp[:, j],
        "logp_a": logp[:, i],
        "logp_b": logp[:, j],
        "ref_logp_chosen": ref_logp[:, i],
        "ref_logp_rejected": ref_logp[:, j],
        "reward_chosen": theta[:, i],
        "reward_rejected": theta[:, j],
        "target_margin": theta[:, i] - theta[:, j],
    }
    value = PAIR_FUNCTIONS[name](*(sources[k] for k in names), **params)
    assert torch.isfinite(value)
    grads = torch.autograd.grad(value, (theta, ref_theta), allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("gamma", EXTREME_GAMMAS)
def test_prompt_losses_are_finite_at_extreme_logits(gamma):
    theta = _extreme_logits().requires_grad_(True)
    logp = torch.log_softmax(theta, -1)
    ref_logp = torch.log_softmax(torch.zeros(2, 4, dtype=DTYPE), -1)
    reward = _extreme_logits()
    for value in (
        sa.rkl_loss(logp, reward, gamma=gamma, beta=gamma, ref_logp=ref_logp),
        sa.rlhf_loss(logp, reward, beta=gamma, ref_logp=ref_logp),
        sa.kl_penalty(logp, ref_logp),
    ):
        assert torch.isfinite(value)
        (grad,) = torch.autograd.grad(value, theta, retain_graph=True)
        assert torch.isfinite(grad).all()


def test_zero_probability_responses_give_finite_loss_and_gradient():
    # pi = (2/3, 0, 1/3) exactly: one logit is -inf.  The correct values below are finite.
    theta = t(math.log(2.0), -INF, 0.0).requires_grad_(True)
    logp = torch.log_softmax(theta, -1)
    reward = t(1.0, -INF, 0.0)  # R = -inf where pi = 0 (R* = gamma ln pi* at a zero of pi*)
    ref_logp = torch.log_softmax(t(0.0, 1.0, 2.0), -1)
    gamma = 0.5
    cases = {
        # the rejected response has probability 0: −ln σ(+inf) = 0
        "pmle": sa.pmle_loss(logp[0], logp[1], gamma=gamma),
        "dpo": sa.dpo_loss(logp[0], logp[1], ref_logp[0], ref_logp[1], gamma=gamma),
        # label flipped with p̃ = 0 on the swapped pair: same value 0
        "distillation": sa.distillation_loss(logp[1], logp[0], t(-INF), gamma=gamma),
        # a cell of weight 0 whose loss is +inf contributes 0
        "weighted": sa.pmle_loss(
            torch.stack([logp[1], logp[0]]), torch.stack([logp[0], logp[2]]), gamma=gamma, weight=t(0.0, 2.0)
        ),
        "rkl": sa.rkl_loss(logp, reward, gamma=gamma, beta=0.3, ref_logp=ref_logp),
        "rlhf": sa.rlhf_loss(logp, reward, beta=0.3, ref_logp=ref_logp),
        "kl_penalty": sa.kl_penalty(logp, ref_logp),
    }
    for label, value in cases.items():
        assert torch.isfinite(value), label
        (grad,) = torch.autograd.grad(value, theta, retain_graph=True)
        assert torch.isfinite(grad).all(), label
    # Values: the weighted case is the second pair alone, −ln σ(0.5·ln 2) = ln(1 + 2^{−1/2}).
    assert cases["pmle"].item() == 0.0
    assert cases["distillation"].item() == 0.0
    assert cases["weighted"].item() == pytest.approx(math.log1p(2**-0.5), rel=1e-12)
    # rkl: −(2/3·1 + 1/3·0) − 0.5·H(2/3, 1/3) + 0.3·KL, all finite: compare with the direct sum.
    q = ref_logp.exp()
    entropy = -(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3)
    kl = (2 / 3) * math.log((2 / 3) / q[0].item()) + (1 / 3) * math.log((1 / 3) / q[2].item())
    assert cases["kl_penalty"].item() == pytest.approx(kl, rel=1e-12)
    assert cases["rkl"].item() == pytest.approx(-(2 / 3) - gamma * entropy + 0.3 * kl, rel=1e-12)


def test_infinite_values_where_the_math_is_infinite():
    # The chosen response has probability 0 under pi: −ln σ(−inf) = +inf (no NaN).
    logp = torch.log_softmax(t(0.0, -INF), -1)
    assert sa.pmle_loss(logp[1], logp[0], gamma=1.0).item() == INF
    # pi puts mass where pi0 has none: KL(pi ‖ pi0) = +inf.
    assert sa.kl_penalty(torch.log_softmax(t(0.0, 0.0), -1), logp).item() == INF
