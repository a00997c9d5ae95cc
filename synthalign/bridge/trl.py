"""TRL interop: TRL's preference format in, and a registered synthalign objective inside TRL's `DPOTrainer`.

* `PreferenceCollator`: examples in TRL's preference format (`prompt` / `chosen` / `rejected`, each a
  plain string or, conversational, a list of `{"role", "content"}` messages) → the bridge's batch
  (`synthalign.bridge.BATCH_KEYS`), tokenized by TRL's rules (`tokenize_preference`): a plain
  completion gets the tokenizer's EOS appended if it lacks one; a conversational prompt is rendered by
  the tokenizer's chat template with the generation prompt, prompt + completion without it; the
  completion starts where the tokenized prompt and prompt + completion first differ.  Chosen and
  rejected rows are right-padded to one width, as TRL's `DataCollatorForPreference` pads them, so
  the batch holds exactly TRL's tokens.  Needs only a tokenizer (`transformers`), not TRL.
* `from_trl_batch`: TRL's collated batch (the B chosen rows, then the B rejected ones) → the bridge's.
* `ObjectiveDPOTrainer` (built on first access, since it subclasses `trl.DPOTrainer`): TRL's
  trainer — its data pipeline, reference handling (a `ref_model`, or `precompute_ref_log_probs`),
  optimizer, logging and `accelerate` launch — with the loss replaced by a registered pair objective
  through `synthalign.bridge.pair_batch_loss`.  The override point is `compute_loss(model, inputs,
  return_outputs, num_items_in_batch)`, the public `transformers.Trainer` hook that `DPOTrainer`
  itself implements (TRL 1.16 dispatches its `loss_type` inside a private `_compute_loss`, which is
  bypassed).  `DPOConfig.beta` is the objective's gamma (for objectives that take it); `loss_type`
  is ignored; options that change how TRL scores sequences (`ld_alpha`, `use_weighting`, several
  `loss_weights`) are refused rather than silently dropped.

    from synthalign.bridge.trl import ObjectiveDPOTrainer
    trainer = ObjectiveDPOTrainer(model=model, ref_model=ref_model, args=trl.DPOConfig(..., beta=0.5),
                                  train_dataset=dataset, processing_class=tokenizer,
                                  objective="pmle", objective_params={})
    trainer.train()

As in TRL, each process averages its own rows (unweighted pairs, so equal per-device batches give the
global mean); for weighted pairs and exact global normalization use `synthalign.bridge.make_trainer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthalign._checks import InputTypeError, check_int
from synthalign.bridge._deps import require
from synthalign.bridge._validate import check_token_fields
from synthalign.bridge.losses import pair_batch_loss, pair_objective, resolve_gamma

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# ObjectiveDPOTrainer is built on first access (module __getattr__), so that importing this module needs no TRL.
__all__ = ["ObjectiveDPOTrainer", "PreferenceCollator", "from_trl_batch", "tokenize_preference"]  # noqa: F822

_TRL_FIELDS = ("input_ids", "attention_mask", "completion_mask")
_SIDES = ("prompt", "chosen", "rejected")
_REFERENCE_KEYS = ("ref_chosen_logps", "ref_rejected_logps")


def from_trl_batch(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """TRL's collated preference batch ([chosen; rejected] rows) → the bridge's `BATCH_KEYS` (+ TRL's ref log-probs)."""
    check_token_fields(batch, _TRL_FIELDS, "TRL's collated batch", "2B")
    rows = batch["input_ids"].shape[0]
    if rows % 2 or rows == 0:
        raise ValueError(
            f"batch['input_ids'] must hold the chosen then the rejected rows (an even, positive count), got {rows}"
        )
    out = {}
    for field in _TRL_FIELDS:
        chosen, rejected = batch[field].chunk(2, dim=0)
        out[f"chosen_{field}"], out[f"rejected_{field}"] = chosen, rejected
    for key in _REFERENCE_KEYS:
        if key in batch:
            out[key] = batch[key]
    return out


# ----------------------------------------------------------------------------------------------------------------------
# TRL's preference format → the bridge's batch
# ----------------------------------------------------------------------------------------------------------------------


def _is_conversation(value) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _check_example(example, index: int) -> bool:
    """Validates one preference example; returns whether it is conversational."""
    if not isinstance(example, Mapping):
        raise InputTypeError(f"examples[{index}] must be a mapping with keys {_SIDES}, got {type(example).__name__}")
    missing = [key for key in _SIDES if key not in example]
    if missing:
        raise ValueError(f"examples[{index}] lacks {missing}: TRL's preference format has {_SIDES}")
    kinds = set()
    for key in _SIDES:
        value = example[key]
        if isinstance(value, str):
            kinds.add("plain")
        elif _is_conversation(value):
            if not value or not all(isinstance(m, Mapping) and "role" in m and "content" in m for m in value):
                raise ValueError(
                    f"examples[{index}][{key!r}] must be a non-empty list of {{'role', 'content'}} messages"
                )
            kinds.add("conversational")
        else:
            raise InputTypeError(
                f"examples[{index}][{key!r}] must be a string or a list of messages, got {type(value).__name__}"
            )
    if len(kinds) > 1:
        raise ValueError(f"examples[{index}] mixes plain strings and message lists; use one format for all three")
    if kinds == {"plain"} and not example["chosen"] and not example["rejected"]:
        raise ValueError(f"examples[{index}]: chosen and rejected are both empty")
    return kinds == {"conversational"}


def _common_prefix_length(a: list[int], b: list[int]) -> int:
    length = 0
    for left, right in zip(a, b, strict=False):
        if left != right:
            break
        length += 1
    return length


def _ids(tokenizer, value, **template) -> list[int]:
    if _is_conversation(value):
        rendered = tokenizer.apply_chat_template(list(value), tokenize=True, return_dict=True, **template)
        return list(rendered["input_ids"])
    return list(tokenizer(text=value)["input_ids"])


def tokenize_preference(example: Mapping, tokenizer: PreTrainedTokenizerBase) -> dict[str, list[int]]:
    """One example in TRL's preference format → `prompt_ids`, `chosen_ids`, `rejected_ids` (TRL 1.16's rules)."""
    conversational = _check_example(example, 0)
    prompt, chosen, rejected = (example[key] for key in _SIDES)
    if conversational:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("conversational examples need a tokenizer with a chat_template")
        prompt_ids = _ids(tokenizer, prompt, add_generation_prompt=True)
        full = [_ids(tokenizer, list(prompt) + list(side)) for side in (chosen, rejected)]
    else:
        eos = tokenizer.eos_token
        if eos is None:
            raise ValueError("the tokenizer has no eos_token: plain completions end with it (TRL's convention)")
        chosen, rejected = (side if side.endswith(eos) else side + eos for side in (chosen, rejected))
        prompt_ids = _ids(tokenizer, prompt)
        full = [_ids(tokenizer, prompt + side) for side in (chosen, rejected)]
    prompt_length = min(_common_prefix_length(prompt_ids, ids) for ids in full)
    out = {"prompt_ids": prompt_ids[:prompt_length]}
    out["chosen_ids"], out["rejected_ids"] = (ids[prompt_length:] for ids in full)
    return out


class PreferenceCollator:
    """Examples in TRL's preference format (raw, or already tokenized to `prompt_ids` / `chosen_ids` /
    `rejected_ids`) → the bridge's batch of pairs, right-padded with the tokenizer's pad token.

    Args:
      tokenizer: a `transformers` tokenizer (a chat template for conversational examples; an EOS
        token for plain ones; a pad token, or EOS stands in for it, as in TRL).
      max_length: cut every prompt + completion to its first `max_length` tokens (TRL's
        "keep_start"); an example left without a completion token raises.

    Optional `ref_chosen_logps` / `ref_rejected_logps` on every example are passed through, so
    `synthalign.bridge.pair_batch_loss` reads them in place of a reference model.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, *, max_length: int | None = None):
        if not callable(tokenizer) or not hasattr(tokenizer, "eos_token"):
            raise InputTypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with")
        self.tokenizer, self.pad_token_id = tokenizer, int(pad)
        self.max_length = None if max_length is None else check_int(max_length, "max_length", minimum=2)

    def tokenize(self, example: Mapping, index: int = 0) -> dict[str, list[int]]:
        if isinstance(example, Mapping) and all(f"{key}_ids" in example for key in _SIDES):
            return {f"{key}_ids": list(example[f"{key}_ids"]) for key in _SIDES}
        try:
            return tokenize_preference(example, self.tokenizer)
        except ValueError as error:  # name the example, not "examples[0]"
            raise type(error)(str(error).replace("examples[0]", f"examples[{index}]")) from error

    def __call__(self, examples: Sequence[Mapping]) -> dict[str, Tensor]:
        if not isinstance(examples, Sequence) or isinstance(examples, (str, Mapping)) or not examples:
            raise InputTypeError("examples must be a non-empty list of preference examples")
        tokenized = [self.tokenize(example, index) for index, example in enumerate(examples)]
        rows, masks = {"chosen": [], "rejected": []}, {"chosen": [], "rejected": []}
        for index, example in enumerate(tokenized):
            for side in ("chosen", "rejected"):
                ids = example["prompt_ids"] + example[f"{side}_ids"]
                mask = [0] * len(example["prompt_ids"]) + [1] * len(example[f"{side}_ids"])
                if self.max_length is not None:
                    ids, mask = ids[: self.max_length], mask[: self.max_length]
                if not any(mask) or not example["prompt_ids"]:
                    raise ValueError(
                        f"examples[{index}]: the {side} sequence needs a prompt token and at least one completion "
                        f"token (after truncation to max_length = {self.max_length})"
                    )
                rows[side].append(ids)
                masks[side].append(mask)
        width = max(len(ids) for side in rows.values() for ids in side)
        batch = {}
        for side in ("chosen", "rejected"):
            lengths = [len(ids) for ids in rows[side]]
            padding = [width - length for length in lengths]
            batch[f"{side}_input_ids"] = torch.tensor(
                [ids + [self.pad_token_id] * pad for ids, pad in zip(rows[side], padding, strict=True)]
            )
            batch[f"{side}_attention_mask"] = torch.tensor(
                [[1] * length + [0] * pad for length, pad in zip(lengths, padding, strict=True)]
            )
            batch[f"{side}_completion_mask"] = torch.tensor(
                [mask + [0] * pad for mask, pad in zip(masks[side], padding, strict=True)]
            )
        for key in _REFERENCE_KEYS:
            if all(isinstance(example, Mapping) and key in example for example in examples):
                batch[key] = torch.tensor([float(example[key]) for example in examples], dtype=torch.float64)
        return batch


# ----------------------------------------------------------------------------------------------------------------------
# A registered objective inside TRL's DPOTrainer
# ----------------------------------------------------------------------------------------------------------------------

_TRAINER_CLASS = None


def _objective_dpo_trainer():
    global _TRAINER_CLASS
    if _TRAINER_CLASS is not None:
        return _TRAINER_CLASS
    trl = require("trl")

    class ObjectiveDPOTrainer(trl.DPOTrainer):
        """`trl.DPOTrainer` training a registered synthalign pair objective (see `synthalign.bridge.trl`).

        Takes DPOTrainer's arguments plus `objective` (a registered pair objective, name or
        `Objective`) and `objective_params` (its hyper-parameters; defaults otherwise).
        """

        def __init__(self, *args, objective, objective_params: Mapping | None = None, **kwargs):
            obj = pair_objective(objective)
            if obj.needs_reward:
                raise ValueError(
                    f"objective {obj.name!r} needs a reward R̂, which TRL's preference batches do not carry"
                )
            params = obj.resolve_params(dict(objective_params or {}))
            super().__init__(*args, **kwargs)
            config = self.args
            refused = {
                "ld_alpha": getattr(config, "ld_alpha", None) is not None,
                "use_weighting": bool(getattr(config, "use_weighting", False)),
                "loss_weights": len(getattr(config, "loss_weights", None) or ()) > 1,
            }
            for option, set_ in refused.items():
                if set_:
                    raise ValueError(
                        f"DPOConfig.{option} changes how TRL scores or weighs sequences; ObjectiveDPOTrainer trains "
                        f"{obj.name!r} with its own length convention ({obj.length_convention!r}): leave {option} unset"
                    )
            self.objective, self.objective_params = obj, params
            self.objective_gamma = resolve_gamma(obj, self.beta if "gamma" in obj.inputs else None)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            batch = from_trl_batch(inputs)
            reference = None
            if self.objective.needs_reference and not all(key in batch for key in _REFERENCE_KEYS):
                if self.ref_model is None:
                    raise ValueError(
                        f"objective {self.objective.name!r} needs a reference: pass ref_model=... or set "
                        "precompute_ref_log_probs=True"
                    )
                reference = self.ref_model
            loss = pair_batch_loss(
                self.objective,
                model,
                batch,
                reference=reference,
                gamma=self.objective_gamma,
                **self.objective_params,
            )
            mode = "train" if self.model.training else "eval"
            self._metrics[mode][f"{self.objective.name}_loss"].append(float(loss.detach()))
            return (loss, None) if return_outputs else loss

    _TRAINER_CLASS = ObjectiveDPOTrainer
    return ObjectiveDPOTrainer


def __getattr__(name: str):
    if name == "ObjectiveDPOTrainer":
        return _objective_dpo_trainer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
