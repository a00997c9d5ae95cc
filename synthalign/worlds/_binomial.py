"""Exact Binomial(m, p) draws in torch: `torch.binomial` beside a vectorized inversion for moderate means.

The count sampler splits counts down a binary tree of cells (`synthalign.worlds.torch_sampling`):
one binomial per (replicate, node), [R, K] draws a level with one split probability per node
(column) shared by the R replicates (rows), counts from 0 to 2^53.  `torch.binomial` draws them one
after another; with q = min(p, 1 − p) it returns a zero count (or q = 0) at once, takes Hörmann's
BTRS for m·q ≥ 10, and below that an inversion that draws one uniform and one logarithm per
success — so its draws of means 1 to 10 cost several times one of a zero or of a huge count.
Here the columns of such means go to a vectorized inversion instead, every draw one lane of a few
tensor programs (on one CPU thread, a [1000, 512] level of equal counts at p = ½: torch.binomial
56, 68, 92, 134, 204 ns a draw at means 0.5, 1, 2, 4, 8, the inversion 32, 35, 41, 50, 65; at mean
12, 100 against 82; BTRS 90–100 ns at means 16–32, 50–60 at huge ones; a zero count 4 ns):

  one uniform u per draw, X = #{j < m : F(j) < u}, with the cumulative mass F(j) = Σ_{i ≤ j} f(i)
  built by the recursion f(0) = (1 − q)^m, f(j) = f(j − 1) · (q / (1 − q)) · (m − j + 1) / j
  (Devroye, "Non-Uniform Random Variate Generation", 1986, §X.4.1),

for q, and the flip X = m − Y of a draw Y for q = 1 − p where p > ½.  Round j subtracts f(j) from
every draw's residual u − F(j − 1); X counts the rounds whose residual is positive (F is
non-decreasing, so a draw that reaches F(j) ≥ u stays there).  The rounds run over a whole block of
the draws until none is short of its u: about the largest X of the block plus one (compacting the
draws left costs more here than the rounds it saves, a round's dispatch costing about what its
arithmetic does).  The rounds stop at j = min(max m, 128) — P(X > 128) < (20e/128)^128 < 10⁻⁴⁷ at a
mean below 20 — and a draw still short of u then (its F(m) rounded below u, a chance of about
10⁻¹⁶) is X = min(m, 129).  (1 − q)^m ≥ 4^{−20} for m·q < 20, q ≤ ½, so f(0) never underflows.

Which draws go where changes their cost, never their law.  A column goes to the inversion when
every draw in it has a mean m·q below 20 and the counts of its first rows average at least one
(the inversion draws a uniform and runs its rounds for a zero count all the same, which
torch.binomial returns at once), provided the inversion gets at least 4096 draws (below, its
rounds cost their dispatch whatever the draws); a column of zero means (zero counts, or q = 0)
follows the others when they all go to the inversion.  The other columns go to one
`torch.binomial`, drawn first; then the inversion's uniforms, one `torch.rand` of its draws; so a
seed fixes the draws on a device, and the same code runs on the CPU and on CUDA.  On the CPU the
inversion's rounds go over blocks of about 2^14 draws, whose temporaries stay in cache; a GPU
takes all of them at once.

This module leaves the tree, the validation of probabilities and the choice of generator to its
callers.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sample_binomial"]

# The routing (module docstring): the inversion takes columns of means below _INVERSION_MAX_MEAN whose
# first rows (at most _HEAD_ROWS, a sixteenth of them) hold an average count of at least one, and
# at least _INVERSION_MIN_DRAWS draws.
_INVERSION_MAX_MEAN = 20.0
_INVERSION_MIN_DRAWS = 4096
_HEAD_ROWS = 16
_CPU_BLOCK = 2**14
# A mean below 20 puts P(X > 128) below (20e/128)^128 < 1e-47: no draw needs more rounds.
_MAX_ROUNDS = 128


def sample_binomial(count: Tensor, prob: Tensor, generator: torch.Generator) -> Tensor:
    """Exact Binomial(count, prob) draws, elementwise, float64 (module docstring for the algorithm).

    `count` [R, K] holds non-negative integers (float64, up to 2^53), `prob` [1, K] (one row of
    probabilities shared by the R rows, never copied to them) or [R, K] values in [0, 1]; both on
    the generator's device.  Shape: [R, K].
    """
    count = count.to(torch.float64)
    prob = prob.to(torch.float64)
    rows = count.shape[0]
    if count.numel() < _INVERSION_MIN_DRAWS:
        return _plain(count, prob, generator)
    q = torch.minimum(prob, 1.0 - prob)
    # The first row bounds each column's largest mean from below: where none is below 20 (the levels
    # of large counts), the inversion takes nothing.
    if not bool((count[0] * q[0] < _INVERSION_MAX_MEAN).logical_and_(q[0] > 0).any()):
        return _plain(count, prob, generator)
    # The first rows decide the columns that cannot go to the inversion, at a sixteenth of a pass.
    head = count[: max(1, min(_HEAD_ROWS, rows // 16))]
    candidate = head.sum(dim=0) >= head.shape[0]
    if int(candidate.count_nonzero()) * rows < _INVERSION_MIN_DRAWS:
        return _plain(count, prob, generator)
    candidate.logical_and_((head * q[: head.shape[0]]).amax(dim=0) < _INVERSION_MAX_MEAN)
    if int(candidate.count_nonzero()) * rows < _INVERSION_MIN_DRAWS:
        return _plain(count, prob, generator)
    largest = (count * q).amax(dim=0) if q.shape[0] > 1 else count.amax(dim=0).mul_(q[0])
    positive = largest > 0
    inversion = candidate.logical_and_(positive).logical_and_(largest < _INVERSION_MAX_MEAN)
    n_inversion = int(inversion.count_nonzero())
    if n_inversion * rows < _INVERSION_MIN_DRAWS:
        return _plain(count, prob, generator)
    # A column of zero means (zero counts, or q = 0) is exact without a uniform either way: it goes
    # along with the others when they all go to the inversion.
    if n_inversion == int(positive.count_nonzero()):
        return _inversion_columns(count, prob, generator)
    columns = inversion.nonzero().squeeze(1)
    rest = inversion.logical_not().nonzero().squeeze(1)
    draws = torch.empty_like(count)
    rest_prob = prob.index_select(1, rest).expand(rows, -1)
    draws.index_copy_(1, rest, torch.binomial(count.index_select(1, rest), rest_prob, generator=generator))
    inverted = _inversion_columns(count.index_select(1, columns), prob.index_select(1, columns), generator)
    draws.index_copy_(1, columns, inverted)
    return draws


def _plain(count: Tensor, prob: Tensor, generator: torch.Generator) -> Tensor:
    """Every draw of the level by `torch.binomial`, the row of probabilities expanded over the rows."""
    return torch.binomial(count, prob.expand_as(count), generator=generator)


def _inversion_columns(m: Tensor, p: Tensor, generator: torch.Generator) -> Tensor:
    """Binomial(m, p) by inversion (module docstring): m [R, K] float64, p [1, K] or [R, K], means < 20."""
    rows, columns = m.shape
    q = torch.minimum(p, 1.0 - p)
    ratio = q / (1.0 - q)
    log_keep = torch.log1p(-q)  # ln(1 − q): f(0) = (1 − q)^m = exp(m·ln(1 − q))
    u = torch.rand(m.shape, generator=generator, dtype=torch.float64, device=m.device)
    rounds = min(float(m.max()), _MAX_ROUNDS)
    y = torch.empty_like(m)
    step = max(1, _CPU_BLOCK // columns) if m.device.type == "cpu" else rows
    for start in range(0, rows, step):
        block = slice(start, start + step)
        ratio_block, log_keep_block = (x if x.shape[0] == 1 else x[block] for x in (ratio, log_keep))
        _inversion(m[block], ratio_block, log_keep_block, u[block], y[block], rounds)
    # X = Y + [p > ½]·(m − 2Y): the flip m − Y where p > ½ (arithmetic, cheaper than torch.where).
    flip = torch.gt(p, 0.5).to(torch.float64)
    return torch.addcmul(y, torch.sub(m, y, alpha=2.0), flip)


def _inversion(m: Tensor, ratio: Tensor, log_keep: Tensor, u: Tensor, out: Tensor, rounds: float) -> None:
    """Binomial(m, q) by sequential inversion (module docstring) of a block m [b, K], q ≤ ½, into `out`.

    ratio = q/(1 − q) and log_keep = ln(1 − q) are [1, K] or [b, K]; u [b, K] the draws' uniforms;
    every round runs over the whole block.
    """
    term = torch.mul(m, log_keep).exp_()  # f(0) = (1 − q)^m
    residual = torch.sub(u, term)  # u − F(j): the draw's X exceeds j while it is positive
    # factor = q/(1 − q)·(m − j + 1) for the round j ahead, so that f(j) = f(j − 1)·factor/j.
    factor = torch.mul(m, ratio)
    out.zero_()
    short = torch.empty_like(m)
    j = 0
    while True:
        torch.gt(residual, 0.0, out=short)
        n_short = float(short.sum())
        out.add_(short)
        if n_short == 0:
            return
        if j >= rounds:
            torch.minimum(out, m, out=out)  # F(m) rounded below u: X = m
            return
        j += 1
        term.mul_(factor).mul_(1.0 / j)
        factor.sub_(ratio)
        residual.sub_(term)
