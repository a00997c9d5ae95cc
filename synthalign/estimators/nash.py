"""Nash-style iterations on a general preference law, exact and sampled, batched over replicates.

Each method maps the current policy π_t (per prompt, in log space) to π_{t+1} through the win
rates w(q)(a) = P(a ≻ q) of some opponent q (`synthalign.theory.games.win_rates`); the step maps are
`synthalign.objectives.nash`'s and the methods, with their declared targets, are registered in
`synthalign.registry.nash.METHOD_REGISTRY` (conformance: `synthalign.testing.method_checks`):

* ``nash_md`` — Nash mirror descent (Munos et al. 2023, arXiv 2312.00886, §7): the geometric
  mixture q_t ∝ π_t^{1−ηβ} π0^{ηβ}, then π_{t+1} = argmax_π η P(π ≻ q_t) − KL(π ‖ q_t), i.e.
  π_{t+1} ∝ q_t · exp(η w(q_t)).  Last iterate → the β-regularized equilibrium.
* ``online_ipo`` — online (self-play) IPO (Calandriello et al. 2024, arXiv 2403.08635): gradient
  descent in the logits on Azar et al.'s IPO loss E[(h_π(a⁺, a⁻) − 1/(2β))²] with the pairs drawn
  from a stopped-gradient copy of π_t.  With g = ln π − ln π0 the exact gradient is
  ∂L/∂θ_a = 4 π_t(a) [g_a − E_{π_t} g − (w(π_t)(a) − 1/2)/β]  (derivation: `ipo_tilt`'s, with μ = π_t),
  so θ ← θ − η ∂L/∂θ.  Its fixed points are the β-regularized equilibrium (Calandriello et al., Thm 1).
* ``sppo`` — self-play preference optimization, population form (Wu et al. 2024, arXiv 2405.00675,
  eq. 3.3): π_{t+1} ∝ π_t · exp(η w(π_t)), multiplicative weights on the unregularized game; its
  *average* iterate approaches a von Neumann winner (the last iterate may cycle).
* ``extragradient`` — entropy-regularized extragradient (Cen, Wei, Chi 2021, arXiv 2105.15186, the
  "PU" method; used for NLHF by Zhou, Fazel, Du 2025, EGPO):
  π_{t+½} ∝ π_t^{1−ηβ} π0^{ηβ} exp(η w(π_t)),  π_{t+1} ∝ π_t^{1−ηβ} π0^{ηβ} exp(η w(π_{t+½})).
  Last iterate → the β-regularized equilibrium, linearly for small η.

Sampled variants (``n_pairs`` given).  **Decision:** every method sees the law only through one
estimator of a win-rate vector: n labelled pairs per evaluation, x ~ D, a ~ uniform (exploration),
b ~ q (the opponent), labelled by P; ŵ(x, a) = wins / draws of (x, a) (1/2 when (x, a) was never
drawn).  Extragradient evaluates two win-rate vectors per iteration, so it uses 2n pairs per
iteration.  The counts are drawn by binomial splitting over the cells, batched over replicates
with a different law per replicate (O(cells) whatever n).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synthalign._checks import check_positive
from synthalign.registry.nash import METHOD_REGISTRY, Method, get_method, list_methods
from synthalign.theory.games import duality_gap, game_matrix, win_rates
from synthalign.worlds.policy import Policy, as_logp
from synthalign.worlds.torch_sampling import _split_counts, make_generator

if TYPE_CHECKING:
    from synthalign.worlds.tabular import World

__all__ = ["NASH_METHODS", "NASH_TARGETS", "NashTrace", "nash_iterations"]

NASH_METHODS = tuple(list_methods())
"""The registered methods (`synthalign.registry.nash.METHOD_REGISTRY`): nash_md, online_ipo, sppo, extragradient."""
NASH_TARGETS = {name: get_method(name).declared for name in NASH_METHODS}
"""What each method's iteration converges to, as its paper states (declared with the method)."""


@dataclasses.dataclass(frozen=True)
class NashTrace:
    """The iterates of one method.

    Attributes:
      method, beta, eta: the method and its regularization and step size.
      logp: iterates π_0 … π_T, [T+1, R, X, A].
      gap: duality gap of each iterate in the β-regularized game, [T+1, R].
      gap_unregularized: duality gap of each iterate in the game at β = 0, [T+1, R].
      average_gap_unregularized: β = 0 gap of the running average (1/(t+1)) Σ_{s≤t} π_s, [T+1, R].
      n_pairs: labelled pairs per win-rate evaluation (None: exact).
    """

    method: str
    beta: float
    eta: float
    logp: Tensor
    gap: Tensor
    gap_unregularized: Tensor
    average_gap_unregularized: Tensor
    n_pairs: int | None

    @property
    def policy(self) -> Policy:
        """The last iterate, [R, X, A]."""
        return Policy(self.logp[-1])

    @property
    def target(self) -> str:
        """The method's declared target, in words (empty for a method outside `METHOD_REGISTRY`)."""
        return get_method(self.method).declared if self.method in METHOD_REGISTRY else ""


def _sampled_win_rates(matrix, prompt_dist, opponent, n, generator) -> Tensor:
    """ŵ(x, a) from n pairs per replicate: x ~ D, a ~ uniform, b ~ opponent, labels ~ P (module docstring)."""
    R, X, A = opponent.shape
    cells = prompt_dist[:, None, None] / A * opponent.exp().unsqueeze(-2).expand(R, X, A, A)
    draws = _split_counts(cells.reshape(R, -1), n, R, generator).reshape(R, X, A, A)
    wins = torch.binomial(draws, matrix.expand(R, X, A, A).contiguous(), generator=generator)
    appearances = draws.sum(-1)
    return torch.where(appearances > 0, wins.sum(-1) / appearances.clamp_min(1.0), torch.full_like(appearances, 0.5))


def nash_iterations(
    method: str | Method,
    matrix: Tensor | World,
    reference: Policy | Tensor,
    *,
    beta: float,
    eta: float,
    iterations: int,
    start: Policy | Tensor | None = None,
    prompt_dist: Tensor | None = None,
    n_pairs: int | None = None,
    replicates: int = 1,
    seed: int = 0,
) -> NashTrace:
    """Runs `method` (a registered `Method` or its name, `NASH_METHODS`) for `iterations` steps from `start`.

    The start defaults to π0; each step is the method's declared step map (`synthalign.objectives.nash`).

    Args:
      matrix: P[x, a, b] (or a world, whose law gives it).
      reference: π0 [X, A]; also the KL anchor of the regularized game.
      beta: the KL weight of the game (> 0 for nash_md, online_ipo, extragradient; sppo ignores it
        in its update, and its `gap` is then measured at this beta as for the others).
      eta: step size; nash_md and extragradient need η β ≤ 1.
      n_pairs: labelled pairs per win-rate evaluation (None: exact win rates).
      replicates, seed: independent sampled runs (ignored when exact, R = 1).
    """
    declared = get_method(method)
    eta = check_positive(eta, "eta")
    beta = check_positive(beta, "beta", allow_zero=not declared.needs_beta)
    if declared.max_eta_beta is not None and eta * beta > declared.max_eta_beta:
        raise ValueError(
            f"eta * beta must be at most {declared.max_eta_beta:g} for {declared.name}, got {eta * beta:g}"
        )
    if not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    if n_pairs is not None and (not isinstance(n_pairs, int) or n_pairs < 1):
        raise ValueError(f"n_pairs must be a positive integer or None, got {n_pairs!r}")
    if not isinstance(matrix, Tensor):
        prompt_dist = matrix.prompt_dist if prompt_dist is None else prompt_dist
    matrix = game_matrix(matrix)
    ref = as_logp(reference, "reference")
    if prompt_dist is None:
        prompt_dist = torch.full((ref.shape[-2],), 1.0 / ref.shape[-2], dtype=ref.dtype, device=ref.device)
    R = replicates if n_pairs is not None else 1
    logp = (ref if start is None else as_logp(start, "start")).expand(R, *ref.shape).clone()
    generator = make_generator(seed, ref.device) if n_pairs is not None else None

    def rates(opponent: Tensor) -> Tensor:
        if n_pairs is None:
            return win_rates(matrix, opponent)
        return _sampled_win_rates(matrix, prompt_dist, opponent, n_pairs, generator)

    iterates = [logp]
    for _ in range(iterations):
        logp = declared.step(logp, ref, rates, beta=beta, eta=eta)
        iterates.append(logp)
    stacked = torch.stack(iterates)
    steps = torch.arange(1, iterations + 2, dtype=stacked.dtype, device=stacked.device)
    average = (torch.cumsum(stacked.exp(), dim=0) / steps[:, None, None, None]).log()
    gap = duality_gap(stacked, matrix, beta=beta, reference=ref, prompt_dist=prompt_dist)
    gap0 = duality_gap(stacked, matrix, prompt_dist=prompt_dist)
    average_gap0 = duality_gap(average, matrix, prompt_dist=prompt_dist)
    return NashTrace(declared.name, beta, eta, stacked, gap, gap0, average_gap0, n_pairs)
