"""The bridge's trainers and loss conventions: global weights, exact micro-batches, lengths, gamma, on-policy steps."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")

import synthalign as sa  # noqa: E402
from synthalign.estimators.onpolicy import score_function_surrogate  # noqa: E402
from synthalign.worlds.torch_sampling import make_generator  # noqa: E402

V, L, X = 4, 3, 3
LR = 0.5


def tiny_llama(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=V, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


@pytest.fixture
def cpu_accelerator():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield accelerate.Accelerator(cpu=True)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def world():
    return sa.SequenceWorld.random(V, L, X, seed=2)


def _pairs(world, n=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    prompts = torch.randint(X, (n,), generator=generator)
    chosen, rejected = (torch.randint(1, world.n_sequences, (n,), generator=generator) for _ in range(2))
    return prompts, chosen, rejected


def _sgd_step(loss, model):
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return [p.detach() - LR * g for p, g in zip(model.parameters(), grads, strict=True)]


def test_micro_batches_with_unequal_weights_give_the_global_weighted_mean_step(world, cpu_accelerator):
    prompts, chosen, rejected = _pairs(world)
    weight = torch.tensor([1.0, 1.0, 1.0, 8.0, 8.0, 0.5], dtype=torch.float64)
    model, reference = tiny_llama(0), tiny_llama(1)
    batch = sa.LMPolicy(model, world.space, X).pair_batch(prompts, chosen, rejected)
    loss = sa.pair_batch_loss("dpo", model, batch, reference=reference, gamma=0.5, weight=weight)
    expected = _sgd_step(loss, model)
    # What per-micro-batch normalization (the mean of micro-batch means) would do instead:
    halves = [slice(0, 3), slice(3, 6)]
    sub = {k: v[halves[0]] for k, v in batch.items()}, {k: v[halves[1]] for k, v in batch.items()}
    naive = sum(
        sa.pair_batch_loss("dpo", model, part, reference=reference, gamma=0.5, weight=weight[h]) / 2
        for part, h in zip(sub, halves, strict=True)
    )
    naive_params = _sgd_step(naive, model)
    drift = max((a - b).abs().max().item() for a, b in zip(naive_params, expected, strict=True))
    assert drift > 1e-3  # the weighting matters at this size

    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    trainer = sa.make_trainer(
        "dpo", model, reference, optimizer, gamma=0.5, accelerator=cpu_accelerator, micro_batch_size=3
    )
    returned = trainer(batch, weight=weight)
    assert returned == pytest.approx(loss.item(), abs=1e-6)
    for param, want in zip(trainer.model.parameters(), expected, strict=True):
        torch.testing.assert_close(param.detach(), want, atol=1e-6, rtol=0)


def test_length_normalized_dpo_divides_by_the_token_counts(world):
    prompts, chosen, rejected = _pairs(world, seed=3)
    model, reference = tiny_llama(0), tiny_llama(1)
    batch = sa.LMPolicy(model, world.space, X).pair_batch(prompts, chosen, rejected)
    lengths = [batch[f"{side}_completion_mask"].sum(-1).double() for side in ("chosen", "rejected")]
    assert not torch.equal(lengths[0], lengths[1])
    with torch.no_grad():
        logp = sa.bridge.sequences.pair_logprobs(model, batch)
        ref = sa.bridge.sequences.pair_logprobs(reference, batch)
        margin = (logp[0] - ref[0]) / lengths[0] - (logp[1] - ref[1]) / lengths[1]
        expected = -torch.nn.functional.logsigmoid(0.5 * margin).mean()
        normalized = sa.pair_batch_loss("length_normalized_dpo", model, batch, reference=reference, gamma=0.5)
        plain = sa.pair_batch_loss("dpo", model, batch, reference=reference, gamma=0.5)
    assert abs(normalized.item() - expected.item()) <= 1e-6
    assert abs(normalized.item() - plain.item()) > 1e-3
    with pytest.raises(ValueError, match="length convention"):
        sa.pair_batch_loss("length_normalized_dpo", model, batch, reference=reference, gamma=0.5, average=True)


def test_sft_averages_over_chosen_tokens(world):
    prompts, chosen, rejected = _pairs(world, seed=4)
    model = tiny_llama(0)
    batch = sa.LMPolicy(model, world.space, X).pair_batch(prompts, chosen, rejected)
    with torch.no_grad():
        logp = sa.bridge.sequences.pair_logprobs(model, batch)[0]
        tokens = batch["chosen_completion_mask"].sum()
        loss = sa.pair_batch_loss("sft", model, batch)
    assert abs(loss.item() - (-logp.sum() / tokens).item()) <= 1e-6


def test_gamma_only_where_the_objective_uses_it(world):
    prompts, chosen, rejected = _pairs(world)
    model, reference = tiny_llama(0), tiny_llama(1)
    batch = sa.LMPolicy(model, world.space, X).pair_batch(prompts, chosen, rejected)
    with pytest.raises(ValueError, match="does not take gamma"):
        sa.pair_batch_loss("ipo", model, batch, reference=reference, gamma=0.5)
    with pytest.raises(ValueError, match="needs gamma"):
        sa.pair_batch_loss("dpo", model, batch, reference=reference)


def test_rkl_step_is_the_score_function_surrogate_step(world, cpu_accelerator):
    model, reference = tiny_llama(0), tiny_llama(1)
    prompts = torch.tensor([0, 1, 2, 0])
    reward = world.as_tabular().true_reward
    policy, ref_policy = sa.LMPolicy(model, world.space, X), sa.LMPolicy(reference, world.space, X)
    # The same draws the trainer makes: its generator is seeded with `seed`.
    ids = policy.sample(prompts, 3, make_generator(5))
    logp = policy.log_prob(prompts, ids)
    with torch.no_grad():
        ref_logp = ref_policy.log_prob(prompts, ids)
    options = dict(estimator="rloo", entropy_coef=world.gamma, beta=0.2, kl_kind="k3", kl_placement="loss")
    surrogate = score_function_surrogate(logp, ref_logp, reward[prompts.unsqueeze(-1), ids], **options).mean()
    expected = _sgd_step(surrogate, model)

    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    trainer = sa.make_trainer(
        "rkl", model, reference, optimizer, world=world, beta=0.2, samples=3, kl_estimator="k3",
        kl_placement="loss", accelerator=cpu_accelerator, seed=5,
    )  # fmt: skip
    returned = trainer(prompts)
    assert returned == pytest.approx(surrogate.item(), abs=1e-6)
    for param, want in zip(trainer.model.parameters(), expected, strict=True):
        torch.testing.assert_close(param.detach(), want, atol=1e-6, rtol=0)


def test_distillation_on_pairs_from_mu_is_the_pair_loss_on_those_pairs(world, cpu_accelerator):
    model = tiny_llama(0)
    prompts = torch.tensor([0, 1, 2, 2])
    behavior = sa.TabularAutoregressive(world.behavior, world.space)
    draws = behavior.sample(prompts, 2, make_generator(7))
    reward = world.as_tabular().true_reward
    batch = sa.LMPolicy(model, world.space, X).pair_batch(prompts, draws[:, 0], draws[:, 1])
    loss = sa.pair_batch_loss(
        "distillation", model, batch, gamma=world.gamma,
        reward_chosen=reward[prompts, draws[:, 0]], reward_rejected=reward[prompts, draws[:, 1]],
    )  # fmt: skip
    expected = _sgd_step(loss, model)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    trainer = sa.make_trainer(
        "distillation", model, None, optimizer, world=world, pairs_from="behavior", accelerator=cpu_accelerator, seed=7
    )
    assert trainer(prompts) == pytest.approx(loss.item(), abs=1e-6)
    for param, want in zip(trainer.model.parameters(), expected, strict=True):
        torch.testing.assert_close(param.detach(), want, atol=1e-6, rtol=0)


def test_exact_kl_term_adds_beta_times_the_kl_gradient(world, cpu_accelerator):
    prompts, chosen, rejected = _pairs(world, n=3)
    prompts = torch.arange(X)
    model, reference = tiny_llama(0), tiny_llama(1)
    policy, ref_policy = sa.LMPolicy(model, world.space, X), sa.LMPolicy(reference, world.space, X)
    batch = policy.pair_batch(prompts, chosen, rejected)
    pair = sa.pair_batch_loss("pmle", model, batch, gamma=0.5)
    with torch.no_grad():
        ref_table = ref_policy.table()
    kl = sa.kl_per_prompt(policy.table(), ref_table).mean()
    expected = _sgd_step(pair + 0.3 * kl, model)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    trainer = sa.make_trainer(
        "pmle", model, reference, optimizer, gamma=0.5, beta=0.3, kl_placement="exact", world=world,
        accelerator=cpu_accelerator,
    )  # fmt: skip
    trainer(batch, prompts=prompts)
    for param, want in zip(trainer.model.parameters(), expected, strict=True):
        torch.testing.assert_close(param.detach(), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("objective", "kwargs", "match"),
    [
        ("rkl", {}, "world must be a SequenceWorld"),
        ("pmle", {"beta": 0.1}, "world must be a SequenceWorld"),
        ("rlhf", {"world": "w", "gamma": 0.5}, "does not take gamma"),
        ("rkl", {"world": "w", "kl_estimator": "k4"}, "kl_estimator"),
        ("rkl", {"world": "w", "samples": 1}, "RLOO"),
        ("distillation", {"world": "w", "pairs_from": "nowhere"}, "pairs_from"),
        ("dpo", {"micro_batch_size": 0, "gamma": 0.5}, "micro_batch_size"),
        ("forward_kl", {"world": "w"}, "on-policy trainer runs"),
    ],
)
def test_make_trainer_rejects_bad_inputs(objective, kwargs, match, world, cpu_accelerator):
    model = tiny_llama(0)
    kwargs = {key: world if value == "w" else value for key, value in kwargs.items()}
    with pytest.raises(ValueError, match=match):
        sa.make_trainer(objective, model, tiny_llama(1), torch.optim.SGD(model.parameters(), lr=0.1),
                        accelerator=cpu_accelerator, **kwargs)  # fmt: skip
