"""Estimators over an explicit finite class: the theorems' own setting (A1, A5; spec §4).

* `argmin_over_class`: pi_hat = argmin over K candidate policies of the empirical
  objective, for every replicate: one product of the data's counts with the per-cell
  losses, streamed over the candidates in chunks;
* `fit_over_class`: the two-stage estimators of Thms 6, 7, 14 — R̂ = argmin over ℛ of
  eq. 9, then the argmin over Π of the objective with R̂.

The classes themselves are `synthalign.worlds.classes`'s.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from synthalign._checks import InputTypeError, as_tensor, check_int, check_positive, check_reward, safe_log_ratio
from synthalign.estimators.fit import resolve_reward
from synthalign.evaluate import cell_values, data_weights, make_context, per_prompt_loss, prompt_values
from synthalign.registry import paper
from synthalign.registry.protocol import Objective, get_objective
from synthalign.worlds.checks import check_class_logp
from synthalign.worlds.datasets import CellData, PairData, PreferenceData, check_data
from synthalign.worlds.policy import Policy, as_logp

if TYPE_CHECKING:
    from synthalign._types import ClassLike, PolicyLike

__all__ = ["ClassFit", "argmin_over_class", "ClassEstimate", "fit_over_class"]

_CELL_BUDGET = 2**24  # elements per chunk of per-replicate cell losses in argmin_over_class (128 MiB in float64)
_CPU_TABLE_BUDGET = 2**20  # elements per per-candidate cell table on the CPU (8 MiB in float64)


@dataclasses.dataclass(frozen=True, eq=False)
class ClassFit:
    """Argmin over a finite class: `index` [R], `policy` (batch [R]) and the losses [R, K]."""

    index: Tensor
    policy: Policy
    losses: Tensor


_NOT_GIVEN = object()


def _check_class_fit(
    data: CellData,
    candidates: object,
    name: str,
    *,
    beta: float,
    chunk_size: int,
    reward: object = None,
    reward_ridge: object = _NOT_GIVEN,
) -> int:
    """The arguments shared by the estimators over a finite class (`argmin_over_class`, `fit_over_class`).

    Returns `chunk_size` as a Python int (a numpy integer is accepted; a float, even integral, is not).
    """
    check_data(data)
    check_class_logp(candidates, name, world=data.world)
    check_positive(beta, "beta", allow_zero=True)
    if isinstance(chunk_size, float):
        raise InputTypeError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    chunk_size = check_int(chunk_size, "chunk_size")
    if reward is not None:
        check_reward(reward, data.world)
    if reward_ridge is not _NOT_GIVEN:
        check_positive(reward_ridge, "reward_ridge", allow_zero=True)
    return chunk_size


def argmin_over_class(
    objective: str | Objective,
    data: PreferenceData | PairData,
    candidates: PolicyLike,
    *,
    beta: float = 0.0,
    reward: Tensor | None = None,
    reward_ridge: float = 1e-2,
    chunk_size: int = 4096,
    **params: Any,
) -> ClassFit:
    """pi_hat = argmin over the K candidates of the empirical objective, for every replicate (A1's setting).

    With a reward shared by all replicates the losses are one matrix product,
    counts [R, cells] @ per-cell losses [cells, K].  With a per-replicate reward
    [R, X, A] they are still matrix products for the objectives whose loss is affine
    in a function of the reward (distillation, RKL, RLHF: `_reward_affine_form`), and
    the losses of every (candidate, replicate) cell otherwise.  Candidates are
    processed at most `chunk_size` at a time, fewer when needed so that a chunk's
    cell tables stay near 2^22 elements (2^20 on the CPU; 2^24 for chunk × R × cells
    in the per-cell case): memory is O(chunk × cells) beyond the data and the [R, K]
    losses.  A cell of positive weight where a candidate's loss is +inf makes that
    candidate's loss +inf.
    """
    obj = get_objective(objective)
    chunk_size = _check_class_fit(
        data, candidates, "candidates", beta=beta, chunk_size=chunk_size, reward=reward, reward_ridge=reward_ridge
    )
    logp_all = as_logp(candidates, "candidates")
    world = data.world
    if logp_all.dim() != 3 or logp_all.shape[-2:] != (world.n_prompts, world.n_responses):
        raise ValueError(
            f"candidates must have shape [K, {world.n_prompts}, {world.n_responses}], got {tuple(logp_all.shape)}"
        )
    return _class_argmin(obj, data, logp_all, beta, resolve_reward(obj, data, reward, reward_ridge), chunk_size, params)


def _class_argmin(
    obj: Objective,
    data: PreferenceData | PairData,
    logp_all: Tensor,
    beta: float,
    reward: Tensor | None,
    chunk_size: int,
    params: dict,
) -> ClassFit:
    """`argmin_over_class` on a class [K, X, A] already checked against `data` (as `_check_class_fit` does)."""
    beta = check_positive(beta, "beta", allow_zero=True)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    logp_all = logp_all.to(data.counts.dtype)
    world = data.world
    ctx = make_context(obj, world, reward, obj.resolve_params(params))
    pair_weight, prompt_weight, total = data_weights(obj, data)
    per_replicate_reward = ctx.reward is not None and ctx.reward.dim() == 3
    R = data.replicates
    cells = world.n_prompts * world.n_responses**2
    # Per-candidate cell tables of [chunk, cells] stay near a quarter of the budget, and on the CPU
    # near _CPU_TABLE_BUDGET: there the allocator maps temporaries of tens of MiB afresh at each
    # operation, and their page faults made 2^22-element chunks about twice as slow.
    table_budget = _CELL_BUDGET // 4
    if logp_all.device.type == "cpu":
        table_budget = min(table_budget, _CPU_TABLE_BUDGET)
    chunk_size = max(1, min(chunk_size, table_budget // cells))
    affine = _reward_affine_form(obj, ctx) if ctx.reward is not None else None
    if per_replicate_reward and affine is None:
        # Cells then depend on the replicate: keep a chunk's [chunk, R, X, A, A] tensors near
        # _CELL_BUDGET elements whatever R is.
        chunk_size = max(1, min(chunk_size, _CELL_BUDGET // (R * cells)))
    reward_terms = affine(pair_weight, prompt_weight) if affine is not None else None
    chunks = []
    for start in range(0, logp_all.shape[0], chunk_size):
        logp = logp_all[start : start + chunk_size]
        if reward_terms is not None:
            chunks.append(reward_terms(logp, beta) / total.unsqueeze(-1))
            continue
        if per_replicate_reward:
            # [K, R, X, A] policies against [R, ...] rewards: cells depend on the replicate.
            expanded = logp.unsqueeze(1)
            losses = per_prompt_loss(obj, expanded, pair_weight, prompt_weight, ctx, beta).sum(-1)
            chunks.append((losses / total).transpose(0, 1))
            continue
        chunk_losses = torch.zeros((), dtype=logp.dtype, device=logp.device)
        if obj.kind == "pair":
            cell_loss = cell_values(obj, logp, ctx, None).reshape(logp.shape[0], -1)  # [K, cells]
            chunk_losses = _weighted_matmul(pair_weight.reshape(R, -1), cell_loss)
        if obj.kind == "prompt" or beta > 0:
            chunk_losses = chunk_losses + _weighted_matmul(prompt_weight, prompt_values(obj, logp, ctx, beta))  # [K, X]
        chunks.append(chunk_losses / total.unsqueeze(-1))
    losses = torch.cat(chunks, dim=-1)
    index = losses.argmin(dim=-1)
    return ClassFit(index=index, policy=Policy(logp_all[index], world.prompt_dist), losses=losses)


def _reward_affine_form(obj: Objective, ctx):
    """For an objective whose loss is affine in a function of the reward, the per-replicate losses as matmuls.

    Returns `terms(pair_weight, prompt_weight)` -> `losses(logp [K, X, A], beta)` -> [R, K] (summed, not
    normalized), or None when the objective is not one of these or the reward is not finite.  R̂ is per
    replicate [R, X, A] or shared [X, A].  The sum of the separate terms is exact to rounding in the size of
    each term (the constant −H(p̃) and the cross-entropy), not of their difference: a loss near 0 carries an
    absolute error of a few ulps of H.

    * distillation (eq. 11): with p̃ = σ(t), t = R̂(a) − R̂(b) and m = γ ln[π(a)/π(b)],
      KL(Bern(p̃) ‖ Bern(σ(m))) = −H(p̃) + p̃ · (−ln σ(m)) + (1 − p̃) · (−ln σ(−m)); the second
      term of cell (a, b) is a first term of cell (b, a), so the sum over the cells is one
      product [R, cells] @ [cells, K] with weights (w(a, b) + w(b, a)) σ(t(a, b)), plus a
      constant per replicate;
    * RKL and RLHF (eq. 15, 1): −E_π R̂ + (terms of π alone): one product [R, X·A] @ [X·A, K]
      plus the reward-free terms, one product [R, X] @ [X, K].
    """

    kind = {paper._distillation.fn: "distillation", paper._rkl.fn: "linear", paper._rlhf.fn: "linear"}.get(obj.fn)
    if kind is None or not bool(torch.isfinite(ctx.reward).all()):
        return None
    reward = ctx.reward  # [R, X, A] per replicate, or [X, A] shared by all

    if kind == "distillation":

        def terms(pair_weight, prompt_weight):
            target = safe_log_ratio(reward.unsqueeze(-1), reward.unsqueeze(-2))  # [(R,) X, A, A]
            weight = pair_weight.expand(torch.broadcast_shapes(pair_weight.shape, target.shape))
            R = weight.shape[0]
            p_pos, p_neg = torch.sigmoid(target), torch.sigmoid(-target)
            # Both margins and targets are antisymmetric (m(b, a) = −m(a, b), σ(−t(b, a)) = σ(t(a, b))),
            # so the (1 − p̃)(−ln σ(−m)) term of cell (b, a) is w(b, a) σ(t(a, b)) (−ln σ(m(a, b))):
            # it joins cell (a, b)'s, and −ln σ(m) is taken once per cell, one product for both terms.
            soft_label = ((weight + weight.transpose(-1, -2)) * p_pos).reshape(R, -1)
            # −H(Bern(σ(t))) = σ(t) ln σ(t) + σ(−t) ln σ(−t), each term 0 where its probability is 0
            # (as in `bernoulli_kl_logits`).
            minus_entropy = torch.where(p_pos > 0, p_pos * F.logsigmoid(target), 0.0) + torch.where(
                p_neg > 0, p_neg * F.logsigmoid(-target), 0.0
            )
            constant = (weight * minus_entropy).reshape(R, -1).sum(dim=-1, keepdim=True)

            def losses(logp, beta):
                # −ln σ(m) = softplus(−m), with m = s_a − s_b on the scores s = γ ln π (scaled before the
                # difference, as R̂ = γ ln π_R̂ is).  Past the threshold softplus(y) is taken as y: exact to
                # float64 rounding for 40 (e^−40 is below half an ulp of 40), not for torch's default 20.
                scores = ctx.gamma * logp
                flipped = safe_log_ratio(scores.unsqueeze(-2), scores.unsqueeze(-1)).reshape(logp.shape[0], -1)
                out = _weighted_matmul(soft_label, F.softplus(flipped, threshold=40.0)) + constant
                if beta > 0:  # the β·KL term of eq. 12, from `prompt_values` (its one home)
                    out = out + _weighted_matmul(prompt_weight, prompt_values(obj, logp, ctx, beta))
                return out

            return losses

        return terms

    free = dataclasses.replace(ctx, reward=reward.new_zeros(reward.shape[-2:]))

    def terms(pair_weight, prompt_weight):
        weighted_reward = prompt_weight.unsqueeze(-1) * reward
        weighted_reward = weighted_reward.reshape(weighted_reward.shape[0], -1)  # [R, X·A]

        def losses(logp, beta):
            expected = _weighted_matmul(weighted_reward, -logp.exp().reshape(logp.shape[0], -1))
            return expected + _weighted_matmul(prompt_weight, prompt_values(obj, logp, free, beta))

        return losses

    return terms


def _weighted_matmul(weight: Tensor, values: Tensor) -> Tensor:
    """weight [R, C] @ values[K, C]ᵀ where 0 · inf counts as 0 and w > 0 at an inf makes the row inf."""
    out = weight @ values.transpose(0, 1)
    # A non-finite value reaches every row of its column (0 · inf is NaN), so a finite product
    # means finite values, or non-finite ones met only by skipped zero weights: the same result.
    if bool(torch.isfinite(out).all()):
        return out
    finite = torch.where(torch.isfinite(values), values, torch.zeros_like(values))
    out = weight @ finite.transpose(0, 1)
    infinite = ((weight > 0).to(values.dtype) @ (values == float("inf")).to(values.dtype).transpose(0, 1)) > 0
    return torch.where(infinite, torch.full_like(out, float("inf")), out)


@dataclasses.dataclass(frozen=True, eq=False)
class ClassEstimate:
    """What `fit_over_class` returns, for R replicate datasets.

    Attributes:
      index: [R] index in Π of pi_hat.
      policy: pi_hat, batch [R].
      losses: [R, K] the empirical objective of every member.
      reward_index: [R] index in ℛ of R̂ (None when the objective needs no reward).
      reward: [R, X, A] R̂ = γ ln π_R̂ (None when the objective needs no reward).
    """

    index: Tensor
    policy: Policy
    losses: Tensor
    reward_index: Tensor | None = None
    reward: Tensor | None = None


def fit_over_class(
    objective: str | Objective,
    data: PreferenceData | PairData,
    policy_class: ClassLike,
    *,
    reward_class: ClassLike | None = None,
    reward_data: PreferenceData | None = None,
    beta: float = 0.0,
    chunk_size: int = 4096,
    **params: Any,
) -> ClassEstimate:
    """pi_hat = argmin over Π of the empirical objective, for every replicate (the setting of spec §4).

    For an objective that needs a reward (distillation, RKL, RLHF, REBEL) the
    reward is fitted first, as in Thms 6, 7, 14: R̂ = argmin over ℛ of the
    Bradley–Terry loss (eq. 9) on the labelled pairs of `reward_data` (default
    `data`), with ℛ given as its induced class 𝒫_γ(ℛ) (`reward_class`; eq. 9 on
    R = γ ln π_R is PMLE on π_R, see the "reward_model" objective).  Then
    pi_hat = argmin over Π of the objective with R̂; for RKL at β = 0 this is π_R̂
    whenever π_R̂ ∈ Π (A5), and for distillation too (π_R̂ has loss 0).

    For distillation, RKL and RLHF the loss is affine in a function of R̂, so all
    replicates, each with its own R̂, take one pass over Π (`argmin_over_class`).
    For other objectives the replicates that picked the same R̂ share one argmin
    over Π, one pass per distinct R̂, never per replicate.

    Args:
      objective: a registered name or an `Objective`.
      data: `PreferenceData` (labelled pairs; their pairs without labels serve
        "pairs" objectives) or `PairData` (unlabelled pairs, e.g. from π0 for
        Thm 14; then `reward_data` must hold the labelled pairs).
      policy_class: Π, [K, X, A].
      reward_class: 𝒫_γ(ℛ), [M, X, A]; needed when the objective needs a reward.
      reward_data: labelled pairs for R̂, with as many replicates as `data`.
      beta: weight of KL(π ‖ π0) (the theorems use 0).
      chunk_size: members per block in `argmin_over_class` (memory ∝ chunk_size × X × A²).
      **params: the objective's hyper-parameters.
    """
    obj = get_objective(objective)
    chunk_size = _check_class_fit(data, policy_class, "policy_class", beta=beta, chunk_size=chunk_size)
    if reward_class is not None:
        check_class_logp(reward_class, "reward_class", world=data.world)
    if reward_data is not None:
        check_data(reward_data, "reward_data")
        if reward_class is not None and reward_data.world is not data.world:  # R̂ is fitted on reward_data
            check_class_logp(reward_class, "reward_class", world=reward_data.world)
    candidates = policy_class.logp if isinstance(policy_class, Policy) else as_tensor(policy_class, "policy_class")
    if not obj.needs_reward:
        if reward_class is not None:
            raise ValueError(f"objective {obj.name!r} takes no reward, so reward_class must be None")
        fit = _class_argmin(obj, data, candidates, beta, None, chunk_size, params)
        return ClassEstimate(index=fit.index, policy=fit.policy, losses=fit.losses)
    if reward_class is None:
        raise ValueError(f"objective {obj.name!r} needs a reward: pass reward_class (𝒫_γ(ℛ), [M, X, A])")
    labelled = data if reward_data is None else reward_data
    if not isinstance(labelled, PreferenceData):
        raise ValueError(
            "the reward is fitted on labelled pairs: pass reward_data=PreferenceData when data holds unlabelled pairs"
        )
    if labelled.replicates != data.replicates:
        raise ValueError(f"reward_data has {labelled.replicates} replicates but data has {data.replicates}")
    reward_logp = reward_class.logp if isinstance(reward_class, Policy) else as_tensor(reward_class, "reward_class")
    # Both classes are checked above, so every stage below takes them as they are.
    reward_fit = _class_argmin(get_objective("reward_model"), labelled, reward_logp, 0.0, None, chunk_size, {})
    gamma = data.world.gamma
    rewards = gamma * reward_logp[reward_fit.index]  # [R, X, A]
    ctx = make_context(obj, data.world, rewards, obj.resolve_params(params))
    if _reward_affine_form(obj, ctx) is not None:
        fit = _class_argmin(obj, data, candidates, beta, rewards, chunk_size, params)
        index = fit.losses.argmin(dim=-1)
        return ClassEstimate(
            index=index, policy=fit.policy, losses=fit.losses, reward_index=reward_fit.index, reward=rewards
        )
    losses = torch.empty(data.replicates, candidates.shape[0], dtype=data.counts.dtype, device=data.counts.device)
    for member in torch.unique(reward_fit.index).tolist():
        rows = (reward_fit.index == member).nonzero().squeeze(-1)
        subset = type(data)(data.counts[rows], data.n_pairs, data.world)
        fit = _class_argmin(obj, subset, candidates, beta, gamma * reward_logp[member], chunk_size, params)
        losses[rows] = fit.losses
    index = losses.argmin(dim=-1)
    policy = Policy(candidates[index], data.world.prompt_dist)
    return ClassEstimate(index=index, policy=policy, losses=losses, reward_index=reward_fit.index, reward=rewards)
