"""Shared test configuration and small hypothesis strategies for worlds and policies.

The strategies draw the *parameters* of a world (sizes, tilt, how far pi0 and
mu sit from pi*, zero-probability responses, a non-uniform D) and a seed, so a
failing example shrinks to a small world with simple settings.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import synthalign as sa

# The tensors of a test world are tiny: a second intra-op thread only adds overhead.
torch.set_num_threads(1)

settings.register_profile(
    "synthalign",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # Continuous integration replays the same examples on every run (CI=true); locally
    # every run explores new ones.
    derandomize=bool(os.environ.get("CI")),
)
settings.load_profile("synthalign")

# Preference tilts spanning the paper's range (0 < gamma < 1 in practice) and beyond.
gammas = st.floats(min_value=0.05, max_value=4.0, allow_nan=False, allow_infinity=False)
betas = st.floats(min_value=0.01, max_value=5.0, allow_nan=False, allow_infinity=False)


@st.composite
def worlds(
    draw,
    *,
    max_prompts: int = 4,
    max_responses: int = 6,
    zeros: bool = True,
    zero_fractions=None,
    gamma=None,
    behavior_mix: bool = True,
    uniform_prompts: bool = False,
) -> sa.World:
    """A `World.random` with drawn sizes, tilt, distances and (optionally) zero-probability responses of pi*.

    `zero_fractions` and `gamma` are strategies that replace the defaults (zero_fraction
    0 or 0.4 when `zeros`, else 0; gamma from `gammas`).
    """
    prompt_concentration = None if uniform_prompts else draw(st.one_of(st.none(), st.floats(0.5, 5.0)))
    if zero_fractions is None:
        zero_fractions = st.sampled_from([0.0, 0.0, 0.4]) if zeros else st.just(0.0)
    return sa.World.random(
        draw(st.integers(1, max_prompts)),
        draw(st.integers(2, max_responses)),
        gamma=draw(gamma if gamma is not None else gammas),
        logit_scale=draw(st.floats(0.1, 2.0)),
        reference_mix=draw(st.floats(0.0, 1.0)),
        behavior_mix=draw(st.one_of(st.none(), st.floats(0.0, 1.0))) if behavior_mix else None,
        behavior_tilt=draw(st.floats(-0.5, 0.5)),
        zero_fraction=draw(zero_fractions),
        prompt_concentration=prompt_concentration,
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def logit_arrays(shape: tuple[int, ...], bound: float = 5.0):
    """Float64 logits with entries in [-bound, bound], as a numpy array."""
    return arrays(np.float64, shape, elements=st.floats(-bound, bound, allow_nan=False, allow_infinity=False))


@st.composite
def log_policies(
    draw, *, n_prompts: int | None = None, n_responses: int | None = None, bound: float = 5.0
) -> torch.Tensor:
    """Normalized float64 log-probabilities [X, A] with full support."""
    X = n_prompts if n_prompts is not None else draw(st.integers(1, 3))
    A = n_responses if n_responses is not None else draw(st.integers(2, 6))
    logits = torch.from_numpy(draw(logit_arrays((X, A), bound)))
    return torch.log_softmax(logits, dim=-1)


@st.composite
def policy_pairs(draw, *, bound: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two full-support log-policies of the same shape [X, A]."""
    X = draw(st.integers(1, 3))
    A = draw(st.integers(2, 6))
    return (
        draw(log_policies(n_prompts=X, n_responses=A, bound=bound)),
        draw(log_policies(n_prompts=X, n_responses=A, bound=bound)),
    )


def random_log_policy(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> torch.Tensor:
    """Seeded random log-probabilities [..., X, A] (float64) for tests that need a fixed policy."""
    generator = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(shape, generator=generator, dtype=torch.float64) * scale, dim=-1)
