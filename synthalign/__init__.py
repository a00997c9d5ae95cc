"""synthalign: exact and sampled evaluation of LLM alignment objectives on synthetic worlds.

The flat API below re-exports the public names of the subpackages (see docs/architecture.md):
worlds, objectives, registry, evaluate, metrics, estimators, sweeps, stats, theory (and
`synthalign.bounds`), testing and bridge.

The names are resolved on first use (PEP 562): `import synthalign` itself loads neither torch nor
any subpackage, so the command line starts fast; `synthalign.X`, `from synthalign import X` and
`from synthalign import *` work as if everything had been imported eagerly.
"""

import importlib

from synthalign._version import __version__

_EXPORTS = {
    "synthalign.bridge": (
        "LMPolicy",
        "OnPolicyPairTrainer",
        "OnPolicyTrainer",
        "PairTrainer",
        "make_trainer",
        "mass_outside",
        "pair_batch_loss",
        "sequence_logprobs",
    ),
    "synthalign.estimators": (
        "ClassEstimate",
        "ClassFit",
        "FitResult",
        "GradientRow",
        "OnPolicyFit",
        "PairGradientRow",
        "argmin_over_class",
        "comparison_graph_separable",
        "exact_gradient_variance",
        "exact_online_dpo",
        "expected_gradient",
        "expected_pair_gradient",
        "fit",
        "fit_over_class",
        "fit_reward_model",
        "gradient_law",
        "gradient_table",
        "onpolicy_pair_fit",
        "pair_gradient_law",
        "sampled_pair_gradients",
        "score_function_fit",
    ),
    "synthalign.estimators.misspecification": (
        "LowRankClass",
        "approximation_floor",
        "feature_reward_fit",
        "fit_reward_class",
        "overoptimization_curve",
    ),
    "synthalign.estimators.nash": (
        "NASH_METHODS",
        "NashTrace",
        "nash_iterations",
    ),
    "synthalign.evaluate": (
        "empirical_loss",
        "population_loss",
    ),
    "synthalign.metrics": (
        "entropy",
        "entropy_per_prompt",
        "expected_reward",
        "forward_kl",
        "kl_divergence",
        "kl_per_prompt",
        "preference_squared_error",
        "reverse_kl",
        "squared_hellinger",
        "total_variation",
        "win_rate",
    ),
    "synthalign.objectives": (
        "bernoulli_kl_logits",
        "distillation_loss",
        "dpo_loss",
        "exact_kl_estimator_expectation",
        "ipo_loss",
        "kl_estimator",
        "kl_penalty",
        "pmle_loss",
        "rebel_loss",
        "reward_model_loss",
        "rkl_loss",
        "rlhf_loss",
    ),
    "synthalign.objectives.zoo": (
        "TRL_LOSS_TYPES",
        "ZOO_LOSSES",
        "aot_loss",
        "aot_unpaired_loss",
        "apo_down_loss",
        "apo_zero_loss",
        "bco_pair_loss",
        "chipo_loss",
        "conservative_dpo_loss",
        "discopop_loss",
        "exo_pair_loss",
        "f_dpo_loss",
        "f_ipo_loss",
        "hinge_loss",
        "kto_pair_loss",
        "length_normalized_dpo_loss",
        "nca_pair_loss",
        "online_dpo_loss",
        "robust_dpo_loss",
        "sft_loss",
        "simpo_loss",
        "sppo_loss",
        "xpo_loss",
    ),
    "synthalign.registry.nash": (
        "METHOD_REGISTRY",
        "Method",
        "get_method",
        "list_methods",
    ),
    "synthalign.registry": (
        "DEFAULT_REGISTRY",
        "Objective",
        "Registry",
        "get_objective",
        "list_objectives",
        "objective",
    ),
    "synthalign.stats": (
        "SlopeFit",
        "Verdict",
        "check_bound",
        "check_rate",
        "fit_slope",
    ),
    "synthalign.sweeps": (
        "SweepResult",
        "class_estimator",
        "rate_sweep",
        "tabular_estimator",
    ),
    "synthalign.theory.closed_forms": (
        "reward_policy",
        "rkl_policy",
        "rlhf_policy",
    ),
    "synthalign.theory.games": (
        "best_response",
        "duality_gap",
        "regularized_nash",
        "von_neumann_winner",
    ),
    "synthalign.worlds": (
        "ModuleAutoregressive",
        "PairData",
        "Policy",
        "PolicyClass",
        "PreferenceData",
        "PreferenceList",
        "PrefixModel",
        "SequenceSpace",
        "SequenceWorld",
        "TabularAutoregressive",
        "TabularSoftmax",
        "World",
        "counts_to_list",
        "grid_class",
        "list_class",
        "pair_log_probs",
        "perturbation_class",
        "population_pairs",
        "population_preferences",
        "preference_matrix",
        "preference_probability",
        "reward_class",
        "sample_cell_counts",
        "sample_counts",
        "sample_pairs",
        "sample_pairs_torch",
        "sample_preference_list",
        "sample_preference_list_torch",
        "sample_preferences",
        "sample_preferences_torch",
        "union_class",
    ),
    "synthalign.worlds.laws": (
        "BradleyTerry",
        "GeneralLaw",
        "LinkLaw",
        "PreferenceLaw",
        "thurstone",
    ),
}
"""Each public name of the flat API by the module that defines (or re-exports) it."""

_ALIASES = {"log_ratio": ("synthalign._checks", "safe_log_ratio")}
"""Public names bound to an object of another name."""

_SOURCE = {name: (module, name) for module, names in _EXPORTS.items() for name in names}
_SOURCE.update(_ALIASES)


def __getattr__(name):
    """Imports the module behind a public name (or a subpackage) on first access, and caches the value."""
    if name in _SOURCE:
        module, attribute = _SOURCE[name]
        value = getattr(importlib.import_module(module), attribute)
    else:
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


__all__ = ["__version__", *sorted(_SOURCE)]
