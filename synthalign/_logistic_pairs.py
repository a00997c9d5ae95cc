"""Logistic pair losses on the cells of a finite world, one triangle of cells at a time.

PMLE and the reward model (eq. 4, 9) and DPO (eq. 6) are ℓ(x, a, b) = −ln σ(s_a − s_b) for
per-response scores s (γ ln π for PMLE, γ ln[π/π0] for DPO).  The margin is antisymmetric,
so the cells (a, b) and (b, a) share one transcendental evaluation:

* the population loss under spec §1's law weighs (a, b) by 2 D μ(a) μ(b) σ(r_a − r_b)
  (r = γ ln π*), so the pair {a, b} contributes 2 D μ(a) μ(b) c_ab with
  c_ab = σ(r_a − r_b) softplus(−m) + σ(r_b − r_a) softplus(m),  m = s_a − s_b;
  with the responses sorted by score (m ≥ 0 on the upper triangle),
  c_ab = σ(r_b − r_a) m + softplus(−m), a sum of non-negative terms (softplus(m) = softplus(−m) + m);
* the solver's derivatives (`synthalign.estimators.derivatives`) need only the symmetric
  weights w_ab + w_ba and per-response net weights (`pair_table`, taken once per weight
  table): one logarithm and a few products per pair, in place on buffers reused across strips
  (`logistic_derivatives`), the Hessian written once (or only its upper triangle, which is
  all the Newton solver's Cholesky factorization reads).

Where the scores spread little enough (`_EXP_RANGE`), the sigmoids come from per-response
exponentials (e^(−m) = e^(s_b − max s) e^(max s − s_a)), so no cell takes an exp.  Pairs are
taken a strip of rows at a time, [rows, start:] for rows starting at `start`, so temporaries
stay the size of a strip.

* the mass-move certificate (`synthalign.estimators.certificate.mass_moves`) needs, for each
  response a and move size, the change of the loss when s_a alone rises: with σ_ab =
  σ(s_b − s_a) per cell, one log1p per cell and move size in each role of the response
  (`logistic_mass_decreases`).

This module only serves those callers; it holds no state (the caller keeps the `PairTable`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy
import torch
from torch import Tensor

from synthalign.registry import paper
from synthalign.registry.protocol import Objective

if TYPE_CHECKING:
    from synthalign.evaluate import EvalContext

__all__ = [
    "PairTable",
    "carry_distillation_weights",
    "distillation_weights",
    "logistic_derivatives",
    "logistic_form",
    "logistic_mass_decreases",
    "logistic_scores",
    "logistic_values",
    "pair_table",
    "population_logistic_sums",
]

STRIP = 2**16
"""Cells per strip of `population_logistic_sums` (512 KiB of float64): its three temporaries stay in cache."""


def logistic_scores(obj: Objective, logp: Tensor, ref_logp: Tensor | None, params: dict, gamma: float) -> Tensor | None:
    """The scores s with ℓ(a, b) = −ln σ(s_a − s_b) for PMLE, the reward model and DPO, or None.

    None for any other objective and whenever a score would not be finite (a zero-probability
    response: the cell-by-cell path then applies the objectives' own conventions for ∞ − ∞).
    """
    if params:
        return None
    if obj.fn in (paper._pmle.fn, paper._reward_model.fn):
        scores = gamma * logp
    elif obj.fn is paper._dpo.fn and ref_logp is not None:
        scores = gamma * (logp - ref_logp.to(logp.dtype))
    else:
        return None
    return scores if bool(torch.isfinite(scores).all()) else None


def logistic_form(
    obj: Objective, logp: Tensor, ctx: EvalContext, weight: Tensor, cache: dict | None = None
) -> tuple[Tensor, Tensor, Tensor | None] | None:
    """(scores s, weights w', offset) with Σ_(a, b) w_ab ℓ(a, b) = Σ_(a, b) w'_ab (−ln σ(s_a − s_b)) + offset, or None.

    PMLE, the reward model and DPO are of that form as they stand (`logistic_scores`: w' = w,
    offset None).  Preference distillation (eq. 11) is too, on soft counts: with p_ab =
    σ(t_ab), t_ab = R̂_a − R̂_b, and m = s_a − s_b (s = γ ln π), its cell loss is
    KL(Bern(p_ab) ‖ Bern(σ(m))) = p_ab softplus(−m) + p_ba softplus(m) − H(p_ab) (spec §6.3,
    soft-label cross-entropy minus entropy); p_ba = 1 − p_ab and softplus(m) is the loss of
    the cell (b, a), so the pair {a, b} carries n_ab p_ab on (a, b) and n_ab p_ba on (b, a)
    with n = w + wᵀ, and the diagonal cells nothing (KL(½ ‖ ½) = 0): w' = (w + wᵀ) ∘ σ(t) off
    the diagonal, offset = −Σ_(a ≠ b) w_ab H(p_ab) per row (`distillation_weights`, taken
    once per weight table and reward where the caller keeps a `cache` dict).  None for any
    other objective, for a score or reward that is not finite, or for a reward whose batch
    is not within the weights' (the soft table would be larger than the data's).
    Shapes: scores [..., X, A], w' as `weight`, offset [..., X].
    """
    scores = logistic_scores(obj, logp, ctx.ref_logp, ctx.params, ctx.gamma)
    if scores is not None:
        return scores, weight, None
    if obj.fn is not paper._distillation.fn or ctx.params or ctx.reward is None:
        return None
    scores = ctx.gamma * logp
    reward = ctx.reward.to(logp.dtype)
    if not bool(torch.isfinite(scores).all()) or not bool(torch.isfinite(reward).all()):
        return None
    batch = weight.shape[:-3]
    if torch.broadcast_shapes(reward.shape[:-2], batch) != batch or not weight.is_contiguous():
        return None
    key = _distillation_key(weight, reward)
    held = None if cache is None else cache.get("distillation")
    if held is None or held[0] != key:
        held = (key, *distillation_weights(weight, reward))
        if cache is not None:
            cache["distillation"] = held
    return scores, held[1], held[2]


def _distillation_key(weight: Tensor, reward: Tensor) -> tuple:
    """What the soft table of `logistic_form` depends on: the weights and the reward (storage, layout, version)."""
    return (_table_key(weight, 0), reward.data_ptr(), reward.shape, reward.stride(), reward._version)


def carry_distillation_weights(
    cache: dict,
    weight: Tensor,
    reward: Tensor,
    into: dict,
    sub_weight: Tensor,
    sub_reward: Tensor,
    pick: Callable[[Tensor], Tensor],
) -> None:
    """Gives `into` the soft table of a sub-problem, picked from the one `cache` holds, if it holds one.

    `cache` is `logistic_form`'s for the weights `weight` and reward `reward` (the table is used
    only if it was taken from those as they stand); the sub-problem's weights and reward are
    `sub_weight` = pick(weight) and `sub_reward`, and `pick` maps the table [..., X, A, A] and
    the offset [..., X] to theirs the same way.  Spares `distillation_weights` a second pass.
    """
    held = cache.get("distillation")
    if held is None or held[0] != _distillation_key(weight, reward):
        return
    into["distillation"] = (_distillation_key(sub_weight, sub_reward), pick(held[1]), pick(held[2]))


def distillation_weights(weight: Tensor, reward: Tensor, budget: int | None = None) -> tuple[Tensor, Tensor]:
    """(w' = (w + wᵀ) ∘ σ(R̂_a − R̂_b) off the diagonal, 0 on it; −Σ_(a ≠ b) w_ab H(σ(R̂_a − R̂_b))).

    The soft counts and entropy offset of distillation in `logistic_form`: weights [..., X, A, A],
    a finite reward [..., X, A] broadcasting over them.  H(σ(t)) = −σ(t) ln σ(t) − σ(−t) ln σ(−t),
    each factor to its relative precision (no 1 − p is formed).  Rows are taken a strip at a
    time (temporaries of `budget` cells): one pass over the table, reading it once as it stands
    and once transposed.
    """
    A = weight.shape[-1]
    budget = STRIP if budget is None else budget
    flat = weight.reshape(-1, A, A)
    rewards = reward.expand(*weight.shape[:-1]).reshape(-1, A)
    soft = torch.empty_like(flat)
    offset = flat.new_zeros(flat.shape[0])
    rows = max(1, min(A, budget // A))
    for start in range(0, A, rows):
        chosen = slice(start, start + rows)
        margin = rewards[:, chosen, None] - rewards[:, None, :]  # t_ab
        prob, against = torch.sigmoid(margin), torch.sigmoid(-margin)
        log_sigmoid = torch.nn.functional.logsigmoid
        entropy = (prob * log_sigmoid(margin)).add_(against * log_sigmoid(-margin)).neg_()
        part = flat[:, chosen]
        entropy.mul_(part).diagonal(offset=start, dim1=1, dim2=2).zero_()
        offset.sub_(entropy.sum(dim=(-1, -2)))
        pair = soft[:, chosen]
        torch.add(part, flat[:, :, chosen].transpose(1, 2), out=pair)
        pair.mul_(prob).diagonal(offset=start, dim1=1, dim2=2).zero_()
    return soft.view(weight.shape), offset.view(weight.shape[:-2])


def _strips(groups: int, n_responses: int, budget: int) -> Iterator[tuple[int, int]]:
    """(start, rows) of the strips rows [start, start + rows) × columns [start, A) of the upper triangle."""
    start = 0
    while start < n_responses:
        cols = n_responses - start
        rows = max(1, min(cols, budget // (groups * cols)))
        yield start, rows
        start += rows


_EXP_RANGE = 600.0
"""Largest spread of scores in a row for which exp(±(s − max s)) is a normal float64 (e^±600 ≈ 1e±260)."""


def population_logistic_sums(scores: Tensor, law_scores: Tensor, behavior: Tensor, budget: int | None = None) -> Tensor:
    """Σ_(a, b) 2 μ(a) μ(b) σ(r_a − r_b) (−ln σ(s_a − s_b)) per row, for rows [P, A] of s, r and μ.

    The sum of spec §1's population law (without the factor D(x)) times the logistic loss, over
    the upper triangle of each row's cells in the order of decreasing score (see the module
    docstring), one strip of cells at a time; the diagonal cells give μ(a)² ln 2.
    `law_scores` r may hold −inf (a response pi* never gives): two of them tie, σ(0).

    Where the scores of a row spread over less than `_EXP_RANGE` (and r is finite), the
    sigmoids come from per-response exponentials: with u = e^(s − max s) and q = e^(r − max r),
    softplus(−m) = ln(1 + u_b / u_a) and σ(r_b − r_a) = 1 / (1 + q_a / q_b), so a cell costs one
    log1p and no exp.  Otherwise each cell takes a sigmoid and a log-sigmoid.
    """
    P, A = scores.shape
    budget = STRIP if budget is None else budget
    scores, order = torch.sort(scores, dim=-1, descending=True)
    law_scores = torch.gather(law_scores, -1, order)
    behavior = torch.gather(behavior, -1, order)
    group = max(1, min(P, budget // (A * A)))  # rows of one strip at once when each is small
    buffers = [torch.empty(budget + A, dtype=scores.dtype, device=scores.device) for _ in range(3)]
    # b < a in a strip's corner is counted by the strip of b, and the diagonal apart: a mask keeps b > a.
    corner = max(rows for _, rows in _strips(group, A, budget))
    upper = torch.ones(corner, corner, dtype=scores.dtype, device=scores.device).triu_(1)
    exponentials = _exp_factors(scores, law_scores)
    totals = []
    for first in range(0, P, group):
        rows_of = slice(first, first + group)
        s, r, mu = scores[rows_of], law_scores[rows_of], behavior[rows_of]
        usable = exponentials is not None and bool(exponentials[0][rows_of].all())
        if usable:
            strip_sums = _exp_strip_sums(s, *(factor[rows_of] for factor in exponentials[1:]))
        else:
            strip_sums = _sigmoid_strip_sums(s, r)
        total = math.log(2.0) * mu.square().sum(dim=-1)  # the diagonal cells: 2 μ(a)² σ(0) ln 2
        twice = 2.0 * mu
        for start, rows in _strips(s.shape[0], A, budget):
            shape = (s.shape[0], rows, A - start)
            views = [buffer[: math.prod(shape)].view(shape) for buffer in buffers]
            chosen = slice(start, start + rows)
            pair_sums = strip_sums(chosen, start, *views)  # c_ab of the strip
            pair_sums[:, :, :rows].mul_(upper[:rows, :rows])
            if s.shape[0] == 1:
                row_sums = torch.mv(pair_sums[0], twice[0, start:]).unsqueeze(0)
            else:
                row_sums = pair_sums.mul_(twice[:, None, start:]).sum(dim=-1)
            total = total + (row_sums * mu[:, chosen]).sum(dim=-1)
        totals.append(total)
    return torch.cat(totals)


def _exp_factors(s: Tensor, r: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor] | None:
    """(rows where they are normal floats [P], e^(max s − s), e^(s − max s), e^(r − max r), e^(max r − r)) or None."""
    finite = torch.isfinite(r).all(dim=-1)
    if not bool(finite.any()):
        return None
    r = torch.where(finite[:, None], r, 0.0)
    centred_s, centred_r = s - s[:, :1], r - r.amax(dim=-1, keepdim=True)  # s is sorted: s[:, 0] is its max
    usable = finite & (centred_s[:, -1] >= -_EXP_RANGE) & (centred_r.amin(dim=-1) >= -_EXP_RANGE)
    return usable, torch.exp(-centred_s), torch.exp(centred_s), torch.exp(centred_r), torch.exp(-centred_r)


def _exp_strip_sums(s: Tensor, grow: Tensor, shrink: Tensor, law: Tensor, law_inverse: Tensor):
    """c_ab on a strip from per-response exponentials (see `population_logistic_sums`)."""

    def strip_sums(chosen: slice, start: int, margin: Tensor, weight: Tensor, loss: Tensor) -> Tensor:
        torch.mul(grow[:, chosen, None], shrink[:, None, start:], out=loss)  # e^(−m)
        loss.log1p_()  # softplus(−m)
        torch.mul(law[:, chosen, None], law_inverse[:, None, start:], out=weight)  # e^(r_a − r_b)
        weight.add_(1.0).reciprocal_()  # σ(r_b − r_a)
        torch.sub(s[:, chosen, None], s[:, None, start:], out=margin)  # m ≥ 0 where b ≥ a
        return loss.addcmul_(weight, margin)

    return strip_sums


def _sigmoid_strip_sums(s: Tensor, r: Tensor):
    """c_ab on a strip, one sigmoid and one log-sigmoid per cell (any finite s, r in [−inf, inf))."""
    ties = not bool(torch.isfinite(r).all())

    def strip_sums(chosen: slice, start: int, margin: Tensor, weight: Tensor, loss: Tensor) -> Tensor:
        torch.sub(s[:, chosen, None], s[:, None, start:], out=margin)  # m ≥ 0 where b ≥ a
        torch.sub(r[:, None, start:], r[:, chosen, None], out=weight)  # r_b − r_a
        if ties:
            weight.nan_to_num_(nan=0.0, posinf=math.inf, neginf=-math.inf)
        weight.sigmoid_().mul_(margin)  # σ(r_b − r_a) m
        torch._C._nn.log_sigmoid(margin, out=loss)
        return weight.sub_(loss)

    return strip_sums


HESSIAN_STRIP = 2**16
"""Cells per strip of `logistic_derivatives` (512 KiB of float64 per temporary, three of them).

Measured at A = 1000 (2**15 … 2**17): shorter strips pay more per-operation overhead (some
fifteen operations and as many views a strip), longer ones leave the cache."""

_MIN_RESPONSES = 64
"""Fewer responses than this: the cell-by-cell path, which batches many small tables at once."""


@dataclasses.dataclass(frozen=True)
class PairTable:
    """The weights of `logistic_derivatives` taken once for all its calls on one weight table [P, A, A].

    strips: n_ab = w_ab + w_ba on the strips of the upper triangle (`_strips`), each [g, rows, cols]
      and contiguous, zero on and below the diagonal; net [P]: c_a = Σ_(b > a) w_ab − Σ_(b < a) w_ba;
      ties [P]: Σ_a w_aa ln 2 (the diagonal cells' loss); key: the table and layout it was taken from.
    """

    strips: tuple[Tensor, ...]
    net: Tensor
    ties: Tensor
    key: tuple


def _table_key(weight: Tensor, budget: int) -> tuple:
    """What a `PairTable` depends on: the weights (storage, layout and in-place version) and the strip budget."""
    return (weight.data_ptr(), weight.shape, weight.stride(), weight.dtype, weight.device, weight._version, budget)


def pair_table(weight: Tensor, budget: int | None = None) -> PairTable:
    """The symmetric weights n = w + wᵀ strip by strip and the net weights c of `logistic_derivatives`.

    One pass over the table (w_ba read transposed); the strips hold about half a table.
    """
    P, A = weight.shape[0], weight.shape[-1]
    budget = HESSIAN_STRIP if budget is None else budget
    group = max(1, min(P, budget // (A * A)))
    layout = [
        (first, start, rows)
        for first in range(0, P, group)
        for start, rows in _strips(min(group, P - first), A, budget)
    ]
    sizes = [min(group, P - first) * rows * (A - start) for first, start, rows in layout]
    flat = weight.new_empty(sum(sizes))
    net = weight.new_zeros(P, A)
    strips = []
    for (first, start, rows), piece in zip(layout, flat.split(sizes), strict=True):
        g, cols = min(group, P - first), A - start
        w = weight.narrow(0, first, g)
        piece = piece.view(g, rows, cols)
        _copy_(piece, w.narrow(1, start, rows).narrow(2, start, cols))
        piece.narrow(2, 0, rows).triu_(1)  # the corner's cells b ≤ a belong to other strips (or the diagonal)
        net.narrow(0, first, g).narrow(1, start, rows).add_(piece.sum(dim=-1))
        net.narrow(0, first, g).narrow(1, start, cols).sub_(piece.sum(dim=-2))
        piece.add_(w.narrow(1, start, cols).narrow(2, start, rows).transpose(1, 2))
        piece.narrow(2, 0, rows).triu_(1)
        strips.append(piece)
    ties = math.log(2.0) * weight.diagonal(dim1=-2, dim2=-1).sum(dim=-1)
    return PairTable(tuple(strips), net, ties, _table_key(weight, budget))


def _pair_start(
    scores: Tensor, weight: Tensor, budget: int, cache: dict | None
) -> tuple[PairTable, Tensor, Tensor, Tensor] | None:
    """(pair table, e^(s − max s), e^(max s − s), the value's terms off the strips) of rows [P, A], or None.

    What `logistic_derivatives` and `logistic_values` start from: the `pair_table` of the weights
    (from `cache` where it holds the table of these weights and strips), the per-response
    exponentials and Σ_a w_aa ln 2 − Σ_a c_a s_a.  None for fewer than `_MIN_RESPONSES`
    responses or where the scores of a row spread over more than `_EXP_RANGE`.
    """
    if scores.shape[-1] < _MIN_RESPONSES:
        return None
    top, bottom = scores.amax(dim=-1, keepdim=True), scores.amin(dim=-1, keepdim=True)
    if float((top - bottom).max()) > _EXP_RANGE:
        return None
    table = None if cache is None else cache.get("pairs")
    if table is None or table.key != _table_key(weight, budget):
        table = pair_table(weight, budget)
        if cache is not None:
            cache["pairs"] = table
    centred = scores - top
    middle = scores - 0.5 * (top + bottom)  # Σ_a c_a = 0: any shift of s leaves Σ c_a s_a; this one keeps it small
    value = table.ties - (table.net * middle).sum(dim=-1)
    return table, torch.exp(centred), torch.exp(-centred), value


def logistic_derivatives(
    scores: Tensor,
    weight: Tensor,
    scale: Tensor,
    gamma: float,
    hess: Tensor,
    budget: int | None = None,
    cache: dict | None = None,
    *,
    upper_only: bool = False,
) -> tuple[Tensor, Tensor, Tensor] | None:
    """(value [P], gradient [P, A], Hessian diagonal [P, A]) of Σ_(a, b) w_ab (−ln σ(s_a − s_b)), times `scale`.

    The off-diagonal Hessian is written into `hess` [P, A, A] (its diagonal is set to zero: the
    returned diagonal is the whole of it).  With `upper_only` only the cells b ≥ a are written
    (the strict lower triangle keeps what it held, zeros in places): the Hessian is symmetric,
    and a factorization that reads one triangle needs no more, at half the writes.
    Rows [P, A] of scores s = γ u (u = ln π, or ln π − ln pi0 for DPO), weights [P, A, A] and
    per-row factors `scale` [P]; the derivatives are in u, so in the logits (ℓ depends on u
    through differences only).  With m = s_a − s_b (a < b), softplus(−m) = softplus(m) − m, so
    the pair's loss w_ab softplus(−m) + w_ba softplus(m) is n_ab softplus(m) − w_ab m with the
    symmetric n = w_ab + w_ba, and Σ_(a < b) w_ab m = Σ_a c_a s_a, c_a = Σ_(b > a) w_ab − Σ_(b < a) w_ba:
      value  Σ_(a < b) n_ab softplus(m) − Σ_a c_a s_a + Σ_a w_aa ln 2,
      ∂/∂u_a = γ (Σ_(b > a) n_ab σ(m_ab) − Σ_(b < a) n_ba σ(m_ba) − c_a),
      ∂²/∂u_a∂u_b = −γ² n_ab σσ' (σ = σ(m), σ' = σ(−m); the diagonal gets minus the row sums).
    n and c come from `pair_table`, once per weight table where the caller keeps a `cache`
    dict across calls (rebuilt when the weights or the strips change).  e^m comes from
    per-response exponentials (e^m = e^(s_a − max s) e^(max s − s_b)), so a pair takes no exp
    and one logarithm: σ' = 1 / (1 + e^m), σ = e^m σ', softplus(m) = ln(1 + e^m).  Neither
    sigmoid cancels for either sign of m; softplus(m) carries an absolute error of at most
    about one ulp of max(1, softplus(m)) per pair (where e^m < 2⁻⁵³ it reads 0, not e^m),
    which is the resolution of the value's other terms (−Σ c_a s_a is of the size of
    Σ n |m|), at a third of log1p's cost.  The pairs are taken a strip at a time (`_strips`),
    every step in place on three buffers kept across the strips: the Hessian is written once
    (times `scale`), the strip's rows and, unless `upper_only`, their transpose, its diagonal
    summed from them, and the value and gradient are scaled at the end.
    None (use the cell-by-cell path) when the scores of a row spread over more than `_EXP_RANGE`.
    """
    P, A = scores.shape
    budget = HESSIAN_STRIP if budget is None else budget
    prepared = _pair_start(scores, weight, budget, cache)
    if prepared is None:
        return None
    table, shrink, grow, value = prepared
    grad = -table.net
    diag = torch.zeros_like(scores)
    group = max(1, min(P, budget // (A * A)))
    cells = budget + A  # the most cells of one strip (`_strips`)
    # [g, rows, cols] buffers: e^m then softplus(m) then n σ; σ'; σ then the corner's transpose.
    first_buffer, second_buffer, third_buffer = (scores.new_empty(cells) for _ in range(3))
    ones = scores.new_ones(A)
    strips = iter(table.strips)
    for first in range(0, P, group):
        g = min(group, P - first)
        h = hess.narrow(0, first, g)
        shrink_col, grow_row = shrink.narrow(0, first, g).unsqueeze(-1), grow.narrow(0, first, g).unsqueeze(1)
        factor = scale.narrow(0, first, g)
        # γ² times the row's scale, a number where the strip holds one row: −γ² s n σσ' in one pass.
        curvature = gamma * gamma * (float(factor) if g == 1 else 1.0)
        total, first_sums, second_sums = value.narrow(0, first, g), grad.narrow(0, first, g), diag.narrow(0, first, g)
        for start, rows in _strips(g, A, budget):
            cols = A - start
            pairs = next(strips)
            n = g * rows * cols
            terms, rejected_prob, chosen_prob = (
                b[:n].view(g, rows, cols) for b in (first_buffer, second_buffer, third_buffer)
            )
            torch.mul(shrink_col.narrow(1, start, rows), grow_row.narrow(2, start, cols), out=terms)  # e^m
            torch.add(terms, 1.0, out=rejected_prob)  # 1 + e^m
            torch.log(rejected_prob, out=chosen_prob)  # softplus(m)
            total += _dots(pairs, chosen_prob)
            rejected_prob.reciprocal_()  # σ' = 1 / (1 + e^m)
            terms.mul_(rejected_prob).mul_(pairs)  # n σ, σ = e^m σ'
            _add_sums(first_sums, terms, terms, start, start, ones, -1.0)
            # −γ² n σσ', written into the strip's rows of the Hessian (the upper triangle); unless
            # `upper_only`, its corner is made symmetric and the rest of it copied to the lower triangle.
            strip = h.narrow(1, start, rows).narrow(2, start, cols)
            torch.addcmul(_ZERO, terms, rejected_prob, value=-curvature, out=strip)
            if g > 1:
                strip.mul_(factor.view(g, 1, 1))
            if upper_only:  # the corner's lower cells are zero (n is): the strip's column sums are the rest
                _add_sums(second_sums, strip, strip, start, start, ones, 1.0)
                continue
            corner = strip.narrow(2, 0, rows)
            corner.add_(chosen_prob.view(-1)[: g * rows * rows].view(g, rows, rows).copy_(corner.transpose(1, 2)))
            right = strip.narrow(2, rows, cols - rows)
            _copy_(h.narrow(1, start + rows, cols - rows).narrow(2, start, rows), right.transpose(1, 2))
            _add_sums(second_sums, strip, right, start, start + rows, ones, 1.0)
    value.mul_(scale)
    grad.mul_(scale.unsqueeze(-1) * gamma)
    diag.neg_()
    return value, grad, diag


def logistic_values(
    scores: Tensor, weight: Tensor, budget: int | None = None, cache: dict | None = None
) -> Tensor | None:
    """Σ_(a, b) w_ab (−ln σ(s_a − s_b)) per row [P], for rows [P, A] of scores and weights [P, A, A], or None.

    The value of `logistic_derivatives` alone, by the same identity (its docstring): with the
    symmetric n = w + wᵀ and net c of `pair_table` (taken from `cache` when the derivatives
    left it there), Σ_(a < b) n_ab softplus(m) − Σ_a c_a s_a + Σ_a w_aa ln 2, m = s_a − s_b,
    softplus(m) = ln(1 + e^m) with e^m from per-response exponentials: per cell of the upper
    triangle one product, one addition and one logarithm, a strip at a time.
    None (use the cell-by-cell path) for fewer than `_MIN_RESPONSES` responses or where the
    scores of a row spread over more than `_EXP_RANGE`.
    """
    P, A = scores.shape
    budget = HESSIAN_STRIP if budget is None else budget
    prepared = _pair_start(scores, weight, budget, cache)
    if prepared is None:
        return None
    table, shrink, grow, value = prepared
    group = max(1, min(P, budget // (A * A)))
    buffer = scores.new_empty(budget + A)
    strips = iter(table.strips)
    for first in range(0, P, group):
        g = min(group, P - first)
        shrink_col, grow_row = shrink.narrow(0, first, g).unsqueeze(-1), grow.narrow(0, first, g).unsqueeze(1)
        total = value.narrow(0, first, g)
        for start, rows in _strips(g, A, budget):
            cols = A - start
            terms = buffer[: g * rows * cols].view(g, rows, cols)
            torch.mul(shrink_col.narrow(1, start, rows), grow_row.narrow(2, start, cols), out=terms)  # e^m
            total += _dots(next(strips), terms.add_(1.0).log_())  # Σ n softplus(m)
    return value


_ZERO = torch.tensor(0.0, dtype=torch.float64)
"""The scalar of one-pass strip products: addcmul(0, x, y, value=c) is c·x·y."""


def _copy_(target: Tensor, source: Tensor) -> None:
    """target ← source; on the CPU by NumPy, whose strided copies (a transposed read) are faster than torch's."""
    if target.device.type == "cpu":
        numpy.copyto(target.numpy(), source.numpy())
    else:
        target.copy_(source)


def _dots(weights: Tensor, terms: Tensor) -> Tensor:
    """Σ weights · terms per group [g] over contiguous [g, ...] tensors."""
    g = weights.shape[0]
    if g == 1:
        return torch.dot(weights.view(-1), terms.view(-1)).unsqueeze(0)
    return torch.bmm(weights.view(g, 1, -1), terms.view(g, -1, 1)).view(g)


def _add_sums(
    sums: Tensor, by_rows: Tensor, by_columns: Tensor, start: int, column_start: int, ones: Tensor, column_sign: float
) -> None:
    """sums[the strip's rows, from `start`] += the row sums of `by_rows` [g, rows, ·];
    sums[from `column_start`] += column_sign · the column sums of `by_columns` [g, ·, cols]."""
    rows, cols = by_rows.shape[1], by_columns.shape[2]
    if by_rows.shape[0] == 1:  # matrix-vector products, in place: cheaper than strided reductions
        sums[0].narrow(0, start, rows).addmv_(by_rows[0], ones[: by_rows.shape[2]])
        rest = sums[0].narrow(0, column_start, cols)
        rest.addmv_(by_columns[0].t(), ones[: by_columns.shape[1]], alpha=column_sign)
        return
    sums.narrow(1, start, rows).add_(by_rows.sum(dim=-1))
    sums.narrow(1, column_start, cols).add_(by_columns.sum(dim=-2), alpha=column_sign)


MOVE_STRIP = 2**17
"""Cells times move sizes per strip of `logistic_mass_decreases` (1 MiB of float64 for its largest temporary)."""


def logistic_mass_decreases(scores: Tensor, weight: Tensor, lift: Tensor, budget: int | None = None) -> Tensor | None:
    """[T, P, A] the decrease of Σ_(a ≠ b) w_ab (−ln σ(s_a − s_b)) per row when the score of one response rises.

    Rows [P, A] of scores s, weights [P, A, A] (the diagonal cells are left out: their margin
    is 0 whatever the scores) and lifts [T, P, A] ≥ 0: entry [t, p, a] is the decrease when
    s_a alone rises by lift[t, p, a].  The mass-move certificate's move onto a by a fraction
    t of the mass (`synthalign.estimators.certificate.mass_moves`) raises ln π_a by Δ_a
    relative to every other response, so a score γ ln π (or γ ln[π/π0]) by γ Δ_a.
    A cell (a, b) (a chosen) holds ln(1 + x), x = e^(s_b − s_a).  With σ = σ(s_b − s_a) and
    τ = 1 − σ = σ(s_a − s_b), raising s_a by δ changes it by ln(τ + σ e^(−δ)), raising s_b by
    ln(τ + σ e^δ): one σ and one τ per cell, then per move size one logarithm in each role
    of the response, of a sum of two positive terms (each with its relative precision).
    Each change is thus exact to about one ulp of max(1, |change|) per cell, where the
    difference of the cell's losses before and after carries one ulp of the losses
    themselves: ln 1 ≈ 0 is resolved to 1e-16 (not to its own relative precision: a
    logarithm costs a third of log1p, and the certificate compares these sums with a
    tolerance in absolute terms).  σ and τ come from per-response exponentials:
    y = e^(s_a − max s) e^(max s − s_b), σ = 1 / (1 + y), τ = y σ.
    Rows are taken a strip at a time (`budget` cells times T).  None (use the cell-by-cell
    path) where anything is not finite, the scores of a row spread over more than
    `_EXP_RANGE` or a lift exceeds it (e^δ must stay a normal float).
    """
    P, A = scores.shape
    T = lift.shape[0]
    budget = MOVE_STRIP if budget is None else budget
    if not bool(torch.isfinite(scores).all()) or not bool(torch.isfinite(lift).all()):
        return None
    top, bottom = scores.amax(dim=-1, keepdim=True), scores.amin(dim=-1, keepdim=True)
    if float((top - bottom).max()) > _EXP_RANGE or float(lift.max()) > _EXP_RANGE:
        return None
    centred = scores - top
    shrink, grow = torch.exp(centred), torch.exp(-centred)
    lowered, raised = torch.exp(-lift), torch.exp(lift)  # e^(−δ) (the chosen role), e^δ (the rejected)
    decrease = scores.new_zeros(T, P, A)
    per_move = max(1, budget // T)
    group = max(1, min(P, per_move // (A * A)))
    cells = group * max(1, min(A, per_move // (group * A))) * A
    sigma_buffer, tau_buffer = scores.new_empty(cells), scores.new_empty(cells)
    move_buffer = scores.new_empty(T * cells)
    for first in range(0, P, group):
        g = min(group, P - first)
        prompts = slice(first, first + g)
        rows_per_strip = max(1, min(A, per_move // (g * A)))
        for start in range(0, A, rows_per_strip):
            rows = min(rows_per_strip, A - start)
            chosen = slice(start, start + rows)
            n = g * rows * A
            sigma, tau = sigma_buffer[:n].view(g, rows, A), tau_buffer[:n].view(g, rows, A)
            moved = move_buffer[: T * n].view(T, g, rows, A)
            torch.mul(shrink[prompts, chosen, None], grow[prompts, None, :], out=tau)  # y = e^(s_a − s_b)
            torch.add(tau, 1.0, out=sigma).reciprocal_()  # σ(s_b − s_a)
            tau.mul_(sigma)  # σ(s_a − s_b)
            w = weight[prompts, chosen]
            # the move onto the chosen response a (the strip's row): its cells' losses fall
            torch.addcmul(tau, sigma, lowered[:, prompts, chosen, None], out=moved)
            moved.log_().mul_(w)
            moved.diagonal(offset=start, dim1=2, dim2=3).zero_()  # the cells (a, a) do not change
            decrease[:, prompts, chosen] -= moved.sum(dim=-1)
            # the move onto the rejected response b (the column): its cells' losses rise
            torch.addcmul(tau, sigma, raised[:, prompts, None, :], out=moved)
            moved.log_().mul_(w)
            moved.diagonal(offset=start, dim1=2, dim2=3).zero_()
            decrease[:, prompts] -= moved.sum(dim=-2)
    return decrease
