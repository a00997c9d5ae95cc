"""GradientConfig, validated once, and the keywords every score-function estimator builds it from."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import synthalign as sa
from synthalign.estimators.gradient_check import exact_gradient_variance, expected_gradient, gradient_law
from synthalign.estimators.onpolicy import sampled_score_function_gradients, score_function_fit
from synthalign.estimators.score_function import GradientConfig, gradient_config


def _point(shape) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(123), dtype=torch.float64)


@pytest.mark.parametrize(
    "field, value",
    [
        ("beta", -0.1),
        ("beta", float("nan")),
        ("estimator", "ppo"),
        ("kl_estimator", "k4"),
        ("kl_placement", "advantage"),
        ("entropy_placement", "baseline"),
        ("samples", 0),
        ("samples", 2.5),
    ],
)
def test_every_bad_field_raises_a_value_error_naming_it(field, value):
    with pytest.raises(ValueError, match=field):
        GradientConfig(**{field: value})
    # A replacement is checked as well: the config cannot be made invalid after construction.
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(GradientConfig(), **{field: value})


def test_fields_are_normalized_and_frozen():
    config = GradientConfig(beta=1, samples=4.0)
    assert isinstance(config.beta, float) and config.samples == 4 and isinstance(config.samples, int)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.beta = 2.0
    assert GradientConfig(kl_placement="exact").needs_table and not GradientConfig().needs_table
    assert GradientConfig(beta=0.5, kl_estimator="k3").terms(0.25) == {
        "entropy_coef": 0.25,
        "beta": 0.5,
        "kl_kind": "k3",
        "kl_placement": "reward",
        "entropy_placement": "reward",
    }


def test_keywords_override_the_given_config_and_the_default():
    default = GradientConfig(estimator="reinforce", samples=1)
    assert gradient_config({}, default) is default
    assert gradient_config({"reward": None, "beta": 0.3}, default) == dataclasses.replace(default, beta=0.3)
    given = GradientConfig(kl_estimator="k2", samples=6)
    assert gradient_config({"config": given}, default) is given
    assert gradient_config({"config": given, "samples": 3}, default) == GradientConfig(kl_estimator="k2", samples=3)


def test_unknown_keywords_and_configs_of_another_type_are_refused():
    with pytest.raises(TypeError, match="kl_kind"):
        gradient_config({"kl_kind": "k2"}, GradientConfig())
    with pytest.raises(ValueError, match="config must be a GradientConfig"):
        gradient_config({"config": {"beta": 1.0}}, GradientConfig())
    world = sa.World.random(2, 3, seed=0)
    with pytest.raises(TypeError, match="stepz"):
        score_function_fit(world, "rkl", stepz=3)


def test_a_config_and_its_keywords_give_the_same_estimates():
    world = sa.World.random(3, 4, seed=0)
    logits = _point((3, 4))
    keywords = dict(beta=0.4, estimator="rloo", kl_estimator="k3", kl_placement="loss", entropy_placement="exact")
    config = GradientConfig(**keywords, samples=3)
    assert torch.equal(
        expected_gradient(world, logits, "rkl", config=config), expected_gradient(world, logits, "rkl", **keywords)
    )
    by_config = sampled_score_function_gradients(world, logits, "rkl", replicates=5, seed=1, config=config)
    by_keywords = sampled_score_function_gradients(world, logits, "rkl", replicates=5, seed=1, samples=3, **keywords)
    assert torch.equal(by_config, by_keywords)
    fit_config = score_function_fit(world, "rkl", steps=3, replicates=2, config=config)
    fit_keywords = score_function_fit(world, "rkl", steps=3, replicates=2, samples=3, **keywords)
    assert torch.equal(fit_config.parameters, fit_keywords.parameters) and fit_config.samples_per_step == 3
    row = gradient_law(world, logits, "rkl", config=config)
    assert (row.estimator, row.kl_estimator, row.kl_placement, row.entropy_placement) == ("rloo", "k3", "loss", "exact")


def test_gradient_law_defaults_to_beta_one_and_the_others_to_beta_zero():
    # With β = 0 every KL law has the same gradient, so each candidate matches; with β = 1 only the declared one.
    world = sa.World.random(3, 4, seed=1)
    logits = _point((3, 4))
    assert gradient_law(world, logits, "rlhf", kl_estimator="k3", kl_placement="loss").matched == (
        ("∇KL(π0‖π)", "∇(−H)"),
    )
    assert len(gradient_law(world, logits, "rlhf", beta=0.0).matched) == 5
    assert torch.equal(
        expected_gradient(world, logits, "rlhf", kl_estimator="k3"), expected_gradient(world, logits, "rlhf")
    )


def test_exact_gradient_variance_refuses_what_it_does_not_cover():
    world = sa.World.random(2, 3, seed=0)
    logits = _point((2, 3))
    with pytest.raises(ValueError, match="reinforce"):
        exact_gradient_variance(world, logits, "rkl", estimator="rloo", samples=2)
    with pytest.raises(ValueError, match="sampled placements"):
        exact_gradient_variance(world, logits, "rkl", kl_placement="exact")
