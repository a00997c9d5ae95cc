"""Finite worlds with a known target, their preference law, datasets as counts, sampling, finite classes.

* `synthalign.worlds.policy`: `Policy`, a (batch of) tabular conditional distributions;
* `synthalign.worlds.tabular`: `World`, the contextual-bandit world (D, pi*, pi0, mu, gamma);
* `synthalign.worlds.preferences`: the gamma-tilted Bradley–Terry law over the cells (x, a, b);
* `synthalign.worlds.laws`: other preference laws (links, Thurstone, general and cyclic P) a world can carry;
* `synthalign.worlds.datasets`: `PreferenceData` / `PairData` (counts over the cells), `PreferenceList`;
* `synthalign.worlds.sampling`: datasets drawn from a world's law;
* `synthalign.worlds.classes`: finite policy classes containing pi* (A1);
* `synthalign.worlds.sequence`: `SequenceWorld`, token sequences up to length L, enumerated;
* `synthalign.worlds.autoregressive`: tabular softmax, per-prefix and module policies with sampling;
* `synthalign.worlds.torch_sampling`: device-native count and pair sampling in torch.
"""

from synthalign._exports import flat_names
from synthalign.worlds.autoregressive import (
    ModuleAutoregressive,
    PrefixModel,
    TabularAutoregressive,
    TabularSoftmax,
)
from synthalign.worlds.classes import PolicyClass, grid_class, list_class, perturbation_class, reward_class, union_class
from synthalign.worlds.datasets import CellData, PairData, PreferenceData, PreferenceList, counts_to_list
from synthalign.worlds.laws import BradleyTerry, GeneralLaw, LinkLaw, PreferenceLaw, thurstone
from synthalign.worlds.policy import Policy, as_logp, check_distribution
from synthalign.worlds.preferences import (
    pair_log_probs,
    population_pairs,
    population_preferences,
    preference_matrix,
    preference_probability,
)
from synthalign.worlds.sampling import sample_cell_counts, sample_pairs, sample_preference_list, sample_preferences
from synthalign.worlds.sequence import SequenceSpace, SequenceWorld
from synthalign.worlds.tabular import World
from synthalign.worlds.torch_sampling import (
    sample_counts,
    sample_pairs_torch,
    sample_preference_list_torch,
    sample_preferences_torch,
)

__all__ = [*flat_names(__name__), "CellData", "as_logp", "check_distribution"]
