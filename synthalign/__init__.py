"""synthalign: exact and sampled evaluation of LLM alignment objectives on synthetic worlds."""

# zoo_objectives registers the zoo losses as objectives, so that the registry is the same whatever
# is imported first.
from synthalign import zoo_objectives
from synthalign._checks import safe_log_ratio as log_ratio
from synthalign.bridge import PairTrainer, make_trainer, pair_batch_loss, sequence_logprobs
from synthalign.classes import (
    ClassEstimate,
    PolicyClass,
    fit_over_class,
    grid_class,
    list_class,
    perturbation_class,
    reward_class,
    union_class,
)
from synthalign.data import (
    PairData,
    PreferenceData,
    PreferenceList,
    counts_to_list,
    pair_log_probs,
    population_pairs,
    population_preferences,
    preference_matrix,
    preference_probability,
    sample_cell_counts,
    sample_pairs,
    sample_preference_list,
    sample_preferences,
)
from synthalign.estimators import (
    ClassFit,
    FitResult,
    argmin_over_class,
    comparison_graph_separable,
    fit,
    fit_reward_model,
)
from synthalign.evaluate import empirical_loss, population_loss
from synthalign.metrics import (
    entropy,
    entropy_per_prompt,
    expected_reward,
    forward_kl,
    kl_divergence,
    kl_per_prompt,
    preference_squared_error,
    reverse_kl,
    squared_hellinger,
    total_variation,
    win_rate,
)
from synthalign.objectives import (
    bernoulli_kl_logits,
    distillation_loss,
    dpo_loss,
    ipo_loss,
    kl_penalty,
    pmle_loss,
    rebel_loss,
    reward_model_loss,
    rkl_loss,
    rlhf_loss,
)
from synthalign.policies import Policy, reward_policy, rkl_policy, rlhf_policy
from synthalign.registry import Objective, get_objective, list_objectives, objective
from synthalign.sweeps import (
    SlopeFit,
    SweepResult,
    Verdict,
    check_bound,
    check_rate,
    class_estimator,
    fit_slope,
    rate_sweep,
    tabular_estimator,
)
from synthalign.worlds import World
from synthalign.zoo import (
    TRL_LOSS_TYPES,
    ZOO_LOSSES,
    aot_loss,
    aot_unpaired_loss,
    apo_down_loss,
    apo_zero_loss,
    bco_pair_loss,
    chipo_loss,
    conservative_dpo_loss,
    discopop_loss,
    exact_kl_estimator_expectation,
    exo_pair_loss,
    f_dpo_loss,
    f_ipo_loss,
    hinge_loss,
    kl_estimator,
    kto_pair_loss,
    length_normalized_dpo_loss,
    nca_pair_loss,
    online_dpo_loss,
    robust_dpo_loss,
    sft_loss,
    simpo_loss,
    sppo_loss,
    xpo_loss,
)

__version__ = "0.1.0"

__all__ = [name for name in dir() if not name.startswith("_")]
