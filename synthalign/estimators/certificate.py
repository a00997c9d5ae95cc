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
For a `LogitObjective` the gap is computed from the cells a move changes (`mass_moves`):
O(X·A²) per move size, the cost of one evaluation of the objective, where evaluating the
objective after each of the A moves (`best_mass_move`, any objective) costs O(X·A³).

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
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthalign._logistic_pairs import logistic_form, logistic_mass_decreases
from synthalign.evaluate import CellBlock, cell_block_inputs, cell_blocks, cells_batch, kl_regularizer, prompt_values

if TYPE_CHECKING:
    from synthalign.estimators.derivatives import LogitObjective

__all__ = [
    "Certificate",
    "certify",
    "component_labels",
    "divergence_direction",
    "frank_wolfe_gap",
    "best_mass_move",
    "mass_move_gap",
    "mass_moves",
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


def mass_move_gap(values: Callable[[Tensor], Tensor], theta: Tensor) -> Tensor:
    """[R, X] the largest decrease of the objective from moving a fraction t of the mass onto one response.

    max_{a, t} F(pi) − F((1 − t) pi + t e_a) over the responses a and t in `_MOVES`
    (clamped at 0): derivative-free, so it sees a response of mass e^-80 that wants mass
    (its logit gradient is ∝ e^-80) as clearly as one of mass 1/2, and it stays bounded
    where ∂F/∂pi_a is not (observed losers near probability 0).  `values(theta)` is the
    per-problem objective.  Evaluated in log space: ln((1 − t) pi_b + t [b = a]).
    """
    return best_mass_move(values, theta)[0]


def best_mass_move(values: Callable[[Tensor], Tensor], theta: Tensor) -> tuple[Tensor, Tensor]:
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


# Elements of the [T, candidates, ..., X, A] rows `_prompt_decreases` evaluates at once (32 MiB of float64).
_CANDIDATE_BUDGET = 2**22


def mass_moves(problem: LogitObjective, theta: Tensor) -> tuple[Tensor, Tensor]:
    """`best_mass_move(problem.values, theta)` from the cells each move changes: O(X·A²) per move size.

    Moving a fraction t of the mass onto response a gives ln pi'_b = ln pi_b + ln(1 − t)
    for b ≠ a and ln pi'_a = ln((1 − t) pi_a + t).  The loss (spec: the weighted cell and
    prompt sums L_r(pi) of eq. 1, 4–6, 9–12, 15, see `synthalign.evaluate`) changes

    * on the pair cells (a, b) and (b, a), b ≠ a: one table of every cell with its chosen
      response moved and one with its rejected response moved cover all A candidates;
    * on every other cell only through the common shift ln(1 − t): not at all for an
      objective that declares margin derivatives (its loss depends on the policy only
      through ln pi_a − ln pi_b), else one table with both shifted, plus the cell (a, a);
    * in the prompt terms (a prompt objective, beta · KL): the A moved rows, O(A) each;
    * in the ridge (theta_b − mean theta)²: with u = theta − mean theta and
      δ = ln pi'_a − ln pi_a − ln(1 − t), Σ_b (u_b + δ([b = a] − 1/A))² − Σ_b u_b²
      = 2 δ u_a + δ² (1 − 1/A), since Σ_b u_b = 0.

    Every difference is taken cell by cell, so each decrease is exact to the rounding of
    the cells it changes.  PMLE, the reward model, DPO and distillation take the pair
    cells' part from their scores instead (`_logistic_pair_decreases`: no table is
    re-evaluated).  Returns what `best_mass_move` returns; a NaN decrease makes the
    prompt's gap infinite (uncertifiable) and is never the chosen move.
    """
    logp = torch.log_softmax(theta.detach(), dim=-1)
    A = logp.shape[-1]
    sizes = torch.tensor(_MOVES, dtype=logp.dtype, device=logp.device).view(-1, *([1] * logp.dim()))
    log_keep = torch.log1p(-sizes)  # ln(1 − t)
    kept = logp + log_keep  # [T, ..., X, A]: ln((1 − t) pi_b), every b but the moved one
    raised = torch.logaddexp(kept, sizes.log())  # ln((1 − t) pi_a + t), the moved response a
    with torch.no_grad():
        decrease = torch.zeros_like(kept)
        if problem.obj.kind == "pair":
            decrease = decrease + _pair_decreases(problem, logp, kept, raised)
        if problem.obj.kind == "prompt" or problem.beta > 0:
            decrease = decrease + _prompt_decreases(problem, logp, kept, raised, log_keep)
        total = problem.total.to(logp.dtype)
        decrease = decrease / total.reshape(*total.shape, 1, 1)
        if problem.ridge > 0:
            ridge = (problem.ridge / total).reshape(*total.shape, 1, 1)
            centred = theta.detach() - theta.detach().mean(dim=-1, keepdim=True)
            shift = raised - kept
            decrease = decrease - 0.5 * ridge * shift * (2.0 * centred + (1.0 - 1.0 / A) * shift)
    invalid = torch.isnan(decrease)
    top, index = decrease.masked_fill(invalid, -math.inf).max(dim=-1)  # [T, ..., X]
    responses = torch.arange(A, device=logp.device)
    best = torch.zeros_like(top[0])
    best_logp = logp.expand(*top.shape[1:], A).clone()
    for step in range(len(_MOVES)):  # the sizes in turn, as `best_mass_move`: a tie keeps the smaller move
        better = top[step] > best
        best = torch.where(better, top[step], best)
        chosen = torch.where(responses == index[step].unsqueeze(-1), raised[step], kept[step])
        best_logp = torch.where(better.unsqueeze(-1), chosen, best_logp)
    gap = torch.where(invalid.any(dim=0).any(dim=-1), torch.full_like(best, math.inf), best)
    return gap, best_logp


def _pair_decreases(problem: LogitObjective, logp: Tensor, kept: Tensor, raised: Tensor) -> Tensor:
    """[T, ..., X, A] the decrease of the weighted pair-cell sum for every move (see `mass_moves`).

    PMLE, the reward model and DPO take `_logistic_pair_decreases` where it applies; every
    objective can take `_cell_pair_decreases`.
    """
    decrease = _logistic_pair_decreases(problem, logp, kept, raised)
    return _cell_pair_decreases(problem, logp, kept, raised) if decrease is None else decrease


def _logistic_pair_decreases(problem: LogitObjective, logp: Tensor, kept: Tensor, raised: Tensor) -> Tensor | None:
    """`_pair_decreases` of a logistic pair loss from its scores (`logistic_mass_decreases`), or None.

    ℓ(a, b) = −ln σ(s_a − s_b) with s = γ ln π (PMLE, the reward model) or γ ln[π/π0] (DPO),
    or distillation on its soft counts (`logistic_form`; its entropy offset does not move):
    the move onto a raises s_a by γ Δ_a relative to every other score, Δ_a = ln π'_a − ln π_a
    − ln(1 − t) = `raised` − `kept`.  None where the scores are not all finite (a
    zero-probability response), the weights broadcast over the batch, or the kernel's range
    check fails.
    """
    ctx, weight = problem.ctx, problem.pair_weight
    if weight.shape[:-3] != logp.shape[:-2]:  # the scores' batch holds the policy's
        return None
    form = logistic_form(problem.obj, logp, ctx, weight, problem._pair_cache)
    if form is None:
        return None
    scores, weight, _ = form
    if weight.shape[:-3] != scores.shape[:-2] or not weight.is_contiguous():
        return None
    A = scores.shape[-1]
    gamma = float(ctx.gamma)
    lift = (gamma * (raised - kept)).expand(kept.shape[0], *scores.shape)
    decrease = logistic_mass_decreases(
        scores.reshape(-1, A), weight.reshape(-1, A, A), lift.reshape(kept.shape[0], -1, A)
    )
    return None if decrease is None else decrease.view(kept.shape[0], *scores.shape)


def _cell_pair_decreases(problem: LogitObjective, logp: Tensor, kept: Tensor, raised: Tensor) -> Tensor:
    """`_pair_decreases` cell by cell for any pair objective: the loss re-evaluated on the moved tables."""
    obj, ctx, weight = problem.obj, problem.ctx, problem.pair_weight
    X, A = logp.shape[-2:]
    batch = tuple(cells_batch(kept, ctx, weight))
    shift_invariant = obj.margin_derivatives is not None
    decrease = kept.new_zeros(*batch, X, A)
    unmoved = kept.new_zeros(*batch, X)  # Σ over all cells of the decrease with both responses shifted
    columns = torch.arange(A, device=logp.device)

    def table(block: CellBlock, first: Tensor | None = None, second: Tensor | None = None) -> Tensor:
        return obj.fn(**cell_block_inputs(obj, logp, ctx, weight, block, first=first, second=second), **ctx.params)

    for group in cell_blocks(batch, X, A):
        for block in group:
            prompts, rows = block.prompts, block.rows
            w = weight[..., prompts, rows, :]
            base = table(block)
            diagonal = columns[rows].unsqueeze(-1) == columns  # [rows, A]: the cells (a, a)
            used = w > 0
            compared = used & ~diagonal
            w_compared = torch.where(compared, w, 0.0)
            kept_rows, kept_columns = kept[..., prompts, rows].unsqueeze(-1), kept[..., prompts, :].unsqueeze(-2)
            raised_rows = raised[..., prompts, rows].unsqueeze(-1)
            raised_columns = raised[..., prompts, :].unsqueeze(-2)
            # the move onto the chosen response (the row's) and onto the rejected one (the column's)
            chosen = table(block, raised_rows, kept_columns)
            decrease[..., prompts, rows] += _masked_sum(w_compared, compared, base, chosen, -1)
            rejected = table(block, kept_rows, raised_columns)
            decrease[..., prompts, :] += _masked_sum(w_compared, compared, base, rejected, -2)
            if shift_invariant:
                continue
            # Cells without a: both shifted = all cells − row a − column a + the cell (a, a),
            # which itself has both responses at ln pi'_a.
            shifted = torch.where(used, w * (base - table(block, kept_rows, kept_columns)), 0.0)
            both = torch.where(used & diagonal, w * (base - table(block, raised_rows, raised_columns)), 0.0)
            unmoved[..., prompts] += shifted.sum(dim=(-1, -2))
            decrease[..., prompts, rows] += (both + torch.where(diagonal, shifted, 0.0) - shifted).sum(dim=-1)
            decrease[..., prompts, :] -= shifted.sum(dim=-2)
    return decrease + unmoved.unsqueeze(-1)


def _masked_sum(w: Tensor, used: Tensor, base: Tensor, new: Tensor, dim: int) -> Tensor:
    """Σ over `dim` of w · (base − new) on the used cells, w being 0 off them.

    One product; masked only where its sum is not finite (an unused cell's loss may be inf or NaN).
    """
    product = (base - new) * w  # not in place: a loss may not depend on both responses (its shape is smaller)
    total = product.sum(dim=dim)
    if bool(torch.isfinite(total).all()):
        return total
    return torch.where(used, product, 0.0).sum(dim=dim)


def _prompt_decreases(problem: LogitObjective, logp: Tensor, kept: Tensor, raised: Tensor, log_keep: Tensor) -> Tensor:
    """[T, ..., X, A] the decrease of the weighted prompt terms for every move.

    A prompt objective's own term is evaluated on the A moved rows (a chunk of them at a
    time); beta · KL(pi ‖ pi0) (eq. 1) has a closed form from its value before the move
    (`evaluate.kl_regularizer`).  With l = ln pi, r = ln pi0, c = ln(1 − t) and S = KL(pi ‖ pi0)
    = Σ_b pi_b (l_b − r_b), the move onto a gives
    KL' = (1 − t) [S − pi_a (l_a − r_a) + (1 − pi_a) c] + pi'_a (ln pi'_a − r_a), O(1) per move.
    """
    obj, ctx, beta, weight = problem.obj, problem.ctx, problem.beta, problem.prompt_weight
    change = torch.zeros_like(kept)
    if obj.kind == "prompt":
        A = logp.shape[-1]
        base = prompt_values(obj, logp, ctx, 0.0).unsqueeze(-1)
        responses = torch.arange(A, device=logp.device)
        chunk = max(1, _CANDIDATE_BUDGET // kept.numel())
        parts = []
        for start in range(0, A, chunk):
            candidates = responses[start : start + chunk]
            moved_here = (candidates.unsqueeze(-1) == responses).view(1, -1, *([1] * (kept.dim() - 2)), A)
            rows = torch.where(moved_here, raised.unsqueeze(1), kept.unsqueeze(1))  # [T, chunk, ..., X, A]
            parts.append(prompt_values(obj, rows, ctx, 0.0).movedim(1, -1))
        change = base - torch.cat(parts, dim=-1)
    if beta > 0:
        ref = ctx.ref_logp.to(logp.dtype)
        probs, moved_probs = logp.exp(), raised.exp()
        before = kl_regularizer(logp, ref, beta).unsqueeze(-1)  # beta · S
        # each response's term of S, 0 · (−inf) = 0 as in `kl_regularizer`
        terms = torch.where(probs > 0, probs * (logp - ref), 0.0)
        moved_terms = torch.where(moved_probs > 0, moved_probs * (raised - ref), 0.0)
        rest_mass = probs.sum(dim=-1, keepdim=True) - probs
        after = log_keep.exp() * (before + beta * (rest_mass * log_keep - terms)) + beta * moved_terms
        change = change + (before - after)
    used = (weight > 0).unsqueeze(-1)
    return torch.where(used, weight.unsqueeze(-1) * change, torch.zeros_like(change))


def component_labels(edges: Tensor, connection: str) -> Tensor:
    """[..., A] for each response the smallest member of its connected component in the graphs [..., A, A].

    `edges[..., a, b]` is the edge a → b (the diagonal is ignored); `connection` is
    "strong" (strongly connected components, the Zermelo/Ford condition) or "weak"
    (components of the undirected graph).  A graph with every edge present (the
    population law) is one component without a search; the others are searched at once
    by `scipy.sparse.csgraph.connected_components`, O(A + edges), laid side by side as
    one block-diagonal graph.
    """
    if connection not in ("strong", "weak"):
        raise ValueError(f"connection must be 'strong' or 'weak', got {connection!r}")
    A = edges.shape[-1]
    off_diagonal = ~torch.eye(A, dtype=torch.bool, device=edges.device)
    labels = torch.zeros(edges.shape[:-1], dtype=torch.long, device=edges.device)
    pending = (~(edges | ~off_diagonal).all(dim=(-1, -2))).nonzero()
    if len(pending) == 0 or A == 1:
        return labels
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graphs = edges[tuple(pending.T)] & off_diagonal  # [G, A, A]
    graph, source, target = (t.cpu().numpy() for t in graphs.nonzero(as_tuple=True))
    n_nodes = graphs.shape[0] * A
    adjacency = coo_matrix(
        (np.ones(len(source), dtype=np.int8), (graph * A + source, graph * A + target)), shape=(n_nodes, n_nodes)
    )
    n_found, found = connected_components(adjacency, directed=True, connection=connection)
    found = torch.from_numpy(found).to(device=edges.device, dtype=torch.long)
    members = torch.arange(A, device=edges.device).repeat(graphs.shape[0])
    smallest = torch.full((n_found,), A, dtype=torch.long, device=edges.device)
    smallest.scatter_reduce_(0, found, members, reduce="amin")
    labels[tuple(pending.T)] = smallest[found].view(-1, A)
    return labels


def divergence_direction(pair_weight: Tensor) -> Tensor:
    """[R, X, A] recession direction of a preference likelihood on these counts (0 where it has none).

    With W[a, b] = 1 when a beat b at least once (a ≠ b) and reach its closure, d_a = −#{b:
    b reaches a, a does not reach b}: every observed pair (w beat l) has d_w ≥ d_l, with
    equality exactly inside a strongly connected component, so every margin grows along d
    and the one-way ones strictly.  Normalized to max |d| = 1 per prompt.  Reach is taken
    between the strongly connected components (`component_labels`), of the graphs that have
    more than one.
    """
    edges = pair_weight > 0
    labels = component_labels(edges, "strong")
    depth = torch.zeros(labels.shape, dtype=pair_weight.dtype, device=pair_weight.device)
    split = (labels != 0).any(dim=-1)
    if bool(split.any()):
        depth[split] = _responses_above(edges[split], labels[split]).to(depth.dtype)
    return -depth / depth.amax(dim=-1, keepdim=True).clamp_min(1.0)


def _responses_above(edges: Tensor, labels: Tensor) -> Tensor:
    """[G, A] #{b: b reaches a, a does not reach b} from the strong components' labels [G, A] of the graphs."""
    G, A = labels.shape
    present = torch.zeros(G, A, dtype=torch.bool, device=labels.device).scatter_(1, labels, True)
    component = (present.cumsum(dim=1) - 1).gather(1, labels)  # [G, A]: 0..K−1 per graph
    K = int(present.sum(dim=1).max())
    graph, source, target = edges.nonzero(as_tuple=True)
    reach = torch.eye(K, dtype=torch.bool, device=labels.device).repeat(G, 1, 1)
    reach[graph, component[graph, source], component[graph, target]] = True
    # Reflexive-transitive closure of the condensation by repeated squaring, until it stops growing.
    for _ in range(max(1, math.ceil(math.log2(K)))):
        reach_f = reach.to(torch.float32)
        grown = (reach_f @ reach_f) > 0
        if torch.equal(grown, reach):
            break
        reach = grown
    above = reach & ~reach.transpose(-1, -2)  # above[c, d]: component c strictly above d
    size = torch.zeros(G, K, dtype=torch.float32, device=labels.device).scatter_add_(
        1, component, torch.ones(G, A, dtype=torch.float32, device=labels.device)
    )
    count = (size.unsqueeze(-1) * above).sum(dim=-2)  # [G, K]: responses strictly above component d
    return count.gather(1, component)


def _blind_components(
    problem: LogitObjective, theta: Tensor, unobserved: Tensor, no_weight: Tensor
) -> tuple[Tensor, Tensor]:
    """([R, X] prompts blind to shifting a weakly connected component, [R, X, A] unobserved responses in one).

    A component is a candidate where it is a proper subset of a prompt with weight; it is
    blind when shifting its logits by 1 changes the prompt's value by no more than float
    resolution.  All candidates are shifted at once.  For an objective with margin
    derivatives the pair cells cannot see the shift (it changes only margins across the
    component, whose cells have weight 0), so only the prompt terms are evaluated.
    """
    A = theta.shape[-1]
    labels = component_labels(problem.pair_weight > 0, "weak")  # [R, X, A]
    size = torch.zeros_like(labels).scatter_add_(-1, labels, torch.ones_like(labels))  # members of label l
    candidate = (size > 0) & (size < A) & ~no_weight.unsqueeze(-1)  # [R, X, label]
    used = candidate.flatten(0, -2).any(dim=0).nonzero().squeeze(-1)  # [K] labels a candidate somewhere
    if len(used) == 0:
        return torch.zeros_like(no_weight), torch.zeros_like(unobserved)
    members = labels.unsqueeze(0) == used.view(-1, *([1] * labels.dim()))  # [K, R, X, A]
    with torch.no_grad():
        base = problem.values(theta)
        noise = 16 * torch.finfo(base.dtype).eps * (1.0 + base.abs())
        shifted = theta + members.to(theta.dtype)
        if problem.obj.margin_derivatives is None:
            change = problem.values(shifted) - base
        elif problem.beta > 0:
            before = prompt_values(problem.obj, torch.log_softmax(theta, dim=-1), problem.ctx, problem.beta)
            after = prompt_values(problem.obj, torch.log_softmax(shifted, dim=-1), problem.ctx, problem.beta)
            weight = problem.prompt_weight / problem.total.unsqueeze(-1)
            change = torch.where(problem.prompt_weight > 0, weight * (after - before), torch.zeros_like(after))
        else:
            change = torch.zeros_like(members[..., 0], dtype=base.dtype)
    invariant = candidate.movedim(-1, 0)[used] & (change.abs() <= noise)  # [K, R, X]
    blind_unobserved = (members & unobserved & invariant.unsqueeze(-1)).any(dim=0)
    return invariant.any(dim=0), blind_unobserved


def certify(
    problem: LogitObjective,
    theta: Tensor,
    grad: Tensor,
    *,
    tol: float,
    prompt_dist: Tensor,
    gap: Tensor | None = None,
) -> Certificate:
    """The certificate of the fitted logits `theta` [R, X, A] of a `LogitObjective` `problem`.

    `grad` is the logit gradient at theta; `gap` the `mass_move_gap` [R, X] at theta
    where the solver already has it (NaN where not: then it is computed here).
    Blindness is tested on the values themselves: a component is a blind direction when
    shifting its logits by 1 changes no prompt's value beyond float resolution.
    """
    logp = torch.log_softmax(theta, dim=-1)
    A = theta.shape[-1]
    if gap is None or bool(torch.isnan(gap).any()):
        gap = mass_moves(problem, theta)[0]
    grad_norm = grad.abs().amax(dim=(-1, -2))
    certified = (gap <= tol).all(dim=-1) & (grad_norm <= tol)

    weight = problem.pair_weight
    no_weight = problem.prompt_weight <= 0
    blind = no_weight & (problem.ridge == 0)  # the ridge pulls every prompt's logits to their mean
    if weight is not None:
        compared = (weight > 0) & ~torch.eye(A, dtype=torch.bool, device=weight.device)
        unobserved = ~(compared.any(dim=-1) | compared.any(dim=-2))
    else:
        unobserved = torch.zeros_like(logp, dtype=torch.bool) | no_weight.unsqueeze(-1)
    blind_unobserved = torch.zeros_like(unobserved)
    if weight is not None and problem.ridge == 0:
        blind_components, blind_unobserved = _blind_components(problem, theta, unobserved, no_weight)
        blind = blind | blind_components
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
