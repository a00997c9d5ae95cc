"""The tiny float64 causal LMs and one-token batches shared by the tests of `synthalign.bridge`.

The key check: with a one-token prompt and one-token completions a causal LM *is* a tabular policy
over its vocabulary, pi(a|x) = softmax(logits at the prompt)[a], so `pair_batch_loss` on explicit
pairs must equal `sa.empirical_loss` on the counts of the same pairs, in value and in gradient
with respect to the model's parameters (float64, 1e-10).  The models are built in code (no
download): a one-layer Llama with a 12-token vocabulary, float64, eager attention (so that the
Hessian-vector product of the training test can differentiate twice).

`LlamaRMSNorm` computes in float32 whatever the dtype of the model (it casts its input to float32),
so a float64 Llama is float32-accurate in its norms.  The forward values of the two paths still agree
exactly (same inputs, same roundings), but their gradients do not: the bridge back-propagates one row
per pair through the norm and the tabular path one row per prompt (the pairs' gradients summed
first), and float32 rounds the two differently (about 1e-7 relative).  The test models therefore use
the same norm computed in the input dtype (`Float64RMSNorm`).  The eager attention's float32 softmax
is exact at the first position (weights [1, 0, ...], gradient 0), the only one the equivalence scores.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

VOCAB = 12
GAMMA = 0.7
# The prompt tokens: tabular prompt x = i is the one-token prompt PROMPT_TOKENS[i].
PROMPT_TOKENS = (3, 5, 9)
N_PAIRS = 24


class Float64RMSNorm(transformers.models.llama.modeling_llama.LlamaRMSNorm):
    """LlamaRMSNorm's formula, w · h / sqrt(mean(h²) + eps), computed in the input dtype instead of float32."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def tiny_llama(seed: int) -> torch.nn.Module:
    """A one-layer float64 Llama with random weights and `Float64RMSNorm` norms.

    initializer_range 0.2 (not the default 0.02) makes the next-token distributions far from uniform
    (probabilities about 0.01 to 0.27), so that the losses and their gradients are not near-trivial.
    """
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        initializer_range=0.2,
        attn_implementation="eager",
    )
    model = transformers.LlamaForCausalLM(config).to(torch.float64).eval()
    for module in model.modules():
        if isinstance(module, transformers.models.llama.modeling_llama.LlamaRMSNorm):
            module.__class__ = Float64RMSNorm
    return model


def next_token_logp(model) -> torch.Tensor:
    """The tabular policy of the LM: ln pi(a | x) = log_softmax(logits after the prompt token), [X, A]."""
    prompts = torch.tensor(PROMPT_TOKENS).unsqueeze(-1)
    return torch.log_softmax(model(input_ids=prompts).logits[:, -1], dim=-1)


def one_token_batch(prompt: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> dict:
    """Sequences (prompt token, completion token), no padding, the completion token scored."""
    tokens = torch.tensor(PROMPT_TOKENS)[prompt]
    ones = torch.ones(len(prompt), 2, dtype=torch.long)
    completion = torch.tensor([[0, 1]]).expand(len(prompt), 2)
    return {
        "chosen_input_ids": torch.stack([tokens, chosen], dim=-1),
        "chosen_attention_mask": ones,
        "chosen_completion_mask": completion,
        "rejected_input_ids": torch.stack([tokens, rejected], dim=-1),
        "rejected_attention_mask": ones,
        "rejected_completion_mask": completion,
    }


def seeded_pairs(seed: int, n: int = N_PAIRS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n random (prompt index, chosen token, rejected token) triples."""
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randint(len(PROMPT_TOKENS), (n,), generator=generator)
    chosen = torch.randint(VOCAB, (n,), generator=generator)
    rejected = torch.randint(VOCAB, (n,), generator=generator)
    return prompt, chosen, rejected


# Rows of (tokens, number of prompt tokens); padded on the right or on the left below.
SEQUENCES = [
    ([3, 7, 1, 4, 10], 2),
    ([5, 2, 8], 1),
    ([9, 9, 6, 0, 11, 2], 3),
]
PAD = 0


def padded(sequences, side: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    length = max(len(tokens) for tokens, _ in sequences)
    ids, attention, completion = [], [], []
    for tokens, n_prompt in sequences:
        pad = length - len(tokens)
        row_completion = [0] * n_prompt + [1] * (len(tokens) - n_prompt)
        if side == "right":
            ids.append(tokens + [PAD] * pad)
            attention.append([1] * len(tokens) + [0] * pad)
            completion.append(row_completion + [0] * pad)
        else:
            ids.append([PAD] * pad + tokens)
            attention.append([0] * pad + [1] * len(tokens))
            completion.append([0] * pad + row_completion)
    return torch.tensor(ids), torch.tensor(attention), torch.tensor(completion)
