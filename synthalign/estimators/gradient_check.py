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
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from synthalign.estimators.onpolicy import (
    _check_reward,
    _exact_terms,
    _score_function_objective,
    loss_terms,
    make_parametrization,
    sample_reward,
    tabular_view,
)
from synthalign.metrics import entropy_per_prompt, kl_per_prompt

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


def _kl_terms(table: Tensor, ref: Tensor) -> dict[str, Tensor]:
    """Per-prompt values of the candidate KL terms, differentiable in `table` [.., X, N]."""
    forward = kl_per_prompt(table, ref)
    reverse = kl_per_prompt(ref.expand_as(table), table)
    log_ratio = torch.where(table > -torch.inf, table - ref, torch.zeros_like(table))
    half_square = 0.5 * (table.exp() * log_ratio.square()).sum(dim=-1)
    return {
        "∇KL(π‖π0)": forward,
        "∇KL(π0‖π)": reverse,
        "0": torch.zeros_like(forward),
        "∇KL(π‖π0) − ∇KL(π0‖π)": forward - reverse,
        "∇½E[ln²(π/π0)] − ∇KL(π‖π0)": half_square - forward,
    }


def expected_gradient(
    world,
    logits: Tensor,
    objective: str = "rkl",
    *,
    reward: Tensor | None = None,
    beta: float = 0.0,
    estimator: str = "reinforce",
    kl_estimator: str = "k1",
    kl_placement: str = "reward",
    entropy_placement: str = "reward",
) -> Tensor:
    """The exact expected score-function gradient at `logits` (one parameter set), flattened, [|θ|].

    Formula: module docstring; r(a) and ℓ(a) are `onpolicy.sample_reward` / `loss_terms`.
    """
    tab = tabular_view(world)
    _, entropy_coef = _score_function_objective(objective, tab.gamma)
    reward = _check_reward(reward, tab)
    leaf = logits.detach().clone().requires_grad_(True)
    table = make_parametrization(world, leaf).table()  # [X, N]
    ref = tab.reference.logp
    options = dict(entropy_coef=entropy_coef, beta=beta, kl_placement=kl_placement, entropy_placement=entropy_placement)
    prob = table.detach().exp()
    r = sample_reward(table, ref, reward, kl_kind=kl_estimator, **options)
    safe_table = torch.where(prob > 0, table, torch.zeros_like(table))
    if estimator == "reinforce":
        score_term = -(prob * r * safe_table).sum(dim=-1)
    elif estimator == "rloo":
        # Σ_{a,b} π(a)π(b)(r(a) − r(b)) ln π(a): the pair sum, factored exactly over b.
        mean_r = (prob * torch.where(prob > 0, r, torch.zeros_like(r))).sum(dim=-1, keepdim=True)
        score_term = -(prob * (r - mean_r) * safe_table).sum(dim=-1)
    else:
        raise ValueError(f"estimator must be 'reinforce' or 'rloo', got {estimator!r}")
    pathwise = loss_terms(safe_table, ref, kl_kind=kl_estimator, **options)
    per_prompt = score_term + (prob * torch.where(prob > 0, pathwise, torch.zeros_like(pathwise))).sum(dim=-1)
    per_prompt = per_prompt + _exact_terms(table, ref, **options)
    (gradient,) = torch.autograd.grad((per_prompt * tab.prompt_dist).sum(), leaf)
    return gradient.reshape(-1)


def candidate_gradients(
    world, logits: Tensor, objective: str = "rkl", *, reward: Tensor | None = None, beta: float = 0.0
) -> dict[tuple[str, str], Tensor]:
    """Exact ∇ of −E_π R̂ − c·[H term] + β·[KL term] for every candidate pair (KL law, entropy law).

    The pair ("∇KL(π‖π0)", "∇(−H)") is the true gradient of eq. 15 (eq. 1 for RLHF, c = 0).
    """
    tab = tabular_view(world)
    _, entropy_coef = _score_function_objective(objective, tab.gamma)
    reward = _check_reward(reward, tab)
    out = {}
    entropy_laws = ("∇(−H)", "0") if entropy_coef else ("∇(−H)",)
    for kl_law in _kl_terms(tab.reference.logp, tab.reference.logp):
        for entropy_law in entropy_laws:
            leaf = logits.detach().clone().requires_grad_(True)
            table = make_parametrization(world, leaf).table()
            prob = table.exp()
            per_prompt = -(prob * torch.where(prob > 0, reward, torch.zeros_like(reward))).sum(dim=-1)
            if entropy_law == "∇(−H)":
                per_prompt = per_prompt - entropy_coef * entropy_per_prompt(table)
            if beta:
                per_prompt = per_prompt + beta * _kl_terms(table, tab.reference.logp)[kl_law]
            (gradient,) = torch.autograd.grad((per_prompt * tab.prompt_dist).sum(), leaf)
            out[(kl_law, entropy_law)] = gradient.reshape(-1)
    return out


@dataclasses.dataclass(frozen=True)
class GradientRow:
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

    @property
    def as_declared(self) -> bool:
        return self.declared in self.matched


def gradient_law(
    world,
    logits: Tensor,
    objective: str = "rkl",
    *,
    reward: Tensor | None = None,
    beta: float = 1.0,
    estimator: str = "reinforce",
    kl_estimator: str = "k1",
    kl_placement: str = "reward",
    entropy_placement: str = "reward",
    tol: float = 1e-9,
) -> GradientRow:
    """Which exact gradient the expected stochastic gradient equals, at `logits` (spec §6 item 14)."""
    expected = expected_gradient(
        world,
        logits,
        objective,
        reward=reward,
        beta=beta,
        estimator=estimator,
        kl_estimator=kl_estimator,
        kl_placement=kl_placement,
        entropy_placement=entropy_placement,
    )
    candidates = candidate_gradients(world, logits, objective, reward=reward, beta=beta)
    errors = {key: ((expected - c).norm() / c.norm().clamp_min(1e-300)).item() for key, c in candidates.items()}
    matched = tuple(key for key, error in errors.items() if error < tol)
    true = candidates[("∇KL(π‖π0)", "∇(−H)")]
    entropy_law = ENTROPY_GRADIENT_LAWS[entropy_placement] if _score_function_objective(objective, 1.0)[1] else "∇(−H)"
    return GradientRow(
        estimator=estimator,
        kl_estimator=kl_estimator,
        kl_placement=kl_placement,
        entropy_placement=entropy_placement,
        declared=(KL_GRADIENT_LAWS[(kl_estimator, kl_placement)], entropy_law),
        matched=matched,
        relative_errors=errors,
        true_relative_error=errors[("∇KL(π‖π0)", "∇(−H)")],
        true_cosine=torch.nn.functional.cosine_similarity(expected, true, dim=0).item(),
    )


def gradient_table(
    world, logits: Tensor, objective: str = "rkl", *, reward: Tensor | None = None, beta: float = 1.0
) -> list[GradientRow]:
    """Every estimator × KL estimator × KL placement × entropy placement, as `GradientRow`s."""
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
    world,
    logits: Tensor,
    objective: str = "rkl",
    *,
    reward: Tensor | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k1",
    kl_placement: str = "reward",
    entropy_placement: str = "reward",
    samples: int = 1,
) -> Tensor:
    """tr Cov of the REINFORCE gradient with `samples` draws per prompt (prompts weighed by D), exactly.

        tr Cov = Σ_x D(x)² (E_a‖∇s_x(a)‖² − ‖E_a ∇s_x(a)‖²) / m,

    with s_x(a) = −sg(r(a)) ln π(a|x) + ℓ(a) the one-sample surrogate; the per-response
    gradients ∇s_x(a) are one Jacobian over the finite space (no sampling).
    """
    tab = tabular_view(world)
    _, entropy_coef = _score_function_objective(objective, tab.gamma)
    if "exact" in (kl_placement, entropy_placement):
        raise ValueError("exact_gradient_variance covers sampled placements ('reward', 'loss') only")
    reward = _check_reward(reward, tab)
    ref = tab.reference.logp
    options = dict(entropy_coef=entropy_coef, beta=beta, kl_placement=kl_placement, entropy_placement=entropy_placement)
    base = logits.detach()
    prob = make_parametrization(world, base).table().exp()
    r = sample_reward(torch.log(prob), ref, reward, kl_kind=kl_estimator, **options)

    def per_response(theta: Tensor) -> Tensor:
        table = make_parametrization(world, theta).table()
        return -r * table + loss_terms(table, ref, kl_kind=kl_estimator, **options)  # [X, N]

    jacobian = torch.autograd.functional.jacobian(per_response, base, vectorize=True)  # [X, N, *θ]
    jacobian = torch.where(prob.reshape(*prob.shape, *([1] * base.dim())) > 0, jacobian, torch.zeros_like(jacobian))
    jacobian = jacobian.reshape(*prob.shape, -1)
    mean = (prob.unsqueeze(-1) * jacobian).sum(dim=1)  # [X, |θ|]
    second = (prob * jacobian.square().sum(dim=-1)).sum(dim=1)  # [X]
    per_prompt = second - mean.square().sum(dim=-1)
    return (tab.prompt_dist.square() * per_prompt).sum() / samples
