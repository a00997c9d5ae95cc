"""Logistic pair losses on the cells of a finite world, one triangle of cells at a time.

PMLE and the reward model (eq. 4, 9) and DPO (eq. 6) are ℓ(x, a, b) = −ln σ(s_a − s_b) for
per-response scores s (γ ln π for PMLE, γ ln[π/π0] for DPO).  The margin is antisymmetric,
so the cells (a, b) and (b, a) share one transcendental evaluation:

* the population loss under spec §1's law weighs (a, b) by 2 D μ(a) μ(b) σ(r_a − r_b)
  (r = γ ln π*), so the pair {a, b} contributes 2 D μ(a) μ(b) c_ab with
  c_ab = σ(r_a − r_b) softplus(−m) + σ(r_b − r_a) softplus(m),  m = s_a − s_b;
  with the responses sorted by score (m ≥ 0 on the upper triangle),
  c_ab = σ(r_b − r_a) m + softplus(−m), a sum of non-negative terms (softplus(m) = softplus(−m) + m);
* the solver's derivatives (`synthalign.estimators.derivatives`) need σ(m), σ(−m) and
  softplus(±m) of both cells of a pair: two log1p and a few products per pair, in place on
  buffers reused across strips (`logistic_derivatives`), the Hessian written once.

Where the scores spread little enough (`_EXP_RANGE`), the sigmoids come from per-response
exponentials (e^(−m) = e^(s_b − max s) e^(max s − s_a)), so no cell takes an exp.  Pairs are
taken a strip of rows at a time, [rows, start:] for rows starting at `start`, so temporaries
stay the size of a strip.

This module only serves those two callers; it holds no state.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy
import torch
from torch import Tensor

from synthalign.registry import paper
from synthalign.registry.protocol import Objective

__all__ = ["logistic_derivatives", "logistic_scores", "population_logistic_sums"]

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
"""Cells per strip of `logistic_derivatives` (512 KiB of float64 per temporary, six of them).

Measured at A = 1000 (2**15 … 2**17): shorter strips pay more per-operation overhead (some
twenty operations and as many views a strip), longer ones leave the cache."""

_MIN_RESPONSES = 64
"""Fewer responses than this: the cell-by-cell path, which batches many small tables at once."""


def logistic_derivatives(
    scores: Tensor, weight: Tensor, scale: Tensor, gamma: float, hess: Tensor, budget: int | None = None
) -> tuple[Tensor, Tensor, Tensor] | None:
    """(value [P], gradient [P, A], Hessian diagonal [P, A]) of Σ_(a, b) w_ab (−ln σ(s_a − s_b)), times `scale`.

    The off-diagonal Hessian is written into `hess` [P, A, A] (its diagonal holds the pair
    terms' part −γ² W_aa σ(0)², to which the returned diagonal is to be added).
    Rows [P, A] of scores s = γ u (u = ln π, or ln π − ln pi0 for DPO), weights [P, A, A] and
    per-row factors `scale` [P]; the derivatives are in u, so in the logits (ℓ depends on u
    through differences only).  With m = s_a − s_b, σ = σ(m), σ' = σ(−m), a pair of cells
    (a, b), (b, a) gives
      value  w_ab softplus(−m) + w_ba softplus(m),
      ∂/∂u_a = −γ (w_ab σ' − w_ba σ) = −∂/∂u_b,
      ∂²/∂u_a∂u_b = −γ² W σσ', W = w_ab + w_ba (the diagonal gets the row sums of γ² W σσ').
    e^(∓m) come from per-response exponentials (e^(−m) = e^(max s − s_a) e^(s_b − max s)), so a
    pair takes no exp; σ = 1 / (1 + e^(−m)), σ' = e^(−m) σ, and softplus(∓m) = log1p(e^(∓m)),
    each one log1p with no cancellation for either sign of m.  The pairs are taken a strip at
    a time (`_strips`), every step in place on three buffers kept across the strips: the
    strip's weights are copied in once (w_ba read transposed), the Hessian is written once
    (times `scale`), the strip's rows and their transpose, its diagonal summed from them, and
    the value and gradient are scaled at the end.
    None (use the cell-by-cell path) when the scores of a row spread over more than `_EXP_RANGE`.
    """
    P, A = scores.shape
    if A < _MIN_RESPONSES:
        return None
    budget = HESSIAN_STRIP if budget is None else budget
    spread = scores.amax(dim=-1) - scores.amin(dim=-1)
    if float(spread.max()) > _EXP_RANGE:
        return None
    centred = scores - scores.amax(dim=-1, keepdim=True)
    grow, shrink = torch.exp(-centred), torch.exp(centred)
    value = scores.new_zeros(P)
    grad = torch.zeros_like(scores)
    diag = torch.zeros_like(scores)
    group = max(1, min(P, budget // (A * A)))
    cells = budget + A  # the most cells of one strip (`_strips`)
    # [g, rows, 2, cols] buffers, a strip's pairs (a, b) side by side with their transposes (b, a):
    # the weights (w_ab, w_ba), the terms (softplus(−m), softplus(m)) and (σ', −σ).  The value
    # and gradient are scaled once at the end, the Hessian's strip as it is written.
    weights, terms, probs = (scores.new_empty(2 * cells) for _ in range(3))
    ones = scores.new_ones(2 * A)
    for first in range(0, P, group):
        g = min(group, P - first)
        w, h = weight.narrow(0, first, g), hess.narrow(0, first, g)
        grow_col, grow_row = grow.narrow(0, first, g).unsqueeze(-1), grow.narrow(0, first, g).unsqueeze(1)
        shrink_col, shrink_row = shrink.narrow(0, first, g).unsqueeze(-1), shrink.narrow(0, first, g).unsqueeze(1)
        factor = scale.narrow(0, first, g)
        # γ² times the row's scale, a number where the strip holds one row: −γ² s σσ' in one pass.
        curvature = gamma * gamma * (float(factor) if g == 1 else 1.0)
        total, first_sums, second_sums = value.narrow(0, first, g), grad.narrow(0, first, g), diag.narrow(0, first, g)
        for start, rows in _strips(g, A, budget):
            cols = A - start
            pair_shape = (g, rows, 2, cols)
            n = math.prod(pair_shape)
            pair_weights, pair_terms, pair_probs = (buffer[:n].view(pair_shape) for buffer in (weights, terms, probs))
            (w_ab, w_ba), (t_ab, t_ba), (rejected_prob, minus_chosen_prob) = (
                x.unbind(2) for x in (pair_weights, pair_terms, pair_probs)
            )
            _copy_(w_ab, w.narrow(1, start, rows).narrow(2, start, cols))
            _copy_(w_ba, w.narrow(1, start, cols).narrow(2, start, rows).transpose(1, 2))  # read once across the rows
            torch.mul(grow_col.narrow(1, start, rows), shrink_row.narrow(2, start, cols), out=t_ab)  # e^(−m)
            torch.mul(shrink_col.narrow(1, start, rows), grow_row.narrow(2, start, cols), out=t_ba)  # e^m
            torch.sub(_MINUS_ONE, t_ab, out=minus_chosen_prob).reciprocal_()  # −σ = 1 / (−1 − e^(−m))
            torch.addcmul(_ZERO, t_ab, minus_chosen_prob, value=-1.0, out=rejected_prob)  # σ' = e^(−m) σ
            # The value: the corner's cells (a, b), b < a, are its cells (b, a): counted by w_ab only.
            _log1p_(pair_terms)  # softplus(−m), softplus(m)
            t_ba.narrow(2, 0, rows).zero_()
            total += _dots(pair_weights, pair_terms)
            # w_ab σ' − w_ba σ: the corner's pairs are counted by its rows only (its columns repeat them).
            torch.mul(pair_weights, pair_probs, out=pair_terms)
            right_terms = pair_terms.view(g, 2 * rows, cols).narrow(2, rows, cols - rows)
            _add_sums(first_sums, pair_terms.view(g, rows, 2 * cols), right_terms, start, ones, -1.0)
            # −γ² W σσ', written into the strip's rows of the Hessian and their transpose.
            torch.addcmul(_ZERO, rejected_prob, minus_chosen_prob, value=curvature, out=rejected_prob)
            if g > 1:
                rejected_prob.mul_(factor.view(g, 1, 1))
            torch.add(w_ab, w_ba, out=t_ab)  # W
            strip = h.narrow(1, start, rows).narrow(2, start, cols)
            torch.mul(t_ab, rejected_prob, out=strip)
            right = strip.narrow(2, rows, cols - rows)
            h.narrow(1, start + rows, cols - rows).narrow(2, start, rows).copy_(right.transpose(1, 2))
            _add_sums(second_sums, strip, right, start, ones, 1.0)
    value.mul_(scale)
    grad.mul_(scale.unsqueeze(-1) * -gamma)
    diag.neg_()
    return value, grad, diag


_ZERO, _MINUS_ONE = torch.tensor(0.0, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
"""Scalars of one-pass strip products: addcmul(0, x, y, value=c) is c·x·y, sub(−1, x) is −1 − x."""


def _copy_(target: Tensor, source: Tensor) -> None:
    """target ← source; on the CPU by NumPy, whose strided copies (a transposed read) are faster than torch's."""
    if target.device.type == "cpu":
        numpy.copyto(target.numpy(), source.numpy())
    else:
        target.copy_(source)


def _log1p_(tensor: Tensor) -> Tensor:
    """log1p in place; on the CPU by NumPy, whose vectorized log1p is a few times faster than torch's."""
    if tensor.device.type == "cpu" and tensor.is_contiguous():
        array = tensor.numpy()
        numpy.log1p(array, out=array)
        return tensor
    return tensor.log1p_()


def _dots(weights: Tensor, terms: Tensor) -> Tensor:
    """Σ weights · terms per group [g] over contiguous [g, ...] tensors."""
    g = weights.shape[0]
    if g == 1:
        return torch.dot(weights.view(-1), terms.view(-1)).unsqueeze(0)
    return torch.bmm(weights.view(g, 1, -1), terms.view(g, -1, 1)).view(g)


def _add_sums(sums: Tensor, by_rows: Tensor, by_columns: Tensor, start: int, ones: Tensor, column_sign: float) -> None:
    """sums[the strip's rows] += the row sums of `by_rows` [g, rows, ·]; sums[the columns right of its
    corner] += column_sign · the column sums of `by_columns` [g, ·, cols − rows]."""
    rows, right = by_rows.shape[1], by_columns.shape[2]
    if by_rows.shape[0] == 1:  # matrix-vector products, in place: cheaper than strided reductions
        sums[0].narrow(0, start, rows).addmv_(by_rows[0], ones[: by_rows.shape[2]])
        rest = sums[0].narrow(0, start + rows, right)
        rest.addmv_(by_columns[0].t(), ones[: by_columns.shape[1]], alpha=column_sign)
        return
    sums.narrow(1, start, rows).add_(by_rows.sum(dim=-1))
    sums.narrow(1, start + rows, right).add_(by_columns.sum(dim=-2), alpha=column_sign)
