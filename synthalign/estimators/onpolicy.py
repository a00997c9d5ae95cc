"""On-policy and stochastic-gradient estimators, batched over replicates, trained with a torch optimizer.

Where `synthalign.estimators.fit` minimizes an exact (population or count) loss, the
estimators here only see *samples of the current policy* and follow a stochastic
gradient, as RL code does:

* `score_function_fit`: RKL (eq. 15) and RLHF (eq. 1) by the score-function gradient
  (REINFORCE, or RLOO with its leave-one-out baseline), the KL(π‖π0) term estimated per
  sample by k1, k2 or k3 (spec §6 item 14) placed in the reward or in the loss, or
  computed exactly; the entropy term of eq. 15 likewise;
* `onpolicy_pair_fit`: a registered pair objective on pairs drawn from the current
  policy π_t — preference distillation (eq. 11/12 with μ = π_t, Algorithm 1, spec §2
  note) scored by R̂, or an objective on labelled pairs (e.g. online DPO, eq. 6) labelled
  by the true preference law of spec §1.

Both run on a tabular `World` (softmax logits [R, X, A]) and on a `SequenceWorld`
(per-prefix logits [R, X, P, V], ancestral sampling).  Every replicate has its own
parameters and its own samples; the summed loss gives each replicate its own gradient,
and Adam/SGD act per coordinate, so R replicates are R independent runs in one program.
What the expected value of each stochastic gradient is, exactly, is
`synthalign.estimators.gradient_check`'s.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthalign._checks import check_positive
from synthalign.metrics import entropy_per_prompt, kl_per_prompt
from synthalign.objectives.kl_estimators import KL_ESTIMATOR_KINDS, kl_estimator
from synthalign.registry.protocol import Objective, get_objective
from synthalign.worlds.autoregressive import TabularAutoregressive, TabularSoftmax
from synthalign.worlds.policy import Policy
from synthalign.worlds.preferences import preference_matrix
from synthalign.worlds.sequence import SequenceWorld
from synthalign.worlds.tabular import World
from synthalign.worlds.torch_sampling import make_generator

if TYPE_CHECKING:
    from synthalign._types import WorldLike

__all__ = [
    "ESTIMATORS",
    "PLACEMENTS",
    "SCORE_FUNCTION_OBJECTIVES",
    "OnPolicyFit",
    "tabular_view",
    "make_parametrization",
    "initial_logits",
    "sample_reward",
    "loss_terms",
    "score_function_surrogate",
    "score_function_fit",
    "pair_inputs",
    "label_probability",
    "onpolicy_pair_fit",
    "sampled_score_function_gradients",
    "sampled_pair_gradients",
    "DPO_SAMPLERS",
    "sampler_pair_weights",
    "dpo_linear_rate",
    "SamplerRun",
    "exact_online_dpo",
]

ESTIMATORS = ("reinforce", "rloo")
PLACEMENTS = ("reward", "loss", "exact")
SCORE_FUNCTION_OBJECTIVES = ("rkl", "rlhf")


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


def tabular_view(world) -> World:
    """The tabular world of a `World` or of a `SequenceWorld` (its enumeration)."""
    if isinstance(world, SequenceWorld):
        return world.as_tabular()
    if isinstance(world, World):
        return world
    raise ValueError(f"world must be a World or a SequenceWorld, got {type(world).__name__}")


def make_parametrization(world: WorldLike, logits: Tensor):
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


def _check_choice(value: str, options: tuple[str, ...], name: str) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def sample_reward(
    logp: Tensor,
    ref_logp: Tensor,
    reward: Tensor,
    *,
    entropy_coef: float,
    beta: float,
    kl_kind: str,
    kl_placement: str,
    entropy_placement: str,
) -> Tensor:
    """The per-sample reward that multiplies the score ∇ln π(a) (all detached):

        r(a) = R̂(x,a) − c·ln π(a) [entropy in the reward] − β·k(a) [KL in the reward]

    with c the entropy coefficient of eq. 15 (γ; 0 for RLHF) and k the KL estimator of
    spec §6 item 14 on r = π0/π.
    """
    logp, ref_logp = logp.detach(), ref_logp.detach()
    value = reward.detach().to(logp.dtype)
    if entropy_placement == "reward" and entropy_coef:
        value = value - entropy_coef * logp
    if kl_placement == "reward" and beta:
        value = value - beta * kl_estimator(logp, ref_logp, kl_kind)
    return value


def loss_terms(
    logp: Tensor,
    ref_logp: Tensor,
    *,
    entropy_coef: float,
    beta: float,
    kl_kind: str,
    kl_placement: str,
    entropy_placement: str,
) -> Tensor:
    """The per-sample terms differentiated directly (samples held fixed):

    c·ln π(a) [entropy in the loss: the k1 estimate of −H] + β·k(a) [KL in the loss].
    """
    value = torch.zeros_like(logp)
    if entropy_placement == "loss" and entropy_coef:
        value = value + entropy_coef * logp
    if kl_placement == "loss" and beta:
        value = value + beta * kl_estimator(logp, ref_logp, kl_kind)
    return value


def score_function_surrogate(
    logp: Tensor,
    ref_logp: Tensor,
    reward: Tensor,
    *,
    estimator: str = "rloo",
    entropy_coef: float = 0.0,
    beta: float = 0.0,
    kl_kind: str = "k1",
    kl_placement: str = "reward",
    entropy_placement: str = "reward",
) -> Tensor:
    """Per-prompt surrogate whose gradient is the score-function estimate, from m samples [..., m].

        REINFORCE: (1/m) Σ_i [ −sg(r_i) ln π(a_i) + ℓ_i ]
        RLOO:      (1/m) Σ_i [ −sg(r_i − (1/(m−1)) Σ_{j≠i} r_j) ln π(a_i) + ℓ_i ]

    with r from `sample_reward` and ℓ from `loss_terms`.  Its expected gradient, exactly:
    `synthalign.estimators.gradient_check.expected_gradient`.  Returns [...].
    """
    _check_choice(estimator, ESTIMATORS, "estimator")
    options = dict(
        entropy_coef=entropy_coef,
        beta=beta,
        kl_kind=kl_kind,
        kl_placement=kl_placement,
        entropy_placement=entropy_placement,
    )
    r = sample_reward(logp, ref_logp, reward, **options)
    m = logp.shape[-1]
    if estimator == "rloo":
        if m < 2:
            raise ValueError(f"RLOO needs at least 2 samples per prompt, got {m}")
        r = r - (r.sum(dim=-1, keepdim=True) - r) / (m - 1)
    surrogate = -r * logp + loss_terms(logp, ref_logp, **options)
    return surrogate.mean(dim=-1)


def _score_function_objective(objective, gamma: float) -> tuple[Objective, float]:
    obj = get_objective(objective)
    if obj.name not in SCORE_FUNCTION_OBJECTIVES:
        raise ValueError(
            f"the score-function estimator samples {SCORE_FUNCTION_OBJECTIVES} only; {obj.name!r} is a {obj.kind} "
            f"objective (pair objectives: onpolicy_pair_fit)"
        )
    return obj, (gamma if obj.name == "rkl" else 0.0)


def _exact_terms(table: Tensor, ref_logp: Tensor, *, entropy_coef, beta, kl_placement, entropy_placement) -> Tensor:
    """Per-prompt terms computed on the full table: −c·H(π) and β·KL(π‖π0) where placed "exact"."""
    value = torch.zeros(table.shape[:-1], dtype=table.dtype, device=table.device)
    if entropy_placement == "exact" and entropy_coef:
        value = value - entropy_coef * entropy_per_prompt(table)
    if kl_placement == "exact" and beta:
        value = value + beta * kl_per_prompt(table, ref_logp)
    return value


def _check_reward(reward, tab: World) -> Tensor:
    if reward is None:
        return tab.true_reward.clamp_min(-1e3 * tab.gamma)
    reward = torch.as_tensor(reward, dtype=tab.dtype, device=tab.device)
    if reward.shape[-2:] != (tab.n_prompts, tab.n_responses) or torch.isnan(reward).any():
        raise ValueError(f"reward must have shape [..., {tab.n_prompts}, {tab.n_responses}] without NaN")
    return reward


def _gather(table: Tensor, ids: Tensor) -> Tensor:
    """table [(R,) X, N] at ids [R, X, m] → [R, X, m]."""
    return torch.gather(table.expand(ids.shape[0], *table.shape[-2:]), -1, ids)


def score_function_fit(
    world: WorldLike,
    objective: str = "rkl",
    *,
    reward: Tensor | None = None,
    beta: float = 0.0,
    estimator: str = "rloo",
    kl_estimator: str = "k1",
    kl_placement: str = "reward",
    entropy_placement: str = "reward",
    samples: int = 8,
    steps: int = 200,
    lr: float = 0.1,
    replicates: int = 1,
    seed: int = 0,
    init: Tensor | None = None,
) -> OnPolicyFit:
    """Minimizes RKL (eq. 15) or RLHF (eq. 1) from samples of the current policy, for R replicates.

    Each step draws `samples` responses per prompt and replicate from π_t, forms the
    `score_function_surrogate`, weighs prompts by D and takes one Adam step.  `reward` is
    R̂ over the (enumerated) responses, [(R,) X, N]; default the true reward γ ln π*.
    """
    tab = tabular_view(world)
    _check_choice(kl_estimator, KL_ESTIMATOR_KINDS, "kl_estimator")
    _check_choice(kl_placement, PLACEMENTS, "kl_placement")
    _check_choice(entropy_placement, PLACEMENTS, "entropy_placement")
    beta = check_positive(beta, "beta", allow_zero=True)
    _, entropy_coef = _score_function_objective(objective, tab.gamma)
    reward = _check_reward(reward, tab)
    logits = initial_logits(world, replicates, init)
    policy = make_parametrization(world, logits)
    optimizer = torch.optim.Adam([logits], lr=check_positive(lr, "lr"))
    generator = make_generator(seed, tab.device)
    prompts = torch.arange(tab.n_prompts, device=tab.device).expand(replicates, -1)
    ref = tab.reference.logp
    options = dict(
        entropy_coef=entropy_coef,
        beta=beta,
        kl_placement=kl_placement,
        entropy_placement=entropy_placement,
    )
    needs_table = "exact" in (kl_placement, entropy_placement)
    losses = []
    for _ in range(int(steps)):
        ids = policy.sample(prompts, samples, generator)
        logp = policy.log_prob(prompts, ids)
        per_prompt = score_function_surrogate(
            logp, _gather(ref, ids), _gather(reward, ids), estimator=estimator, kl_kind=kl_estimator, **options
        )
        if needs_table:
            per_prompt = per_prompt + _exact_terms(policy.table(), ref, **options)
        loss = (per_prompt * tab.prompt_dist).sum(dim=-1)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
        losses.append(loss.detach())
    with torch.no_grad():
        table = policy.table()
    return OnPolicyFit(Policy(table, tab.prompt_dist), logits.detach(), torch.stack(losses), int(samples))


def _pair_objective(objective) -> Objective:
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


def _pair_step_loss(obj, policy, tab, prompts, pairs, generator, reward, matrix, resolved, beta) -> Tensor:
    """One step's loss per replicate, [R]: `pairs` pairs from π_t per prompt, labelled if `obj` needs it."""
    ref = tab.reference.logp
    draws = policy.sample(prompts, 2 * pairs, generator)
    first, second = draws[..., :pairs], draws[..., pairs:]
    if obj.data == "preferences":
        p_first = label_probability(tab, first, second, matrix)
        uniform = torch.rand(first.shape, generator=generator, dtype=torch.float64, device=tab.device)
        first_wins = uniform < p_first
        first, second = torch.where(first_wins, first, second), torch.where(first_wins, second, first)
    logp_a, logp_b = policy.log_prob(prompts, first), policy.log_prob(prompts, second)
    rewards = (None, None) if reward is None else (_gather(reward, first), _gather(reward, second))
    inputs = pair_inputs(obj, logp_a, logp_b, _gather(ref, first), _gather(ref, second), *rewards, tab.gamma)
    per_prompt = obj.fn(**inputs, **resolved).mean(dim=-1)
    if beta:
        per_prompt = per_prompt + beta * kl_per_prompt(policy.table(), ref)
    return (per_prompt * tab.prompt_dist).sum(dim=-1)


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
    **params,
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
    tab = tabular_view(world)
    obj = _pair_objective(objective)
    beta = check_positive(beta, "beta", allow_zero=True)
    resolved = obj.resolve_params(params)
    reward = _check_reward(reward, tab) if (obj.needs_reward or reward is not None) else None
    logits = initial_logits(world, replicates, init)
    policy = make_parametrization(world, logits)
    optimizer = torch.optim.Adam([logits], lr=check_positive(lr, "lr"))
    generator = make_generator(seed, tab.device)
    prompts = torch.arange(tab.n_prompts, device=tab.device).expand(replicates, -1)
    # A law other than spec §1's is held as its matrix P[x, a, b]; spec §1's is computed per pair.
    matrix = preference_matrix(tab) if obj.data == "preferences" and tab.law is not None else None
    losses = []
    for _ in range(int(steps)):
        loss = _pair_step_loss(obj, policy, tab, prompts, pairs, generator, reward, matrix, resolved, beta)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
        losses.append(loss.detach())
    with torch.no_grad():
        table = policy.table()
    return OnPolicyFit(Policy(table, tab.prompt_dist), logits.detach(), torch.stack(losses), 2 * int(pairs))


def sampled_score_function_gradients(
    world: WorldLike,
    logits: Tensor,
    objective: str = "rkl",
    *,
    reward: Tensor | None = None,
    beta: float = 0.0,
    estimator: str = "reinforce",
    kl_estimator: str = "k1",
    kl_placement: str = "reward",
    entropy_placement: str = "reward",
    samples: int = 1,
    replicates: int = 1000,
    seed: int = 0,
) -> Tensor:
    """`replicates` independent one-step score-function gradients at `logits` (no replicate dim), [R, |θ|].

    Used to measure the sampled-gradient mean and variance against their exact values.
    """
    tab = tabular_view(world)
    _, entropy_coef = _score_function_objective(objective, tab.gamma)
    reward = _check_reward(reward, tab)
    leaf = logits.detach().expand(replicates, *logits.shape).clone().requires_grad_(True)
    policy = make_parametrization(world, leaf)
    prompts = torch.arange(tab.n_prompts, device=tab.device).expand(replicates, -1)
    ids = policy.sample(prompts, samples, make_generator(seed, tab.device))
    logp = policy.log_prob(prompts, ids)
    ref = tab.reference.logp
    options = dict(entropy_coef=entropy_coef, beta=beta, kl_placement=kl_placement, entropy_placement=entropy_placement)
    per_prompt = score_function_surrogate(
        logp, _gather(ref, ids), _gather(reward, ids), estimator=estimator, kl_kind=kl_estimator, **options
    )
    if "exact" in (kl_placement, entropy_placement):
        per_prompt = per_prompt + _exact_terms(policy.table(), ref, **options)
    (gradient,) = torch.autograd.grad((per_prompt * tab.prompt_dist).sum(), leaf)
    return gradient.reshape(replicates, -1)


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
    **params,
) -> Tensor:
    """`replicates` independent one-step gradients of `onpolicy_pair_fit` at `logits` (no replicate dim), [R, |θ|].

    The same step as the fit's; its exact mean is `gradient_check.expected_pair_gradient`.
    """
    tab = tabular_view(world)
    obj = _pair_objective(objective)
    beta = check_positive(beta, "beta", allow_zero=True)
    resolved = obj.resolve_params(params)
    reward = _check_reward(reward, tab) if (obj.needs_reward or reward is not None) else None
    leaf = logits.detach().expand(replicates, *logits.shape).clone().requires_grad_(True)
    policy = make_parametrization(world, leaf)
    prompts = torch.arange(tab.n_prompts, device=tab.device).expand(replicates, -1)
    matrix = preference_matrix(tab) if obj.data == "preferences" and tab.law is not None else None
    generator = make_generator(seed, tab.device)
    loss = _pair_step_loss(obj, policy, tab, prompts, pairs, generator, reward, matrix, resolved, beta)
    (gradient,) = torch.autograd.grad(loss.sum(), leaf)
    return gradient.reshape(replicates, -1)


# ------------------------------------------------------------------ exact online DPO under a pair sampler

DPO_SAMPLERS = ("uniform", "onpolicy", "mix_reward", "mix_policy")


def _tilted_mixture(tilt: Tensor) -> tuple[Tensor, Tensor]:
    """The mixed sampler of `sampler_pair_weights` for a tilt t [X, A]: (p [X, A, A], alpha [X])."""
    A = tilt.shape[-1]
    plus, minus = torch.log_softmax(tilt, dim=-1), torch.log_softmax(-tilt, dim=-1)
    # alpha = A² / (A² + Z₊Z₋), Z± = Σ_a e^{±t(a)}, in log space.
    log_z = torch.logsumexp(tilt, dim=-1) + torch.logsumexp(-tilt, dim=-1)
    alpha = torch.sigmoid(2.0 * torch.log(torch.tensor(float(A), dtype=tilt.dtype)) - log_z)
    tilted = (plus[..., :, None] + minus[..., None, :]).exp()
    return alpha[..., None, None] / A**2 + (1.0 - alpha[..., None, None]) * tilted, alpha


def sampler_pair_weights(sampler: str, logp: Tensor, world) -> tuple[Tensor, Tensor | None]:
    """The law p(a, b | x) of the ordered pair (first a, second b) an online DPO sampler draws, [X, A, A].

    * "uniform": a, b i.i.d. uniform over the responses (the paper's DPO-Unif);
    * "onpolicy": a, b i.i.d. from the current policy π_t;
    * "mix_reward", "mix_policy": the mixture α U ⊗ U + (1 − α) π₊ ⊗ π₋ of the uniform pair with a
      tilted pair, π₊ ∝ e^{t}, π₋ ∝ e^{−t}, for a tilt t: the true reward r* = γ ln π* ("mix_reward")
      or the current implicit reward h_t = γ ln(π_t/π0) ("mix_policy"), and α = A²/(A² + Z₊Z₋),
      Z± = Σ_a e^{±t(a)}.

    **Decision** (the exact formulas of Shi, Zhou, Du 2024, arXiv 2409.19605, "DPO-Mix-R" and
    "DPO-Mix-P", were not available here): the mixed samplers are defined by the property their
    quadratic convergence rests on — the symmetrized pair weight is then
    p(a, b) + p(b, a) = (α/A²)(2 + e^{Δt} + e^{−Δt}) = (α/A²) / σ'(Δt), Δt = t(a) − t(b), which
    cancels the curvature σ'(Δr) of the logistic loss, so that the exact gradient step of
    `exact_online_dpo` is a Newton step at the optimum; α is the one mixing weight that gives exactly
    that.  Returns (p, α [X]) — α None for the unmixed samplers.
    """
    _check_choice(sampler, DPO_SAMPLERS, "sampler")
    A = logp.shape[-1]
    if sampler == "uniform":
        return torch.full((*logp.shape, A), 1.0 / A**2, dtype=logp.dtype, device=logp.device), None
    if sampler == "onpolicy":
        probs = logp.detach().exp()
        return probs[..., :, None] * probs[..., None, :], None
    if sampler == "mix_reward":
        tilt = world.true_reward
    else:
        tilt = world.gamma * (logp.detach() - world.reference.logp)
    if not torch.isfinite(tilt).all():
        raise ValueError(f"sampler {sampler!r} needs a finite tilt: pi* and pi0 need full support")
    return _tilted_mixture(tilt)


def _dpo_population_loss(logp: Tensor, pair_law: Tensor, world) -> Tensor:
    """Σ_ab p(a, b)[P(a ≻ b) ℓ(a, b) + P(b ≻ a) ℓ(b, a)] per prompt, ℓ = DPO's pair loss (eq. 6), [X]."""
    from synthalign.objectives.paper import dpo_loss

    ref = world.reference.logp
    first_wins = preference_matrix(world)

    def loss(chosen: Tensor, rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor) -> Tensor:
        return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, gamma=world.gamma, reduction="none")

    a, b = logp[..., :, None].expand(pair_law.shape), logp[..., None, :].expand(pair_law.shape)
    ref_a, ref_b = ref[..., :, None].expand(pair_law.shape), ref[..., None, :].expand(pair_law.shape)
    per_pair = first_wins * loss(a, b, ref_a, ref_b) + (1.0 - first_wins) * loss(b, a, ref_b, ref_a)
    return (pair_law * per_pair).sum(dim=(-1, -2))


def dpo_linear_rate(world: WorldLike, sampler: str) -> tuple[Tensor, Tensor]:
    """(optimal constant step η [X], linear contraction ρ [X]) of exact online DPO at its limit.

    Near the limit π_lim ∝ π0 π* the error e = h − r* (h = γ ln π/π0, centred per prompt) follows
    e ← (I − η γ² L) e, L the Laplacian of the weights W_ab = (p(a, b) + p(b, a)) σ'(Δr*_ab) of the
    sampler's pair law at π_lim; on centred vectors its eigenvalues are those of L but the 0.  The best
    constant step is η = 2/(γ²(λ₂ + λ_max)), contracting by ρ = (λ_max − λ₂)/(λ_max + λ₂) per step.
    For the mixed samplers W is constant (α/A²), λ₂ = λ_max and ρ = 0: faster than linear.
    """
    limit = _dpo_limit(world)
    pair_law, _ = sampler_pair_weights(sampler, limit, world)
    r = world.true_reward
    delta = r[..., :, None] - r[..., None, :]
    weights = (pair_law + pair_law.transpose(-1, -2)) * torch.sigmoid(delta) * torch.sigmoid(-delta)
    laplacian = torch.diag_embed(weights.sum(-1)) - weights
    eigenvalues = torch.linalg.eigvalsh(laplacian)  # ascending; the first is 0 (constant vector)
    low, high = eigenvalues[..., 1], eigenvalues[..., -1]
    return 2.0 / (world.gamma**2 * (low + high)), (high - low) / (high + low)


def _dpo_limit(world) -> Tensor:
    """DPO's population minimizer under any full-support pair law of the BT world: π ∝ π0 π*."""
    if world.law is not None and type(world.law).__name__ != "BradleyTerry":
        raise ValueError("exact_online_dpo compares samplers on spec §1's Bradley–Terry law (world.law None)")
    return torch.log_softmax(world.reference.logp + world.target.logp, dim=-1)


@dataclasses.dataclass(frozen=True)
class SamplerRun:
    """Exact online DPO under one pair sampler.

    Attributes:
      sampler: one of `DPO_SAMPLERS`.
      logp: iterates π_0 … π_T, [T+1, X, A].
      error: max over prompts and responses of |centred γ ln(π_t/π_lim)|, π_lim ∝ π0 π*, [T+1].
      eta: the step per prompt of the linear samplers ([X]), None for the mixed ones (Newton step).
      rate: the predicted linear contraction ρ per prompt (`dpo_linear_rate`), [X].
    """

    sampler: str
    logp: Tensor
    error: Tensor
    eta: Tensor | None
    rate: Tensor


def exact_online_dpo(world: WorldLike, sampler: str, *, iterations: int, start: Tensor | None = None) -> SamplerRun:
    """Gradient descent in the logits on each prompt's exact online DPO loss under `sampler`'s pair law.

    Each step recomputes the pair law at π_t (held fixed within the step: the semi-gradient of
    `gradient_check`, summed exactly instead of sampled), labels from the world's BT law, and steps
    θ_x ← θ_x − η_x ∇_{θ_x} L_x per prompt (the problem separates over x; the paper analyses one).
    Steps: the linear samplers use their best constant step at the limit (`dpo_linear_rate`); the
    mixed samplers use η = A/(γ² α_t), the Newton step of their curvature-cancelling weights
    (`sampler_pair_weights`).  `start`: initial log-probabilities (default π0).
    """
    if not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    limit = _dpo_limit(world)
    eta, rate = dpo_linear_rate(world, sampler)
    mixed = sampler.startswith("mix")
    theta = (world.reference.logp if start is None else torch.as_tensor(start, dtype=world.dtype)).clone()
    A = theta.shape[-1]
    iterates = [torch.log_softmax(theta, dim=-1)]
    for _ in range(iterations):
        leaf = theta.detach().requires_grad_(True)
        logp = torch.log_softmax(leaf, dim=-1)
        pair_law, alpha = sampler_pair_weights(sampler, logp, world)
        (grad,) = torch.autograd.grad(_dpo_population_loss(logp, pair_law, world).sum(), leaf)
        step = A / (world.gamma**2 * alpha) if mixed else eta
        theta = theta - step[..., None] * grad
        iterates.append(torch.log_softmax(theta, dim=-1))
    stacked = torch.stack(iterates)
    gap = stacked - limit
    error = world.gamma * (gap - gap.mean(-1, keepdim=True)).abs().amax(dim=(-1, -2))
    return SamplerRun(sampler, stacked, error, None if mixed else eta, rate)
