"""One step of each Nash-style method on a general preference law, as pure maps over log-probabilities.

These methods are iterations, not losses: each maps the current policy π_t (log-probabilities
[..., X, A]) to π_{t+1} through win-rate vectors w(q)(a) = P(a ≻ q | x) of some opponent q, which
the caller supplies as a function `rates(q_logp) -> [..., X, A]` (exact, `synthalign.theory.games.
win_rates`, or estimated from sampled pairs, `synthalign.estimators.nash`).  Given that oracle each
step is a pure function, as the losses of `synthalign.objectives` are.  Formulas (η the step, β the
KL weight of the game, π0 the reference):

* `nash_md_step` — Nash mirror descent (Munos et al. 2023, arXiv 2312.00886, §7): the geometric mixture
  q ∝ π^{1−ηβ} π0^{ηβ}, then π' ∝ q · exp(η w(q)).
* `online_ipo_step` — online (self-play) IPO (Calandriello et al. 2024, arXiv 2403.08635): a gradient
  step in the logits on Azar et al.'s IPO loss with pairs from sg(π); with g = ln π − ln π0 the exact
  gradient is 4 π(a)[g_a − E_π g − (w(π)(a) − 1/2)/β].
* `sppo_step` — SPPO's population update (Wu et al. 2024, arXiv 2405.00675, eq. 3.3): π' ∝ π exp(η w(π)).
* `extragradient_step` — entropy-regularized extragradient (Cen, Wei, Chi 2021, arXiv 2105.15186; EGPO,
  Zhou, Fazel, Du 2025): π½ ∝ π^{1−ηβ} π0^{ηβ} e^{η w(π)}, π' ∝ π^{1−ηβ} π0^{ηβ} e^{η w(π½)}.

Which policy each iteration approaches, and how, is declared with the method in
`synthalign.registry.nash`; running them is `synthalign.estimators.nash`'s.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

WinRates = Callable[[Tensor], Tensor]

__all__ = ["extragradient_step", "nash_md_step", "online_ipo_step", "sppo_step"]


def nash_md_step(logp: Tensor, ref_logp: Tensor, rates: WinRates, *, beta: float, eta: float) -> Tensor:
    """Nash-MD: q ∝ π^{1−ηβ} π0^{ηβ}, π' ∝ q · exp(η P(· ≻ q)) (module docstring); needs ηβ ≤ 1."""
    mixing = eta * beta
    mixture = torch.log_softmax((1 - mixing) * logp + mixing * ref_logp, dim=-1)
    return torch.log_softmax(mixture + eta * rates(mixture), dim=-1)


def online_ipo_step(logp: Tensor, ref_logp: Tensor, rates: WinRates, *, beta: float, eta: float) -> Tensor:
    """Online IPO: θ ← θ − η · 4π[g − E_π g − (P(· ≻ π) − 1/2)/β], g = ln π − ln π0, in the logits θ = ln π."""
    probs = logp.exp()
    g = logp - ref_logp
    centred = g - (probs * g).sum(-1, keepdim=True)
    grad = 4.0 * probs * (centred - (rates(logp) - 0.5) / beta)
    return torch.log_softmax(logp - eta * grad, dim=-1)


def sppo_step(logp: Tensor, ref_logp: Tensor, rates: WinRates, *, beta: float, eta: float) -> Tensor:
    """SPPO (population form): π' ∝ π exp(η P(· ≻ π)); β and π0 do not enter the update."""
    del ref_logp, beta
    return torch.log_softmax(logp + eta * rates(logp), dim=-1)


def extragradient_step(logp: Tensor, ref_logp: Tensor, rates: WinRates, *, beta: float, eta: float) -> Tensor:
    """Extragradient: a half step from π with w(π), then the full step from π with w(π½); needs ηβ ≤ 1."""
    mixing = eta * beta
    anchor = (1 - mixing) * logp + mixing * ref_logp
    half = torch.log_softmax(anchor + eta * rates(logp), dim=-1)
    return torch.log_softmax(anchor + eta * rates(half), dim=-1)
