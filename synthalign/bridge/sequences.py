"""Sequences for a causal LM: token ids with attention and completion masks, and their log-probabilities.

For a causal language model a response a is a token sequence and ln pi(a|x) = Σ_t ln pi(a_t | x, a_<t),
the sum of the completion tokens' log-probabilities (spec §1).  Sequences are given as token ids with
two masks: `attention_mask` marks real tokens (padding may be on either side; position ids are
recomputed from it, as `transformers`' generation does), and `completion_mask` marks the response
tokens whose log-probabilities are summed.  A batch of pairs holds the keys `BATCH_KEYS`.

This module needs torch only; models are called, never imported.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from synthalign.bridge._validate import check_token_fields

__all__ = [
    "BATCH_KEYS",
    "check_batch",
    "completion_lengths",
    "check_sequences",
    "pair_logprobs",
    "sequence_logprobs",
    "stack_sides",
]

BATCH_KEYS = (
    "chosen_input_ids",
    "chosen_attention_mask",
    "chosen_completion_mask",
    "rejected_input_ids",
    "rejected_attention_mask",
    "rejected_completion_mask",
)
"""The keys a batch of pairs holds (others are ignored)."""

_SEQUENCE_FIELDS = ("input_ids", "attention_mask", "completion_mask")


# ----------------------------------------------------------------------------------------------------------------------
# Sequence log-probabilities
# ----------------------------------------------------------------------------------------------------------------------


def _check_mask(mask, name: str, shape: torch.Size, ids_name: str) -> Tensor:
    if not isinstance(mask, Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(mask).__name__}")
    if mask.shape != shape:
        raise ValueError(f"{name} must have the shape of {ids_name} {tuple(shape)}, got {tuple(mask.shape)}")
    if mask.is_complex() or not ((mask == 0) | (mask == 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    return mask.bool()


def check_sequences(
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    names: tuple[str, str, str] = ("input_ids", "attention_mask", "completion_mask"),
) -> tuple[Tensor, Tensor]:
    """Validates one set of sequences; returns the attention and completion masks as booleans.

    `names` are the argument names the errors quote (a batch's keys inside `pair_batch_loss`).
    """
    ids_name, attention_name, completion_name = names
    if not isinstance(input_ids, Tensor):
        raise ValueError(f"{ids_name} must be a tensor, got {type(input_ids).__name__}")
    if input_ids.dim() != 2:
        raise ValueError(f"{ids_name} must have shape [batch, length], got {tuple(input_ids.shape)}")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise ValueError(f"{ids_name} must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.shape[0] < 1 or input_ids.shape[1] < 2:
        raise ValueError(
            f"{ids_name} must hold at least one sequence of at least two tokens (a prompt token and a "
            f"completion token), got shape {tuple(input_ids.shape)}"
        )
    attended = _check_mask(attention_mask, attention_name, input_ids.shape, ids_name)
    scored = _check_mask(completion_mask, completion_name, input_ids.shape, ids_name)
    if (scored & ~attended).any():
        raise ValueError(f"{completion_name} marks tokens that {attention_name} masks out (padding)")
    if scored[:, 0].any():
        raise ValueError(f"{completion_name} marks the first position, which no token precedes to predict it")
    empty = (~scored.any(dim=-1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"{completion_name} marks no completion token in row(s) {empty.tolist()}")
    # The first scored token must follow an attended token, or it would be predicted from padding alone.
    first = scored.int().argmax(dim=-1)
    if not attended.gather(-1, (first - 1).unsqueeze(-1)).all():
        raise ValueError(f"{completion_name}: every completion must follow at least one attended (prompt) token")
    return attended, scored


def sequence_logprobs(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    *,
    average: bool = False,
) -> Tensor:
    """ln pi(a | x) = Σ_t ln pi(a_t | x, a_<t) over the completion tokens of each sequence, shape [B].

    The logits at position t − 1 predict token t, so a completion token at position t is scored with
    log_softmax(logits[t − 1])[input_ids[t]].  Log-softmax runs in float32 at least (float64 models
    stay float64; half-precision logits are upcast), and only on the rows of the scored positions, so
    the upcast copy grows with the number of completion tokens, not with batch × length × vocabulary.

    Args:
      model: a causal LM (`transformers` ...ForCausalLM) whose output has `.logits` [B, T, V]; it is
        called with `input_ids`, `attention_mask`, `position_ids` and `use_cache=False`.
      input_ids: token ids [B, T], prompt followed by completion, padded on either side.
      attention_mask: 1 on real tokens, 0 on padding, [B, T].
      completion_mask: 1 on the completion tokens to score, [B, T]; every row needs at least one,
        each within `attention_mask`, none at position 0.
      average: return the per-token mean instead of the sum (the length-normalized log-probability
        of SimPO-style objectives).

    Position ids are cumsum(attention_mask) − 1 (clamped at 0 on leading padding), so a left-padded
    sequence gets the positions it has unpadded, as `transformers`' generation assigns them; models
    with absolute position embeddings (GPT-2) need this, rotary ones (Llama) do not notice.
    """
    attended, scored = check_sequences(input_ids, attention_mask, completion_mask)
    position_ids = (attended.long().cumsum(dim=-1) - 1).clamp(min=0)
    output = model(
        input_ids=input_ids,
        attention_mask=attended.long(),
        position_ids=position_ids,
        use_cache=False,
    )
    logits = output.logits
    if logits.dim() != 3 or logits.shape[:2] != input_ids.shape:
        raise ValueError(
            f"model must return logits of shape [batch, length, vocab] = [{input_ids.shape[0]}, "
            f"{input_ids.shape[1]}, V], got {tuple(logits.shape)}"
        )
    predicts = scored[:, 1:]  # position t - 1 predicts token t
    rows = predicts.nonzero()[:, 0]
    token_logits = logits[:, :-1][predicts]
    token_logits = token_logits.to(torch.promote_types(token_logits.dtype, torch.float32))
    targets = input_ids[:, 1:][predicts]
    token_logp = torch.log_softmax(token_logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    total = token_logp.new_zeros(input_ids.shape[0]).index_add(0, rows, token_logp)
    if average:
        return total / predicts.sum(dim=-1).to(total.dtype)
    return total


# ----------------------------------------------------------------------------------------------------------------------
# Batches of pairs
# ----------------------------------------------------------------------------------------------------------------------


def check_batch(batch: Mapping[str, Tensor]) -> int:
    """Validates the keys and shapes of a batch of pairs; returns the number of pairs."""
    check_token_fields(batch, BATCH_KEYS, "a batch of pairs", "batch")
    n_pairs = batch["chosen_input_ids"].shape[0]
    if batch["rejected_input_ids"].shape[0] != n_pairs:
        raise ValueError(
            f"batch['rejected_input_ids'] holds {batch['rejected_input_ids'].shape[0]} sequences but "
            f"batch['chosen_input_ids'] holds {n_pairs}: one rejected per chosen"
        )
    return n_pairs


def stack_sides(batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Chosen and rejected sequences stacked into one batch [2B, T] (one forward pass per model).

    The shorter side is padded on the right with masked-out tokens: causal attention keeps them
    invisible to the real tokens, and they are never scored.
    """
    length = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
    stacked = []
    for field in _SEQUENCE_FIELDS:
        sides = [batch[f"{side}_{field}"] for side in ("chosen", "rejected")]
        sides = [torch.nn.functional.pad(side, (0, length - side.shape[1])) for side in sides]
        stacked.append(torch.cat(sides, dim=0))
    return stacked[0], stacked[1], stacked[2]


def pair_logprobs(
    model: torch.nn.Module, batch: Mapping[str, Tensor], *, average: bool = False
) -> tuple[Tensor, Tensor]:
    """ln pi(a⁺|x) and ln pi(a⁻|x) of a batch of pairs, [B] each, from one forward pass."""
    n_pairs = batch["chosen_input_ids"].shape[0]
    for side in ("chosen", "rejected"):
        names = tuple(f"batch['{side}_{field}']" for field in _SEQUENCE_FIELDS)
        check_sequences(*(batch[f"{side}_{field}"] for field in _SEQUENCE_FIELDS), names=names)
    logp = sequence_logprobs(model, *stack_sides(batch), average=average)
    return logp[:n_pairs], logp[n_pairs:]


def completion_lengths(batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Token counts |a⁺|, |a⁻| of a batch of pairs (the completion masks' row sums), [B] each."""
    return tuple(batch[f"{side}_completion_mask"].sum(dim=-1) for side in ("chosen", "rejected"))
