"""Tests of `synthalign.registry.zoo`: every zoo loss registered from its signature, with its declared facts."""

from __future__ import annotations

import inspect

import pytest

import synthalign as sa
from synthalign.objectives import zoo
from synthalign.registry.zoo import DECLARATIONS, NOT_REGISTERED, ZOO_OBJECTIVES


def test_every_zoo_loss_is_registered_or_says_why_not():
    assert set(ZOO_OBJECTIVES) | set(NOT_REGISTERED) == set(zoo.ZOO_LOSSES)
    assert set(ZOO_OBJECTIVES) == set(DECLARATIONS)
    for name in ZOO_OBJECTIVES:
        assert name in sa.list_objectives()


@pytest.mark.parametrize("name", ZOO_OBJECTIVES)
def test_zoo_objectives_are_generated_from_their_losses_signatures(name):
    obj = sa.get_objective(name)
    loss = zoo.ZOO_LOSSES[name]
    signature = inspect.signature(loss).parameters
    rename = DECLARATIONS[name].get("rename", {})
    framework = {"weight", "reduction", "length_chosen", "length_rejected", "gamma"}
    expected_params = {
        rename.get(p.name, p.name)
        for p in signature.values()
        if p.kind == inspect.Parameter.KEYWORD_ONLY and p.name not in framework
    }
    assert set(obj.params) == expected_params
    required = [p.name for p in signature.values() if p.kind != inspect.Parameter.KEYWORD_ONLY and p.default is p.empty]
    assert [name for name in obj.inputs if name != "gamma"] == required
    assert ("gamma" in obj.inputs) == ("gamma" in signature)


def test_declared_facts_live_on_the_objective():
    assert sa.get_objective("chipo").example_params == {"reward_bound": 1.0}
    assert "population_minimizer" in sa.get_objective("hinge").known_failures
    assert sa.get_objective("f_dpo").consistent is False
    assert sa.get_objective("simpo").consistent is True
