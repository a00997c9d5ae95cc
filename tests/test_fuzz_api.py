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


def bad_values_shape(draw, valid):
    """Errors [N, R] with N off by one (any R is valid), or without the R dimension."""
    choice = draw(st.sampled_from(["shorter", "longer", "rank"]))
    if choice == "rank":
        return valid[:, 0].clone()
    if choice == "shorter":
        return valid[:-1].clone()
    return torch.cat([valid, valid[:1]])


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
    add(
        "check_rate",
        "values",
        lambda v: sa.check_rate(ns, v),
        values,
        (bad_nan, bad_values_shape, bad_string, bad_none),
    )
    add(
        "check_bound",
        "values",
        lambda v: sa.check_bound(ns, v, [1.0] * 3, delta=0.1),
        values,
        (bad_nan, bad_values_shape, bad_string, bad_none),
    )
    add("check_bound", "delta", lambda v: sa.check_bound(ns, values, [1.0] * 3, delta=v), 0.1, (bad_scalar,))
    _finite_class_cases(add)
    _class_cases(add)
    _more_metric_cases(add)
    _stats_cases(add)
    _bounds_cases(add)
    _store_cases(add)
    _sweep_cases(add)
    return cases


def _choice(*values):
    """A bad value drawn from a fixed list (values that are wrong whatever the draw)."""

    def bad(draw, valid):
        return draw(st.sampled_from(values))

    bad.__name__ = "bad_value"
    bad.values = values
    return bad


CLASS = sa.perturbation_class(WORLD, 4, 0.5, seed=0)
CLASS_LOGP = CLASS.logp  # [K, X, A]
REWARD_CLASS = sa.reward_class(WORLD.true_reward.unsqueeze(0) + 0.1 * CLASS_LOGP, WORLD.gamma, WORLD)
BAD_OBJECTIVE = _choice("no-such-objective", None, 3, "")
BAD_BETA = _choice(-1.0, math.nan, math.inf, "a", None, 1j)
BAD_COUNT = _choice(0, -1, 2.5, "3", None, True, math.nan)


def bad_member_shape(draw, valid):
    """A class [K, X, A] with X or A off by one (any K is valid), or without its K dimension."""
    choice = draw(st.sampled_from([1, 2, "rank"]))
    if choice == "rank":
        return valid[0].clone()
    return torch.cat([valid, valid.narrow(choice, 0, 1)], dim=choice)


def bad_member_size(draw, valid):
    """A class [K, X, A] with X or A off by one."""
    axis = draw(st.sampled_from([1, 2]))
    return torch.cat([valid, valid.narrow(axis, 0, 1)], dim=axis)


TENSOR_CLASS = tuple(bad_member_shape if b is bad_shape else b for b in TENSOR_LOGP) + (bad_rank,)
# Where no world fixes X and A, only a missing dimension is a bad shape.
WORLDLESS_CLASS = tuple(b for b in TENSOR_CLASS if b is not bad_member_shape)
LOSS_REWARD = (bad_nan, bad_shape, bad_complex, bad_string, bad_empty, bad_dict)


def _finite_class_cases(add):
    argmin = sa.argmin_over_class
    add("argmin_over_class", "objective", lambda v: argmin(v, DATA, CLASS_LOGP), "pmle", (BAD_OBJECTIVE,))
    add("argmin_over_class", "data", lambda v: argmin("pmle", v, CLASS_LOGP), DATA, (bad_data,))
    add("argmin_over_class", "candidates", lambda v: argmin("pmle", DATA, v), CLASS_LOGP, TENSOR_CLASS)
    add("argmin_over_class", "beta", lambda v: argmin("pmle", DATA, CLASS_LOGP, beta=v), 0.0, (BAD_BETA,))
    add(
        "argmin_over_class",
        "reward",
        lambda v: argmin("rkl", DATA, CLASS_LOGP, reward=v),
        WORLD.true_reward,
        LOSS_REWARD,
    )
    add(
        "argmin_over_class",
        "reward_ridge",
        lambda v: argmin("rkl", DATA, CLASS_LOGP, reward_ridge=v),
        1e-2,
        (BAD_BETA,),
    )
    add("argmin_over_class", "chunk_size", lambda v: argmin("pmle", DATA, CLASS_LOGP, chunk_size=v), 8, (BAD_COUNT,))
    fit_class = sa.fit_over_class
    add("fit_over_class", "objective", lambda v: fit_class(v, DATA, CLASS), "pmle", (BAD_OBJECTIVE,))
    add("fit_over_class", "data", lambda v: fit_class("pmle", v, CLASS), DATA, (bad_data,))
    add("fit_over_class", "policy_class", lambda v: fit_class("pmle", DATA, v), CLASS_LOGP, TENSOR_CLASS)
    add(
        "fit_over_class",
        "reward_class",
        lambda v: fit_class("rkl", DATA, CLASS, reward_class=v),
        REWARD_CLASS.logp,
        tuple(b for b in TENSOR_CLASS if b is not bad_none),
    )
    add(
        "fit_over_class",
        "reward_data",
        lambda v: fit_class("rkl", DATA, CLASS, reward_class=REWARD_CLASS, reward_data=v),
        DATA,
        (_choice("data", WORLD, DATA.counts, 3),),
    )
    add("fit_over_class", "beta", lambda v: fit_class("pmle", DATA, CLASS, beta=v), 0.0, (BAD_BETA,))
    add("fit_over_class", "chunk_size", lambda v: fit_class("pmle", DATA, CLASS, chunk_size=v), 8, (BAD_COUNT,))


def _class_cases(add):
    target_bads = (bad_nan, bad_posinf, bad_complex, bad_half, bad_string, bad_empty, bad_dict, bad_rank)
    target_bads += (bad_unnormalized_logp, bad_probs_as_logp, _choice(None, 3, CLASS, [1.0, "a"]))
    perturb = sa.perturbation_class
    add("perturbation_class", "target", lambda v: perturb(v, 4, 0.5, seed=0), WORLD.target.logp, target_bads)
    add("perturbation_class", "size", lambda v: perturb(WORLD, v, 0.5, seed=0), 4, (BAD_COUNT, _choice(1)))
    add(
        "perturbation_class",
        "radius",
        lambda v: perturb(WORLD, 4, v, seed=0),
        0.5,
        (bad_scalar, _choice((1.0, 0.5), (0.1, 0.2, 0.3), (-0.1, 0.2), (0.0, 0.0), ("a", 1.0))),
    )
    add("perturbation_class", "seed", lambda v: perturb(WORLD, 4, 0.5, seed=v), 0, (bad_seed, _choice(None)))
    add(
        "perturbation_class",
        "target_index",
        lambda v: perturb(WORLD, 4, 0.5, seed=0, target_index=v),
        0,
        (_choice(-1, 4, 1.5, "0", None, True),),
    )
    add(
        "perturbation_class",
        "weights",
        lambda v: perturb(WORLD, 4, 0.5, seed=0, weights=v),
        PROBS,
        (bad_nan, bad_posinf, bad_shape, bad_complex, bad_string, bad_dict, bad_empty, bad_negative),
    )
    grid = sa.grid_class
    add("grid_class", "target", lambda v: grid(v, 2, (0.0, 0.5)), WORLD.target.logp, target_bads)
    add(
        "grid_class",
        "directions",
        lambda v: grid(WORLD, v, (0.0, 0.5)),
        LOGP,
        (bad_nan, bad_shape, bad_complex, bad_string, bad_dict, bad_empty, _choice(0, -1, True, None, 2.5)),
    )
    add(
        "grid_class",
        "steps",
        lambda v: grid(WORLD, 2, v),
        (0.0, 0.5),
        (_choice((), (0.5, 1.0), (0.0, 0.0), (0.0, math.nan), (0.0, math.inf), "abc", None, [0.0, "a"], 3),),
    )
    add("grid_class", "seed", lambda v: grid(WORLD, 2, (0.0, 0.5), seed=v), 0, (bad_seed, _choice(None)))
    members = [CLASS_LOGP[1], CLASS_LOGP[2]]
    add(
        "list_class",
        "members",
        lambda v: sa.list_class(v, WORLD),
        CLASS_LOGP,
        # One policy [X, A] is a class of one member: only X or A off is a bad shape here.
        (*WORLDLESS_CLASS, bad_member_size, _choice([], [LOGP, LOGP[:1]], [LOGP, "a"], [LOGP + 1.0])),
    )
    add("list_class", "target", lambda v: sa.list_class(members, v), WORLD.target.logp, target_bads)
    add(
        "list_class",
        "add_target",
        lambda v: sa.list_class(members, WORLD, add_target=v),
        True,
        (_choice("yes", None, 1, 0.0),),
    )
    rewards = WORLD.true_reward.unsqueeze(0)
    add(
        "reward_class",
        "rewards",
        lambda v: sa.reward_class(v, WORLD.gamma, WORLD),
        rewards,
        (bad_nan, bad_posinf, bad_complex, bad_none, bad_string, bad_dict, bad_empty)
        + (_choice(torch.full((1, X, A), -math.inf, dtype=DTYPE), torch.zeros(1, 1, X, A, dtype=DTYPE), 3),),
    )
    add("reward_class", "gamma", lambda v: sa.reward_class(rewards, v, WORLD), WORLD.gamma, (bad_scalar,))
    add("reward_class", "target", lambda v: sa.reward_class(rewards, WORLD.gamma, v), WORLD.target.logp, target_bads)
    add(
        "reward_class",
        "add_target",
        lambda v: sa.reward_class(rewards, WORLD.gamma, WORLD, add_target=v),
        True,
        (_choice("yes", None, 1),),
    )
    other_world = sa.World.random(X + 1, A, seed=0)
    add(
        "union_class",
        "first",
        lambda v: sa.union_class(v, CLASS),
        CLASS,
        (_choice(None, CLASS_LOGP, "a", WORLD.reference),),
    )
    add(
        "union_class",
        "others[0]",
        lambda v: sa.union_class(CLASS, v),
        CLASS,
        (_choice(None, CLASS_LOGP, "a", sa.perturbation_class(other_world, 3, 0.5, seed=0), _other_target_class()),),
    )
    add("PolicyClass", "logp", lambda v: sa.PolicyClass(v), CLASS_LOGP, WORLDLESS_CLASS)
    add(
        "PolicyClass",
        "target_index",
        lambda v: sa.PolicyClass(CLASS_LOGP, target_index=v),
        0,
        (_choice(-1, 4, 1.5, "0", None, True),),
    )
    add("PolicyClass", "name", lambda v: sa.PolicyClass(CLASS_LOGP, name=v), "", (_choice(None, 3, b"x"),))
    add("PolicyClass.rewards", "gamma", lambda v: CLASS.rewards(v), 0.5, (bad_scalar,))


def _other_target_class():
    """A class over the same X, A whose pi* is another policy."""
    return sa.perturbation_class(WORLD.reference, 3, 0.5, seed=0)


def _more_metric_cases(add):
    add(
        "win_rate",
        "against",
        lambda v: sa.win_rate(WORLD, LOGP, against=v),
        LOGP,
        tuple(b for b in TENSOR_LOGP if b is not bad_none),
    )
    unnormalized_ok = tuple(b for b in TENSOR_LOGP if b not in (bad_unnormalized_logp, bad_probs_as_logp))
    add("preference_squared_error", "policy", lambda v: sa.preference_squared_error(WORLD, v), LOGP, unnormalized_ok)
    prompt_bads = tuple(b for b in TENSOR_PROBS if b is not bad_none)
    add("entropy", "prompt_dist", lambda v: sa.entropy(LOGP, prompt_dist=v), WORLD.prompt_dist, prompt_bads)
    add(
        "expected_reward",
        "prompt_dist",
        lambda v: sa.expected_reward(LOGP, WORLD.true_reward, prompt_dist=v),
        WORLD.prompt_dist,
        prompt_bads,
    )


def _stats_cases(add):
    ns, values = (8, 16, 32), torch.rand(3, 4, dtype=DTYPE, generator=torch.Generator().manual_seed(0)) + 0.1
    bad_ns = _choice((), (16, 8), (0, 8, 16), ("a", 8, 16), None, (8, 8, 16), 8, (8.5, 16, 32))
    bad_values = (bad_nan, bad_posinf, bad_values_shape, bad_string, bad_none, bad_complex, bad_dict, bad_negative)
    bad_values += (_choice(torch.ones(3, 1, dtype=DTYPE), [[1.0, 2.0], [1.0], [1.0, 2.0]], torch.zeros(3, 4)),)
    for entry, fn in (("fit_slope", sa.fit_slope), ("check_rate", sa.check_rate)):
        add(entry, "ns", lambda v, f=fn: f(v, values, n_boot=100), ns, (bad_ns, _choice((8,))))
        add(entry, "values", lambda v, f=fn: f(ns, v, n_boot=100), values, bad_values)
        add(
            entry,
            "statistic",
            lambda v, f=fn: f(ns, values, statistic=v, n_boot=100),
            "mean",
            (_choice("max", 1.5, 0, None, "a", math.nan),),
        )
        add(
            entry,
            "confidence",
            lambda v, f=fn: f(ns, values, confidence=v, n_boot=100),
            0.95,
            (_choice(0.0, 1.0, math.nan, "a", None, -0.5),),
        )
        add(entry, "n_boot", lambda v, f=fn: f(ns, values, n_boot=v), 100, (_choice(10, 2.5, "a", None, True),))
        add(entry, "seed", lambda v, f=fn: f(ns, values, n_boot=100, seed=v), 0, (bad_seed, _choice(None)))
    rate = sa.check_rate
    add("check_rate", "expected", lambda v: rate(ns, values, v, n_boot=100), -1.0, (_choice(math.nan, math.inf, "a"),))
    add(
        "check_rate",
        "faster_than",
        lambda v: rate(ns, values, faster_than=v, n_boot=100),
        None,
        (_choice(math.nan, "a", math.inf),),
    )
    add(
        "check_rate",
        "max_ci_width",
        lambda v: rate(ns, values, max_ci_width=v, n_boot=100),
        0.5,
        (_choice(0.0, -1.0, math.nan, "a", None),),
    )
    bound = sa.check_bound
    add("check_bound", "ns", lambda v: bound(v, values, [1.0] * 3, delta=0.1), ns, (bad_ns,))
    add(
        "check_bound",
        "values",
        lambda v: bound(ns, v, [1.0] * 3, delta=0.1),
        values,
        (bad_complex, bad_dict, bad_empty),
    )
    add(
        "check_bound",
        "bound",
        lambda v: bound(ns, values, v, delta=0.1),
        [1.0] * 3,
        (_choice([1.0, math.nan, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0], "a", None, lambda n: math.nan, {"a": 1}),),
    )
    add(
        "check_bound", "label", lambda v: bound(ns, values, [1.0] * 3, delta=0.1, label=v), "bound", (_choice(None, 3),)
    )


def _bounds_cases(add):
    bad_n = _choice(0.0, -1.0, math.nan, math.inf, "a", None, 1j, torch.tensor([8.0, -1.0]), torch.tensor([]))
    bad_size = _choice(0.5, math.nan, math.inf, "a", None, -3)
    bad_delta = _choice(0.0, 1.0, math.nan, "a", None, 1.5)
    bad_constant = _choice(-1.0, math.nan, "a", None, 1j)
    from synthalign import bounds as b

    add("prop12_bound", "n", lambda v: b.prop12_bound(v, 10, 0.1), 64, (bad_n,))
    add("prop12_bound", "class_size", lambda v: b.prop12_bound(64, v, 0.1), 10, (bad_size,))
    add("prop12_bound", "delta", lambda v: b.prop12_bound(64, 10, v), 0.1, (bad_delta,))
    thm4 = {"n": 64, "R": 1.0, "C_Pi": 2.0, "gamma": 0.5, "class_size": 10, "delta": 0.1}
    for key, bad in (("n", bad_n), ("R", bad_constant), ("C_Pi", bad_constant), ("gamma", bad_scalar)):
        add("thm4_bound", key, lambda v, k=key: b.thm4_bound(**{**thm4, k: v}), thm4[key], (bad,))
    add("thm4_bound", "class_size", lambda v: b.thm4_bound(**{**thm4, "class_size": v}), 10, (bad_size,))
    add("thm4_bound", "delta", lambda v: b.thm4_bound(**{**thm4, "delta": v}), 0.1, (bad_delta,))
    thm7 = {"n": 64, "R": 1.0, "C_R": 2.0, "gamma": 0.5, "class_size": 10, "reward_class_size": 5, "delta": 0.1}
    for key, bad in (("C_R", bad_constant), ("reward_class_size", bad_size), ("gamma", bad_scalar)):
        add("thm7_bound", key, lambda v, k=key: b.thm7_bound(**{**thm7, k: v}), thm7[key], (bad,))
    thm6 = {"n": 64, "R": 1.0, "C_Pi": 2.0, "gamma": 0.5, "class_size": 10, "reward_class_size": 5, "delta": 0.1}
    for key, bad in (("C_Pi", bad_constant), ("reward_class_size", bad_size), ("delta", bad_delta)):
        add("thm6_bound", key, lambda v, k=key: b.thm6_bound(**{**thm6, k: v}), thm6[key], (bad,))
    add("prop15_factor", "R", lambda v: b.prop15_factor(v), 1.0, (bad_constant,))
    add("psi", "z", lambda v: b.psi(v), 2.0, (_choice(0.0, -1.0, math.nan, "a", None, 1j),))
    add("lemma9_factor", "r_max", lambda v: b.lemma9_factor(v), 2.0, (_choice(0.0, -1.0, math.nan, "a", None),))
    add("lemma8_lower", "a", lambda v: b.lemma8_lower(v, 0.5), 0.1, (_choice(math.nan, "a", None, 1j),))
    add("lemma9_upper", "r", lambda v: b.lemma9_upper(v, 3.0), 2.0, (_choice(0.0, 4.0, math.nan, "a", None),))
    add("lemma9_upper", "r_max", lambda v: b.lemma9_upper(2.0, v), 3.0, (_choice(0.5, math.nan, "a", None),))
    add("lemma10_lower", "r_min", lambda v: b.lemma10_lower(2.0, v), 0.5, (_choice(0.0, math.nan, "a", None),))
    constants = {
        "target_logp": WORLD.target.logp,
        "behavior_logp": WORLD.behavior.logp,
        "reference_logp": WORLD.reference.logp,
        "prompt_dist": WORLD.prompt_dist,
        "gamma": WORLD.gamma,
        "policy_class_logp": CLASS_LOGP,
    }
    logp_bads = (bad_nan, bad_posinf, bad_shape, bad_complex, bad_none, bad_string, bad_empty, bad_dict)
    logp_bads += (bad_unnormalized_logp, bad_probs_as_logp)
    for key in ("target_logp", "behavior_logp", "reference_logp", "policy_class_logp"):
        add(
            "world_constants",
            key,
            lambda v, k=key: b.world_constants(**{**constants, k: v}),
            constants[key],
            logp_bads if key != "policy_class_logp" else _for_class(logp_bads),
        )
    add(
        "world_constants",
        "prompt_dist",
        lambda v: b.world_constants(**{**constants, "prompt_dist": v}),
        WORLD.prompt_dist,
        TENSOR_PROBS,
    )
    add("world_constants", "gamma", lambda v: b.world_constants(**{**constants, "gamma": v}), 0.5, (bad_scalar,))
    add(
        "world_constants",
        "chunk_size",
        lambda v: b.world_constants(**constants, chunk_size=v),
        None,
        (_choice(0, -1, 2.5, "3", True),),
    )
    coverage = {k: constants[k] for k in ("target_logp", "behavior_logp", "prompt_dist", "gamma")}
    add(
        "coverage_coefficient",
        "class_logp",
        lambda v: b.coverage_coefficient(v, **coverage),
        CLASS_LOGP,
        _for_class(logp_bads),
    )
    add(
        "boundedness_constant",
        "class_logp",
        lambda v: b.boundedness_constant(v, WORLD.behavior.logp),
        CLASS_LOGP,
        _for_class(logp_bads),
    )
    add("centred_reward", "gamma", lambda v: b.centred_reward(LOGP, WORLD.behavior.logp, v), 0.5, (bad_scalar,))


def _for_class(bads):
    return tuple(bad_member_shape if bad is bad_shape else bad for bad in bads) + (bad_rank,)


def _store_cases(add):
    from synthalign import store

    add("SweepStore", "directory", lambda v: store.SweepStore(v), "runs", (_choice(None, 3, b"", [1]),))
    add("config_key", "config", lambda v: store.config_key(v), {"a": 1}, (_choice(None, "a", 3, [1, 2]),))
    add(
        "atomic_write",
        "path",
        lambda v: store.atomic_write(v, lambda path: None),
        "out.json",
        (_choice(None, 3, ""),),
    )
    add(
        "atomic_write",
        "write",
        lambda v: store.atomic_write("/nonexistent-folder/out.json", v),
        print,
        (_choice(None, "text", 3),),
    )
    add("check_writable_dir", "out", lambda v: store.check_writable_dir(v), "runs", (_choice(None, 3, ""),))
    configs = [{"i": 0}, {"i": 1}]
    items = [(0,), (1,)]
    run = store.run_items
    add("run_items", "fn", lambda v: run(v, items, configs, sweep_config={}), abs, (_choice(None, "abs", 3),))
    add(
        "run_items",
        "items",
        lambda v: run(abs, v, configs, sweep_config={}),
        items,
        (_choice(None, [(0,)], [0, 1], "ab"),),
    )
    add(
        "run_items",
        "configs",
        lambda v: run(abs, items, v, sweep_config={}),
        configs,
        (_choice(None, [{"i": 0}], [1, 2], [{"i": 0}, {"i": 0}]),),
    )
    add("run_items", "sweep_config", lambda v: run(abs, items, configs, sweep_config=v), {}, (_choice(None, 3, "a"),))
    add(
        "run_items",
        "store",
        lambda v: run(abs, items, configs, sweep_config={}, store=v),
        None,
        (_choice("runs", 3, object()),),
    )
    add(
        "run_items",
        "fresh",
        lambda v: run(abs, items, configs, sweep_config={}, fresh=v),
        False,
        (_choice("yes", None, 1),),
    )
    add(
        "run_items",
        "executor",
        lambda v: run(abs, items, configs, sweep_config={}, executor=v),
        None,
        (_choice(object(), "dask", 3),),
    )


def _sweep_cases(add):
    sweep = sa.rate_sweep
    ns = (8, 16)
    add("rate_sweep", "seed", lambda v: sweep(WORLD, "pmle", ns, replicates=2, seed=v), 0, (bad_seed, _choice(None)))
    add(
        "rate_sweep",
        "estimator",
        lambda v: sweep(WORLD, v, ns, replicates=2),
        "pmle",
        (_choice("no-such-objective", None, 3, ""),),
    )
    add("rate_sweep", "beta", lambda v: sweep(WORLD, "pmle", ns, replicates=2, beta=v), 0.0, (BAD_BETA,))
    add(
        "rate_sweep",
        "metric",
        lambda v: sweep(WORLD, "pmle", ns, replicates=2, metric=v),
        sa.forward_kl,
        (_choice(None, "forward_kl", 3),),
    )
    add(
        "rate_sweep",
        "extra_metrics",
        lambda v: sweep(WORLD, "pmle", ns, replicates=2, extra_metrics=v),
        None,
        (_choice("tv", [sa.total_variation], {"tv": "total_variation"}, {3: sa.total_variation}),),
    )
    add(
        "rate_sweep",
        "candidates",
        lambda v: sweep(WORLD, "pmle", ns, replicates=2, candidates=v),
        CLASS_LOGP,
        tuple(b for b in TENSOR_CLASS if b is not bad_none),
    )
    add(
        "rate_sweep",
        "quantiles",
        lambda v: sweep(WORLD, "pmle", ns, replicates=2, quantiles=v),
        (0.5,),
        (_choice((1.5,), (math.nan,), ("a",), None, 0.5),),
    )
    add(
        "rate_sweep",
        "store",
        lambda v: sweep(WORLD, "pmle", ns, replicates=2, store=v),
        None,
        (_choice(3, b"", object()),),
    )
    add(
        "rate_sweep",
        "fresh",
        lambda v: sweep(WORLD, "pmle", ns, replicates=2, fresh=v),
        False,
        (_choice("yes", None, 1),),
    )
    add(
        "rate_sweep",
        "executor",
        lambda v: sweep(WORLD, "pmle", ns, replicates=2, executor=v),
        None,
        (_choice(object(), "dask", 3),),
    )
    add(
        "rate_sweep",
        "progress",
        lambda v: sweep(WORLD, "pmle", ns, replicates=2, progress=v),
        False,
        (_choice("yes", None, 1),),
    )
    result = sa.rate_sweep(WORLD, "pmle", ns, replicates=2, ridge=1.0)
    add("SweepResult.quantile", "q", lambda v: result.quantile(v), 0.5, (_choice(1.5, -0.1, math.nan, "a", None, 1j),))
    add("SweepResult.check_bound", "delta", lambda v: result.check_bound([1.0, 1.0], delta=v), 0.1, (bad_scalar,))
    add("tabular_estimator", "objective", lambda v: sa.tabular_estimator(v), "pmle", (BAD_OBJECTIVE,))
    add("tabular_estimator", "beta", lambda v: sa.tabular_estimator("pmle", beta=v), 0.0, (BAD_BETA,))
    add("class_estimator", "objective", lambda v: sa.class_estimator(v, CLASS), "pmle", (BAD_OBJECTIVE,))
    add("class_estimator", "policy_class", lambda v: sa.class_estimator("pmle", v), CLASS_LOGP, WORLDLESS_CLASS)
    add("class_estimator", "beta", lambda v: sa.class_estimator("pmle", CLASS, beta=v), 0.0, (BAD_BETA,))
    add(
        "class_estimator",
        "chunk_size",
        lambda v: sa.class_estimator("pmle", CLASS, chunk_size=v),
        4096,
        (BAD_COUNT,),
    )


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
    """Each (entry point, argument, kind of bad value) once on a fixed draw, and every value of a fixed list:
    every one refused clearly."""
    failures, tried = [], 0

    def attempt(case, value):
        nonlocal tried
        tried += 1
        problem = _outcome(case, value)
        if problem is not None:
            failures.append(f"{case.id} with {sa._checks.describe(value)}: {problem}")

    @settings(max_examples=1, deadline=None, database=None, derandomize=True)
    @given(data=st.data())
    def one(data, case):
        attempt(case, case.bad(data.draw, case.valid))

    for case in CASES:
        if hasattr(case.bad, "values"):
            for value in case.bad.values:
                attempt(case, value)
        else:
            one(case=case)
    print(
        f"\nfuzz: {tried} bad inputs over {len({c.entry for c in CASES})} entry points; "
        f"{tried - len(failures)} refused with a clear error"
    )
    assert tried >= len(CASES) >= 300
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


@settings(max_examples=25, deadline=None)
@given(
    scale=st.sampled_from([1e-3, 1.0, 10.0, 30.0]),
    gamma=st.sampled_from([1e-3, 0.5, 20.0]),
    radius=st.sampled_from([1e-6, 1.0, 50.0]),
    log2_n=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
)
def test_extreme_valid_inputs_to_finite_classes_give_no_nan(scale, gamma, radius, log2_n, seed):
    """Finite classes, their estimators, constants and bounds: never NaN; finite where the math is finite."""
    world = sa.World.random(2, 3, gamma=gamma, logit_scale=scale, seed=seed)
    policy_class = sa.perturbation_class(world, 5, radius, seed=seed)
    reward_members = sa.reward_class(gamma * policy_class.logp, gamma, world)
    data = world.sample_preferences(2**log2_n, 2, seed=seed)
    for name in ("pmle", "dpo"):
        fit = sa.fit_over_class(name, data, policy_class)
        assert not torch.isnan(fit.losses).any(), name
        assert bool((fit.index >= 0).all() & (fit.index < policy_class.size).all())
    fit = sa.fit_over_class("rkl", data, policy_class, reward_class=reward_members)
    assert not torch.isnan(fit.losses).any()
    # Every member has full support: the per-member KL to pi* is finite.
    assert torch.isfinite(sa.forward_kl(world.target, policy_class)).all()
    from synthalign import bounds

    constants = bounds.world_constants(
        world.target.logp,
        world.behavior.logp,
        world.reference.logp,
        world.prompt_dist,
        gamma,
        policy_class.logp,
        reward_members.logp,
    )
    for value in (constants.R, constants.C_Pi, constants.C_R, constants.C_0):
        assert not math.isnan(value) and value >= 0
    bound = bounds.thm4_bound(2**log2_n, constants.R, constants.C_Pi, gamma, policy_class.size, 0.1)
    assert not math.isnan(bound) and bound >= 0
