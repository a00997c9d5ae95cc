"""Rate sweeps: how an estimator's error falls with n.

`rate_sweep` runs an estimator over a grid of sample sizes n (powers of two) ×
R replicate datasets: one `sample_preferences` call and one batched fit (or
finite-class argmin) per n, never a loop over replicates.  It returns every
measured value and per-n summaries; `synthalign.stats` turns them into verdicts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from synthalign._checks import (
    InputTypeError,
    check_bool,
    check_callable,
    check_int,
    check_positive,
    check_real,
    describe,
)
from synthalign._exports import flat_names
from synthalign.estimators.finite_class import ClassFit, fit_over_class
from synthalign.estimators.fit import FitResult, fit
from synthalign.metrics import forward_kl
from synthalign.registry.protocol import Objective, get_objective
from synthalign.stats import SlopeFit, Verdict, check_bound, check_ns, check_rate, check_seed, fit_slope
from synthalign.store import SweepStore, run_items, world_fingerprint
from synthalign.worlds.checks import check_class_logp, check_world
from synthalign.worlds.policy import Policy

if TYPE_CHECKING:
    from synthalign._types import ClassLike, ExecutorLike
    from synthalign.worlds.datasets import PairData, PreferenceData
    from synthalign.worlds.tabular import World

__all__ = [*flat_names(__name__), "DEFAULT_NS"]

DEFAULT_NS = tuple(2**k for k in range(5, 17))
DEFAULT_QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


# ------------------------------------------------------------------ estimators


def tabular_estimator(
    objective: str | Objective, *, beta: float = 0.0, **fit_kwargs: Any
) -> Callable[[object], Policy]:
    """data -> the tabular softmax fit of `objective` (`synthalign.fit`), batched over replicates."""
    obj = get_objective(objective)
    beta = check_positive(beta, "beta", allow_zero=True)

    def estimate(data) -> Policy:
        return fit(obj, data, beta=beta, **fit_kwargs).policy

    estimate.__name__ = f"tabular {obj.name}"
    return estimate


def class_estimator(
    objective: str | Objective,
    policy_class: ClassLike,
    *,
    reward_class: ClassLike | None = None,
    beta: float = 0.0,
    chunk_size: int = 4096,
    **params: Any,
) -> Callable[[object], Policy]:
    """data -> argmin over the finite class Π (and R̂ over ℛ first, when needed): the theorems' estimator.

    See `synthalign.classes.fit_over_class`.
    """
    obj = get_objective(objective)
    check_class_logp(policy_class, "policy_class")
    if reward_class is not None:
        check_class_logp(reward_class, "reward_class")
    beta = check_positive(beta, "beta", allow_zero=True)
    if isinstance(chunk_size, float):
        raise InputTypeError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    chunk_size = check_int(chunk_size, "chunk_size")

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

    def fit_slope(self, **kwargs: Any) -> SlopeFit:
        return fit_slope(self.ns, self.values, **kwargs)

    def check_rate(self, expected: float = -1.0, **kwargs: Any) -> Verdict:
        return check_rate(self.ns, self.values, expected, **kwargs)

    def check_bound(
        self, bound: float | Sequence[float] | Callable[[int], float], *, delta: float, **kwargs: Any
    ) -> Verdict:
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
    world: World,
    estimator: str | Objective | Callable[[PreferenceData | PairData], object],
    ns: Sequence[int] = DEFAULT_NS,
    *,
    replicates: int = 100,
    seed: int = 0,
    metric: Callable[[Policy, Policy], Tensor] = forward_kl,
    extra_metrics: Mapping[str, Callable[[Policy, Policy], Tensor]] | None = None,
    beta: float = 0.0,
    candidates: ClassLike | None = None,
    reward_class: ClassLike | None = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    progress: bool = False,
    store: SweepStore | str | None = None,
    fresh: bool = False,
    executor: ExecutorLike | None = None,
    **fit_kwargs: Any,
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
      progress: show a tqdm bar over n (serial runs).
      store: a `synthalign.store.SweepStore` (or its directory): each n is a work item keyed by
        the hash of the sweep's full configuration and the library version, persisted (JSON lines)
        as it finishes; a rerun after a kill recomputes only the items that had not finished.
      fresh: ignore (and replace) what `store` holds for this sweep.
      executor: any `concurrent.futures.Executor`-style backend (`submit(fn, *args)` returning a
        future with `result()`): a process pool, a Dask `distributed.Client`, Ray, submitit.  The
        items (one per n) run there; the record is bit-identical to the serial one.
      **fit_kwargs: passed to `synthalign.fit` (e.g. ridge=...).
    """
    check_world(world, duck=True)
    ns = check_ns(ns)
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise ValueError(f"replicates must be a positive int, got {replicates!r}")
    seed = check_seed(seed)
    beta = check_positive(beta, "beta", allow_zero=True)
    check_callable(metric, "metric", "a function (target, estimate) -> [R]")
    if extra_metrics is not None:
        if not isinstance(extra_metrics, Mapping):
            raise InputTypeError(f"extra_metrics must map names to metric functions, got {describe(extra_metrics)}")
        for key, fn in extra_metrics.items():
            if not isinstance(key, str):
                raise InputTypeError(f"extra_metrics must have str names, got {describe(key)}")
            check_callable(fn, f"extra_metrics[{key!r}]", "a function (target, estimate) -> [R]")
    if candidates is not None:
        check_class_logp(candidates, "candidates", world=world if hasattr(world, "n_prompts") else None)
    if reward_class is not None:
        check_class_logp(reward_class, "reward_class", world=world if hasattr(world, "n_prompts") else None)
    quantiles = _check_quantiles(quantiles)
    progress = check_bool(progress, "progress")
    fresh = check_bool(fresh, "fresh")
    if store is not None and not isinstance(store, SweepStore):
        store = SweepStore(store)
    _, name = _resolve_estimator(estimator, beta, candidates, reward_class, fit_kwargs)
    metrics = {getattr(metric, "__name__", "metric"): metric, **dict(extra_metrics or {})}
    spec = (estimator, beta, candidates, reward_class, dict(fit_kwargs))
    sweep_config = {
        "world": world_fingerprint(world) if hasattr(world, "prompt_dist") else repr(world),
        "estimator": name if isinstance(estimator, (str, Objective)) else estimator,
        "beta": beta,
        "candidates": candidates,
        "reward_class": reward_class,
        "fit_kwargs": dict(fit_kwargs),
        "metrics": list(metrics.values()),
        "metric_names": list(metrics),
        "replicates": replicates,
        "seed": seed,
    }
    items = [(world, spec, metrics, n, replicates, seed) for n in ns]
    configs = [{**sweep_config, "n": n} for n in ns]
    item_fn = _sweep_item
    if progress and executor is None:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ns), desc=name, leave=False)

        def item_fn(*args):
            result = _sweep_item(*args)
            bar.update()
            return result

    results = run_items(
        item_fn,
        items,
        configs,
        sweep_config={**sweep_config, "ns": list(ns)},
        store=store,
        fresh=fresh,
        executor=executor,
    )
    columns = {key: [torch.tensor(result[key], dtype=torch.float64) for result in results] for key in metrics}
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


def _sweep_item(world, spec, metrics, n: int, replicates: int, seed: int) -> dict[str, list[float]]:
    """One work item of `rate_sweep`: the datasets of size n, one batched fit, every metric (JSON-ready)."""
    estimator, beta, candidates, reward_class, fit_kwargs = spec
    estimate, _ = _resolve_estimator(estimator, beta, candidates, reward_class, dict(fit_kwargs))
    data = world.sample_preferences(n, replicates, seed=np.random.SeedSequence([seed, n]))
    policy = _as_policy(estimate(data))
    result = {}
    for key, fn in metrics.items():
        value = torch.as_tensor(fn(world.target, policy), dtype=torch.float64).reshape(-1)
        if value.numel() != replicates:
            raise ValueError(f"metric {key!r} returned {value.numel()} values for {replicates} replicates")
        result[key] = value.cpu().tolist()
    return result


def _check_quantiles(quantiles) -> tuple[float, ...]:
    if isinstance(quantiles, (str, bytes)) or not isinstance(quantiles, Sequence):
        raise InputTypeError(f"quantiles must be a sequence of levels in [0, 1], got {describe(quantiles)}")
    levels = tuple(check_real(q, "quantiles") for q in quantiles)
    if any(not 0.0 <= q <= 1.0 for q in levels):
        raise ValueError(f"quantiles must lie in [0, 1], got {list(levels)}")
    return levels


def _resolve_estimator(estimator, beta, candidates, reward_class, fit_kwargs):
    if isinstance(estimator, (str, Objective)):
        try:
            obj = get_objective(estimator)
        except ValueError as err:
            raise ValueError(f"estimator: {err}") from None
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


def _quantile(values: Tensor, q: float) -> Tensor:
    q = check_real(q, "quantile q")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must lie in [0, 1], got {q}")
    return torch.from_numpy(np.quantile(values.numpy(), q, axis=-1))
