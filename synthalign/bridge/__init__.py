"""The bridge from tabular worlds to transformer policies: the same objective code on a causal LM.

* `synthalign.bridge.sequences`: token ids with masks, `sequence_logprobs` (torch only);
* `synthalign.bridge.policy`: `LMPolicy`, a causal LM as a policy of a `SequenceWorld` (log-probs,
  batched sampling, the exact table over every sequence) and `mass_outside`;
* `synthalign.bridge.models`: `tiny_causal_lm` (a tiny Llama from a config, no download) and two
  trainable parametrizations of the exact table, `TransformerPolicy` and `TabularARPolicy`;
* `synthalign.bridge.losses`: `pair_batch_loss` (registered pair objectives with their length
  conventions, through `synthalign.evaluate.pair_inputs`) and the on-policy KL term;
* `synthalign.bridge.trainers`: `make_trainer` and the trainers on `accelerate` (offline pairs,
  on-policy pairs, RKL/RLHF), with globally normalized weights and exact micro-batching;
* `synthalign.bridge.trl`: TRL's preference format in (`PreferenceCollator`, plain or conversational
  examples → the bridge's batch; `from_trl_batch`, TRL's collated batch → the bridge's), and a
  registered objective inside TRL's `DPOTrainer` (`synthalign.bridge.trl.ObjectiveDPOTrainer`).

`transformers`, `accelerate` and `trl` are imported only where used; a missing one raises an
ImportError naming the extra that installs it (``pip install 'synthalign[bridge]'``).
"""

from synthalign.bridge.losses import kl_surrogate, pair_batch_loss, pair_weights
from synthalign.bridge.models import TabularARPolicy, TransformerPolicy, tiny_causal_lm
from synthalign.bridge.policy import LMPolicy, default_prompt_tokens, mass_outside
from synthalign.bridge.sequences import BATCH_KEYS, sequence_logprobs
from synthalign.bridge.trainers import OnPolicyPairTrainer, OnPolicyTrainer, PairTrainer, make_trainer, shard
from synthalign.bridge.trl import PreferenceCollator, from_trl_batch, tokenize_preference

__all__ = [
    "BATCH_KEYS",
    "LMPolicy",
    "OnPolicyPairTrainer",
    "OnPolicyTrainer",
    "PairTrainer",
    "PreferenceCollator",
    "TabularARPolicy",
    "TransformerPolicy",
    "default_prompt_tokens",
    "from_trl_batch",
    "kl_surrogate",
    "make_trainer",
    "mass_outside",
    "pair_batch_loss",
    "pair_weights",
    "sequence_logprobs",
    "shard",
    "tiny_causal_lm",
    "tokenize_preference",
]
