"""On-policy and stochastic-gradient estimators, batched over replicates, trained with a torch optimizer.

Where `synthalign.estimators.fit` minimizes an exact (population or count) loss, the
estimators here only see *samples of the current policy* and follow a stochastic
gradient, as RL code does:

* `score_function_fit`: RKL (eq. 15) and RLHF (eq. 1) by the score-function gradient
  (REINFORCE, or RLOO with its leave-one-out baseline), the KL(π‖π0) term estimated per
  sample by k1, k2 or k3 (spec §6 item 14) placed in the reward or in the loss, or
  computed exactly; the entropy term of eq. 15 likewise.  Those choices are one
  `GradientConfig` (`synthalign.estimators.score_function`, with the per-sample terms and the
  surrogate), given as `config=` or as its fields' keywords;
* `onpolicy_pair_fit`: a registered pair objective on pairs drawn from the current
  policy π_t — preference distillation (eq. 11/12 with μ = π_t, Algorithm 1, spec §2
  note) scored by R̂, or an objective on labelled pairs (e.g. online DPO, eq. 6) labelled
  by the true preference law of spec §1.

Both run on a tabular `World` (softmax logits [R, X, A]) and on a `SequenceWorld`
(per-prefix logits [R, X, P, V], ancestral sampling).  Every replicate has its own
parameters and its own samples; the summed loss gives each replicate its own gradient,
and Adam/SGD act per coordinate, so R replicates are R independent runs in one program.
What the expected value of each stochastic gradient is, exactly, is
`synthalign.estimators.gradient_check`'s; exact online DPO under a pair sampler is
`synthalign.estimators.online_dpo`'s.  The names of those two modules that callers reach
through this one (`score_function_surrogate`, `ESTIMATORS`, `exact_online_dpo`, …) are
re-exported here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthalign._checks import check_positive

# `online_dpo` and part of `score_function` were once this module: their names stay importable from here
# (re-exported, outside `__all__`, so that the documentation shows each object once, where it is defined).
from synthalign.estimators.online_dpo import (  # noqa: F401
    DPO_SAMPLERS,
    SamplerRun,
    dpo_linear_rate,
    exact_online_dpo,
    sampler_pair_weights,
)
from synthalign.estimators.score_function import (  # noqa: F401
    ESTIMATORS,
    PLACEMENTS,
    GradientConfig,
    GradientOptions,
    SampleTerms,
    gradient_config,
    loss_terms,
    sample_reward,
    score_function_surrogate,
)
from synthalign.evaluate import kl_regularizer
from synthalign.registry.protocol import Objective, get_objective
from synthalign.worlds.autoregressive import TabularAutoregressive, TabularSoftmax
from synthalign.worlds.policy import Policy
from synthalign.worlds.preferences import preference_matrix
from synthalign.worlds.sequence import SequenceWorld
from synthalign.worlds.tabular import World
from synthalign.worlds.torch_sampling import make_generator

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from synthalign._types import WorldLike

__all__ = [
    "SCORE_FUNCTION_OBJECTIVES",
    "OnPolicyFit",
    "tabular_view",
    "make_parametrization",
    "initial_logits",
    "score_function_fit",
    "pair_inputs",
    "label_probability",
    "onpolicy_pair_fit",
    "sampled_score_function_gradients",
    "sampled_pair_gradients",
]

SCORE_FUNCTION_OBJECTIVES = ("rkl", "rlhf")

_Parametrization = TabularSoftmax | TabularAutoregressive


@dataclasses.dataclass(frozen=True, eq=False)
class OnPolicyFit:
    """The result of an on-policy run.

    Attributes:
      policy: the final policies over the (enumerated) response set, [R, X, N].
      parameters: the final logits ([R, X, A] or [R, X, P, V]).
      losses: the surrogate loss of each replicate at every step, [steps, R].
      samples_per_step: responses drawn per prompt per step.
    """

    policy: Policy
    parameters: Tensor
    losses: Tensor
    samples_per_step: int


def tabular_view(world: WorldLike) -> World:
    """The tabular world of a `World` or of a `SequenceWorld` (its enumeration)."""
    if isinstance(world, SequenceWorld):
        return world.as_tabular()
    if isinstance(world, World):
        return world
    raise ValueError(f"world must be a World or a SequenceWorld, got {type(world).__name__}")


def make_parametrization(world: WorldLike, logits: Tensor) -> _Parametrization:
    """The policy parametrization of a world: tabular softmax on a `World`, per-prefix on a `SequenceWorld`."""
    if isinstance(world, SequenceWorld):
        return TabularAutoregressive(logits, world.space)
    return TabularSoftmax(logits)


def initial_logits(world: WorldLike, replicates: int, init: Tensor | None = None) -> Tensor:
    """Leaf logits [R, ...] starting from `init` (default pi0's logits), one copy per replicate."""
    if init is None:
        init = world.reference if isinstance(world, SequenceWorld) else world.reference.logp
    init = torch.as_tensor(init, dtype=world.dtype, device=world.device)
    base_dims = 3 if isinstance(world, SequenceWorld) else 2
    if init.dim() == base_dims:
        init = init.expand(replicates, *init.shape)
    if init.shape[0] != replicates or init.dim() != base_dims + 1:
        raise ValueError(f"init must have the parameter shape, with or without a leading replicates = {replicates}")
    # -inf logits (zero-probability responses of pi0) would give NaN gradients; start them very low instead.
    return init.clamp_min(-50.0).clone().requires_grad_(True)


def _score_function_objective(objective: str | Objective, gamma: float) -> tuple[Objective, float]:
    obj = get_objective(objective)
    if obj.name not in SCORE_FUNCTION_OBJECTIVES:
        raise ValueError(
            f"the score-function estimator samples {SCORE_FUNCTION_OBJECTIVES} only; {obj.name!r} is a {obj.kind} "
            f"objective (pair objectives: onpolicy_pair_fit)"
        )
    return obj, (gamma if obj.name == "rkl" else 0.0)


def _check_reward(reward: Tensor | None, tab: World) -> Tensor:
    if reward is None:
        return tab.true_reward.clamp_min(-1e3 * tab.gamma)
    reward = torch.as_tensor(reward, dtype=tab.dtype, device=tab.device)
    if reward.shape[-2:] != (tab.n_prompts, tab.n_responses) or torch.isnan(reward).any():
        raise ValueError(f"reward must have shape [..., {tab.n_prompts}, {tab.n_responses}] without NaN")
    return reward


def _gather(table: Tensor, ids: Tensor) -> Tensor:
    """table [(R,) X, N] at ids [R, X, m] → [R, X, m]."""
    return torch.gather(table.expand(ids.shape[0], *table.shape[-2:]), -1, ids)


@dataclasses.dataclass(frozen=True, eq=False)
class _ScoreFunctionProblem:
    """What a score-function estimator optimizes, checked once: the tabular view, R̂, c (eq. 15; 0 for RLHF), config."""

    tab: World
    reward: Tensor
    entropy_coef: float
    config: GradientConfig

    @property
    def terms(self) -> SampleTerms:
        return self.config.terms(self.entropy_coef)

    def exact_terms(self, table: Tensor) -> Tensor:
        """Per-prompt terms computed on the full table: −c·H(π) and β·KL(π‖π0) where placed "exact"."""
        return self.config.exact_terms(table, self.tab.reference.logp, self.entropy_coef)

    def step_loss(self, policy: _Parametrization, prompts: Tensor, generator: torch.Generator) -> Tensor:
        """One step's loss per replicate, [R]: `samples` responses from π_t per prompt, the surrogate weighed by D."""
        ref, config = self.tab.reference.logp, self.config
        ids = policy.sample(prompts, config.samples, generator)
        logp = policy.log_prob(prompts, ids)
        per_prompt = score_function_surrogate(
            logp, _gather(ref, ids), _gather(self.reward, ids), estimator=config.estimator, **self.terms
        )
        if config.needs_table:
            per_prompt = per_prompt + self.exact_terms(policy.table())
        return (per_prompt * self.tab.prompt_dist).sum(dim=-1)


def _score_function_problem(
    world: WorldLike, objective: str | Objective, options: Mapping[str, object], default: GradientConfig
) -> _ScoreFunctionProblem:
    """The checked inputs of a score-function estimator called with `options` (`GradientOptions`)."""
    tab = tabular_view(world)
    config = gradient_config(options, default)
    _, entropy_coef = _score_function_objective(objective, tab.gamma)
    return _ScoreFunctionProblem(tab, _check_reward(options.get("reward"), tab), entropy_coef, config)


_StepLoss = Callable[[_Parametrization, Tensor, torch.Generator], Tensor]


def _train(
    world: WorldLike, step_loss: _StepLoss, *, steps: int, lr: float, replicates: int, seed: int, init: Tensor | None
) -> tuple[Policy, Tensor, Tensor]:
    """Adam on R replicates' logits for `steps` steps of `step_loss`: (final policy, logits, losses [steps, R])."""
    tab = tabular_view(world)
    logits = initial_logits(world, replicates, init)
    policy = make_parametrization(world, logits)
    optimizer = torch.optim.Adam([logits], lr=check_positive(lr, "lr"))
    generator = make_generator(seed, tab.device)
    prompts = torch.arange(tab.n_prompts, device=tab.device).expand(replicates, -1)
    losses = []
    for _ in range(int(steps)):
        loss = step_loss(policy, prompts, generator)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
        losses.append(loss.detach())
    with torch.no_grad():
        table = policy.table()
    return Policy(table, tab.prompt_dist), logits.detach(), torch.stack(losses)


def _one_step_gradients(world: WorldLike, logits: Tensor, step_loss: _StepLoss, replicates: int, seed: int) -> Tensor:
    """`replicates` independent gradients of one step of `step_loss` at `logits` (no replicate dim), [R, |θ|]."""
    tab = tabular_view(world)
    leaf = logits.detach().expand(replicates, *logits.shape).clone().requires_grad_(True)
    policy = make_parametrization(world, leaf)
    prompts = torch.arange(tab.n_prompts, device=tab.device).expand(replicates, -1)
    loss = step_loss(policy, prompts, make_generator(seed, tab.device))
    (gradient,) = torch.autograd.grad(loss.sum(), leaf)
    return gradient.reshape(replicates, -1)


def score_function_fit(
    world: WorldLike,
    objective: str = "rkl",
    *,
    steps: int = 200,
    lr: float = 0.1,
    replicates: int = 1,
    seed: int = 0,
    init: Tensor | None = None,
    **options: Unpack[GradientOptions],
) -> OnPolicyFit:
    """Minimizes RKL (eq. 15) or RLHF (eq. 1) from samples of the current policy, for R replicates.

    Each step draws `samples` responses per prompt and replicate from π_t, forms the
    `score_function_surrogate`, weighs prompts by D and takes one Adam step.  `options`:
    `reward` (R̂ over the (enumerated) responses, [(R,) X, N]; default the true reward γ ln π*),
    `config` and the fields of `GradientConfig` (default `GradientConfig()`: RLOO, 8 samples, β = 0).
    """
    problem = _score_function_problem(world, objective, options, GradientConfig())
    run = dict(steps=steps, lr=lr, replicates=replicates, seed=seed, init=init)
    return OnPolicyFit(*_train(world, problem.step_loss, **run), problem.config.samples)


def sampled_score_function_gradients(
    world: WorldLike,
    logits: Tensor,
    objective: str = "rkl",
    *,
    replicates: int = 1000,
    seed: int = 0,
    **options: Unpack[GradientOptions],
) -> Tensor:
    """`replicates` independent one-step score-function gradients at `logits` (no replicate dim), [R, |θ|].

    The same step as `score_function_fit`'s (`options` likewise, but the default estimator is
    REINFORCE with 1 sample).  Used to measure the sampled-gradient mean and variance against
    their exact values.
    """
    problem = _score_function_problem(world, objective, options, GradientConfig(estimator="reinforce", samples=1))
    return _one_step_gradients(world, logits, problem.step_loss, replicates, seed)


def _pair_objective(objective: str | Objective) -> Objective:
    obj = get_objective(objective)
    if obj.kind != "pair":
        raise ValueError(
            f"onpolicy_pair_fit samples pairs for pair objectives; {obj.name!r} is a prompt objective "
            f"(use score_function_fit)"
        )
    return obj


def pair_inputs(
    obj: Objective,
    logp_a: Tensor,
    logp_b: Tensor,
    ref_a: Tensor,
    ref_b: Tensor,
    reward_a: Tensor | None,
    reward_b: Tensor | None,
    gamma: float,
) -> dict[str, Tensor]:
    """The inputs `obj.fn` takes, for pairs (a, b) with a the chosen (or first) response."""
    available = {
        "logp_chosen": logp_a,
        "logp_rejected": logp_b,
        "ref_logp_chosen": ref_a,
        "ref_logp_rejected": ref_b,
        "reward_chosen": reward_a,
        "reward_rejected": reward_b,
        "target_margin": None if reward_a is None else reward_a - reward_b,
        "gamma": gamma,
    }
    inputs = {name: available[name] for name in obj.inputs}
    missing = [name for name, value in inputs.items() if value is None]
    if missing:
        raise ValueError(f"objective {obj.name!r} needs a reward (pass reward=...) for {missing}")
    return inputs


def label_probability(tab: World, first: Tensor, second: Tensor, matrix: Tensor | None = None) -> Tensor:
    """P(first ≻ second | x) under the world's law, for ids [R, X, m]: spec §1's σ(γ ln[π*(a)/π*(b)])
    when `tab.law` is None, else the law's matrix (pass `preference_matrix(tab)` as `matrix`)."""
    if matrix is None:
        target = tab.target.logp
        return torch.sigmoid(tab.gamma * (_gather(target, first) - _gather(target, second)))
    rows = torch.gather(
        matrix.expand(first.shape[0], *matrix.shape), -2, first.unsqueeze(-1).expand(*first.shape, matrix.shape[-1])
    )
    return torch.gather(rows, -1, second.unsqueeze(-1)).squeeze(-1)


@dataclasses.dataclass(frozen=True, eq=False)
class _PairProblem:
    """What an on-policy pair estimator optimizes, checked once (`_pair_problem`)."""

    tab: World
    obj: Objective
    params: dict[str, float]
    reward: Tensor | None
    beta: float
    pairs: int
    matrix: Tensor | None  # a law other than spec §1's, as its matrix P[x, a, b]; spec §1's is computed per pair

    def step_loss(self, policy: _Parametrization, prompts: Tensor, generator: torch.Generator) -> Tensor:
        """One step's loss per replicate, [R]: `pairs` pairs from π_t per prompt, labelled if the objective needs it."""
        tab, obj, reward, pairs, ref = self.tab, self.obj, self.reward, self.pairs, self.tab.reference.logp
        draws = policy.sample(prompts, 2 * pairs, generator)
        first, second = draws[..., :pairs], draws[..., pairs:]
        if obj.data == "preferences":
            p_first = label_probability(tab, first, second, self.matrix)
            uniform = torch.rand(first.shape, generator=generator, dtype=torch.float64, device=tab.device)
            first_wins = uniform < p_first
            first, second = torch.where(first_wins, first, second), torch.where(first_wins, second, first)
        logp_a, logp_b = policy.log_prob(prompts, first), policy.log_prob(prompts, second)
        rewards = (None, None) if reward is None else (_gather(reward, first), _gather(reward, second))
        inputs = pair_inputs(obj, logp_a, logp_b, _gather(ref, first), _gather(ref, second), *rewards, tab.gamma)
        per_prompt = obj.fn(**inputs, **self.params).mean(dim=-1)
        if self.beta:
            per_prompt = per_prompt + kl_regularizer(policy.table(), ref, self.beta)
        return (per_prompt * tab.prompt_dist).sum(dim=-1)


def _pair_problem(
    world: WorldLike,
    objective: str | Objective,
    reward: Tensor | None,
    beta: float,
    params: Mapping[str, float],
    pairs: int = 1,
) -> _PairProblem:
    """The checked inputs of an on-policy pair estimator."""
    tab = tabular_view(world)
    obj = _pair_objective(objective)
    beta = check_positive(beta, "beta", allow_zero=True)
    resolved = obj.resolve_params(params)
    reward = _check_reward(reward, tab) if (obj.needs_reward or reward is not None) else None
    matrix = preference_matrix(tab) if obj.data == "preferences" and tab.law is not None else None
    return _PairProblem(tab, obj, resolved, reward, beta, pairs, matrix)


def onpolicy_pair_fit(
    world: WorldLike,
    objective: str | Objective = "distillation",
    *,
    reward: Tensor | None = None,
    beta: float = 0.0,
    pairs: int = 8,
    steps: int = 200,
    lr: float = 0.1,
    replicates: int = 1,
    seed: int = 0,
    init: Tensor | None = None,
    **params: float,
) -> OnPolicyFit:
    """A pair objective trained on pairs drawn from the current policy π_t, for R replicates.

    Each step draws `pairs` pairs (a, b) ~ π_t(·|x) i.i.d. per prompt (no gradient
    through the draw).  Objectives on unlabelled pairs (data "pairs", e.g. distillation,
    eq. 11/12 with μ = π_t: Algorithm 1) see them in draw order with R̂; objectives on
    labelled pairs (data "preferences", e.g. online DPO, eq. 6) get a label from the true
    law — spec §1's P*(a ≻ b | x) = σ(γ ln[π*(a|x)/π*(b|x)]) unless the world carries another
    (`World.law`).  β·KL(π‖π0) is exact on the table.  Prompts are weighed by D.

    The expected gradient of one step is the gradient of the population objective with the pair
    law held at π_t (a semi-gradient), not that of the objective whose pairs move with π:
    `synthalign.estimators.gradient_check.pair_gradient_law`.
    """
    problem = _pair_problem(world, objective, reward, beta, params, pairs)
    run = dict(steps=steps, lr=lr, replicates=replicates, seed=seed, init=init)
    return OnPolicyFit(*_train(world, problem.step_loss, **run), 2 * int(pairs))


def sampled_pair_gradients(
    world: WorldLike,
    logits: Tensor,
    objective: str | Objective = "distillation",
    *,
    reward: Tensor | None = None,
    beta: float = 0.0,
    pairs: int = 1,
    replicates: int = 1000,
    seed: int = 0,
    **params: float,
) -> Tensor:
    """`replicates` independent one-step gradients of `onpolicy_pair_fit` at `logits` (no replicate dim), [R, |θ|].

    The same step as the fit's; its exact mean is `gradient_check.expected_pair_gradient`.
    """
    problem = _pair_problem(world, objective, reward, beta, params, pairs)
    return _one_step_gradients(world, logits, problem.step_loss, replicates, seed)
