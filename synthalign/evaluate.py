"""Exact evaluation of any objective on tabular policies: empirical and population losses.

One code path serves three uses (../shared/STYLE.md): explicit pairs become
counts (`PreferenceList.to_counts`), a dataset is its counts, and the
population law is the same container with cell probabilities in place of
counts.  The loss of replicate r is

    L_r(pi) = [ Σ_cells w_r(cell) ℓ(cell) + Σ_x w_r(x) (prompt term + beta KL(pi(x) ‖ pi0(x))) ] / Σ w_r,

i.e. the (1/n) Σ of eq. 1, 4–6, 9–12, 15 for counts and the expectation for
probabilities.
"""

from __future__ import annotations

import torch
from torch import Tensor

from synthalign._checks import check_positive
from synthalign.metrics import kl_per_prompt
from synthalign.registry.protocol import EvalContext, Objective, get_objective
from synthalign.worlds.datasets import PairData, PreferenceData
from synthalign.worlds.policy import Policy, as_logp
from synthalign.worlds.preferences import population_pairs, population_preferences


def data_weights(obj: Objective, data) -> tuple[Tensor | None, Tensor, Tensor]:
    """(pair weights [R, X, A, A] or None, prompt weights [R, X], total weight [R]) for `obj`."""
    if not isinstance(data, (PreferenceData, PairData)):
        raise ValueError(f"data must be PreferenceData or PairData, got {type(data).__name__}")
    if obj.data == "preferences" and not isinstance(data, PreferenceData):
        raise ValueError(f"objective {obj.name!r} needs labelled preferences, got unlabelled pairs")
    prompt_weight = data.prompt_counts
    total = prompt_weight.sum(dim=-1)
    pair_weight = data.pair_counts if obj.kind == "pair" else None
    return pair_weight, prompt_weight, total


def make_context(obj: Objective, world, reward: Tensor | None, params: dict) -> EvalContext:
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
    """Σ over cells of prompt x of the weighted loss, plus the prompt terms: [..., X] (not normalized)."""
    used_prompt = prompt_weight > 0
    if obj.kind == "pair":
        values = obj.pair_values(logp, ctx, pair_weight)
        weighted = torch.where(pair_weight > 0, pair_weight * values, torch.zeros_like(values))
        per_prompt = weighted.sum(dim=(-1, -2))
    else:
        values = obj.prompt_values(logp, ctx)
        per_prompt = torch.where(used_prompt, prompt_weight * values, torch.zeros_like(values))
    if beta > 0:
        kl = kl_per_prompt(logp, ctx.ref_logp)
        per_prompt = per_prompt + torch.where(used_prompt, beta * prompt_weight * kl, torch.zeros_like(kl))
    return per_prompt


def empirical_loss(
    objective: str | Objective,
    data: PreferenceData | PairData,
    policy: Policy | Tensor,
    *,
    beta: float = 0.0,
    reward: Tensor | None = None,
    **params,
) -> Tensor:
    """The loss of `policy` on each replicate of `data` (counts or probabilities), shape [R].

    The policy's batch dimensions broadcast with the replicate dimension.

    `reward` (R̂, needed by distillation, REBEL, RKL, RLHF) is [X, A] or [R, X, A].
    """
    obj = get_objective(objective)
    beta = check_positive(beta, "beta", allow_zero=True)
    ctx = make_context(obj, data.world, reward, obj.resolve_params(params))
    if obj.needs_reward and ctx.reward is None:
        raise ValueError(f"objective {obj.name!r} needs a reward: pass reward=...")
    pair_weight, prompt_weight, total = data_weights(obj, data)
    logp = as_logp(policy).to(data.counts.dtype)
    return per_prompt_loss(obj, logp, pair_weight, prompt_weight, ctx, beta).sum(dim=-1) / total


def population_loss(
    objective: str | Objective,
    world,
    policy: Policy | Tensor,
    *,
    beta: float = 0.0,
    reward: Tensor | None = None,
    pairs_from: Policy | None = None,
    **params,
) -> Tensor:
    """The exact population loss of `policy`, summed over the finite space.

    Labelled pairs follow the world's law (spec §1); unlabelled pairs (for
    distillation) are drawn from mu, or from `pairs_from` (pi0 for Thm 14, the
    current policy for Algorithm 1).  When the objective needs a reward and
    none is given, the true reward R* = gamma ln pi* is used (spec §6.13).
    The result has the policy's batch shape.
    """
    obj = get_objective(objective)
    if obj.data == "pairs":
        data = population_pairs(world, pairs_from)
    else:
        data = population_preferences(world)
    if obj.needs_reward and reward is None:
        reward = world.true_reward
    loss = empirical_loss(obj, data, policy, beta=beta, reward=reward, **params)
    batch = as_logp(policy).shape[:-2]
    return loss.reshape(batch) if len(batch) == 0 else loss
