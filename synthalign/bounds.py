"""The paper's constants, lemmas and explicit bounds for the world at hand (spec §3–4).

The user-facing home of `synthalign.theory.constants` (R, C_Π, C_ℛ, C_0, `world_constants`),
`synthalign.theory.lemmas` (Lemmas 8, 9, 10, ψ) and `synthalign.theory.bounds` (Prop. 12,
Thms 4, 6, 7, 14, Prop. 15); see `synthalign.theory.bounds` for the corrected constants.
"""

from synthalign.theory.bounds import (
    prop12_bound,
    prop15_factor,
    thm4_bound,
    thm6_bound,
    thm7_bound,
    thm14_intermediate_bound,
)
from synthalign.theory.constants import (
    WorldConstants,
    boundedness_constant,
    centred_reward,
    coverage_coefficient,
    coverage_coefficient_pairs,
    coverage_ratios,
    world_constants,
)
from synthalign.theory.lemmas import lemma8_lower, lemma9_factor, lemma9_upper, lemma10_lower, psi

__all__ = [
    "WorldConstants",
    "boundedness_constant",
    "centred_reward",
    "coverage_coefficient",
    "coverage_coefficient_pairs",
    "coverage_ratios",
    "lemma8_lower",
    "lemma9_factor",
    "lemma9_upper",
    "lemma10_lower",
    "prop12_bound",
    "prop15_factor",
    "psi",
    "thm4_bound",
    "thm6_bound",
    "thm7_bound",
    "thm14_intermediate_bound",
    "world_constants",
]
