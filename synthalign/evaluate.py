"""Evaluating objectives: the one binding of an objective's inputs, and empirical and population losses.

Everything that calls an objective's loss goes through this module: the losses
below, the Newton solver (`synthalign.estimators.newton`), the finite-class argmin,
the conformance suite and the transformer bridge.

* `pair_inputs` / `prompt_inputs` are the ONE place an objective's declared input
  names (`logp_chosen`, `ref_logp_rejected`, `target_margin`, `gamma`, ...; see
  `synthalign.registry.protocol`) are turned into tensors, from (chosen, rejected)
  views of the policy, the reference and the reward.  Callers only choose the views:
  the cells (x, a, b) of a finite world, explicit pairs, or sequences of a language model.
* `prompt_values` is the ONE place beta · KL(pi(x) ‖ pi0(x)) is added (eq. 1, 5, 12, 15);
  `kl_regularizer` is that term alone, for callers that hold policy rows without an
  objective (the exact terms of the on-policy estimators, the certificate's mass moves).

One code path serves three uses (../shared/STYLE.md): explicit pairs become
counts (`PreferenceList.to_counts`), a dataset is its counts, and the
population law is the same container with cell probabilities in place of
counts.  The loss of replicate r is

    L_r(pi) = [ Σ_cells w_r(cell) ℓ(cell) + Σ_x w_r(x) (prompt term + beta KL(pi(x) ‖ pi0(x))) ] / Σ w_r,

i.e. the (1/n) Σ of eq. 1, 4–6, 9–12, 15 for counts and the expectation for
probabilities.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthalign._checks import broadcast_shape, check_positive, safe_log_ratio
from synthalign._logistic_pairs import logistic_scores, population_logistic_sums
from synthalign.metrics import kl_per_prompt
from synthalign.registry.protocol import Objective, get_objective
from synthalign.worlds.checks import check_policy_for_world, check_world
from synthalign.worlds.datasets import CellData, PairData, PreferenceData, check_data
from synthalign.worlds.laws import BradleyTerry
from synthalign.worlds.policy import Policy, as_logp
from synthalign.worlds.preferences import preference_probability

if TYPE_CHECKING:
    from synthalign.worlds.tabular import World

Pair = tuple[Tensor, Tensor]
"""(chosen view, rejected view) of one source tensor."""

__all__ = [
    "CELL_BLOCK",
    "CellBlock",
    "EvalContext",
    "PopulationWeights",
    "cell_block_inputs",
    "cell_blocks",
    "cell_inputs",
    "cell_values",
    "data_weights",
    "empirical_loss",
    "kl_regularizer",
    "make_context",
    "pair_inputs",
    "per_prompt_loss",
    "population_loss",
    "prompt_inputs",
    "prompt_values",
    "weighted_cell_sum",
]


@dataclasses.dataclass
class EvalContext:
    """Everything an objective may read besides the policy: gamma, ln pi0, R̂ and the hyper-parameters."""

    gamma: float
    ref_logp: Tensor
    reward: Tensor | None
    params: dict


# ------------------------------------------------------------------ the binding


def pair_inputs(
    obj: Objective,
    policy: Pair,
    *,
    reference: Pair | None,
    reward: Pair | None,
    gamma: float,
) -> dict[str, Tensor | float]:
    """The keyword inputs of a pair objective's `fn`, from (chosen, rejected) views of each source.

    `logp_chosen`/`logp_rejected` come from `policy`, `ref_logp_*` from `reference`,
    `reward_*` from `reward`, `target_margin` = R̂(a⁺) − R̂(a⁻) (two −inf read as a tie,
    0), `gamma` is the preference temperature.  A source the objective needs but the
    caller did not give raises ValueError naming it.
    """
    sources = {"logp": policy, "ref_logp": reference, "reward": reward}
    inputs: dict[str, Tensor | float] = {}
    for name in obj.inputs:
        if name == "gamma":
            inputs[name] = gamma
            continue
        source, side = ("reward", "margin") if name == "target_margin" else name.rsplit("_", 1)
        views = sources[source]
        if views is None:
            what = {"ref_logp": "a reference (pi0)", "reward": "a reward (pass reward=...)"}[source]
            raise ValueError(f"objective {obj.name!r} needs {what}")
        if side == "margin":
            inputs[name] = safe_log_ratio(*views)
        else:
            inputs[name] = views[0] if side == "chosen" else views[1]
    return inputs


def prompt_inputs(
    obj: Objective, logp: Tensor, *, reference: Tensor | None, reward: Tensor | None, gamma: float
) -> dict[str, Tensor | float]:
    """The keyword inputs of a prompt objective's `fn`: the policy rows and what else it declares."""
    inputs: dict[str, Tensor | float] = {"logp": logp}
    sources = {"ref_logp": reference, "reward": reward, "gamma": gamma}
    for name in obj.inputs:
        if name == "logp":
            continue
        if sources[name] is None:
            raise ValueError(
                f"objective {obj.name!r} needs {'a reward (pass reward=...)' if name == 'reward' else name}"
            )
        inputs[name] = sources[name]
    return inputs


CELL_BLOCK = 2**17
"""Cells per block (1 MiB of float64): per-cell temporaries are this large, not [R, X, A, A]."""


@dataclasses.dataclass(frozen=True)
class CellBlock:
    """A block of the cells (x, a, b) of a finite world: prompts `prompts`, chosen responses `rows`, all b."""

    prompts: slice
    rows: slice


def cell_blocks(
    batch: tuple[int, ...] | None, n_prompts: int, n_responses: int, budget: int | None = None
) -> Iterator[list[CellBlock]]:
    """Blocks covering the [*batch, X, A, A] cells, each of about `budget` elements (at least one row).

    Yields, for each group of prompts, the list of its row blocks: the sums over one
    prompt group are complete once its row blocks are done.  `budget` defaults to `CELL_BLOCK`.
    """
    budget = CELL_BLOCK if budget is None else budget
    if batch is None:  # shapes that do not broadcast: one block, so the objective's own check reports them
        yield [CellBlock(slice(0, n_prompts), slice(0, n_responses))]
        return
    batch_size = math.prod(batch)
    per_prompt = batch_size * n_responses * n_responses
    if per_prompt <= budget:
        step = max(1, budget // per_prompt)
        for start in range(0, n_prompts, step):
            yield [CellBlock(slice(start, min(start + step, n_prompts)), slice(0, n_responses))]
        return
    rows = max(1, budget // (batch_size * n_responses))
    for x in range(n_prompts):
        yield [CellBlock(slice(x, x + 1), slice(a, min(a + rows, n_responses))) for a in range(0, n_responses, rows)]


def cells_batch(logp: Tensor, ctx: EvalContext, weight: Tensor | None) -> tuple[int, ...]:
    """The batch shape of the cell table of `logp` against the weights and the context's sources."""
    shapes = [logp.shape[:-2]]
    for source in (ctx.ref_logp, ctx.reward):
        if source is not None:
            shapes.append(source.shape[:-2])
    if weight is not None:
        shapes.append(weight.shape[:-3])
    return broadcast_shape(*shapes)


def cell_inputs(
    obj: Objective,
    logp: Tensor,
    ctx: EvalContext,
    weight: Tensor | None,
    block: CellBlock | None = None,
    *,
    first: Tensor | None = None,
    second: Tensor | None = None,
) -> dict[str, Tensor | float]:
    """`pair_inputs` on every cell (x, a, b) of a finite world: views t[..., :, None] and t[..., None, :].

    With `block`, on that block of cells only: views t[..., prompts, rows, None] and
    t[..., prompts, None, :].  `first`/`second` replace the policy's two views (the solver
    passes full-cell copies to take elementwise derivatives).  Where `weight` is zero, a
    non-finite source (a zero-probability response) is replaced by 0 in that cell, so unused
    cells give neither inf·0 nor a NaN gradient; callers weight the result with
    `torch.where(weight > 0, ...)`.
    """
    prompts, rows = (slice(None), slice(None)) if block is None else (block.prompts, block.rows)
    w = weight[..., prompts, rows, :] if weight is not None else None
    return _block_inputs(obj, logp, ctx, w, prompts, rows, first, second)


cell_block_inputs = cell_inputs
"""`cell_inputs` on one block of cells (the name the solver's block loop reads)."""


def _block_inputs(obj, logp, ctx, w, prompts, rows, first=None, second=None) -> dict[str, Tensor | float]:
    """`cell_block_inputs` with the block's weights `w` already sliced (None: no masking)."""
    used = None

    def views(base: Tensor | None, chosen: Tensor | None = None, rejected: Tensor | None = None) -> Pair | None:
        nonlocal used
        if base is None:
            return None
        base = base[..., prompts, :]
        pair = (
            base[..., rows].unsqueeze(-1) if chosen is None else chosen,
            base.unsqueeze(-2) if rejected is None else rejected,
        )
        # Only a source with a non-finite entry needs masking; the check runs on the small [.., X, A] base.
        if w is None or torch.isfinite(base).all():
            return pair
        if used is None:
            used = w > 0
        masked = []
        for view in pair:
            view, mask = torch.broadcast_tensors(view, used)
            masked.append(torch.where(mask, view, torch.zeros_like(view)))
        return masked[0], masked[1]

    return pair_inputs(
        obj,
        views(logp, first, second),
        reference=views(ctx.ref_logp),
        reward=views(ctx.reward),
        gamma=ctx.gamma,
    )


def cell_values(
    obj: Objective, logp: Tensor, ctx: EvalContext, weight: Tensor | None, **views: Tensor | None
) -> Tensor:
    """A pair objective's elementwise loss on every cell (x, a, b), [..., X, A, A].

    `views` are `cell_inputs`'s `first`/`second` (the policy's two views replaced).
    """
    return obj.fn(**cell_inputs(obj, logp, ctx, weight, **views), **ctx.params)


def weighted_cell_sum(
    obj: Objective, logp: Tensor, ctx: EvalContext, weight: Tensor | PopulationWeights | None
) -> Tensor:
    """Σ_(a, b) weight · ℓ(x, a, b) per prompt, [..., X], one block of cells at a time.

    `weight` is a [..., X, A, A] tensor or `PopulationWeights` (the law's weights, made a
    block at a time).  A cell of weight zero contributes 0 whatever its loss (even inf or NaN).
    """
    return _cell_sums(obj, logp, ctx, weight)[0]


def _weighted_block_sum(w: Tensor, values: Tensor) -> Tensor:
    """Σ over the last two dimensions of w · values, with 0 wherever w = 0 (even if values is inf or NaN).

    One product and one sum; the mask is applied only when that sum is not finite (a non-finite
    product exists: then either a used cell's loss is infinite, kept, or an unused cell's is, dropped).
    """
    total = (w * values).sum(dim=(-1, -2))
    if bool(torch.isfinite(total).all()):
        return total
    return torch.where(w > 0, w * values, 0.0).sum(dim=(-1, -2))


def _cell_sums(obj: Objective | None, logp: Tensor, ctx: EvalContext, weight) -> tuple[Tensor | None, Tensor]:
    """(Σ_(a, b) w ℓ per prompt [..., X] (None if `obj` is None), Σ_(a, b) w per prompt [..., X]) in one pass."""
    X, A = logp.shape[-2:]
    block_of = weight.block if isinstance(weight, PopulationWeights) else None
    sums, masses = [], []
    for group in cell_blocks(cells_batch(logp, ctx, weight), X, A):
        total, mass = 0.0, 0.0
        for block in group:
            w = block_of(block) if block_of is not None else weight[..., block.prompts, block.rows, :]
            mass = mass + w.sum(dim=(-1, -2))
            if obj is not None:
                inputs = _block_inputs(obj, logp, ctx, w, block.prompts, block.rows)
                total = total + _weighted_block_sum(w, obj.fn(**inputs, **ctx.params))
        sums.append(total)
        masses.append(mass)
    return (torch.cat(sums, dim=-1) if obj is not None else None), torch.cat(masses, dim=-1)


def _population_cell_sums(obj: Objective, logp: Tensor, ctx: EvalContext, weights: PopulationWeights):
    """`_cell_sums` of the population law, over one triangle of cells for the logistic losses under spec §1's law.

    PMLE, the reward model and DPO with finite scores, labelled by spec §1's law (no law, or
    `BradleyTerry`) and not differentiated by autograd (the triangle path writes into buffers),
    take `synthalign._logistic_pairs.population_logistic_sums`: the pair (a, b), (b, a) in one
    evaluation, no weight table.  Everything else goes cell by cell.
    """

    world = weights.world
    law = getattr(world, "law", None)
    sources = (logp, ctx.ref_logp, world.target.logp, world.behavior.probs, world.prompt_dist)
    differentiated = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in sources)
    spec_law = law is None or isinstance(law, BradleyTerry)
    scores = None
    if obj.kind == "pair" and weights.labelled and spec_law and not differentiated:
        scores = logistic_scores(obj, logp, ctx.ref_logp, ctx.params, ctx.gamma)
    if scores is None:
        return _cell_sums(obj if obj.kind == "pair" else None, logp, ctx, weights)
    target, gamma = world.target.logp, world.gamma
    if isinstance(law, BradleyTerry):  # as `population_preferences`
        target = target if law.target is None else law.target.logp.to(world.prompt_dist)
        gamma = gamma if law.gamma is None else law.gamma
    shape = scores.shape
    rows = (-1, shape[-1])
    behavior = world.behavior.probs.to(scores.dtype)
    sums = population_logistic_sums(
        scores.reshape(rows),
        (gamma * target).to(scores.dtype).expand(shape).reshape(rows),
        behavior.expand(shape).reshape(rows),
    )
    prompt_dist = world.prompt_dist.to(scores.dtype)
    per_prompt = prompt_dist * sums.reshape(shape[:-1])
    # Σ_(a, b) 2 D μ(a) μ(b) σ(r_a − r_b) = D (Σ_a μ(a))², as the law's table sums (σ(t) + σ(−t) = 1).
    mass = (prompt_dist * behavior.sum(dim=-1).square()).unsqueeze(0)
    return (per_prompt if per_prompt.dim() > 1 else per_prompt.unsqueeze(0)), mass


@dataclasses.dataclass(frozen=True)
class PopulationWeights:
    """The exact law of one pair over the cells of `world`, made one block of cells at a time.

    The same numbers as `population_preferences(world).counts` (labelled pairs, the world's
    law) or `population_pairs(world, pairs_from).counts` (unlabelled pairs), computed by the
    same operations in the same order, but never held as a whole [1, X, A, A] table.
    """

    world: World
    labelled: bool
    pairs_from: Policy | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        X, A = self.world.n_prompts, self.world.n_responses
        return (1, X, A, A)

    def block(self, block: CellBlock) -> Tensor:
        """The weights of the cells of `block`, [1, prompts, rows, A]."""
        world, prompts, rows = self.world, block.prompts, block.rows
        if not self.labelled:  # D(x) p(a|x) p(b|x)
            probs = (self.pairs_from if self.pairs_from is not None else world.behavior).probs[prompts]
            joint = world.prompt_dist[prompts, None, None] * probs[:, rows, None] * probs[:, None, :]
            return joint.unsqueeze(0)
        # 2 D(x) mu(a|x) mu(b|x) P(a ≻ b | x), as in `population_preferences`.
        behavior = world.behavior.probs[prompts]
        if getattr(world, "law", None) is not None:
            table = self._law_matrix[prompts, rows].clone()
        else:
            target = world.target.logp[prompts]
            table = preference_probability(target[:, rows, None], target[:, None, :], world.gamma)
        weight = 2.0 * world.prompt_dist[prompts, None] * behavior
        return table.mul_(weight[:, rows, None]).mul_(behavior[:, None, :]).unsqueeze(0)

    @functools.cached_property
    def _law_matrix(self) -> Tensor:
        return self.world.law.matrix(self.world)


def kl_regularizer(logp: Tensor, ref_logp: Tensor, beta: float) -> Tensor:
    """beta · KL(pi(x) ‖ pi0(x)) = beta Σ_a pi(a|x) (ln pi(a|x) − ln pi0(a|x)) per prompt, [..., X] (eq. 1, 5, 12, 15).

    `logp` [..., X, A] and `ref_logp` broadcast against each other.  In log-space with
    0 · ln(0 / pi0) = 0 (`kl_per_prompt`, through `safe_log_ratio`): a response of probability
    zero adds nothing, one that pi0 forbids and pi does not makes it +inf.  Zeros of the
    policy's shape at beta = 0 (pi0 then is not read).
    """
    beta = check_positive(beta, "beta", allow_zero=True)
    if beta == 0.0:
        return torch.zeros(logp.shape[:-1], dtype=logp.dtype, device=logp.device)
    return beta * kl_per_prompt(logp, ref_logp)


def prompt_values(obj: Objective, logp: Tensor, ctx: EvalContext, beta: float) -> Tensor:
    """The per-prompt terms of an objective, [..., X]: a prompt objective's loss plus beta · KL(pi(x) ‖ pi0(x)).

    The one place the KL regularizer of eq. 1, 5, 12 and 15 (`kl_regularizer`) is added; zero for a pair
    objective at beta = 0.
    """
    if obj.kind == "prompt":
        inputs = prompt_inputs(obj, logp, reference=ctx.ref_logp, reward=ctx.reward, gamma=ctx.gamma)
        values = obj.fn(**inputs, **ctx.params)
    else:
        values = torch.zeros(logp.shape[:-1], dtype=logp.dtype, device=logp.device)
    if beta > 0:
        values = values + kl_regularizer(logp, ctx.ref_logp, beta)
    return values


# ------------------------------------------------------------------ weighted losses


def data_weights(obj: Objective, data: CellData) -> tuple[Tensor | None, Tensor, Tensor]:
    """(pair weights [R, X, A, A] or None, prompt weights [R, X], total weight [R]) for `obj`."""
    if not isinstance(data, CellData):
        raise ValueError(f"data must be PreferenceData or PairData, got {type(data).__name__}")
    if obj.data == "preferences" and not isinstance(data, PreferenceData):
        raise ValueError(f"objective {obj.name!r} needs labelled preferences, got unlabelled pairs")
    prompt_weight = data.prompt_counts
    total = prompt_weight.sum(dim=-1)
    pair_weight = data.pair_counts if obj.kind == "pair" else None
    return pair_weight, prompt_weight, total


def make_context(obj: Objective, world: World, reward: Tensor | None, params: dict) -> EvalContext:
    """The `EvalContext` of `obj` on `world`: its gamma and pi0, the reward (checked against the world) and `params`."""
    if reward is not None:
        reward = torch.as_tensor(reward, dtype=world.dtype, device=world.device)
        if reward.shape[-2:] != (world.n_prompts, world.n_responses):
            raise ValueError(
                f"reward must have shape [..., {world.n_prompts}, {world.n_responses}], got {tuple(reward.shape)}"
            )
        if torch.isnan(reward).any():
            raise ValueError("reward contains NaN")
    return EvalContext(gamma=world.gamma, ref_logp=world.reference.logp, reward=reward, params=params)


def per_prompt_loss(
    obj: Objective,
    logp: Tensor,
    pair_weight: Tensor | None,
    prompt_weight: Tensor,
    ctx: EvalContext,
    beta: float,
) -> Tensor:
    """Σ over cells of prompt x of the weighted loss, plus the weighted prompt terms: [..., X] (not normalized)."""
    per_prompt = torch.zeros((), dtype=logp.dtype, device=logp.device)
    if obj.kind == "pair":
        per_prompt = weighted_cell_sum(obj, logp, ctx, pair_weight)
    if obj.kind == "prompt" or beta > 0:
        values = prompt_values(obj, logp, ctx, beta)
        per_prompt = per_prompt + torch.where(prompt_weight > 0, prompt_weight * values, torch.zeros_like(values))
    return per_prompt


def empirical_loss(
    objective: str | Objective,
    data: PreferenceData | PairData,
    policy: Policy | Tensor,
    *,
    beta: float = 0.0,
    reward: Tensor | None = None,
    **params: float,
) -> Tensor:
    """The loss of `policy` on each replicate of `data` (counts or probabilities), shape [R].

    The policy's batch dimensions broadcast with the replicate dimension.

    `reward` (R̂, needed by distillation, REBEL, RKL, RLHF) is [X, A] or [R, X, A].
    """
    check_policy_for_world(policy, check_data(data).world)
    obj = get_objective(objective)
    beta = check_positive(beta, "beta", allow_zero=True)
    pair_weight, prompt_weight, total = data_weights(obj, data)
    ctx = make_context(obj, data.world, reward, obj.resolve_params(params))
    if obj.needs_reward and ctx.reward is None:
        raise ValueError(f"objective {obj.name!r} needs a reward: pass reward=...")
    logp = as_logp(policy).to(data.counts.dtype)
    return per_prompt_loss(obj, logp, pair_weight, prompt_weight, ctx, beta).sum(dim=-1) / total


def population_loss(
    objective: str | Objective,
    world: World,
    policy: Policy | Tensor,
    *,
    beta: float = 0.0,
    reward: Tensor | None = None,
    pairs_from: Policy | None = None,
    **params: float,
) -> Tensor:
    """The exact population loss of `policy`, summed over the finite space.

    Labelled pairs follow the world's law (spec §1); unlabelled pairs (for
    distillation) are drawn from mu, or from `pairs_from` (pi0 for Thm 14, the
    current policy for Algorithm 1).  When the objective needs a reward and
    none is given, the true reward R* = gamma ln pi* is used (spec §6.13).
    The result has the policy's batch shape.

    The law's cell weights (`PopulationWeights`) are made one block of cells at a
    time in the same pass as the loss, so memory stays O(block) beyond the policy
    whatever A is; the numbers are those of `empirical_loss` on
    `population_preferences(world)` (or `population_pairs`) to float64 rounding.
    """
    check_policy_for_world(policy, check_world(world))
    if pairs_from is not None:
        check_policy_for_world(pairs_from, world, "pairs_from")
    obj = get_objective(objective)
    if obj.data == "pairs" and pairs_from is not None and pairs_from.probs.dim() != 2:
        raise ValueError("policy must be a single policy of shape [X, A]")  # as `population_pairs`
    if obj.needs_reward and reward is None:
        reward = world.true_reward
    # The law's weights are made one block of cells at a time, in the same pass as the loss:
    # the same sums as `empirical_loss` on `population_preferences(world)` (or `population_pairs`).
    weights = PopulationWeights(world, labelled=obj.data != "pairs", pairs_from=pairs_from)
    beta = check_positive(beta, "beta", allow_zero=True)
    ctx = make_context(obj, world, reward, obj.resolve_params(params))
    if obj.needs_reward and ctx.reward is None:
        raise ValueError(f"objective {obj.name!r} needs a reward: pass reward=...")
    logp = as_logp(policy).to(world.dtype)
    per_prompt, prompt_weight = _population_cell_sums(obj, logp, ctx, weights)
    if per_prompt is None:
        per_prompt = torch.zeros((), dtype=logp.dtype, device=logp.device)
    if obj.kind == "prompt" or beta > 0:
        values = prompt_values(obj, logp, ctx, beta)
        per_prompt = per_prompt + torch.where(prompt_weight > 0, prompt_weight * values, torch.zeros_like(values))
    loss = per_prompt.sum(dim=-1) / prompt_weight.sum(dim=-1)
    batch = as_logp(policy).shape[:-2]
    return loss.reshape(batch) if len(batch) == 0 else loss
