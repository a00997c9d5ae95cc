"""Preference datasets on a finite world, held as counts over the cells (x, a+, a-).

A dataset of n pairs on a finite world is its sufficient statistic: counts over
the cells (x, a+, a-).  `PreferenceData.counts[r, x, i, j]` is the number of
pairs in replicate r with prompt x, chosen response i and rejected response j.
The same container with probabilities in place of counts is the exact
population law (`synthalign.worlds.preferences`).  Sampling is
`synthalign.worlds.sampling`'s.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from synthalign._checks import (
    FLOAT32_MAX_EXACT,
    FLOAT_DTYPES,
    InputTypeError,
    check_dims,
    check_floating,
    check_same_device,
    describe,
)
from synthalign._types import DeviceLike, DTypeLike, Seed
from synthalign.worlds.checks import check_world

if TYPE_CHECKING:
    from synthalign.worlds.tabular import World

__all__ = [
    "CellData",
    "check_data",
    "PreferenceData",
    "PairData",
    "PreferenceList",
    "counts_to_list",
    "decode_cells",
    "numpy_generator",
]


@dataclasses.dataclass(frozen=True, eq=False)
class CellData:
    """Pairs as weights over the cells (x, a, b): the common part of labelled and unlabelled data.

    Attributes:
      counts: [R, X, A, A]; counts for sampled data, probabilities for the
        population law (then `n_pairs` is None).
      n_pairs: pairs per replicate, or None for the population law.
      world: the world the data came from (gamma, pi0, D).
    """

    counts: Tensor
    n_pairs: int | None
    world: object

    def __post_init__(self):
        label = f"{type(self).__name__}.counts"
        check_world(self.world, f"{type(self).__name__}.world")
        counts = check_floating(self.counts, label, what="counts", allowed=FLOAT_DTYPES)
        world = self.world
        check_dims(counts, label, ("R", "X", "A", "A"), X=world.n_prompts, A=world.n_responses)
        if counts.shape[-1] != counts.shape[-2]:
            raise ValueError(f"{label} must have shape [R, X, A, A], got {tuple(counts.shape)}")
        check_same_device({label: counts, "world": world.prompt_dist})
        n_pairs = self.n_pairs
        if n_pairs is not None:
            if isinstance(n_pairs, bool) or not isinstance(n_pairs, (int, np.integer)) or n_pairs < 1:
                raise InputTypeError(
                    f"n_pairs must be a positive integer or None (population law), got {describe(n_pairs)}"
                )
            if counts.dtype == torch.float32 and n_pairs > FLOAT32_MAX_EXACT:
                raise ValueError(
                    f"{label} is float32 but n_pairs = {n_pairs} > 2^24: float32 counts and totals "
                    "are not exact there; use float64"
                )
        if not torch.isfinite(counts).all():
            raise ValueError(f"{label} must be finite (found NaN or inf)")
        if (counts < 0).any():
            raise ValueError(f"{label} must be non-negative; minimum is {counts.min().item():.3g}")
        totals = counts.sum(dim=(-1, -2, -3))
        if (totals <= 0).any():
            empty = int((totals <= 0).nonzero()[0, 0])
            raise ValueError(
                f"{label}: replicate {empty} has total weight 0 (an empty dataset); expected at least one pair"
            )

    @property
    def replicates(self) -> int:
        return self.counts.shape[0]

    @property
    def is_population(self) -> bool:
        return self.n_pairs is None

    @property
    def prompt_counts(self) -> Tensor:
        """Weight of each prompt, [R, X] (the prompts of D_n used by on-policy terms)."""
        return self.counts.sum(dim=(-1, -2))

    @property
    def pair_counts(self) -> Tensor:
        """The pairs with any labels dropped: weight of the ordered cell (a, b), [R, X, A, A].

        Every unlabelled-pair loss here is symmetric under swapping the two
        responses, so the (chosen, rejected) order can stand for the draw order.
        """
        return self.counts

    def to(self, device: DeviceLike = None, dtype: DTypeLike = None) -> CellData:
        return type(self)(self.counts.to(device=device, dtype=dtype), self.n_pairs, self.world)

    def __getitem__(self, index):
        """Indexes the replicates: `data[3]` is replicate 3 (with its replicate dimension kept)."""
        counts = self.counts[index]
        if counts.dim() == 3:
            counts = counts.unsqueeze(0)
        return type(self)(counts, self.n_pairs, self.world)


@dataclasses.dataclass(frozen=True, eq=False)
class PreferenceData(CellData):
    """Labelled pairs: `counts[r, x, i, j]` pairs with prompt x, chosen i and rejected j."""

    def to_list(self, seed: Seed = None) -> PreferenceList:
        """Explicit pairs in a random order (needs integer counts)."""
        if self.is_population:
            raise ValueError("the population law has no explicit pairs; sample a dataset first")
        return counts_to_list(self, seed=seed)


@dataclasses.dataclass(frozen=True, eq=False)
class PairData(CellData):
    """Unlabelled pairs (x, a, b) in draw order; for distillation (eq. 11/12)."""


@dataclasses.dataclass(frozen=True, eq=False)
class PreferenceList:
    """Labelled pairs as explicit index tensors, each [R, n]."""

    prompt: Tensor
    chosen: Tensor
    rejected: Tensor
    world: object

    @property
    def replicates(self) -> int:
        return self.prompt.shape[0]

    @property
    def n_pairs(self) -> int:
        return self.prompt.shape[1]

    def to_counts(self, dtype: torch.dtype | None = None) -> PreferenceData:
        """The sufficient statistic of the pairs (an O(n) scatter)."""
        world = self.world
        X, A = world.n_prompts, world.n_responses
        cells = X * A * A
        flat = (self.prompt * A + self.chosen) * A + self.rejected
        offset = torch.arange(self.replicates, device=flat.device).unsqueeze(-1) * cells
        counts = torch.bincount((flat + offset).reshape(-1), minlength=self.replicates * cells)
        counts = counts.reshape(self.replicates, X, A, A).to(dtype or world.dtype)
        return PreferenceData(counts, self.n_pairs, world)


def counts_to_list(data: PreferenceData, seed: Seed = None) -> PreferenceList:
    """Explicit pairs with the same counts, in a seeded random order."""
    counts = data.counts.reshape(data.replicates, -1).round().to(torch.int64).cpu()
    cells = torch.arange(counts.shape[1]).expand_as(counts)
    flat = torch.repeat_interleave(cells.reshape(-1), counts.reshape(-1))
    flat = flat.reshape(data.replicates, -1)
    generator = numpy_generator(seed)
    order = torch.from_numpy(generator.permuted(np.tile(np.arange(flat.shape[1]), (data.replicates, 1)), axis=1))
    flat = torch.gather(flat, 1, order)
    return decode_cells(flat.to(data.counts.device), data.world)


def decode_cells(flat: Tensor, world: World) -> PreferenceList:
    """Flat cell ids x·A² + a·A + b back to (prompt, chosen, rejected) index tensors."""
    A = world.n_responses
    return PreferenceList(prompt=flat // (A * A), chosen=(flat // A) % A, rejected=flat % A, world=world)


def numpy_generator(seed: Seed) -> np.random.Generator:
    """A numpy Generator from `seed` (None, a non-negative integer or a Generator, which is returned as is)."""
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as err:
        raise ValueError(f"seed must be None, a non-negative integer or a numpy Generator, got {seed!r}") from err


def check_data(data: object, name: str = "data") -> CellData:
    """A `PreferenceData` or `PairData` (validated at construction)."""
    if not isinstance(data, CellData):
        raise InputTypeError(f"{name} must be PreferenceData or PairData, got {describe(data)}")
    return data
