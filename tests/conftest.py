"""Shared test configuration: one intra-op thread, the hypothesis profile, and the bridge tests' policy model.

The hypothesis strategies the tests use are the library's own (`synthalign.testing.strategies`).
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

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


@pytest.fixture(scope="module")
def policy_model():
    """The bridge tests' tiny float64 Llama (`tests/_bridge_lms.py`, needs transformers), one per test module."""
    from _bridge_lms import tiny_llama

    return tiny_llama(seed=0)
