"""Policy parametrizations beside the tabular softmax, with sampling and sequence log-probabilities.

Every parametrization here exposes the same three things, which is all the on-policy
estimators (`synthalign.estimators.onpolicy`) use:

* `log_prob(prompts, responses)`: ln π(a|x) of given responses, differentiable;
* `sample(prompts, n_samples, generator)`: responses drawn from π, batched;
* `table()`: on an enumerable space, the full table ln π(a|x) over every response (a
  `Policy`-shaped tensor [..., X, N]), differentiable.

Responses are ids: indices into 𝒜 for `TabularSoftmax`, sequence ids of a
`SequenceSpace` for the autoregressive ones (`SequenceSpace.decode` gives tokens).
Leading dimensions of the parameters index replicates: prompts are [R, B] (or [B]).

* `TabularSoftmax`: logits [..., X, A], π = softmax (the parametrization of `fit`);
* `TabularAutoregressive`: per-prefix next-token logits [..., X, P, V];
* `ModuleAutoregressive`: any differentiable callable mapping (prompts [B], prefix
  tokens [B, t]) to next-token logits [B, V] — the `PrefixModel` protocol; a Hugging Face
  causal LM is plugged in by the bridge through a thin wrapper of this shape.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from synthalign._types import DeviceLike
from synthalign.worlds.policy import Policy
from synthalign.worlds.sequence import SequenceSpace
from synthalign.worlds.torch_sampling import make_generator, sample_categorical

__all__ = ["TabularSoftmax", "TabularAutoregressive", "PrefixModel", "ModuleAutoregressive", "as_policy"]


def _gather_cells(flat: Tensor, cells: Tensor) -> Tensor:
    """flat [*lead, C, V] indexed by cells [*lead, *rest] (or [*rest] when lead is empty) → [*lead, *rest, V]."""
    lead = flat.dim() - 2
    if lead == 0:
        return flat[cells]
    if cells.dim() < lead:
        raise ValueError(f"prompts must carry the parameter's leading (replicate) dims {tuple(flat.shape[:lead])}")
    index = cells.reshape(*cells.shape[:lead], -1)
    flat = flat.expand(*index.shape[:lead], *flat.shape[-2:])
    out = torch.gather(flat, -2, index.unsqueeze(-1).expand(*index.shape, flat.shape[-1]))
    return out.reshape(*cells.shape, flat.shape[-1])


def _check_prompts(prompts: Tensor, n_prompts: int) -> Tensor:
    if not isinstance(prompts, Tensor) or prompts.dtype != torch.int64 or prompts.dim() < 1:
        raise ValueError("prompts must be an int64 tensor of prompt indices [..., B]")
    if prompts.numel() and (prompts.min() < 0 or prompts.max() >= n_prompts):
        raise ValueError(f"prompts must lie in [0, {n_prompts})")
    return prompts


class TabularSoftmax:
    """π(a|x) = softmax(θ[x])_a with θ of shape [..., X, A] (replicates in front)."""

    def __init__(self, logits: Tensor):
        if not isinstance(logits, Tensor) or logits.dim() < 2:
            raise ValueError("logits must be a tensor of shape [..., X, A]")
        self.logits = logits

    @property
    def n_prompts(self) -> int:
        return self.logits.shape[-2]

    def table(self) -> Tensor:
        return torch.log_softmax(self.logits, dim=-1)

    def log_prob(self, prompts: Tensor, responses: Tensor) -> Tensor:
        """ln π(a|x) for prompts [R, B] and responses [R, B, m] (or [R, B])."""
        prompts = _check_prompts(prompts, self.n_prompts)
        rows = _gather_cells(self.table(), prompts)  # [R, B, A]
        squeeze = responses.dim() == prompts.dim()
        index = responses.unsqueeze(-1) if squeeze else responses
        out = torch.gather(rows, -1, index)
        return out.squeeze(-1) if squeeze else out

    def sample(self, prompts: Tensor, n_samples: int, generator: torch.Generator | None) -> Tensor:
        """Responses [R, B, n_samples] drawn from π(·|x) for each prompt."""
        prompts = _check_prompts(prompts, self.n_prompts)
        return sample_categorical(_gather_cells(self.logits, prompts), generator, n_samples)


class _Autoregressive:
    """Shared sequence machinery: log-probs by a loop over positions, ancestral sampling."""

    space: SequenceSpace

    def next_token_logp(self, prompts: Tensor, prefix_ids: Tensor, tokens: Tensor, position: int) -> Tensor:
        raise NotImplementedError

    def log_prob(self, prompts: Tensor, responses: Tensor) -> Tensor:
        """ln π(a|x) = Σ_{t < len(a)} ln π(a_t | x, a_<t), for prompts [..., B], ids [..., B, m] or [..., B]."""
        squeeze = responses.dim() == prompts.dim()
        responses = responses.unsqueeze(-1) if squeeze else responses
        tokens, lengths = self.space.decode(responses)  # [..., B, m, L]
        expanded = prompts.unsqueeze(-1).expand(responses.shape)
        prefix = self.space.prefix_ids(tokens)
        mask = self.space.token_mask(lengths)
        total = None
        for position in range(self.space.max_length):
            logp = self.next_token_logp(expanded, prefix[..., position], tokens[..., :position], position)
            term = torch.gather(logp, -1, tokens[..., position : position + 1]).squeeze(-1)
            term = torch.where(mask[..., position], term, torch.zeros_like(term))
            total = term if total is None else total + term
        return total.squeeze(-1) if squeeze else total

    def sample_tokens(self, prompts: Tensor, n_samples: int, generator) -> tuple[Tensor, Tensor]:
        """Ancestral sampling: tokens [..., B, n_samples, L] (EOS-padded) and lengths, one position at a time."""
        space = self.space
        generator = make_generator(generator, prompts.device)
        shape = (*prompts.shape, int(n_samples))
        expanded = prompts.unsqueeze(-1).expand(shape)
        K = space.n_content
        rank_of = space.content_rank(prompts.device)
        alive = torch.ones(shape, dtype=torch.bool, device=prompts.device)
        rank = torch.zeros(shape, dtype=torch.int64, device=prompts.device)
        tokens = torch.full((*shape, space.max_length), space.eos, dtype=torch.int64, device=prompts.device)
        lengths = torch.full(shape, space.max_length, dtype=torch.int64, device=prompts.device)
        for position in range(space.max_length):
            prefix = space.offsets[position] + rank
            with torch.no_grad():
                logp = self.next_token_logp(expanded, torch.where(alive, prefix, 0), tokens[..., :position], position)
            token = sample_categorical(logp, generator)
            token = torch.where(alive, token, torch.full_like(token, space.eos))
            tokens[..., position] = token
            ended = alive & (token == space.eos)
            lengths = torch.where(ended, position + 1, lengths)
            alive = alive & ~ended
            rank = rank * K + rank_of[token]
        return tokens, lengths

    def sample(self, prompts: Tensor, n_samples: int, generator: torch.Generator | None) -> Tensor:
        """Sequence ids [..., B, n_samples] drawn ancestrally from π(·|x)."""
        tokens, lengths = self.sample_tokens(prompts, n_samples, generator)
        return self.space.encode(tokens)


class TabularAutoregressive(_Autoregressive):
    """π(a_t | x, a_<t) = softmax(θ[x, prefix(a_<t)]) with θ of shape [..., X, P, V] (replicates in front)."""

    def __init__(self, logits: Tensor, space: SequenceSpace):
        if not isinstance(space, SequenceSpace):
            raise ValueError(f"space must be a SequenceSpace, got {type(space).__name__}")
        space._check_prefix_table(logits, "logits")
        self.logits = logits
        self.space = space

    @property
    def n_prompts(self) -> int:
        return self.logits.shape[-3]

    def next_token_logp(self, prompts: Tensor, prefix_ids: Tensor, tokens: Tensor, position: int) -> Tensor:
        _check_prompts(prompts, self.n_prompts)
        logp = torch.log_softmax(self.logits, dim=-1)  # [..., X, P, V]
        cells = prompts * self.space.n_prefixes + prefix_ids
        return _gather_cells(logp.flatten(-3, -2), cells)

    def table(self) -> Tensor:
        """ln π(a|x) over every sequence, [..., X, N] (differentiable)."""
        return self.space.sequence_logp(torch.log_softmax(self.logits, dim=-1))


@runtime_checkable
class PrefixModel(Protocol):
    """A differentiable map (prompts [B] int64, prefix tokens [B, t] int64) → next-token logits [B, V]."""

    def __call__(self, prompts: Tensor, tokens: Tensor) -> Tensor: ...


class ModuleAutoregressive(_Autoregressive):
    """π(a_t | x, a_<t) = softmax(model(x, a_<t)) for any `PrefixModel` (e.g. a torch.nn.Module)."""

    def __init__(self, model: PrefixModel, space: SequenceSpace, n_prompts: int):
        if not callable(model):
            raise ValueError(f"model must be callable (prompts, tokens) -> logits, got {type(model).__name__}")
        if not isinstance(space, SequenceSpace):
            raise ValueError(f"space must be a SequenceSpace, got {type(space).__name__}")
        self.model, self.space, self.n_prompts = model, space, int(n_prompts)

    def next_token_logp(self, prompts: Tensor, prefix_ids: Tensor, tokens: Tensor, position: int) -> Tensor:
        _check_prompts(prompts, self.n_prompts)
        shape = prompts.shape
        logits = self.model(prompts.reshape(-1), tokens.reshape(prompts.numel(), position))
        if logits.shape != (prompts.numel(), self.space.vocab_size):
            raise ValueError(f"model must return logits [B, V = {self.space.vocab_size}], got {tuple(logits.shape)}")
        return torch.log_softmax(logits, dim=-1).reshape(*shape, -1)

    def table(self, chunk_size: int = 2**16, device: DeviceLike = None) -> Tensor:
        """ln π(a|x) over every sequence, [X, N], evaluating the model on all sequences in chunks."""
        rows = []
        prompts = torch.arange(self.n_prompts, device=device)
        for ids, _, _ in self.space.enumerate(chunk_size, device=device):
            rows.append(self.log_prob(prompts, ids.expand(self.n_prompts, -1)))
        return torch.cat(rows, dim=-1)


def as_policy(
    parametrization: TabularSoftmax | TabularAutoregressive | ModuleAutoregressive, prompt_dist: Tensor | None = None
) -> Policy:
    """The full table of a parametrization on its enumerable space, as a `Policy` (detached)."""
    with torch.no_grad():
        return Policy(parametrization.table(), prompt_dist)
