"""Trainers on `accelerate` for every registered objective, with exact data parallelism.

* `PairTrainer`: an offline pair objective on a batch of (x, a⁺, a⁻) sequences, plus
  beta · KL(pi ‖ pi0) estimated on-policy when beta > 0 (`synthalign.bridge.losses.kl_surrogate`);
* `OnPolicyPairTrainer`: a pair objective on pairs drawn each step from the current policy pi_t,
  from pi0, from mu or from any sampler (distillation, eq. 11/12 and Algorithm 1; online DPO,
  pairs labelled by the world's true preference law, spec §1);
* `OnPolicyTrainer`: RKL (eq. 15) and RLHF (eq. 1) by the score function (REINFORCE or RLOO),
  the KL term by k1/k2/k3 in the reward or in the loss, or exact — the surrogate of
  `synthalign.estimators.onpolicy.score_function_surrogate`, unchanged.

Data parallelism.  Every process is handed the same *global* batch; each keeps its contiguous shard
of rows (`shard`) and splits it into micro-batches of `micro_batch_size` rows.  The loss of a
micro-batch is Σ_{i in it} w_i ℓ_i · P / W with W the weight total of the global batch and P the
number of processes, so that DDP's mean over processes of the summed micro-batch gradients is the
gradient of the global weighted mean (1/W) Σ_i w_i ℓ_i exactly: normalizing per shard or per
micro-batch (what `accelerate.accumulate` with mean losses does) weighs shards of unequal weight
wrongly.  Gradients are synchronized only on the last micro-batch (`accelerator.no_sync`).
Sampling is replicated: every process draws the global batch's responses from the same seeded
generator and keeps its shard, so P processes see exactly the samples one process sees.  Devices,
mixed precision and the DDP/FSDP/DeepSpeed wrapping are the accelerator's.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthalign._checks import check_int, check_positive
from synthalign.bridge._deps import require
from synthalign.bridge._validate import check_choice, check_model, check_optimizer
from synthalign.bridge.losses import kl_surrogate, pair_objective, pair_terms, pair_weights, resolve_gamma
from synthalign.bridge.policy import LMPolicy
from synthalign.bridge.sequences import BATCH_KEYS
from synthalign.estimators.onpolicy import SCORE_FUNCTION_OBJECTIVES, score_function_surrogate
from synthalign.estimators.score_function import GradientConfig
from synthalign.registry.protocol import Objective, get_objective
from synthalign.worlds.autoregressive import TabularAutoregressive
from synthalign.worlds.sequence import SequenceWorld
from synthalign.worlds.torch_sampling import make_generator

if TYPE_CHECKING:
    from accelerate import Accelerator

    from synthalign._types import Autoregressive

__all__ = ["OnPolicyPairTrainer", "OnPolicyTrainer", "PairTrainer", "make_trainer", "shard"]

PAIR_SOURCES = ("policy", "reference", "behavior")


def shard(n_rows: int, process_index: int, num_processes: int) -> Tensor:
    """The rows [start, stop) of the global batch that process `process_index` keeps (contiguous, sizes ±1)."""
    n_rows, num_processes = check_int(n_rows, "n_rows"), check_int(num_processes, "num_processes")
    process_index = check_int(process_index, "process_index", minimum=0)
    if process_index >= num_processes:
        raise ValueError(f"process_index must lie in [0, num_processes = {num_processes}), got {process_index}")
    if n_rows < num_processes:
        raise ValueError(f"the global batch has {n_rows} rows, fewer than the {num_processes} processes")
    bounds = [n_rows * k // num_processes for k in range(num_processes + 1)]
    return torch.arange(bounds[process_index], bounds[process_index + 1])


_check_choice = check_choice


class _Trainer:
    """Preparation, sharding, micro-batching and the optimizer step shared by the trainers."""

    def __init__(
        self,
        model: torch.nn.Module,
        reference: torch.nn.Module | None,
        optimizer: torch.optim.Optimizer,
        *,
        accelerator: Accelerator,
        max_grad_norm: float | None,
        micro_batch_size: int | None,
    ):
        if accelerator.gradient_accumulation_steps != 1:
            raise ValueError(
                "accelerator.gradient_accumulation_steps must be 1: the trainer accumulates exactly over "
                "micro-batches itself (pass micro_batch_size=...)"
            )
        self.accelerator = accelerator
        self.max_grad_norm = max_grad_norm
        self.micro_batch_size = micro_batch_size
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.reference = None
        if reference is not None:
            self.reference = accelerator.prepare_model(reference, evaluation_mode=True)
            self.reference.eval()

    def _step(self, weights: Tensor, local_sum: Callable[[Tensor], Tensor]) -> float:
        """One optimizer step on the global batch: `local_sum(rows)` is Σ_{i in rows} w_i ℓ_i (differentiable)."""
        acc = self.accelerator
        total = weights.sum()
        if not total > 0:
            raise ValueError("the weights of the global batch sum to 0")
        rows = shard(weights.shape[0], acc.process_index, acc.num_processes)
        size = self.micro_batch_size or rows.numel()
        pieces = rows.split(size)
        self.model.train()
        value = torch.zeros((), dtype=torch.float64, device=acc.device)
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            with contextlib.nullcontext() if last else acc.no_sync(self.model):
                part = local_sum(piece.to(weights.device))
                acc.backward(part * (acc.num_processes / total.to(part.dtype)))
            value = value + part.detach().to(torch.float64)
        if self.max_grad_norm is not None:
            acc.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return (acc.reduce(value, reduction="sum") / total.to(value.device)).item()

    def _policies(self, space, n_prompts, prompt_tokens):
        unwrapped = self.accelerator.unwrap_model(self.model)
        make = lambda module: LMPolicy(module, space, n_prompts, prompt_tokens=prompt_tokens)  # noqa: E731
        policy, sampler = make(self.model), make(unwrapped)
        reference = None if self.reference is None else make(self.accelerator.unwrap_model(self.reference))
        return policy, sampler, reference


class PairTrainer(_Trainer):
    """One optimizer step of an offline pair objective per call (+ beta·KL sampled on-policy when beta > 0).

    Built by `make_trainer`; `model`, `reference` and `optimizer` are the prepared objects.
    """

    def __init__(
        self,
        objective: Objective,
        model: torch.nn.Module,
        reference: torch.nn.Module | None,
        optimizer: torch.optim.Optimizer,
        *,
        gamma: float | None,
        params: Mapping[str, float],
        average: bool,
        beta: float = 0.0,
        world: SequenceWorld | None = None,
        prompt_tokens: Tensor | None = None,
        kl: GradientConfig | Mapping[str, str | int] | None = None,
        seed: int = 0,
        **options: Accelerator | float | int | None,
    ):
        super().__init__(model, reference, optimizer, **options)
        # the KL term's options (estimator, kl_estimator, kl_placement, samples), validated once
        self.kl = kl if isinstance(kl, GradientConfig) else GradientConfig(beta=beta, **(kl or {}))
        beta = self.kl.beta
        self.objective, self.gamma, self.params, self.average, self.beta = objective, gamma, params, average, beta
        self.world = world
        if beta > 0:
            self.policy, self.sampler, self.reference_policy = self._policies(
                world.space, world.n_prompts, prompt_tokens
            )
            self.generator = make_generator(seed, self.accelerator.device)

    def __call__(
        self,
        batch: Mapping[str, Tensor],
        *,
        reward_chosen: Tensor | None = None,
        reward_rejected: Tensor | None = None,
        weight: Tensor | None = None,
        prompts: Tensor | None = None,
    ) -> float:
        """One step on the global batch; returns the global weighted-mean loss (pair loss + beta·KL surrogate).

        `prompts` [B] (world prompt indices of the pairs) is needed when beta > 0: the KL term is
        sampled for each pair's prompt.
        """
        device = self.accelerator.device
        batch = {key: value.to(device) if isinstance(value, Tensor) else value for key, value in batch.items()}
        weights = pair_weights(self.objective, batch, weight).to(device)
        rewards = [None if r is None else torch.as_tensor(r).to(device) for r in (reward_chosen, reward_rejected)]
        responses = None
        if self.beta > 0:
            if prompts is None:
                raise ValueError("beta > 0 samples KL(pi ‖ pi0) at each pair's prompt: pass prompts=[B] world indices")
            prompts = prompts.to(device)
            if self.kl.kl_placement != "exact":
                responses = self.sampler.sample(prompts, self.kl.samples, self.generator)

        def local_sum(rows: Tensor) -> Tensor:
            part = {key: batch[key][rows] for key in BATCH_KEYS}
            part.update({key: batch[key][rows] for key in ("ref_chosen_logps", "ref_rejected_logps") if key in batch})
            losses = pair_terms(
                self.objective,
                self.model,
                part,
                self.params,
                reference=self.reference,
                gamma=self.gamma,
                reward_chosen=None if rewards[0] is None else rewards[0][rows],
                reward_rejected=None if rewards[1] is None else rewards[1][rows],
                average=self.average,
            )
            if self.beta > 0:
                kl = kl_surrogate(
                    self.policy,
                    self.reference_policy,
                    prompts[rows],
                    None if responses is None else responses[rows],
                    beta=self.beta,
                    kl_estimator=self.kl.kl_estimator,
                    kl_placement=self.kl.kl_placement,
                    estimator=self.kl.estimator,
                )
                losses = losses + kl.to(losses.dtype)
            w = weights[rows].to(losses.dtype)
            return torch.where(w > 0, w * losses, torch.zeros_like(losses)).sum()

        return self._step(weights, local_sum)


class OnPolicyPairTrainer(PairTrainer):
    """A pair objective on pairs drawn each step (distillation from pi_t, pi0, mu; online DPO).

    Each call takes the global prompts [B] (world indices), draws two responses per prompt from the
    pair source, labels them by the world's law P*(a ≻ b | x) = σ(γ ln[pi*(a|x)/pi*(b|x)]) when the
    objective needs labelled pairs (data "preferences"), scores them by R̂ when it needs a reward,
    and takes one `PairTrainer` step.
    """

    def __init__(
        self,
        *args: Objective | torch.nn.Module | torch.optim.Optimizer | None,
        pairs_from: str | Autoregressive,
        reward: Tensor | None,
        **kwargs: object,
    ):
        super().__init__(*args, **kwargs)
        world = self.world
        self.pair_policy = self._policies(world.space, world.n_prompts, kwargs.get("prompt_tokens"))[1]
        if not hasattr(self, "generator"):
            self.generator = make_generator(kwargs.get("seed", 0), self.accelerator.device)
        device = self.accelerator.device
        if pairs_from == "policy":
            self.pair_source = self.pair_policy
        elif pairs_from == "reference":
            self.pair_source = TabularAutoregressive(world.reference.to(device), world.space)
        elif pairs_from == "behavior":
            self.pair_source = TabularAutoregressive(world.behavior.to(device), world.space)
        else:
            self.pair_source = pairs_from
        self.target = world.as_tabular().target.logp.to(device)
        self.reward = None if reward is None else torch.as_tensor(reward).to(device)

    def __call__(self, prompts: Tensor, *, weight: Tensor | None = None) -> float:
        device = self.accelerator.device
        prompts = prompts.to(device)
        draws = self.pair_source.sample(prompts, 2, self.generator).to(device)
        first, second = draws[:, 0], draws[:, 1]
        if self.objective.data == "preferences":
            logit = self.world.gamma * (self.target[prompts, first] - self.target[prompts, second])
            uniform = torch.rand(first.shape, generator=self.generator, dtype=torch.float64, device=device)
            first_wins = uniform < torch.sigmoid(logit)
            first, second = torch.where(first_wins, first, second), torch.where(first_wins, second, first)
        batch = self.pair_policy.pair_batch(prompts, first, second)
        rewards = (None, None)
        if self.objective.needs_reward:
            rewards = (self.reward[prompts, first], self.reward[prompts, second])
        return super().__call__(
            batch, reward_chosen=rewards[0], reward_rejected=rewards[1], weight=weight, prompts=prompts
        )


class OnPolicyTrainer(_Trainer):
    """RKL (eq. 15) or RLHF (eq. 1) by the score function on a sequence world, one step per call.

    Each call takes the global prompts [B] (world indices; repeat a prompt to weigh it, or pass
    `weight`), draws `samples` responses per prompt from pi_t and steps on the mean over prompts of
    `score_function_surrogate` (R̂ from the reward table [X, N]; entropy coefficient gamma for RKL,
    0 for RLHF; the KL term by `kl_estimator` at `kl_placement`).  Terms placed "exact" are computed
    on the model's full table.
    """

    def __init__(
        self,
        objective: Objective,
        model: torch.nn.Module,
        reference: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        world: SequenceWorld,
        reward: Tensor,
        gamma: float | None,
        beta: float,
        samples: int,
        estimator: str,
        kl_estimator: str,
        kl_placement: str,
        entropy_placement: str,
        prompt_tokens: Tensor | None = None,
        seed: int = 0,
        **options: Accelerator | float | int | None,
    ):
        super().__init__(model, reference, optimizer, **options)
        self.objective, self.world = objective, world
        self.policy, self.sampler, self.reference_policy = self._policies(world.space, world.n_prompts, prompt_tokens)
        self.reward = torch.as_tensor(reward).to(self.accelerator.device)
        self.config = GradientConfig(
            beta=beta,
            estimator=estimator,
            kl_estimator=kl_estimator,
            kl_placement=kl_placement,
            entropy_placement=entropy_placement,
            samples=samples,
        )
        # the keywords of `score_function_surrogate`: entropy coefficient gamma for RKL, 0 for RLHF
        self.options = dict(estimator=self.config.estimator, **self.config.terms(gamma or 0.0))
        self.samples = self.config.samples
        self.generator = make_generator(seed, self.accelerator.device)

    def __call__(self, prompts: Tensor, *, weight: Tensor | None = None) -> float:
        device = self.accelerator.device
        prompts = prompts.to(device)
        weights = torch.ones(prompts.shape[0], dtype=torch.float64, device=device) if weight is None else weight
        weights = torch.as_tensor(weights, dtype=torch.float64).to(device)
        responses = self.sampler.sample(prompts, self.samples, self.generator)
        options = self.options

        def local_sum(rows: Tensor) -> Tensor:
            x, ids = prompts[rows], responses[rows]
            logp = self.policy.log_prob(x, ids)
            with torch.no_grad():
                ref_logp = self.reference_policy.log_prob(x, ids).to(logp.dtype)
            reward = self.reward[x.unsqueeze(-1), ids].to(logp.dtype)
            per_prompt = score_function_surrogate(logp, ref_logp, reward, **options)
            if self.config.needs_table:
                ref_table = None
                if self.config.kl_exact:
                    with torch.no_grad():
                        ref_table = self.reference_policy.table()[x]
                per_prompt = per_prompt + self.config.exact_terms(
                    self.policy.table()[x], ref_table, options["entropy_coef"]
                )
            return (weights[rows].to(per_prompt.dtype) * per_prompt).sum()

        return self._step(weights, local_sum)


def make_trainer(
    objective: str | Objective,
    model: torch.nn.Module,
    reference: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    *,
    gamma: float | None = None,
    beta: float = 0.0,
    world: SequenceWorld | None = None,
    pairs_from: str | Autoregressive | None = None,
    reward: Tensor | None = None,
    samples: int = 4,
    estimator: str = "rloo",
    kl_estimator: str = "k1",
    kl_placement: str = "reward",
    entropy_placement: str = "reward",
    prompt_tokens: Tensor | None = None,
    accelerator: Accelerator | None = None,
    average: bool = False,
    max_grad_norm: float | None = None,
    micro_batch_size: int | None = None,
    seed: int = 0,
    **params: float,
) -> PairTrainer | OnPolicyTrainer:
    """A trainer for `objective`: `trainer(batch)` (offline pairs) or `trainer(prompts)` (on-policy), one step.

    Which trainer: a pair objective without `pairs_from` → `PairTrainer` (offline batches); a pair
    objective with `pairs_from` ("policy", "reference", "behavior" or an object with `.sample`) →
    `OnPolicyPairTrainer`; "rkl" / "rlhf" → `OnPolicyTrainer`.  `world` (a `SequenceWorld` whose
    tokens are the model's vocabulary) is needed on-policy and for beta > 0: it gives the space,
    the prompts, pi0, mu, and the true law and reward γ ln pi* (the default `reward`).  `gamma`
    defaults to the world's for objectives that take it and must not be passed to one that does not.

    `model`, `reference` and `optimizer` are passed unprepared: the trainer prepares them with
    `accelerator` (a new `accelerate.Accelerator()` when None) and holds the prepared objects as
    `trainer.model`, `trainer.reference`, `trainer.optimizer`.  Everything is checked here, before
    any step.  See the module docstring for sharding, micro-batches and sampling.
    """
    obj = get_objective(objective)
    check_model(model)
    if reference is not None:
        check_model(reference, "reference")
        if reference is model:
            raise ValueError("reference must be a separate model (a frozen copy of pi0), not the model being trained")
    check_optimizer(optimizer)
    # the on-policy options (estimator, KL estimator and placements, beta, samples), validated once
    config = GradientConfig(
        beta=beta, estimator=estimator, kl_estimator=kl_estimator, kl_placement=kl_placement,
        entropy_placement=entropy_placement, samples=samples,
    )  # fmt: skip
    beta, samples = config.beta, config.samples
    seed = check_int(seed, "seed", minimum=0)
    if not isinstance(average, bool):
        raise ValueError(f"average must be True or False, got {average!r}")
    if max_grad_norm is not None:
        max_grad_norm = check_positive(max_grad_norm, "max_grad_norm")
    if micro_batch_size is not None:
        micro_batch_size = check_int(micro_batch_size, "micro_batch_size")
    on_policy = obj.kind == "prompt" or pairs_from is not None
    if (on_policy or beta > 0) and not isinstance(world, SequenceWorld):
        raise ValueError(
            f"world must be a SequenceWorld for {'on-policy training' if on_policy else 'beta > 0'} "
            f"(it gives the space to sample from), got {type(world).__name__}"
        )
    if reward is None and world is not None and (obj.kind == "prompt" or obj.needs_reward):
        reward = world.as_tabular().true_reward.clamp_min(-1e3 * world.gamma)
    if accelerator is None:
        accelerator = require("accelerate").Accelerator()
    options = dict(accelerator=accelerator, max_grad_norm=max_grad_norm, micro_batch_size=micro_batch_size)
    world_gamma = None if world is None else world.gamma
    needs_reference = obj.needs_reference or beta > 0 or obj.kind == "prompt"
    if needs_reference and reference is None:
        raise ValueError(f"objective {obj.name!r} (beta = {beta}) needs a reference model: pass reference=...")
    if obj.kind == "prompt":
        if obj.name not in SCORE_FUNCTION_OBJECTIVES:
            raise ValueError(f"the on-policy trainer runs {SCORE_FUNCTION_OBJECTIVES}; got {obj.name!r}")
        if params:
            raise ValueError(f"objective {obj.name!r} has no hyper-parameters; got {sorted(params)}")
        if estimator == "rloo" and samples < 2:
            raise ValueError(f"RLOO needs samples >= 2, got {samples}")
        return OnPolicyTrainer(
            obj, model, reference, optimizer, world=world, reward=reward,
            gamma=resolve_gamma(obj, gamma, world_gamma), **dataclasses.asdict(config),
            prompt_tokens=prompt_tokens, seed=seed, **options,
        )  # fmt: skip
    obj = pair_objective(obj)
    resolved = obj.resolve_params(params)
    gamma = resolve_gamma(obj, gamma, world_gamma)
    if obj.needs_reward and on_policy and reward is None:
        raise ValueError(f"objective {obj.name!r} needs a reward table [X, N]: pass reward=...")
    common = dict(
        gamma=gamma, params=resolved, average=average, beta=beta, world=world, prompt_tokens=prompt_tokens,
        kl=config,
        seed=seed, **options,
    )  # fmt: skip
    if beta > 0 and kl_placement != "exact" and estimator == "rloo" and samples < 2:
        raise ValueError(f"RLOO needs samples >= 2 for the KL term, got {samples}")
    keep_reference = reference if needs_reference else None
    if pairs_from is None:
        return PairTrainer(obj, model, keep_reference, optimizer, **common)
    if isinstance(pairs_from, str):
        _check_choice(pairs_from, PAIR_SOURCES, "pairs_from")
    elif not hasattr(pairs_from, "sample"):
        raise ValueError(f"pairs_from must be one of {PAIR_SOURCES} or have .sample(prompts, n, generator)")
    return OnPolicyPairTrainer(obj, model, keep_reference, optimizer, pairs_from=pairs_from, reward=reward, **common)
