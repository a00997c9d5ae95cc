"""The paper's claims as runnable experiments (one module per claim).

Each module defines an `Args` dataclass (one-line docs per field), a
`run(args) -> dict` that computes every number, writes `<name>.json` and PNG
plots into `args.out`, and returns the results, and a `summary(results) -> str`
printing a short table.  `synthalign run <name>` drives them.
"""

from __future__ import annotations

import importlib
import types

__all__ = ["EXPERIMENTS", "load"]

EXPERIMENTS = {
    "fig1": "Figure 1: RLHF with beta tuned per n saturates while RKL keeps falling (spec §5)",
    "rates": "PMLE, distillation and RKL converge at rate 1/n and respect the explicit bounds (Thms 4, 6, 7)",
    "onpolicy-gap": "As mu's coverage of pi* worsens, PMLE and distillation degrade with C_Pi while RKL does not (§4)",
    "strong-base": "Thm 14 with and without A5: does distillation on pi0's responses gain as pi0 approaches pi*?",
    "degeneracy": (
        "RLHF collapses (beta_n -> 0) or underfits (fixed beta); "
        "unregularized PMLE/DPO are blind where there is no data (§2)"
    ),
    "prop15": "Reverse KL against forward KL, and Prop. 15's factor",
    "gradient-estimators": "What REINFORCE/RLOO with k1/k2/k3 KL estimators in the loss or reward follow (§6.14)",
    "onpolicy-rates": "Does RKL trained by stochastic gradients attain O(1/n), and at which sampling budget per step?",
    "general-preferences": (
        "Duality gaps of Nash-MD, online IPO, SPPO, extragradient and DPO/RKL on random and cyclic P"
    ),
    "misspecification": "A restricted reward class leaves a floor under the 1/n rate; reward over-optimization",
    "sequence-gap": "A tiny transformer vs the tabular AR policy on sequences: exact KL, mass leak, on-policy gap",
}


def load(name: str) -> types.ModuleType:
    """The module of experiment `name`; ValueError naming the known ones otherwise."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"synthalign.experiments.{name.replace('-', '_')}")
