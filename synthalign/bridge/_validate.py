"""Checks of the bridge's own argument kinds (models, optimizers, choices), on top of `synthalign._checks`."""

from __future__ import annotations

import torch

from synthalign._checks import InputTypeError, describe


def check_model(model, name: str = "model") -> torch.nn.Module:
    """A torch module with parameters (a causal LM, possibly wrapped by `accelerate`)."""
    if not isinstance(model, torch.nn.Module):
        raise InputTypeError(f"{name} must be a torch.nn.Module (a causal LM), got {describe(model)}")
    if next(model.parameters(), None) is None:
        raise ValueError(f"{name} has no parameters")
    return model


def check_optimizer(optimizer, name: str = "optimizer") -> torch.optim.Optimizer:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise InputTypeError(f"{name} must be a torch.optim.Optimizer, got {describe(optimizer)}")
    return optimizer


def check_choice(value, options, name: str):
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value
