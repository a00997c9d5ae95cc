"""Nash-style objectives and methods declared in the default registries, with their population targets.

**Objectives.**  Online (self-play) IPO (Calandriello et al. 2024, arXiv 2403.08635) is Azar et al.'s IPO
loss on pairs drawn from the current policy.  As an objective over fixed data it is IPO: on pairs from μ,
labelled by any preference law P, its population minimizer is π ∝ π0 · exp((2 P(a ≻ μ) − 1)/(2τ))
(`closed_forms.ipo_minimizer`, whose derivation uses only P + Pᵀ = 1).

**Methods.**  Nash-MD, SPPO's population update, extragradient — and online IPO as the iteration that
redraws its pairs from π_t — are *iterations*, not losses: each step needs the win rates of a policy
that changes within the step (Nash-MD's geometric mixture, extragradient's half step), so no fixed
loss over pairs has their trajectory as its minimization, and writing one would misstate what they
are.  The `Objective` protocol (a loss whose population minimizer is declared and checked) cannot host
them honestly, so they get a protocol of their own beside it: a `Method` is a pure step map
(`synthalign.objectives.nash`) plus what it declares — its target (the β-regularized Nash equilibrium
of `theory.games.regularized_nash`, or a von Neumann winner of the unregularized game), which iterate
approaches it (last or running average), how (linear, biased by O(η) at a constant step, or O(1/T)),
and the conditions on η and β.  `synthalign.testing.method_checks` is their conformance suite: the
declared target is a fixed point of the step, it is reached as declared, the duality gap decreases,
sampled win rates approach the exact run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from synthalign._exports import flat_names
from synthalign.objectives import nash as steps
from synthalign.registry.paper import _ipo as ipo_objective
from synthalign.registry.protocol import DEFAULT_REGISTRY

NASH_OBJECTIVES = ("online_ipo",)

TARGETS = ("regularized_nash", "von_neumann")
ITERATES = ("last", "average")
CONVERGENCE = ("linear", "biased", "sublinear")


# Over fixed data online IPO is IPO: the same loss, derivatives and population minimizer.
DEFAULT_REGISTRY.register(
    dataclasses.replace(
        ipo_objective,
        name="online_ipo",
        reference="Calandriello et al. 2024, arXiv 2403.08635 (IPO of Azar et al. 2024 on self-play pairs)",
    )
)


@dataclasses.dataclass(frozen=True)
class Method:
    """An iterative method on a preference game: a step map plus what it declares about its iterates.

    Attributes:
      name: registry name.
      step: (logp, ref_logp, rates, *, beta, eta) -> next logp (`synthalign.objectives.nash`).
      target: "regularized_nash" (the unique equilibrium of the β-regularized game) or "von_neumann"
        (a Nash equilibrium of the game at β = 0).
      iterate: "last" or "average" (the running mean of π_0 … π_t approaches the target).
      convergence: "linear" (the target's duality gap falls geometrically), "biased" (a constant step
        converges to a point at distance O(η) from the target: the gap halves with η), or "sublinear"
        (O(1/T), as Hedge's average iterate).
      needs_beta: β > 0 required (the regularized game).
      max_eta_beta: the largest η·β the step allows (None: no limit).
      check_eta: the step size the conformance suite runs it with.
      reference: the paper it comes from.
      description: what the step does, one line.
    """

    name: str
    step: Callable
    target: str
    iterate: str
    convergence: str
    needs_beta: bool
    max_eta_beta: float | None
    check_eta: float
    reference: str
    description: str

    def __post_init__(self) -> None:
        for field, options in (("target", TARGETS), ("iterate", ITERATES), ("convergence", CONVERGENCE)):
            if getattr(self, field) not in options:
                raise ValueError(f"{field} must be one of {options}, got {getattr(self, field)!r}")
        if not callable(self.step):
            raise ValueError(f"step must be callable, got {type(self.step).__name__}")

    @property
    def declared(self) -> str:
        """The declared target in words."""
        what = "regularized Nash equilibrium" if self.target == "regularized_nash" else "von Neumann winner"
        game = "" if self.target == "regularized_nash" else " of the unregularized game"
        return f"{what}{game} ({self.iterate} iterate, {self.convergence})"


class MethodRegistry:
    """A name → `Method` table (`METHOD_REGISTRY` holds synthalign's; `method` fills it)."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}

    def register(self, value: Method, *, replace: bool = False) -> Method:
        if not isinstance(value, Method):
            raise ValueError(f"method must be a Method, got {type(value).__name__}")
        if value.name in self._methods and not replace and self._methods[value.name].step is not value.step:
            raise ValueError(f"method {value.name!r} is registered; pass replace=True to take the name over")
        self._methods[value.name] = value
        return value

    def get(self, name: str | Method) -> Method:
        if isinstance(name, Method):
            return name
        if name not in self._methods:
            raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(self._methods))}")
        return self._methods[name]

    def names(self) -> list[str]:
        return list(self._methods)

    def __iter__(self) -> Iterator[Method]:
        return iter(self._methods.values())

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __len__(self) -> int:
        return len(self._methods)


METHOD_REGISTRY = MethodRegistry()
"""synthalign's Nash-style methods, and every method registered with `method`."""


def method(
    name: str,
    *,
    target: str,
    iterate: str = "last",
    convergence: str = "linear",
    needs_beta: bool = True,
    max_eta_beta: float | None = None,
    check_eta: float = 1.0,
    reference: str = "",
    registry: MethodRegistry | None = None,
    replace: bool = False,
) -> Callable[[Callable], Method]:
    """Decorator turning a step map (logp, ref_logp, rates, *, beta, eta) -> logp into a registered `Method`."""

    def wrap(step: Callable) -> Method:
        value = Method(
            name=name,
            step=step,
            target=target,
            iterate=iterate,
            convergence=convergence,
            needs_beta=needs_beta,
            max_eta_beta=max_eta_beta,
            check_eta=check_eta,
            reference=reference,
            description=(step.__doc__ or "").strip().splitlines()[0] if step.__doc__ else "",
        )
        return (registry if registry is not None else METHOD_REGISTRY).register(value, replace=replace)

    return wrap


def get_method(name: str | Method) -> Method:
    """The method of that name in `METHOD_REGISTRY` (or the method itself)."""
    return METHOD_REGISTRY.get(name)


def list_methods() -> list[str]:
    """The names in `METHOD_REGISTRY`, in registration order."""
    return METHOD_REGISTRY.names()


# Declarations.  check_eta: online IPO's step is a gradient step in the logits (4π/β scales it), a
# different scale from the mirror steps; Nash-MD is checked at a small step, its bias being O(η).
method(
    "nash_md",
    target="regularized_nash",
    convergence="biased",
    max_eta_beta=1.0,
    check_eta=0.5,
    reference="Munos et al. 2023, arXiv 2312.00886, §7 (constant step: last iterate within O(eta))",
)(steps.nash_md_step)
method(
    "online_ipo",
    target="regularized_nash",
    check_eta=0.4,
    reference="Calandriello et al. 2024, arXiv 2403.08635 (fixed point: Thm 1)",
)(steps.online_ipo_step)
method(
    "sppo",
    target="von_neumann",
    iterate="average",
    convergence="sublinear",
    needs_beta=False,
    check_eta=0.3,
    reference="Wu et al. 2024, arXiv 2405.00675, eq. 3.3 (multiplicative weights; average iterate)",
)(steps.sppo_step)
method(
    "extragradient",
    target="regularized_nash",
    max_eta_beta=1.0,
    check_eta=1.0,
    reference="Cen, Wei, Chi 2021, arXiv 2105.15186; Zhou, Fazel, Du 2025, arXiv 2503.08942 (EGPO)",
)(steps.extragradient_step)

__all__ = [*flat_names(__name__), "MethodRegistry", "NASH_OBJECTIVES", "method"]
