"""TRL interop: TRL's collated preference batches as the bridge's batch.

TRL's `DPOTrainer` collates a preference dataset (`prompt` / `chosen` / `rejected`, plain or
conversational, tokenized by TRL) into one batch of 2B rows, the B chosen sequences then the B
rejected ones, with `input_ids`, `attention_mask`, `completion_mask` and optionally precomputed
`ref_chosen_logps` / `ref_rejected_logps`.  `from_trl_batch` splits it into the bridge's keys, so
`synthalign.bridge.pair_batch_loss` runs any registered pair objective on exactly TRL's tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

__all__ = ["from_trl_batch"]

_TRL_FIELDS = ("input_ids", "attention_mask", "completion_mask")


def from_trl_batch(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """TRL's collated preference batch ([chosen; rejected] rows) → the bridge's `BATCH_KEYS` (+ TRL's ref log-probs)."""
    missing = [key for key in _TRL_FIELDS if key not in batch]
    if missing:
        raise ValueError(f"batch lacks TRL's {missing}; it needs {_TRL_FIELDS}")
    rows = batch["input_ids"].shape[0]
    if rows % 2:
        raise ValueError(f"batch['input_ids'] must hold the chosen then the rejected rows (an even count), got {rows}")
    out = {}
    for field in _TRL_FIELDS:
        chosen, rejected = batch[field].chunk(2, dim=0)
        out[f"chosen_{field}"], out[f"rejected_{field}"] = chosen, rejected
    for key in ("ref_chosen_logps", "ref_rejected_logps"):
        if key in batch:
            out[key] = batch[key]
    return out
