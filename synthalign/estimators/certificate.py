"""Optimality certificates for tabular softmax fits: what a fitted policy is, measured on the simplex.

A gradient threshold in the logits cannot certify a tabular softmax fit: the logit
gradient of a response is g_a = pi_a · v_a, with

    v_a = ∂F/∂pi_a − Σ_b pi_b ∂F/∂pi_b          (the reduced gradient on the simplex),

so it vanishes with pi_a whatever v_a is.  A response at pi_a ≈ e^-80 whose objective
wants mass (v_a = −35 nats per unit probability) has |g_a| ≈ 1e-35 and passes any
absolute tolerance.  The KKT conditions of min_pi F(pi) over the simplex are v_a = 0 where
pi_a > 0 and v_a ≥ 0 where pi_a = 0; the Frank–Wolfe gap max_a(−v_a) measures them in
units of the objective whatever the masses, and bounds F(pi) − min F where F is convex in
the probabilities (Jaggi 2013).  Its derivative form is unusable near the boundary,
though: where two observed responses both tend to 0 (the levels of a separable comparison
graph) ∂F/∂pi_a grows without bound while the decrease it promises does not exist.  The
certificate therefore takes the gap in its derivative-free form,

    mass_move_gap(pi) = max_{a, t} F(pi) − F((1 − t) pi + t e_a),   t from 1e-12 to 0.5,

the largest decrease from moving a fraction of the mass onto one response — the same for
a response of mass 1e-35 as for one of mass 1/2, bounded where ∂F/∂pi is not, and
vanishing at the KKT points (minimizers on the boundary, such as observed losers driven
to 0, included).  A fit is certified when it and the largest logit gradient (the
stationarity of the responses that carry mass, pi_a·|v_a|) are both at most `tol`; this
is the stopping rule of `synthalign.estimators.newton`, whose steps use v itself.

The certificate also says what kind of optimum was reached (`certify`):

* "no_finite_minimizer": a likelihood objective (`swap_symmetry="likelihood"`: PMLE,
  DPO, the reward model) on a comparison graph with a one-way edge between its strongly
  connected components (Zermelo/Ford) decreases along the recession direction d that
  lowers every response by the number of responses strictly above it; the logits
  diverge along d and the policy tends to a point on the boundary of the simplex
  (beta = 0 only).  At beta > 0 with gamma < 1 the boundary is still a local minimizer
  (the loss's pull ∝ pi_l^(gamma − 1) beats the KL's ln pi_l as pi_l → 0), but the KL
  can make an interior point another one and the objective is convex neither in the
  logits nor in the probabilities, so no such claim is made there.
* "non_unique": the objective is blind to a direction — shifting the logits of a weakly
  connected component of the observed comparisons (an unobserved response is one) leaves
  every value unchanged, or a prompt carries no weight at all.  At beta = 0 every
  unobserved response is such a direction, so the mass on unobserved responses ranges
  over the whole minimizer set; `unobserved_mass_range` gives that range.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

__all__ = [
    "Certificate",
    "certify",
    "divergence_direction",
    "frank_wolfe_gap",
    "best_mass_move",
    "mass_move_gap",
    "reduced_gradient",
]

# exp(-700) is still a normal float64; below it pi_a = exp(logp_a) may underflow to 0.
_UNDERFLOW_LOGP = -700.0


@dataclasses.dataclass(frozen=True, eq=False)
class Certificate:
    """What a fitted policy is, per replicate [R] (and per prompt [R, X] where noted).

    Attributes:
      status: one string per replicate: "optimal" (the certificate holds and the minimizer
        is unique with finite logits), "non_unique" (it holds, but the objective is blind to
        some direction: the policy is one member of a minimizer set), "no_finite_minimizer"
        (it holds in the closure of the simplex; the logits diverge along `divergence`), or
        "not_converged" (the mass-move gap or the logit gradient is above the tolerance).
      certified: [R] bool, the first-order optimality condition on the simplex holds.
      gap: [R, X] `mass_move_gap` (units of the mean objective).
      grad_norm: [R] largest |logit gradient| = max_a pi_a |v_a|.
      unique: [R] bool, no blind direction.
      finite: [R] bool, no recession direction of the loss (see the module docstring).
      divergence: [R, X, A] the recession direction (max |d| = 1 per diverging prompt, 0
        elsewhere), or None for objectives that cannot diverge.
      blind_prompts: [R, X] bool, prompts whose objective is blind to some direction.
      unobserved_mass: [R] E_x Σ_{a unobserved} pi(a|x) at the fitted policy.
      unobserved_mass_range: [R, 2] (inf, sup) of that mass over the minimizer set (both
        the fitted value where the minimizer is unique there).
      tol: the tolerance the certificate was checked against.
    """

    status: tuple[str, ...]
    certified: Tensor
    gap: Tensor
    grad_norm: Tensor
    unique: Tensor
    finite: Tensor
    divergence: Tensor | None
    blind_prompts: Tensor
    unobserved_mass: Tensor
    unobserved_mass_range: Tensor
    tol: float

    @property
    def converged(self) -> Tensor:
        """[R] bool: certified, unique and finite — the policy is *the* minimizer."""
        return self.certified & self.unique & self.finite


def reduced_gradient(grad: Tensor, logp: Tensor, kl_weight: Tensor | None, ref_logp: Tensor) -> Tensor:
    """v = ∂F/∂pi − <pi, ∂F/∂pi> per response, [R, X, A], from the logit gradient g = pi ∘ v.

    Where pi_a is a normal float v_a = g_a / pi_a (both carry the factor pi_a, so the
    ratio keeps its relative precision).  Where pi_a underflows (ln pi_a < −700) g_a keeps
    only the parts that do not vanish with pi_a (a pair loss's pull on an observed
    response): v_a = ±inf with its sign; the KL term's part, which does vanish, is added
    analytically, kl_weight · (ln pi_a − ln pi0_a − KL(pi ‖ pi0)) (kl_weight = beta ·
    w_x / Σ w, [R, X]), +inf where pi0_a = 0 (the KL forbids mass there).
    """
    tiny = logp < _UNDERFLOW_LOGP
    safe_logp = torch.where(tiny, torch.zeros_like(logp), logp)
    v = grad * torch.exp(-safe_logp)
    inf = torch.full_like(v, math.inf)
    pull = torch.where(grad > 0, inf, torch.where(grad < 0, -inf, torch.zeros_like(v)))
    if kl_weight is not None:
        probs = logp.exp()
        finite_ref = torch.isfinite(ref_logp)
        ratio = torch.where(finite_ref, logp - ref_logp.where(finite_ref, torch.zeros_like(ref_logp)), inf)
        kl = torch.where(probs > 0, probs * ratio.where(probs > 0, torch.zeros_like(ratio)), torch.zeros_like(v))
        kl_term = kl_weight.unsqueeze(-1) * (ratio - kl.sum(dim=-1, keepdim=True))
        kl_term = torch.where(kl_weight.unsqueeze(-1) > 0, kl_term, torch.zeros_like(kl_term))
        pull = pull + kl_term
    return torch.where(tiny, pull, v)


def frank_wolfe_gap(v: Tensor) -> Tensor:
    """max_a(−v_a) per problem, [..., X] (≥ 0 since Σ_a pi_a v_a = 0); NaN entries count as violations."""
    gap = (-v).amax(dim=-1).clamp_min(0.0)
    return torch.where(torch.isnan(v).any(dim=-1), torch.full_like(gap, math.inf), gap)


# Fractions of probability moved onto one response by `mass_move_gap`: from 1e-12 (a response
# of any mass can be raised to it) to 0.5.
_MOVES = (1e-12, 1e-8, 1e-4, 1e-2, 0.1, 0.5)


def mass_move_gap(values, theta: Tensor) -> Tensor:
    """[R, X] the largest decrease of the objective from moving a fraction t of the mass onto one response.

    max_{a, t} F(pi) − F((1 − t) pi + t e_a) over the responses a and t in `_MOVES`
    (clamped at 0): derivative-free, so it sees a response of mass e^-80 that wants mass
    (its logit gradient is ∝ e^-80) as clearly as one of mass 1/2, and it stays bounded
    where ∂F/∂pi_a is not (observed losers near probability 0).  `values(theta)` is the
    per-problem objective.  Evaluated in log space: ln((1 − t) pi_b + t [b = a]).
    """
    return best_mass_move(values, theta)[0]


def best_mass_move(values, theta: Tensor) -> tuple[Tensor, Tensor]:
    """(`mass_move_gap` [R, X], the log-probabilities [R, X, A] after the best move; theta's where none helps)."""
    A = theta.shape[-1]
    logp = torch.log_softmax(theta, dim=-1)
    eye = torch.eye(A, dtype=torch.bool, device=theta.device).view(A, *([1] * (theta.dim() - 1)), A)
    with torch.no_grad():
        base = values(theta)
        best = torch.zeros_like(base)
        best_logp = logp.clone()
        for t in _MOVES:
            # all A moves of this size at once: a leading dimension [A, R, X, A]
            kept = (logp + math.log1p(-t)).expand(A, *logp.shape)
            moved = torch.where(eye, torch.logaddexp(kept, torch.full_like(kept, math.log(t))), kept)
            decrease = base - values(moved)  # [A, R, X]
            top, index = decrease.max(dim=0)
            better = top > best
            best = torch.where(better, top, best)
            chosen = moved.gather(0, index.unsqueeze(0).unsqueeze(-1).expand(1, *logp.shape)).squeeze(0)
            best_logp = torch.where(better.unsqueeze(-1), chosen, best_logp)
    gap = torch.where(torch.isnan(best), torch.full_like(best, math.inf), best)
    return gap, best_logp


def _closure(adjacency: Tensor) -> Tensor:
    """Reflexive-transitive closure of boolean [..., A, A] by repeated squaring."""
    A = adjacency.shape[-1]
    reach = adjacency | torch.eye(A, dtype=torch.bool, device=adjacency.device)
    for _ in range(max(1, math.ceil(math.log2(A)))):
        reach_f = reach.to(torch.float32)
        reach = (reach_f @ reach_f) > 0
    return reach


def divergence_direction(pair_weight: Tensor) -> Tensor:
    """[R, X, A] recession direction of a preference likelihood on these counts (0 where it has none).

    With W[a, b] = 1 when a beat b at least once (a ≠ b) and reach its closure, d_a = −#{b:
    b reaches a, a does not reach b}: every observed pair (w beat l) has d_w ≥ d_l, with
    equality exactly inside a strongly connected component, so every margin grows along d
    and the one-way ones strictly.  Normalized to max |d| = 1 per prompt.
    """
    A = pair_weight.shape[-1]
    off = ~torch.eye(A, dtype=torch.bool, device=pair_weight.device)
    reach = _closure((pair_weight > 0) & off)
    above = reach & ~reach.transpose(-1, -2)  # above[b, a]: b strictly above a
    depth = above.sum(dim=-2).to(pair_weight.dtype)
    return -depth / depth.amax(dim=-1, keepdim=True).clamp_min(1.0)


def _component_labels(pair_weight: Tensor) -> Tensor:
    """[R, X, A] label of each response's weakly connected component (its smallest member)."""
    A = pair_weight.shape[-1]
    off = ~torch.eye(A, dtype=torch.bool, device=pair_weight.device)
    linked = (pair_weight > 0) & off
    reach = _closure(linked | linked.transpose(-1, -2))
    index = torch.arange(A, device=pair_weight.device)
    return torch.where(reach, index.unsqueeze(-1), A).amin(dim=-2)


def certify(problem, theta: Tensor, grad: Tensor, *, tol: float, prompt_dist: Tensor) -> Certificate:
    """The certificate of the fitted logits `theta` [R, X, A] of a `LogitObjective` `problem`.

    `grad` is the logit gradient at theta.  Blindness is tested on the values themselves:
    a component is a blind direction when shifting its logits by 1 changes no prompt's
    value beyond float resolution.
    """
    logp = torch.log_softmax(theta, dim=-1)
    A = theta.shape[-1]
    gap = mass_move_gap(problem.values, theta)
    grad_norm = grad.abs().amax(dim=(-1, -2))
    certified = (gap <= tol).all(dim=-1) & (grad_norm <= tol)

    weight = problem.pair_weight
    no_weight = problem.prompt_weight <= 0
    blind = no_weight & (problem.ridge == 0)  # the ridge pulls every prompt's logits to their mean
    if weight is not None:
        off = 1 - torch.eye(A, dtype=weight.dtype, device=weight.device)
        offdiag = weight * off
        unobserved = (offdiag.sum(dim=-1) + offdiag.sum(dim=-2)) == 0
    else:
        unobserved = torch.zeros_like(logp, dtype=torch.bool) | no_weight.unsqueeze(-1)
    blind_unobserved = torch.zeros_like(unobserved)
    if weight is not None and problem.ridge == 0:
        labels = _component_labels(weight)
        with torch.no_grad():
            base = problem.values(theta)
            noise = 16 * torch.finfo(base.dtype).eps * (1.0 + base.abs())
            for label in range(A):
                members = labels == label
                size = members.sum(dim=-1)
                candidate = (size > 0) & (size < A) & ~no_weight
                if not candidate.any():
                    continue
                shifted = problem.values(theta + members.to(theta.dtype))
                invariant = candidate & ((shifted - base).abs() <= noise)
                blind = blind | invariant
                blind_unobserved = blind_unobserved | (members & unobserved & invariant.unsqueeze(-1))
    unique = ~blind.any(dim=-1)

    divergence = None
    finite = torch.ones_like(certified)
    likelihood = problem.obj.kind == "pair" and problem.obj.swap_symmetry == "likelihood"
    if weight is not None and likelihood and problem.ridge == 0 and problem.beta == 0:
        divergence = divergence_direction(weight)
        finite = ~(divergence != 0).any(dim=-1).any(dim=-1)

    probs = logp.exp()
    per_prompt = (probs * unobserved).sum(dim=-1)
    all_unobserved = unobserved.all(dim=-1)
    free = blind_unobserved.any(dim=-1) & ~all_unobserved
    low = torch.where(free, torch.zeros_like(per_prompt), per_prompt)
    low = torch.where(all_unobserved, torch.ones_like(low), low)
    high = torch.where(free, torch.ones_like(per_prompt), torch.where(all_unobserved, torch.ones_like(low), per_prompt))
    mass_range = torch.stack([(prompt_dist * low).sum(-1), (prompt_dist * high).sum(-1)], dim=-1)

    status = []
    for ok, one, fin in zip(certified.tolist(), unique.tolist(), finite.tolist(), strict=True):
        status.append(
            "not_converged" if not ok else "non_unique" if not one else "no_finite_minimizer" if not fin else "optimal"
        )
    return Certificate(
        status=tuple(status),
        certified=certified,
        gap=gap,
        grad_norm=grad_norm,
        unique=unique,
        finite=finite,
        divergence=divergence,
        blind_prompts=blind,
        unobserved_mass=(prompt_dist * per_prompt).sum(-1),
        unobserved_mass_range=mass_range,
        tol=tol,
    )
