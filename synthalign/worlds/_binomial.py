"""Exact Binomial(m, p) draws in torch, vectorized over any number of (m, p) pairs.

The count samplers split counts down a binary tree of cells (`synthalign.worlds.torch_sampling`):
one binomial per (replicate, node), with counts from 0 to 2^53.  `torch.binomial` spends on each
draw a time that depends on it — its inversion draws one uniform and one logarithm per success —
so a level whose counts are a few dozen costs several times a level of zeros or of huge counts.
Here every draw is one lane of a few tensor programs, so the cost is set by the number of draws,
not by their counts.  With q = min(p, 1 − p) (a draw for q is flipped, X = m − Y, when p > ½):

* m = 0 or q = 0: the draw is 0 (m when p = 1); no uniform is drawn.
* 0 < m·q < 10, inversion: one uniform u per draw, X = #{j < m : F(j) < u} with the cumulative
  mass F(j) = Σ_{i ≤ j} f(i) built by the recursion f(0) = (1 − q)^m,
  f(j) = f(j − 1) · (q / (1 − q)) · (m − j + 1) / j (Devroye, "Non-Uniform Random Variate
  Generation", 1986, §X.4.1).  Round j advances every draw still short of u by one term; a draw
  leaves once F(j) ≥ u (or j = m), and the draws left are compacted whenever they are fewer than
  half of those in the round, so a round costs the draws still in it.  E[X] < 10, and the rounds
  stay few.
* m·q ≥ 10, BTRS: Hörmann's transformed rejection with squeeze ("The generation of binomial random
  variates", J. Statist. Comput. Simul. 46, 1993, algorithm BTRS).  A round draws (U, V) for every
  draw still pending, accepts k = ⌊(2a/u_s + b)·U + c⌋ inside the box (u_s ≥ 0.07, V ≤ v_r) and
  otherwise tests ln(V·α/(a/u_s² + b)) ≤ ln f(k) − ln f(M) exactly (M = ⌊(m + 1) q⌋ the mode);
  rejected draws go to the next round (about 1 in 10 at large m·q, 1 in 5 near 10).

The log-ratio ln f(k)/f(M) is written for float64 at m up to 2^53: with d = k − M,
  ln f(k)/f(M) = −(k + ½)·ln1p(d/(M + 1)) − (m − k + ½)·ln1p(−d/(m − M + 1))
                 + d·ln(q (m − M + 1) / ((1 − q)(M + 1))) + δ(M) + δ(m − M) − δ(k) − δ(m − k),
from Stirling's formula ln j! = (j + ½) ln(j + 1) − (j + 1) + ½ ln 2π + δ(j); each term is of the
size of d, never of m (the form ln(ratio near 1)·m loses ~m·10⁻¹⁶).  δ(j) is tabled from `math.lgamma`
for j < 16 and its asymptotic series in x = j + 1, 1/(12x) − 1/(360x³) + 1/(1260x⁵) − 1/(1680x⁷),
beyond (truncation error below 1/(1188·17⁹) < 10⁻¹⁴).

Uniforms come from `torch.rand` on the given generator in a fixed order, so a seed fixes the draws
on a device; the same code runs on the CPU and on CUDA.  This module leaves the tree, the
validation of probabilities and the choice of generator to its callers.

On a CPU (one thread) it is no faster than `torch.binomial`: per draw, 26–50 ns against 37–46 ns at
means 0.5–1, 77–230 ns against 60–140 ns at means 2–8, 64–120 ns against 34 ns at huge means; each
float64 temporary over 128 KiB costs fresh pages (~6 ns a value) and each tensor operation 2–3 µs of
dispatch, and the uniforms alone cost 5–7 ns each.  The count sampler does not use it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["sample_binomial"]

# Hörmann's BTRS holds (its hat dominates) for m·q ≥ 10; below, inversion.
_BTRS_MIN_MEAN = 10.0
_TAIL_TABLE = 16
# On the CPU the draws go in blocks whose temporaries stay in cache (and below the allocator's
# threshold for fresh pages); a GPU takes them all at once.
_CPU_BLOCK = 2**17
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _stirling_tail_table() -> list[float]:
    """δ(j) = ln j! − (j + ½) ln(j + 1) + (j + 1) − ½ ln 2π for j < 16, from math.lgamma."""
    return [math.lgamma(j + 1) - (j + 0.5) * math.log(j + 1) + (j + 1) - _HALF_LOG_2PI for j in range(_TAIL_TABLE)]


_TAIL_VALUES = _stirling_tail_table()


def _stirling_tail(j: Tensor, table: Tensor) -> Tensor:
    """δ(j) (module docstring) of integer-valued float64 j ≥ 0: tabled below 16, the series beyond."""
    x = j + 1.0
    inverse_square = 1.0 / (x * x)
    series = (1 / 12 - inverse_square * (1 / 360 - inverse_square * (1 / 1260 - inverse_square / 1680))) / x
    small = j < _TAIL_TABLE
    if not bool(small.any()):
        return series
    return torch.where(small, table[j.clamp(0, _TAIL_TABLE - 1).long()], series)


def _inversion(m: Tensor, q: Tensor, generator: torch.Generator) -> Tensor:
    """Binomial(m, q) by sequential inversion (module docstring), 0 < m·q < 10, q ≤ ½; 1-D float64."""
    u = torch.rand(m.shape, generator=generator, dtype=torch.float64, device=m.device)
    ratio = q / (1.0 - q)
    term = torch.log1p(-q).mul_(m).exp_()
    cumulative = term.clone()
    # alive: F(j) < u and j < m, so that j counts in X; once false for a draw it stays false.
    alive = cumulative < u
    result = alive.to(torch.float64)
    where = None  # the index into `result` of each draw still in the rounds (None: all of them)
    j = 0
    while True:
        n_alive = int(alive.sum())
        if n_alive == 0:
            return result
        if 2 * n_alive < alive.numel():
            keep = alive.nonzero().squeeze(1)
            where = keep if where is None else where[keep]
            u, m, ratio, term, cumulative = u[keep], m[keep], ratio[keep], term[keep], cumulative[keep]
        j += 1
        # f(j) = f(j − 1)·r·(m − j + 1)/j
        term.mul_(ratio).mul_(torch.sub(m, j - 1)).mul_(1.0 / j)
        cumulative.add_(term)
        alive = (cumulative < u).logical_and_(m > j)
        if where is None:
            result.add_(alive)
        else:
            result.index_add_(0, where, alive.to(torch.float64))


def _btrs(m: Tensor, q: Tensor, generator: torch.Generator) -> Tensor:
    """Binomial(m, q) by Hörmann's BTRS (module docstring), m·q ≥ 10, q ≤ ½; 1-D float64."""
    table = torch.tensor(_TAIL_VALUES, dtype=torch.float64, device=m.device)
    spq = torch.sqrt(m * q * (1.0 - q))
    b = spq * 2.53 + 1.15
    a = b * 0.0248 + (q * 0.01 - 0.0873)
    two_a = a * 2.0
    c = m * q + 0.5
    alpha = (5.1 / b).add_(2.83).mul_(spq)
    v_r = (-4.2 / b).add_(0.92)
    result = None
    where = None  # the index into `result` of each draw still pending (None: all of them)
    while True:
        uniforms = torch.rand((2, m.numel()), generator=generator, dtype=torch.float64, device=m.device)
        u = uniforms[0].sub_(0.5)
        v = uniforms[1]
        us = u.abs().neg_().add_(0.5)
        k = (two_a / us).add_(b).mul_(u).add_(c).floor_()
        # Every pending draw takes its proposal; a rejected one is overwritten by a later round.
        if where is None:
            result = k
        else:
            result.index_put_((where,), k)
        inside = (k >= 0).logical_and_(k <= m)
        accept = (us >= 0.07).logical_and_(v <= v_r).logical_and_(inside)
        # Outside the box: the exact test ln(V·α/(a/u_s² + b)) ≤ ln f(k)/f(M), for the proposals in range.
        tested = (inside & ~accept).nonzero().squeeze(1)
        if tested.numel() > 0:
            accept[tested] = _btrs_test(
                m[tested], q[tested], k[tested], us[tested], v[tested], a[tested], b[tested], alpha[tested], table
            )
        rejected = (~accept).nonzero().squeeze(1)
        if rejected.numel() == 0:
            return result
        where = rejected if where is None else where[rejected]
        m, q, two_a, b, c, v_r, a, alpha = (x[rejected] for x in (m, q, two_a, b, c, v_r, a, alpha))


def _btrs_test(
    m: Tensor, q: Tensor, k: Tensor, us: Tensor, v: Tensor, a: Tensor, b: Tensor, alpha: Tensor, table: Tensor
) -> Tensor:
    """BTRS's acceptance outside the box: ln(V·α/(a/u_s² + b)) ≤ ln f(k)/f(M) (module docstring), 0 ≤ k ≤ m."""
    mode = torch.floor((m + 1.0) * q)
    d = k - mode
    log_ratio = torch.log(q * (m - mode + 1.0) / ((1.0 - q) * (mode + 1.0))).mul_(d)
    log_ratio -= torch.log1p(d / (mode + 1.0)).mul_(k + 0.5)
    log_ratio -= torch.log1p(-d / (m - mode + 1.0)).mul_(m - k + 0.5)
    log_ratio += _stirling_tail(mode, table) + _stirling_tail(m - mode, table)
    log_ratio -= _stirling_tail(k, table) + _stirling_tail(m - k, table)
    return torch.log(v * alpha / (a / (us * us) + b)) <= log_ratio


def sample_binomial(count: Tensor, prob: Tensor, generator: torch.Generator) -> Tensor:
    """Exact Binomial(count, prob) draws, elementwise, float64 (module docstring for the algorithm).

    `count` holds non-negative integers (float64, up to 2^53), `prob` values in [0, 1] broadcastable
    to it; both on the generator's device.  Shape: `count.shape`.
    """
    count = count.to(torch.float64)
    shape = count.shape
    m = count.reshape(-1)
    p = prob.to(torch.float64).expand(shape).reshape(-1)
    draws = torch.empty_like(m)
    block = _CPU_BLOCK if m.device.type == "cpu" else max(1, m.numel())
    for start in range(0, m.numel(), block):
        _sample_block(m[start : start + block], p[start : start + block], generator, draws[start : start + block])
    return draws.reshape(shape)


def _sample_block(m: Tensor, p: Tensor, generator: torch.Generator, out: Tensor) -> None:
    """Binomial(m, p) draws of one block of 1-D float64 (m, p) into `out`."""
    flip = p > 0.5
    q = torch.where(flip, 1.0 - p, p)
    mean = m * q
    draws = torch.zeros_like(m)
    for chosen, sampler in ((mean >= _BTRS_MIN_MEAN, _btrs), ((mean > 0) & (mean < _BTRS_MIN_MEAN), _inversion)):
        n_chosen = int(chosen.sum())
        if n_chosen == 0:
            continue
        if n_chosen == m.numel():
            draws = sampler(m, q, generator)
        else:
            index = chosen.nonzero().squeeze(1)
            draws[index] = sampler(m[index], q[index], generator)
    torch.where(flip, m - draws, draws, out=out)
