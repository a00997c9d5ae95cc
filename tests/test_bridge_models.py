"""The bridge's small trainable policies: a tiny causal LM from a config, and the two exact-table parametrizations."""

import pytest
import torch

pytest.importorskip("transformers")

import synthalign as sa  # noqa: E402
from synthalign.bridge.models import TabularARPolicy, TransformerPolicy, tiny_causal_lm  # noqa: E402


def test_tiny_causal_lm_is_seeded_float64_over_the_vocabulary():
    model = tiny_causal_lm(5, 16, 1, seed=3)
    logits = model(input_ids=torch.tensor([[0, 1, 2]])).logits
    assert logits.shape == (1, 3, 5) and logits.dtype == torch.float64
    again, other = tiny_causal_lm(5, 16, 1, seed=3), tiny_causal_lm(5, 16, 1, seed=4)
    first = [p.detach() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(first, again.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other.parameters(), strict=True))


def test_both_parametrizations_give_a_differentiable_normalized_table():
    world = sa.SequenceWorld.random(3, 2, 2, seed=0)
    transformer = TransformerPolicy(tiny_causal_lm(3, 16, 1, seed=0), world.space, 2)
    assert transformer.lm.prompt_tokens[:, 0].eq(world.space.eos).all()  # prompts start with EOS
    prefix = transformer.prefix_logp().detach()
    control = TabularARPolicy(prefix, world.space)
    assert control.parameters()[0].is_leaf and control.parameters()[0] is not prefix
    for policy in (transformer, control):
        table = policy.table()
        torch.testing.assert_close(table.logsumexp(dim=-1), torch.zeros(2, dtype=torch.float64))
        table.sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    # the control starts from the transformer's policy
    torch.testing.assert_close(control.table().detach(), transformer.table().detach(), atol=1e-12, rtol=0)
