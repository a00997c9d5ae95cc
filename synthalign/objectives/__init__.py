"""Objectives as pure functions over log-probability tensors (each loss written once).

* `synthalign.objectives.paper`: the paper's objectives (eq. 1, 4–6, 9–12, 15) and IPO;
* `synthalign.objectives.zoo`: published preference losses (TRL's DPO loss types, SimPO, ...);
* `synthalign.objectives.kl_estimators`: the k1/k2/k3 estimators of KL(π ‖ π0) (spec §6 item 14).

Turning a loss into something `fit`, the population loss and the conformance suite take by
name is `synthalign.registry`'s job.
"""

from synthalign._exports import flat_names
from synthalign.objectives.kl_estimators import KL_ESTIMATOR_KINDS, exact_kl_estimator_expectation, kl_estimator
from synthalign.objectives.paper import (
    bernoulli_kl_logits,
    distillation_loss,
    dpo_loss,
    ipo_loss,
    kl_penalty,
    pmle_loss,
    rebel_loss,
    reward_model_loss,
    rkl_loss,
    rlhf_loss,
)

__all__ = [*flat_names(__name__), "KL_ESTIMATOR_KINDS"]
