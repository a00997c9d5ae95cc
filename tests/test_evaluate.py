"""Tests of `synthalign.evaluate`: the one binding of input names, the one beta·KL term, and the losses."""

from __future__ import annotations

import math

import pytest
import torch

import synthalign as sa
from synthalign.evaluate import (
    cell_inputs,
    cell_values,
    kl_regularizer,
    make_context,
    pair_inputs,
    prompt_inputs,
    prompt_values,
)

DTYPE = torch.float64


def _two_response_world() -> sa.World:
    # pi* = (0.6, 0.4), pi0 = mu = uniform, gamma = 1, one prompt.
    return sa.World.from_tensors(
        target=torch.tensor([[0.6, 0.4]], dtype=DTYPE), reference=torch.tensor([[0.5, 0.5]], dtype=DTYPE), gamma=1.0
    )


def test_pair_inputs_bind_every_declared_name():
    obj = sa.get_objective("rebel")  # logp_*, ref_logp_*, reward_* and eta
    policy = (torch.tensor([-1.0]), torch.tensor([-2.0]))
    reference = (torch.tensor([-0.5]), torch.tensor([-0.7]))
    reward = (torch.tensor([0.3]), torch.tensor([0.1]))
    inputs = pair_inputs(obj, policy, reference=reference, reward=reward, gamma=0.5)
    assert set(inputs) == set(obj.inputs)
    assert inputs["logp_chosen"] is policy[0] and inputs["logp_rejected"] is policy[1]
    assert inputs["ref_logp_chosen"] is reference[0] and inputs["ref_logp_rejected"] is reference[1]
    assert inputs["reward_chosen"] is reward[0] and inputs["reward_rejected"] is reward[1]
    distillation = pair_inputs(sa.get_objective("distillation"), policy, reference=None, reward=reward, gamma=0.5)
    torch.testing.assert_close(distillation["target_margin"], torch.tensor([0.2]))  # 0.3 − 0.1
    assert distillation["gamma"] == 0.5


def test_pair_inputs_name_a_missing_source():
    policy = (torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="'dpo' needs a reference"):
        pair_inputs(sa.get_objective("dpo"), policy, reference=None, reward=None, gamma=1.0)
    with pytest.raises(ValueError, match="'distillation' needs a reward"):
        pair_inputs(sa.get_objective("distillation"), policy, reference=None, reward=None, gamma=1.0)
    with pytest.raises(ValueError, match="'rkl' needs a reward"):
        prompt_inputs(sa.get_objective("rkl"), torch.zeros(1, 2), reference=None, reward=None, gamma=1.0)


def test_cell_values_are_the_binding_on_each_cell():
    world = sa.World.random(2, 3, gamma=0.7, seed=1)
    obj = sa.get_objective("dpo")
    ctx = make_context(obj, world, None, {})
    logp = torch.log_softmax(torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=DTYPE), -1)
    cells = cell_values(obj, logp, ctx, None)
    ref = world.reference.logp
    for x in range(2):
        for a in range(3):
            for b in range(3):
                one = pair_inputs(
                    obj, (logp[x, a], logp[x, b]), reference=(ref[x, a], ref[x, b]), reward=None, gamma=0.7
                )
                assert cells[x, a, b].item() == pytest.approx(obj.fn(**one).item(), abs=1e-14)


def test_cell_inputs_mask_zero_probability_sources_only_where_unused():
    world = sa.World.from_tensors(
        target=torch.tensor([[0.5, 0.5, 0.0]], dtype=DTYPE), reference=torch.ones(1, 3, dtype=DTYPE) / 3, gamma=1.0
    )
    obj = sa.get_objective("pmle")
    ctx = make_context(obj, world, None, {})
    weight = torch.tensor([[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]], dtype=DTYPE)
    inputs = cell_inputs(obj, world.target.logp, ctx, weight)
    # Cells touching the zero-probability response carry weight 0: masked to 0, so no inf·0 and no NaN.
    assert torch.isfinite(inputs["logp_chosen"]).all() and torch.isfinite(inputs["logp_rejected"]).all()
    unmasked = cell_inputs(obj, world.target.logp, ctx, None)
    assert torch.isinf(unmasked["logp_chosen"]).any()  # without weights nothing is masked
    loss = sa.empirical_loss("pmle", sa.PreferenceData(weight.unsqueeze(0), 4, world), world.target)
    # 4 pairs: two ties (a, a) at −ln σ(0) = ln 2 and (0, 1), (1, 0) at −ln σ(0) = ln 2: mean ln 2.
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-15)


def test_kl_regularizer_hand_values_and_zero_probabilities():
    # pi = (1/2, 1/2, 0), pi0 = (1/4, 1/4, 1/2): KL = 2 · ½ ln(½ / ¼) + 0 · ln(0 / ½) = ln 2 → beta = 0.5: ½ ln 2.
    # pi = (1/2, 1/2, 0), pi0 = (1, 0, 0): pi puts mass where pi0 has none → +inf.
    logp = torch.log(torch.tensor([[[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]], dtype=DTYPE))  # [1, 2, 3]
    ref = torch.log(torch.tensor([[0.25, 0.25, 0.5], [1.0, 0.0, 0.0]], dtype=DTYPE))  # [2, 3]
    value = kl_regularizer(logp, ref, 0.5)
    assert value.shape == (1, 2)
    assert value[0, 0].item() == pytest.approx(0.5 * math.log(2.0), abs=1e-15)
    assert value[0, 1].item() == math.inf
    assert torch.equal(kl_regularizer(logp, ref, 0.0), torch.zeros(1, 2, dtype=DTYPE))
    with pytest.raises(ValueError, match="beta"):
        kl_regularizer(logp, ref, -0.1)


def test_prompt_values_add_beta_kl_exactly_once():
    world = sa.World.random(3, 4, gamma=0.5, seed=2)
    logp = torch.log_softmax(torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=DTYPE), -1)
    kl = sa.kl_per_prompt(logp, world.reference.logp)
    ctx = make_context(sa.get_objective("pmle"), world, None, {})
    # A pair objective's per-prompt terms are beta · KL and nothing else.
    torch.testing.assert_close(prompt_values(sa.get_objective("pmle"), logp, ctx, 0.3), 0.3 * kl)
    assert torch.equal(prompt_values(sa.get_objective("pmle"), logp, ctx, 0.3), kl_regularizer(logp, ctx.ref_logp, 0.3))
    torch.testing.assert_close(prompt_values(sa.get_objective("pmle"), logp, ctx, 0.0), torch.zeros(3, dtype=DTYPE))
    rkl = sa.get_objective("rkl")
    rkl_ctx = make_context(rkl, world, world.true_reward, {})
    torch.testing.assert_close(
        prompt_values(rkl, logp, rkl_ctx, 0.3) - prompt_values(rkl, logp, rkl_ctx, 0.0), 0.3 * kl, rtol=0, atol=1e-14
    )
    # The empirical loss adds E_{x ~ prompts of the data}[beta KL] once: with counts c_x / n.
    data = world.sample_preferences(200, 2, seed=3)
    weights = data.prompt_counts / 200.0
    expected = (weights * 0.3 * kl).sum(-1)
    gap = sa.empirical_loss("pmle", data, logp, beta=0.3) - sa.empirical_loss("pmle", data, logp)
    torch.testing.assert_close(gap, expected, rtol=0, atol=1e-13)


def test_population_loss_by_hand():
    # Cells of the population law: (a, a) weight mu(a)² = 0.25 each at −ln σ(0) = ln 2; (0, 1) weight
    # 2 · 0.25 · P(0 ≻ 1) = 0.5 · 0.6 = 0.3 at −ln σ(ln 1.5) = −ln 0.6; (1, 0) weight 0.2 at −ln 0.4.
    # PMLE at pi*: 0.5 ln 2 + 0.3 · 0.510826 + 0.2 · 0.916291 = 0.346574 + 0.153248 + 0.183258 = 0.683080.
    world = _two_response_world()
    assert sa.population_loss("pmle", world, world.target).item() == pytest.approx(0.683080, abs=1e-6)
    expected = 0.5 * math.log(2) - 0.3 * math.log(0.6) - 0.2 * math.log(0.4)
    assert sa.population_loss("pmle", world, world.target).item() == pytest.approx(expected, abs=1e-15)
    # DPO with a uniform pi0 is PMLE (spec §6.4).
    assert sa.population_loss("dpo", world, world.target).item() == pytest.approx(expected, abs=1e-15)


def test_population_loss_keeps_the_policy_batch_shape():
    world = sa.World.random(2, 3, seed=0)
    batch = torch.log_softmax(torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0), dtype=DTYPE), -1)
    assert sa.population_loss("pmle", world, batch).shape == (5,)
    assert sa.population_loss("pmle", world, world.reference).shape == ()
    assert sa.population_loss("rkl", world, batch, beta=0.2).shape == (5,)


def test_losses_refuse_data_the_objective_cannot_use():
    world = sa.World.random(2, 3, seed=0)
    pairs = world.sample_pairs(10, 1, seed=0)
    with pytest.raises(ValueError, match="needs labelled preferences"):
        sa.empirical_loss("pmle", pairs, world.reference)
    with pytest.raises(ValueError, match="must be PreferenceData or PairData"):
        sa.empirical_loss("pmle", world.reference.logp, world.reference)
    with pytest.raises(ValueError, match="needs a reward"):
        sa.empirical_loss("rkl", world.sample_preferences(10, 1, seed=0), world.reference)


def _law_worlds():
    from synthalign.worlds.laws import GeneralLaw, thurstone

    base = sa.World.random(3, 6, seed=4)
    return [base, base.replace(law=thurstone()), sa.World.random(2, 4, seed=2).replace(law=GeneralLaw.random(2, 4))]


@pytest.mark.parametrize("world", _law_worlds(), ids=["bradley-terry", "thurstone", "general"])
def test_population_weights_are_the_law_block_by_block(world):
    # The blocks of `PopulationWeights` are the population tables in any block split (to the last
    # bits: a vectorized sigmoid may round a block's tail differently).
    from synthalign.evaluate import CellBlock, PopulationWeights

    X, A = world.n_prompts, world.n_responses
    policy = sa.Policy.from_logits(torch.randn(X, A, dtype=DTYPE, generator=torch.Generator().manual_seed(0)))
    for labelled, table in (
        (True, sa.population_preferences(world).counts),
        (False, sa.population_pairs(world, policy).counts),
    ):
        weights = PopulationWeights(world, labelled=labelled, pairs_from=None if labelled else policy)
        assert weights.shape == tuple(table.shape)
        rows = [weights.block(CellBlock(slice(x, x + 1), slice(a, min(a + 4, A)))) for x in range(X) for a in (0, 4)]
        blocks = [torch.cat(rows[2 * x : 2 * x + 2], dim=2) for x in range(X)]
        torch.testing.assert_close(torch.cat(blocks, dim=1), table, rtol=1e-15, atol=0.0)


@pytest.mark.parametrize("name", ["pmle", "dpo", "distillation", "rkl", "simpo"])
def test_population_loss_equals_the_loss_on_the_population_table(name, monkeypatch):
    # The block-by-block population loss is the empirical loss on the materialized law (blocks of 7 cells).
    monkeypatch.setattr(sa.evaluate, "CELL_BLOCK", 7)
    world = sa.World.random(3, 6, seed=4)
    obj = sa.get_objective(name)
    policies = sa.Policy.from_logits(torch.randn(2, 3, 6, dtype=DTYPE, generator=torch.Generator().manual_seed(1)))
    data = sa.population_pairs(world) if obj.data == "pairs" else sa.population_preferences(world)
    reward = world.true_reward if obj.needs_reward else None
    for beta in (0.0, 0.3):
        got = sa.population_loss(name, world, policies, beta=beta)
        want = sa.empirical_loss(name, data, policies, beta=beta, reward=reward)
        torch.testing.assert_close(got, want, rtol=1e-14, atol=0.0)


def test_population_loss_with_a_zero_probability_response_is_finite_where_unused():
    # pi*(a) = 0 and mu(a) = 0: the cells of that response have weight 0; a policy giving it
    # probability 0 must not turn 0 · inf into NaN in the block sums.
    target = torch.tensor([[0.6, 0.4, 0.0]], dtype=DTYPE)
    world = sa.World.from_tensors(target=target, reference=torch.tensor([[0.5, 0.5, 0.0]], dtype=DTYPE), gamma=1.0)
    policy = sa.Policy.from_probs(torch.tensor([[0.7, 0.3, 0.0]], dtype=DTYPE))
    loss = sa.population_loss("pmle", world, policy)
    want = sa.empirical_loss("pmle", sa.population_preferences(world), policy).reshape(())
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, want, rtol=1e-14, atol=0.0)
