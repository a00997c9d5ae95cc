"""Policy parametrizations: tables, sequence log-probs of samples, ancestral sampling against the exact law."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from synthalign.worlds.autoregressive import ModuleAutoregressive, TabularAutoregressive, TabularSoftmax, as_policy
from synthalign.worlds.sequence import SequenceWorld


class PrefixTable(torch.nn.Module):
    """A module form of a per-prefix table: looks the prefix of the given tokens up."""

    def __init__(self, world: SequenceWorld):
        super().__init__()
        self.space = world.space
        self.logits = torch.nn.Parameter(world.target.clone())

    def forward(self, prompts, tokens):
        position = tokens.shape[1]
        padded = torch.nn.functional.pad(tokens, (0, self.space.max_length - position), value=self.space.eos)
        return self.logits[prompts, self.space.prefix_ids(padded)[:, position]]


def _chi_square_pvalue(ids: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson chi-square of draws `ids` [n] against `probs` [N], pooling cells of expected count < 5."""
    n = ids.numel()
    observed = torch.bincount(ids, minlength=probs.numel()).double()
    expected = probs * n
    big = expected >= 5
    obs = torch.cat([observed[big], observed[~big].sum().unsqueeze(0)])
    exp = torch.cat([expected[big], expected[~big].sum().unsqueeze(0)])
    keep = exp > 0
    obs, exp = obs[keep].numpy(), exp[keep].numpy()
    return float(stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue)


def test_tabular_autoregressive_table_equals_world():
    world = SequenceWorld.random(seed=0)
    policy = TabularAutoregressive(world.target.expand(2, -1, -1, -1), world.space)
    table = policy.table()
    torch.testing.assert_close(table[1], world.as_tabular().target.logp)
    assert as_policy(policy).batch_shape == (2,)


def test_log_prob_of_samples_equals_table_lookup():
    world = SequenceWorld.random(seed=1)
    policy = TabularAutoregressive(world.reference.expand(3, -1, -1, -1), world.space)
    prompts = torch.arange(world.n_prompts).expand(3, -1)
    ids = policy.sample(prompts, 50, generator=0)
    assert ids.shape == (3, world.n_prompts, 50)
    torch.testing.assert_close(policy.log_prob(prompts, ids), policy.table().gather(-1, ids))


def test_module_policy_matches_tabular_and_has_gradients():
    world = SequenceWorld.random(vocab_size=3, max_length=4, seed=2)
    module = PrefixTable(world)
    policy = ModuleAutoregressive(module, world.space, world.n_prompts)
    table = policy.table()
    torch.testing.assert_close(table, world.as_tabular().target.logp)
    table.exp().mul(torch.arange(world.n_sequences, dtype=torch.float64)).sum().backward()
    assert module.logits.grad is not None and module.logits.grad.abs().sum() > 0
    ids = policy.sample(torch.arange(world.n_prompts), 10, generator=3)
    torch.testing.assert_close(policy.log_prob(torch.arange(world.n_prompts), ids), table.detach().gather(-1, ids))


def test_table_gradcheck_float64():
    world = SequenceWorld.random(vocab_size=3, max_length=2, n_prompts=1, seed=4)
    logits = world.target.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: TabularAutoregressive(t, world.space).table(), (logits,))


def test_ancestral_sampling_follows_the_sequence_law():
    world = SequenceWorld.random(vocab_size=3, max_length=4, n_prompts=2, seed=5)
    policy = TabularAutoregressive(world.behavior, world.space)
    ids = policy.sample(torch.arange(2), 40_000, generator=11)
    probs = world.as_tabular().behavior.probs
    for x in range(2):
        assert _chi_square_pvalue(ids[x], probs[x]) > 1e-3


def test_tabular_softmax_sampling_follows_its_law():
    logits = torch.tensor([[0.0, 1.0, -2.0, float("-inf")], [3.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    policy = TabularSoftmax(logits)
    draws = policy.sample(torch.arange(2), 30_000, generator=0)
    assert (draws[0] != 3).all()  # a -inf logit is never drawn
    for x in range(2):
        assert _chi_square_pvalue(draws[x], policy.table()[x].exp()) > 1e-3


def test_same_seed_same_numbers():
    world = SequenceWorld.random(seed=0)
    policy = TabularAutoregressive(world.target, world.space)
    first = policy.sample(torch.arange(3), 100, generator=7)
    assert torch.equal(first, policy.sample(torch.arange(3), 100, generator=7))
    assert not torch.equal(first, policy.sample(torch.arange(3), 100, generator=8))


def test_bad_input():
    world = SequenceWorld.random(seed=0)
    with pytest.raises(ValueError, match="logits"):
        TabularAutoregressive(torch.zeros(3, 5, 4), world.space)
    with pytest.raises(ValueError, match="prompts"):
        TabularAutoregressive(world.target, world.space).sample(torch.tensor([5]), 2, generator=0)
    with pytest.raises(ValueError, match="seed"):
        TabularSoftmax(torch.zeros(2, 3)).sample(torch.arange(2), 2, generator=-1)
