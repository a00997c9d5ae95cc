"""Checks that recognize the world package's own types: a world, and a policy or finite class over one.

`synthalign._checks` holds the checks that know no synthalign type (tensors, numbers, choices, devices).
The ones here know `Policy` and the tabular world; they sit below `World` so that the modules a
`World` is built from (`datasets`, `sampling`) check for one without importing it: `World` derives
from the marker class `TabularWorld` defined here, and `check_world` tests for that marker.
`check_data` lives beside `CellData` in `synthalign.worlds.datasets`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from synthalign._checks import InputTypeError, check_dims, check_logp, check_same_device, describe
from synthalign.worlds.policy import Policy

if TYPE_CHECKING:
    from synthalign.worlds.tabular import World

__all__ = ["TabularWorld", "check_class_logp", "check_policy_for_world", "check_world"]


class TabularWorld:
    """The marker base of `synthalign.World`: what `check_world` accepts, without importing `World`."""

    __slots__ = ()


def check_world(world: object, name: str = "world", *, duck: bool = False) -> Any:
    """A `World`; with `duck`, anything with `target` and `sample_preferences` (a wrapper of a World)."""
    if duck and hasattr(world, "target") and callable(getattr(world, "sample_preferences", None)):
        return world
    if not isinstance(world, TabularWorld):
        raise InputTypeError(f"{name} must be a synthalign World, got {describe(world)}")
    return world


def check_policy_for_world(policy: object, world: World, name: str = "policy", *, normalized: bool = True) -> Tensor:
    """The log-probabilities of a Policy or tensor [..., X, A] matching `world` in X, A and device."""
    logp = policy.logp if isinstance(policy, Policy) else check_logp(policy, name, normalized=normalized)
    check_dims(logp, name, ("X", "A"), batch=True, X=world.n_prompts, A=world.n_responses)
    check_same_device({name: logp, "world": world.prompt_dist})
    return logp


def check_class_logp(value: object, name: str, *, world: World | None = None) -> Tensor:
    """A finite class as log-probabilities [K, X, A]: a `Policy` with batch [K] (a `PolicyClass`) or a tensor.

    Floating, no NaN or +inf, every row normalized; with `world`, X and A are its sizes and the
    class is on its device.
    """
    if isinstance(value, Policy):
        logp = value.logp
    elif isinstance(value, (Tensor, np.ndarray, list, tuple)):
        logp = check_logp(value, name)
    else:
        raise InputTypeError(f"{name} must be a PolicyClass or log-probabilities [K, X, A], got {describe(value)}")
    sizes = {} if world is None else {"X": world.n_prompts, "A": world.n_responses}
    check_dims(logp, name, ("K", "X", "A"), **sizes)
    if world is not None:
        check_same_device({name: logp, "world": world.prompt_dist})
    return logp
