"""What a conformance check is run with (`CheckOptions`) and what it returns (`CheckResult`, `CheckReport`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

from torch import Tensor

from synthalign.worlds.tabular import World

__all__ = ["SWAP_FORMS", "CheckOptions", "CheckReport", "CheckResult"]

SWAP_FORMS = ("loss", "likelihood")


@dataclasses.dataclass(frozen=True)
class CheckOptions:
    """How an objective is checked.

    Attributes:
      beta: weight of KL(pi ‖ pi0), as passed to `fit` and the losses (RLHF needs beta > 0).
      params: the objective's hyper-parameters (e.g. {"tau": 0.1}).
      reward: R̂ [X, A] for objectives that need one; default the check world's R* = gamma ln pi*.
      consistent: the expectation that the population minimizer is pi* (True), is not (False),
        or none (None: the check only reports).
      expected_minimizer: the population minimizer the objective should reach,
        (reward, world, beta, params) -> Policy (the signature of `Objective.closed_form`).
      swap_symmetry: "loss", "likelihood", None (not applicable) or "auto" (the
        module docstring says which applies).
      world: the world most checks run on; default a random 3 × 4 world with
        pi0 and mu independent of pi* (so that inconsistent objectives show).
      seed: every random draw of the checks derives from it.
    """

    beta: float = 0.0
    params: Mapping[str, object] = dataclasses.field(default_factory=dict)
    reward: Tensor | None = None
    consistent: bool | None = None
    expected_minimizer: Callable | None = None
    swap_symmetry: str | None = "auto"
    world: World | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        beta = float(self.beta)
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta!r}")
        object.__setattr__(self, "beta", beta)
        if not isinstance(self.params, Mapping):
            raise ValueError(f"params must be a mapping of hyper-parameters, got {type(self.params).__name__}")
        object.__setattr__(self, "params", dict(self.params))
        if not (self.consistent is None or isinstance(self.consistent, bool)):
            raise ValueError(f"consistent must be True, False or None, got {self.consistent!r}")
        if self.expected_minimizer is not None and not callable(self.expected_minimizer):
            raise ValueError("expected_minimizer must be callable: (reward, world, beta, params) -> Policy")
        if self.swap_symmetry not in ("auto", None, *SWAP_FORMS):
            raise ValueError(f"swap_symmetry must be 'auto', 'loss', 'likelihood' or None, got {self.swap_symmetry!r}")
        if self.world is not None and not isinstance(self.world, World):
            raise ValueError(f"world must be a World, got {type(self.world).__name__}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")

    def check_world(self) -> World:
        if self.world is not None:
            return self.world
        return World.random(3, 4, gamma=0.5, reference_mix=1.0, behavior_mix=1.0, seed=self.seed)


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
      name: the check (one of `CHECKS`).
      passed: True, False, or None when the check does not apply.
      detail: what was checked and found, in words.
      values: the numbers measured (for tables and further tests).
    """

    name: str
    passed: bool | None
    detail: str
    values: Mapping[str, object] = dataclasses.field(default_factory=dict)

    @property
    def applicable(self) -> bool:
        return self.passed is not None

    @property
    def status(self) -> str:
        return {True: "passed", False: "FAILED", None: "not applicable"}[self.passed]


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """Every check of one objective; `report["gradcheck"]` is one `CheckResult`."""

    objective: str
    options: CheckOptions
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """No check failed (not-applicable checks do not count)."""
        return all(result.passed is not False for result in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [result for result in self.results if result.passed is False]

    def __getitem__(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(f"no check named {name!r} in this report; it has {[r.name for r in self.results]}")

    def raise_for_failures(self) -> None:
        """AssertionError listing every failed check, if any."""
        if self.failures:
            lines = "\n".join(f"  - {r.name}: {r.detail}" for r in self.failures)
            raise AssertionError(f"objective {self.objective!r} failed {len(self.failures)} check(s):\n{lines}")

    def __str__(self) -> str:
        width = max(len(result.name) for result in self.results)
        lines = [
            f"checks of objective {self.objective!r} (beta={self.options.beta:g}): "
            f"{'all passed' if self.passed else f'{len(self.failures)} FAILED'}"
        ]
        lines += [f"  {r.status:<15} {r.name:<{width}}  {r.detail}" for r in self.results]
        return "\n".join(lines)
