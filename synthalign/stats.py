"""Verdicts a test can assert: log-log slopes with bootstrap intervals, and bounds checked at every n.

`fit_slope` fits the log-log slope of a per-n statistic of the error against
n, with a bootstrap confidence interval that resamples the replicates of each n
(they are independent datasets).  `check_rate` and `check_bound` turn a sweep
into a `Verdict` (`assert verdict.passed, verdict.reason`):

* `check_rate` passes when the expected slope (default −1, the O(1/n) of every
  theorem in spec §4) lies in the CI and the CI is narrow enough to tell it
  from the O(1/√n) of earlier analyses (width <= `max_ci_width`); with
  `faster_than=s` it passes instead when the whole CI lies below s (the error
  provably decays faster than n^s; for a finite class, whose error reaches 0).
* `check_bound` passes when the measured (1 − δ)-quantile of the error is at most
  the bound at every n: the theorems hold with probability >= 1 − δ.

Which estimator and which world is the caller's choice (`synthalign.sweeps` runs them);
`synthalign.bounds` computes the theorems' bounds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from synthalign._checks import InputTypeError, check_array_like, check_real, check_unit_interval, describe
from synthalign._checks import check_seed as _check_seed
from synthalign._exports import flat_names

__all__ = [*flat_names(__name__), "quantile_interval"]

_STATISTICS = ("mean", "median")


def check_ns(ns: Sequence[int]) -> tuple[int, ...]:
    if isinstance(ns, (str, bytes)) or not isinstance(ns, (Sequence, np.ndarray, Tensor)):
        raise InputTypeError(f"ns must be a sequence of positive ints, got {describe(ns)}")
    try:
        values = [int(n) for n in ns]
    except (TypeError, ValueError) as err:
        raise ValueError(f"ns must be a sequence of positive ints, got {ns!r}") from err
    if len(values) == 0 or any(n < 1 for n in values) or any(int(n) != n for n in ns):
        raise ValueError(f"ns must be a non-empty sequence of positive ints, got {ns!r}")
    if any(b <= a for a, b in zip(values[:-1], values[1:], strict=True)):
        raise ValueError(f"ns must be strictly increasing, got {values}")
    return tuple(values)


def check_seed(seed: int) -> int:
    return _check_seed(seed)


@dataclasses.dataclass(frozen=True)
class SlopeFit:
    """A log-log least-squares fit ln(statistic) = intercept + slope · ln n, with a bootstrap CI on the slope.

    Attributes:
      slope, intercept: the fit on the observed data.
      ci_low, ci_high: the percentile bootstrap interval at `confidence`.
      confidence: the CI's level.
      statistic: "mean", "median" or a quantile level.
      n_boot: bootstrap resamples.
      boot_slopes_sd: standard deviation of the bootstrap slopes.
    """

    slope: float
    intercept: float
    ci_low: float
    ci_high: float
    confidence: float
    statistic: str | float
    n_boot: int
    boot_slopes_sd: float


def _statistic(values: np.ndarray, statistic) -> np.ndarray:
    """The per-n statistic along the last axis."""
    if statistic == "mean":
        return values.mean(axis=-1)
    if statistic == "median":
        return np.median(values, axis=-1)
    return np.quantile(values, float(statistic), axis=-1)


def _check_statistic(statistic):
    if isinstance(statistic, str):
        if statistic not in _STATISTICS:
            raise ValueError(f"statistic must be one of {_STATISTICS} or a quantile level in (0, 1), got {statistic!r}")
        return statistic
    try:
        level = float(statistic)
    except (TypeError, ValueError) as err:
        raise ValueError(f"statistic must be one of {_STATISTICS} or a quantile level, got {statistic!r}") from err
    if not 0.0 < level < 1.0:
        raise ValueError(f"a quantile statistic must lie in (0, 1), got {level}")
    return level


def _as_matrix(ns, values) -> tuple[np.ndarray, np.ndarray]:
    ns = np.asarray(check_ns(ns), dtype=np.float64)
    if isinstance(values, Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    try:
        matrix = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError("values must be a rectangular [N, R] array of numbers") from err
    if matrix.ndim != 2 or matrix.shape[0] != ns.shape[0]:
        raise ValueError(f"values must have shape [len(ns), R] = [{ns.shape[0]}, R], got {matrix.shape}")
    if matrix.shape[1] < 2:
        raise ValueError(f"values need at least 2 replicates per n to bootstrap, got shape {matrix.shape}")
    if np.isnan(matrix).any():
        raise ValueError("values contain NaN")
    return ns, matrix


def _ols_slopes(log_n: np.ndarray, log_stat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and intercept of log_stat [..., N] on log_n [N]."""
    x = log_n - log_n.mean()
    slope = (log_stat * x).sum(axis=-1) / (x * x).sum()
    intercept = log_stat.mean(axis=-1) - slope * log_n.mean()
    return slope, intercept


def fit_slope(
    ns: Sequence[int],
    values: Tensor | np.ndarray | Sequence[Sequence[float]],
    *,
    statistic: str | float = "mean",
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> SlopeFit:
    """The log-log slope of a per-n statistic of `values` against n, with a bootstrap CI.

    The point estimate is the least-squares slope of ln(statistic_n) on ln n.
    The CI is the percentile interval of the same slope over `n_boot` resamples
    that draw, independently for every n, R replicates with replacement (the
    replicates of different n are independent datasets, so they are resampled
    separately).  Deterministic given `seed`.

    Args:
      ns: the N >= 2 sample sizes, strictly increasing.
      values: [N, R] measured errors (R >= 2), >= 0 and finite.
      statistic: "mean" (the expectation the bounds speak about), "median", or a
        quantile level in (0, 1).
      confidence: the CI's level in (0, 1).
      n_boot: bootstrap resamples (>= 100).
      seed: seeds the resampling.
    """
    check_array_like(values, "values")
    ns_array, matrix = _as_matrix(ns, values)
    if ns_array.shape[0] < 2:
        raise ValueError(f"ns must hold at least 2 sample sizes for a slope, got {ns_array.shape[0]}")
    statistic = _check_statistic(statistic)
    confidence = check_unit_interval(confidence, "confidence")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"n_boot must be an int >= 100, got {n_boot!r}")
    seed = check_seed(seed)
    if not np.isfinite(matrix).all() or (matrix < 0).any():
        raise ValueError("values must be finite and >= 0 to fit a log-log slope")
    observed = _statistic(matrix, statistic)
    if (observed <= 0).any():
        zero_at = [int(n) for n, s in zip(ns_array, observed, strict=True) if s <= 0]
        raise ValueError(
            f"the {statistic} of values is 0 at n = {zero_at}: a log-log slope is undefined "
            "(a finite class whose error reaches 0 decays faster than any power; fit the ns before that)"
        )
    log_n = np.log(ns_array)
    slope, intercept = _ols_slopes(log_n, np.log(observed))
    rng = np.random.default_rng(seed)
    N, R = matrix.shape
    rows = np.arange(N)[None, :, None]
    block = max(1, 2**22 // (N * R))
    boot = []
    for start in range(0, n_boot, block):
        count = min(block, n_boot - start)
        picks = rng.integers(0, R, size=(count, N, R))
        stat = _statistic(matrix[rows, picks], statistic)
        if (stat <= 0).any():
            zero_at = sorted({int(ns_array[i]) for i in np.nonzero((stat <= 0).any(axis=0))[0]})
            raise ValueError(
                f"a bootstrap resample has {statistic} 0 at n = {zero_at} (too many zero errors there): "
                "its log-log slope is undefined; fit only the ns where most errors are positive"
            )
        boot.append(_ols_slopes(log_n, np.log(stat))[0])
    slopes = np.concatenate(boot)
    alpha = (1.0 - float(confidence)) / 2.0
    low, high = np.quantile(slopes, [alpha, 1.0 - alpha])
    return SlopeFit(
        slope=float(slope),
        intercept=float(intercept),
        ci_low=float(low),
        ci_high=float(high),
        confidence=float(confidence),
        statistic=statistic,
        n_boot=n_boot,
        boot_slopes_sd=float(slopes.std()),
    )


# ------------------------------------------------------------------ verdicts


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome of a check, to `assert verdict.passed, verdict.reason`.

    Attributes:
      passed: whether the claim held.
      reason: what was checked and what was found, in words.
      slope, ci_low, ci_high: the fitted slope and its CI (NaN for `check_bound`).
      worst_ratio: the largest measured/bound ratio over n (NaN for `check_rate`).
      worst_n: the n where that ratio occurs (None for `check_rate`).
    """

    passed: bool
    reason: str
    slope: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    worst_ratio: float = math.nan
    worst_n: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_rate(
    ns: Sequence[int],
    values: Tensor | np.ndarray | Sequence[Sequence[float]],
    expected: float = -1.0,
    *,
    faster_than: float | None = None,
    max_ci_width: float = 0.5,
    statistic: str | float = "mean",
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Verdict:
    """Does the error fall like n^expected?

    Two-sided (default): passes when `expected` lies in the bootstrap CI of the
    slope and the CI is at most `max_ci_width` wide.  The width condition makes
    the check able to fail on too little data: a CI wider than 0.5 cannot tell
    the O(1/n) of spec §4 (slope −1) from the O(1/√n) of earlier analyses
    (slope −½), so it is reported as inconclusive, i.e. failed.

    One-sided (`faster_than=s`): passes when the whole CI lies below s, i.e. the
    error provably decays faster than n^s (`expected` is then only reported).
    Use it where the error outruns any power, as a finite class's does once
    the argmin finds π*.

    The remaining arguments are `fit_slope`'s.
    """
    check_array_like(values, "values")
    expected = check_real(expected, "expected")
    if faster_than is not None:
        faster_than = check_real(faster_than, "faster_than")
    max_ci_width = check_real(max_ci_width, "max_ci_width", finite=False)
    if not max_ci_width > 0:
        raise ValueError(f"max_ci_width must be > 0, got {max_ci_width}")
    slope_fit = fit_slope(ns, values, statistic=statistic, confidence=confidence, n_boot=n_boot, seed=seed)
    level = f"{100 * slope_fit.confidence:g}%"
    found = (
        f"slope of the {slope_fit.statistic} = {slope_fit.slope:.3f}, {level} CI "
        f"[{slope_fit.ci_low:.3f}, {slope_fit.ci_high:.3f}]"
    )
    common = {"slope": slope_fit.slope, "ci_low": slope_fit.ci_low, "ci_high": slope_fit.ci_high}
    if faster_than is not None:
        threshold = float(faster_than)
        passed = slope_fit.ci_high < threshold
        relation = "lies below" if passed else "does not lie below"
        return Verdict(passed, f"{found}: the CI {relation} {threshold:g}", **common)
    width = slope_fit.ci_high - slope_fit.ci_low
    inside = slope_fit.ci_low <= expected <= slope_fit.ci_high
    if not inside:
        return Verdict(False, f"{found} excludes the expected slope {expected:g}", **common)
    if width > max_ci_width:
        return Verdict(
            False,
            f"{found} contains {expected:g} but is {width:.3f} wide (> {max_ci_width:g}): inconclusive",
            **common,
        )
    return Verdict(True, f"{found} contains the expected slope {expected:g}", **common)


def check_bound(
    ns: Sequence[int],
    values: Tensor | np.ndarray | Sequence[Sequence[float]],
    bound: float | Sequence[float] | Callable[[int], float],
    *,
    delta: float,
    label: str = "bound",
) -> Verdict:
    """Does the measured (1 − δ)-quantile of the error stay at or below the bound at every n?

    A bound "with probability >= 1 − δ" says the (1 − δ)-quantile of the error
    is at most the bound.  The measured quantile is the empirical one taken
    conservatively (numpy's "higher" method: an observed order statistic, never
    an interpolation below it).

    Args:
      ns: the N sample sizes.
      values: [N, R] measured errors.
      bound: the bound at each n: a sequence [N], a tensor, or a callable n -> bound.
      delta: the failure probability δ in (0, 1).
      label: what the bound is (e.g. "Thm 4 (corrected)"), for the reason.
    """
    check_array_like(values, "values")
    if not isinstance(label, str):
        raise InputTypeError(f"label must be a str, got {describe(label)}")
    ns_tuple = check_ns(ns)
    if isinstance(values, Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != len(ns_tuple):
        raise ValueError(f"values must have shape [len(ns), R] = [{len(ns_tuple)}, R], got {matrix.shape}")
    if matrix.shape[1] == 0:
        raise ValueError(f"values are empty (shape {matrix.shape}); expected at least one replicate per n")
    if np.isnan(matrix).any():
        raise ValueError("values contain NaN")
    delta = check_unit_interval(delta, "delta")
    if callable(bound):
        bounds = np.array([check_real(bound(n), f"bound({n})", finite=False) for n in ns_tuple])
    else:
        check_array_like(bound, "bound")
        if isinstance(bound, Tensor):
            bound = bound.detach().cpu().to(torch.float64).numpy()
        bounds = np.asarray(bound, dtype=np.float64).reshape(-1)
    if bounds.shape != (len(ns_tuple),):
        raise ValueError(f"bound must give one value per n ({len(ns_tuple)}), got shape {bounds.shape}")
    if np.isnan(bounds).any() or (bounds < 0).any():
        raise ValueError(f"bound must be >= 0 (inf allowed) at every n, got {bounds}")
    measured = np.quantile(matrix, 1.0 - delta, axis=-1, method="higher")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(measured == 0, 0.0, measured / bounds)  # x/inf = 0; x/0 = inf for x > 0
    worst = int(np.argmax(ratios))
    exceed = [int(n) for n, r in zip(ns_tuple, ratios, strict=True) if r > 1]
    quantile_name = f"{1 - delta:g}-quantile"
    if exceed:
        reason = (
            f"the measured {quantile_name} exceeds the {label} at n = {exceed}; worst measured/bound = "
            f"{ratios[worst]:.3g} at n = {ns_tuple[worst]}"
        )
    else:
        reason = (
            f"the measured {quantile_name} is within the {label} at every n; worst measured/bound = "
            f"{ratios[worst]:.3g} at n = {ns_tuple[worst]}"
        )
    return Verdict(not exceed, reason, worst_ratio=float(ratios[worst]), worst_n=ns_tuple[worst])


def quantile_interval(values: np.ndarray, level: float, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """A distribution-free CI for the level-quantile of each row of [N, R] values: two order statistics.

    The number of replicates below the true quantile is Binomial(R, level); the ranks
    R·level ∓ z·sqrt(R·level·(1 − level)) (normal approximation, rounded outwards, clipped to
    the sample) bracket it with probability about `confidence`.
    """
    confidence_z = {0.9: 1.6449, 0.95: 1.9600, 0.99: 2.5758}
    if confidence not in confidence_z:
        raise ValueError(f"confidence must be one of {sorted(confidence_z)}, got {confidence!r}")
    level = check_unit_interval(level, "level")
    values = np.sort(np.asarray(values, dtype=np.float64), axis=-1)
    count = values.shape[-1]
    z = confidence_z[confidence]
    spread = z * math.sqrt(count * level * (1 - level))
    low = min(max(math.floor(count * level - spread), 1), count)
    high = min(max(math.ceil(count * level + spread), 1), count)
    return values[..., low - 1], values[..., high - 1]
