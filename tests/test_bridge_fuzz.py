"""Hypothesis fuzz of the bridge's entry points: valid input gives finite, consistent values; bad input a ValueError."""

import pytest
import torch

transformers = pytest.importorskip("transformers")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import synthalign as sa  # noqa: E402
from synthalign.bridge import default_prompt_tokens, mass_outside, shard  # noqa: E402
from synthalign.bridge.sequences import BATCH_KEYS  # noqa: E402

V = 6
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=V, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        max_position_embeddings=32,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).double().eval()


@st.composite
def pair_batches(draw, max_pairs=4, max_width=7):
    """A valid batch: per row a prompt of >= 1 token, a completion of >= 1 token, right padding."""
    n_pairs = draw(st.integers(1, max_pairs))
    batch = {}
    for side in ("chosen", "rejected"):
        width = draw(st.integers(2, max_width))
        ids = torch.tensor(draw(st.lists(st.integers(0, V - 1), min_size=n_pairs * width, max_size=n_pairs * width)))
        ids = ids.reshape(n_pairs, width)
        attention, completion = torch.zeros_like(ids), torch.zeros_like(ids)
        for row in range(n_pairs):
            length = draw(st.integers(2, width))
            prompt = draw(st.integers(1, length - 1))
            attention[row, :length] = 1
            completion[row, prompt:length] = 1
        batch.update({f"{side}_input_ids": ids, f"{side}_attention_mask": attention,
                      f"{side}_completion_mask": completion})  # fmt: skip
    return batch


def _rows(batch, order):
    return {key: batch[key][order] for key in BATCH_KEYS}


@FUZZ
@given(batch=pair_batches(), objective=st.sampled_from(["pmle", "dpo", "f_ipo", "simpo", "sft", "hinge"]))
def test_pair_batch_loss_is_finite_permutation_invariant_and_counts_duplicates(model, batch, objective):
    obj = sa.get_objective(objective)
    kwargs = {"gamma": 0.5} if "gamma" in obj.inputs else {}
    reference = model if obj.needs_reference else None
    loss = sa.pair_batch_loss(objective, model, batch, reference=reference, **kwargs)
    assert torch.isfinite(loss)
    n_pairs = batch["chosen_input_ids"].shape[0]
    reversed_rows = torch.arange(n_pairs - 1, -1, -1)
    permuted = sa.pair_batch_loss(objective, model, _rows(batch, reversed_rows), reference=reference, **kwargs)
    torch.testing.assert_close(permuted, loss, atol=1e-10, rtol=1e-10)
    # pair 0 twice with weight 1 each is pair 0 once with weight 2
    doubled = _rows(batch, torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(n_pairs)]))
    weight = torch.ones(n_pairs, dtype=torch.float64)
    weight[0] = 2.0
    weighted = sa.pair_batch_loss(objective, model, batch, reference=reference, weight=weight, **kwargs)
    torch.testing.assert_close(
        sa.pair_batch_loss(objective, model, doubled, reference=reference, **kwargs), weighted, atol=1e-10, rtol=1e-10
    )


@FUZZ
@given(batch=pair_batches(), data=st.data())
def test_corrupted_batches_raise_value_error(model, batch, data):
    key = data.draw(st.sampled_from(BATCH_KEYS))
    corruption = data.draw(st.sampled_from(["mask value 2", "float ids", "wrong rows", "first position", "1-d"]))
    value = batch[key].clone()
    if corruption == "mask value 2":
        if key.endswith("input_ids"):
            key = key.replace("input_ids", "attention_mask")
            value = batch[key].clone()
        value[0, -1] = 2
    elif corruption == "float ids":
        key = key.split("_")[0] + "_input_ids"
        value = batch[key].double()
    elif corruption == "wrong rows":
        key = "rejected_input_ids"
        value = torch.cat([batch[key], batch[key][:1]])
    elif corruption == "first position":
        key = key.split("_")[0] + "_completion_mask"
        value = batch[key].clone()
        value[:, 0] = 1
    else:
        value = value[0]
    with pytest.raises(ValueError):
        sa.pair_batch_loss("pmle", model, {**batch, key: value}, gamma=0.5)


@FUZZ
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 5)),
    scale=st.floats(0.0, 60.0),
    seed=st.integers(0, 2**16),
    threshold=st.floats(0.0, 1.0),
)
def test_mass_outside_is_the_complements_probability(shape, scale, seed, threshold):
    generator = torch.Generator().manual_seed(seed)
    logp = torch.log_softmax(scale * torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)
    support = torch.rand(*shape, generator=generator, dtype=torch.float64) < threshold
    outside = mass_outside(logp, support)
    inside = (logp.exp() * support).sum(dim=-1).mean()
    assert 0.0 <= float(outside) <= 1.0 + 1e-12
    torch.testing.assert_close(outside + inside, torch.tensor(1.0, dtype=torch.float64), atol=1e-12, rtol=0)
    assert float(mass_outside(logp, torch.ones(shape, dtype=torch.bool))) == 0.0


@FUZZ
@given(bad=st.sampled_from(["not bool", "shape", "nan", "unnormalized", "prompt_dist"]))
def test_mass_outside_refuses_bad_input(bad):
    logp = torch.log_softmax(torch.randn(2, 4, dtype=torch.float64), dim=-1)
    support = torch.ones(2, 4, dtype=torch.bool)
    kwargs = {}
    if bad == "not bool":
        support = support.double()
    elif bad == "shape":
        support = support[:, :3]
    elif bad == "nan":
        logp = logp.clone()
        logp[0, 0] = float("nan")
    elif bad == "unnormalized":
        logp = logp + 1.0
    else:
        kwargs["prompt_dist"] = torch.tensor([0.5, 0.6], dtype=torch.float64)
    with pytest.raises(ValueError):
        mass_outside(logp, support, **kwargs)


@FUZZ
@given(n_prompts=st.integers(1, 200), vocab_size=st.integers(2, 9))
def test_default_prompt_tokens_are_distinct_token_ids(n_prompts, vocab_size):
    tokens = default_prompt_tokens(n_prompts, vocab_size)
    assert tokens.shape[0] == n_prompts and tokens.dtype == torch.int64
    assert int(tokens.min()) >= 0 and int(tokens.max()) < vocab_size
    assert len({tuple(row) for row in tokens.tolist()}) == n_prompts


@FUZZ
@given(n_rows=st.integers(1, 100), num_processes=st.integers(1, 8))
def test_shards_partition_the_global_batch(n_rows, num_processes):
    if n_rows < num_processes:
        with pytest.raises(ValueError):
            shard(n_rows, 0, num_processes)
        return
    pieces = [shard(n_rows, k, num_processes) for k in range(num_processes)]
    assert torch.equal(torch.cat(pieces), torch.arange(n_rows))
    sizes = [piece.numel() for piece in pieces]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: sa.LMPolicy("not a model", sa.SequenceSpace(V, 2), 2), "torch.nn.Module"),
        (lambda m: sa.LMPolicy(m, sa.SequenceSpace(V, 2), 0), "n_prompts"),
        (lambda m: sa.LMPolicy(m, sa.SequenceSpace(V, 2), True), "n_prompts"),
        (lambda m: sa.LMPolicy(m, sa.SequenceSpace(V, 2), 2, dtype=torch.int64), "dtype"),
        (lambda m: default_prompt_tokens(3, 1), "vocab_size"),
        (lambda m: shard(4, 2, 2), "process_index"),
        (lambda m: sa.make_trainer("pmle", m, None, "sgd"), "optimizer"),
        (lambda m: sa.make_trainer("dpo", m, m, torch.optim.SGD(m.parameters(), lr=0.1)), "separate model"),
        (lambda m: sa.make_trainer("pmle", m, None, torch.optim.SGD(m.parameters(), lr=0.1), samples=True), "samples"),
        (lambda m: sa.make_trainer("pmle", m, None, torch.optim.SGD(m.parameters(), lr=0.1), seed=-1), "seed"),
    ],
)
def test_entry_points_refuse_bad_arguments(model, call, match):
    with pytest.raises(ValueError, match=match):
        call(model)


def test_pair_batch_loss_refuses_bad_arguments(model):
    batch = sa.LMPolicy(model, sa.SequenceSpace(V, 2), 2).pair_batch(
        torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 4])
    )
    with pytest.raises(ValueError, match="weight_total"):
        sa.pair_batch_loss("pmle", model, batch, gamma=0.5, weight_total=0.0)
    with pytest.raises(ValueError, match="average"):
        sa.pair_batch_loss("pmle", model, batch, gamma=0.5, average="yes")
    with pytest.raises(ValueError, match="policy"):
        sa.pair_batch_loss("pmle", lambda **kwargs: None, batch, gamma=0.5)
