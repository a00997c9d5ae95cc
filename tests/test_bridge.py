"""Tests of `synthalign.bridge`: registered pair objectives on tiny randomly initialised causal LMs.

The key check: with a one-token prompt and one-token completions a causal LM *is* a tabular policy
over its vocabulary, pi(a|x) = softmax(logits at the prompt)[a], so `pair_batch_loss` on explicit
pairs must equal `sa.empirical_loss` on the counts of the same pairs, in value and in gradient
with respect to the model's parameters (float64, 1e-10).  The models are built in code (no
download): a one-layer Llama with a 12-token vocabulary, float64, eager attention (so that the
Hessian-vector product of the training test can differentiate twice).

`LlamaRMSNorm` computes in float32 whatever the dtype of the model (it casts its input to float32),
so a float64 Llama is float32-accurate in its norms.  The forward values of the two paths still agree
exactly (same inputs, same roundings), but their gradients do not: the bridge back-propagates one row
per pair through the norm and the tabular path one row per prompt (the pairs' gradients summed
first), and float32 rounds the two differently (about 1e-7 relative).  The test models therefore use
the same norm computed in the input dtype (`Float64RMSNorm`).  The eager attention's float32 softmax
is exact at the first position (weights [1, 0, ...], gradient 0), the only one the equivalence scores.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")

import synthalign as sa  # noqa: E402
from synthalign import bridge  # noqa: E402

VOCAB = 12
GAMMA = 0.7
# The prompt tokens: tabular prompt x = i is the one-token prompt PROMPT_TOKENS[i].
PROMPT_TOKENS = (3, 5, 9)
N_PAIRS = 24
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


class Float64RMSNorm(transformers.models.llama.modeling_llama.LlamaRMSNorm):
    """LlamaRMSNorm's formula, w · h / sqrt(mean(h²) + eps), computed in the input dtype instead of float32."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def tiny_llama(seed: int) -> torch.nn.Module:
    """A one-layer float64 Llama with random weights and `Float64RMSNorm` norms.

    initializer_range 0.2 (not the default 0.02) makes the next-token distributions far from uniform
    (probabilities about 0.01 to 0.27), so that the losses and their gradients are not near-trivial.
    """
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        initializer_range=0.2,
        attn_implementation="eager",
    )
    model = transformers.LlamaForCausalLM(config).to(torch.float64).eval()
    for module in model.modules():
        if isinstance(module, transformers.models.llama.modeling_llama.LlamaRMSNorm):
            module.__class__ = Float64RMSNorm
    return model


def tiny_gpt2(seed: int) -> torch.nn.Module:
    """A one-layer float64 GPT-2: absolute position embeddings, so left padding is right only if the
    position ids skip the padding (Llama's rotary positions are relative and would not notice)."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=16, initializer_range=0.2
    )
    return transformers.GPT2LMHeadModel(config).to(torch.float64).eval()


@pytest.fixture(scope="module")
def policy_model():
    return tiny_llama(seed=0)


@pytest.fixture(scope="module")
def reference_model():
    return tiny_llama(seed=1)


def next_token_logp(model) -> torch.Tensor:
    """The tabular policy of the LM: ln pi(a | x) = log_softmax(logits after the prompt token), [X, A]."""
    prompts = torch.tensor(PROMPT_TOKENS).unsqueeze(-1)
    return torch.log_softmax(model(input_ids=prompts).logits[:, -1], dim=-1)


def one_token_batch(prompt: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> dict:
    """Sequences (prompt token, completion token), no padding, the completion token scored."""
    tokens = torch.tensor(PROMPT_TOKENS)[prompt]
    ones = torch.ones(len(prompt), 2, dtype=torch.long)
    completion = torch.tensor([[0, 1]]).expand(len(prompt), 2)
    return {
        "chosen_input_ids": torch.stack([tokens, chosen], dim=-1),
        "chosen_attention_mask": ones,
        "chosen_completion_mask": completion,
        "rejected_input_ids": torch.stack([tokens, rejected], dim=-1),
        "rejected_attention_mask": ones,
        "rejected_completion_mask": completion,
    }


def seeded_pairs(seed: int, n: int = N_PAIRS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n random (prompt index, chosen token, rejected token) triples."""
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randint(len(PROMPT_TOKENS), (n,), generator=generator)
    chosen = torch.randint(VOCAB, (n,), generator=generator)
    rejected = torch.randint(VOCAB, (n,), generator=generator)
    return prompt, chosen, rejected


# ----------------------------------------------------------------------------------------------------------------------
# a. A causal LM with one-token prompts and completions is a tabular policy
# ----------------------------------------------------------------------------------------------------------------------


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


def test_sequence_logprobs_of_one_token_completion_is_the_tabular_policy(policy_model):
    prompt, chosen, _ = seeded_pairs(seed=2)
    batch = one_token_batch(prompt, chosen, chosen)
    with torch.no_grad():
        got = bridge.sequence_logprobs(
            policy_model,
            batch["chosen_input_ids"],
            batch["chosen_attention_mask"],
            batch["chosen_completion_mask"],
        )
        expected = next_token_logp(policy_model)[prompt, chosen]
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0.0)


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


# ----------------------------------------------------------------------------------------------------------------------
# b. Sequence log-probabilities of multi-token completions with padding
# ----------------------------------------------------------------------------------------------------------------------

# Rows of (tokens, number of prompt tokens); padded on the right or on the left below.
SEQUENCES = [
    ([3, 7, 1, 4, 10], 2),
    ([5, 2, 8], 1),
    ([9, 9, 6, 0, 11, 2], 3),
]
PAD = 0


def padded(sequences, side: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    length = max(len(tokens) for tokens, _ in sequences)
    ids, attention, completion = [], [], []
    for tokens, n_prompt in sequences:
        pad = length - len(tokens)
        row_completion = [0] * n_prompt + [1] * (len(tokens) - n_prompt)
        if side == "right":
            ids.append(tokens + [PAD] * pad)
            attention.append([1] * len(tokens) + [0] * pad)
            completion.append(row_completion + [0] * pad)
        else:
            ids.append([PAD] * pad + tokens)
            attention.append([0] * pad + [1] * len(tokens))
            completion.append([0] * pad + row_completion)
    return torch.tensor(ids), torch.tensor(attention), torch.tensor(completion)


def prefix_loop_logprobs(model, sequences) -> tuple[list[float], list[int]]:
    """ln pi(a|x) by one forward pass per completion token on the unpadded prefix: Σ_t ln pi(a_t | prefix)."""
    totals, lengths = [], []
    with torch.no_grad():
        for tokens, n_prompt in sequences:
            total = 0.0
            for t in range(n_prompt, len(tokens)):
                logits = model(input_ids=torch.tensor([tokens[:t]])).logits[0, -1]
                total += torch.log_softmax(logits, dim=-1)[tokens[t]].item()
            totals.append(total)
            lengths.append(len(tokens) - n_prompt)
    return totals, lengths


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_sequence_logprobs_equals_prefix_loop(family, side, policy_model):
    model = policy_model if family == "llama" else tiny_gpt2(seed=0)
    expected, lengths = prefix_loop_logprobs(model, SEQUENCES)
    ids, attention, completion = padded(SEQUENCES, side)
    with torch.no_grad():
        total = bridge.sequence_logprobs(model, ids, attention, completion)
        mean = bridge.sequence_logprobs(model, ids, attention, completion, average=True)
    expected = torch.tensor(expected, dtype=torch.float64)
    assert total.dtype == torch.float64
    torch.testing.assert_close(total, expected, atol=1e-12, rtol=0.0)
    torch.testing.assert_close(mean, expected / torch.tensor(lengths, dtype=torch.float64), atol=1e-12, rtol=0.0)


def test_sequence_logprobs_upcasts_half_precision_logits():
    # A bfloat16 model's logits are upcast before the log-softmax: the result is float32 and matches
    # the float32 log-softmax of the same bfloat16 logits.
    model = tiny_llama(seed=0).to(torch.bfloat16)
    ids, attention, completion = padded(SEQUENCES, "right")
    with torch.no_grad():
        got = bridge.sequence_logprobs(model, ids, attention, completion)
        logits = model(input_ids=ids, attention_mask=attention).logits.float()
    assert got.dtype == torch.float32
    # Same float32 operations up to the order of the sums over at most 3 tokens of |ln p| < 10:
    # rounding below 3 · 10 · 2^-24 ≈ 2e-6, inside atol = 1e-5.
    token_logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    expected = (token_logp * completion[:, 1:]).sum(dim=-1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0.0)


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


# ----------------------------------------------------------------------------------------------------------------------
# c. One accelerate training step
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def cpu_accelerator():
    # accelerate keeps its state in process-wide singletons; reset them (as accelerate's own test
    # cases do) so that an Accelerator built elsewhere in the session cannot conflict with cpu=True.
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield accelerate.Accelerator(cpu=True)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_one_accelerate_step_decreases_the_loss(cpu_accelerator):
    model, reference = tiny_llama(seed=4), tiny_llama(seed=5)
    ids, attention, completion = padded(SEQUENCES, "right")
    batch = {
        "chosen_input_ids": ids,
        "chosen_attention_mask": attention,
        "chosen_completion_mask": completion,
        # The rejected responses: the chosen ones with the completion tokens shifted by one in the vocabulary.
        "rejected_input_ids": torch.where(completion.bool(), (ids + 1) % VOCAB, ids),
        "rejected_attention_mask": attention,
        "rejected_completion_mask": completion,
    }
    learning_rate = 1e-2
    parameters = list(model.parameters())
    before = bridge.pair_batch_loss("dpo", model, batch, reference=reference, gamma=GAMMA)
    grads = torch.autograd.grad(before, parameters, create_graph=True)
    grad_sq = sum((g * g).sum() for g in grads)
    # Curvature along the step: g^T H g by a Hessian-vector product.
    hvp = torch.autograd.grad(sum((g * g.detach()).sum() for g in grads), parameters)
    curvature = sum((h * g).sum() for h, g in zip(hvp, grads, strict=True)).item()
    grads = [g.detach() for g in grads]
    # SGD moves theta by -lr g, so L(after) = L(before) - lr |g|^2 + lr^2 g^T H g / 2 + O(lr^3).  The step
    # decreases the loss to second order when lr g^T H g < 2 |g|^2; require a factor 2 margin for the
    # third-order remainder, so that a failure below means a wrong step, not a too-large learning rate.
    assert learning_rate * curvature < grad_sq.item()
    start = [p.detach().clone() for p in parameters]

    optimizer = torch.optim.SGD(parameters, lr=learning_rate)
    trainer = bridge.make_trainer("dpo", model, reference, optimizer, gamma=GAMMA, accelerator=cpu_accelerator)
    returned = trainer(batch)

    assert returned == pytest.approx(before.item(), abs=1e-12)  # the loss at the parameters before the step
    for param, initial, grad in zip(trainer.model.parameters(), start, grads, strict=True):
        torch.testing.assert_close(param.detach(), initial - learning_rate * grad, atol=1e-12, rtol=0.0)
        assert param.grad is None or not param.grad.any()  # zero_grad ran
    with torch.no_grad():
        after = bridge.pair_batch_loss("dpo", trainer.model, batch, reference=trainer.reference, gamma=GAMMA)
    assert after.item() < before.item()


# ----------------------------------------------------------------------------------------------------------------------
# d. Bad inputs
# ----------------------------------------------------------------------------------------------------------------------


def _good_sequences():
    return padded(SEQUENCES, "right")


def _completion_with(row: int, position, value: int) -> torch.Tensor:
    """The good completion mask with one entry (or one row) changed; row 1 is [5, 2, 8] + 3 pads."""
    completion = _good_sequences()[2].clone()
    completion[row, position] = value
    return completion


def _with(index: int, value):
    sequences = list(_good_sequences())
    sequences[index] = value
    return sequences


BAD_SEQUENCES = {
    "ids_one_dim": (_with(0, torch.tensor([3, 7, 1])), "input_ids"),
    "ids_float": (_with(0, _good_sequences()[0].double()), "input_ids"),
    "ids_too_short": (
        [torch.tensor([[3]]), torch.tensor([[1]]), torch.tensor([[0]])],
        "input_ids",
    ),
    "attention_shape": (_with(1, torch.ones(3, 2, dtype=torch.long)), "attention_mask"),
    "attention_values": (_with(1, _good_sequences()[1] * 2), "attention_mask"),
    "completion_values": (_with(2, _good_sequences()[2] - 1), "completion_mask"),
    "completion_on_padding": (_with(2, _completion_with(row=1, position=4, value=1)), "completion_mask"),
    "completion_at_first_position": (_with(2, _completion_with(row=0, position=0, value=1)), "completion_mask"),
    "completion_empty_row": (_with(2, _completion_with(row=1, position=slice(None), value=0)), "completion_mask"),
}


@pytest.mark.parametrize("case", list(BAD_SEQUENCES))
def test_sequence_logprobs_rejects_bad_inputs(case, policy_model):
    sequences, name = BAD_SEQUENCES[case]
    with pytest.raises(ValueError, match=name):
        bridge.sequence_logprobs(policy_model, *sequences)


def test_completion_must_follow_a_prompt_token(policy_model):
    # Left padding [PAD, a, b]: the first completion token at position 1 would be predicted from padding.
    ids = torch.tensor([[PAD, 4, 5]])
    with pytest.raises(ValueError, match="completion_mask"):
        bridge.sequence_logprobs(policy_model, ids, torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 1]]))


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


@pytest.mark.parametrize(
    ("objective", "reference", "kwargs", "name"),
    [
        ("rkl", None, {}, "world must be a SequenceWorld"),
        ("dpo", None, {}, "reference"),
        ("pmle", None, {"gamma": -1.0}, "gamma"),
        ("pmle", None, {"max_grad_norm": 0.0}, "max_grad_norm"),
        ("ipo", "model", {"temperature": 1.0}, "temperature"),
    ],
)
def test_make_trainer_rejects_bad_inputs_before_any_step(objective, reference, kwargs, name, policy_model):
    optimizer = torch.optim.SGD(policy_model.parameters(), lr=0.0)
    kwargs = {"gamma": GAMMA, **kwargs}
    with pytest.raises(ValueError, match=name):
        reference_model = copy.deepcopy(policy_model) if reference else None
        bridge.make_trainer(objective, policy_model, reference_model, optimizer, **kwargs)
