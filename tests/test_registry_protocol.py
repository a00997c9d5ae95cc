"""Tests of `synthalign.registry.protocol`: `Objective`, `Registry`, the decorator, `objective_from_loss`."""

from __future__ import annotations

import pytest
import torch

import synthalign as sa
from synthalign.registry import DEFAULT_REGISTRY, Registry, objective_from_loss


def _pmle_like(logp_chosen, logp_rejected, *, gamma, scale=1.0):
    return -torch.nn.functional.logsigmoid(scale * gamma * (logp_chosen - logp_rejected))


def test_decorator_reads_inputs_and_hyper_parameters_from_the_signature():
    obj = sa.objective("pmle_like", register=False)(_pmle_like)
    assert obj.kind == "pair" and obj.data == "preferences"
    assert obj.inputs == ("logp_chosen", "logp_rejected", "gamma")
    assert dict(obj.params) == {"scale": 1.0}
    assert not obj.needs_reward and not obj.needs_reference
    assert obj.resolve_params({"scale": 2.0}) == {"scale": 2.0}
    with pytest.raises(ValueError, match="no hyper-parameter"):
        obj.resolve_params({"tau": 1.0})


def test_prompt_objectives_and_declaration_errors():
    def rkl_like(logp, reward, *, gamma):
        return -(logp.exp() * reward).sum(-1) + gamma * (logp.exp() * logp).sum(-1)

    obj = sa.objective("rkl_like", data="prompts", register=False)(rkl_like)
    assert obj.kind == "prompt" and obj.inputs == ("logp", "reward", "gamma") and obj.needs_reward
    with pytest.raises(ValueError, match="data='prompts'"):
        sa.objective("bad", register=False)(rkl_like)
    with pytest.raises(ValueError, match="takes pairs"):
        sa.objective("bad", data="prompts", register=False)(_pmle_like)
    with pytest.raises(ValueError, match="reward input"):
        sa.objective("bad", data="pairs", register=False)(_pmle_like)
    with pytest.raises(ValueError, match="swap_symmetry"):
        sa.objective("bad", swap_symmetry="both", register=False)
    with pytest.raises(ValueError, match="not an input"):

        def positional_hyper(logp_chosen, temperature):
            return logp_chosen * temperature

        sa.objective("bad", register=False)(positional_hyper)


def test_a_user_registry_is_separate_from_the_default_one():
    registry = Registry()

    @registry.objective("mine")
    def mine(logp_chosen, logp_rejected, *, gamma):
        return _pmle_like(logp_chosen, logp_rejected, gamma=gamma)

    assert "mine" in registry and len(registry) == 1 and registry.names() == ["mine"]
    assert registry.get("mine") is mine and list(registry) == [mine]
    assert "mine" not in DEFAULT_REGISTRY
    with pytest.raises(ValueError, match="unknown objective 'pmle'"):
        registry.get("pmle")
    # An objective from a user registry runs through the library by value.
    world = sa.World.random(2, 3, seed=0)
    assert torch.isfinite(sa.population_loss(mine, world, world.reference))


def test_re_registering_a_user_objective_replaces_it_but_builtins_are_protected():
    registry = Registry()
    first = registry.objective("cell")(_pmle_like)

    def _pmle_like_again(logp_chosen, logp_rejected, *, gamma, scale=2.0):  # a notebook cell run again, edited
        return _pmle_like(logp_chosen, logp_rejected, gamma=gamma, scale=scale)

    second = registry.objective("cell")(_pmle_like_again)
    assert registry.get("cell") is second and registry.get("cell") is not first
    user_pmle = sa.objective("pmle", register=False)(_pmle_like)  # declaring without registering is always fine
    with pytest.raises(ValueError, match="replace=True"):
        DEFAULT_REGISTRY.register(user_pmle)
    assert sa.get_objective("pmle").fn.__module__.startswith("synthalign.")


def test_generated_objective_calls_the_loss_elementwise():
    # simpo with margin 0.5: −ln σ(gamma (ln pi(a⁺) − ln pi(a⁻)) − margin); ln(0.6/0.2) = 1.0986,
    # gamma = 2: 2.1972 − 0.5 = 1.6972 → −ln σ(1.6972) = ln(1 + e^−1.6972) = ln 1.18322 = 0.16822.
    obj = sa.get_objective("simpo")
    chosen = torch.log(torch.tensor([0.6], dtype=torch.float64))
    rejected = torch.log(torch.tensor([0.2], dtype=torch.float64))
    value = obj.fn(logp_chosen=chosen, logp_rejected=rejected, gamma=2.0, margin=0.5)
    assert value.shape == (1,)
    assert value.item() == pytest.approx(0.16822, abs=1e-5)


def test_objective_from_loss_rejects_a_loss_with_unknown_inputs():
    def odd(logp_chosen, logp_other, *, gamma, weight=None, reduction="mean"):
        return logp_chosen

    with pytest.raises(ValueError, match="logp_other"):
        objective_from_loss(odd, "odd", register=False)
