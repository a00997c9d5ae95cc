"""Hypothesis strategies generating valid random worlds, policies, log-probabilities and datasets.

They need `hypothesis`, a development dependency (``pip install "synthalign[dev]"``); it is
imported when a strategy is built, so importing this module does not need it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from synthalign.worlds.policy import Policy
from synthalign.worlds.tabular import World

__all__ = [
    "EXTREME_GAMMAS",
    "EXTREME_LOGIT",
    "betas",
    "gammas",
    "log_policies",
    "log_probs",
    "logit_arrays",
    "policies",
    "policy_pairs",
    "preference_datasets",
    "random_log_policy",
    "random_worlds",
    "worlds",
]

# The extreme-but-valid inputs every objective must survive (logits up to ±1e4, gamma over six decades).
EXTREME_LOGIT = 1e4
EXTREME_GAMMAS = (1e-3, 1.0, 1e3)


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
) -> Any:
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
) -> Any:
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
    world_or_shape: World | Sequence[int] | Any,
    *,
    batch_shape: Sequence[int] = (),
    max_logit: float = 5.0,
    neg_inf: bool = False,
) -> Any:
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
    world: World | Any,
    *,
    n: int | tuple[int, int] = (1, 256),
    replicates: int | tuple[int, int] = (1, 3),
    labelled: bool = True,
) -> Any:
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


# ------------------------------------------------------------------ strategies over World.random's parameters


def gammas() -> Any:
    """Preference tilts spanning the paper's range (0 < gamma < 1 in practice) and beyond: [0.05, 4]."""
    return _strategies().floats(min_value=0.05, max_value=4.0, allow_nan=False, allow_infinity=False)


def betas() -> Any:
    """KL weights in [0.01, 5]."""
    return _strategies().floats(min_value=0.01, max_value=5.0, allow_nan=False, allow_infinity=False)


def random_worlds(
    *,
    max_prompts: int = 4,
    max_responses: int = 6,
    zeros: bool = True,
    zero_fractions: Any = None,
    gamma: Any = None,
    behavior_mix: bool = True,
    uniform_prompts: bool = False,
) -> Any:
    """A strategy of `World.random` worlds with drawn sizes, tilt, distances and zero-probability responses.

    It draws the *parameters* of a world (sizes, tilt, how far pi0 and mu sit from pi*,
    zero-probability responses of pi*, a non-uniform D) and a seed, so a failing example
    shrinks to a small world with simple settings.  `zero_fractions` and `gamma` are
    strategies that replace the defaults (zero_fraction 0 or 0.4 when `zeros`, else 0;
    gamma from `gammas()`).
    """
    st = _strategies()

    @st.composite
    def build(draw):
        prompt_concentration = None if uniform_prompts else draw(st.one_of(st.none(), st.floats(0.5, 5.0)))
        fractions = zero_fractions
        if fractions is None:
            fractions = st.sampled_from([0.0, 0.0, 0.4]) if zeros else st.just(0.0)
        return World.random(
            draw(st.integers(1, max_prompts)),
            draw(st.integers(2, max_responses)),
            gamma=draw(gamma if gamma is not None else gammas()),
            logit_scale=draw(st.floats(0.1, 2.0)),
            reference_mix=draw(st.floats(0.0, 1.0)),
            behavior_mix=draw(st.one_of(st.none(), st.floats(0.0, 1.0))) if behavior_mix else None,
            behavior_tilt=draw(st.floats(-0.5, 0.5)),
            zero_fraction=draw(fractions),
            prompt_concentration=prompt_concentration,
            seed=draw(st.integers(0, 2**31 - 1)),
        )

    return build()


def logit_arrays(shape: tuple[int, ...], bound: float = 5.0) -> Any:
    """Float64 logits with entries in [-bound, bound], as a numpy array."""
    import numpy as np
    from hypothesis.extra.numpy import arrays

    st = _strategies()
    return arrays(np.float64, shape, elements=st.floats(-bound, bound, allow_nan=False, allow_infinity=False))


def log_policies(*, n_prompts: int | None = None, n_responses: int | None = None, bound: float = 5.0) -> Any:
    """Normalized float64 log-probabilities [X, A] with full support (X in 1..3, A in 2..6 unless given)."""
    st = _strategies()

    @st.composite
    def build(draw):
        X = n_prompts if n_prompts is not None else draw(st.integers(1, 3))
        A = n_responses if n_responses is not None else draw(st.integers(2, 6))
        logits = torch.from_numpy(draw(logit_arrays((X, A), bound)))
        return torch.log_softmax(logits, dim=-1)

    return build()


def policy_pairs(*, bound: float = 5.0) -> Any:
    """Two full-support log-policies of the same shape [X, A]."""
    st = _strategies()

    @st.composite
    def build(draw):
        X = draw(st.integers(1, 3))
        A = draw(st.integers(2, 6))
        return (
            draw(log_policies(n_prompts=X, n_responses=A, bound=bound)),
            draw(log_policies(n_prompts=X, n_responses=A, bound=bound)),
        )

    return build()


def random_log_policy(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> Tensor:
    """Seeded random log-probabilities [..., X, A] (float64), for tests that need one fixed policy."""
    generator = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(shape, generator=generator, dtype=torch.float64) * scale, dim=-1)
