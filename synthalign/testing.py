"""Test tools for objectives: hypothesis strategies and a conformance battery any objective can be run through.

Two halves, both for users as much as for synthalign's own tests:

* **Strategies** (`worlds`, `policies`, `log_probs`, `preference_datasets`)
  generating valid random inputs for property-based tests.  They need
  `hypothesis`, a development dependency (``pip install "synthalign[dev]"``);
  it is imported when a strategy is built, so importing this module does not
  need it.
* **Checks**: `check_objective(objective, ...)` runs a battery of checks on an
  `Objective` (built-in or user-defined with `@synthalign.objective`) and
  returns a `CheckReport`, one `CheckResult` per check (name, passed, detail);
  `parametrize_with_checks([...])` turns the battery into one pytest item per
  (objective, check), as scikit-learn's `parametrize_with_checks` does for
  estimators (ids like ``"pmle-gradcheck"``).  The decorator needs `pytest`.

The checks (`CHECKS`, in order):

===================== =====================================================================
finite_extreme        value and gradient finite at logits up to ±1e4, gamma in {1e-3, 1, 1e3}
zero_probability      no NaN with zero-probability responses (in pi, or in pi* and R*); a
                      finite value has a NaN-free gradient
gradcheck             `torch.autograd.gradcheck` (float64) of the population and empirical loss
gradgradcheck         the same for second derivatives, which the Newton solver uses
weight_consistency    loss from counts = mean of the objective's fn over the explicit pairs
                      (also with every pair repeated), and the population loss = the
                      law-weighted sum of fn over the cells
pair_order_invariance permuting the explicit pairs permutes the per-pair losses and leaves the
                      mean unchanged
pair_swap_symmetry    swapping a cell's two responses is the same as flipping its label
                      (precise forms below); "not applicable" where no form is declared
elementwise           perturbing one cell's (pair objectives) or one prompt's (prompt
                      objectives) input changes that cell's or prompt's output only
exact_vs_sampled      the mean of the empirical loss over replicate datasets lies within 4
                      standard errors of the population loss
closed_form           a declared closed form is the minimizer the Newton solver finds
population_minimizer  `fit` on the population law: forward KL to pi*, consistency and the
                      declared minimizer, when given
degeneracy            fits on small data: entropy against H(pi*), mass on unobserved responses
===================== =====================================================================

Pair-swap symmetry, precisely.  For a cell (x, a, b) let l(a, b) be the loss
when a is chosen over b, every input of the cell swapped with it (pi, pi0, R̂;
the reward margin changes sign).  Two forms exist:

* ``"loss"``: l(a, b) = l(b, a).  The loss does not depend on which response
  won, only on what is attached to the responses (REBEL, whose label is R̂'s
  margin, and every objective on unlabelled pairs, distillation included: the
  framework stores the draw order of an unlabelled pair in the (chosen,
  rejected) slot, so such a loss must not depend on it).  Default for
  ``data="pairs"``.
* ``"likelihood"``: exp(−l(a, b)) + exp(−l(b, a)) = 1.  The loss is the negative
  log-likelihood of the label under a preference model P_pi, so swapping the
  pair with the label flipped gives the complementary event: P_pi(a ≻ b) +
  P_pi(b ≻ a) = 1 (spec §6.1, §6.4).  PMLE, DPO, the reward model.

Labelled-pair objectives declare their form with `swap_symmetry=`; without a
declaration the check is "not applicable" (IPO's squared loss has neither form).
Prompt objectives take no pairs: not applicable.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from synthalign._checks import safe_log_ratio
from synthalign.data import PairData, PreferenceData, population_pairs, population_preferences
from synthalign.estimators import fit
from synthalign.evaluate import empirical_loss, make_context, population_loss
from synthalign.metrics import entropy, forward_kl, kl_per_prompt
from synthalign.policies import Policy, as_logp
from synthalign.registry import Objective, get_objective
from synthalign.worlds import World

__all__ = [
    "CHECKS",
    "CheckOptions",
    "CheckReport",
    "CheckResult",
    "check_objective",
    "log_probs",
    "parametrize_with_checks",
    "policies",
    "preference_datasets",
    "worlds",
]

SWAP_FORMS = ("loss", "likelihood")
# Forward KL below which a fitted policy counts as equal to another (pi*, or a declared minimizer).
# Newton stops at a gradient of 1e-10; the distance left is of order |grad|²/curvature ~ 1e-20
# for curvatures above 1e-6, so 1e-8 separates "equal" from "different" with room on both sides.
CONSISTENCY_TOL = 1e-8
# Float64 sums of at most ~10^3 terms differ by at most ~10^3 · 2.2e-16 ≈ 2e-13 relatively whatever
# their order; 1e-10 is a comfortable bound for values that must agree exactly in exact arithmetic.
SUM_RTOL = 1e-10
# A few float64 operations on the same numbers, in another order: rounding of order 1e-15.
OP_RTOL = 1e-12
EXTREME_LOGIT = 1e4
EXTREME_GAMMAS = (1e-3, 1.0, 1e3)


# ===================================================================================== hypothesis strategies


def _strategies():
    try:
        from hypothesis import strategies
    except ImportError as err:  # pragma: no cover - hypothesis is a dev dependency
        raise ImportError("synthalign.testing's strategies need hypothesis: pip install 'synthalign[dev]'") from err
    return strategies


def _int_range(value, name: str, minimum: int) -> tuple[int, int]:
    low, high = (value, value) if isinstance(value, int) else tuple(value)
    if isinstance(low, bool) or isinstance(high, bool) or not (isinstance(low, int) and isinstance(high, int)):
        raise ValueError(f"{name} must be an int or a (min, max) pair of ints, got {value!r}")
    if not minimum <= low <= high:
        raise ValueError(f"{name} must satisfy {minimum} <= min <= max, got {value!r}")
    return low, high


def _float_range(value, name: str) -> tuple[float, float]:
    low, high = (value, value) if isinstance(value, (int, float)) else tuple(value)
    low, high = float(low), float(high)
    if not (0 < low <= high < math.inf):
        raise ValueError(f"{name} must be a positive float or a (min, max) pair with 0 < min <= max, got {value!r}")
    return low, high


def _log_uniform(st, low: float, high: float):
    """Floats in [low, high] spread evenly in log scale (so 1e-3 and 1e3 are both drawn), with the ends."""
    if low == high:
        return st.just(low)
    exponent = st.floats(math.log(low), math.log(high))
    return st.one_of(st.sampled_from((low, high)), exponent.map(lambda e: min(max(math.exp(e), low), high)))


def _logits(st, shape: tuple[int, ...], max_logit: float, neg_inf: bool):
    """A strategy of float64 logit tensors of `shape`; with `neg_inf`, some entries −inf (never a whole row)."""
    size = math.prod(shape)
    values = st.lists(
        st.floats(-max_logit, max_logit, allow_nan=False, allow_infinity=False), min_size=size, max_size=size
    )
    if not neg_inf:
        return values.map(lambda v: torch.tensor(v, dtype=torch.float64).reshape(shape))
    masks = st.lists(st.booleans(), min_size=size, max_size=size)

    def combine(pair):
        logits = torch.tensor(pair[0], dtype=torch.float64).reshape(shape)
        dropped = torch.tensor(pair[1], dtype=torch.bool).reshape(shape)
        # The largest logit of every row stays, so each row keeps positive mass.
        keep = logits.argmax(dim=-1, keepdim=True)
        dropped = dropped.scatter(-1, keep, False)
        return logits.masked_fill(dropped, -math.inf)

    return st.tuples(values, masks).map(combine)


def log_probs(
    shape: Sequence[int] | World,
    *,
    max_logit: float = EXTREME_LOGIT,
    neg_inf: bool = False,
    dtype: torch.dtype = torch.float64,
):
    """A hypothesis strategy of normalized log-probability tensors of `shape` (last dim: responses).

    The tensors are log_softmax of logits drawn in [−max_logit, max_logit] (by
    default ±1e4: probabilities as small as e^-20000, i.e. 0 in float64, while
    the log-probabilities stay finite).  With `neg_inf=True` some entries are
    −inf (exactly zero probability), never a whole row.  `shape` may be a
    `World`, meaning [X, A].
    """
    st = _strategies()
    if isinstance(shape, World):
        shape = (shape.n_prompts, shape.n_responses)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or any(s < 1 for s in shape) or shape[-1] < 2:
        raise ValueError(f"shape must have positive sizes and at least 2 responses (last dim), got {shape}")
    if not (0 < max_logit < math.inf):
        raise ValueError(f"max_logit must be a positive finite float, got {max_logit!r}")
    return _logits(st, shape, max_logit, neg_inf).map(lambda t: torch.log_softmax(t, dim=-1).to(dtype))


def worlds(
    *,
    n_prompts: int | tuple[int, int] = (1, 4),
    n_responses: int | tuple[int, int] = (2, 5),
    gamma: float | tuple[float, float] = (1e-3, 1e3),
    max_logit: float = 5.0,
    zero_probability: bool = False,
    dtype: torch.dtype = torch.float64,
):
    """A hypothesis strategy of valid `World`s with dialable sizes.

    Args:
      n_prompts, n_responses: a size or a (min, max) range.
      gamma: a value or a (min, max) range, drawn log-uniformly (both ends are
        drawn too; the default range 1e-3..1e3 covers the tilts the paper uses
        and far beyond).
      max_logit: logits of pi*, pi0 and mu are drawn in [−max_logit, max_logit].
      zero_probability: when True, pi* and mu may give some responses probability
        exactly 0 (never all of a prompt's) and D may give some prompts weight 0
        (never all).  pi0 always has full support, so that KL(pi ‖ pi0) is finite.
    """
    st = _strategies()
    x_low, x_high = _int_range(n_prompts, "n_prompts", 1)
    a_low, a_high = _int_range(n_responses, "n_responses", 2)
    g_low, g_high = _float_range(gamma, "gamma")
    if not (0 < max_logit < math.inf):
        raise ValueError(f"max_logit must be a positive finite float, got {max_logit!r}")

    @st.composite
    def build(draw):
        X = draw(st.integers(x_low, x_high))
        A = draw(st.integers(a_low, a_high))
        g = draw(_log_uniform(st, g_low, g_high))
        target = draw(_logits(st, (X, A), max_logit, zero_probability))
        reference = draw(_logits(st, (X, A), max_logit, False))
        behavior = draw(_logits(st, (X, A), max_logit, zero_probability))
        weight = st.floats(0.01, 1.0)
        if zero_probability:
            weight = st.one_of(st.just(0.0), weight)
        prompt_weight = torch.tensor(draw(st.lists(weight, min_size=X, max_size=X)), dtype=torch.float64)
        if prompt_weight.sum() == 0:
            prompt_weight[draw(st.integers(0, X - 1))] = 1.0
        return World.from_tensors(
            target=target,
            reference=reference,
            behavior=behavior,
            prompt_dist=prompt_weight / prompt_weight.sum(),
            gamma=g,
            kind="logits",
            dtype=dtype,
        )

    return build()


def policies(
    world_or_shape,
    *,
    batch_shape: Sequence[int] = (),
    max_logit: float = 5.0,
    neg_inf: bool = False,
):
    """A hypothesis strategy of tabular `Policy`s of shape [*batch_shape, X, A].

    `world_or_shape` is a `World` (the policies then carry its prompt
    distribution), a strategy of worlds (a world is drawn first), or a shape
    (X, A).  Logits are drawn in [−max_logit, max_logit]; `neg_inf=True` allows
    zero-probability responses.
    """
    st = _strategies()
    batch_shape = tuple(int(b) for b in batch_shape)

    def for_world(world):
        if isinstance(world, World):
            shape, prompt_dist = (world.n_prompts, world.n_responses), world.prompt_dist
        else:
            shape, prompt_dist = tuple(int(s) for s in world), None
            if len(shape) != 2:
                raise ValueError(f"world_or_shape must be a World or a shape (X, A), got {world!r}")
        logp = log_probs((*batch_shape, *shape), max_logit=max_logit, neg_inf=neg_inf)
        return logp.map(lambda t: Policy(t, prompt_dist))

    if isinstance(world_or_shape, st.SearchStrategy):
        return world_or_shape.flatmap(for_world)
    return for_world(world_or_shape)


def preference_datasets(
    world,
    *,
    n: int | tuple[int, int] = (1, 256),
    replicates: int | tuple[int, int] = (1, 3),
    labelled: bool = True,
):
    """A hypothesis strategy of datasets sampled from `world` (a `World` or a strategy of worlds).

    Labelled datasets are `PreferenceData` (`world.sample_preferences`),
    unlabelled ones `PairData` (`world.sample_pairs`, pairs from mu); n and the
    number of replicates are drawn from their ranges and the sampling seed by
    hypothesis.
    """
    st = _strategies()
    n_low, n_high = _int_range(n, "n", 1)
    r_low, r_high = _int_range(replicates, "replicates", 1)

    def for_world(w):
        def sample(args):
            size, reps, seed = args
            if labelled:
                return w.sample_preferences(size, reps, seed=seed)
            return w.sample_pairs(size, reps, seed=seed)

        return st.tuples(st.integers(n_low, n_high), st.integers(r_low, r_high), st.integers(0, 2**32 - 1)).map(sample)

    if isinstance(world, st.SearchStrategy):
        return world.flatmap(for_world)
    if not isinstance(world, World):
        raise ValueError(f"world must be a World or a strategy of worlds, got {type(world).__name__}")
    return for_world(world)


# ===================================================================================== check options and results


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

    def __post_init__(self):
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


# ===================================================================================== shared pieces


def _generator(opts: CheckOptions, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(opts.seed * 1000 + salt)


def _random_logp(generator: torch.Generator, *shape: int, scale: float = 1.0) -> Tensor:
    logits = scale * torch.randn(*shape, generator=generator, dtype=torch.float64)
    return torch.log_softmax(logits, dim=-1)


def _reward(obj: Objective, opts: CheckOptions, world: World) -> Tensor | None:
    if not obj.needs_reward:
        return None
    if opts.reward is not None:
        return torch.as_tensor(opts.reward, dtype=world.dtype)
    return world.true_reward


def _loss_kwargs(obj: Objective, opts: CheckOptions, reward: Tensor | None) -> dict:
    kwargs = dict(opts.params)
    if obj.needs_reward:
        kwargs["reward"] = reward
    return kwargs


def _population_data(obj: Objective, world: World):
    return population_pairs(world) if obj.data == "pairs" else population_preferences(world)


def _sample(obj: Objective, world: World, n: int, replicates: int, seed: int):
    if obj.data == "pairs":
        return world.sample_pairs(n, replicates, seed=seed)
    return world.sample_preferences(n, replicates, seed=seed)


def _direct_values(
    obj: Objective,
    opts: CheckOptions,
    world: World,
    logp: Tensor,
    reward: Tensor | None,
    prompt: Tensor,
    first: Tensor | None = None,
    second: Tensor | None = None,
) -> Tensor:
    """The objective's own fn on explicit items, without the framework: per pair (prompt, first, second),
    or per prompt for a prompt objective, plus beta KL(pi(x) ‖ pi0(x)) of the item's prompt.  Shape of `prompt`."""
    ref = world.reference.logp
    if obj.kind == "pair":
        available = {
            "logp_chosen": lambda: logp[prompt, first],
            "logp_rejected": lambda: logp[prompt, second],
            "ref_logp_chosen": lambda: ref[prompt, first],
            "ref_logp_rejected": lambda: ref[prompt, second],
            "reward_chosen": lambda: reward[prompt, first],
            "reward_rejected": lambda: reward[prompt, second],
            "target_margin": lambda: safe_log_ratio(reward[prompt, first], reward[prompt, second]),
        }
    else:
        available = {"logp": lambda: logp[prompt], "ref_logp": lambda: ref[prompt], "reward": lambda: reward[prompt]}
    inputs = {name: (world.gamma if name == "gamma" else available[name]()) for name in obj.inputs}
    if obj.kind == "prompt" and "logp" not in inputs:
        inputs["logp"] = logp[prompt]
    values = torch.broadcast_to(obj.fn(**inputs, **opts.params), prompt.shape)
    if opts.beta > 0:
        values = values + opts.beta * kl_per_prompt(logp, ref)[prompt]
    return values


def _max_rel_diff(a: Tensor, b: Tensor) -> float:
    """max |a − b| / max(1, |a|, |b|) with equal infinities counted as equal."""
    a, b = torch.broadcast_tensors(a.detach(), b.detach())
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))
    scale = torch.maximum(torch.ones_like(a), torch.maximum(a.abs(), b.abs()))
    diff = torch.where(same, torch.zeros_like(a), (a - b).abs() / scale)
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
    return float(diff.max()) if diff.numel() else 0.0


def _fmt(value: float) -> str:
    return f"{value:.3g}"


# ===================================================================================== the checks


def _check_finite_extreme(obj: Objective, opts: CheckOptions) -> CheckResult:
    problems, evaluated = [], 0
    generator = _generator(opts, 1)
    X, A = 2, 4
    for gamma in EXTREME_GAMMAS:

        def extreme() -> Tensor:
            return (2 * torch.rand(X, A, generator=generator, dtype=torch.float64) - 1) * EXTREME_LOGIT

        world = World.from_tensors(
            target=extreme(),
            reference=extreme(),
            behavior=torch.randn(X, A, generator=generator, dtype=torch.float64),
            gamma=gamma,
            kind="logits",
        )
        reward = gamma * world.target.logp if obj.needs_reward else None
        theta = extreme().requires_grad_(True)
        datasets = {"population": _population_data(obj, world), "sampled": _sample(obj, world, 64, 2, opts.seed)}
        for label, data in datasets.items():
            where = f"gamma={gamma:g}, {label}"
            logp = torch.log_softmax(theta, dim=-1)
            loss = empirical_loss(obj, data, logp, beta=opts.beta, **_loss_kwargs(obj, opts, reward))
            evaluated += 1
            if not torch.isfinite(loss).all():
                problems.append(f"{where}: loss = {loss.detach().tolist()}")
                continue
            (grad,) = torch.autograd.grad(loss.sum(), theta)
            if not torch.isfinite(grad).all():
                problems.append(f"{where}: gradient has {int((~torch.isfinite(grad)).sum())} non-finite entries")
        # Every cell, including those the data gives weight 0 (the framework masks those).
        ctx = make_context(obj, world, reward, obj.resolve_params(opts.params))
        with torch.no_grad():
            logp = torch.log_softmax(theta, dim=-1)
            values = obj.pair_values(logp, ctx, None) if obj.kind == "pair" else obj.prompt_values(logp, ctx)
        if not torch.isfinite(values).all():
            problems.append(f"gamma={gamma:g}: {int((~torch.isfinite(values)).sum())} non-finite per-cell values")
    detail = (
        f"value and gradient finite on {evaluated} losses at logits in ±{EXTREME_LOGIT:g}, gamma in {EXTREME_GAMMAS}"
        if not problems
        else "; ".join(problems[:4])
    )
    return CheckResult("finite_extreme", not problems, detail, {"problems": len(problems)})


def _check_zero_probability(obj: Objective, opts: CheckOptions) -> CheckResult:
    """NaN-freedom with exactly-zero probabilities: a value may be +inf where the math says so
    (e.g. pi puts no mass on an observed chosen response) and an input the objective cannot
    evaluate may be refused with ValueError, but a value is never NaN, and a finite value has a
    NaN-free gradient."""
    problems, scenarios, rejected = [], 0, 0
    generator = _generator(opts, 2)
    X, A = 3, 4
    for gamma in EXTREME_GAMMAS:
        # Responses 0 and 1 of every prompt: pi gives them probability 0; mu never proposes them.
        unobserved = torch.zeros(X, A, dtype=torch.bool)
        unobserved[:, :2] = True
        behavior = torch.randn(X, A, generator=generator, dtype=torch.float64).masked_fill(unobserved, -math.inf)
        world = World.from_tensors(
            target=torch.randn(X, A, generator=generator, dtype=torch.float64),
            reference=torch.randn(X, A, generator=generator, dtype=torch.float64),
            behavior=behavior,
            gamma=gamma,
            kind="logits",
        )
        theta = torch.randn(X, A, generator=generator, dtype=torch.float64)
        reward = world.true_reward if obj.needs_reward else None  # finite: this pi* has full support
        cases = [("pi zero where mu is zero", world, theta, unobserved, reward)]
        # pi* with zeros: then R* = gamma ln pi* is -inf there (the default reward of population losses).
        target_zero = torch.zeros(X, A, dtype=torch.bool)
        target_zero[:, -1] = True
        zero_world = World.from_tensors(
            target=torch.randn(X, A, generator=generator, dtype=torch.float64).masked_fill(target_zero, -math.inf),
            reference=torch.randn(X, A, generator=generator, dtype=torch.float64),
            behavior=torch.randn(X, A, generator=generator, dtype=torch.float64),
            gamma=gamma,
            kind="logits",
        )
        zero_reward = zero_world.true_reward if obj.needs_reward else None
        cases.append(("pi* zero, R* = gamma ln pi*", zero_world, theta, torch.zeros_like(target_zero), zero_reward))
        cases.append(
            ("pi = pi* with zeros", zero_world, zero_world.target.logp.clamp_min(-1e300), target_zero, zero_reward)
        )
        for label, w, start, mask, reward in cases:
            theta_leaf = start.clone().requires_grad_(True)
            datasets = {"population": _population_data(obj, w), "sampled": _sample(obj, w, 64, 2, opts.seed)}
            for data_label, data in datasets.items():
                scenarios += 1
                where = f"gamma={gamma:g}, {label}, {data_label}"
                logp = torch.log_softmax(theta_leaf.masked_fill(mask, -math.inf), dim=-1)
                try:
                    loss = empirical_loss(obj, data, logp, beta=opts.beta, **_loss_kwargs(obj, opts, reward))
                except ValueError:
                    rejected += 1  # refusing an input it cannot evaluate, with a ValueError, is allowed
                    continue
                if torch.isnan(loss).any():
                    problems.append(f"{where}: loss is NaN")
                    continue
                if not torch.isfinite(loss).all():
                    continue
                (grad,) = torch.autograd.grad(loss.sum(), theta_leaf)
                if torch.isnan(grad).any():
                    problems.append(f"{where}: finite loss {_fmt(float(loss.sum()))} but NaN gradient")
    detail = (
        f"no NaN in {scenarios} losses with zero-probability responses"
        + (f" ({rejected} refused with ValueError)" if rejected else "")
        + "; finite values have NaN-free gradients"
        if not problems
        else "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
    )
    return CheckResult("zero_probability", not problems, detail, {"problems": len(problems)})


def _gradient_functions(obj: Objective, opts: CheckOptions):
    world = opts.check_world()
    reward = _reward(obj, opts, world)
    kwargs = _loss_kwargs(obj, opts, reward)
    data = _sample(obj, world, 40, 2, opts.seed)

    def population(theta):
        return population_loss(obj, world, torch.log_softmax(theta, dim=-1), beta=opts.beta, **kwargs)

    def empirical(theta):
        return empirical_loss(obj, data, torch.log_softmax(theta, dim=-1), beta=opts.beta, **kwargs)

    theta = torch.randn(world.n_prompts, world.n_responses, generator=_generator(opts, 3), dtype=torch.float64)
    return {"population": population, "empirical": empirical}, theta.requires_grad_(True)


def _run_gradcheck(name: str, obj: Objective, opts: CheckOptions, checker) -> CheckResult:
    functions, theta = _gradient_functions(obj, opts)
    problems = []
    for label, fn in functions.items():
        try:
            checker(fn, (theta,), raise_exception=True)
        except Exception as err:  # GradcheckError, or an error raised inside the objective
            message = str(err).strip().splitlines()
            problems.append(f"{label} loss: {type(err).__name__}: {' '.join(message[:3])[:300]}")
    what = "first" if name == "gradcheck" else "second"
    detail = (
        f"autograd {what} derivatives match finite differences (float64) for the population and empirical loss"
        if not problems
        else "; ".join(problems)
    )
    return CheckResult(name, not problems, detail)


def _check_gradcheck(obj: Objective, opts: CheckOptions) -> CheckResult:
    return _run_gradcheck("gradcheck", obj, opts, torch.autograd.gradcheck)


def _check_gradgradcheck(obj: Objective, opts: CheckOptions) -> CheckResult:
    return _run_gradcheck("gradgradcheck", obj, opts, torch.autograd.gradgradcheck)


def _check_weight_consistency(obj: Objective, opts: CheckOptions) -> CheckResult:
    world = opts.check_world()
    reward = _reward(obj, opts, world)
    kwargs = _loss_kwargs(obj, opts, reward)
    logp = _random_logp(_generator(opts, 4), world.n_prompts, world.n_responses)
    data = _sample(obj, world, 40, 3, opts.seed)
    pairs = data.to_list(seed=opts.seed) if isinstance(data, PreferenceData) else _pair_list(data, opts.seed)
    from_counts = empirical_loss(obj, data, logp, beta=opts.beta, **kwargs)
    explicit = _direct_values(obj, opts, world, logp, reward, pairs.prompt, pairs.chosen, pairs.rejected).mean(-1)
    repeats = 3
    repeated_counts = type(data)(data.counts * repeats, data.n_pairs * repeats, world)
    from_repeated_counts = empirical_loss(obj, repeated_counts, logp, beta=opts.beta, **kwargs)
    tiled = [index.repeat(1, repeats) for index in (pairs.prompt, pairs.chosen, pairs.rejected)]
    repeated_explicit = _direct_values(obj, opts, world, logp, reward, *tiled).mean(-1)

    law = _population_data(obj, world).counts[0]
    cells = torch.nonzero(law > 0, as_tuple=True)
    cell_values = _direct_values(obj, opts, world, logp, reward, *cells)
    direct_population = (law[cells] * cell_values).sum() / law.sum()
    exact = population_loss(obj, world, logp, beta=opts.beta, **kwargs)

    gaps = {
        "counts vs explicit pairs": _max_rel_diff(from_counts, explicit),
        "counts x3 vs explicit pairs repeated 3 times": _max_rel_diff(from_repeated_counts, repeated_explicit),
        "counts vs counts x3": _max_rel_diff(from_counts, from_repeated_counts),
        "population loss vs law-weighted fn": _max_rel_diff(exact, direct_population),
    }
    bad = {k: v for k, v in gaps.items() if not v <= SUM_RTOL}
    if bad:
        detail = "; ".join(f"{k}: relative gap {_fmt(v)} (> {SUM_RTOL:g})" for k, v in bad.items())
    else:
        detail = f"4 ways of weighting agree to relative {_fmt(max(gaps.values()))} (<= {SUM_RTOL:g})"
    return CheckResult("weight_consistency", not bad, detail, gaps)


def _pair_list(data: PairData, seed: int):
    from synthalign.data import counts_to_list

    return counts_to_list(data, seed=seed)


def _check_pair_order_invariance(obj: Objective, opts: CheckOptions) -> CheckResult:
    world = opts.check_world()
    reward = _reward(obj, opts, world)
    logp = _random_logp(_generator(opts, 5), world.n_prompts, world.n_responses)
    data = _sample(obj, world, 40, 3, opts.seed)
    pairs = data.to_list(seed=opts.seed) if isinstance(data, PreferenceData) else _pair_list(data, opts.seed)
    index = (pairs.prompt, pairs.chosen, pairs.rejected)
    generator = _generator(opts, 6)
    order = torch.argsort(torch.rand(pairs.prompt.shape, generator=generator, dtype=torch.float64), dim=-1)
    permuted = tuple(torch.gather(i, 1, order) for i in index)
    values = _direct_values(obj, opts, world, logp, reward, *index)
    values_permuted = _direct_values(obj, opts, world, logp, reward, *permuted)
    per_pair_gap = _max_rel_diff(torch.gather(values, 1, order), values_permuted)
    mean_gap = _max_rel_diff(values.mean(-1), values_permuted.mean(-1))
    gaps = {"per-pair losses": per_pair_gap, "mean loss": mean_gap}
    passed = per_pair_gap <= OP_RTOL and mean_gap <= SUM_RTOL
    detail = (
        f"permuting {pairs.n_pairs} pairs permutes their losses (gap {_fmt(per_pair_gap)}) "
        f"and keeps the mean (gap {_fmt(mean_gap)})"
    )
    if not passed:
        detail = "NOT invariant: " + detail + f"; tolerances {OP_RTOL:g} per pair, {SUM_RTOL:g} for the mean"
    return CheckResult("pair_order_invariance", passed, detail, gaps)


def _swap_form(obj: Objective, opts: CheckOptions) -> str | None:
    if obj.kind == "prompt":
        return None
    if opts.swap_symmetry == "auto":
        if obj.swap_symmetry is not None:
            return obj.swap_symmetry
        return "loss" if obj.data == "pairs" else None
    return opts.swap_symmetry


def _swap_not_applicable(obj: Objective, opts: CheckOptions) -> str | None:
    if obj.kind == "prompt":
        return "a prompt objective takes no pairs"
    if _swap_form(obj, opts) is None:
        return "labelled pairs without a declared form (pass swap_symmetry='likelihood' or 'loss')"
    return None


def _check_pair_swap_symmetry(obj: Objective, opts: CheckOptions) -> CheckResult:
    reason = _swap_not_applicable(obj, opts)
    if reason:
        return CheckResult("pair_swap_symmetry", None, reason)
    form = _swap_form(obj, opts)
    world = opts.check_world()
    reward = _reward(obj, opts, world)
    logp = _random_logp(_generator(opts, 7), world.n_prompts, world.n_responses, scale=2.0)
    X, A = world.n_prompts, world.n_responses
    prompt, first, second = torch.meshgrid(torch.arange(X), torch.arange(A), torch.arange(A), indexing="ij")
    # The framework adds beta KL(pi ‖ pi0) per prompt, not per pair: compare the pair loss alone.
    pair_only = dataclasses.replace(opts, beta=0.0)
    cell = _direct_values(obj, pair_only, world, logp, reward, prompt, first, second)
    swapped = cell.transpose(-1, -2)
    if form == "loss":
        gap = _max_rel_diff(cell, swapped)
        what = "l(a, b) = l(b, a)"
    else:
        total = torch.logaddexp(-cell, -swapped)  # ln[P(a ≻ b) + P(b ≻ a)], 0 for a likelihood
        gap = float(total.abs().max())
        what = "exp(-l(a, b)) + exp(-l(b, a)) = 1"
    passed = gap <= OP_RTOL
    detail = f"{form} form, {what}: largest deviation {_fmt(gap)} over {cell.numel()} cells (tolerance {OP_RTOL:g})"
    return CheckResult("pair_swap_symmetry", passed, detail, {"form": form, "deviation": gap})


def _check_elementwise(obj: Objective, opts: CheckOptions) -> CheckResult:
    world = opts.check_world()
    reward = _reward(obj, opts, world)
    ctx = make_context(obj, world, reward, obj.resolve_params(opts.params))
    B, X, A = 2, world.n_prompts, world.n_responses
    logp = _random_logp(_generator(opts, 8), B, X, A)
    delta = 0.25
    leaks = []
    with torch.no_grad():
        if obj.kind == "pair":
            # Full-cell copies of the two log-probability arguments, as the Newton solver passes them.
            first = logp.unsqueeze(-1).expand(B, X, A, A).clone()
            second = logp.unsqueeze(-2).expand(B, X, A, A).clone()
            base = obj.pair_values(logp, ctx, None, first=first, second=second)
            if base.shape != first.shape:
                return CheckResult(
                    "elementwise", False, f"fn returned shape {tuple(base.shape)} for {tuple(first.shape)} cells"
                )
            for argument, tensor in (("logp_chosen", first), ("logp_rejected", second)):
                for cell in range(tensor.numel()):
                    moved = tensor.clone()
                    moved.view(-1)[cell] -= delta
                    args = (
                        {"first": moved, "second": second}
                        if argument == "logp_chosen"
                        else {"first": first, "second": moved}
                    )
                    out = obj.pair_values(logp, ctx, None, **args)
                    changed = torch.broadcast_to(out != base, base.shape).clone()
                    changed.view(-1)[cell] = False
                    if changed.any():
                        leaks.append(f"{argument} of cell {cell} changed {int(changed.sum())} other cells")
            unit, count = "cells", 2 * first.numel()
        else:
            base = obj.prompt_values(logp, ctx)
            if base.shape != logp.shape[:-1]:
                return CheckResult(
                    "elementwise", False, f"fn returned shape {tuple(base.shape)} for {tuple(logp.shape[:-1])} prompts"
                )
            for b in range(B):
                for x in range(X):
                    moved = logp.clone()
                    moved[b, x] = torch.log_softmax(moved[b, x] + delta * torch.arange(A, dtype=logp.dtype), -1)
                    changed = torch.broadcast_to(obj.prompt_values(moved, ctx) != base, base.shape).clone()
                    changed[b, x] = False
                    if changed.any():
                        leaks.append(f"prompt {x} of replicate {b} changed {int(changed.sum())} other prompts")
            unit, count = "prompts", B * X
    if leaks:
        detail = f"{len(leaks)} of {count} perturbations leak (the solver needs separable losses): " + "; ".join(
            leaks[:2]
        )
    else:
        detail = f"perturbing each of {count} {unit} (2 replicates) changes only its own output"
    return CheckResult("elementwise", not leaks, detail, {"leaks": len(leaks)})


def _check_exact_vs_sampled(obj: Objective, opts: CheckOptions) -> CheckResult:
    world = opts.check_world()
    reward = _reward(obj, opts, world)
    kwargs = _loss_kwargs(obj, opts, reward)
    logp = _random_logp(_generator(opts, 9), world.n_prompts, world.n_responses)
    replicates, n = 400, 32
    data = _sample(obj, world, n, replicates, opts.seed)
    sampled = empirical_loss(obj, data, logp, beta=opts.beta, **kwargs)
    exact = float(population_loss(obj, world, logp, beta=opts.beta, **kwargs))
    mean = float(sampled.mean())
    stderr = float(sampled.std()) / math.sqrt(replicates)
    # The empirical loss is a mean of n i.i.d. per-pair terms (prompt terms for on-policy objectives),
    # so it is unbiased for the population loss; 4 standard errors of the mean over replicates leave a
    # two-sided false-alarm probability of 6e-5 (normal approximation).  The float64 allowance covers a
    # loss with no variance at all.
    allowed = 4 * stderr + 1e-12 * max(1.0, abs(exact))
    gap = abs(mean - exact)
    passed = gap <= allowed
    detail = (
        f"mean over {replicates} datasets of n={n}: {_fmt(mean)} vs population {_fmt(exact)}; "
        f"|gap| = {_fmt(gap)} {'<=' if passed else '>'} 4 SE = {_fmt(4 * stderr)}"
    )
    return CheckResult("exact_vs_sampled", passed, detail, {"mean": mean, "population": exact, "stderr": stderr})


def _check_closed_form(obj: Objective, opts: CheckOptions) -> CheckResult:
    if obj.closed_form is None:
        return CheckResult("closed_form", None, "no closed form declared")
    world = opts.check_world()
    data = _population_data(obj, world)
    fit_kwargs = dict(opts.params)
    if obj.needs_reward and opts.reward is not None:
        fit_kwargs["reward"] = opts.reward
    closed = fit(obj, data, beta=opts.beta, **fit_kwargs)
    newton = fit(dataclasses.replace(obj, closed_form=None), data, beta=opts.beta, **fit_kwargs)
    distance = float(forward_kl(closed.policy, newton.policy).max())
    theta = closed.policy.logp[0].clone().requires_grad_(True)
    reward = _reward(obj, opts, world)
    loss = population_loss(obj, world, torch.log_softmax(theta, -1), beta=opts.beta, **_loss_kwargs(obj, opts, reward))
    (grad,) = torch.autograd.grad(loss, theta)
    grad_norm = float(grad.abs().max())
    converged = bool(newton.converged.all())
    passed = converged and distance < CONSISTENCY_TOL
    detail = (
        f"Newton ({newton.iterations} iterations, {'converged' if converged else 'NOT converged'}) reaches the "
        f"closed form: KL(closed ‖ newton) = {_fmt(distance)} ({'<' if distance < CONSISTENCY_TOL else '>='} "
        f"{CONSISTENCY_TOL:g}); gradient at the closed form {_fmt(grad_norm)}"
    )
    return CheckResult("closed_form", passed, detail, {"kl": distance, "grad_norm": grad_norm})


def _check_population_minimizer(obj: Objective, opts: CheckOptions) -> CheckResult:
    world = opts.check_world()
    data = _population_data(obj, world)
    fit_kwargs = dict(opts.params)
    if obj.needs_reward and opts.reward is not None:
        fit_kwargs["reward"] = opts.reward
    result = fit(obj, data, beta=opts.beta, **fit_kwargs)
    policy = result.policy[0]
    kl_target = float(forward_kl(world.target, policy))
    converged = bool(result.converged.all())
    values = {"forward_kl": kl_target, "converged": converged, "method": result.method}
    problems = []
    if not converged:
        problems.append(f"the fit did not converge (largest gradient {_fmt(float(result.grad_norm.max()))})")
    consistent = kl_target < CONSISTENCY_TOL
    finding = (
        f"recovers pi*: KL(pi* ‖ pi) = {_fmt(kl_target)}"
        if consistent
        else f"converges to a policy other than pi*: KL(pi* ‖ pi) = {_fmt(kl_target)}"
    )
    # Options given to the check override what the objective itself declares.
    declared = opts.consistent if opts.consistent is not None else obj.consistent
    expected_minimizer = opts.expected_minimizer or obj.expected_minimizer
    if declared is not None and declared != consistent:
        problems.append(f"declared consistent={declared} but it {finding}")
    if expected_minimizer is not None:
        reward = fit_kwargs.get("reward", world.true_reward if obj.needs_reward else None)
        expected = expected_minimizer(reward, world, opts.beta, obj.resolve_params(opts.params))
        expected = Policy(as_logp(expected, "expected_minimizer"), world.prompt_dist)
        kl_expected = float(forward_kl(expected, policy))
        values["forward_kl_to_expected"] = kl_expected
        finding += f"; KL(expected ‖ pi) = {_fmt(kl_expected)}"
        if not kl_expected < CONSISTENCY_TOL:
            problems.append(f"the fit is not the declared minimizer: KL(expected ‖ pi) = {_fmt(kl_expected)}")
    detail = f"fit ({result.method}, {result.iterations} iterations) on the population law {finding}"
    if problems:
        detail = "; ".join(problems) + f" [{detail}]"
    return CheckResult("population_minimizer", not problems, detail, values)


def _check_degeneracy(obj: Objective, opts: CheckOptions) -> CheckResult:
    """A report more than a test: fails only when a fit on small data breaks (error or non-finite loss).

    Every objective is fitted on the same labelled datasets of n = X·A pairs; objectives that need R̂
    get it fitted on those labels (`fit`'s default), unless `reward` is given.
    """
    world = opts.check_world()
    X, A = world.n_prompts, world.n_responses
    n, replicates = X * A, 16
    data = world.sample_preferences(n, replicates, seed=opts.seed)
    fit_kwargs = dict(opts.params)
    if obj.needs_reward and opts.reward is not None:
        fit_kwargs["reward"] = opts.reward
    result = fit(obj, data, beta=opts.beta, **fit_kwargs)
    if not torch.isfinite(result.loss).all():
        return CheckResult("degeneracy", False, f"non-finite loss after fitting n={n} pairs: {result.loss.tolist()}")
    counts = data.counts
    seen_response = (counts.sum(-1) + counts.sum(-2)) > 0  # [R, X, A]
    seen_prompt = seen_response.any(-1)  # [R, X]
    prompt_weight = world.prompt_dist * seen_prompt
    prompt_weight = prompt_weight / prompt_weight.sum(-1, keepdim=True)

    def unobserved_mass(logp: Tensor) -> Tensor:
        mass = torch.where(~seen_response, logp.exp(), torch.zeros_like(logp)).sum(-1)
        return (prompt_weight * mass).sum(-1)

    fitted_mass = float(unobserved_mass(result.policy.logp).mean())
    target_mass = float(unobserved_mass(world.target.logp.expand_as(result.policy.logp)).mean())
    fitted_entropy = float(entropy(result.policy).mean())
    target_entropy = float(entropy(world.target))
    converged = float(result.converged.to(torch.float64).mean())
    values = {
        "n": n,
        "entropy": fitted_entropy,
        "target_entropy": target_entropy,
        "unobserved_mass": fitted_mass,
        "target_unobserved_mass": target_mass,
        "converged_fraction": converged,
    }
    detail = (
        f"n={n} pairs, {replicates} datasets: entropy {_fmt(fitted_entropy)} vs H(pi*) {_fmt(target_entropy)}; "
        f"mass on unobserved responses {_fmt(fitted_mass)} vs pi*'s {_fmt(target_mass)}; "
        f"{100 * converged:.0f}% of fits converged"
    )
    if result.separable is not None:
        separable = float(result.separable.to(torch.float64).mean())
        values["separable_fraction"] = separable
        detail += f"; {100 * separable:.0f}% of (dataset, prompt) comparison graphs separable"
    return CheckResult("degeneracy", True, detail, values)


@dataclasses.dataclass(frozen=True)
class _Check:
    run: Callable[[Objective, CheckOptions], CheckResult]
    not_applicable: Callable[[Objective, CheckOptions], str | None] = lambda obj, opts: None


_REGISTRY: dict[str, _Check] = {
    "finite_extreme": _Check(_check_finite_extreme),
    "zero_probability": _Check(_check_zero_probability),
    "gradcheck": _Check(_check_gradcheck),
    "gradgradcheck": _Check(_check_gradgradcheck),
    "weight_consistency": _Check(_check_weight_consistency),
    "pair_order_invariance": _Check(_check_pair_order_invariance),
    "pair_swap_symmetry": _Check(_check_pair_swap_symmetry, _swap_not_applicable),
    "elementwise": _Check(_check_elementwise),
    "exact_vs_sampled": _Check(_check_exact_vs_sampled),
    "closed_form": _Check(
        _check_closed_form, lambda obj, opts: None if obj.closed_form is not None else "no closed form declared"
    ),
    "population_minimizer": _Check(_check_population_minimizer),
    "degeneracy": _Check(_check_degeneracy),
}
CHECKS: tuple[str, ...] = tuple(_REGISTRY)
"""The names of every check, in the order they run."""


def _select(checks: Iterable[str] | None) -> tuple[str, ...]:
    if checks is None:
        return CHECKS
    if isinstance(checks, str):
        checks = (checks,)
    selected = tuple(checks)
    unknown = [name for name in selected if name not in _REGISTRY]
    if unknown:
        raise ValueError(f"checks has unknown names {unknown}; known: {', '.join(CHECKS)}")
    return selected


def _run_check(name: str, obj: Objective, opts: CheckOptions) -> CheckResult:
    check = _REGISTRY[name]
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
        see `CheckOptions`.
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
        params=params or {},
        reward=reward,
        consistent=consistent,
        expected_minimizer=expected_minimizer,
        swap_symmetry=swap_symmetry,
        world=world,
        seed=seed,
    )
    obj.resolve_params(opts.params)  # unknown or missing hyper-parameters: ValueError now, not per check
    report = CheckReport(obj.name, opts, tuple(_run_check(name, obj, opts) for name in _select(checks)))
    if raise_on_failure:
        report.raise_for_failures()
    return report


# ===================================================================================== pytest integration


class _BoundCheck:
    """One check with its options, called by the test as `check(objective)`."""

    def __init__(self, name: str, options: CheckOptions):
        self.name = name
        self.options = options

    def __call__(self, objective: str | Objective) -> CheckResult:
        result = _run_check(self.name, get_objective(objective), self.options)
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
        options.setdefault("params", {})
        opts = CheckOptions(**options)
        obj.resolve_params(opts.params)
        entries.append((obj, opts))
    return entries


def parametrize_with_checks(
    objectives: Iterable,
    *,
    checks: Iterable[str] | None = None,
    expected_failures: Mapping[tuple[str, str], str] | None = None,
):
    """A pytest decorator running every check on every objective, one test item each.

    Args:
      objectives: objectives (names or `Objective`s), or (objective, options)
        pairs whose options dict holds `CheckOptions` fields, e.g.
        ``("rlhf", {"beta": 1.0, "consistent": False})``.
      checks: the checks to run (default all of `CHECKS`).
      expected_failures: {(objective name, check name): reason} for known
        failures, marked as strict xfail (they fail the run once fixed, so the
        entry gets removed).

    Items are named "<objective>-<check>"; a check that does not apply is
    marked skip with the reason.  Use it as scikit-learn's::

        @parametrize_with_checks(["pmle", ("rlhf", {"beta": 1.0})])
        def test_conformance(objective, check):
            check(objective)
    """
    import pytest

    selected = _select(checks)
    expected_failures = dict(expected_failures or {})
    params, seen = [], set()
    for obj, opts in _entries(objectives):
        for name in selected:
            marks = []
            reason = _REGISTRY[name].not_applicable(obj, opts)
            if reason:
                marks.append(pytest.mark.skip(reason=f"not applicable: {reason}"))
            elif (obj.name, name) in expected_failures:
                marks.append(pytest.mark.xfail(reason=expected_failures[(obj.name, name)], strict=True))
            seen.add((obj.name, name))
            params.append(pytest.param(obj, _BoundCheck(name, opts), id=f"{obj.name}-{name}", marks=marks))
    unused = set(expected_failures) - seen
    if unused:
        raise ValueError(f"expected_failures names (objective, check) pairs that are not run: {sorted(unused)}")
    return pytest.mark.parametrize("objective, check", params)
