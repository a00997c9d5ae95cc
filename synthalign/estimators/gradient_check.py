"""Exact expected values of stochastic gradients on enumerable spaces, and which gradient each one equals.

On a finite response set the expectation of a score-function gradient is a finite sum,
so it is computed exactly (never by sampling): with sg = stop-gradient,

    REINFORCE:  E[g] = ∇_θ Σ_x D(x) Σ_a sg(π(a|x)) [ −sg(r(a)) ln π_θ(a|x) + ℓ_θ(a) ]
    RLOO:       E[g] = ∇_θ Σ_x D(x) Σ_{a,b} sg(π(a)π(b)) [ −sg(r(a) − r(b)) ln π_θ(a|x) ] + (the ℓ terms)

(RLOO with m samples is (1/(m(m−1))) Σ_{i≠j} of the pair term, so its expectation is the
pair sum whatever m is.)  `expected_gradient` returns it; `candidate_gradients` returns
the exact gradients of the objectives it might equal — eq. 15 / eq. 1 with KL(π‖π0), with
KL(π0‖π), with no KL term, … — and `gradient_law` says which one it matches.  The
library's declared laws (`KL_GRADIENT_LAWS`, `ENTROPY_GRADIENT_LAWS`, spec §6 item 14)
are what the tests verify row by row:

    k1 in the loss: E[∇k1] = 0          k1 in the reward: ∇KL(π‖π0)
    k2 in the loss: ∇KL(π‖π0)           k2 in the reward: ∇½E_π[ln²(π/π0)] − ∇KL(π‖π0)
    k3 in the loss: ∇KL(π0‖π)           k3 in the reward: ∇KL(π‖π0) − ∇KL(π0‖π)
    entropy −ln π in the reward: ∇(−H);  ln π in the loss: 0.

The two on-policy pair estimators of `onpolicy_pair_fit` (distillation with pairs from π_t, eq. 11/12
with μ = π_t, Algorithm 1; online DPO, eq. 6 on pairs from π_t labelled by the true law P) draw
(a, b) ~ π_t ⊗ π_t without a gradient through the draw, so, with ℓ̄_θ(a, b) the label-averaged loss
(ℓ_θ(a, b) in draw order for distillation; P(a ≻ b) ℓ_θ(a, b) + P(b ≻ a) ℓ_θ(b, a) for online DPO),

    E[g] = Σ_x D(x) Σ_{a,b} sg(π(a|x) π(b|x)) ∇_θ ℓ̄_θ(a, b) + β ∇KL(π‖π0)
         = ∇_θ L(π_θ; μ) |_{μ = sg π_t}                                  (the semi-gradient),

the gradient of the population objective L(π; μ) (eq. 12 / eq. 6 with pairs from μ) with its pair
law *held* at π_t.  The objective whose pair law moves with π, F(θ) = L(π_θ; π_θ), has

    ∇F = ∇_θ L(π_θ; sg π_t) + Σ_x D(x) Σ_{a,b} ∇_θ[π(a|x) π(b|x)] · sg ℓ̄(a, b),

the second term (the score-function term the sampler drops) nonzero in general.  So the iteration's
fixed points are the stationary points of L(·; μ) at μ = π.  Where the minimizer of L(·; μ) does not
depend on the full-support μ, it is the on-policy target: DPO's π ∝ π0 π* (at β = 0), where E[g] = 0
but ∇F ≠ 0 (DPO's pair loss is not 0 per cell); distillation's π_R̂ (β = 0), where both vanish because
its pair term KL(Bern(p̃) ‖ Bern(p_π)) is 0 on every cell there.  `pair_gradient_law`
computes E[g] by summing over every ordered draw (a, b) and both labels, and compares it with both
candidates (`PAIR_GRADIENT_LAWS`); the declared law is the semi-gradient.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthalign.estimators.onpolicy import (
    _pair_objective,
    _pair_problem,
    _score_function_objective,
    _score_function_problem,
    make_parametrization,
    pair_inputs,
    tabular_view,
)
from synthalign.estimators.score_function import (
    GradientConfig,
    GradientOptions,
    gradient_config,
    loss_terms,
    sample_reward,
)
from synthalign.evaluate import kl_regularizer, make_context, population_loss, weighted_cell_sum
from synthalign.metrics import entropy_per_prompt, kl_per_prompt
from synthalign.registry.protocol import Objective, get_objective
from synthalign.worlds.policy import Policy
from synthalign.worlds.preferences import preference_matrix

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from synthalign._types import WorldLike

__all__ = [
    "KL_GRADIENT_LAWS",
    "ENTROPY_GRADIENT_LAWS",
    "expected_gradient",
    "candidate_gradients",
    "GradientRow",
    "gradient_law",
    "gradient_table",
    "exact_gradient_variance",
    "PAIR_GRADIENT_LAWS",
    "expected_pair_gradient",
    "pair_cell_weights",
    "pair_candidate_gradients",
    "PairGradientRow",
    "pair_gradient_law",
]

KL_GRADIENT_LAWS = {
    ("k1", "loss"): "0",
    ("k2", "loss"): "∇KL(π‖π0)",
    ("k3", "loss"): "∇KL(π0‖π)",
    ("k1", "reward"): "∇KL(π‖π0)",
    ("k2", "reward"): "∇½E[ln²(π/π0)] − ∇KL(π‖π0)",
    ("k3", "reward"): "∇KL(π‖π0) − ∇KL(π0‖π)",
    ("k1", "exact"): "∇KL(π‖π0)",
    ("k2", "exact"): "∇KL(π‖π0)",
    ("k3", "exact"): "∇KL(π‖π0)",
}
ENTROPY_GRADIENT_LAWS = {"reward": "∇(−H)", "loss": "0", "exact": "∇(−H)"}

# The exact expectations do not depend on the samples per prompt; the variance's default is one sample.
_EXACT = GradientConfig(estimator="reinforce", samples=1)


def _leaf_table(world: WorldLike, logits: Tensor) -> tuple[Tensor, Tensor]:
    """A fresh leaf copy of `logits` (one parameter set) and the policy table [X, N] it parametrizes."""
    leaf = logits.detach().clone().requires_grad_(True)
    return leaf, make_parametrization(world, leaf).table()


def _compare(expected: Tensor, candidates: dict, tol: float) -> tuple[dict, tuple]:
    """(‖E[g] − c‖ / ‖c‖ for every candidate gradient c, the candidates within `tol`)."""
    errors = {key: ((expected - c).norm() / c.norm().clamp_min(1e-300)).item() for key, c in candidates.items()}
    return errors, tuple(key for key, error in errors.items() if error < tol)


def _kl_terms(table: Tensor, ref: Tensor, beta: float) -> dict[str, Tensor]:
    """Per-prompt values of beta times the candidate KL terms, differentiable in `table` [.., X, N].

    The true one, beta · KL(π‖π0), is the objective's own regularizer (`evaluate.kl_regularizer`).
    """
    forward = kl_regularizer(table, ref, beta)
    reverse = beta * kl_per_prompt(ref.expand_as(table), table)
    log_ratio = torch.where(table > -torch.inf, table - ref, torch.zeros_like(table))
    half_square = beta * 0.5 * (table.exp() * log_ratio.square()).sum(dim=-1)
    return {
        "∇KL(π‖π0)": forward,
        "∇KL(π0‖π)": reverse,
        "0": torch.zeros_like(forward),
        "∇KL(π‖π0) − ∇KL(π0‖π)": forward - reverse,
        "∇½E[ln²(π/π0)] − ∇KL(π‖π0)": half_square - forward,
    }


def expected_gradient(
    world: WorldLike, logits: Tensor, objective: str = "rkl", **options: Unpack[GradientOptions]
) -> Tensor:
    """The exact expected score-function gradient at `logits` (one parameter set), flattened, [|θ|].

    Formula: module docstring; r(a) and ℓ(a) are `sample_reward` / `loss_terms`.  `options`: `reward`,
    `config` and the fields of `GradientConfig` (`GradientOptions`; default REINFORCE, β = 0).
    """
    problem = _score_function_problem(world, objective, options, _EXACT)
    tab, reward, terms = problem.tab, problem.reward, problem.terms
    leaf, table = _leaf_table(world, logits)  # table [X, N]
    ref = tab.reference.logp
    prob = table.detach().exp()
    r = sample_reward(table, ref, reward, **terms)
    safe_table = torch.where(prob > 0, table, torch.zeros_like(table))
    if problem.config.estimator == "reinforce":
        score_term = -(prob * r * safe_table).sum(dim=-1)
    else:
        # RLOO: Σ_{a,b} π(a)π(b)(r(a) − r(b)) ln π(a), the pair sum, factored exactly over b.
        mean_r = (prob * torch.where(prob > 0, r, torch.zeros_like(r))).sum(dim=-1, keepdim=True)
        score_term = -(prob * (r - mean_r) * safe_table).sum(dim=-1)
    pathwise = loss_terms(safe_table, ref, **terms)
    per_prompt = score_term + (prob * torch.where(prob > 0, pathwise, torch.zeros_like(pathwise))).sum(dim=-1)
    per_prompt = per_prompt + problem.exact_terms(table)
    (gradient,) = torch.autograd.grad((per_prompt * tab.prompt_dist).sum(), leaf)
    return gradient.reshape(-1)


def candidate_gradients(
    world: WorldLike, logits: Tensor, objective: str = "rkl", *, reward: Tensor | None = None, beta: float = 0.0
) -> dict[tuple[str, str], Tensor]:
    """Exact ∇ of −E_π R̂ − c·[H term] + β·[KL term] for every candidate pair (KL law, entropy law).

    The pair ("∇KL(π‖π0)", "∇(−H)") is the true gradient of eq. 15 (eq. 1 for RLHF, c = 0).
    """
    problem = _score_function_problem(world, objective, {"reward": reward, "beta": beta}, _EXACT)
    tab, reward, entropy_coef, beta = problem.tab, problem.reward, problem.entropy_coef, problem.config.beta
    out = {}
    entropy_laws = ("∇(−H)", "0") if entropy_coef else ("∇(−H)",)
    for kl_law in _kl_terms(tab.reference.logp, tab.reference.logp, beta):
        for entropy_law in entropy_laws:
            leaf, table = _leaf_table(world, logits)
            prob = table.exp()
            per_prompt = -(prob * torch.where(prob > 0, reward, torch.zeros_like(reward))).sum(dim=-1)
            if entropy_law == "∇(−H)":
                per_prompt = per_prompt - entropy_coef * entropy_per_prompt(table)
            if beta:
                per_prompt = per_prompt + _kl_terms(table, tab.reference.logp, beta)[kl_law]
            (gradient,) = torch.autograd.grad((per_prompt * tab.prompt_dist).sum(), leaf)
            out[(kl_law, entropy_law)] = gradient.reshape(-1)
    return out


class _Verdict:
    """What a row of the estimator table concludes: whether the declared law is among the matched ones."""

    declared: object
    matched: tuple

    @property
    def as_declared(self) -> bool:
        return self.declared in self.matched


@dataclasses.dataclass(frozen=True)
class GradientRow(_Verdict):
    """One row of the estimator table.

    Attributes:
      estimator, kl_estimator, kl_placement, entropy_placement: the configuration.
      declared: the (KL law, entropy law) the library declares for it.
      matched: the candidate(s) the exact expected gradient equals (relative error < tol).
      relative_errors: ‖E[g] − ∇J_c‖ / ‖∇J_c‖ for every candidate c.
      true_relative_error, true_cosine: against the true gradient of the objective.
    """

    estimator: str
    kl_estimator: str
    kl_placement: str
    entropy_placement: str
    declared: tuple[str, str]
    matched: tuple[tuple[str, str], ...]
    relative_errors: dict
    true_relative_error: float
    true_cosine: float


def gradient_law(
    world: WorldLike, logits: Tensor, objective: str = "rkl", *, tol: float = 1e-9, **options: Unpack[GradientOptions]
) -> GradientRow:
    """Which exact gradient the expected stochastic gradient equals, at `logits` (spec §6 item 14).

    `options` as `expected_gradient`'s, but β defaults to 1.
    """
    config = gradient_config(options, dataclasses.replace(_EXACT, beta=1.0))
    reward = options.get("reward")
    expected = expected_gradient(world, logits, objective, reward=reward, config=config)
    candidates = candidate_gradients(world, logits, objective, reward=reward, beta=config.beta)
    errors, matched = _compare(expected, candidates, tol)
    true = candidates[("∇KL(π‖π0)", "∇(−H)")]
    has_entropy = _score_function_objective(objective, 1.0)[1]
    entropy_law = ENTROPY_GRADIENT_LAWS[config.entropy_placement] if has_entropy else "∇(−H)"
    return GradientRow(
        estimator=config.estimator,
        kl_estimator=config.kl_estimator,
        kl_placement=config.kl_placement,
        entropy_placement=config.entropy_placement,
        declared=(KL_GRADIENT_LAWS[(config.kl_estimator, config.kl_placement)], entropy_law),
        matched=matched,
        relative_errors=errors,
        true_relative_error=errors[("∇KL(π‖π0)", "∇(−H)")],
        true_cosine=torch.nn.functional.cosine_similarity(expected, true, dim=0).item(),
    )


def gradient_table(
    world: WorldLike,
    logits: Tensor,
    objective: str | Objective = "rkl",
    *,
    reward: Tensor | None = None,
    beta: float = 1.0,
    **params: float,
) -> list[GradientRow] | list[PairGradientRow]:
    """Every estimator × KL estimator × KL placement × entropy placement, as `GradientRow`s.

    For a pair objective (trained on pairs from π_t by `onpolicy_pair_fit`: "distillation",
    "dpo" as online DPO, …) there is one estimator and no placement: one `PairGradientRow`.
    """
    if get_objective(objective).kind == "pair":
        return [pair_gradient_law(world, logits, objective, reward=reward, beta=beta, **params)]
    entropy_placements = ("reward", "loss", "exact") if objective == "rkl" else ("reward",)
    rows = []
    for estimator in ("reinforce", "rloo"):
        for kind in ("k1", "k2", "k3"):
            for placement in ("reward", "loss"):
                for entropy_placement in entropy_placements:
                    rows.append(
                        gradient_law(
                            world,
                            logits,
                            objective,
                            reward=reward,
                            beta=beta,
                            estimator=estimator,
                            kl_estimator=kind,
                            kl_placement=placement,
                            entropy_placement=entropy_placement,
                        )
                    )
    return rows


def exact_gradient_variance(
    world: WorldLike, logits: Tensor, objective: str = "rkl", **options: Unpack[GradientOptions]
) -> Tensor:
    """tr Cov of the REINFORCE gradient with `samples` draws per prompt (prompts weighed by D), exactly.

        tr Cov = Σ_x D(x)² (E_a‖∇s_x(a)‖² − ‖E_a ∇s_x(a)‖²) / m,

    with s_x(a) = −sg(r(a)) ln π(a|x) + ℓ(a) the one-sample surrogate; the per-response
    gradients ∇s_x(a) are one Jacobian over the finite space (no sampling).  `options` as
    `expected_gradient`'s (default 1 sample); the estimator must be REINFORCE.
    """
    problem = _score_function_problem(world, objective, options, _EXACT)
    tab, config, terms = problem.tab, problem.config, problem.terms
    if config.needs_table:
        raise ValueError("exact_gradient_variance covers sampled placements ('reward', 'loss') only")
    if config.estimator != "reinforce":
        raise ValueError(f"exact_gradient_variance covers estimator 'reinforce' only, got {config.estimator!r}")
    ref = tab.reference.logp
    base = logits.detach()
    prob = make_parametrization(world, base).table().exp()
    r = sample_reward(torch.log(prob), ref, problem.reward, **terms)

    def per_response(theta: Tensor) -> Tensor:
        table = make_parametrization(world, theta).table()
        return -r * table + loss_terms(table, ref, **terms)  # [X, N]

    jacobian = torch.autograd.functional.jacobian(per_response, base, vectorize=True)  # [X, N, *θ]
    jacobian = torch.where(prob.reshape(*prob.shape, *([1] * base.dim())) > 0, jacobian, torch.zeros_like(jacobian))
    jacobian = jacobian.reshape(*prob.shape, -1)
    mean = (prob.unsqueeze(-1) * jacobian).sum(dim=1)  # [X, |θ|]
    second = (prob * jacobian.square().sum(dim=-1)).sum(dim=1)  # [X]
    per_prompt = second - mean.square().sum(dim=-1)
    return (tab.prompt_dist.square() * per_prompt).sum() / config.samples


PAIR_GRADIENT_LAWS = {
    "semi": "∇L(π; μ = sg π_t)",
    "moving": "∇L(π; μ = π)",
}
"""The two candidate gradients of an on-policy pair estimator (module docstring); "semi" is declared."""


def _pair_setup(world: WorldLike, logits: Tensor, objective, reward, beta, params):
    problem = _pair_problem(world, objective, reward, beta, params)
    leaf, table = _leaf_table(world, logits)  # table [X, N]
    return problem.tab, problem.obj, problem.params, problem.reward, problem.beta, leaf, table


def expected_pair_gradient(
    world: WorldLike,
    logits: Tensor,
    objective: str | Objective = "distillation",
    *,
    reward: Tensor | None = None,
    beta: float = 0.0,
    **params: float,
) -> Tensor:
    """The exact expected gradient of one `onpolicy_pair_fit` step at `logits`, flattened, [|θ|].

    Sums the per-pair gradient over every ordered draw (first a, second b) ~ π_t ⊗ π_t and, for a
    labelled objective, over both labels (first wins with P(a ≻ b), the world's law), exactly as the
    sampler forms them; plus β ∇KL(π‖π0) (exact on the table).  Prompts weighed by D.
    """
    tab, obj, resolved, reward, beta, leaf, table = _pair_setup(world, logits, objective, reward, beta, params)
    prob = table.detach().exp()
    draw = prob[:, :, None] * prob[:, None, :]  # [X, N, N]: first a, second b
    shape = draw.shape
    ref = tab.reference.logp

    def loss(chosen_first: bool) -> Tensor:
        def views(t):
            if t is None:
                return None, None
            a, b = t[:, :, None].expand(shape), t[:, None, :].expand(shape)
            return (a, b) if chosen_first else (b, a)

        logp_c, logp_r = views(table)
        ref_c, ref_r = views(ref)
        reward_c, reward_r = views(reward)
        return obj.fn(**pair_inputs(obj, logp_c, logp_r, ref_c, ref_r, reward_c, reward_r, tab.gamma), **resolved)

    if obj.data == "preferences":
        first_wins = preference_matrix(tab)  # P(a ≻ b | x), [X, N, N]
        per_draw = first_wins * loss(True) + (1.0 - first_wins) * loss(False)
    else:
        per_draw = loss(True)
    per_prompt = (draw * per_draw).sum(dim=(-1, -2))
    if beta:
        per_prompt = per_prompt + kl_regularizer(table, ref, beta)
    (gradient,) = torch.autograd.grad((per_prompt * tab.prompt_dist).sum(), leaf)
    return gradient.reshape(-1)


def pair_cell_weights(world: WorldLike, policy_logp: Tensor, objective: str | Objective) -> Tensor:
    """The population weights of one pair with both responses from π (rows [X, N] of log-probs), [X, N, N].

    Labelled: 2 D(x) π(a) π(b) P(a ≻ b | x) on (a⁺ = a, a⁻ = b) (`population_preferences`' law with
    μ = π); unlabelled: D(x) π(a) π(b) (`population_pairs`').  Differentiable in `policy_logp`.
    """
    tab = tabular_view(world)
    obj = _pair_objective(objective)
    prob = policy_logp.exp()
    joint = tab.prompt_dist[:, None, None] * prob[:, :, None] * prob[:, None, :]
    if obj.data == "preferences":
        return 2.0 * joint * preference_matrix(tab)
    return joint


def pair_candidate_gradients(
    world: WorldLike,
    logits: Tensor,
    objective: str | Objective = "distillation",
    *,
    reward: Tensor | None = None,
    beta: float = 0.0,
    **params: float,
) -> dict[str, Tensor]:
    """Exact ∇ of the two candidates of `PAIR_GRADIENT_LAWS`, flattened, by the library's population losses.

    "semi": ∇_θ `population_loss` with the pair law held at π_t (μ = π_t for labelled pairs,
    `pairs_from` = π_t for unlabelled); "moving": that plus the gradient of the same weighted cell sum
    (`evaluate.weighted_cell_sum`) with the loss held and the weights `pair_cell_weights(π_θ)` moving.
    """
    tab, obj, resolved, reward, beta, leaf, table = _pair_setup(world, logits, objective, reward, beta, params)
    current = Policy(table.detach(), tab.prompt_dist)
    held = tab.replace(behavior=current)
    semi_loss = population_loss(
        obj,
        held,
        Policy(table, tab.prompt_dist),
        beta=beta,
        reward=reward,
        pairs_from=current if obj.data == "pairs" else None,
        **resolved,
    )
    (semi,) = torch.autograd.grad(semi_loss, leaf)
    leaf_moving, moving_table = _leaf_table(world, logits)
    ctx = make_context(obj, tab, reward, resolved)
    weights = pair_cell_weights(world, moving_table, obj)
    # The weights sum to 1 at every θ, so the normalization of the population loss is constant.
    score_term = weighted_cell_sum(obj, table.detach(), ctx, weights).sum()
    (score,) = torch.autograd.grad(score_term, leaf_moving)
    return {"semi": semi.reshape(-1), "moving": (semi + score).reshape(-1)}


@dataclasses.dataclass(frozen=True)
class PairGradientRow(_Verdict):
    """One on-policy pair estimator's row of the estimator table.

    Attributes:
      objective: the pair objective trained on pairs from π_t.
      declared: the key of `PAIR_GRADIENT_LAWS` the library declares ("semi").
      matched: the candidates the exact expected gradient equals (relative error < tol).
      relative_errors: ‖E[g] − ∇_c‖ / ‖∇_c‖ for c in ("semi", "moving").
      moving_cosine: cosine between E[g] and ∇ of the objective whose pair law moves with π.
    """

    objective: str
    declared: str
    matched: tuple[str, ...]
    relative_errors: dict
    moving_cosine: float


def pair_gradient_law(
    world: WorldLike,
    logits: Tensor,
    objective: str | Objective = "distillation",
    *,
    reward: Tensor | None = None,
    beta: float = 0.0,
    tol: float = 1e-9,
    **params: float,
) -> PairGradientRow:
    """Which exact gradient the expected on-policy pair gradient equals, at `logits` (module docstring)."""
    expected = expected_pair_gradient(world, logits, objective, reward=reward, beta=beta, **params)
    candidates = pair_candidate_gradients(world, logits, objective, reward=reward, beta=beta, **params)
    errors, matched = _compare(expected, candidates, tol)
    return PairGradientRow(
        objective=get_objective(objective).name,
        declared="semi",
        matched=matched,
        relative_errors=errors,
        moving_cosine=torch.nn.functional.cosine_similarity(expected, candidates["moving"], dim=0).item(),
    )
