"""Rate sweeps: how an estimator's error falls with n, and verdicts a test can assert.

`rate_sweep` runs an estimator over a grid of sample sizes n (powers of two) ×
R replicate datasets: one `sample_preferences` call and one batched fit (or
finite-class argmin) per n, never a loop over replicates.  It returns every
measured value and per-n summaries.

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

Which estimator and which world is the caller's choice; `synthalign.classes`
builds the finite classes of the theorems, `synthalign.bounds` their bounds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from synthalign.estimators import ClassFit, FitResult, fit
from synthalign.metrics import forward_kl
from synthalign.policies import Policy
from synthalign.registry import Objective, get_objective

__all__ = [
    "DEFAULT_NS",
    "SlopeFit",
    "SweepResult",
    "Verdict",
    "check_bound",
    "check_rate",
    "class_estimator",
    "fit_slope",
    "rate_sweep",
    "tabular_estimator",
]

DEFAULT_NS = tuple(2**k for k in range(5, 17))
DEFAULT_QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
_STATISTICS = ("mean", "median")


# ------------------------------------------------------------------ estimators


def tabular_estimator(objective: str | Objective, *, beta: float = 0.0, **fit_kwargs) -> Callable[[object], Policy]:
    """data -> the tabular softmax fit of `objective` (`synthalign.fit`), batched over replicates."""
    obj = get_objective(objective)

    def estimate(data) -> Policy:
        return fit(obj, data, beta=beta, **fit_kwargs).policy

    estimate.__name__ = f"tabular {obj.name}"
    return estimate


def class_estimator(
    objective: str | Objective,
    policy_class,
    *,
    reward_class=None,
    beta: float = 0.0,
    chunk_size: int = 4096,
    **params,
) -> Callable[[object], Policy]:
    """data -> argmin over the finite class Π (and R̂ over ℛ first, when needed): the theorems' estimator.

    See `synthalign.classes.fit_over_class`.
    """
    from synthalign.classes import fit_over_class

    obj = get_objective(objective)

    def estimate(data) -> Policy:
        return fit_over_class(
            obj, data, policy_class, reward_class=reward_class, beta=beta, chunk_size=chunk_size, **params
        ).policy

    estimate.__name__ = f"class {obj.name}"
    return estimate


def _as_policy(result) -> Policy:
    if isinstance(result, Policy):
        return result
    if isinstance(result, (FitResult, ClassFit)) or isinstance(getattr(result, "policy", None), Policy):
        return result.policy
    raise ValueError(f"the estimator must return a Policy (or a result with .policy), got {type(result).__name__}")


# ------------------------------------------------------------------ the sweep


@dataclasses.dataclass(frozen=True, eq=False)
class SweepResult:
    """Errors of an estimator over a grid of n × replicates.

    Attributes:
      ns: the sample sizes, increasing.
      values: [N, R] float64, the metric of replicate r at n = ns[i].
      metric: the metric's name.
      estimator: the estimator's name.
      seed: the master seed.
      mean, median: [N].
      quantiles: {q: [N]} per-n quantiles of the metric.
      extra: {name: [N, R]} other metrics measured on the same fits.
    """

    ns: tuple[int, ...]
    values: Tensor
    metric: str
    estimator: str
    seed: int
    mean: Tensor
    median: Tensor
    quantiles: dict[float, Tensor]
    extra: dict[str, Tensor]

    @property
    def replicates(self) -> int:
        return self.values.shape[1]

    def quantile(self, q: float) -> Tensor:
        """The per-n q-quantile of the metric, [N]."""
        return _quantile(self.values, q)

    def fit_slope(self, **kwargs) -> SlopeFit:
        return fit_slope(self.ns, self.values, **kwargs)

    def check_rate(self, expected: float = -1.0, **kwargs) -> Verdict:
        return check_rate(self.ns, self.values, expected, **kwargs)

    def check_bound(self, bound, *, delta: float, **kwargs) -> Verdict:
        return check_bound(self.ns, self.values, bound, delta=delta, **kwargs)

    def to_dict(self) -> dict:
        """Every number, as plain Python values (for JSON)."""
        return {
            "ns": list(self.ns),
            "metric": self.metric,
            "estimator": self.estimator,
            "seed": self.seed,
            "mean": self.mean.tolist(),
            "median": self.median.tolist(),
            "quantiles": {str(q): v.tolist() for q, v in self.quantiles.items()},
            "values": self.values.tolist(),
            "extra": {name: v.tolist() for name, v in self.extra.items()},
        }


def rate_sweep(
    world,
    estimator,
    ns: Sequence[int] = DEFAULT_NS,
    *,
    replicates: int = 100,
    seed: int = 0,
    metric: Callable[[Policy, Policy], Tensor] = forward_kl,
    extra_metrics: Mapping[str, Callable[[Policy, Policy], Tensor]] | None = None,
    beta: float = 0.0,
    candidates=None,
    reward_class=None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    progress: bool = False,
    **fit_kwargs,
) -> SweepResult:
    """The error of an estimator at every n of `ns`, on `replicates` independent datasets each.

    Args:
      world: the `World` whose preferences are sampled.
      estimator: an objective (name or `Objective`): fitted on the tabular
        softmax class by `synthalign.fit`, or by argmin over `candidates` when
        given (the theorems' finite class; `reward_class` gives ℛ for objectives
        that need a reward); or any callable data -> Policy (batch [R]) or a
        result with `.policy` (e.g. `class_estimator(...)`).
      ns: increasing positive sample sizes (powers of two by convention).
      replicates: R datasets per n.
      seed: master seed; the data of size n use numpy's SeedSequence([seed, n]),
        so a given n gets the same datasets whatever else is in `ns`.
      metric: (target, estimate) -> [R], default forward KL E_x KL(π* ‖ π̂).
      extra_metrics: other (target, estimate) -> [R] metrics recorded on the same fits.
      beta: KL weight for objective estimators.
      quantiles: the per-n quantiles to summarize.
      progress: show a tqdm bar over n.
      **fit_kwargs: passed to `synthalign.fit` (e.g. ridge=...).
    """
    ns = _check_ns(ns)
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise ValueError(f"replicates must be a positive int, got {replicates!r}")
    seed = _check_seed(seed)
    estimate, name = _resolve_estimator(estimator, beta, candidates, reward_class, fit_kwargs)
    metrics = {getattr(metric, "__name__", "metric"): metric, **dict(extra_metrics or {})}
    columns: dict[str, list[Tensor]] = {key: [] for key in metrics}
    iterator = ns
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(ns, desc=name, leave=False)
    for n in iterator:
        data = world.sample_preferences(n, replicates, seed=np.random.SeedSequence([seed, n]))
        policy = _as_policy(estimate(data))
        for key, fn in metrics.items():
            value = torch.as_tensor(fn(world.target, policy), dtype=torch.float64).reshape(-1)
            if value.numel() != replicates:
                raise ValueError(f"metric {key!r} returned {value.numel()} values for {replicates} replicates")
            columns[key].append(value.cpu())
    stacked = {key: torch.stack(v) for key, v in columns.items()}
    main = next(iter(metrics))
    values = stacked.pop(main)
    return SweepResult(
        ns=ns,
        values=values,
        metric=main,
        estimator=name,
        seed=seed,
        mean=values.mean(dim=1),
        median=_quantile(values, 0.5),
        quantiles={float(q): _quantile(values, q) for q in quantiles},
        extra=stacked,
    )


def _resolve_estimator(estimator, beta, candidates, reward_class, fit_kwargs):
    if isinstance(estimator, (str, Objective)):
        obj = get_objective(estimator)
        if candidates is not None:
            if fit_kwargs:
                raise ValueError(f"fit options {sorted(fit_kwargs)} do not apply to a finite class (candidates=...)")
            return class_estimator(obj, candidates, reward_class=reward_class, beta=beta), f"class {obj.name}"
        if reward_class is not None:
            raise ValueError("reward_class needs candidates (a finite policy class)")
        return tabular_estimator(obj, beta=beta, **fit_kwargs), f"tabular {obj.name}"
    if callable(estimator):
        if candidates is not None or reward_class is not None or fit_kwargs:
            raise ValueError("candidates, reward_class and fit options apply to objective estimators, not callables")
        return estimator, getattr(estimator, "__name__", type(estimator).__name__)
    raise ValueError(f"estimator must be an objective name, an Objective or a callable, got {type(estimator).__name__}")


def _check_ns(ns) -> tuple[int, ...]:
    try:
        values = [int(n) for n in ns]
    except (TypeError, ValueError) as err:
        raise ValueError(f"ns must be a sequence of positive ints, got {ns!r}") from err
    if len(values) == 0 or any(n < 1 for n in values) or any(int(n) != n for n in ns):
        raise ValueError(f"ns must be a non-empty sequence of positive ints, got {ns!r}")
    if any(b <= a for a, b in zip(values[:-1], values[1:], strict=True)):
        raise ValueError(f"ns must be strictly increasing, got {values}")
    return tuple(values)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _quantile(values: Tensor, q: float) -> Tensor:
    q = float(q)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], got {q}")
    return torch.from_numpy(np.quantile(values.numpy(), q, axis=-1))


# ------------------------------------------------------------------ slopes


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
    ns = np.asarray(_check_ns(ns), dtype=np.float64)
    if isinstance(values, Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    try:
        matrix = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError("values must be a rectangular [N, R] array of numbers") from err
    if matrix.ndim != 2 or matrix.shape[0] != ns.shape[0]:
        raise ValueError(f"values must have shape [len(ns), R] = [{ns.shape[0]}, R], got {matrix.shape}")
    if matrix.shape[1] < 2:
        raise ValueError(f"values need at least 2 replicates per n to bootstrap, got {matrix.shape[1]}")
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
    values,
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
    ns_array, matrix = _as_matrix(ns, values)
    if ns_array.shape[0] < 2:
        raise ValueError(f"a slope needs at least 2 sample sizes, got {ns_array.shape[0]}")
    statistic = _check_statistic(statistic)
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"n_boot must be an int >= 100, got {n_boot!r}")
    seed = _check_seed(seed)
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
    values,
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
    expected = float(expected)
    if not math.isfinite(expected):
        raise ValueError(f"expected must be finite, got {expected}")
    if not float(max_ci_width) > 0:
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
    values,
    bound,
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
    ns_tuple = _check_ns(ns)
    if isinstance(values, Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != len(ns_tuple):
        raise ValueError(f"values must have shape [len(ns), R] = [{len(ns_tuple)}, R], got {matrix.shape}")
    if np.isnan(matrix).any():
        raise ValueError("values contain NaN")
    delta = float(delta)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    if callable(bound):
        bounds = np.array([float(bound(n)) for n in ns_tuple])
    else:
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
