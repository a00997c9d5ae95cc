"""The gamma-tilted Bradley–Terry preference law of a world (spec §1), over the cells (x, a, b).

`population_preferences(world)` is the exact law of one labelled pair and
`population_pairs(world)` that of one unlabelled pair; both are weight tables of the
same shape as a dataset's counts (`synthalign.worlds.datasets`), so one loss code
path serves samples and the population alike.  Other preference laws go beside
this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthalign._checks import check_positive, safe_log_ratio
from synthalign.worlds.datasets import PairData, PreferenceData
from synthalign.worlds.laws import BradleyTerry
from synthalign.worlds.policy import Policy, as_logp

if TYPE_CHECKING:
    from synthalign.worlds.tabular import World

__all__ = [
    "preference_probability",
    "pair_log_probs",
    "preference_matrix",
    "population_preferences",
    "population_pairs",
]

_TABLE_BLOCK = 2**17  # cells filled at once by `population_preferences`


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


def preference_matrix(world_or_logp: World | Tensor, gamma: float | None = None) -> Tensor:
    """P(i ≻ j | x) for all cells, shape [..., X, A, A]: the world's law (spec §1's under pi* unless
    `world.law` names another, `synthalign.worlds.laws`), or spec §1's law of given log-probs."""
    if gamma is None:
        world = world_or_logp
        if getattr(world, "law", None) is not None:
            return world.law.matrix(world)
        logp, gamma = world.target.logp, world.gamma
    else:
        logp = as_logp(world_or_logp)
    first, second = pair_log_probs(logp)
    return preference_probability(first, second, gamma)


def population_preferences(world: World) -> PreferenceData:
    """The exact law of one labelled pair (spec §1): 2 D(x) mu(a|x) mu(b|x) P*(a ≻ b | x) on (x, a+ = a, a- = b).

    The cell (a, b) with a ≠ b is reached from two draws: (a, b) with a winning and
    (b, a) with a winning, hence the factor 2; the diagonal cell (a, a) gets
    2 D mu(a)² · ½ = D mu(a)², the probability of drawing a twice.  The weights sum to 1.
    """

    behavior = world.behavior.probs
    logp, gamma = world.target.logp, world.gamma
    # Another law (synthalign.worlds.laws) gives its own matrix P[x, a, b]; spec §1's is built below, in
    # blocks, for a world without a law and for an explicit `BradleyTerry` law alike, so that the two give
    # bit-identical numbers (a sigmoid over the whole table and over blocks may round differently).
    law = getattr(world, "law", None)
    if isinstance(law, BradleyTerry):
        logp = logp if law.target is None else law.target.logp.to(world.prompt_dist)
        gamma = gamma if law.gamma is None else law.gamma
        law = None
    law = law.matrix(world) if law is not None else None
    X, A = logp.shape
    counts = torch.empty(1, X, A, A, dtype=logp.dtype, device=logp.device)
    # Filled a block of rows at a time, in place, so that no temporary is the size of the table.
    rows = max(1, _TABLE_BLOCK // A)
    weight = 2.0 * world.prompt_dist[:, None] * behavior  # 2 D(x) mu(a|x)
    for x in range(X):
        for start in range(0, A, rows):
            block = counts[0, x, start : start + rows]
            if law is not None:
                block.copy_(law[x, start : start + rows])
            else:
                torch.sub(logp[x, start : start + rows, None], logp[x, None, :], out=block)
                block.nan_to_num_(nan=0.0, posinf=float("inf"), neginf=float("-inf"))  # two zeros tie
                block.mul_(gamma).sigmoid_()
            block.mul_(weight[x, start : start + rows, None]).mul_(behavior[x, None, :])
    return PreferenceData(counts, None, world)


def population_pairs(world: World, policy: Policy | None = None) -> PairData:
    """The exact law of one unlabelled pair: D(x) p(a|x) p(b|x), p = mu unless `policy` is given."""
    probs = (policy if policy is not None else world.behavior).probs
    if probs.dim() != 2:
        raise ValueError("policy must be a single policy of shape [X, A]")
    joint = world.prompt_dist[:, None, None] * probs[:, :, None] * probs[:, None, :]
    return PairData(joint.unsqueeze(0), None, world)
