"""A causal language model as a policy of a sequence world, measured exactly against the world's target.

The world's tokens are the model's vocabulary: token v of a `SequenceSpace` is token id v of the
model, whose logits must have exactly V = `space.vocab_size` entries (so pi(·|x) is the model's own
next-token distribution, not a renormalized slice of a larger one).  Prompt x is the fixed token
sequence `prompt_tokens[x]` (by default x written in base V, most significant digit first, on
⌈log_V X⌉ tokens); a response is its tokens c₁…c_t EOS (or c₁…c_L) after the prompt.

A model without absolute position embeddings (rotary ones: Llama, Qwen, ...) cannot tell the
positions of a constant token string apart: every value vector attended to is the same, so the
hidden state is the same at every position.  Under the default prompts, a prompt written as the
single digit c (a content token) and its prefixes c, cc, ... are such strings, and the model is
forced to give them one next-token distribution, so it cannot represent every policy of the world.
``default_prompt_tokens(X, V, start=space.eos)`` starts every prompt with EOS, which no response
prefix contains, and removes these ties.

`LMPolicy` is a parametrization in the sense of `synthalign.worlds.autoregressive` (the slot of
`ModuleAutoregressive`), so the on-policy machinery of `synthalign.estimators.onpolicy` applies:

* `log_prob(prompts, responses)`: ln pi(a|x) of sequence ids from one forward pass (differentiable);
* `sample(prompts, n, generator)`: the project's batched ancestral sampler, one forward per position;
* `prefix_logp()` / `table()`: when the space is enumerable, the next-token log-probabilities of
  every prefix [X, P, V] from one forward pass over the K^(L−1) longest prefixes (a causal model's
  logits at position t see only tokens ≤ t, so each longest prefix scores all of its ancestors),
  and from them ln pi(a|x) over all N sequences [X, N], differentiable in the model's parameters.

With the table every metric of the toolkit applies to the transformer unchanged:
``sa.forward_kl(world.as_tabular().target, policy.as_policy(world.prompt_dist))`` is E_x KL(pi*‖pi)
over ALL sequences, and `mass_outside` the mass pi puts off a response set (e.g. a dataset's support),
which pair losses never see.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthalign._checks import check_int, check_logp, check_prompt_dist
from synthalign.bridge._validate import check_model
from synthalign.bridge.sequences import sequence_logprobs
from synthalign.worlds.autoregressive import ModuleAutoregressive, as_policy
from synthalign.worlds.policy import Policy
from synthalign.worlds.sequence import SequenceSpace

if TYPE_CHECKING:
    from synthalign._types import DeviceLike, PolicyLike

__all__ = ["LMPolicy", "default_prompt_tokens", "mass_outside"]


def default_prompt_tokens(n_prompts: int, vocab_size: int, *, start: int | None = None) -> Tensor:
    """Prompt x as its base-V digits, most significant first, on max(1, ⌈log_V X⌉) tokens: int64 [X, Tp].

    `start`: a token id put before every prompt's digits (Tp one larger); the space's EOS keeps a
    rotary-position model from confusing the positions of constant strings (module docstring).
    """
    n_prompts = check_int(n_prompts, "n_prompts")
    vocab_size = check_int(vocab_size, "vocab_size", minimum=2)
    width = max(1, math.ceil(math.log(n_prompts) / math.log(vocab_size) - 1e-12)) if n_prompts > 1 else 1
    powers = vocab_size ** torch.arange(width - 1, -1, -1)
    digits = torch.div(torch.arange(n_prompts).unsqueeze(-1), powers, rounding_mode="floor") % vocab_size
    if start is None:
        return digits
    start = check_int(start, "start", minimum=0)
    if start >= vocab_size:
        raise ValueError(f"start must be a token id in [0, vocab_size = {vocab_size}), got {start}")
    return torch.cat([torch.full((n_prompts, 1), start, dtype=digits.dtype), digits], dim=-1)


class _PromptedModel:
    """The `PrefixModel` of a causal LM: (prompts [B], prefix tokens [B, t]) → next-token logits [B, V]."""

    def __init__(self, model: torch.nn.Module, prompt_tokens: Tensor):
        self.model, self.prompt_tokens = model, prompt_tokens

    def __call__(self, prompts: Tensor, tokens: Tensor) -> Tensor:
        prompt = self.prompt_tokens.to(prompts.device)[prompts]
        input_ids = torch.cat([prompt, tokens.to(prompt.dtype)], dim=-1)
        logits = self.model(input_ids=input_ids, use_cache=False).logits[:, -1]
        return logits.to(torch.promote_types(logits.dtype, torch.float32))


class LMPolicy(ModuleAutoregressive):
    """A causal LM (`transformers` ...ForCausalLM, or any module returning `.logits`) as pi(a|x) on `space`.

    Args:
      model: the causal LM; its logits must have `space.vocab_size` entries.  It may be the module
        `accelerate` prepared (DDP-wrapped): calls go through it.
      space: the `SequenceSpace` (V, L, EOS) of the world.
      n_prompts: X.
      prompt_tokens: int64 [X, Tp] token ids of each prompt (default `default_prompt_tokens`).
      dtype: the dtype of the tables and log-probabilities returned (float64: exact metrics).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        space: SequenceSpace,
        n_prompts: int,
        *,
        prompt_tokens: Tensor | None = None,
        dtype: torch.dtype = torch.float64,
    ):
        check_model(model)
        if not isinstance(space, SequenceSpace):
            raise ValueError(f"space must be a SequenceSpace, got {type(space).__name__}")
        n_prompts = check_int(n_prompts, "n_prompts")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")
        if prompt_tokens is None:
            prompt_tokens = default_prompt_tokens(int(n_prompts), space.vocab_size)
        if not isinstance(prompt_tokens, Tensor) or prompt_tokens.dtype != torch.int64 or prompt_tokens.dim() != 2:
            raise ValueError("prompt_tokens must be an int64 tensor of shape [X, Tp]")
        if prompt_tokens.shape[0] != n_prompts or prompt_tokens.shape[1] < 1:
            raise ValueError(
                f"prompt_tokens must have shape [X = {n_prompts}, Tp >= 1], got {tuple(prompt_tokens.shape)}"
            )
        if (prompt_tokens < 0).any() or (prompt_tokens >= space.vocab_size).any():
            raise ValueError(f"prompt_tokens must be token ids in [0, {space.vocab_size})")
        super().__init__(_PromptedModel(model, prompt_tokens), space, n_prompts)
        self.lm, self.prompt_tokens, self.dtype = model, prompt_tokens, dtype

    @property
    def prompt_length(self) -> int:
        return self.prompt_tokens.shape[1]

    def _device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def sequences(self, prompts: Tensor, responses: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """input_ids, attention_mask, completion_mask [B, Tp + L] of prompt-response pairs (prompts, ids [B]).

        Responses are right-padded (with EOS tokens, masked out); the completion is the response's
        tokens, EOS included.
        """
        device = self._device()
        tokens, lengths = self.space.decode(responses.to(device))
        prompt = self.prompt_tokens.to(device)[prompts.to(device)]
        input_ids = torch.cat([prompt, tokens], dim=-1)
        in_response = self.space.token_mask(lengths)
        ones = torch.ones_like(prompt, dtype=torch.bool)
        attention_mask = torch.cat([ones, in_response], dim=-1).long()
        completion_mask = torch.cat([torch.zeros_like(ones), in_response], dim=-1).long()
        return input_ids, attention_mask, completion_mask

    def pair_batch(self, prompts: Tensor, chosen: Tensor, rejected: Tensor) -> dict[str, Tensor]:
        """The bridge's batch (`BATCH_KEYS`) of pairs (x, a⁺, a⁻) given as prompts and sequence ids [B]."""
        batch = {}
        for side, ids in (("chosen", chosen), ("rejected", rejected)):
            fields = ("input_ids", "attention_mask", "completion_mask")
            batch.update({f"{side}_{f}": t for f, t in zip(fields, self.sequences(prompts, ids), strict=True)})
        return batch

    def log_prob(self, prompts: Tensor, responses: Tensor) -> Tensor:
        """ln pi(a|x) for prompts [..., B] and sequence ids [..., B, m] (or [..., B]), one forward pass."""
        if not isinstance(prompts, Tensor) or prompts.dtype != torch.int64:
            raise ValueError("prompts must be an int64 tensor of prompt indices")
        if prompts.numel() and (prompts.min() < 0 or prompts.max() >= self.n_prompts):
            raise ValueError(f"prompts must lie in [0, {self.n_prompts})")
        squeeze = responses.dim() == prompts.dim()
        responses = responses.unsqueeze(-1) if squeeze else responses
        expanded = prompts.unsqueeze(-1).expand(responses.shape)
        logp = sequence_logprobs(self.lm, *self.sequences(expanded.reshape(-1), responses.reshape(-1)))
        logp = logp.to(self.dtype).reshape(responses.shape)
        return logp.squeeze(-1) if squeeze else logp

    def sample(self, prompts: Tensor, n_samples: int, generator: torch.Generator | None) -> Tensor:
        """Sequence ids [..., B, n_samples] drawn ancestrally from pi(·|x), without gradient."""
        with torch.no_grad():
            return super().sample(prompts.to(self._device()), n_samples, generator)

    def prefix_logp(self, chunk_size: int = 4096) -> Tensor:
        """ln pi(v | x, prefix) for every prompt and prefix of the space, [X, P, V] (differentiable)."""
        space, device = self.space, self._device()
        depth = space.max_length - 1
        K = space.n_content
        leaf_ids = torch.arange(space.offsets[depth], space.offsets[depth + 1], device=device)
        leaf_tokens = space.decode(leaf_ids)[0][:, :depth]  # [K^(L-1), L-1]
        n_leaves = leaf_tokens.shape[0]
        # every (prompt, longest prefix) row in one batch: [X·K^(L-1), Tp + L − 1], prompt-major
        prompts = self.prompt_tokens.to(device).repeat_interleave(n_leaves, dim=0)
        input_ids = torch.cat([prompts, leaf_tokens.repeat(self.n_prompts, 1)], dim=-1)
        rows = []
        for start in range(0, input_ids.shape[0], chunk_size):
            logits = self.lm(input_ids=input_ids[start : start + chunk_size], use_cache=False).logits
            rows.append(logits[:, self.prompt_length - 1 :])  # position Tp − 1 + t follows t content tokens
        logits = torch.cat(rows, dim=0).unflatten(0, (self.n_prompts, n_leaves))  # [X, K^(L-1), L, V']
        if logits.shape[-1] != space.vocab_size:
            raise ValueError(
                f"model must return logits over the world's V = {space.vocab_size} tokens, got {logits.shape[-1]}"
            )
        logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1).to(self.dtype)
        levels = []
        for t in range(space.max_length):
            # the prefix of depth t and rank r is an ancestor of the leaf of rank r·K^(L−1−t)
            leaf_rank = torch.arange(space.level_sizes[t], device=device) * K ** (depth - t)
            levels.append(logp[:, leaf_rank, t])
        return torch.cat(levels, dim=1)

    def table(self, chunk_size: int = 4096, device: DeviceLike = None) -> Tensor:
        """ln pi(a|x) over all N sequences, [X, N], differentiable (from `prefix_logp`)."""
        return self.space.sequence_logp(self.prefix_logp(chunk_size))

    def as_policy(self, prompt_dist: Tensor | None = None) -> Policy:
        """The exact table as a detached `Policy` (with the world's D when given)."""
        return as_policy(self, prompt_dist)


def mass_outside(policy: PolicyLike, support: Tensor, prompt_dist: Tensor | None = None) -> Tensor:
    """E_x Σ_{a ∉ S(x)} pi(a|x): the probability pi puts off the response set S, a scalar.

    `policy` is a `Policy` or log-probabilities [..., X, N]; `support` is a boolean mask [..., X, N]
    (True: a ∈ S(x)), e.g. ``counts > 0`` of a dataset's responses.  The sum runs over the
    complement directly (never 1 − a sum close to 1).  Prompts are weighed by `prompt_dist`
    (default the policy's D, else uniform).
    """
    logp = policy.logp if isinstance(policy, Policy) else check_logp(policy, "policy")
    if prompt_dist is None and isinstance(policy, Policy):
        prompt_dist = policy.prompt_dist
    elif prompt_dist is not None:
        prompt_dist = check_prompt_dist(prompt_dist, n_prompts=logp.shape[-2])
    if not isinstance(support, Tensor) or support.dtype != torch.bool:
        raise ValueError("support must be a boolean tensor (True on the responses of the set)")
    if support.shape[-2:] != logp.shape[-2:]:
        raise ValueError(
            f"support must have the policy's shape [..., X, N] = {tuple(logp.shape)}, got {tuple(support.shape)}"
        )
    outside = torch.logsumexp(logp.masked_fill(support, float("-inf")), dim=-1).exp()
    if prompt_dist is None:
        return outside.mean(dim=-1)
    return (outside * prompt_dist.to(outside.dtype)).sum(dim=-1)
