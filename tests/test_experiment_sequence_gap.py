"""The sequence-gap experiment: a reduced --quick run, its record, and the facts it rests on."""

import json
import math

import pytest
import torch

pytest.importorskip("transformers")

import synthalign as sa  # noqa: E402
from synthalign.bridge.models import TabularARPolicy, TransformerPolicy, tiny_causal_lm  # noqa: E402
from synthalign.cli import main  # noqa: E402
from synthalign.experiments import sequence_gap as sg  # noqa: E402


def test_reduced_quick_run_writes_a_consistent_record(tmp_path, capsys):
    code = main(["run", "sequence-gap", "--quick", "--out", str(tmp_path), "--set", "steps=3", "--set",
                 "log2_ns=5,7", "--set", "tilts=0,2"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "KL tf" in out and "columns:" in out
    record = json.loads((tmp_path / "sequence-gap.json").read_text())["results"]
    assert (tmp_path / "sequence_gap.png").stat().st_size > 0
    assert [row["n"] for row in record["curves"]] == [32, 128]
    assert [row["tilt"] for row in record["gap"]] == [0.0, 2.0]
    assert len(record["cells"]) == 3  # two n at tilt 0, the largest n at tilt 2
    for cell in record["cells"]:
        # RKL (beta = 0) and distillation from pi_t share the exact minimizer pi_R̂.
        assert cell["rkl"]["tabular_exact"] == cell["distillation_pit"]["tabular_exact"]
        for method in sg.METHODS:
            for name in ("transformer", "tabular_ar", "tabular_exact"):
                entry = cell[method][name]
                assert entry["forward_kl"] >= 0
                assert 0 <= entry["mass_off_support"] <= 1
        assert 0 < cell["support_fraction"] <= 1
    # tilting mu away from pi* worsens its coverage
    assert record["gap"][1]["coverage"] > record["gap"][0]["coverage"]


def test_pi0_is_the_pretrained_transformer_exactly():
    args = sg.Args(size="quick", out="runs", progress=False)
    V, L, X = args.sizes["world"]
    world0 = sa.SequenceWorld.random(V, L, X, seed=0)
    model = tiny_causal_lm(V, 16, 1, seed=0)
    with torch.no_grad():
        prefix = TransformerPolicy(model, world0.space, X).prefix_logp()
        world = sg.tilted_world(world0, prefix, 0.0)
        table = TransformerPolicy(model, world0.space, X).table()
    tab = world.as_tabular()
    torch.testing.assert_close(tab.reference.logp, table, atol=1e-12, rtol=0)
    torch.testing.assert_close(tab.behavior.logp, table, atol=1e-12, rtol=0)  # tilt 0: mu = pi0
    # the tabular AR control starts from the same policy
    control = TabularARPolicy(prefix, world0.space)
    torch.testing.assert_close(control.table().detach(), table, atol=1e-12, rtol=0)
    # tilt t: mu ∝ pi0 · pi*^-t per prefix
    tilted = sg.tilted_world(world0, prefix, 1.5)
    expected = torch.log_softmax(prefix - 1.5 * world0.target, dim=-1)
    torch.testing.assert_close(tilted.behavior, expected)


def test_training_lowers_the_loss_of_each_method():
    args = sg.Args(size="quick", out="runs", progress=False, steps=15)
    world0 = sa.SequenceWorld.random(3, 2, 2, seed=1)
    model = tiny_causal_lm(3, 16, 1, seed=0)
    with torch.no_grad():
        prefix = TransformerPolicy(model, world0.space, 2).prefix_logp()
    tab = sg.tilted_world(world0, prefix, 0.0).as_tabular()
    data = tab.sample_preferences(256, 1, seed=0)
    reward = sa.fit_reward_model(data, ridge=1e-2).reward[0]
    for method in sg.METHODS:
        policy = TabularARPolicy(prefix, world0.space)
        before = sg.method_loss(method, policy.table(), data, reward, tab).item()
        after = sg.method_loss(method, sg.train(policy, method, data, reward, tab, args, 0.1), data, reward, tab)
        # distillation from pi_t moves its own pair law; its loss at pi_t still falls toward 0
        assert after.item() < before, method


def test_a_subset_of_methods_runs_alone(tmp_path, capsys):
    code = main(["run", "sequence-gap", "--quick", "--out", str(tmp_path), "--set", "steps=2", "--set",
                 "log2_ns=5", "--set", "tilts=0", "--set", "methods=rkl,pmle", "--set", "plot=false"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "sequence-gap.json").read_text())["results"]
    assert record["methods"] == ["pmle", "rkl"]  # in METHODS' order
    (cell,) = record["cells"]
    assert {m for m in sg.METHODS if m in cell} == {"pmle", "rkl"}
    assert set(record["gap"][0]["transformer_gap"]) == {"pmle"}
    lines = [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0] in sg.METHODS]
    assert lines == ["pmle", "rkl"]


def test_backtracking_keeps_the_exact_loss_from_rising():
    world0 = sa.SequenceWorld.random(3, 2, 2, seed=1)
    with torch.no_grad():
        prefix = TransformerPolicy(tiny_causal_lm(3, 16, 1, seed=0), world0.space, 2).prefix_logp()
    tab = sg.tilted_world(world0, prefix, 0.0).as_tabular()
    data = tab.sample_preferences(256, 1, seed=0)
    reward = sa.fit_reward_model(data, ridge=1e-2).reward[0]
    losses = {}
    for backtrack in (True, False):
        args = sg.Args(size="quick", out="runs", progress=False, steps=30, backtrack=backtrack)
        trace = []
        policy = TransformerPolicy(tiny_causal_lm(3, 16, 1, seed=0), world0.space, 2)
        sg.train(policy, "rkl", data, reward, tab, args, 0.3, trace=trace)  # a step size too large for RKL
        losses[backtrack] = [entry["loss"] for entry in trace]
        assert any(entry["undone"] for entry in trace) == backtrack
    assert all(later <= earlier for earlier, later in zip(losses[True], losses[True][1:], strict=False))
    assert any(later > earlier for earlier, later in zip(losses[False], losses[False][1:], strict=False))


def test_step_size_schedule():
    # 10 steps, warm-up 0.2: steps 0, 1 rise to 1/2 and 1; then 8 steps of decay, progress (step - 2)/8
    factors = [sg.lr_factor(step, 10, 0.2, "cosine") for step in range(10)]
    assert factors[:3] == [0.5, 1.0, 1.0]
    assert factors[6] == pytest.approx(0.5)  # progress 1/2: (1 + cos(pi/2))/2
    assert factors[9] == pytest.approx(0.5 * (1 - math.cos(math.pi / 8)))  # progress 7/8
    assert all(a >= b for a, b in zip(factors[1:], factors[2:], strict=False))
    assert sg.lr_factor(6, 10, 0.2, "linear") == pytest.approx(0.5)
    assert sg.lr_factor(9, 10, 0.0, "linear") == pytest.approx(0.1)  # no warm-up: 1 - 9/10
    assert [sg.lr_factor(step, 10, 0.2, "constant") for step in range(10)] == [0.5] + [1.0] * 9


@pytest.mark.parametrize(
    "field, value",
    [("tilts", (1.0, 2.0)), ("log2_ns", (8, 6)), ("steps", 0), ("lr", -1.0), ("ridge", float("nan")),
     ("methods", ("rkl", "sft")), ("methods", ()), ("schedule", "exponential"), ("warmup", 1.0)],
)  # fmt: skip
def test_bad_options_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        sg.Args(size="quick", out="runs", **{field: value})
