"""Registered objectives on batches of LM sequences: pair losses with their length conventions, and on-policy KL.

`pair_batch_loss` computes the sequence log-probabilities of a batch of (x, a⁺, a⁻) and calls the
registered objective's elementwise `Objective.fn` with exactly the inputs it declares, bound by
`synthalign.evaluate.pair_inputs` (the one binding, as on every cell of a tabular world).  With one
prompt token and one-token completions the LM *is* a tabular policy over its vocabulary, and the two
paths agree to rounding (`tests/test_bridge_losses.py`).

Length conventions (`Objective.length_convention`, spec §2's objectives are all "sum"): a sequence's
ln pi(a|x) is the sum over its tokens; a "per_token" objective (length-normalized DPO, SimPO, TRL's
IPO as `f_ipo`) is also given the token counts and divides by them itself; a "token_mean" objective
(TRL's SFT term) is averaged over the batch's chosen tokens rather than its pairs.

The beta · KL(pi ‖ pi0) term of eq. 1, 5, 12, 15 is an on-policy expectation: `kl_surrogate` is its
score-function estimate from responses sampled from pi (`synthalign.estimators.onpolicy`'s surrogate
with a zero reward), or its exact value on an enumerable space.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthalign._checks import as_tensor, check_positive
from synthalign.bridge._validate import check_model
from synthalign.bridge.sequences import check_batch, completion_lengths, pair_logprobs
from synthalign.estimators.score_function import GradientConfig, score_function_surrogate
from synthalign.evaluate import kl_regularizer, pair_inputs
from synthalign.registry.protocol import Objective, get_objective

if TYPE_CHECKING:
    from synthalign._types import Autoregressive

__all__ = ["kl_surrogate", "pair_batch_loss", "pair_terms", "pair_weights", "resolve_gamma"]

_PRECOMPUTED_REFERENCE = ("ref_chosen_logps", "ref_rejected_logps")


def resolve_gamma(obj: Objective, gamma: float | None, default: float | None = None) -> float | None:
    """gamma for an objective that takes it (given, else `default`), None for one that does not.

    Passing gamma to an objective that ignores it raises: a temperature that does nothing is a bug.
    """
    if "gamma" not in obj.inputs:
        if gamma is not None:
            raise ValueError(
                f"objective {obj.name!r} does not take gamma (its inputs are {obj.inputs}; hyper-parameters "
                f"{sorted(obj.params)}): do not pass gamma"
            )
        return None
    gamma = default if gamma is None else gamma
    if gamma is None:
        raise ValueError(f"objective {obj.name!r} needs gamma, the preference temperature (> 0): pass gamma=...")
    return check_positive(gamma, "gamma")


def _per_pair(value, name: str, n_pairs: int, like: Tensor) -> Tensor:
    tensor = as_tensor(value, name, dtype=like.dtype, device=like.device)
    if tensor.shape != (n_pairs,):
        raise ValueError(f"{name} must have shape [{n_pairs}] (one value per pair), got {tuple(tensor.shape)}")
    return tensor


def pair_weights(obj: Objective, batch: Mapping[str, Tensor], weight: Tensor | None = None) -> Tensor:
    """The weight of each pair in the batch mean, [B] float64: w_i (1 by default), × |a⁺_i| for "token_mean".

    Computed from the batch alone (no forward pass), so a trainer can total it over the global batch.
    """
    n_pairs = check_batch(batch)
    like = torch.empty(0, dtype=torch.float64, device=batch["chosen_input_ids"].device)
    weight = torch.ones(n_pairs, dtype=torch.float64, device=like.device) if weight is None else weight
    weight = _per_pair(weight, "weight", n_pairs, like)
    if torch.isnan(weight).any() or (weight < 0).any():
        raise ValueError("weight must be non-negative, without NaN")
    if obj.length_convention == "token_mean":
        weight = weight * completion_lengths(batch)[0].to(weight.dtype)
    return weight


def pair_terms(
    obj: Objective,
    policy: torch.nn.Module,
    batch: Mapping[str, Tensor],
    params: Mapping,
    *,
    reference: torch.nn.Module | None = None,
    gamma: float | None = None,
    reward_chosen: Tensor | None = None,
    reward_rejected: Tensor | None = None,
    average: bool = False,
) -> Tensor:
    """The per-pair losses ℓ_i of a resolved objective on a batch, [B] (no reduction; per chosen token
    for a "token_mean" objective, whose pairs `pair_weights` weighs by their token counts)."""
    n_pairs = check_batch(batch)
    if average and obj.length_convention != "sum":
        raise ValueError(
            f"objective {obj.name!r} applies its own length convention ({obj.length_convention!r}): "
            f"average=True would divide by the lengths twice"
        )
    logp_chosen, logp_rejected = pair_logprobs(policy, batch, average=average)
    reference_views = None
    if obj.needs_reference:
        if reference is not None:
            with torch.no_grad():
                reference_views = pair_logprobs(reference, batch, average=average)
        elif all(key in batch for key in _PRECOMPUTED_REFERENCE) and not average:
            reference_views = tuple(_per_pair(batch[key], key, n_pairs, logp_chosen) for key in _PRECOMPUTED_REFERENCE)
        else:
            raise ValueError(f"objective {obj.name!r} needs a reference model: pass reference=...")
        reference_views = tuple(view.to(logp_chosen.dtype) for view in reference_views)
    reward_views = None
    if obj.needs_reward:
        for name, value in (("reward_chosen", reward_chosen), ("reward_rejected", reward_rejected)):
            if value is None:
                raise ValueError(f"objective {obj.name!r} needs a reward: pass {name}=...")
        reward_views = (
            _per_pair(reward_chosen, "reward_chosen", n_pairs, logp_chosen),
            _per_pair(reward_rejected, "reward_rejected", n_pairs, logp_chosen),
        )
    inputs = pair_inputs(obj, (logp_chosen, logp_rejected), reference=reference_views, reward=reward_views, gamma=gamma)
    extra = {}
    if obj.length_convention != "sum":
        length_chosen, length_rejected = (length.to(logp_chosen.dtype) for length in completion_lengths(batch))
        extra["length_chosen"] = length_chosen
        if obj.length_convention == "per_token":
            extra["length_rejected"] = length_rejected
    losses = obj.fn(**inputs, **params, **extra)
    if obj.length_convention == "token_mean":
        # fn gives each pair's summed loss; per token, weighed by w·|a⁺| (`pair_weights`), it averages over tokens.
        losses = losses / extra["length_chosen"]
    return losses


def pair_batch_loss(
    objective: str | Objective,
    policy: torch.nn.Module,
    batch: Mapping[str, Tensor],
    *,
    reference: torch.nn.Module | None = None,
    gamma: float | None = None,
    reward_chosen: Tensor | None = None,
    reward_rejected: Tensor | None = None,
    weight: Tensor | None = None,
    weight_total: float | Tensor | None = None,
    average: bool = False,
    **params: float,
) -> Tensor:
    """The weighted mean of a pair objective over a batch of (x, a⁺, a⁻) sequences, a scalar.

    (1/W) Σ_i w_i ℓ(ln pi(a⁺_i|x_i), ln pi(a⁻_i|x_i), ...) with ℓ the registered objective's
    elementwise `fn` (eq. 4/5 for "pmle", eq. 6 for "dpo", ...), its length convention applied
    (module docstring), and W = Σ_i w_i unless `weight_total` gives the total of a larger batch
    this one is a shard of (what makes data-parallel shards add up to the global mean).  This is
    the pair loss alone (beta = 0); trainers add the on-policy KL term (`kl_surrogate`).

    Args:
      objective: a registered pair objective (name or `Objective`); prompt objectives raise.
      policy: the causal LM being trained; its log-probabilities carry gradients.
      batch: chosen_input_ids, chosen_attention_mask, chosen_completion_mask and rejected_*
        likewise (see `sequence_logprobs`); the chosen and rejected lengths may differ.  It may
        also hold TRL's precomputed `ref_chosen_logps` / `ref_rejected_logps`, used when
        `reference` is None.
      reference: the reference LM pi0, for objectives with ref_* inputs (DPO, IPO, ...); run under
        `torch.no_grad()`.  Put it in eval mode if it has dropout.
      gamma: the preference temperature (spec §1; DPO papers' beta), > 0, for objectives that take
        it; passing it to one that does not (IPO's tau, REBEL's eta) raises.
      reward_chosen, reward_rejected: R̂(x, a⁺) and R̂(x, a⁻), [B], for objectives with reward inputs.
      weight: non-negative per-pair weights [B] (counts of repeated pairs, importance weights).
      weight_total: the denominator W (default Σ_i w_i of this batch, × tokens for "token_mean").
      average: score each sequence by its per-token mean log-probability (only for "sum" objectives).
      **params: the objective's hyper-parameters (its defaults otherwise).
    """
    obj = pair_objective(objective)
    check_model(policy, "policy")
    if reference is not None:
        check_model(reference, "reference")
    if not isinstance(average, bool):
        raise ValueError(f"average must be True or False, got {average!r}")
    resolved = obj.resolve_params(params)
    gamma = resolve_gamma(obj, gamma)
    weights = pair_weights(obj, batch, weight)
    if weight_total is None:
        total = weights.sum()
    else:
        total = torch.as_tensor(check_positive(float(weight_total), "weight_total"), dtype=torch.float64)
    losses = pair_terms(
        obj,
        policy,
        batch,
        resolved,
        reference=reference,
        gamma=gamma,
        reward_chosen=reward_chosen,
        reward_rejected=reward_rejected,
        average=average,
    )
    weights = weights.to(device=losses.device, dtype=losses.dtype)
    weighted = torch.where(weights > 0, weights * losses, torch.zeros_like(losses))
    return weighted.sum() / total.to(device=losses.device, dtype=losses.dtype)


def pair_objective(objective: str | Objective) -> Objective:
    """The registered pair objective, refusing prompt objectives with a pointer to the on-policy trainer."""
    obj = get_objective(objective)
    if obj.kind != "pair":
        raise ValueError(
            f"objective {obj.name!r} is a prompt objective (it takes the whole policy row pi(·|x)): train it "
            f"on-policy with synthalign.bridge.make_trainer(..., world=...) (RKL, RLHF)"
        )
    return obj


def kl_surrogate(
    policy: Autoregressive,
    reference: Autoregressive,
    prompts: Tensor,
    responses: Tensor | None,
    *,
    beta: float,
    kl_estimator: str = "k1",
    kl_placement: str = "reward",
    estimator: str = "rloo",
) -> Tensor:
    """Per-prompt surrogate of beta · KL(pi(·|x) ‖ pi0(·|x)), [B], whose gradient estimates beta · ∇KL.

    `policy` and `reference` are `LMPolicy`s (or any parametrization with `log_prob` and `table`);
    `responses` [B, m] are sequence ids sampled from pi (held fixed).  With `kl_placement` "reward"
    the estimate k (k1/k2/k3 of spec §6.14) is a reward −beta·k of the score function, "loss" puts
    beta·k in the loss (k2's gradient is ∇KL; k1's has mean 0), "exact" computes beta·KL on the
    full tables (enumerable spaces; `responses` unused).
    """
    config = GradientConfig(beta=beta, estimator=estimator, kl_estimator=kl_estimator, kl_placement=kl_placement)
    if config.kl_placement != "exact" and not isinstance(responses, Tensor):
        raise ValueError(f"responses must be sampled sequence ids [B, m] for kl_placement {kl_placement!r}")
    if config.kl_placement == "exact":
        with torch.no_grad():
            ref_table = reference.table()[prompts]
        return kl_regularizer(policy.table()[prompts], ref_table, config.beta)
    logp = policy.log_prob(prompts, responses)
    with torch.no_grad():
        ref_logp = reference.log_prob(prompts, responses)
    # a zero reward and no entropy term: the surrogate of beta·KL alone
    terms = config.terms(entropy_coef=0.0)
    return score_function_surrogate(
        logp, ref_logp.to(logp.dtype), torch.zeros_like(logp), estimator=config.estimator, **terms
    )
