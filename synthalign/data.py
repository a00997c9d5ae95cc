"""Preference laws and datasets on a finite world.

A dataset of n pairs on a finite world is its sufficient statistic: counts over
the cells (x, a+, a-).  `PreferenceData.counts[r, x, i, j]` is the number of
pairs in replicate r with prompt x, chosen response i and rejected response j.
The same container with probabilities in place of counts is the exact
population law, so one loss code path serves samples and population alike.

Sampling uses numpy's multinomial (binomial splitting over the cells), whose
cost is O(cells) per replicate whatever n is: n = 2^40 costs what n = 32 does.
Samples are drawn on the CPU from a seeded numpy generator, so the same seed
gives the same numbers on every device, and then moved to the requested
device and dtype.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from synthalign._checks import check_positive, safe_log_ratio
from synthalign.policies import Policy, as_logp

# Counts are held in floating tensors; float64 represents every integer up to
# 2^53 exactly, so a dataset of at most 2^53 pairs keeps exact counts (and an
# exact total n) whatever its split over the cells.
_MAX_PAIRS = 2**53


def preference_probability(logp_a: Tensor, logp_b: Tensor, gamma: float) -> Tensor:
    """P(a ≻ b | x) = σ(γ ln[π(a|x)/π(b|x)]) = π(a)^γ / (π(a)^γ + π(b)^γ) (spec §1).

    Decision: when both responses have probability zero the ratio 0/0 is read
    as a tie, P = 1/2 (such pairs have weight zero whenever mu = pi*).
    """
    gamma = check_positive(gamma, "gamma")
    return torch.sigmoid(gamma * safe_log_ratio(logp_a, logp_b))


def pair_log_probs(logp: Tensor) -> tuple[Tensor, Tensor]:
    """Broadcast views of log pi(a|x) over the cells (x, a, b): [..., X, A, 1] and [..., X, 1, A]."""
    return logp.unsqueeze(-1), logp.unsqueeze(-2)


def preference_matrix(world_or_logp, gamma: float | None = None) -> Tensor:
    """P(i ≻ j | x) for all cells, shape [..., X, A, A], under pi* (or given log-probs)."""
    if gamma is None:
        world = world_or_logp
        logp, gamma = world.target.logp, world.gamma
    else:
        logp = as_logp(world_or_logp)
    first, second = pair_log_probs(logp)
    return preference_probability(first, second, gamma)


@dataclasses.dataclass(frozen=True, eq=False)
class PreferenceData:
    """Labelled pairs as weights over cells (x, a+, a-).

    Attributes:
      counts: [R, X, A, A]; counts for sampled data, probabilities for the
        population law (then `n_pairs` is None).
      n_pairs: pairs per replicate, or None for the population law.
      world: the world the data came from (gamma, pi0, D).
    """

    counts: Tensor
    n_pairs: int | None
    world: object

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
        """The pairs with their labels dropped: weight of the ordered cell (a, b), [R, X, A, A].

        Every unlabelled-pair loss here is symmetric under swapping the two
        responses, so the (chosen, rejected) order can stand for the draw order.
        """
        return self.counts

    def to(self, device=None, dtype=None) -> PreferenceData:
        return PreferenceData(self.counts.to(device=device, dtype=dtype), self.n_pairs, self.world)

    def to_list(self, seed=None) -> PreferenceList:
        """Explicit pairs in a random order (needs integer counts)."""
        if self.is_population:
            raise ValueError("the population law has no explicit pairs; sample a dataset first")
        return counts_to_list(self, seed=seed)

    def __getitem__(self, index) -> PreferenceData:
        counts = self.counts[index]
        if counts.dim() == 3:
            counts = counts.unsqueeze(0)
        return PreferenceData(counts, self.n_pairs, self.world)


@dataclasses.dataclass(frozen=True, eq=False)
class PairData:
    """Unlabelled pairs (x, a, b) as weights, [R, X, A, A]; for distillation (eq. 11/12)."""

    counts: Tensor
    n_pairs: int | None
    world: object

    @property
    def replicates(self) -> int:
        return self.counts.shape[0]

    @property
    def is_population(self) -> bool:
        return self.n_pairs is None

    @property
    def prompt_counts(self) -> Tensor:
        return self.counts.sum(dim=(-1, -2))

    @property
    def pair_counts(self) -> Tensor:
        return self.counts


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


def population_preferences(world) -> PreferenceData:
    """The exact law of one labelled pair (spec §1): 2 D(x) mu(a|x) mu(b|x) P*(a ≻ b | x) on (x, a+ = a, a- = b).

    The cell (a, b) with a ≠ b is reached from two draws: (a, b) with a winning and
    (b, a) with a winning, hence the factor 2; the diagonal cell (a, a) gets
    2 D mu(a)² · ½ = D mu(a)², the probability of drawing a twice.  The weights sum to 1.
    """
    behavior = world.behavior.probs
    joint = world.prompt_dist[:, None, None] * behavior[:, :, None] * behavior[:, None, :]
    counts = 2.0 * joint * preference_matrix(world)
    return PreferenceData(counts.unsqueeze(0), None, world)


def population_pairs(world, policy: Policy | None = None) -> PairData:
    """The exact law of one unlabelled pair: D(x) p(a|x) p(b|x), p = mu unless `policy` is given."""
    probs = (policy if policy is not None else world.behavior).probs
    if probs.dim() != 2:
        raise ValueError("policy must be a single policy of shape [X, A]")
    joint = world.prompt_dist[:, None, None] * probs[:, :, None] * probs[:, None, :]
    return PairData(joint.unsqueeze(0), None, world)


def sample_cell_counts(probs: Tensor, n: int, replicates: int, seed=None) -> np.ndarray:
    """Multinomial counts of n draws over the flattened cells of `probs`, for each replicate.

    Returns an int64 array [replicates, cells].  Cost O(replicates × cells),
    independent of n (numpy draws one binomial per cell).
    """
    n = _check_n(n)
    replicates = _check_replicates(replicates)
    pvals = probs.detach().reshape(-1).to("cpu", torch.float64).numpy()
    pvals = np.clip(pvals, 0.0, None)
    pvals = pvals / pvals.sum()
    rng = _rng(seed)
    return rng.multinomial(n, pvals, size=replicates)


def sample_preferences(world, n: int, replicates: int = 1, seed=None, *, dtype=None, device=None) -> PreferenceData:
    """`replicates` i.i.d. datasets of n labelled pairs from the world's law (spec §1), as counts."""
    law = population_preferences(world).counts[0]
    counts = sample_cell_counts(law, n, replicates, seed)
    counts = torch.from_numpy(counts).to(device=device or world.device, dtype=dtype or world.dtype)
    return PreferenceData(counts.reshape(replicates, *law.shape), int(n), world)


def sample_pairs(world, n: int, replicates: int = 1, seed=None, *, policy=None, dtype=None, device=None) -> PairData:
    """Unlabelled pairs x ~ D, a, b ~ p(·|x) i.i.d. with p = mu or `policy` (eq. 11 inputs), as counts."""
    law = population_pairs(world, policy).counts[0]
    counts = sample_cell_counts(law, n, replicates, seed)
    counts = torch.from_numpy(counts).to(device=device or world.device, dtype=dtype or world.dtype)
    return PairData(counts.reshape(replicates, *law.shape), int(n), world)


def sample_preference_list(world, n: int, replicates: int = 1, seed=None, *, device=None) -> PreferenceList:
    """Labelled pairs as explicit (prompt, chosen, rejected) index tensors [R, n]; O(n) per replicate."""
    n = _check_n(n)
    replicates = _check_replicates(replicates)
    if n > 2**26:
        raise ValueError(f"n = {n} is too large for explicit pairs; use sample_preferences (counts)")
    law = population_preferences(world).counts[0].reshape(-1).to("cpu", torch.float64).numpy()
    law = np.clip(law, 0, None)
    rng = _rng(seed)
    cells = rng.choice(law.size, size=(replicates, n), p=law / law.sum())
    return _decode(torch.from_numpy(cells).to(device or world.device), world)


def counts_to_list(data: PreferenceData, seed=None) -> PreferenceList:
    """Explicit pairs with the same counts, in a seeded random order."""
    counts = data.counts.reshape(data.replicates, -1).round().to(torch.int64).cpu()
    cells = torch.arange(counts.shape[1]).expand_as(counts)
    flat = torch.repeat_interleave(cells.reshape(-1), counts.reshape(-1))
    flat = flat.reshape(data.replicates, -1)
    rng = _rng(seed)
    order = torch.from_numpy(rng.permuted(np.tile(np.arange(flat.shape[1]), (data.replicates, 1)), axis=1))
    flat = torch.gather(flat, 1, order)
    return _decode(flat.to(data.counts.device), data.world)


def _decode(flat: Tensor, world) -> PreferenceList:
    A = world.n_responses
    return PreferenceList(prompt=flat // (A * A), chosen=(flat // A) % A, rejected=flat % A, world=world)


def _rng(seed) -> np.random.Generator:
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as err:
        raise ValueError(f"seed must be None, a non-negative integer or a numpy Generator, got {seed!r}") from err


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
