"""Objectives by name: the protocol (`Objective`, `Registry`, the `objective` decorator) and the declarations.

`synthalign.registry.protocol` defines what an objective is and declares; the paper's objectives
(`synthalign.registry.paper`) and the zoo (`synthalign.registry.zoo`) are declared in
`DEFAULT_REGISTRY` when this package is imported.  Evaluating an objective is
`synthalign.evaluate`'s job.
"""

from synthalign.registry import nash, paper, protocol, zoo  # noqa: F401 - fill DEFAULT_REGISTRY
from synthalign.registry.protocol import (
    DATA_KINDS,
    DEFAULT_REGISTRY,
    PAIR_INPUTS,
    PROMPT_INPUTS,
    Objective,
    Registry,
    get_objective,
    list_objectives,
    objective,
    objective_from_loss,
)

__all__ = [*protocol.__all__, "DATA_KINDS", "PAIR_INPUTS", "PROMPT_INPUTS"]
