"""Sampling datasets from a world's law, held as counts (the sufficient statistic).

Count sampling uses numpy's multinomial (binomial splitting over the cells), whose
cost is O(cells) per replicate whatever n is: n = 2^40 costs what n = 32 does.
Samples are drawn on the CPU from a seeded numpy generator, so the same seed
gives the same numbers on every device, and then moved to the requested
device and dtype.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from synthalign._checks import check_device, check_float_dtype
from synthalign._types import DeviceLike, DTypeLike, Seed
from synthalign.worlds.checks import check_policy_for_world, check_world
from synthalign.worlds.datasets import PairData, PreferenceData, PreferenceList, decode_cells, numpy_generator
from synthalign.worlds.preferences import population_pairs, population_preferences

if TYPE_CHECKING:
    from synthalign.worlds.policy import Policy
    from synthalign.worlds.tabular import World

__all__ = ["sample_cell_counts", "sample_preferences", "sample_pairs", "sample_preference_list"]

# Counts are held in floating tensors; float64 represents every integer up to
# 2^53 exactly, so a dataset of at most 2^53 pairs keeps exact counts (and an
# exact total n) whatever its split over the cells.
_MAX_PAIRS = 2**53


def sample_cell_counts(probs: Tensor, n: int, replicates: int, seed: Seed = None) -> np.ndarray:
    """Multinomial counts of n draws over the flattened cells of `probs`, for each replicate.

    Returns an int64 array [replicates, cells].  Cost O(replicates × cells),
    independent of n (numpy draws one binomial per cell).
    """
    n = _check_n(n)
    replicates = _check_replicates(replicates)
    pvals = probs.detach().reshape(-1).to("cpu", torch.float64).numpy()
    pvals = np.clip(pvals, 0.0, None)
    pvals = pvals / pvals.sum()
    generator = numpy_generator(seed)
    return generator.multinomial(n, pvals, size=replicates)


def sample_preferences(
    world: World, n: int, replicates: int = 1, seed: Seed = None, *, dtype: DTypeLike = None, device: DeviceLike = None
) -> PreferenceData:
    """`replicates` i.i.d. datasets of n labelled pairs from the world's law (spec §1), as counts."""
    check_world(world)
    device = check_device(device)
    _check_dtype(dtype)
    law = population_preferences(world).counts[0]
    counts = sample_cell_counts(law, n, replicates, seed)
    counts = torch.from_numpy(counts).to(device=device or world.device, dtype=dtype or world.dtype)
    return PreferenceData(counts.reshape(replicates, *law.shape), int(n), world)


def sample_pairs(
    world: World,
    n: int,
    replicates: int = 1,
    seed: Seed = None,
    *,
    policy: Policy | None = None,
    dtype: DTypeLike = None,
    device: DeviceLike = None,
) -> PairData:
    """Unlabelled pairs x ~ D, a, b ~ p(·|x) i.i.d. with p = mu or `policy` (eq. 11 inputs), as counts."""
    check_world(world)
    device = check_device(device)
    _check_dtype(dtype)
    if policy is not None:
        check_policy_for_world(policy, world, "policy")
    law = population_pairs(world, policy).counts[0]
    counts = sample_cell_counts(law, n, replicates, seed)
    counts = torch.from_numpy(counts).to(device=device or world.device, dtype=dtype or world.dtype)
    return PairData(counts.reshape(replicates, *law.shape), int(n), world)


def sample_preference_list(
    world: World, n: int, replicates: int = 1, seed: Seed = None, *, device: DeviceLike = None
) -> PreferenceList:
    """Labelled pairs as explicit (prompt, chosen, rejected) index tensors [R, n]; O(n) per replicate."""
    check_world(world)
    device = check_device(device)
    n = _check_n(n)
    replicates = _check_replicates(replicates)
    if n > 2**26:
        raise ValueError(f"n = {n} is too large for explicit pairs; use sample_preferences (counts)")
    law = population_preferences(world).counts[0].reshape(-1).to("cpu", torch.float64).numpy()
    law = np.clip(law, 0, None)
    generator = numpy_generator(seed)
    cells = generator.choice(law.size, size=(replicates, n), p=law / law.sum())
    return decode_cells(torch.from_numpy(cells).to(device or world.device), world)


def _check_n(n) -> int:
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if n > _MAX_PAIRS:
        raise ValueError(f"n must be at most 2^53 (counts stay exact in float64), got {n}")
    return int(n)


def _check_replicates(replicates) -> int:
    if not isinstance(replicates, (int, np.integer)) or isinstance(replicates, bool) or replicates < 1:
        raise ValueError(f"replicates must be a positive integer, got {replicates!r}")
    return int(replicates)


def _check_dtype(dtype: DTypeLike) -> None:
    """None (the world's dtype) or a floating dtype that holds counts: float32 or float64."""
    if dtype is not None:
        check_float_dtype(dtype)
