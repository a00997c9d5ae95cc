"""The bridge from tabular worlds to transformer policies: the same objective code on a causal LM.

On a finite world a policy is a table ln pi(a|x).  For a causal language model the response a is
a token sequence and ln pi(a|x) = Σ_t ln pi(a_t | x, a_<t), the sum of the completion tokens'
log-probabilities (spec §1: "a language model (policy) pi maps x to a distribution pi(·|x) on 𝒜").
Once both sides are numbers per pair, a pair objective is the same function: `pair_batch_loss`
computes the four sequence log-probabilities of a batch of (x, a⁺, a⁻) and calls the registered
objective's elementwise `Objective.fn` with exactly the inputs it declares, as
`synthalign.evaluate.empirical_loss` does on every cell of a tabular world.  With one prompt token
and one-token completions the LM *is* a tabular policy over its vocabulary, and the two paths agree
to rounding (`tests/test_bridge.py`).

What the bridge leaves out, and why:

* prompt objectives (RKL, RLHF, forward KL; `Objective.kind == "prompt"`) take the whole row
  pi(·|x), an expectation over every response; for an LM that needs on-policy sampling and a
  gradient estimator, which is a trainer's job (TRL's), not a loss's;
* the framework's beta · KL(pi ‖ pi0) term (eq. 1, 5, 12, 15) is an on-policy expectation for the
  same reason: the bridge evaluates the pair loss alone, i.e. the tabular loss at beta = 0;
* distribution (devices, processes, mixed precision, gradient accumulation) is Hugging Face
  `accelerate`'s: `make_trainer` only calls it.

Sequences are given as token ids with two masks: `attention_mask` marks real tokens (padding may
be on either side; position ids are recomputed from it, as `transformers`' generation does), and
`completion_mask` marks the response tokens whose log-probabilities are summed.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from synthalign._checks import as_tensor, check_positive, weighted_reduce
from synthalign.evaluate import pair_inputs
from synthalign.registry.protocol import Objective, get_objective

__all__ = ["BATCH_KEYS", "PairTrainer", "make_trainer", "pair_batch_loss", "sequence_logprobs"]

BATCH_KEYS = (
    "chosen_input_ids",
    "chosen_attention_mask",
    "chosen_completion_mask",
    "rejected_input_ids",
    "rejected_attention_mask",
    "rejected_completion_mask",
)
"""The keys `pair_batch_loss` reads from a batch (others are ignored)."""

_SEQUENCE_FIELDS = ("input_ids", "attention_mask", "completion_mask")


# ----------------------------------------------------------------------------------------------------------------------
# Sequence log-probabilities
# ----------------------------------------------------------------------------------------------------------------------


def _check_mask(mask, name: str, shape: torch.Size, ids_name: str) -> Tensor:
    if not isinstance(mask, Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(mask).__name__}")
    if mask.shape != shape:
        raise ValueError(f"{name} must have the shape of {ids_name} {tuple(shape)}, got {tuple(mask.shape)}")
    if mask.is_complex() or not ((mask == 0) | (mask == 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    return mask.bool()


def _check_sequences(
    input_ids, attention_mask, completion_mask, names=("input_ids", "attention_mask", "completion_mask")
) -> tuple[Tensor, Tensor]:
    """Validates one set of sequences; returns the attention and completion masks as booleans.

    `names` are the argument names the errors quote (a batch's keys inside `pair_batch_loss`).
    """
    ids_name, attention_name, completion_name = names
    if not isinstance(input_ids, Tensor):
        raise ValueError(f"{ids_name} must be a tensor, got {type(input_ids).__name__}")
    if input_ids.dim() != 2:
        raise ValueError(f"{ids_name} must have shape [batch, length], got {tuple(input_ids.shape)}")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise ValueError(f"{ids_name} must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.shape[0] < 1 or input_ids.shape[1] < 2:
        raise ValueError(
            f"{ids_name} must hold at least one sequence of at least two tokens (a prompt token and a "
            f"completion token), got shape {tuple(input_ids.shape)}"
        )
    attended = _check_mask(attention_mask, attention_name, input_ids.shape, ids_name)
    scored = _check_mask(completion_mask, completion_name, input_ids.shape, ids_name)
    if (scored & ~attended).any():
        raise ValueError(f"{completion_name} marks tokens that {attention_name} masks out (padding)")
    if scored[:, 0].any():
        raise ValueError(f"{completion_name} marks the first position, which no token precedes to predict it")
    empty = (~scored.any(dim=-1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"{completion_name} marks no completion token in row(s) {empty.tolist()}")
    # The first scored token must follow an attended token, or it would be predicted from padding alone.
    first = scored.int().argmax(dim=-1)
    if not attended.gather(-1, (first - 1).unsqueeze(-1)).all():
        raise ValueError(f"{completion_name}: every completion must follow at least one attended (prompt) token")
    return attended, scored


def sequence_logprobs(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    *,
    average: bool = False,
) -> Tensor:
    """ln pi(a | x) = Σ_t ln pi(a_t | x, a_<t) over the completion tokens of each sequence, shape [B].

    The logits at position t − 1 predict token t, so a completion token at position t is scored with
    log_softmax(logits[t − 1])[input_ids[t]].  Log-softmax runs in float32 at least (float64 models
    stay float64; half-precision logits are upcast), and only on the rows of the scored positions, so
    the upcast copy grows with the number of completion tokens, not with batch × length × vocabulary.

    Args:
      model: a causal LM (`transformers` ...ForCausalLM) whose output has `.logits` [B, T, V]; it is
        called with `input_ids`, `attention_mask`, `position_ids` and `use_cache=False`.
      input_ids: token ids [B, T], prompt followed by completion, padded on either side.
      attention_mask: 1 on real tokens, 0 on padding, [B, T].
      completion_mask: 1 on the completion tokens to score, [B, T]; every row needs at least one,
        each within `attention_mask`, none at position 0.
      average: return the per-token mean instead of the sum (the length-normalized log-probability
        of SimPO-style objectives).

    Position ids are cumsum(attention_mask) − 1 (clamped at 0 on leading padding), so a left-padded
    sequence gets the positions it has unpadded, as `transformers`' generation assigns them; models
    with absolute position embeddings (GPT-2) need this, rotary ones (Llama) do not notice.
    """
    attended, scored = _check_sequences(input_ids, attention_mask, completion_mask)
    position_ids = (attended.long().cumsum(dim=-1) - 1).clamp(min=0)
    output = model(
        input_ids=input_ids,
        attention_mask=attended.long(),
        position_ids=position_ids,
        use_cache=False,
    )
    logits = output.logits
    if logits.dim() != 3 or logits.shape[:2] != input_ids.shape:
        raise ValueError(
            f"model must return logits of shape [batch, length, vocab] = [{input_ids.shape[0]}, "
            f"{input_ids.shape[1]}, V], got {tuple(logits.shape)}"
        )
    predicts = scored[:, 1:]  # position t - 1 predicts token t
    rows = predicts.nonzero()[:, 0]
    token_logits = logits[:, :-1][predicts]
    token_logits = token_logits.to(torch.promote_types(token_logits.dtype, torch.float32))
    targets = input_ids[:, 1:][predicts]
    token_logp = torch.log_softmax(token_logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    total = token_logp.new_zeros(input_ids.shape[0]).index_add(0, rows, token_logp)
    if average:
        return total / predicts.sum(dim=-1).to(total.dtype)
    return total


# ----------------------------------------------------------------------------------------------------------------------
# Pair losses
# ----------------------------------------------------------------------------------------------------------------------


def _pair_objective(objective: str | Objective, params: Mapping) -> tuple[Objective, dict]:
    """The objective and its resolved hyper-parameters, refusing prompt objectives."""
    obj = get_objective(objective)
    if obj.kind != "pair":
        raise ValueError(
            f"objective {obj.name!r} is a prompt objective (it takes the whole policy row pi(·|x)); its "
            f"expectations need on-policy sampling, which the bridge does not do: use a pair objective"
        )
    return obj, obj.resolve_params(params)


def _check_batch(batch) -> int:
    if not isinstance(batch, Mapping):
        raise ValueError(f"batch must be a mapping with keys {BATCH_KEYS}, got {type(batch).__name__}")
    missing = [key for key in BATCH_KEYS if key not in batch]
    if missing:
        raise ValueError(f"batch lacks {missing}; it needs {BATCH_KEYS}")
    for key in BATCH_KEYS:
        if not isinstance(batch[key], Tensor) or batch[key].dim() != 2:
            raise ValueError(f"batch[{key!r}] must be a tensor of shape [batch, length]")
    n_pairs = batch["chosen_input_ids"].shape[0]
    if batch["rejected_input_ids"].shape[0] != n_pairs:
        raise ValueError(
            f"batch['rejected_input_ids'] holds {batch['rejected_input_ids'].shape[0]} sequences but "
            f"batch['chosen_input_ids'] holds {n_pairs}: one rejected per chosen"
        )
    return n_pairs


def _both_sides(batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Chosen and rejected sequences stacked into one batch [2B, T] (one forward pass per model).

    The shorter side is padded on the right with masked-out tokens: causal attention keeps them
    invisible to the real tokens, and they are never scored.
    """
    length = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
    stacked = []
    for field in _SEQUENCE_FIELDS:
        sides = [batch[f"{side}_{field}"] for side in ("chosen", "rejected")]
        sides = [torch.nn.functional.pad(side, (0, length - side.shape[1])) for side in sides]
        stacked.append(torch.cat(sides, dim=0))
    return stacked[0], stacked[1], stacked[2]


def _pair_logprobs(model, batch, *, average: bool) -> tuple[Tensor, Tensor]:
    n_pairs = batch["chosen_input_ids"].shape[0]
    for side in ("chosen", "rejected"):
        names = tuple(f"batch['{side}_{field}']" for field in _SEQUENCE_FIELDS)
        _check_sequences(*(batch[f"{side}_{field}"] for field in _SEQUENCE_FIELDS), names=names)
    logp = sequence_logprobs(model, *_both_sides(batch), average=average)
    return logp[:n_pairs], logp[n_pairs:]


def _per_pair(value, name: str, n_pairs: int, like: Tensor) -> Tensor:
    tensor = as_tensor(value, name, dtype=like.dtype, device=like.device)
    if tensor.shape != (n_pairs,):
        raise ValueError(f"{name} must have shape [{n_pairs}] (one value per pair), got {tuple(tensor.shape)}")
    return tensor


def pair_batch_loss(
    objective: str | Objective,
    policy: torch.nn.Module,
    batch: Mapping[str, Tensor],
    *,
    reference: torch.nn.Module | None = None,
    gamma: float,
    reward_chosen: Tensor | None = None,
    reward_rejected: Tensor | None = None,
    weight: Tensor | None = None,
    average: bool = False,
    **params,
) -> Tensor:
    """The weighted mean of a pair objective over a batch of (x, a⁺, a⁻) sequences, a scalar.

    (1/Σw) Σ_i w_i ℓ(ln pi(a⁺_i|x_i), ln pi(a⁻_i|x_i), ...): the per-pair loss is the registered
    objective's elementwise `fn` (e.g. eq. 4/5 for "pmle", eq. 6 for "dpo"), called with exactly the
    inputs it declares, the same call `synthalign.evaluate.empirical_loss` makes on each cell of a
    tabular world.  This is the tabular loss at beta = 0: the beta · KL(pi ‖ pi0) term is an on-policy
    expectation the bridge does not estimate (see the module docstring).

    Args:
      objective: a registered pair objective (name or `Objective`); prompt objectives raise.
      policy: the causal LM being trained; its log-probabilities carry gradients.
      batch: chosen_input_ids, chosen_attention_mask, chosen_completion_mask and rejected_*
        likewise (see `sequence_logprobs`); the chosen and rejected lengths may differ.
      reference: the reference LM pi0, needed by objectives with ref_* inputs (DPO, IPO, ...); run
        under `torch.no_grad()`.  Put it in eval mode if it has dropout.
      gamma: the preference temperature (spec §1; DPO papers' beta), > 0.
      reward_chosen, reward_rejected: R̂(x, a⁺) and R̂(x, a⁻), [B], for objectives with reward inputs;
        target_margin is their difference (two −inf read as a tie, as on a tabular world).
      weight: non-negative per-pair weights [B] (counts of repeated pairs, importance weights).
      average: score each sequence by its per-token mean log-probability instead of the sum.
      **params: the objective's hyper-parameters (its defaults otherwise).
    """
    obj, resolved = _pair_objective(objective, params)
    gamma = check_positive(gamma, "gamma")
    n_pairs = _check_batch(batch)
    if obj.needs_reference and reference is None:
        raise ValueError(f"objective {obj.name!r} needs a reference model: pass reference=...")
    logp_chosen, logp_rejected = _pair_logprobs(policy, batch, average=average)
    reference_views = None
    if obj.needs_reference:
        with torch.no_grad():
            ref_chosen, ref_rejected = _pair_logprobs(reference, batch, average=average)
        reference_views = (ref_chosen.to(logp_chosen.dtype), ref_rejected.to(logp_chosen.dtype))
    reward_views = None
    if obj.needs_reward:
        for name, value in (("reward_chosen", reward_chosen), ("reward_rejected", reward_rejected)):
            if value is None:
                raise ValueError(f"objective {obj.name!r} needs a reward: pass {name}=...")
        reward_views = (
            _per_pair(reward_chosen, "reward_chosen", n_pairs, logp_chosen),
            _per_pair(reward_rejected, "reward_rejected", n_pairs, logp_chosen),
        )
    if weight is not None:
        weight = _per_pair(weight, "weight", n_pairs, logp_chosen)
    inputs = pair_inputs(obj, (logp_chosen, logp_rejected), reference=reference_views, reward=reward_views, gamma=gamma)
    loss = obj.fn(**inputs, **resolved)
    return weighted_reduce(loss, weight, "mean")


# ----------------------------------------------------------------------------------------------------------------------
# Training with accelerate
# ----------------------------------------------------------------------------------------------------------------------


class PairTrainer:
    """One optimizer step of a pair objective per call, distributed by `accelerate`.

    Built by `make_trainer`; `model`, `reference` and `optimizer` are the prepared objects.
    """

    def __init__(self, objective, model, reference, optimizer, *, gamma, accelerator, average, max_grad_norm, params):
        self.objective = objective
        self.accelerator = accelerator
        self.gamma = gamma
        self.average = average
        self.max_grad_norm = max_grad_norm
        self.params = params
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.reference = None
        if reference is not None:
            self.reference = accelerator.prepare_model(reference, evaluation_mode=True)
            self.reference.eval()

    def __call__(
        self,
        batch: Mapping[str, Tensor],
        *,
        reward_chosen: Tensor | None = None,
        reward_rejected: Tensor | None = None,
        weight: Tensor | None = None,
    ) -> float:
        """Loss, backward, (clip,) step, zero_grad on one batch; returns the loss averaged over processes."""
        device = self.accelerator.device
        batch = {key: value.to(device) if isinstance(value, Tensor) else value for key, value in batch.items()}
        extras = {"reward_chosen": reward_chosen, "reward_rejected": reward_rejected, "weight": weight}
        extras = {key: value.to(device) if isinstance(value, Tensor) else value for key, value in extras.items()}
        self.model.train()
        with self.accelerator.accumulate(self.model):
            loss = pair_batch_loss(
                self.objective,
                self.model,
                batch,
                reference=self.reference,
                gamma=self.gamma,
                average=self.average,
                **extras,
                **self.params,
            )
            self.accelerator.backward(loss)
            if self.max_grad_norm is not None and self.accelerator.sync_gradients:
                self.accelerator.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad()
        return self.accelerator.reduce(loss.detach(), reduction="mean").item()


def make_trainer(
    objective: str | Objective,
    model: torch.nn.Module,
    reference: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    *,
    gamma: float,
    accelerator=None,
    average: bool = False,
    max_grad_norm: float | None = None,
    **params,
) -> PairTrainer:
    """A callable `trainer(batch) -> float` taking one optimizer step of `objective` per batch.

    `model`, `reference` and `optimizer` are passed unprepared: the trainer prepares them with
    `accelerator` (a new `accelerate.Accelerator()` when None) and holds the prepared objects as
    `trainer.model`, `trainer.reference`, `trainer.optimizer`.  Each call moves the batch to the
    accelerator's device, runs `pair_batch_loss` inside `accelerator.accumulate(model)` (so the
    accelerator's gradient accumulation applies), `accelerator.backward(loss)`, clips gradients to
    `max_grad_norm` when given, steps and zeroes the optimizer.  The objective, its hyper-parameters
    and the need for a reference are checked here, before any step.
    """
    obj, resolved = _pair_objective(objective, params)
    gamma = check_positive(gamma, "gamma")
    if obj.needs_reference and reference is None:
        raise ValueError(f"objective {obj.name!r} needs a reference model: pass reference=...")
    if max_grad_norm is not None:
        max_grad_norm = check_positive(max_grad_norm, "max_grad_norm")
    if accelerator is None:
        from accelerate import Accelerator

        accelerator = Accelerator()
    return PairTrainer(
        obj,
        model,
        reference if obj.needs_reference else None,
        optimizer,
        gamma=gamma,
        accelerator=accelerator,
        average=average,
        max_grad_norm=max_grad_norm,
        params=resolved,
    )
