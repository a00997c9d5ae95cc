"""A fixed reward table shared by the tests of the fit and of the finite-class argmin."""

import torch


def _fixed_reward(world, seed=3):
    return torch.randn(
        world.n_prompts, world.n_responses, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
