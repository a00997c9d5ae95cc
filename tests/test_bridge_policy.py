"""A causal LM as a policy of a sequence world: table, log-probabilities, sampling, exact metrics, packaging."""

from __future__ import annotations

import importlib

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import synthalign as sa  # noqa: E402
from synthalign.bridge import _deps  # noqa: E402

V, L, X = 4, 3, 3  # N = 1 + 3 + 9 + 27 = 40 sequences per prompt


def tiny_llama(seed: int = 0, vocab_size: int = V):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def world():
    return sa.SequenceWorld.random(V, L, X, seed=0)


@pytest.fixture(scope="module")
def policy(world):
    return sa.LMPolicy(tiny_llama(), world.space, X)


def test_table_is_normalized_and_equals_the_log_probability_of_every_sequence(world, policy):
    table = policy.table()
    assert table.shape == (X, world.n_sequences) and table.dtype == torch.float64
    torch.testing.assert_close(torch.logsumexp(table, dim=-1), torch.zeros(X, dtype=torch.float64), atol=1e-6, rtol=0)
    every = policy.log_prob(torch.arange(X), torch.arange(world.n_sequences).expand(X, -1))
    # float32 model: one forward pass per sequence versus one per longest prefix.
    torch.testing.assert_close(every, table, atol=2e-6, rtol=0)


def test_table_gradient_equals_log_prob_gradient(world, policy):
    weights = torch.randn(X, world.n_sequences, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    params = list(policy.lm.parameters())
    grad_table = torch.autograd.grad((policy.table() * weights).sum(), params)
    every = policy.log_prob(torch.arange(X), torch.arange(world.n_sequences).expand(X, -1))
    grad_loop = torch.autograd.grad((every * weights).sum(), params)
    assert max(g.abs().max().item() for g in grad_table) > 1e-3
    for a, b in zip(grad_table, grad_loop, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_ancestral_samples_follow_the_table(world, policy):
    n = 4000
    samples = policy.sample(torch.arange(X), n, 0)
    assert samples.shape == (X, n)
    freq = torch.zeros(X, world.n_sequences, dtype=torch.float64).scatter_add_(
        1, samples, torch.ones_like(samples, dtype=torch.float64)
    )
    freq = freq / n
    p = policy.table().detach().exp()
    # Each frequency is a binomial mean: 5 standard errors (plus one count) bounds every cell at these seeds.
    bound = 5 * (p * (1 - p) / n).sqrt() + 1.0 / n
    assert ((freq - p).abs() <= bound).all()


def test_forward_kl_over_all_sequences_and_mass_outside(world, policy):
    estimate = policy.as_policy(world.prompt_dist)
    target = world.as_tabular().target
    kl = sa.forward_kl(target, estimate)
    p, q = target.logp.exp(), estimate.logp
    by_hand = (world.prompt_dist * (p * (target.logp - q)).sum(-1)).sum()
    assert abs(kl.item() - by_hand.item()) <= 1e-12 and kl.item() > 0
    support = torch.zeros(X, world.n_sequences, dtype=torch.bool)
    support[:, :4] = True  # EOS and the three one-token sequences
    outside = sa.mass_outside(estimate, support)
    expected = (world.prompt_dist * estimate.logp[:, 4:].exp().sum(-1)).sum()
    assert abs(outside.item() - expected.item()) <= 1e-12
    assert 0 < outside.item() < 1


def test_default_prompt_tokens_are_distinct_base_v_digits():
    tokens = sa.bridge.default_prompt_tokens(5, 2)  # 5 prompts in base 2: 3 digits
    assert tokens.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1], [1, 0, 0]]


def test_default_prompt_tokens_can_start_with_a_fixed_token():
    tokens = sa.bridge.default_prompt_tokens(3, 2, start=1)  # 3 prompts in base 2: 2 digits, after token 1
    assert tokens.tolist() == [[1, 0, 0], [1, 0, 1], [1, 1, 0]]
    with pytest.raises(ValueError, match="start"):
        sa.bridge.default_prompt_tokens(3, 2, start=2)


def test_a_rotary_model_ties_the_prefixes_of_a_constant_string_unless_prompts_start_with_eos(world):
    # Prompt x = 1 is the one token 1 (base V = 4, X = 3), and content token 1 repeated gives the strings
    # [1], [1, 1], [1, 1, 1]: every value a rotary-position model attends to is the same, so its next-token
    # distributions at the prefixes (), (1), (1, 1) of prompt 1 are equal whatever its weights.
    space = world.space
    # prefix ids run depth by depth; (), (1), (1, 1) are rank 0 of their depth (1 is the first content token)
    ones = [sum(space.level_sizes[:depth]) for depth in range(L)]
    for seed in (0, 1):
        tied = sa.LMPolicy(tiny_llama(seed), space, X).prefix_logp().detach()[1, ones]
        assert (tied - tied[0]).abs().max().item() < 1e-6
        prompts = sa.bridge.default_prompt_tokens(X, V, start=space.eos)
        free = sa.LMPolicy(tiny_llama(seed), space, X, prompt_tokens=prompts).prefix_logp().detach()[1, ones]
        assert (free - free[0]).abs().max().item() > 1e-3


def test_model_vocabulary_must_be_the_world_tokens(world):
    wider = sa.LMPolicy(tiny_llama(vocab_size=V + 2), world.space, X)
    with pytest.raises(ValueError, match="V = 4"):
        wider.table()
    with pytest.raises(ValueError, match="prompt_tokens"):
        sa.LMPolicy(tiny_llama(), world.space, X, prompt_tokens=torch.zeros(2, 1, dtype=torch.int64))


def test_missing_dependency_names_the_extra(monkeypatch):
    real = importlib.import_module

    def refuse(name, *args):
        if name.startswith("accelerate"):
            raise ImportError("No module named 'accelerate'")
        return real(name, *args)

    monkeypatch.setattr(_deps.importlib, "import_module", refuse)
    with pytest.raises(ImportError, match=r"pip install 'synthalign\[bridge\]'"):
        _deps.require("accelerate")
