"""The objective zoo: published preference losses as pure functions over log-probabilities.

Every pairwise loss has the shape

    <name>_loss(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *,
                gamma, <hyper-parameters>, weight=None, reduction="mean")

where the four tensors hold ln π(a⁺|x), ln π(a⁻|x), ln π0(a⁺|x), ln π0(a⁻|x) for each pair (any
broadcastable shapes), and `weight` serves the three uses of `synthalign.objectives` (explicit pairs,
a dataset held as counts, the exact population loss).  Reference-free losses (SimPO, SFT) accept and
ignore the reference arguments so that every zoo entry can be called the same way.

Notation used in the docstrings: h⁺ = ln[π(a⁺)/π0(a⁺)] and h⁻ = ln[π(a⁻)/π0(a⁻)] are the log-ratios
(two −inf read as a tie, 0, via `safe_log_ratio`), and Δ = h⁺ − h⁻ is the DPO margin.

**Naming.** `gamma` is the preference temperature, the coefficient DPO papers and TRL call β (spec §1:
the paper puts γ where DPO papers put β).  In synthalign `beta` always weighs a KL(π ‖ π0) regularizer,
so no function here has a `beta` argument.

**Sequences.** On a finite response set a response is a single token: its length is 1 and per-token
and per-sequence conventions coincide.  Losses whose published or TRL form divides by the response
length take `length_chosen` / `length_rejected` (token counts, default 1) so that both conventions
can be reproduced.

**TRL.** `TRL_LOSS_TYPES` maps every `loss_type` of `trl.DPOTrainer` (TRL 1.16) to the function here
that reproduces it; `tests/test_zoo_trl.py` checks values and gradients against TRL itself.  Where TRL
and the paper disagree, the docstring says which convention is the default and a keyword selects the
other.

This module holds pair losses and KL estimators only.  The objectives of the paper synthalign
validates (PMLE, distillation, RKL, RLHF, …) live in `synthalign.objectives`; fitting them is
`synthalign.estimators`' job.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from synthalign._exports import flat_names
from synthalign.objectives._pairwise import DIVERGENCES
from synthalign.objectives.dpo_family import (
    aot_loss,
    aot_unpaired_loss,
    conservative_dpo_loss,
    discopop_loss,
    exo_pair_loss,
    f_dpo_loss,
    f_ipo_loss,
    hinge_loss,
    length_normalized_dpo_loss,
    robust_dpo_loss,
)
from synthalign.objectives.pair_losses import (
    apo_down_loss,
    apo_zero_loss,
    bco_pair_loss,
    chipo_loss,
    kto_pair_loss,
    nca_pair_loss,
    online_dpo_loss,
    sft_loss,
    simpo_loss,
    sppo_loss,
    xpo_loss,
)

__all__ = [*flat_names(__name__), "DIVERGENCES"]


ZOO_LOSSES: dict[str, Callable[..., Tensor]] = {
    "f_dpo": f_dpo_loss,
    "length_normalized_dpo": length_normalized_dpo_loss,
    "conservative_dpo": conservative_dpo_loss,
    "robust_dpo": robust_dpo_loss,
    "exo_pair": exo_pair_loss,
    "discopop": discopop_loss,
    "aot": aot_loss,
    "aot_unpaired": aot_unpaired_loss,
    "simpo": simpo_loss,
    "online_dpo": online_dpo_loss,
    "xpo": xpo_loss,
    "hinge": hinge_loss,
    "f_ipo": f_ipo_loss,
    "sppo": sppo_loss,
    "nca_pair": nca_pair_loss,
    "bco_pair": bco_pair_loss,
    "apo_zero": apo_zero_loss,
    "apo_down": apo_down_loss,
    "kto_pair": kto_pair_loss,
    "chipo": chipo_loss,
    "sft": sft_loss,
}
"""Every pair loss of the zoo by name (the function name without `_loss`)."""

TRL_LOSS_TYPES: dict[str, str] = {
    "sigmoid": "f_dpo_loss",
    "hinge": "hinge_loss",
    "ipo": "f_ipo_loss",
    "exo_pair": "exo_pair_loss",
    "nca_pair": "nca_pair_loss",
    "robust": "robust_dpo_loss",
    "bco_pair": "bco_pair_loss",
    "sppo_hard": "sppo_loss",
    "aot": "aot_loss",
    "aot_unpaired": "aot_unpaired_loss",
    "apo_zero": "apo_zero_loss",
    "apo_down": "apo_down_loss",
    "discopop": "discopop_loss",
    "sft": "sft_loss",
    "sigmoid_norm": "length_normalized_dpo_loss",
}
"""`trl.DPOConfig.loss_type` (TRL 1.16) → the synthalign function that reproduces it, with TRL's `beta`
passed as `gamma`, `label_smoothing`, `discopop_tau` as `tau`, `f_divergence_type` as `divergence` and
`f_alpha_divergence_coef` as 1 − `divergence_alpha`."""
