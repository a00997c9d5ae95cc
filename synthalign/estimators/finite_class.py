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

import torch
from torch import Tensor

from synthalign._checks import as_tensor, check_positive
from synthalign.estimators.fit import resolve_reward
from synthalign.evaluate import cell_values, data_weights, make_context, per_prompt_loss, prompt_values
from synthalign.registry.protocol import Objective, get_objective
from synthalign.worlds.classes import PolicyClass
from synthalign.worlds.datasets import PairData, PreferenceData
from synthalign.worlds.policy import Policy, as_logp

_CELL_BUDGET = 2**24  # elements per chunk of per-replicate cell losses in argmin_over_class (128 MiB in float64)


@dataclasses.dataclass(frozen=True, eq=False)
class ClassFit:
    """Argmin over a finite class: `index` [R], `policy` (batch [R]) and the losses [R, K]."""

    index: Tensor
    policy: Policy
    losses: Tensor


def argmin_over_class(
    objective: str | Objective,
    data: PreferenceData | PairData,
    candidates: Policy | Tensor,
    *,
    beta: float = 0.0,
    reward: Tensor | None = None,
    reward_ridge: float = 1e-2,
    chunk_size: int = 4096,
    **params,
) -> ClassFit:
    """pi_hat = argmin over the K candidates of the empirical objective, for every replicate (A1's setting).

    With a reward shared by all replicates the losses are one matrix product,
    counts [R, cells] @ per-cell losses [cells, K]; with a per-replicate reward
    [R, X, A] they are an einsum.  Candidates are processed `chunk_size` at a
    time so memory stays O(chunk_size × cells) (with a per-replicate reward the
    chunk shrinks so that chunk × R × cells stays near 2^24 elements).  A cell of positive weight
    where a candidate's loss is +inf makes that candidate's loss +inf.
    """
    obj = get_objective(objective)
    beta = check_positive(beta, "beta", allow_zero=True)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    logp_all = as_logp(candidates, "candidates").to(data.counts.dtype)
    world = data.world
    if logp_all.dim() != 3 or logp_all.shape[-2:] != (world.n_prompts, world.n_responses):
        raise ValueError(
            f"candidates must have shape [K, {world.n_prompts}, {world.n_responses}], got {tuple(logp_all.shape)}"
        )
    reward = resolve_reward(obj, data, reward, reward_ridge)
    ctx = make_context(obj, world, reward, obj.resolve_params(params))
    pair_weight, prompt_weight, total = data_weights(obj, data)
    per_replicate_reward = ctx.reward is not None and ctx.reward.dim() == 3
    R = data.replicates
    if per_replicate_reward:
        # Cells then depend on the replicate: keep a chunk's [chunk, R, X, A, A] tensors near
        # _CELL_BUDGET elements whatever R is.
        cells = R * world.n_prompts * world.n_responses**2
        chunk_size = max(1, min(chunk_size, _CELL_BUDGET // cells))
    chunks = []
    for start in range(0, logp_all.shape[0], chunk_size):
        logp = logp_all[start : start + chunk_size]
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


def _weighted_matmul(weight: Tensor, values: Tensor) -> Tensor:
    """weight [R, C] @ values[K, C]ᵀ where 0 · inf counts as 0 and w > 0 at an inf makes the row inf."""
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
    policy_class: PolicyClass | Policy | Tensor,
    *,
    reward_class: PolicyClass | Policy | Tensor | None = None,
    reward_data: PreferenceData | None = None,
    beta: float = 0.0,
    chunk_size: int = 4096,
    **params,
) -> ClassEstimate:
    """pi_hat = argmin over Π of the empirical objective, for every replicate (the setting of spec §4).

    For an objective that needs a reward (distillation, RKL, RLHF, REBEL) the
    reward is fitted first, as in Thms 6, 7, 14: R̂ = argmin over ℛ of the
    Bradley–Terry loss (eq. 9) on the labelled pairs of `reward_data` (default
    `data`), with ℛ given as its induced class 𝒫_γ(ℛ) (`reward_class`; eq. 9 on
    R = γ ln π_R is PMLE on π_R, see the "reward_model" objective).  Then
    pi_hat = argmin over Π of the objective with R̂; for RKL at β = 0 this is π_R̂
    whenever π_R̂ ∈ Π (A5), and for distillation too (π_R̂ has loss 0).

    The replicates that picked the same R̂ share one argmin over Π (one matrix
    product), so the work is one pass over Π per distinct R̂, never per replicate.

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
    candidates = policy_class.logp if isinstance(policy_class, Policy) else as_tensor(policy_class, "policy_class")
    if not obj.needs_reward:
        if reward_class is not None:
            raise ValueError(f"objective {obj.name!r} takes no reward, so reward_class must be None")
        fit = argmin_over_class(obj, data, candidates, beta=beta, chunk_size=chunk_size, **params)
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
    reward_fit = argmin_over_class("reward_model", labelled, reward_logp, chunk_size=chunk_size)
    gamma = data.world.gamma
    rewards = gamma * reward_logp[reward_fit.index]  # [R, X, A]
    losses = torch.empty(data.replicates, candidates.shape[0], dtype=data.counts.dtype, device=data.counts.device)
    for member in torch.unique(reward_fit.index).tolist():
        rows = (reward_fit.index == member).nonzero().squeeze(-1)
        subset = type(data)(data.counts[rows], data.n_pairs, data.world)
        fit = argmin_over_class(
            obj, subset, candidates, beta=beta, reward=gamma * reward_logp[member], chunk_size=chunk_size, **params
        )
        losses[rows] = fit.losses
    index = losses.argmin(dim=-1)
    policy = Policy(candidates[index], data.world.prompt_dist)
    return ClassEstimate(index=index, policy=policy, losses=losses, reward_index=reward_fit.index, reward=rewards)
