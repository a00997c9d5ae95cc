"""The right-hand sides of the paper's finite-class theorems (spec §4): Prop. 12, Thms 4, 6, 7, 14, Prop. 15.

Each takes the sample size n, the confidence δ and the world's constants (R, C_Π, C_ℛ, C_0:
`synthalign.theory.constants` computes them for a world and a class).  Fitting estimators
and measuring their errors is left to other modules; an experiment compares the two.

Conventions: every input is a number (n may also be a tensor of sample sizes, which makes the
bound a float64 tensor) and every bound a float computed in float64; +inf constants give +inf.
Each input is checked by the rule for its name (`_checked`), so a bad value raises a ValueError
naming the argument.

Constants (spec §4, Decision).  The proofs of Thms 4, 6, 14 (and, as argued at
`thm7_bound`, Thm 7) convert a squared preference error into a squared reward
error with |σ(u) − σ(v)| ≥ ½ e^{−(|u|∨|v|)} |u − v|, which is false (u = 0.001,
v = 0); Lemma 8 proves it with ¼.  Every bound that goes through this step takes
`corrected`: `True` (the default, and what synthalign reports) uses Lemma 8's ¼,
`False` reproduces the constant as printed.  The chain is

    E_{x; a,b∼μ}[(P_π(a≻b|x) − P_π*(a≻b|x))²] ≤ 4 ln(·)/n               (Prop. 12)
    (P_π − P_π*)² ≥ c² e^{−4γR} (ΔR̄_π(a) − ΔR̄_π(b))²          (Lemma 8 with slope c,
                                       |u|, |v| ≤ 2γR because |R̄| ≤ γR under A2)
    E_{a,b∼μ}[(ΔR̄(a) − ΔR̄(b))²] = 2 E_μ[ΔR̄²]     (spec §6.11; ΔR̄ is μ-centred)
    ⇒ E_μ[ΔR̄_π²] ≤ (4 / (2c²)) e^{4γR} ln(·)/n,

so the squared-reward constant 4/(2c²) is 8 with the printed c = ½ (the "8" of
Thm 14's intermediate bound; Thms 4, 6 print 16 = 2·8 and Thm 7's reward term
16 = 2·8) and 32 with c = ¼.  The corrected bounds are exactly 4 = (½ / ¼)²
times the printed ones in every term that passes through this step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from synthalign._checks import as_tensor, check_at_least, check_positive, check_unit_interval
from synthalign.theory.lemmas import _lemma9_factor_of_log

__all__ = [
    "prop12_bound",
    "thm4_bound",
    "thm6_bound",
    "thm14_intermediate_bound",
    "thm7_bound",
    "prop15_factor",
]

_DTYPE = torch.float64

_LEMMA8_SLOPE = 0.25  # proved in Lemma 8


_PRINTED_SLOPE = 0.5  # used by the printed proofs of Thms 4, 6, 7, 14; false near 0


_PREFERENCE_CONSTANT = 4.0


_THEOREMS = ("prop12", "thm4", "thm6", "thm14", "thm7")


def _check_n(n, name: str = "n"):
    """n > 0 as a float, or a float64 tensor of sample sizes (the bound is then a tensor)."""
    if isinstance(n, Tensor):
        n = as_tensor(n, name, dtype=_DTYPE)
        if not (torch.isfinite(n) & (n > 0)).all():
            raise ValueError(f"{name} must be finite and > 0, got {n}")
        return n
    return check_positive(n, name)


def _check_size(size, name: str) -> float:
    return check_at_least(size, name, 1.0)


def _check_constant(value, name: str) -> float:
    """A world constant (R, C_Π, …): >= 0; +inf is allowed and gives an infinite bound."""
    return check_at_least(value, name, 0.0, finite=False)


_CHECKS = {
    "n": _check_n,
    "delta": check_unit_interval,
    "gamma": check_positive,
    "class_size": _check_size,
    "reward_class_size": _check_size,
    "R": _check_constant,
    "C_Pi": _check_constant,
    "C_R": _check_constant,
    "C_0": _check_constant,
}


def _checked(**inputs) -> tuple:
    """The inputs of a bound, each checked (in the order given) by the rule for its name."""
    return tuple(_CHECKS[name](value, name) for name, value in inputs.items())


def _exp(x: float) -> float:
    return math.exp(x) if x < 709.0 else math.inf


def _reward_scale_constant(corrected: bool) -> float:
    """4/(2c²): E_μ[ΔR̄²] ≤ (4/(2c²)) e^{4γR} × (the ln(·)/n of Prop. 12); 32 corrected, 8 printed."""
    slope = _LEMMA8_SLOPE if corrected else _PRINTED_SLOPE
    return _PREFERENCE_CONSTANT / (2.0 * slope**2)


def _times(coverage: float, factor: float) -> float:
    # A trivial class (C = 0) has a zero bound whatever the other factors.
    return 0.0 if coverage == 0.0 else coverage * factor


def _reward_error(weight: float, R: float, gamma: float, corrected: bool) -> float:
    """weight · (4/(2c²)) e^{4γR}, 0 for a zero weight: Prop. 12's ln(·)/n carried to a squared reward error.

    The step of the module docstring (Lemma 8 with slope c, |u|, |v| ≤ 2γR under A2); `weight` is the
    coverage coefficient (Def. 3) of the measure the error is taken under, times its logarithms where
    they differ by class (Thm 14).
    """
    return _times(weight, _reward_scale_constant(corrected) * _exp(4.0 * gamma * R))


def _kl_from_reward_error(R: float, gamma: float) -> float:
    """Thms 4, 6: E_x KL(π*‖π̂) ≤ (½ ∨ ψ(e^{4R})) · 2(2R²e^{4R} + 3)/γ² · E_{π*}[ΔR̄²] (Lemma 9, A2)."""
    if R == math.inf:
        return math.inf
    return _lemma9_factor_of_log(4.0 * R) * 2.0 * (2.0 * R**2 * _exp(4.0 * R) + 3.0) / gamma**2


def prop12_bound(n: float, class_size: float, delta: float) -> float:
    """Prop. 12 (PMLE, preference scale): E_{x; a,b∼μ}[(P_π̂ − P_π*)²] ≤ 4 ln(|Π|/δ)/n.

    No sigmoid slope enters, so there is no corrected variant.
    """
    n, size, delta = _checked(n=n, class_size=class_size, delta=delta)
    return _PREFERENCE_CONSTANT * math.log(size / delta) / n


def thm4_bound(
    n: float, R: float, C_Pi: float, gamma: float, class_size: float, delta: float, *, corrected: bool = True
) -> float:
    """Thm 4 (PMLE): E_x KL(π*‖π̂) ≤ (½ ∨ ψ(e^{4R})) · 16(2R²e^{4R} + 3) · C_Π e^{4γR}/γ² · ln(|Π|/δ)/n.

    The printed 16 = 2 · 8, where 8 = 4/(2c²) with the proof's slope c = ½
    (module docstring).  `corrected=True` (default) uses Lemma 8's c = ¼: the
    16 becomes 64 and the bound is 4 times the printed one.
    """
    n, R, C_Pi, gamma, size, delta = _checked(n=n, R=R, C_Pi=C_Pi, gamma=gamma, class_size=class_size, delta=delta)
    reward_error = _reward_error(C_Pi, R, gamma, corrected)
    return _times(reward_error, _kl_from_reward_error(R, gamma)) * math.log(size / delta) / n


def thm6_bound(
    n: float,
    R: float,
    C_Pi: float,
    gamma: float,
    class_size: float,
    reward_class_size: float,
    delta: float,
    *,
    corrected: bool = True,
) -> float:
    """Thm 6 (distillation, pairs from μ):

        E_x KL(π*‖π̂) ≤ (½ ∨ ψ(e^{4R})) · 16(2R²e^{4R} + 3) · C_Π e^{4γR}/γ² · [ln(2|Π|/δ) + 2 ln(2|ℛ|/δ)]/n.

    As in Thm 4 the printed 16 = 2 · 4/(2c²) with c = ½; `corrected=True`
    (default) uses c = ¼, turning 16 into 64 (4 times the printed bound).
    """
    n, R, C_Pi, gamma, size, reward_size, delta = _checked(
        n=n, R=R, C_Pi=C_Pi, gamma=gamma, class_size=class_size, reward_class_size=reward_class_size, delta=delta
    )
    logs = math.log(2.0 * size / delta) + 2.0 * math.log(2.0 * reward_size / delta)
    reward_error = _reward_error(C_Pi, R, gamma, corrected)
    return _times(reward_error, _kl_from_reward_error(R, gamma)) * logs / n


def thm14_intermediate_bound(
    n: float,
    R: float,
    C_0: float,
    C_R: float,
    gamma: float,
    class_size: float,
    reward_class_size: float,
    delta: float,
    *,
    corrected: bool = True,
) -> float:
    """Thm 14's intermediate bound (distillation on π0's responses), a bound on E_{x, a∼π*}[(ΔR̄_π̂)²]:

        E_{π*}[(ΔR̄_π̂)²] ≤ 8 e^{4γR} [C_0 ln(2|Π|/δ) + 2 C_ℛ ln(2|ℛ|/δ)]/n.

    The printed 8 is 4/(2c²) with c = ½; `corrected=True` (default) uses c = ¼,
    turning 8 into 32 (4 times the printed bound).  Thm 14's KL statement is
    given only up to constants (≲) and is not computed.
    """
    n, R, C_0, C_R, gamma = _checked(n=n, R=R, C_0=C_0, C_R=C_R, gamma=gamma)
    size, reward_size, delta = _checked(class_size=class_size, reward_class_size=reward_class_size, delta=delta)
    weighted = _times(C_0, math.log(2.0 * size / delta)) + _times(C_R, 2.0 * math.log(2.0 * reward_size / delta))
    return _reward_error(weighted, R, gamma, corrected) / n


def thm7_bound(
    n: float,
    R: float,
    C_R: float,
    gamma: float,
    class_size: float,
    reward_class_size: float,
    delta: float,
    *,
    corrected: bool = True,
) -> float:
    """Thm 7 (RKL):

        E_x KL(π*‖π̂) ≤ (1 ∨ 2ψ(e^{4R})) · (16R² ln(2|Π|²/δ)/n + 16 C_ℛ(R²e^{4R} + 1) e^{4γR}/γ² · ln(2|ℛ|/δ)/n).

    The first term is the on-policy step over Π: no preference data and no
    sigmoid enter it, and it is the same in both variants.  The second term is
    the error of the reward model fitted on μ's pairs, and it goes through the
    same ½-slope step as Thms 4, 6, 14.  This is inferred from the structure, as
    the step is not displayed: with (1 ∨ 2ψ) = 2(½ ∨ ψ) (Lemma 9 after
    (u + v)² ≤ 2u² + 2v²) the printed second term reads

        2(½ ∨ ψ) · 2 · [(R²e^{4R} + 1)/γ²] · [8 e^{4γR} C_ℛ ln(2|ℛ|/δ)/n],

    whose last bracket is Thm 14's bound on E_{π*}[ΔR̄²] with 8 = 4/(2c²), c = ½.
    Had the proof used c = ¼ (bracket 32), the factor converting E_{π*}[ΔR̄²]
    into the squared log-ratio of π_R̂ to π* would be (R²e^{4R} + 1)/(2γ²)
    (2(½ ∨ ψ) · F · 32 = 2(½ ∨ ψ) · 16(R²e^{4R} + 1)/γ²), which tends to 1/(2γ²)
    as R → 0; but with μ = π* that squared log-ratio is
    ≈ Var_{π*}(ΔR̄)/γ² = E_{π*}[ΔR̄²]/γ², so the factor must be at least about
    1/γ².  The printed 16 therefore comes from c = ½.  `corrected=True`
    (default) multiplies the second term by 4 (its 16 becomes 64).
    """
    n, R, C_R, gamma, size, reward_size, delta = _checked(
        n=n, R=R, C_R=C_R, gamma=gamma, class_size=class_size, reward_class_size=reward_class_size, delta=delta
    )
    prefactor = 2.0 * _lemma9_factor_of_log(4.0 * R) if R < math.inf else math.inf
    on_policy = 16.0 * R**2 * math.log(2.0 * size**2 / delta)
    if R == math.inf:
        reward_kl = math.inf
    else:
        reward_kl = 2.0 * (R**2 * _exp(4.0 * R) + 1.0) / gamma**2
    reward_error = _reward_error(C_R, R, gamma, corrected)
    reward_term = _times(reward_error, reward_kl) * math.log(2.0 * reward_size / delta)
    return prefactor * (on_policy + reward_term) / n


def prop15_factor(R: float) -> float:
    """Prop. 15: E_x KL(π̂‖π*) ≤ ((4R ∨ 1) e^{8R+1}/R²) · E_x KL(π*‖π̂); returns the factor (R > 0)."""
    R = check_positive(R, "R")
    return max(4.0 * R, 1.0) * _exp(8.0 * R + 1.0) / R**2
