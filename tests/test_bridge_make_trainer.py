"""Tests of `synthalign.bridge.trainers`: `make_trainer`'s accelerate step on a tiny float64 Llama, its input checks."""

from __future__ import annotations

import copy
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")

from _bridge_lms import GAMMA, SEQUENCES, VOCAB, padded, tiny_llama  # noqa: E402

from synthalign import bridge  # noqa: E402


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
