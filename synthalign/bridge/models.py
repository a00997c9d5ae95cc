"""Small policies of a sequence world to train on its exact table: a tiny causal LM built from a config
(no download), and two trainable parametrizations with the same interface (`table()`, `parameters()`).

* `tiny_causal_lm`: a randomly initialised Llama over the world's V tokens, float64 by default (exact metrics);
* `TransformerPolicy`: a causal LM as an `LMPolicy` whose prompts start with EOS
  (``default_prompt_tokens(X, V, start=space.eos)``, so that every policy of the world is representable:
  `synthalign.bridge.policy`);
* `TabularARPolicy`: the tabular autoregressive policy, per-prefix logits [X, P, V] as its parameters
  (it can represent every policy on the sequences: the control of a transformer).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthalign.bridge._deps import require
from synthalign.bridge.policy import LMPolicy, default_prompt_tokens
from synthalign.worlds.autoregressive import TabularAutoregressive
from synthalign.worlds.sequence import SequenceSpace

if TYPE_CHECKING:
    from synthalign._types import DeviceLike

__all__ = ["tiny_causal_lm", "TransformerPolicy", "TabularARPolicy"]


def tiny_causal_lm(
    vocab_size: int,
    hidden: int = 32,
    layers: int = 2,
    *,
    heads: int = 2,
    max_positions: int = 16,
    seed: int = 0,
    device: DeviceLike = "cpu",
    dtype: torch.dtype = torch.float64,
) -> torch.nn.Module:
    """A randomly initialised `transformers.LlamaForCausalLM` with `vocab_size` tokens, from a config (no download).

    `hidden` units, `layers` decoder layers of `heads` heads, MLP width 2·hidden, untied embeddings;
    the weights are drawn after ``torch.manual_seed(seed)``, then moved to `device` and `dtype`.
    """
    transformers = require("transformers")
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=max_positions, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config).to(device=device, dtype=dtype)


class TransformerPolicy:
    """A causal LM's exact table [X, N] and its parameters, the prompts started with EOS."""

    def __init__(self, model: torch.nn.Module, space: SequenceSpace, n_prompts: int):
        self.module = model
        # EOS first: no prompt + prefix string is then constant, which a rotary-position model could
        # not tell apart from its own prefixes (`synthalign.bridge.policy`); every policy is representable.
        prompt_tokens = default_prompt_tokens(n_prompts, space.vocab_size, start=space.eos)
        self.lm = LMPolicy(model, space, n_prompts, prompt_tokens=prompt_tokens)

    def table(self) -> Tensor:
        """ln pi(a|x) over all N sequences, [X, N] (differentiable)."""
        return self.lm.table()

    def prefix_logp(self) -> Tensor:
        """ln pi(v | x, prefix), [X, P, V] (differentiable)."""
        return self.lm.prefix_logp()

    def parameters(self) -> Iterable[torch.nn.Parameter]:
        return self.module.parameters()


class TabularARPolicy:
    """The tabular autoregressive policy from per-prefix logits [X, P, V] (a trainable copy of `logits`)."""

    def __init__(self, logits: Tensor, space: SequenceSpace):
        self.logits = logits.detach().clone().requires_grad_(True)
        self.ar = TabularAutoregressive(self.logits, space)

    def table(self) -> Tensor:
        """ln pi(a|x) over all N sequences, [X, N] (differentiable)."""
        return self.ar.table()

    def parameters(self) -> list[Tensor]:
        return [self.logits]
