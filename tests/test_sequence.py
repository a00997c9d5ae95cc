"""Tests of `synthalign.worlds.sequence`: enumeration, sequence log-probabilities, the tabular view, validation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import synthalign as sa
from synthalign.worlds.sequence import SequenceSpace, SequenceWorld


def _two_token_world() -> SequenceWorld:
    # V = 2 (EOS = 0, one content token c = 1), L = 2: 𝒜 = {EOS, c EOS, c c}, P = 2 prefixes.
    # prefix "" : π(EOS) = 0.25, π(c) = 0.75;  prefix "c": π(EOS) = 0.4, π(c) = 0.6.
    logp = [[[math.log(0.25), math.log(0.75)], [math.log(0.4), math.log(0.6)]]]
    target = torch.tensor(logp, dtype=torch.float64)
    reference = torch.zeros(1, 2, 2, dtype=torch.float64)
    return SequenceWorld.from_tensors(vocab_size=2, max_length=2, target=target, reference=reference, gamma=0.5)


def test_hand_derived_sequence_probabilities():
    world = _two_token_world()
    # π(EOS) = 0.25; π(c EOS) = 0.75 · 0.4 = 0.30; π(c c) = 0.75 · 0.6 = 0.45; pi0 uniform per prefix:
    # π0 = (0.5, 0.25, 0.25).
    expected = torch.tensor([[0.25, 0.30, 0.45]], dtype=torch.float64)
    torch.testing.assert_close(world.as_tabular().target.probs, expected, rtol=0, atol=1e-15)
    uniform_prefix = torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64)
    torch.testing.assert_close(world.as_tabular().reference.probs, uniform_prefix)
    # KL(π*‖π0) = 0.25 ln(0.25/0.5) + 0.30 ln(0.30/0.25) + 0.45 ln(0.45/0.25) = 0.1459
    kl = 0.25 * math.log(0.5) + 0.30 * math.log(1.2) + 0.45 * math.log(1.8)
    assert sa.forward_kl(world.as_tabular().target, world.as_tabular().reference).item() == pytest.approx(kl, abs=1e-14)


def test_space_sizes():
    space = SequenceSpace(vocab_size=4, max_length=5)
    # K = 3: P = 1 + 3 + 9 + 27 + 81 = 121; N = P + 3^5 = 121 + 243 = 364.
    assert (space.n_prefixes, space.n_sequences) == (121, 364)


@pytest.mark.parametrize("eos", [0, 2])
def test_decode_encode_roundtrip_and_enumeration(eos):
    space = SequenceSpace(vocab_size=3, max_length=4, eos=eos)
    ids = torch.arange(space.n_sequences)
    tokens, lengths = space.decode(ids)
    assert torch.equal(space.encode(tokens, lengths), ids)
    # every sequence exactly once: the distinct token strings (cut at the length) are N = 1+2+4+8+16 = 31.
    strings = {tuple(t[:n].tolist()) for t, n in zip(tokens, lengths, strict=True)}
    assert len(strings) == space.n_sequences == 31
    for string in strings:  # ends at its first EOS, or has length L without EOS
        assert (string[-1] == eos and eos not in string[:-1]) or (len(string) == 4 and eos not in string)
    chunks = list(space.enumerate(chunk_size=7))
    assert torch.equal(torch.cat([c[0] for c in chunks]), ids)
    assert torch.equal(torch.cat([c[1] for c in chunks]), tokens)


def _reference_sequence_logp(world: SequenceWorld, field: str) -> torch.Tensor:
    """Slow, obviously correct: walk every token string, look each prefix up by its tuple."""
    space, table = world.space, getattr(world, field)
    content = [v for v in range(space.vocab_size) if v != space.eos]
    prefix_index = {}
    for depth in range(space.max_length):
        for rank, prefix in enumerate(itertools.product(content, repeat=depth)):
            prefix_index[prefix] = space.offsets[depth] + rank
    out = torch.empty(world.n_prompts, space.n_sequences, dtype=torch.float64)
    ids = torch.arange(space.n_sequences)
    tokens, lengths = space.decode(ids)
    for s in range(space.n_sequences):
        string = tokens[s, : lengths[s]].tolist()
        for x in range(world.n_prompts):
            out[x, s] = sum(table[x, prefix_index[tuple(string[:t])], string[t]] for t in range(len(string)))
    return out


def test_sequence_logp_matches_slow_reference():
    world = SequenceWorld.random(vocab_size=3, max_length=3, n_prompts=2, seed=1, eos=1)
    for field in ("target", "reference", "behavior"):
        torch.testing.assert_close(world.sequence_policy(field).logp, _reference_sequence_logp(world, field))


def test_as_tabular_gives_every_metric_and_loss():
    world = SequenceWorld.random(seed=0)
    tab = world.as_tabular()
    assert isinstance(tab, sa.World) and tab.n_responses == 364
    torch.testing.assert_close(tab.target.probs.sum(-1), torch.ones(3, dtype=torch.float64))
    assert sa.forward_kl(tab.target, tab.reference).item() > 0
    assert 0 < sa.total_variation(tab.target, tab.reference).item() < 1
    assert 0 < sa.squared_hellinger(tab.target, tab.reference).item() < 1
    assert 0 < sa.win_rate(tab, tab.target).item() < 1
    assert sa.population_loss("pmle", tab, tab.target) < sa.population_loss("pmle", tab, tab.reference)
    # population consistency (spec §6 item 13) carries over: Newton on the exact PMLE loss returns π*.
    fitted = sa.fit("pmle", tab.population_preferences(), max_iter=200)
    assert sa.forward_kl(tab.target, fitted.policy).item() < 1e-8


def test_dialed_distances():
    same = SequenceWorld.random(reference_mix=0.0, seed=3).as_tabular()
    assert sa.forward_kl(same.target, same.reference).item() < 1e-12
    far = SequenceWorld.random(reference_mix=1.0, seed=3).as_tabular()
    assert sa.forward_kl(far.target, far.reference).item() > 0.1
    short = SequenceWorld.random(eos_bias=5.0, seed=3).as_tabular()
    assert short.target.probs[:, 0].min() > 0.9  # π(EOS first) = e^5/(e^5 + 3 e^0·…) ≈ 0.98 at logit scale ~1


def test_extreme_but_valid_inputs_have_no_nan():
    world = SequenceWorld.random(vocab_size=3, max_length=4, logit_scale=60.0, seed=0)
    logp = world.as_tabular().target.logp
    assert not torch.isnan(logp).any()
    blocked = world.target.clone()
    blocked[:, :, 1] = -math.inf  # token 1 never emitted: sequences containing it get probability zero
    zero = SequenceWorld.from_tensors(vocab_size=3, max_length=4, target=blocked, reference=world.reference, gamma=1.0)
    tab = zero.as_tabular()
    assert not torch.isnan(tab.target.logp).any() and (tab.target.probs == 0).any()
    assert torch.isfinite(sa.forward_kl(tab.target, tab.reference))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"vocab_size": 1, "max_length": 2}, "vocab_size"),
        ({"vocab_size": 3, "max_length": 0}, "max_length"),
        ({"vocab_size": 3, "max_length": 2, "eos": 3}, "eos"),
        ({"vocab_size": 2.5, "max_length": 2}, "vocab_size"),
    ],
)
def test_space_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SequenceSpace(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"vocab_size": 1, "max_length": 2}, "vocab_size must be an integer >= 2, got 1"),
        ({"vocab_size": "3", "max_length": 2}, "vocab_size must be an integer >= 2, got '3'"),
        ({"vocab_size": 3, "max_length": True}, "max_length must be an integer >= 1, got True"),
        ({"vocab_size": 3, "max_length": 1.5}, "max_length must be an integer >= 1, got 1.5"),
        ({"vocab_size": 3, "max_length": 2, "eos": -1}, "eos must be an integer >= 0, got -1"),
        ({"vocab_size": 3, "max_length": 2, "eos": np.int64(3)}, "eos must lie in \\[0, vocab_size = 3\\), got 3"),
    ],
)
def test_space_refuses_bad_sizes_naming_the_argument(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SequenceSpace(**kwargs)


def test_space_accepts_numpy_integers_and_integral_floats_as_ints():
    space = SequenceSpace(np.int64(3), np.int32(2), eos=2.0)
    assert (space.vocab_size, space.max_length, space.eos) == (3, 2, 2)
    assert all(type(v) is int for v in (space.vocab_size, space.max_length, space.eos))
    assert space.n_sequences == SequenceSpace(3, 2, eos=2).n_sequences
    chunks = list(space.enumerate(chunk_size=np.int64(4)))
    assert [len(ids) for ids, _, _ in chunks] == [4, 3]
    for bad, pattern in ((0, "got 0"), (2.5, "got 2.5"), (None, "got None")):
        with pytest.raises(ValueError, match=f"chunk_size must be an integer >= 1, {pattern}"):
            list(space.enumerate(chunk_size=bad))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"n_prompts": 0}, "n_prompts must be an integer >= 1, got 0"),
        ({"n_prompts": 1.5}, "n_prompts must be an integer >= 1, got 1.5"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"seed": 0.5}, "seed must be an integer >= 0, got 0.5"),
        ({"eos_bias": math.nan}, "eos_bias must be finite"),
        ({"dtype": torch.int64}, "dtype must be torch.float32 or torch.float64, got torch.int64"),
    ],
)
def test_random_world_rejects_bad_sizes_seeds_and_settings(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SequenceWorld.random(vocab_size=3, max_length=2, **kwargs)


def test_random_world_sizes_accept_integral_numbers():
    world = SequenceWorld.random(vocab_size=3, max_length=2, n_prompts=2.0, seed=7.0)
    same = SequenceWorld.random(vocab_size=3, max_length=2, n_prompts=2, seed=7)
    assert world.n_prompts == 2 and torch.equal(world.target, same.target)


def test_world_validation_names_the_field():
    world = SequenceWorld.random(vocab_size=3, max_length=2, n_prompts=2)
    with pytest.raises(ValueError, match="target"):
        SequenceWorld.from_tensors(
            vocab_size=3, max_length=2, target=torch.zeros(2, 5, 3), reference=world.reference, gamma=1
        )
    with pytest.raises(ValueError, match="reference"):
        SequenceWorld.from_tensors(
            vocab_size=3, max_length=2, target=world.target, reference=torch.full((2, 3, 3), -math.inf), gamma=1
        )
    with pytest.raises(ValueError, match="behavior"):
        SequenceWorld(world.space, world.prompt_dist, world.target, world.reference, world.behavior + 1.0, 0.5)
    with pytest.raises(ValueError, match="gamma"):
        SequenceWorld(world.space, world.prompt_dist, world.target, world.target, world.target, 0)
    with pytest.raises(ValueError, match="prompt_dist"):
        SequenceWorld.from_tensors(
            vocab_size=3, max_length=2, target=world.target, reference=world.reference, prompt_dist=[0.7, 0.7], gamma=1
        )


def test_enumerate_a_million_sequences():
    # V = 3 (K = 2), L = 19: N = 2^20 − 1 = 1,048,575 sequences, P = 2^19 − 1 prefixes.
    world = SequenceWorld.random(vocab_size=3, max_length=19, n_prompts=1, seed=0)
    tab = world.as_tabular()
    assert tab.n_responses == 2**20 - 1
    total = torch.logsumexp(tab.target.logp, dim=-1)
    assert abs(total.item()) < 1e-10
    assert math.isfinite(sa.forward_kl(tab.target, tab.reference).item())
