"""Nash-style objectives declared in the default registry, with their population targets under any law.

Online (self-play) IPO (Calandriello et al. 2024, arXiv 2403.08635) is Azar et al.'s IPO loss on
pairs drawn from the current policy.  As an objective over fixed data it is IPO: on pairs from μ,
labelled by any preference law P, its population minimizer is π ∝ π0 · exp((2 P(a ≻ μ) − 1)/(2τ))
(`closed_forms.ipo_minimizer`, whose derivation uses only P + Pᵀ = 1).  The iteration that redraws
the pairs from π_t (`synthalign.estimators.nash`, method "online_ipo") has the τ-regularized Nash
equilibrium as its fixed point: π = π0 · exp(P(· ≻ π)/τ)/Z, which is that minimizer with μ = π
(`synthalign.theory.games.regularized_nash`).  Nash-MD, SPPO's population update and extragradient
are iterations over exact win rates rather than losses over pairs; they live in
`synthalign.estimators.nash` with their declared targets (`NASH_TARGETS`).
"""

from __future__ import annotations

from synthalign.objectives import paper as losses
from synthalign.registry.paper import _ipo_derivatives
from synthalign.registry.protocol import objective
from synthalign.theory import closed_forms

NASH_OBJECTIVES = ("online_ipo",)


@objective(
    "online_ipo",
    reference="Calandriello et al. 2024, arXiv 2403.08635 (IPO of Azar et al. 2024 on self-play pairs)",
    margin_derivatives=_ipo_derivatives,
    consistent=False,
    expected_minimizer=closed_forms.ipo_minimizer,
)
def _online_ipo(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *, tau=0.1):
    return losses.ipo_loss(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, tau=tau, reduction="none")
