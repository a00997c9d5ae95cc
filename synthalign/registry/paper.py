"""The paper's objectives (and IPO) declared in the default registry: the facts about each in one place.

Each declaration names the loss of `synthalign.objectives.paper` it evaluates, its analytic
margin derivatives for the solver, its closed form or population minimizer
(`synthalign.theory.closed_forms`), its consistency claim and its pair-swap form.
"""

from __future__ import annotations

import torch
from torch import Tensor

from synthalign._checks import safe_log_ratio
from synthalign.objectives import paper as losses
from synthalign.registry.protocol import objective
from synthalign.theory import closed_forms

__all__: list[str] = []  # declarations only: importing this module registers the paper's objectives


def _logistic_derivatives(margin: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """d/dΔ and d²/dΔ² of −ln σ(m) with m = scale · Δ + const."""
    neg = torch.sigmoid(-margin)
    return -scale * neg, scale * scale * neg * torch.sigmoid(margin)


def _pmle_derivatives(logp_chosen, logp_rejected, *, gamma):
    return _logistic_derivatives(gamma * safe_log_ratio(logp_chosen, logp_rejected), gamma)


@objective(
    "reward_model",
    reference="eq. 9",
    margin_derivatives=_pmle_derivatives,
    consistent=True,
    swap_symmetry="likelihood",
    fits_reward=True,
)
def _reward_model(logp_chosen, logp_rejected, *, gamma):
    # The tabular reward model is parameterized as R = gamma * logits, so its
    # margin R(a+) - R(a-) = gamma * ln[pi_R(a+)/pi_R(a-)]: eq. 9 is PMLE on pi_R.
    return losses.pmle_loss(logp_chosen, logp_rejected, gamma=gamma, reduction="none")


@objective(
    "pmle", reference="eq. 4/5", margin_derivatives=_pmle_derivatives, consistent=True, swap_symmetry="likelihood"
)
def _pmle(logp_chosen, logp_rejected, *, gamma):
    return losses.pmle_loss(logp_chosen, logp_rejected, gamma=gamma, reduction="none")


def _distillation_derivatives(logp_chosen, logp_rejected, target_margin, *, gamma):
    # d/dm KL(Bern(σ(t)) ‖ Bern(σ(m))) = σ(m) − σ(t), d²/dm² = σ(m)σ(−m), m = γΔ.
    margin = gamma * safe_log_ratio(logp_chosen, logp_rejected)
    first = gamma * (torch.sigmoid(margin) - torch.sigmoid(target_margin))
    return first, gamma * gamma * torch.sigmoid(margin) * torch.sigmoid(-margin)


@objective(
    "distillation",
    data="pairs",
    reference="eq. 11/12",
    margin_derivatives=_distillation_derivatives,
    consistent=True,
    swap_symmetry="loss",
)
def _distillation(logp_chosen, logp_rejected, target_margin, *, gamma):
    return losses.distillation_loss(logp_chosen, logp_rejected, target_margin, gamma=gamma, reduction="none")


def _reference_margin(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected) -> Tensor:
    """h = Δ − ln[pi0(a⁺)/pi0(a⁻)] with Δ = ln[pi(a⁺)/pi(a⁻)]: the margin of DPO (eq. 6), IPO and REBEL (eq. 10)."""
    return safe_log_ratio(logp_chosen, logp_rejected) - safe_log_ratio(ref_logp_chosen, ref_logp_rejected)


def _dpo_derivatives(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *, gamma):
    h = _reference_margin(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected)
    return _logistic_derivatives(gamma * h, gamma)


@objective(
    "dpo",
    reference="eq. 6",
    margin_derivatives=_dpo_derivatives,
    consistent=False,
    expected_minimizer=closed_forms.dpo_minimizer,
    swap_symmetry="likelihood",
)
def _dpo(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *, gamma):
    return losses.dpo_loss(
        logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, gamma=gamma, reduction="none"
    )


def _squared_residual_derivatives(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, target):
    """d/dΔ and d²/dΔ² of (h − target)² with h = Δ − ln[pi0(a⁺)/pi0(a⁻)], Δ = ln[pi(a⁺)/pi(a⁻)]: 2(h − t), 2."""
    residual = _reference_margin(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected) - target
    return 2.0 * residual, torch.full_like(residual, 2.0)


def _ipo_derivatives(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *, tau=0.1):
    return _squared_residual_derivatives(
        logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, 1.0 / (2.0 * tau)
    )


@objective(
    "ipo",
    reference="Azar et al. 2024, arXiv 2310.12036",
    margin_derivatives=_ipo_derivatives,
    consistent=False,
    expected_minimizer=closed_forms.ipo_minimizer,
)
def _ipo(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *, tau=0.1):
    return losses.ipo_loss(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, tau=tau, reduction="none")


def _rebel_derivatives(
    logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, reward_chosen, reward_rejected, *, eta=1.0
):
    target = eta * safe_log_ratio(reward_chosen, reward_rejected)
    return _squared_residual_derivatives(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, target)


@objective(
    "rebel",
    reference="eq. 10",
    margin_derivatives=_rebel_derivatives,
    consistent=False,
    expected_minimizer=closed_forms.rebel_minimizer,
    swap_symmetry="loss",
)
def _rebel(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, reward_chosen, reward_rejected, *, eta=1.0):
    return losses.rebel_loss(
        logp_chosen,
        logp_rejected,
        ref_logp_chosen,
        ref_logp_rejected,
        reward_chosen,
        reward_rejected,
        eta=eta,
        reduction="none",
    )


@objective("rkl", data="prompts", closed_form=closed_forms.rkl_minimizer, reference="eq. 15", consistent=True)
def _rkl(logp, reward, *, gamma):
    return losses.rkl_loss(logp, reward, gamma=gamma, reduction="none")


@objective("rlhf", data="prompts", closed_form=closed_forms.rlhf_minimizer, reference="eq. 1", consistent=False)
def _rlhf(logp, reward):
    return losses.rlhf_loss(logp, reward, beta=0.0, reduction="none")


@objective(
    "forward_kl",
    data="prompts",
    closed_form=closed_forms.forward_kl_minimizer,
    reference="spec §2, last note",
    consistent=True,
)
def _forward_kl(logp, reward, *, gamma):
    # KL(pi_R ‖ pi) up to a constant: −Σ_a pi_R(a) ln pi(a), with pi_R ∝ exp(R/gamma).
    target = torch.softmax(reward / gamma, dim=-1)
    return -torch.where(target > 0, target * logp, torch.zeros_like(logp)).sum(dim=-1)
