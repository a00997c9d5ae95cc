"""`parametrize_with_checks`: the conformance battery as one pytest item per (objective, check)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from synthalign.registry.protocol import Objective, get_objective
from synthalign.testing.checks import not_applicable, run_check, select_checks
from synthalign.testing.report import CheckOptions, CheckResult

if TYPE_CHECKING:  # pytest is imported when the decorator is built
    import pytest

__all__ = ["parametrize_with_checks"]


class _BoundCheck:
    """One check with its options, called by the test as `check(objective)`."""

    def __init__(self, name: str, options: CheckOptions):
        self.name = name
        self.options = options

    def __call__(self, objective: str | Objective) -> CheckResult:
        result = run_check(self.name, get_objective(objective), self.options)
        if result.passed is None:
            import pytest

            pytest.skip(f"not applicable: {result.detail}")
        if result.passed is False:
            raise AssertionError(f"{get_objective(objective).name}: check {self.name} failed: {result.detail}")
        return result

    def __repr__(self) -> str:
        return f"check_{self.name}"


def _entries(objectives) -> list[tuple[Objective, CheckOptions]]:
    entries = []
    for entry in objectives:
        if isinstance(entry, tuple):
            if len(entry) != 2 or not isinstance(entry[1], Mapping):
                raise ValueError(f"an entry must be an objective or (objective, options dict), got {entry!r}")
            obj, options = get_objective(entry[0]), dict(entry[1])
        else:
            obj, options = get_objective(entry), {}
        options.setdefault("params", dict(obj.example_params))
        opts = CheckOptions(**options)
        obj.resolve_params(opts.params)
        entries.append((obj, opts))
    return entries


def parametrize_with_checks(
    objectives: Iterable[str | Objective | tuple[str | Objective, Mapping[str, Any]]],
    *,
    checks: Iterable[str] | None = None,
    expected_failures: Mapping[tuple[str, str], str] | None = None,
) -> pytest.MarkDecorator:
    """A pytest decorator running every check on every objective, one test item each.

    Args:
      objectives: objectives (names or `Objective`s), or (objective, options)
        pairs whose options dict holds `CheckOptions` fields, e.g.
        ``("rlhf", {"beta": 1.0, "consistent": False})``.
      checks: the checks to run (default all of `CHECKS`).
      expected_failures: {(objective name, check name): reason} for known
        failures, marked as strict xfail (they fail the run once fixed, so the
        entry gets removed).  An objective's own declared `known_failures`
        are added to these.

    Items are named "<objective>-<check>"; a check that does not apply is
    marked skip with the reason.  Use it as scikit-learn's::

        @parametrize_with_checks(["pmle", ("rlhf", {"beta": 1.0})])
        def test_conformance(objective, check):
            check(objective)
    """
    import pytest

    selected = select_checks(checks)
    expected_failures = dict(expected_failures or {})
    params, seen = [], set()
    for obj, opts in _entries(objectives):
        for name in selected:
            marks = []
            reason = not_applicable(name, obj, opts)
            if reason:
                marks.append(pytest.mark.skip(reason=f"not applicable: {reason}"))
            elif (obj.name, name) in expected_failures or name in obj.known_failures:
                why = expected_failures.get((obj.name, name), obj.known_failures.get(name))
                marks.append(pytest.mark.xfail(reason=why, strict=True))
            seen.add((obj.name, name))
            params.append(pytest.param(obj, _BoundCheck(name, opts), id=f"{obj.name}-{name}", marks=marks))
    unused = set(expected_failures) - seen
    if unused:
        raise ValueError(f"expected_failures names (objective, check) pairs that are not run: {sorted(unused)}")
    return pytest.mark.parametrize("objective, check", params)
