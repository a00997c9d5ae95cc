"""Recipe: test a new DPO-style loss against the population minimizer its paper states."""

import torch.nn.functional as F

import synthalign as sa
from synthalign.testing import check_objective
from synthalign.theory.closed_forms import tilted_reference


# The new loss: DPO with its own temperature tau in place of the data's tilt gamma.
# register=False keeps it out of the default registry: the Objective itself is passed around.
@sa.objective("tempered_dpo", register=False, swap_symmetry="likelihood", example_params={"tau": 2.0})
def tempered_dpo(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *, gamma, tau):
    margin = sa.log_ratio(sa.log_ratio(logp_chosen, ref_logp_chosen), sa.log_ratio(logp_rejected, ref_logp_rejected))
    return -F.logsigmoid(tau * margin)


# The paper's statement: matching tau·(h(a) − h(b)) to gamma·ln[pi*(a)/pi*(b)] on every pair,
# the population minimizer is pi ∝ pi0 · pi*^(gamma/tau).  A minimizer is fn(reward, world, beta, params).
def stated_minimizer(reward, world, beta, params):
    return tilted_reference(world, world.gamma / params["tau"] * world.target.logp)


report = check_objective(tempered_dpo, consistent=False, expected_minimizer=stated_minimizer)
print(report)


# A wrong statement is caught: DPO's own minimizer pi ∝ pi0 · pi* is not this loss's unless tau = gamma.
def dpo_minimizer(reward, world, beta, params):
    return tilted_reference(world, world.target.logp)


wrong = check_objective(
    tempered_dpo, consistent=False, expected_minimizer=dpo_minimizer, checks=["population_minimizer"]
)
print(wrong)

# The same object fits data and evaluates exactly, like any built-in objective.
world = sa.World.random(3, 4, gamma=0.5, seed=0)
data = world.sample_preferences(4096, replicates=8, seed=1)
fitted = sa.fit(tempered_dpo, data, tau=2.0)
expected = stated_minimizer(None, world, 0.0, {"tau": 2.0})
print("KL(stated minimizer ‖ fit) per dataset:", sa.forward_kl(expected, fitted.policy))
