"""Recipe: compare two objectives (PMLE and RKL) on a world where mu covers pi* poorly."""

import synthalign as sa
from synthalign.bounds import coverage_coefficient
from synthalign.estimators.finite_class import fit_over_class
from synthalign.worlds.classes import perturbation_class, union_class

n, replicates = 1024, 100
rows = []
for tilt in (0.0, 2.0):  # mu ∝ pi0 · pi*^(-tilt): tilt 2 avoids the responses pi* prefers
    world = sa.World.random(3, 6, gamma=0.5, behavior_tilt=tilt, seed=0)  # the same pi* and pi0 for each tilt
    # The theorems' setting: a reward class ℛ (as its induced policies) inside a larger policy class Π (A5),
    # whose further members differ from pi* where pi* puts its mass (weights pi*), i.e. where mu rarely looks.
    rewards = perturbation_class(world, 16, (0.05, 1.0), seed=1)
    extra = perturbation_class(world, 512, (0.05, 1.0), seed=2, weights=world.target.probs)
    policy_class = union_class(rewards, extra)
    coverage = coverage_coefficient(
        policy_class.logp, world.target.logp, world.behavior.logp, world.prompt_dist, world.gamma
    )
    data = world.sample_preferences(n, replicates, seed=3)  # pairs from mu, labelled by the tilted BT law
    for method in ("pmle", "rkl"):
        estimate = fit_over_class(method, data, policy_class, reward_class=None if method == "pmle" else rewards)
        error = sa.forward_kl(world.target, estimate.policy)  # E_x KL(pi* ‖ pi_hat), one per dataset
        rows.append((tilt, coverage, method, float(error.mean()), float(error.std() / replicates**0.5)))

print(f"{'tilt':>4} {'C_Pi':>8} {'method':>6} {'mean KL(pi* ‖ pi_hat)':>22} {'s.e.':>8}")
for tilt, coverage, method, mean, se in rows:
    print(f"{tilt:4.1f} {coverage:8.1f} {method:>6} {mean:22.4g} {se:8.2g}")
