"""Tests of `synthalign.objectives.zoo` over every loss of `ZOO_LOSSES` (the TRL cross-checks: test_zoo_trl.py)."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from _zoo_pairs import F64, _extreme_pairs, _random_pairs, t

from synthalign.objectives import zoo


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
        "xpo": {
            "gamma": gamma,
            "alpha": 0.1,
            "logp_exploration": -torch.rand(n, generator=generator, dtype=F64).to(dtype),
        },
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
# gradcheck and finiteness
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(zoo.ZOO_LOSSES))
def test_gradcheck(name):
    inputs = _random_pairs(7, seed=2, requires_grad=True)
    kwargs = _kwargs(name)
    assert torch.autograd.gradcheck(lambda *x: zoo.ZOO_LOSSES[name](*x, **kwargs), inputs)


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


# ----------------------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------------------


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
