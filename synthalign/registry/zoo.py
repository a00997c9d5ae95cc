"""The zoo's pair losses (`synthalign.objectives.zoo`) declared in the default registry.

Every registration is generated from the loss function's own signature
(`objective_from_loss`); this module holds only what the signature cannot say — the facts
about each loss — so adding a zoo loss is its function, one line here, and its test.
Every entry is a labelled-pair objective (``data="preferences"``) under the name of its
`ZOO_LOSSES` key: ``sa.fit("simpo", data)``, ``sa.population_loss("kto_pair", world, pi)``.

Conventions:

* The temperature every zoo loss calls `gamma` (TRL's single `beta`) is the world's gamma, as for the
  built-in "dpo": with it, DPO's population minimizer is pi0 · pi* (spec §2).  For the squared losses
  it is their regularization: f_ipo's tau and sppo's 1/eta equal the world's gamma (the built-in "ipo"
  keeps its own `tau`).  To fit with another temperature, register a wrapper with its own
  hyper-parameter.
* Hyper-parameters are the zoo function's, with its defaults; `label_smoothing` of cDPO and rDPO and
  `reward_bound` of chi-PO have none and must be passed (``sa.fit("chipo", data, reward_bound=1.0)``;
  the conformance suite uses each declaration's `example_params`).  SimPO's target margin is the
  hyper-parameter `margin`, because `target_margin` names the reward margin input of the protocol.
* On a finite world a response is one token, so the length arguments keep their default of 1.  A loss
  whose signature takes them declares `length_convention="per_token"` (SFT: "token_mean"), and the
  bridge passes the token counts of real sequences.

Not registered, because the objective protocol cannot express them (`NOT_REGISTERED`):

* "aot" and "aot_unpaired" sort the margins of a batch: the loss of a pair depends on the other pairs,
  so no per-cell loss exists (the Newton solver and the exact population loss need one);
* "xpo" adds alpha · ln pi(ã|x) with ã ~ pi0: a term of the whole policy row, not of the pair.
"""

from __future__ import annotations

from synthalign.objectives.zoo import ZOO_LOSSES
from synthalign.registry.protocol import objective_from_loss
from synthalign.theory.closed_forms import dpo_minimizer, gamma_ipo_minimizer, sft_minimizer, target_minimizer

NOT_REGISTERED = {
    "aot": "sorts the margins of the batch: the loss of a pair depends on the other pairs",
    "aot_unpaired": "sorts the log-ratios of the batch: the loss of a pair depends on the other pairs",
    "xpo": "its exploration term alpha ln pi(ã|x), ã ~ pi0, is a function of the policy row, not of the pair",
}

_DPO_LIKE = {"consistent": False, "expected_minimizer": dpo_minimizer, "swap_symmetry": "likelihood"}

DECLARATIONS: dict[str, dict] = {
    "f_dpo": {**_DPO_LIKE, "reference": "Rafailov et al. 2023; Wang et al. 2023"},
    "length_normalized_dpo": {**_DPO_LIKE, "reference": "Ahrabian et al. 2024"},
    "conservative_dpo": {"example_params": {"label_smoothing": 0.1}, "reference": "Mitchell 2023"},
    "robust_dpo": {"example_params": {"label_smoothing": 0.1}, "reference": "Chowdhury et al. 2024"},
    "exo_pair": {"reference": "Ji et al. 2024"},
    "discopop": {"reference": "Lu et al. 2024"},
    "simpo": {
        # With margin 0, SimPO's loss is PMLE's (eq. 4), consistent at beta = 0 (spec §6.13).
        "consistent": True,
        "expected_minimizer": target_minimizer,
        "swap_symmetry": "likelihood",
        "rename": {"target_margin": "margin"},
        "reference": "Meng et al. 2024",
    },
    # The loss only: what makes it online (pairs from the current policy) is the data.
    "online_dpo": {**_DPO_LIKE, "reference": "Guo et al. 2024"},
    "hinge": {
        # The Newton solver needs second derivatives; the hinge is piecewise linear, and its population
        # loss has kinks where the solver oscillates (largest gradient ~1e-2 after 100 iterations).
        "known_failures": {"population_minimizer": "Newton does not converge on a piecewise-linear loss"},
        "reference": "Zhao et al. 2023",
    },
    "f_ipo": {"consistent": False, "expected_minimizer": gamma_ipo_minimizer, "reference": "Azar et al. 2024"},
    "sppo": {"reference": "Wu et al. 2024"},
    "nca_pair": {"reference": "Chen et al. 2024"},
    "bco_pair": {"reference": "Jung et al. 2024"},
    "apo_zero": {"reference": "D'Oosterlinck et al. 2024"},
    "apo_down": {"reference": "D'Oosterlinck et al. 2024"},
    "kto_pair": {"reference": "Ethayarajh et al. 2024"},
    "chipo": {"example_params": {"reward_bound": 1.0}, "reference": "Huang et al. 2024"},
    # TRL's SFT term is a mean over the chosen tokens of the batch, not over pairs.
    "sft": {"consistent": False, "expected_minimizer": sft_minimizer, "length_convention": "token_mean"},
}
"""What each registered zoo loss declares beyond its signature (`Objective` fields, plus `rename`)."""

ZOO_OBJECTIVES: tuple[str, ...] = tuple(name for name in ZOO_LOSSES if name not in NOT_REGISTERED)
"""The registered names, in `ZOO_LOSSES` order."""


def _register() -> None:
    missing = set(ZOO_OBJECTIVES) ^ set(DECLARATIONS)
    if missing:
        raise RuntimeError(f"zoo losses and their declarations disagree on {sorted(missing)}")
    for name in ZOO_OBJECTIVES:
        declaration = dict(DECLARATIONS[name])
        loss = ZOO_LOSSES[name]
        source = f"synthalign.objectives.zoo.{loss.__name__}"
        declaration["reference"] = f"{source} ({declaration['reference']})" if "reference" in declaration else source
        objective_from_loss(loss, name, **declaration)


_register()

__all__ = ["DECLARATIONS", "NOT_REGISTERED", "ZOO_OBJECTIVES"]
