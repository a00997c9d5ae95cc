"""Tests of `synthalign.zoo` that need no TRL (the TRL cross-checks are in test_zoo_trl.py).

Hand-derived values, slow obviously-correct references, float64 gradcheck of every zoo loss,
finiteness at extreme logits and temperatures, hyper-parameter validation, special-case identities and
the KL-estimator identities of spec §6 item 14, exactly on a finite response set.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from synthalign import objectives
from synthalign.objectives import kl_estimators, zoo

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


def _kwargs(name, gamma=0.5, n=7, dtype=F64):
    """Keyword arguments that exercise each zoo loss (non-default options where they exist)."""
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 4, (n,), generator=generator).to(dtype)
    return {
        "f_dpo": {"gamma": gamma},
        "length_normalized_dpo": {"gamma": gamma, "length_chosen": lengths, "length_rejected": lengths.flip(0)},
        "conservative_dpo": {"gamma": gamma, "label_smoothing": 0.1},
        "robust_dpo": {"gamma": gamma, "label_smoothing": 0.1},
        "exo_pair": {"gamma": gamma},
        "discopop": {"gamma": gamma},
        "aot": {"gamma": gamma, "label_smoothing": 0.1},
        "aot_unpaired": {"gamma": gamma, "label_smoothing": 0.1},
        "simpo": {"gamma": gamma, "target_margin": 0.3, "length_chosen": lengths, "length_rejected": 2.0},
        "online_dpo": {"gamma": gamma},
        "xpo": {"gamma": gamma, "alpha": 0.1,
                "logp_exploration": -torch.rand(n, generator=generator, dtype=F64).to(dtype)},
        "hinge": {"gamma": gamma},
        "f_ipo": {"gamma": gamma, "length_chosen": lengths, "length_rejected": 2.0},
        "sppo": {"gamma": gamma, "win_prob_chosen": 0.8, "win_prob_rejected": 0.3},
        "nca_pair": {"gamma": gamma},
        "bco_pair": {"gamma": gamma, "delta": 0.1},
        "apo_zero": {"gamma": gamma},
        "apo_down": {"gamma": gamma},
        "kto_pair": {"gamma": gamma, "z0": 0.2, "desirable_weight": 1.5},
        "chipo": {"gamma": gamma, "reward_bound": 1.0},
        "sft": {"length_chosen": lengths},
    }[name]


def test_kwargs_table_covers_the_zoo():
    for name in zoo.ZOO_LOSSES:
        _kwargs(name)  # KeyError for a zoo entry without test arguments
    assert zoo.ZOO_LOSSES == {name: getattr(zoo, f"{name}_loss") for name in zoo.ZOO_LOSSES}


# ----------------------------------------------------------------------------------------------------------------------
# Hand-derived values (running example, γ = 0.5 unless stated)
# h⁺ = ln(0.6/0.25) = ln 2.4 = 0.8755,  h⁻ = ln(0.2/0.25) = ln 0.8 = −0.2231,  Δ = h⁺ − h⁻ = ln 3 = 1.0986
# ----------------------------------------------------------------------------------------------------------------------


def test_dpo_by_hand():
    # margin = 0.5·ln(0.6/0.2) − 0.5·ln(0.25/0.25) = 0.5·ln 3 = 0.5493 → loss = ln(1 + 3^(−1/2)) = 0.455746
    assert example(zoo.f_dpo_loss, gamma=0.5) == pytest.approx(0.455746394, abs=1e-9)


def test_ipo_by_hand():
    # Δ = ln 3 = 1.0986, 1/(2τ) = 1 at τ = 0.5 → loss = (1.0986 − 1)² = 0.009724
    assert example(zoo.f_ipo_loss, gamma=0.5) == pytest.approx(0.009724383, abs=1e-9)


def test_hinge_by_hand():
    # max(0, 1 − 0.5·ln 3) = 1 − 0.5493 = 0.450694
    assert example(zoo.hinge_loss, gamma=0.5) == pytest.approx(0.450693856, abs=1e-9)


def test_conservative_and_robust_dpo_by_hand():
    # x = 0.5·ln 3 = 0.5493: ln σ(x) = −0.455746, ln σ(−x) = −0.455746 − 0.5493 = −1.005053
    # cDPO, ε = 0.1: 0.9·0.455746 + 0.1·1.005053 = 0.510677
    assert example(zoo.conservative_dpo_loss, gamma=0.5, label_smoothing=0.1) == pytest.approx(0.510677009, abs=1e-9)
    # rDPO, ε = 0.1: (0.9·0.455746 − 0.1·1.005053)/0.8 = 0.387083
    assert example(zoo.robust_dpo_loss, gamma=0.5, label_smoothing=0.1) == pytest.approx(0.387083126, abs=1e-9)


def test_sppo_by_hand():
    # targets ±(1 − ½)/γ = ±1: (0.8755 − 1)² + (−0.2231 + 1)² = 0.015508 + 0.603506 = 0.619014
    assert example(zoo.sppo_loss, gamma=0.5) == pytest.approx(0.619013977, abs=1e-9)
    assert example(zoo.sppo_loss, gamma=0.5, average_pair=True) == pytest.approx(0.619013977 / 2, abs=1e-9)


def test_chipo_by_hand():
    # φ(h⁺) = 2.4 + 0.8755 = 3.2755, φ(h⁻) = 0.8 − 0.2231 = 0.5769, margin = 0.5·2.6986 = 1.3493
    # R = 1: |1.3493| < 2, unclipped → ln(1 + e^(−1.3493)) = 0.230651
    assert example(zoo.chipo_loss, gamma=0.5, reward_bound=1.0) == pytest.approx(0.230651455, abs=1e-9)
    # R = 0.5: clipped to 1 → ln(1 + e^(−1)) = 0.313262
    assert example(zoo.chipo_loss, gamma=0.5, reward_bound=0.5) == pytest.approx(0.313261688, abs=1e-9)


def test_kto_pair_and_apo_by_hand():
    # KTO, z0 = 0: σ(−0.5·0.8755) + σ(0.5·(−0.2231)) = 0.392281 + 0.472136 = 0.864417
    assert example(zoo.kto_pair_loss, gamma=0.5) == pytest.approx(0.864416911, abs=1e-9)
    # APO-zero is the same expression: (1 − σ(γh⁺)) + σ(γh⁻)
    assert example(zoo.apo_zero_loss, gamma=0.5) == pytest.approx(0.864416911, abs=1e-9)
    # APO-down: σ(0.5·0.8755) + σ(−0.5·ln 3) = 0.607719 + 0.366025 = 0.973744
    assert example(zoo.apo_down_loss, gamma=0.5) == pytest.approx(0.973744448, abs=1e-9)


def test_nca_and_bco_by_hand():
    # NCA: −ln σ(0.4377) − ½ ln σ(−0.4377) − ½ ln σ(−(−0.1116)) = 0.498 + 0.4676 + 0.3198 = 1.285389
    assert example(zoo.nca_pair_loss, gamma=0.5) == pytest.approx(1.285389348, abs=1e-9)
    # BCO, δ = 0.2: −ln σ(0.4377 − 0.2) − ln σ(−(−0.1116 − 0.2)) = 0.5804 + 0.5504 = 1.130775
    assert example(zoo.bco_pair_loss, gamma=0.5, delta=0.2) == pytest.approx(1.130775272, abs=1e-9)


def test_simpo_by_hand():
    # |a⁺| = 2, |a⁻| = 1, γ = 2, m = 0.5: 2·(ln 0.6/2 − ln 0.2) − 0.5 = 2·(−0.2554 + 1.6094) − 0.5 = 2.2081
    # → ln(1 + e^(−2.2081)) = 0.104283
    loss = zoo.simpo_loss(LOGP_CHOSEN, LOGP_REJECTED, gamma=2.0, target_margin=0.5, length_chosen=2.0)
    assert loss.item() == pytest.approx(0.104283212, abs=1e-9)


def test_losses_at_a_tie_by_hand():
    # π = π0 on both responses: Δ = 0.
    tie = (REF, REF, REF, REF)
    # DiscoPOP at ρ = 0: (1 − ½)·ln 2 + ½·e^0 = 0.346574 + 0.5 = 0.846574
    assert zoo.discopop_loss(*tie, gamma=0.5).item() == pytest.approx(0.846573590, abs=1e-9)
    # EXO at q = ½, ε = 0.1: ½(ln ½ − ln 0.9) + ½(ln ½ − ln 0.1) = ln ½ − ½ ln 0.09 = 0.510826
    assert zoo.exo_pair_loss(*tie, gamma=0.5, label_smoothing=0.1).item() == pytest.approx(0.510825624, abs=1e-9)


def test_sft_is_a_per_token_mean():
    # lengths 1, 2, 3 and sequence log-probs −1, −2, −6: −(−1 − 2 − 6)/(1 + 2 + 3) = 1.5
    logp = t(-1.0, -2.0, -6.0)
    assert zoo.sft_loss(logp, length_chosen=t(1.0, 2.0, 3.0)).item() == pytest.approx(1.5)
    assert zoo.sft_loss(logp).item() == pytest.approx(3.0)  # one token each: the mean NLL
    # counts (2, 0, 1): (2·1 + 6)/(2·1 + 3) = 1.6
    loss = zoo.sft_loss(logp, length_chosen=t(1.0, 2.0, 3.0), weight=t(2.0, 0.0, 1.0))
    assert loss.item() == pytest.approx(1.6)


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


# ----------------------------------------------------------------------------------------------------------------------
# Independent references: literal transcriptions of the papers' formulas (moderate inputs only)
# ----------------------------------------------------------------------------------------------------------------------


def _naive_log_sigmoid(x):
    return torch.log(1.0 / (1.0 + torch.exp(-x)))


def _reference_chipo(lc, lr, rc, rr, *, gamma, reward_bound):
    phi = lambda z: z + torch.log(z)  # noqa: E731 — the paper's link, on the ratio z = π/π0
    margin = gamma * phi(torch.exp(lc) / torch.exp(rc)) - gamma * phi(torch.exp(lr) / torch.exp(rr))
    clipped = torch.clamp(margin, -2 * reward_bound, 2 * reward_bound)
    return -_naive_log_sigmoid(clipped).mean()


def _reference_kto_pair(lc, lr, rc, rr, *, gamma, z0, desirable_weight):
    value_chosen = desirable_weight * torch.sigmoid(gamma * (lc - rc - z0))
    value_rejected = torch.sigmoid(gamma * (z0 - (lr - rr)))
    return (desirable_weight - value_chosen + 1.0 - value_rejected).mean()


def _reference_sppo(lc, lr, rc, rr, *, gamma, win_prob_chosen, win_prob_rejected):
    eta = 1.0 / gamma
    error_chosen = lc - rc - eta * (win_prob_chosen - 0.5)
    error_rejected = lr - rr - eta * (win_prob_rejected - 0.5)
    return (error_chosen**2 + error_rejected**2).mean()


def _reference_xpo(lc, lr, rc, rr, *, gamma, alpha, logp_exploration):
    dpo = -_naive_log_sigmoid(gamma * ((lc - lr) - (rc - rr)))
    return (dpo + alpha * logp_exploration).mean()


def _reference_alpha_dpo(lc, lr, rc, rr, *, gamma, divergence_alpha):
    f_prime = lambda u: (1 - u ** (-divergence_alpha)) / divergence_alpha  # noqa: E731
    return -_naive_log_sigmoid(gamma * (f_prime(torch.exp(lc - rc)) - f_prime(torch.exp(lr - rr)))).mean()


REFERENCES = [
    (zoo.chipo_loss, _reference_chipo, {"gamma": 0.7, "reward_bound": 1.0}),
    (zoo.chipo_loss, _reference_chipo, {"gamma": 0.2, "reward_bound": 50.0}),
    (zoo.kto_pair_loss, _reference_kto_pair, {"gamma": 0.7, "z0": 0.3, "desirable_weight": 1.5}),
    (zoo.sppo_loss, _reference_sppo, {"gamma": 0.7, "win_prob_chosen": 0.9, "win_prob_rejected": 0.2}),
    (zoo.xpo_loss, _reference_xpo, {"gamma": 0.7, "alpha": 0.3, "logp_exploration": t(-1.0, -2.0, -0.5)}),
]


@pytest.mark.parametrize("fn, reference, kwargs", REFERENCES, ids=lambda v: getattr(v, "__name__", ""))
def test_matches_reference_in_value_and_gradient(fn, reference, kwargs):
    inputs = _random_pairs(3, seed=3, requires_grad=True)
    ours, theirs = fn(*inputs, **kwargs), reference(*inputs, **kwargs)
    torch.testing.assert_close(ours, theirs)
    for g_ours, g_theirs in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(theirs, inputs), strict=True):
        torch.testing.assert_close(g_ours, g_theirs)


@pytest.mark.parametrize("alpha", [0.3, 0.5, 2.0])
def test_alpha_divergence_matches_reference(alpha):
    inputs = _random_pairs(5, seed=4)
    ours = zoo.f_dpo_loss(*inputs, gamma=0.7, divergence="alpha_divergence", divergence_alpha=alpha)
    torch.testing.assert_close(ours, _reference_alpha_dpo(*inputs, gamma=0.7, divergence_alpha=alpha))


# ----------------------------------------------------------------------------------------------------------------------
# gradcheck and finiteness
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(zoo.ZOO_LOSSES))
def test_gradcheck(name):
    inputs = _random_pairs(7, seed=2, requires_grad=True)
    kwargs = _kwargs(name)
    assert torch.autograd.gradcheck(lambda *x: zoo.ZOO_LOSSES[name](*x, **kwargs), inputs)


@pytest.mark.parametrize("divergence", zoo.DIVERGENCES)
def test_gradcheck_divergences(divergence):
    inputs = _random_pairs(7, seed=2, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *x: zoo.f_ipo_loss(*x, gamma=0.5, divergence=divergence, divergence_alpha=0.3), inputs
    )


@pytest.mark.parametrize("kind", kl_estimators.KL_ESTIMATOR_KINDS)
def test_gradcheck_kl_estimators(kind):
    logp, _, ref, _ = _random_pairs(7, seed=5, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: kl_estimators.kl_estimator(a, b, kind), (logp, ref))
    logits = torch.randn(2, 5, dtype=F64, requires_grad=True)
    ref_logp = torch.log_softmax(torch.randn(2, 5, dtype=F64), dim=-1)
    # With detached weights the gradient is E[∇k], not the derivative of the value, by design (tested
    # in test_kl_estimator_expectations); gradcheck applies to the attached form.
    assert torch.autograd.gradcheck(
        lambda x: kl_estimators.exact_kl_estimator_expectation(torch.log_softmax(x, dim=-1), ref_logp, kind,
                                                     detach_weights=False),
        (logits,),
    )


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


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=str)
@pytest.mark.parametrize("gamma", [1e-3, 1e3])
@pytest.mark.parametrize("name", sorted(zoo.ZOO_LOSSES))
def test_finite_at_extreme_logits_and_temperatures(name, gamma, dtype):
    for seed in (0, 1, 2, 3):
        leaves, pairs = _extreme_pairs(dtype, seed)
        kwargs = _kwargs(name, gamma=gamma, n=36, dtype=dtype)
        if name != "sft":
            kwargs["gamma"] = gamma
        if name == "xpo":
            kwargs["logp_exploration"] = pairs[1]
        loss = zoo.ZOO_LOSSES[name](*pairs, **kwargs)
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        assert torch.isfinite(loss), (seed, loss)
        for grad in grads:
            assert grad is None or torch.isfinite(grad).all(), seed


DIVERGENCE_LOSSES = [name for name, fn in zoo.ZOO_LOSSES.items() if "divergence" in inspect.signature(fn).parameters]


@pytest.mark.parametrize("gamma", [1e-3, 1e3])
@pytest.mark.parametrize("name", DIVERGENCE_LOSSES)
def test_js_divergence_is_finite_at_extreme_logits(name, gamma):
    # ln(2u/(1+u)) is bounded above and grows like ln u below: finite wherever reverse KL is.
    leaves, pairs = _extreme_pairs(F64, 1)
    kwargs = {**_kwargs(name, gamma=gamma, n=36), "gamma": gamma, "divergence": "js_divergence"}
    loss = zoo.ZOO_LOSSES[name](*pairs, **kwargs)
    assert torch.isfinite(loss)
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize("kind", kl_estimators.KL_ESTIMATOR_KINDS)
def test_exact_kl_expectation_is_finite_at_extreme_logits(kind):
    for seed in (0, 1):
        (logits, ref_logits), _ = _extreme_pairs(F64, seed)
        value = kl_estimators.exact_kl_estimator_expectation(
            torch.log_softmax(logits, -1), torch.log_softmax(ref_logits, -1), kind
        )
        assert torch.isfinite(value)
        assert all(torch.isfinite(g).all() for g in torch.autograd.grad(value, (logits, ref_logits)))


def test_chipo_saturates_and_ties_without_overflow():
    # h⁺ = 2e4 (π0(a⁺) = e^−2e4): saturated at +2R with zero gradient; a tie at h = 2e4 has margin 0.
    lc, lr = t(0.0, LN(0.5), -1.0, requires_grad=True), t(-1.0, LN(0.5), 0.0, requires_grad=True)
    rc, rr = t(-2e4, -2e4, -1.0), t(-1.0, -2e4, -2e4)
    loss = zoo.chipo_loss(lc, lr, rc, rr, gamma=0.1, reward_bound=1.0, reduction="none")
    expected = t(-LN(torch.sigmoid(t(2.0)).item()), LN(2.0), -LN(torch.sigmoid(t(-2.0)).item()))
    torch.testing.assert_close(loss, expected)
    grads = torch.autograd.grad(loss.sum(), (lc, lr))
    assert all(torch.isfinite(g).all() for g in grads)
    assert grads[0][0] == 0 and grads[1][2] == 0


# ----------------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------------

GAMMA_LOSSES = [name for name in sorted(zoo.ZOO_LOSSES) if name != "sft"]

BAD_OPTIONS = [
    ("conservative_dpo", {"label_smoothing": -0.1}, "label_smoothing"),
    ("conservative_dpo", {"label_smoothing": 1.5}, "label_smoothing"),
    ("robust_dpo", {"label_smoothing": 0.5}, "label_smoothing"),
    ("exo_pair", {"label_smoothing": 0.0}, "label_smoothing"),
    ("exo_pair", {"label_smoothing": 1.0}, "label_smoothing"),
    ("aot", {"label_smoothing": 2.0}, "label_smoothing"),
    ("aot", {"weight": t(*[1.0] * 7)}, "weight"),
    ("aot_unpaired", {"weight": t(*[1.0] * 7)}, "weight"),
    ("discopop", {"tau": 0.0}, "tau"),
    ("f_dpo", {"divergence": "kl"}, "divergence"),
    ("hinge", {"divergence_alpha": 0.0}, "divergence_alpha"),
    ("simpo", {"target_margin": -1.0}, "target_margin"),
    ("simpo", {"length_chosen": 0.0}, "length_chosen"),
    ("f_ipo", {"length_rejected": -1.0}, "length_rejected"),
    ("f_ipo", {"normalize_length": "yes"}, "normalize_length"),
    ("length_normalized_dpo", {"length_chosen": t(*[0.0] * 7)}, "length_chosen"),
    ("sppo", {"win_prob_chosen": 1.5}, "win_prob_chosen"),
    ("sppo", {"win_prob_rejected": t(*[-0.1] * 7)}, "win_prob_rejected"),
    ("sppo", {"average_pair": 1}, "average_pair"),
    ("bco_pair", {"delta": math.nan}, "delta"),
    ("kto_pair", {"z0": math.inf}, "z0"),
    ("kto_pair", {"desirable_weight": 0.0}, "desirable_weight"),
    ("kto_pair", {"undesirable_weight": -1.0}, "undesirable_weight"),
    ("chipo", {"reward_bound": 0.0}, "reward_bound"),
    ("chipo", {"reward_bound": math.nan}, "reward_bound"),
    ("online_dpo", {"loss_type": "hinge"}, "loss_type"),
    ("xpo", {"alpha": -1.0}, "alpha"),
    ("f_dpo", {"reduction": "avg"}, "reduction"),
    ("sft", {"weight": t(*[-1.0] * 7)}, "weight"),
]


@pytest.mark.parametrize("bad_gamma", [0.0, -1.0, math.nan, math.inf, "big"])
@pytest.mark.parametrize("name", GAMMA_LOSSES)
def test_rejects_bad_gamma(name, bad_gamma):
    with pytest.raises(ValueError, match="gamma"):
        zoo.ZOO_LOSSES[name](*_random_pairs(), **{**_kwargs(name), "gamma": bad_gamma})


@pytest.mark.parametrize("name, options, argument", BAD_OPTIONS, ids=lambda v: str(v)[:30])
def test_rejects_bad_hyper_parameters(name, options, argument):
    with pytest.raises(ValueError, match=argument):
        zoo.ZOO_LOSSES[name](*_random_pairs(), **{**_kwargs(name), **options})


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


# ----------------------------------------------------------------------------------------------------------------------
# Special-case identities
# ----------------------------------------------------------------------------------------------------------------------


def test_identities_with_the_paper_objectives():
    inputs = _random_pairs()
    torch.testing.assert_close(zoo.f_dpo_loss(*inputs, gamma=0.7), objectives.dpo_loss(*inputs, gamma=0.7))
    torch.testing.assert_close(zoo.f_ipo_loss(*inputs, gamma=0.7), objectives.ipo_loss(*inputs, tau=0.7))


def test_dpo_family_special_cases():
    inputs = _random_pairs()
    lc, lr, rc, rr = inputs
    dpo = zoo.f_dpo_loss(*inputs, gamma=0.7)
    same = [
        zoo.conservative_dpo_loss(*inputs, gamma=0.7, label_smoothing=0.0),
        zoo.robust_dpo_loss(*inputs, gamma=0.7, label_smoothing=0.0),
        zoo.length_normalized_dpo_loss(*inputs, gamma=0.7),
        zoo.online_dpo_loss(*inputs, gamma=0.7),
        zoo.xpo_loss(*inputs, gamma=0.7, alpha=0.0, logp_exploration=lr),
        zoo.f_dpo_loss(*inputs, gamma=0.7, divergence="alpha_divergence", divergence_alpha=1e-9),
    ]
    for value in same:
        torch.testing.assert_close(value, dpo, atol=1e-7, rtol=0)
    # SimPO with a zero margin and one-token responses is DPO against a uniform (constant) reference.
    zero = torch.zeros_like(lc)
    torch.testing.assert_close(zoo.simpo_loss(lc, lr, gamma=0.7), zoo.f_dpo_loss(lc, lr, zero, zero, gamma=0.7))
    # Equal lengths L: length-normalised DPO is DPO at temperature γ/L.
    torch.testing.assert_close(
        zoo.length_normalized_dpo_loss(*inputs, gamma=0.7, length_chosen=2.0, length_rejected=2.0),
        zoo.f_dpo_loss(*inputs, gamma=0.35),
    )
    # α = 1 is forward KL.
    torch.testing.assert_close(
        zoo.hinge_loss(*inputs, gamma=0.7, divergence="alpha_divergence", divergence_alpha=1.0),
        zoo.hinge_loss(*inputs, gamma=0.7, divergence="forward_kl"),
    )
    # XPO adds α·mean(ln π(ã)); online IPO is the per-sequence IPO.
    torch.testing.assert_close(zoo.xpo_loss(*inputs, gamma=0.7, alpha=0.5, logp_exploration=lr), dpo + 0.5 * lr.mean())
    torch.testing.assert_close(
        zoo.online_dpo_loss(*inputs, gamma=0.7, loss_type="ipo"),
        zoo.f_ipo_loss(*inputs, gamma=0.7, normalize_length=False, length_chosen=3.0),
    )


def test_single_pair_aot_is_conservative_dpo():
    # With one pair the sorting coupling is the identity and both AOT forms are cDPO.
    for seed in range(3):
        inputs = [x[:1] for x in _random_pairs(seed=seed)]
        cdpo = zoo.conservative_dpo_loss(*inputs, gamma=0.7, label_smoothing=0.2)
        torch.testing.assert_close(zoo.aot_loss(*inputs, gamma=0.7, label_smoothing=0.2), cdpo)
        torch.testing.assert_close(zoo.aot_unpaired_loss(*inputs, gamma=0.7, label_smoothing=0.2), cdpo)


def test_aot_is_invariant_to_the_order_of_the_batch():
    inputs = _random_pairs()
    order = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    for fn in (zoo.aot_loss, zoo.aot_unpaired_loss):
        torch.testing.assert_close(fn(*inputs, gamma=0.7), fn(*[x[order] for x in inputs], gamma=0.7))


def test_kto_pair_with_zero_reference_point_is_apo_zero():
    inputs = _random_pairs()
    torch.testing.assert_close(zoo.kto_pair_loss(*inputs, gamma=0.7), zoo.apo_zero_loss(*inputs, gamma=0.7))


@given(st.floats(-30, 30), st.floats(-30, 30), st.floats(0.01, 5.0))
def test_dpo_preference_probabilities_sum_to_one(h_a, h_b, gamma):
    # exp(−loss) is the modelled P(a ≻ b): P(a ≻ b) + P(b ≻ a) = 1 (spec §6 item 1).
    zero = torch.zeros(1, dtype=F64)
    a, b = torch.tensor([h_a], dtype=F64), torch.tensor([h_b], dtype=F64)
    forward = zoo.f_dpo_loss(a, b, zero, zero, gamma=gamma, reduction="none")
    backward = zoo.f_dpo_loss(b, a, zero, zero, gamma=gamma, reduction="none")
    torch.testing.assert_close(torch.exp(-forward) + torch.exp(-backward), torch.ones(1, dtype=F64))


def test_gradient_at_the_reference_policy_is_not_zero():
    # At π = π0 every log-ratio is 0, yet DPO's gradient is −γ/2 per chosen log-prob (a finite tie).
    logp = t(LN(0.25), LN(0.25), requires_grad=True)
    loss = zoo.f_dpo_loss(logp[0:1], logp[1:2], REF, REF, gamma=0.5)
    torch.testing.assert_close(torch.autograd.grad(loss, logp)[0], t(-0.25, 0.25))


def test_zero_probability_pairs_are_ties_and_zero_weight_cells_vanish():
    # Two zero-probability responses are tied (margin 0); a cell of weight 0 contributes 0 even when its
    # loss is infinite.
    minus_inf = t(-math.inf)
    tie = zoo.f_dpo_loss(minus_inf, minus_inf, REF, REF, gamma=0.5)
    assert tie.item() == pytest.approx(LN(2.0))
    lc = t(-math.inf, LN(0.6), requires_grad=True)
    loss = zoo.f_dpo_loss(lc, t(LN(0.2), LN(0.2)), t(LN(0.25), LN(0.25)), t(LN(0.25), LN(0.25)), gamma=0.5,
                          weight=t(0.0, 1.0))
    assert loss.item() == pytest.approx(0.455746394, abs=1e-9)
    assert torch.isfinite(torch.autograd.grad(loss, lc)[0]).all()


@pytest.mark.parametrize("name", sorted(set(zoo.ZOO_LOSSES) - {"aot", "aot_unpaired"}))
def test_counts_weight_equals_repeated_pairs(name):
    inputs = _random_pairs()
    counts = torch.tensor([2, 0, 1, 3, 1, 1, 2])
    kwargs = _kwargs(name)
    repeated_kwargs = {
        key: value.repeat_interleave(counts) if isinstance(value, torch.Tensor) and value.numel() == 7 else value
        for key, value in kwargs.items()
    }
    fn = zoo.ZOO_LOSSES[name]
    weighted = fn(*inputs, **kwargs, weight=counts.to(F64))
    repeated = fn(*[x.repeat_interleave(counts) for x in inputs], **repeated_kwargs)
    torch.testing.assert_close(weighted, repeated)
    total = fn(*inputs, **kwargs, weight=counts.to(F64), reduction="sum")
    elementwise = fn(*inputs, **kwargs, weight=counts.to(F64), reduction="none")
    torch.testing.assert_close(total, elementwise.sum())


def test_sppo_and_bco_conventions():
    inputs = _random_pairs()
    torch.testing.assert_close(
        zoo.sppo_loss(*inputs, gamma=0.7, average_pair=True), 0.5 * zoo.sppo_loss(*inputs, gamma=0.7)
    )
    # A detached tensor δ (e.g. the batch's mean reward) broadcasts like a float.
    lc, lr, rc, rr = inputs
    delta = (0.7 * ((lc - rc) + (lr - rr)) / 2).mean().detach()
    torch.testing.assert_close(
        zoo.bco_pair_loss(*inputs, gamma=0.7, delta=delta), zoo.bco_pair_loss(*inputs, gamma=0.7, delta=delta.item())
    )


# ----------------------------------------------------------------------------------------------------------------------
# KL estimators: spec §6 item 14, exactly on a finite space
# ----------------------------------------------------------------------------------------------------------------------


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
