"""Tests of `synthalign.bridge.losses`: `pair_batch_loss` on a tiny causal LM equals the tabular empirical loss."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from _bridge_lms import (  # noqa: E402
    GAMMA,
    PROMPT_TOKENS,
    SEQUENCES,
    VOCAB,
    next_token_logp,
    one_token_batch,
    padded,
    seeded_pairs,
    tiny_llama,
)

import synthalign as sa  # noqa: E402
from synthalign import bridge  # noqa: E402

TOLERANCE = 1e-10

# Pair objectives checked against the tabular path, with hyper-parameters away from their defaults
# where they have one; distillation and REBEL exercise the reward inputs (target_margin,
# reward_chosen/rejected), robust_dpo and f_dpo the zoo.
EQUIVALENCE_CASES = [
    ("pmle", {}),
    ("dpo", {}),
    ("ipo", {"tau": 0.3}),
    ("robust_dpo", {"label_smoothing": 0.1}),
    ("f_dpo", {"divergence": "js_divergence"}),
    ("distillation", {}),
    ("rebel", {"eta": 0.5}),
]


@pytest.fixture(scope="module")
def reference_model():
    return tiny_llama(seed=1)


@pytest.mark.parametrize(("name", "params"), EQUIVALENCE_CASES, ids=[case[0] for case in EQUIVALENCE_CASES])
def test_pair_batch_loss_equals_tabular_empirical_loss(name, params, policy_model, reference_model):
    objective = sa.get_objective(name)
    # The first 8 pairs appear twice, so some counts are 2 and the tabular path's weighted mean is exercised.
    prompt, chosen, rejected = (torch.cat([t, t[:8]]) for t in seeded_pairs(seed=0))
    assert len(set(zip(prompt.tolist(), chosen.tolist(), rejected.tolist(), strict=True))) < len(prompt)
    with torch.no_grad():
        ref_logp = next_token_logp(reference_model)
        target_logits = next_token_logp(policy_model)
    world = sa.World.from_tensors(target=target_logits, reference=ref_logp, gamma=GAMMA, kind="logits")
    data = sa.PreferenceList(prompt.unsqueeze(0), chosen.unsqueeze(0), rejected.unsqueeze(0), world).to_counts()
    reward = torch.randn(len(PROMPT_TOKENS), VOCAB, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    parameters = list(policy_model.parameters())

    table = sa.Policy(next_token_logp(policy_model))
    tabular = sa.empirical_loss(name, data, table, reward=reward if objective.needs_reward else None, **params)
    assert tabular.shape == (1,)
    tabular_grad = torch.autograd.grad(tabular[0], parameters)

    rewards = {}
    if objective.needs_reward:
        rewards = {"reward_chosen": reward[prompt, chosen], "reward_rejected": reward[prompt, rejected]}
    loss = bridge.pair_batch_loss(
        name,
        policy_model,
        one_token_batch(prompt, chosen, rejected),
        reference=reference_model if objective.needs_reference else None,
        gamma=GAMMA if "gamma" in objective.inputs else None,  # IPO (tau) and REBEL (eta) take none
        **rewards,
        **params,
    )
    bridge_grad = torch.autograd.grad(loss, parameters)

    assert loss.dim() == 0 and loss.dtype == torch.float64
    assert abs(loss.item() - tabular.item()) <= TOLERANCE
    # The comparison below is not between two zero vectors.
    assert max(g.abs().max().item() for g in tabular_grad) > 1e-3
    for got, expected in zip(bridge_grad, tabular_grad, strict=True):
        torch.testing.assert_close(got, expected, atol=TOLERANCE, rtol=0.0)


def test_weights_equal_repeated_pairs(policy_model, reference_model):
    # Explicit pairs with repeats versus each distinct pair once, weighted by its multiplicity.
    prompt, chosen, rejected = seeded_pairs(seed=3, n=6)
    repeats = torch.tensor([1, 3, 1, 2, 4, 1])
    explicit = one_token_batch(*(t.repeat_interleave(repeats) for t in (prompt, chosen, rejected)))
    distinct = one_token_batch(prompt, chosen, rejected)
    kwargs = {"reference": reference_model, "gamma": GAMMA}
    with torch.no_grad():
        repeated = bridge.pair_batch_loss("dpo", policy_model, explicit, **kwargs)
        weighted = bridge.pair_batch_loss("dpo", policy_model, distinct, weight=repeats.double(), **kwargs)
        unweighted = bridge.pair_batch_loss("dpo", policy_model, distinct, **kwargs)
    assert abs(repeated.item() - weighted.item()) <= TOLERANCE
    # The weights matter: the plain mean over distinct pairs is another number.
    assert abs(unweighted.item() - weighted.item()) > 1e-6


def test_pair_batch_loss_with_unequal_lengths_matches_separate_sequences(policy_model):
    # Chosen and rejected sequences of different lengths are stacked into one forward pass; the loss
    # must equal PMLE (eq. 4) on separately computed sequence log-probabilities.
    chosen = padded(SEQUENCES, "right")
    rejected = padded([([3, 1, 2], 1), ([5, 4], 1), ([9, 8, 7, 6], 2)], "left")
    batch = {
        f"{side}_{field}": tensor
        for side, tensors in (("chosen", chosen), ("rejected", rejected))
        for field, tensor in zip(("input_ids", "attention_mask", "completion_mask"), tensors, strict=True)
    }
    with torch.no_grad():
        loss = bridge.pair_batch_loss("pmle", policy_model, batch, gamma=GAMMA)
        logp_chosen = bridge.sequence_logprobs(policy_model, *chosen)
        logp_rejected = bridge.sequence_logprobs(policy_model, *rejected)
    expected = -torch.nn.functional.logsigmoid(GAMMA * (logp_chosen - logp_rejected)).mean()
    assert abs(loss.item() - expected.item()) <= 1e-12


def _good_batch():
    prompt, chosen, rejected = seeded_pairs(seed=6, n=4)
    return one_token_batch(prompt, chosen, rejected)


def _batch_without(key):
    batch = _good_batch()
    del batch[key]
    return batch


def _batch_with(key, value):
    batch = _good_batch()
    batch[key] = value
    return batch


BAD_PAIR_CALLS = {
    "prompt_objective": ({"objective": "rkl"}, "prompt objective"),
    "missing_key": ({"batch": _batch_without("rejected_completion_mask")}, "rejected_completion_mask"),
    "not_a_mapping": ({"batch": [1, 2]}, "batch"),
    "unequal_pairs": (
        {"batch": _batch_with("rejected_input_ids", _good_batch()["rejected_input_ids"][:3])},
        "rejected_input_ids",
    ),
    "bad_completion_mask": (
        {"batch": _batch_with("chosen_completion_mask", torch.ones(4, 2, dtype=torch.long))},
        "chosen_completion_mask",
    ),
    "gamma_zero": ({"gamma": 0.0}, "gamma"),
    "no_reference": ({"objective": "dpo", "reference": None}, "reference"),
    "no_reward": ({"objective": "distillation"}, "reward_chosen"),
    "reward_shape": (
        {"objective": "distillation", "reward_chosen": torch.zeros(3), "reward_rejected": torch.zeros(4)},
        "reward_chosen",
    ),
    "weight_shape": ({"weight": torch.ones(5)}, "weight"),
    "weight_negative": ({"weight": torch.tensor([1.0, -1.0, 1.0, 1.0])}, "weight"),
    "unknown_hyper_parameter": ({"params": {"temperature": 1.0}}, "temperature"),
}


@pytest.mark.parametrize("case", list(BAD_PAIR_CALLS))
def test_pair_batch_loss_rejects_bad_inputs(case, policy_model):
    changes, name = BAD_PAIR_CALLS[case]
    call = {"objective": "pmle", "batch": _good_batch(), "reference": None, "gamma": GAMMA, **changes}
    params = call.pop("params", {})
    with pytest.raises(ValueError, match=name):
        bridge.pair_batch_loss(call.pop("objective"), policy_model, call.pop("batch"), **call, **params)
