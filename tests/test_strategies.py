"""Tests of `synthalign.testing.strategies`: the hypothesis strategies generate valid inputs and reach the corners."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import synthalign as sa
from synthalign.testing import log_probs, policies, preference_datasets, worlds

SETTINGS = settings(max_examples=40, deadline=None)


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
