"""Random worlds and hypothesis settings shared by the tests of `synthalign.theory`'s constants, lemmas and bounds."""

from __future__ import annotations

import torch
from hypothesis import settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=60, deadline=None)
WORLD_SETTINGS = settings(max_examples=30, deadline=None)


def random_logp(generator: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    logits = scale * torch.randn(*shape, generator=generator, dtype=torch.float64)
    return torch.log_softmax(logits, dim=-1)


def random_world(seed: int, members: int, prompts: int, responses: int, scale: float = 1.0):
    generator = torch.Generator().manual_seed(seed)
    target = random_logp(generator, prompts, responses, scale=scale)
    behavior = random_logp(generator, prompts, responses, scale=scale)
    reference = random_logp(generator, prompts, responses, scale=scale)
    policy_class = random_logp(generator, members, prompts, responses, scale=scale)
    prompt_dist = torch.softmax(torch.randn(prompts, generator=generator, dtype=torch.float64), dim=0)
    return target, behavior, reference, policy_class, prompt_dist


worlds = st.builds(
    random_world,
    seed=st.integers(0, 2**31 - 1),
    members=st.integers(2, 6),
    prompts=st.integers(1, 4),
    responses=st.integers(2, 5),
    scale=st.floats(0.1, 3.0),
)
