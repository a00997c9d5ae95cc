"""Type aliases shared by the public signatures (annotations only; nothing here runs at import time)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np
import torch

__all__ = ["ArrayLike", "DeviceLike", "DTypeLike", "ExecutorLike", "Seed"]

#: Where a tensor may live: a `torch.device`, its name ("cpu", "cuda:0"), or None for "leave it where it is".
DeviceLike = torch.device | str | None
#: A floating torch dtype, or None for "keep the current one".
DTypeLike = torch.dtype | None
#: What a seeded function accepts: None (fresh entropy), a non-negative integer, or a numpy Generator.
Seed = int | np.random.Generator | None
#: Numeric input converted with `torch.as_tensor` after validation: a tensor, a numpy array or nested lists.
ArrayLike = torch.Tensor | np.ndarray | list | tuple | float


class ExecutorLike(Protocol):
    """What runs work items: anything with `submit(fn, *args)` returning a future with `result()`.

    A `concurrent.futures` executor, a Dask `distributed.Client`, Ray's or submitit's executors.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Any: ...


if TYPE_CHECKING:  # names for annotations only: importing them here at run time would be circular
    from synthalign.estimators.misspecification import LowRankClass
    from synthalign.worlds.autoregressive import ModuleAutoregressive, TabularAutoregressive
    from synthalign.worlds.classes import PolicyClass
    from synthalign.worlds.policy import Policy
    from synthalign.worlds.sequence import SequenceWorld
    from synthalign.worlds.tabular import World

    #: A policy given as a `Policy` or as its log-probabilities [..., X, A].
    PolicyLike: TypeAlias = Policy | torch.Tensor
    #: A tabular world, or a sequence world (a tabular world over its enumerated sequences).
    WorldLike: TypeAlias = World | SequenceWorld
    #: What the torch samplers accept as randomness: an integer seed or a `torch.Generator`.
    TorchSeed: TypeAlias = int | torch.Generator
    #: A finite policy class: a `PolicyClass`, a `Policy` of batch [K], or log-probabilities [K, X, A].
    ClassLike: TypeAlias = PolicyClass | Policy | torch.Tensor
    #: A reward class: linear features [X, A, d], or a `LowRankClass`.
    RewardClass: TypeAlias = torch.Tensor | LowRankClass
    #: An autoregressive parametrization of a sequence world (log_prob, sample, table): per-prefix logits,
    #: or a module such as `synthalign.bridge.LMPolicy`.
    Autoregressive: TypeAlias = TabularAutoregressive | ModuleAutoregressive
