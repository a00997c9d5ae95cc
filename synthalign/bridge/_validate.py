"""Checks of the bridge's own argument kinds (models, optimizers, choices, batches), on top of `synthalign._checks`."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TypeVar

import torch
from torch import Tensor

from synthalign._checks import InputTypeError, describe

_Choice = TypeVar("_Choice")


def check_model(model: torch.nn.Module, name: str = "model") -> torch.nn.Module:
    """A torch module with parameters (a causal LM, possibly wrapped by `accelerate`)."""
    if not isinstance(model, torch.nn.Module):
        raise InputTypeError(f"{name} must be a torch.nn.Module (a causal LM), got {describe(model)}")
    if next(model.parameters(), None) is None:
        raise ValueError(f"{name} has no parameters")
    return model


def check_optimizer(optimizer: torch.optim.Optimizer, name: str = "optimizer") -> torch.optim.Optimizer:
    """A torch optimizer."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise InputTypeError(f"{name} must be a torch.optim.Optimizer, got {describe(optimizer)}")
    return optimizer


def check_choice(value: _Choice, options: Collection[_Choice], name: str) -> _Choice:
    """`value` if it is one of `options`, else a ValueError naming `name`."""
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def check_token_fields(batch: Mapping[str, Tensor], keys: Sequence[str], what: str, rows: str) -> Mapping[str, Tensor]:
    """`batch` if it is a mapping whose `keys` are all 2-d tensors [rows, length]; else an error naming the key.

    `what` describes the batch in the errors ("a batch of pairs", "TRL's collated batch"), `rows`
    the size of its first dimension ("batch", "2B").
    """
    if not isinstance(batch, Mapping):
        raise InputTypeError(f"batch must be a mapping ({what}) with keys {tuple(keys)}, got {describe(batch)}")
    missing = [key for key in keys if key not in batch]
    if missing:
        raise ValueError(f"batch lacks {missing}; {what} needs {tuple(keys)}")
    for key in keys:
        if not isinstance(batch[key], Tensor) or batch[key].dim() != 2:
            raise ValueError(f"batch[{key!r}] must be a tensor of shape [{rows}, length], got {describe(batch[key])}")
    return batch
