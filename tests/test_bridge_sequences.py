"""Tests of `synthalign.bridge.sequences`: `sequence_logprobs` against the tabular policy and a prefix loop."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from _bridge_lms import (  # noqa: E402
    PAD,
    SEQUENCES,
    VOCAB,
    next_token_logp,
    one_token_batch,
    padded,
    seeded_pairs,
    tiny_llama,
)

from synthalign import bridge  # noqa: E402


def tiny_gpt2(seed: int) -> torch.nn.Module:
    """A one-layer float64 GPT-2: absolute position embeddings, so left padding is right only if the
    position ids skip the padding (Llama's rotary positions are relative and would not notice)."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=16, initializer_range=0.2
    )
    return transformers.GPT2LMHeadModel(config).to(torch.float64).eval()


def prefix_loop_logprobs(model, sequences) -> tuple[list[float], list[int]]:
    """ln pi(a|x) by one forward pass per completion token on the unpadded prefix: Σ_t ln pi(a_t | prefix)."""
    totals, lengths = [], []
    with torch.no_grad():
        for tokens, n_prompt in sequences:
            total = 0.0
            for t in range(n_prompt, len(tokens)):
                logits = model(input_ids=torch.tensor([tokens[:t]])).logits[0, -1]
                total += torch.log_softmax(logits, dim=-1)[tokens[t]].item()
            totals.append(total)
            lengths.append(len(tokens) - n_prompt)
    return totals, lengths


def test_sequence_logprobs_of_one_token_completion_is_the_tabular_policy(policy_model):
    prompt, chosen, _ = seeded_pairs(seed=2)
    batch = one_token_batch(prompt, chosen, chosen)
    with torch.no_grad():
        got = bridge.sequence_logprobs(
            policy_model,
            batch["chosen_input_ids"],
            batch["chosen_attention_mask"],
            batch["chosen_completion_mask"],
        )
        expected = next_token_logp(policy_model)[prompt, chosen]
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0.0)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_sequence_logprobs_equals_prefix_loop(family, side, policy_model):
    model = policy_model if family == "llama" else tiny_gpt2(seed=0)
    expected, lengths = prefix_loop_logprobs(model, SEQUENCES)
    ids, attention, completion = padded(SEQUENCES, side)
    with torch.no_grad():
        total = bridge.sequence_logprobs(model, ids, attention, completion)
        mean = bridge.sequence_logprobs(model, ids, attention, completion, average=True)
    expected = torch.tensor(expected, dtype=torch.float64)
    assert total.dtype == torch.float64
    torch.testing.assert_close(total, expected, atol=1e-12, rtol=0.0)
    torch.testing.assert_close(mean, expected / torch.tensor(lengths, dtype=torch.float64), atol=1e-12, rtol=0.0)


def test_sequence_logprobs_upcasts_half_precision_logits():
    # A bfloat16 model's logits are upcast before the log-softmax: the result is float32 and matches
    # the float32 log-softmax of the same bfloat16 logits.
    model = tiny_llama(seed=0).to(torch.bfloat16)
    ids, attention, completion = padded(SEQUENCES, "right")
    with torch.no_grad():
        got = bridge.sequence_logprobs(model, ids, attention, completion)
        logits = model(input_ids=ids, attention_mask=attention).logits.float()
    assert got.dtype == torch.float32
    # Same float32 operations up to the order of the sums over at most 3 tokens of |ln p| < 10:
    # rounding below 3 · 10 · 2^-24 ≈ 2e-6, inside atol = 1e-5.
    token_logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    expected = (token_logp * completion[:, 1:]).sum(dim=-1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0.0)


def _good_sequences():
    return padded(SEQUENCES, "right")


def _completion_with(row: int, position, value: int) -> torch.Tensor:
    """The good completion mask with one entry (or one row) changed; row 1 is [5, 2, 8] + 3 pads."""
    completion = _good_sequences()[2].clone()
    completion[row, position] = value
    return completion


def _with(index: int, value):
    sequences = list(_good_sequences())
    sequences[index] = value
    return sequences


BAD_SEQUENCES = {
    "ids_one_dim": (_with(0, torch.tensor([3, 7, 1])), "input_ids"),
    "ids_float": (_with(0, _good_sequences()[0].double()), "input_ids"),
    "ids_too_short": (
        [torch.tensor([[3]]), torch.tensor([[1]]), torch.tensor([[0]])],
        "input_ids",
    ),
    "attention_shape": (_with(1, torch.ones(3, 2, dtype=torch.long)), "attention_mask"),
    "attention_values": (_with(1, _good_sequences()[1] * 2), "attention_mask"),
    "completion_values": (_with(2, _good_sequences()[2] - 1), "completion_mask"),
    "completion_on_padding": (_with(2, _completion_with(row=1, position=4, value=1)), "completion_mask"),
    "completion_at_first_position": (_with(2, _completion_with(row=0, position=0, value=1)), "completion_mask"),
    "completion_empty_row": (_with(2, _completion_with(row=1, position=slice(None), value=0)), "completion_mask"),
}


@pytest.mark.parametrize("case", list(BAD_SEQUENCES))
def test_sequence_logprobs_rejects_bad_inputs(case, policy_model):
    sequences, name = BAD_SEQUENCES[case]
    with pytest.raises(ValueError, match=name):
        bridge.sequence_logprobs(policy_model, *sequences)


def test_completion_must_follow_a_prompt_token(policy_model):
    # Left padding [PAD, a, b]: the first completion token at position 1 would be predicted from padding.
    ids = torch.tensor([[PAD, 4, 5]])
    with pytest.raises(ValueError, match="completion_mask"):
        bridge.sequence_logprobs(policy_model, ids, torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 1]]))
