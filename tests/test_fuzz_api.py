"""A property-based fuzz of the public API: bad inputs are refused clearly, extreme valid inputs stay finite.

Every case below is (entry point, argument, kind of bad value).  Hypothesis draws the
bad value (where a NaN goes, how wrong a shape is, by how much a distribution is off),
calls the entry point with every other argument valid, and requires a `ValueError` (or
`TypeError` for a wrong Python type) whose message names the argument: never another
exception, never a silent return.  `test_every_case_is_refused_clearly` runs each case
once on a fixed draw and counts them (the count is printed with `pytest -s`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import synthalign as sa

DTYPE = torch.float64
X, A = 2, 3


def _world() -> sa.World:
    return sa.World.random(X, A, seed=3)


WORLD = _world()
DATA = WORLD.sample_preferences(64, 2, seed=0)
LOGP = WORLD.reference.logp
PROBS = WORLD.reference.probs
VALID_PAIR = torch.log(torch.tensor([0.2, 0.5], dtype=DTYPE))


# ------------------------------------------------------------------ bad values, drawn


def _flat_index(draw, tensor: torch.Tensor) -> int:
    return draw(st.integers(0, tensor.numel() - 1))


def _with_entry(draw, tensor: torch.Tensor, value: float) -> torch.Tensor:
    out = tensor.clone()
    out.view(-1)[_flat_index(draw, tensor)] = value
    return out


def bad_nan(draw, valid):
    return _with_entry(draw, valid, math.nan)


def bad_posinf(draw, valid):
    return _with_entry(draw, valid, math.inf)


def bad_shape(draw, valid):
    """A shape that neither matches nor broadcasts: one size off in a dimension of size >= 2, or a rank off."""
    sized = [axis for axis, size in enumerate(valid.shape) if size >= 2]
    choice = draw(st.sampled_from(["shorter", "longer", "rank"]))
    if choice == "rank" and valid.dim() >= 2:
        return valid.reshape(-1).clone()
    axis = draw(st.sampled_from(sized))
    if choice == "shorter" and valid.shape[axis] > 2:
        return valid.narrow(axis, 0, valid.shape[axis] - 1).clone()
    return torch.cat([valid, valid.narrow(axis, 0, 1)], dim=axis)


def bad_rank(draw, valid):
    """For an entry point with nothing to compare sizes against: a tensor without the [X, A] dimensions."""
    return valid.reshape(-1)[: draw(st.integers(1, valid.numel()))].clone()


def bad_cell_shape(draw, valid):
    """Counts [R, X, A, A] with X or one A off by one (any R is valid), or a rank off."""
    choice = draw(st.sampled_from([1, 2, 3, "rank"]))
    if choice == "rank":
        return valid[0].clone()
    return torch.cat([valid, valid.narrow(choice, 0, 1)], dim=choice)


def bad_int(draw, valid):
    return valid.round().to(torch.int64)


def bad_complex(draw, valid):
    return valid.to(torch.complex128)


def bad_half(draw, valid):
    return valid.to(draw(st.sampled_from([torch.float16, torch.bfloat16])))


def bad_none(draw, valid):
    return None


def bad_string(draw, valid):
    return draw(st.sampled_from(["abc", "", "0.5"]))


def bad_dict(draw, valid):
    return {"value": 1}


def bad_empty(draw, valid):
    return valid.reshape(-1)[:0].reshape(*valid.shape[:-1], 0) if valid.dim() else torch.empty(0, dtype=DTYPE)


def bad_unnormalized_logp(draw, valid):
    return valid + draw(st.floats(0.05, 5.0))


def bad_probs_as_logp(draw, valid):
    return valid.exp()


def bad_unnormalized_probs(draw, valid):
    return valid * draw(st.sampled_from([0.5, 0.9, 1.1, 3.0]))


def bad_negative(draw, valid):
    out = valid.clone()
    i = _flat_index(draw, valid)
    out.view(-1)[i] = -draw(st.floats(0.01, 1.0))
    return out


def bad_zero_counts(draw, valid):
    out = valid.clone()
    out[draw(st.integers(0, valid.shape[0] - 1))] = 0.0
    return out


def bad_scalar(draw, valid):
    return draw(st.sampled_from([0.0, -1.0, math.nan, math.inf, -math.inf, "a", None, 1j]))


def bad_int_arg(draw, valid):
    return draw(st.sampled_from([0, -1, 2.5, "3", None, True, math.nan]))


def bad_seed(draw, valid):
    return draw(st.sampled_from([-1, 2.5, "3", [1, "a"]]))


def bad_device(draw, valid):
    options = ["not-a-device", "tpu:7x"]
    if not torch.cuda.is_available():
        options.append("cuda:0")
    return draw(st.sampled_from(options))


def bad_world(draw, valid):
    return draw(st.sampled_from([None, "world", 3, WORLD.reference]))


def bad_data(draw, valid):
    return draw(st.sampled_from([None, "data", WORLD, DATA.counts]))


def bad_float_dtype(draw, valid):
    return draw(st.sampled_from([torch.float16, torch.bfloat16, torch.int64, torch.complex128]))


TENSOR_LOGP = (bad_nan, bad_posinf, bad_shape, bad_int, bad_complex, bad_half, bad_none, bad_string)
TENSOR_LOGP += (bad_empty, bad_unnormalized_logp, bad_probs_as_logp, bad_dict)
TENSOR_PROBS = (bad_nan, bad_posinf, bad_shape, bad_complex, bad_none, bad_string, bad_empty)
TENSOR_PROBS += (bad_unnormalized_probs, bad_negative)
TENSOR_COUNTS = (bad_nan, bad_posinf, bad_shape, bad_int, bad_complex, bad_half, bad_none, bad_string)
TENSOR_COUNTS += (bad_empty, bad_negative, bad_zero_counts)
LOSS_INPUT = (bad_nan, bad_shape, bad_complex, bad_none, bad_string, bad_empty, bad_dict)


# ------------------------------------------------------------------ entry points


@dataclasses.dataclass(frozen=True)
class Case:
    entry: str
    argument: str
    call: Callable  # (bad value) -> anything
    valid: object
    bad: Callable  # (draw, valid) -> bad value
    name_in_message: str

    @property
    def id(self) -> str:
        return f"{self.entry}:{self.argument}:{self.bad.__name__}"


def _pair_loss(fn, position, **kwargs):
    def call(value):
        args = [VALID_PAIR] * 4
        args[position] = value
        return fn(*args, **kwargs)

    return call


def _metric(fn, position):
    def call(value):
        args = [LOGP, WORLD.target.logp]
        args[position] = value
        return fn(*args)

    return call


def _cases() -> list[Case]:
    cases: list[Case] = []

    def add(entry, argument, call, valid, bads, name=None):
        for bad in bads:
            cases.append(Case(entry, argument, call, valid, bad, name or argument))

    for field in ("target", "reference", "behavior"):
        add(
            "World.from_tensors",
            field,
            lambda v, f=field: sa.World.from_tensors(**{"target": PROBS, "reference": PROBS, f: v}, gamma=0.5),
            PROBS,
            TENSOR_PROBS if field != "behavior" else tuple(b for b in TENSOR_PROBS if b is not bad_none),
        )
    add(
        "World.from_tensors",
        "prompt_dist",
        lambda v: sa.World.from_tensors(target=PROBS, reference=PROBS, prompt_dist=v, gamma=0.5),
        WORLD.prompt_dist,
        tuple(b for b in TENSOR_PROBS if b is not bad_none),
    )
    add(
        "World.from_tensors",
        "gamma",
        lambda v: sa.World.from_tensors(target=PROBS, reference=PROBS, gamma=v),
        0.5,
        (bad_scalar,),
    )
    add(
        "World.from_tensors",
        "device",
        lambda v: sa.World.from_tensors(target=PROBS, reference=PROBS, gamma=0.5, device=v),
        None,
        (bad_device,),
    )
    add("World.paper_toy", "seed", lambda v: sa.World.paper_toy(v), 0, (bad_seed,))
    add("World.paper_toy", "gamma", lambda v: sa.World.paper_toy(gamma=v), 0.5, (bad_scalar,))
    add("World.paper_toy", "n_prompts", lambda v: sa.World.paper_toy(n_prompts=v), 10, (bad_int_arg,))
    add("World.paper_toy", "device", lambda v: sa.World.paper_toy(device=v), None, (bad_device,))
    add("World.random", "n_responses", lambda v: sa.World.random(3, v), 4, (bad_int_arg,))
    add("World.random", "logit_scale", lambda v: sa.World.random(logit_scale=v), 1.0, (bad_scalar,))
    add("World.random", "dtype", lambda v: sa.World.random(dtype=v), DTYPE, (bad_float_dtype,))
    alone = tuple(bad_rank if b is bad_shape else b for b in TENSOR_LOGP)
    add("Policy", "logp", lambda v: sa.Policy(v), LOGP, alone)
    add(
        "Policy",
        "prompt_dist",
        lambda v: sa.Policy(LOGP, v),
        WORLD.prompt_dist,
        tuple(b for b in TENSOR_PROBS if b is not bad_none),
    )
    add(
        "Policy.from_probs",
        "probs",
        lambda v: sa.Policy.from_probs(v),
        PROBS,
        tuple(bad_rank if b is bad_shape else b for b in TENSOR_PROBS),
    )
    add(
        "Policy.from_logits",
        "logits",
        lambda v: sa.Policy.from_logits(v),
        LOGP,
        (bad_nan, bad_posinf, bad_complex, bad_half, bad_none, bad_string, bad_empty, bad_dict),
    )
    add(
        "PreferenceData",
        "counts",
        lambda v: sa.PreferenceData(v, 64, WORLD),
        DATA.counts,
        tuple(bad_cell_shape if b is bad_shape else b for b in TENSOR_COUNTS),
    )
    add("PreferenceData", "world", lambda v: sa.PreferenceData(DATA.counts, 64, v), WORLD, (bad_world,))
    add("sample_preferences", "n", lambda v: WORLD.sample_preferences(v, 2, seed=0), 64, (bad_int_arg,))
    add("sample_preferences", "replicates", lambda v: WORLD.sample_preferences(8, v, seed=0), 2, (bad_int_arg,))
    add("sample_preferences", "seed", lambda v: WORLD.sample_preferences(8, 2, seed=v), 0, (bad_seed,))
    add(
        "sample_preferences",
        "dtype",
        lambda v: WORLD.sample_preferences(8, 2, seed=0, dtype=v),
        None,
        (bad_float_dtype,),
    )
    add("sample_preferences", "device", lambda v: WORLD.sample_preferences(8, 2, seed=0, device=v), None, (bad_device,))
    add("fit", "data", lambda v: sa.fit("pmle", v), DATA, (bad_data,))
    add(
        "fit",
        "beta",
        lambda v: sa.fit("pmle", DATA, beta=v),
        0.0,
        (lambda draw, valid: draw(st.sampled_from([-1.0, math.nan, math.inf, "a", None])),),
        "beta",
    )
    add(
        "fit",
        "init",
        lambda v: sa.fit("pmle", DATA, init=v),
        LOGP,
        (bad_nan, bad_posinf, bad_shape, bad_complex, bad_string, bad_empty, bad_dict),
    )
    add(
        "fit",
        "reward",
        lambda v: sa.fit("rkl", DATA, reward=v),
        WORLD.true_reward,
        (bad_nan, bad_shape, bad_complex, bad_string, bad_empty, bad_dict),
    )
    add("fit_reward_model", "data", lambda v: sa.fit_reward_model(v), DATA, (bad_data,))
    add("population_loss", "policy", lambda v: sa.population_loss("dpo", WORLD, v), LOGP, TENSOR_LOGP)
    add("population_loss", "world", lambda v: sa.population_loss("dpo", v, LOGP), WORLD, (bad_world,))
    add("empirical_loss", "policy", lambda v: sa.empirical_loss("pmle", DATA, v), LOGP, TENSOR_LOGP)
    add("empirical_loss", "data", lambda v: sa.empirical_loss("pmle", v, LOGP), DATA, (bad_data,))
    for metric in (sa.forward_kl, sa.reverse_kl, sa.kl_divergence, sa.squared_hellinger, sa.total_variation):
        names = {"forward_kl": ("target", "estimate"), "reverse_kl": ("target", "estimate")}.get(
            metric.__name__, ("policy", "reference") if metric is sa.kl_divergence else ("p", "q")
        )
        for position, name in enumerate(names):
            add(metric.__name__, name, _metric(metric, position), LOGP, TENSOR_LOGP)
        add(
            metric.__name__,
            "prompt_dist",
            lambda v, m=metric: m(LOGP, LOGP, prompt_dist=v),
            WORLD.prompt_dist,
            tuple(b for b in TENSOR_PROBS if b is not bad_none),
        )
    add("entropy", "policy", lambda v: sa.entropy(v), LOGP, alone)
    add("expected_reward", "policy", lambda v: sa.expected_reward(v, WORLD.true_reward), LOGP, TENSOR_LOGP)
    add(
        "expected_reward",
        "reward",
        lambda v: sa.expected_reward(LOGP, v),
        WORLD.true_reward,
        (bad_nan, bad_shape, bad_complex, bad_none, bad_string, bad_empty),
    )
    add("win_rate", "policy", lambda v: sa.win_rate(WORLD, v), LOGP, TENSOR_LOGP)
    add("win_rate", "world", lambda v: sa.win_rate(v, LOGP), WORLD, (bad_world,))
    add("preference_squared_error", "world", lambda v: sa.preference_squared_error(v, LOGP), WORLD, (bad_world,))
    for fn, kwargs in ((sa.dpo_loss, {"gamma": 0.5}), (sa.ipo_loss, {"tau": 0.5}), (sa.f_dpo_loss, {"gamma": 0.5})):
        for position, name in enumerate(("logp_chosen", "logp_rejected", "ref_logp_chosen", "ref_logp_rejected")):
            add(fn.__name__, name, _pair_loss(fn, position, **kwargs), VALID_PAIR, LOSS_INPUT)
        key = next(iter(kwargs))
        add(fn.__name__, key, lambda v, f=fn, k=key: f(*[VALID_PAIR] * 4, **{k: v}), 0.5, (bad_scalar,))
    for position, name in enumerate(("logp_chosen", "logp_rejected")):
        add(
            "pmle_loss",
            name,
            lambda v, p=position: sa.pmle_loss(*[v if i == p else VALID_PAIR for i in range(2)], gamma=0.5),
            VALID_PAIR,
            LOSS_INPUT,
        )
    add("rate_sweep", "world", lambda v: sa.rate_sweep(v, "pmle", ns=(8, 16), replicates=2), WORLD, (bad_world,))
    add(
        "rate_sweep",
        "ns",
        lambda v: sa.rate_sweep(WORLD, "pmle", ns=v, replicates=2),
        (8, 16),
        (lambda draw, valid: draw(st.sampled_from([(), (16, 8), (0, 8), ("a",), None, (8, 8)])),),
    )
    add("rate_sweep", "replicates", lambda v: sa.rate_sweep(WORLD, "pmle", ns=(8, 16), replicates=v), 2, (bad_int_arg,))
    ns, values = (8, 16, 32), torch.rand(3, 4, dtype=DTYPE) + 0.1
    add("check_rate", "values", lambda v: sa.check_rate(ns, v), values, (bad_nan, bad_shape, bad_string, bad_none))
    add(
        "check_bound",
        "values",
        lambda v: sa.check_bound(ns, v, [1.0] * 3, delta=0.1),
        values,
        (bad_nan, bad_shape, bad_string, bad_none),
    )
    add("check_bound", "delta", lambda v: sa.check_bound(ns, values, [1.0] * 3, delta=v), 0.1, (bad_scalar,))
    return cases


CASES = _cases()


def _outcome(case: Case, value) -> str | None:
    """None when `case` refuses `value` clearly, else what went wrong."""
    try:
        result = case.call(value)
    except (ValueError, TypeError) as err:
        if case.name_in_message not in str(err):
            return f"{type(err).__name__} without {case.name_in_message!r}: {err}"
        return None
    except Exception as err:  # noqa: BLE001 - any other exception is the failure being tested for
        return f"{type(err).__name__}: {err}"
    return f"silently returned {type(result).__name__}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bad_inputs_raise_a_clear_error_naming_the_argument(data):
    case = data.draw(st.sampled_from(CASES), label="case")
    value = case.bad(data.draw, case.valid)
    problem = _outcome(case, value)
    assert problem is None, f"{case.id} with {sa._checks.describe(value)}: {problem}"


def test_every_case_is_refused_clearly():
    """Each (entry point, argument, kind of bad value) once, on a fixed draw: every one refused clearly."""
    failures, tried = [], 0

    @settings(max_examples=1, deadline=None, database=None, derandomize=True)
    @given(data=st.data())
    def one(data, case):
        nonlocal tried
        tried += 1
        value = case.bad(data.draw, case.valid)
        problem = _outcome(case, value)
        if problem is not None:
            failures.append(f"{case.id} with {sa._checks.describe(value)}: {problem}")

    for case in CASES:
        one(case=case)
    print(
        f"\nfuzz: {tried} bad inputs over {len({c.entry for c in CASES})} entry points; "
        f"{tried - len(failures)} refused with a clear error"
    )
    assert tried == len(CASES) >= 300
    assert not failures, "\n".join(failures)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bad_inputs_raise_a_clear_error_naming_the_argument_large(data):
    test_bad_inputs_raise_a_clear_error_naming_the_argument.hypothesis.inner_test(data)


# ------------------------------------------------------------------ extreme but valid


@settings(max_examples=40, deadline=None)
@given(
    scale=st.sampled_from([1e-3, 1.0, 10.0, 30.0]),
    gamma=st.sampled_from([1e-3, 0.5, 1.0, 20.0]),
    log2_n=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
)
def test_extreme_valid_inputs_give_finite_values(scale, gamma, log2_n, seed):
    world = sa.World.random(3, 4, gamma=gamma, logit_scale=scale, seed=seed)
    data = world.sample_preferences(2**log2_n, 2, seed=seed)
    assert float(data.counts.sum(dim=(1, 2, 3))[0]) == 2**log2_n  # float64 counts stay exact
    # Full-support policies: every pair loss and metric is finite.
    for name in ("pmle", "dpo", "ipo", "distillation", "rkl"):
        assert torch.isfinite(sa.population_loss(name, world, world.reference)).all(), name
        assert torch.isfinite(sa.empirical_loss(name, data, world.reference, reward=world.true_reward)).all(), name
    for metric in (sa.forward_kl, sa.reverse_kl, sa.squared_hellinger, sa.total_variation):
        assert math.isfinite(float(metric(world.target, world.reference))), metric.__name__
    assert math.isfinite(float(sa.entropy(world.reference)))
    result = sa.fit("pmle", data, ridge=1.0, max_iter=50)
    assert torch.isfinite(result.loss).all()
