"""Estimators batched over replicate datasets.

* `synthalign.estimators.fit`: `fit` (closed forms where declared, Newton otherwise) and the reward model;
* `synthalign.estimators.newton`: the batched damped Newton solver over tabular softmax logits;
* `synthalign.estimators.finite_class`: argmins over an explicit finite class (the theorems' setting).

* `synthalign.estimators.score_function`: `GradientConfig` and the per-sample score-function terms;
* `synthalign.estimators.onpolicy`: stochastic-gradient estimators from samples of the policy itself;
* `synthalign.estimators.gradient_check`: their exact expected gradients on enumerable spaces;
* `synthalign.estimators.online_dpo`: exact online DPO under a pair sampler;
* `synthalign.estimators.nash`: Nash-MD, online IPO, SPPO and extragradient on a general law, exact and sampled.
"""

from synthalign._exports import flat_names
from synthalign.estimators.finite_class import ClassEstimate, ClassFit, argmin_over_class, fit_over_class
from synthalign.estimators.fit import FitResult, comparison_graph_separable, fit, fit_reward_model
from synthalign.estimators.gradient_check import (
    GradientRow,
    PairGradientRow,
    exact_gradient_variance,
    expected_gradient,
    expected_pair_gradient,
    gradient_law,
    gradient_table,
    pair_gradient_law,
)
from synthalign.estimators.nash import NASH_METHODS, NASH_TARGETS, NashTrace, nash_iterations
from synthalign.estimators.onpolicy import (
    OnPolicyFit,
    exact_online_dpo,
    onpolicy_pair_fit,
    sampled_pair_gradients,
    score_function_fit,
)
from synthalign.estimators.score_function import GradientConfig

__all__ = [*flat_names(__name__), "NASH_TARGETS"]
