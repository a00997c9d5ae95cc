"""Recipe: check a paper's rate claim (here Thm 4: PMLE's forward KL falls like 1/n, under an explicit bound)."""

import torch

import synthalign as sa
from synthalign.bounds import world_constants
from synthalign.worlds.classes import perturbation_class

# 1. The claim's rate, on the full tabular softmax class: the slope of the mean error against n.
world = sa.World.random(3, 4, gamma=0.5, seed=0)
ns = [2**k for k in range(9, 14)]  # from n = 512: every dataset's comparison graph is connected
sweep = sa.rate_sweep(world, "pmle", ns=ns, replicates=100, seed=0)
rate = sa.check_rate(sweep.ns, sweep.values, expected=-1.0)  # bootstrap CI of the log-log slope
print("O(1/n):", rate.passed, "-", rate.reason)

# A wrong claim is rejected by the same check: the error does not fall like 1/sqrt(n).
sqrt_rate = sa.check_rate(sweep.ns, sweep.values, expected=-0.5)
print("O(1/sqrt n):", sqrt_rate.passed, "-", sqrt_rate.reason)

# 2. The claim's bound, in the theorem's own setting: the argmin over a finite class containing pi*.
policy_class = perturbation_class(world, 64, (0.05, 1.0), seed=1)
constants = world_constants(
    world.target.logp,
    world.behavior.logp,
    world.reference.logp,
    world.prompt_dist,
    world.gamma,
    policy_class.logp,
    compute_c0=False,
)
delta = 0.1
finite = sa.rate_sweep(world, "pmle", ns=ns, replicates=100, seed=0, candidates=policy_class)
bound = constants.bound("thm4", torch.tensor(ns, dtype=torch.float64), delta)  # Lemma 8's corrected constant
held = sa.check_bound(finite.ns, finite.values, bound, delta=delta, label="Thm 4 (corrected)")
print("Thm 4 bound:", held.passed, "-", held.reason)
