"""The conformance battery: `CHECKS` in order, and `check_objective` running them on one objective."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

from torch import Tensor

from synthalign.registry.protocol import Objective, get_objective
from synthalign.testing import battery, minimizer_checks
from synthalign.testing.report import CheckOptions, CheckReport, CheckResult
from synthalign.worlds.tabular import World

__all__ = ["CHECKS", "check_objective", "run_check", "select_checks", "not_applicable"]


@dataclasses.dataclass(frozen=True)
class _Check:
    run: Callable[[Objective, CheckOptions], CheckResult]
    not_applicable: Callable[[Objective, CheckOptions], str | None] = lambda obj, opts: None


_CHECKS: dict[str, _Check] = {
    "finite_extreme": _Check(battery.check_finite_extreme),
    "zero_probability": _Check(battery.check_zero_probability),
    "gradcheck": _Check(battery.check_gradcheck),
    "gradgradcheck": _Check(battery.check_gradgradcheck),
    "weight_consistency": _Check(battery.check_weight_consistency),
    "pair_order_invariance": _Check(battery.check_pair_order_invariance),
    "pair_swap_symmetry": _Check(battery.check_pair_swap_symmetry, battery.swap_not_applicable),
    "elementwise": _Check(battery.check_elementwise),
    "exact_vs_sampled": _Check(battery.check_exact_vs_sampled),
    "closed_form": _Check(
        minimizer_checks.check_closed_form,
        lambda obj, opts: None if obj.closed_form is not None else "no closed form declared",
    ),
    "population_minimizer": _Check(minimizer_checks.check_population_minimizer),
    "degeneracy": _Check(minimizer_checks.check_degeneracy),
}
CHECKS: tuple[str, ...] = tuple(_CHECKS)
"""The names of every check, in the order they run."""


def select_checks(checks: Iterable[str] | None) -> tuple[str, ...]:
    if checks is None:
        return CHECKS
    if isinstance(checks, str):
        checks = (checks,)
    selected = tuple(checks)
    unknown = [name for name in selected if name not in _CHECKS]
    if unknown:
        raise ValueError(f"checks has unknown names {unknown}; known: {', '.join(CHECKS)}")
    return selected


def run_check(name: str, obj: Objective, opts: CheckOptions) -> CheckResult:
    check = _CHECKS[name]
    reason = check.not_applicable(obj, opts)
    if reason:
        return CheckResult(name, None, reason)
    try:
        return check.run(obj, opts)
    except Exception as err:  # an objective that raises fails the check, with the error as the detail
        return CheckResult(name, False, f"raised {type(err).__name__}: {str(err)[:300]}")


def check_objective(
    objective: str | Objective,
    *,
    beta: float = 0.0,
    params: Mapping[str, object] | None = None,
    reward: Tensor | None = None,
    consistent: bool | None = None,
    expected_minimizer: Callable | None = None,
    swap_symmetry: str | None = "auto",
    world: World | None = None,
    checks: Iterable[str] | None = None,
    seed: int = 0,
    raise_on_failure: bool = False,
) -> CheckReport:
    """Runs the conformance checks on an objective and returns their report.

    Args:
      objective: a registered name or an `Objective` (e.g. the result of `@synthalign.objective`).
      beta, params, reward, consistent, expected_minimizer, swap_symmetry, world, seed:
        see `CheckOptions`; `params` defaults to the objective's declared `example_params`.
      checks: the names of the checks to run (default all of `CHECKS`).
      raise_on_failure: raise AssertionError listing the failed checks instead of returning.

    Example::

        report = check_objective("dpo", consistent=False, swap_symmetry="likelihood")
        print(report)
        assert report["gradcheck"].passed
    """
    obj = get_objective(objective)
    opts = CheckOptions(
        beta=beta,
        params=dict(obj.example_params) if params is None else params,
        reward=reward,
        consistent=consistent,
        expected_minimizer=expected_minimizer,
        swap_symmetry=swap_symmetry,
        world=world,
        seed=seed,
    )
    obj.resolve_params(opts.params)  # unknown or missing hyper-parameters: ValueError now, not per check
    report = CheckReport(obj.name, opts, tuple(run_check(name, obj, opts) for name in select_checks(checks)))
    if raise_on_failure:
        report.raise_for_failures()
    return report


def not_applicable(name: str, obj: Objective, opts: CheckOptions) -> str | None:
    """Why check `name` does not apply to `obj` (None when it does)."""
    return _CHECKS[name].not_applicable(obj, opts)
