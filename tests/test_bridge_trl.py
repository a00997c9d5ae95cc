"""TRL interop: the preference collator against TRL's own tokenization, and a registered objective inside DPOTrainer.

Everything is built in code (a word-level tokenizer, a chat template, a tiny Llama from a config): no downloads.
"""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
tokenizers = pytest.importorskip("tokenizers")

import synthalign as sa  # noqa: E402
from synthalign.bridge.trl import PreferenceCollator, from_trl_batch, tokenize_preference  # noqa: E402

WORDS = 28
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} {{ message['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}assistant {% endif %}"
)
PLAIN = {
    "prompt": ["w1 w2 ", "w3 ", "w9 w10 w11 "],
    "chosen": ["w4", "w5 w6", "w12 w13 w14"],
    "rejected": ["w7", "w8", "w15 w16"],
}
CONVERSATIONAL = {
    "prompt": [[{"role": "user", "content": "w1 w2"}], [{"role": "user", "content": "w3"}]],
    "chosen": [[{"role": "assistant", "content": "w4"}], [{"role": "assistant", "content": "w5 w6"}]],
    "rejected": [[{"role": "assistant", "content": "w7 w8"}], [{"role": "assistant", "content": "w9"}]],
}


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {"<pad>": 0, "<eos>": 1, "user": 2, "assistant": 3, **{f"w{i}": i + 4 for i in range(WORDS)}}
    word_level = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="<pad>"))
    word_level.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="<pad>", eos_token="<eos>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llama(seed):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=WORDS + 4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        pad_token_id=0, eos_token_id=1, bos_token_id=1,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def dpo_config(tmp_path, **options):
    # bf16/fp16 off: the Trainer's default autocast would round every step to bf16's 8 mantissa bits.
    return trl.DPOConfig(
        output_dir=str(tmp_path / "trl"), report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no",
        per_device_train_batch_size=len(PLAIN["prompt"]), seed=0, data_seed=0, bf16=False, fp16=False, **options,
    )  # fmt: skip


def stock_trainer(tokenizer, tmp_path, data=PLAIN, **options):
    return trl.DPOTrainer(
        model=tiny_llama(0), ref_model=tiny_llama(1), args=dpo_config(tmp_path, **options),
        train_dataset=datasets.Dataset.from_dict(data), processing_class=tokenizer,
    )  # fmt: skip


def objective_trainer(tokenizer, tmp_path, objective, data=PLAIN, objective_params=None, **options):
    from synthalign.bridge.trl import ObjectiveDPOTrainer

    return ObjectiveDPOTrainer(
        model=tiny_llama(0), ref_model=tiny_llama(1), args=dpo_config(tmp_path, **options),
        train_dataset=datasets.Dataset.from_dict(data), processing_class=tokenizer,
        objective=objective, objective_params=objective_params,
    )  # fmt: skip


def _examples(data):
    return [{key: data[key][i] for key in data} for i in range(len(data["prompt"]))]


@pytest.mark.parametrize("data", [PLAIN, CONVERSATIONAL], ids=["plain", "conversational"])
def test_collator_gives_trls_tokens(tokenizer, tmp_path, data):
    # TRL tokenizes the dataset itself (train_dataset holds prompt_ids, chosen_ids, rejected_ids) and its
    # DataCollatorForPreference pads [chosen; rejected] to one width: the bridge's batch must be that batch.
    trainer = stock_trainer(tokenizer, tmp_path, data=data)
    tokenized = list(trainer.train_dataset)
    for example, theirs in zip(_examples(data), tokenized, strict=True):
        ours = tokenize_preference(example, tokenizer)
        assert ours == {key: theirs[key] for key in ("prompt_ids", "chosen_ids", "rejected_ids")}
    trl_batch = trl.trainer.dpo_trainer.DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(
        [{key: t[key] for key in ("prompt_ids", "chosen_ids", "rejected_ids")} for t in tokenized]
    )
    ours = PreferenceCollator(tokenizer)(_examples(data))
    expected = from_trl_batch(trl_batch)
    assert set(ours) == set(expected)
    for key, value in expected.items():
        assert torch.equal(ours[key], value), key


def test_collator_plain_strings_by_hand(tokenizer):
    # "w1 w2 " + "w4" + EOS → ids [5, 6, 8, 1]; the completion is w4 <eos>.
    batch = PreferenceCollator(tokenizer)([{"prompt": "w1 w2 ", "chosen": "w4", "rejected": "w7 w8<eos>"}])
    assert batch["chosen_input_ids"].tolist() == [[5, 6, 8, 1, 0]]
    assert batch["chosen_completion_mask"].tolist() == [[0, 0, 1, 1, 0]]
    assert batch["chosen_attention_mask"].tolist() == [[1, 1, 1, 1, 0]]
    assert batch["rejected_input_ids"].tolist() == [[5, 6, 11, 12, 1]]
    assert batch["rejected_completion_mask"].tolist() == [[0, 0, 1, 1, 1]]


def test_collator_batch_feeds_pair_batch_loss(tokenizer):
    batch = PreferenceCollator(tokenizer)(_examples(CONVERSATIONAL))
    model, reference = tiny_llama(0), tiny_llama(1)
    loss = sa.pair_batch_loss("dpo", model, batch, reference=reference, gamma=0.5)
    # one pair by hand: -log σ(0.5 · [(ln π(a+) − ln π0(a+)) − (ln π(a−) − ln π0(a−))]), averaged
    logp = sa.bridge.sequences.pair_logprobs(model, batch)
    ref = sa.bridge.sequences.pair_logprobs(reference, batch)
    margin = 0.5 * ((logp[0] - ref[0]) - (logp[1] - ref[1]))
    torch.testing.assert_close(loss, -torch.nn.functional.logsigmoid(margin).mean())


def test_collator_refuses_bad_examples(tokenizer):
    collate = PreferenceCollator(tokenizer)
    with pytest.raises(ValueError, match=r"examples\[1\] lacks \['rejected'\]"):
        collate([{"prompt": "w1 ", "chosen": "w2", "rejected": "w3"}, {"prompt": "w1 ", "chosen": "w2"}])
    with pytest.raises(ValueError, match="mixes plain strings and message lists"):
        collate([{"prompt": "w1 ", "chosen": [{"role": "assistant", "content": "w2"}], "rejected": "w3"}])
    with pytest.raises(TypeError, match="string or a list of messages"):
        collate([{"prompt": 3, "chosen": "w2", "rejected": "w3"}])
    with pytest.raises(ValueError, match="non-empty list"):
        collate([])
    with pytest.raises(ValueError, match="completion token"):
        PreferenceCollator(tokenizer, max_length=2)([{"prompt": "w1 w2 ", "chosen": "w3", "rejected": "w4"}])
    with pytest.raises(ValueError, match="max_length"):
        PreferenceCollator(tokenizer, max_length=0)


def test_from_trl_batch_refuses_odd_rows():
    with pytest.raises(ValueError, match="even"):
        fields = ("input_ids", "attention_mask", "completion_mask")
        from_trl_batch({key: torch.ones(3, 4, dtype=torch.long) for key in fields})
    with pytest.raises(ValueError, match="lacks"):
        from_trl_batch({"input_ids": torch.ones(2, 4, dtype=torch.long)})


def _train(trainer, steps):
    trainer.args.max_steps = steps
    trainer.train()
    return [p.detach().clone() for p in trainer.model.parameters()]


@pytest.mark.parametrize("data", [PLAIN, CONVERSATIONAL], ids=["plain", "conversational"])
def test_registered_dpo_inside_dpo_trainer_trains_like_trls_sigmoid(tokenizer, tmp_path, data):
    # synthalign's "dpo" (eq. 6) is TRL's loss_type "sigmoid": three SGD steps from the same seeds on the same
    # batches end at the same parameters (plain SGD: the parameters move by the summed gradients themselves).
    options = dict(beta=0.3, learning_rate=2.0, optim="sgd", lr_scheduler_type="constant", weight_decay=0.0)
    theirs = _train(stock_trainer(tokenizer, tmp_path / "a", data=data, **options), 3)
    ours = _train(objective_trainer(tokenizer, tmp_path / "b", "dpo", data=data, **options), 3)
    initial = [p.detach() for p in tiny_llama(0).parameters()]
    moved = max((a - b).abs().max().item() for a, b in zip(ours, initial, strict=True))
    assert moved > 1e-3
    for mine, trls in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, trls, atol=1e-6, rtol=1e-5)


def test_reference_free_objective_inside_dpo_trainer_takes_its_own_gradient_step(tokenizer, tmp_path):
    # PMLE (eq. 4) has no reference: one plain SGD step of the trainer must equal θ − lr · ∇ pair_batch_loss.
    lr = 0.5
    trainer = objective_trainer(
        tokenizer, tmp_path, "pmle", beta=0.7, learning_rate=lr, optim="sgd", lr_scheduler_type="constant",
        weight_decay=0.0, max_grad_norm=0.0,
    )  # fmt: skip
    batch = next(iter(trainer.get_train_dataloader()))
    model = tiny_llama(0)
    loss = sa.pair_batch_loss("pmle", model, from_trl_batch(batch), gamma=0.7)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = [p.detach() - lr * g for p, g in zip(model.parameters(), grads, strict=True)]
    for mine, want in zip(_train(trainer, 1), expected, strict=True):
        torch.testing.assert_close(mine, want, atol=1e-6, rtol=1e-5)


def test_objective_dpo_trainer_refuses_what_it_cannot_honour(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="prompt objective"):
        objective_trainer(tokenizer, tmp_path, "rkl")
    with pytest.raises(ValueError, match="needs a reward"):
        objective_trainer(tokenizer, tmp_path, "distillation")
    with pytest.raises(ValueError, match="ld_alpha"):
        objective_trainer(tokenizer, tmp_path, "dpo", ld_alpha=0.5)
    with pytest.raises(ValueError, match="no hyper-parameter"):
        objective_trainer(tokenizer, tmp_path, "dpo", objective_params={"nonsense": 1.0})
