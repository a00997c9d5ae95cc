"""Estimators batched over replicate datasets.

* `synthalign.estimators.fit`: `fit` (closed forms where declared, Newton otherwise) and the reward model;
* `synthalign.estimators.newton`: the batched damped Newton solver over tabular softmax logits;
* `synthalign.estimators.finite_class`: argmins over an explicit finite class (the theorems' setting).

Stochastic-gradient and on-policy estimators (samples of the policy itself) go beside these.
"""

from synthalign.estimators.finite_class import ClassEstimate, ClassFit, argmin_over_class, fit_over_class
from synthalign.estimators.fit import FitResult, comparison_graph_separable, fit, fit_reward_model

__all__ = [
    "ClassEstimate",
    "ClassFit",
    "FitResult",
    "argmin_over_class",
    "comparison_graph_separable",
    "fit",
    "fit_over_class",
    "fit_reward_model",
]
