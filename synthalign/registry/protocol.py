"""The objective protocol: what an objective needs and what it declares about itself, and registries of them.

An `Objective` wraps a pure loss function (see `synthalign.objectives`) with the
data it needs.  Two kinds exist:

* a *pair* objective: a function of per-pair inputs, evaluated on every cell
  (x, a, b) of the finite space and weighted by the data (counts, or cell
  probabilities for the population loss);
* a *prompt* objective: a function of the whole policy row `logp` [..., X, A]
  (on-policy expectations such as RKL and RLHF), weighted by prompt counts.

The framework adds beta · KL(pi ‖ pi0) (weighted by the prompts of the data)
to every objective, as eq. 1, 5, 12 and 15 do; beta = 0 turns it off.

A new objective is a decorated function; the names of its parameters say what
it needs (`logp_chosen`, `logp_rejected`, `ref_logp_chosen`, `ref_logp_rejected`,
`reward_chosen`, `reward_rejected`, `target_margin`, `gamma` for a pair
objective; `logp`, `ref_logp`, `reward`, `gamma` for a prompt objective), and
its remaining keyword-only parameters are hyper-parameters with defaults::

    @sa.objective("my_dpo", data="preferences")
    def my_dpo(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *, gamma, scale=1.0):
        # sa.log_ratio(a, b) is a − b, except that two −inf (two zero-probability responses) give 0.
        margin = sa.log_ratio(logp_chosen, logp_rejected) - sa.log_ratio(ref_logp_chosen, ref_logp_rejected)
        return -torch.nn.functional.logsigmoid(scale * gamma * margin)
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from torch import Tensor

from synthalign._exports import flat_names

PAIR_INPUTS = (
    "logp_chosen",
    "logp_rejected",
    "ref_logp_chosen",
    "ref_logp_rejected",
    "reward_chosen",
    "reward_rejected",
    "target_margin",
    "gamma",
)
PROMPT_INPUTS = ("logp", "ref_logp", "reward", "gamma")
DATA_KINDS = ("preferences", "pairs", "prompts")
LENGTH_CONVENTIONS = ("sum", "per_token", "token_mean")
_REWARD_INPUTS = {"reward_chosen", "reward_rejected", "target_margin", "reward"}


@dataclasses.dataclass(frozen=True)
class Objective:
    """An objective: a loss function plus the data and inputs it needs.

    Attributes:
      name: registry name.
      fn: the elementwise loss (pair objective) or per-prompt loss (prompt objective).
      kind: "pair" or "prompt".
      data: "preferences" (labelled offline pairs), "pairs" (unlabelled pairs
        scored with a reward), or "prompts" (prompts only; on-policy).
      inputs: the input names `fn` takes from the framework.
      params: hyper-parameters with their defaults.
      closed_form: optional exact tabular minimizer,
        (reward, world, beta, params) -> Policy.
      reference: the paper or equation it comes from.
      margin_derivatives: optional analytic derivatives for the solver.  Declaring
        it promises that `fn` depends on (logp_chosen, logp_rejected) only through
        the log-ratio Δ = logp_chosen − logp_rejected; it takes the same inputs
        as `fn` and returns (∂ℓ/∂Δ, ∂²ℓ/∂Δ²) elementwise.  Without it the solver
        takes the derivatives by automatic differentiation.
      consistent: what the objective claims at beta = 0 with exact population
        losses and R̂ = R*: True if its minimizer is pi*, False if not, None if
        unknown.  `synthalign.testing.check_objective` verifies the claim.
      expected_minimizer: its population minimizer where known,
        (reward, world, beta, params) -> Policy; verified by the same check.
      swap_symmetry: "likelihood" (exp(−ℓ(a,b)) + exp(−ℓ(b,a)) = 1), "loss"
        (ℓ(a,b) = ℓ(b,a)) or None; see `synthalign.testing`.
      fits_reward: the fitted logits are a reward model, R = gamma · logits:
        `fit` starts from R = 0 instead of pi0 and returns the centred
        reward as `FitResult.reward`.
      example_params: hyper-parameter values for the hyper-parameters without a
        default, used by the conformance suite when none are given.
      known_failures: {check name: reason} for conformance checks known to fail,
        run as strict xfails by `parametrize_with_checks`.
      length_convention: how a response of several tokens enters the loss (one token on a
        finite world, where all three coincide): "sum" (ln pi(a|x) is the sum over its tokens),
        "per_token" (`fn` also takes the token counts `length_chosen`, `length_rejected` and
        divides by them itself; set for losses whose signature has them) or "token_mean" (as
        "per_token", and the batch mean is over tokens: pair i weighs w_i · |a⁺_i|, TRL's SFT).
        `synthalign.bridge` applies it.
    """

    name: str
    fn: Callable[..., Tensor]
    kind: str
    data: str
    inputs: tuple[str, ...]
    params: Mapping[str, float]
    closed_form: Callable | None = None
    reference: str = ""
    margin_derivatives: Callable | None = None
    consistent: bool | None = None
    expected_minimizer: Callable | None = None
    swap_symmetry: str | None = None
    fits_reward: bool = False
    example_params: Mapping[str, object] = dataclasses.field(default_factory=dict)
    known_failures: Mapping[str, str] = dataclasses.field(default_factory=dict)
    length_convention: str = "sum"

    @property
    def needs_reward(self) -> bool:
        return bool(_REWARD_INPUTS.intersection(self.inputs))

    @property
    def needs_reference(self) -> bool:
        return any(name.startswith("ref_") for name in self.inputs)

    def resolve_params(self, overrides: Mapping[str, float]) -> dict[str, float]:
        unknown = set(overrides) - set(self.params)
        if unknown:
            raise ValueError(
                f"objective {self.name!r} has no hyper-parameter(s) {sorted(unknown)}; it takes {sorted(self.params)}"
            )
        resolved = {**self.params, **overrides}
        missing = [k for k, v in resolved.items() if v is None]
        if missing:
            raise ValueError(f"objective {self.name!r} needs a value for {missing}")
        return resolved


class Registry:
    """A name → `Objective` table.

    `DEFAULT_REGISTRY` holds synthalign's objectives and is what `objective` fills and
    `get_objective` reads; a user can make their own (``reg = Registry()``, then
    ``@reg.objective("mine")``) and pass its objectives to `fit` and the checks directly.

    Registering a name again replaces the entry when the new objective comes from
    code outside synthalign (re-running a notebook cell redefines the objective, as
    it redefines a function); taking over the name of one of synthalign's own
    objectives needs ``replace=True``.
    """

    def __init__(self, objectives: Iterable[Objective] = ()) -> None:
        self._objectives: dict[str, Objective] = {}
        for obj in objectives:
            self.register(obj)

    def register(self, obj: Objective, *, replace: bool = False) -> Objective:
        if not isinstance(obj, Objective):
            raise ValueError(f"obj must be an Objective, got {type(obj).__name__}")
        current = self._objectives.get(obj.name)
        if current is not None and not replace and _is_builtin(current) and current.fn is not obj.fn:
            raise ValueError(
                f"{obj.name!r} names one of synthalign's objectives; pass replace=True to take the name over"
            )
        self._objectives[obj.name] = obj
        return obj

    def objective(self, name: str | None = None, **declaration: Any) -> Callable[[Callable], Objective]:
        """The `objective` decorator, registering here."""
        return objective(name, registry=self, **declaration)

    def get(self, objective: str | Objective) -> Objective:
        """The objective of that name (or the objective itself)."""
        if isinstance(objective, Objective):
            return objective
        if not isinstance(objective, str):
            raise ValueError(f"objective must be a name or an Objective, got {type(objective).__name__}")
        if objective not in self._objectives:
            raise ValueError(f"unknown objective {objective!r}; known: {', '.join(sorted(self._objectives))}")
        return self._objectives[objective]

    def names(self) -> list[str]:
        return sorted(self._objectives)

    def __contains__(self, name: object) -> bool:
        return name in self._objectives

    def __iter__(self) -> Iterator[Objective]:
        return iter(self._objectives.values())

    def __len__(self) -> int:
        return len(self._objectives)

    def __repr__(self) -> str:
        return f"Registry({len(self)} objectives)"


def _is_builtin(obj: Objective) -> bool:
    return getattr(obj.fn, "__module__", "").startswith("synthalign.")


DEFAULT_REGISTRY = Registry()
"""synthalign's objectives, and every objective registered with `objective`."""


def objective(
    name: str | None = None,
    *,
    data: str = "preferences",
    closed_form: Callable | None = None,
    reference: str = "",
    margin_derivatives: Callable | None = None,
    consistent: bool | None = None,
    expected_minimizer: Callable | None = None,
    swap_symmetry: str | None = None,
    fits_reward: bool = False,
    example_params: Mapping[str, object] | None = None,
    known_failures: Mapping[str, str] | None = None,
    register: bool = True,
    replace: bool = False,
    registry: Registry | None = None,
) -> Callable[[Callable], Objective]:
    """Decorator turning a loss function into an `Objective` (and registering it by name).

    The function's positional parameters must be input names (see module
    docstring); keyword-only parameters other than `gamma` are hyper-parameters
    (a parameter without a default must then be given to `fit`/`population_loss`).
    The objective goes into `registry` (default `DEFAULT_REGISTRY`) unless
    `register=False`.
    """
    _check_declaration(data, swap_symmetry, consistent)

    def wrap(fn: Callable) -> Objective:
        signature = inspect.signature(fn)
        kind = "prompt" if "logp" in signature.parameters else "pair"
        allowed = PROMPT_INPUTS if kind == "prompt" else PAIR_INPUTS
        inputs, params = [], {}
        for param in signature.parameters.values():
            if param.name in allowed:
                inputs.append(param.name)
            elif param.kind == inspect.Parameter.KEYWORD_ONLY:
                params[param.name] = None if param.default is inspect.Parameter.empty else param.default
            else:
                raise ValueError(
                    f"objective {fn.__name__!r}: parameter {param.name!r} is not an input "
                    f"({', '.join(allowed)}) nor a keyword-only hyper-parameter"
                )
        obj = _make(
            name or fn.__name__,
            fn,
            kind,
            data,
            inputs,
            params,
            closed_form=closed_form,
            reference=reference,
            margin_derivatives=margin_derivatives,
            consistent=consistent,
            expected_minimizer=expected_minimizer,
            swap_symmetry=swap_symmetry,
            fits_reward=fits_reward,
            example_params=dict(example_params or {}),
            known_failures=dict(known_failures or {}),
        )
        if register:
            (registry if registry is not None else DEFAULT_REGISTRY).register(obj, replace=replace)
        return obj

    return wrap


# Keyword-only parameters of a pure loss (`synthalign.objectives`) that the framework sets itself.
_FRAMEWORK_KEYWORDS = ("weight", "reduction")
# Lengths of the two responses: 1 on a finite world, where a response is one token.
_LENGTH_KEYWORDS = ("length_chosen", "length_rejected")


def objective_from_loss(
    loss: Callable[..., Tensor],
    name: str,
    *,
    rename: Mapping[str, str] | None = None,
    registry: Registry | None = None,
    register: bool = True,
    **declaration: Any,
) -> Objective:
    """A pair objective generated from a pure loss's own signature (``loss(logp_chosen, ..., *, gamma, ...,
    weight=None, reduction="mean")``), called with ``reduction="none"``.

    Inputs are the positional parameters without a default (a positional parameter
    defaulting to None is an input the loss can do without, such as SimPO's
    reference log-probabilities, and is not bound) plus `gamma`; `weight`,
    `reduction` and the response lengths are the framework's; every other
    keyword-only parameter is a hyper-parameter with the loss's default.  `rename`
    maps a loss parameter to its hyper-parameter name where the loss's name is an
    input name of the protocol (SimPO's `target_margin`).  `declaration` holds the
    `objective` decorator's facts (`consistent`, `expected_minimizer`, ...).
    """
    rename = dict(rename or {})
    signature = inspect.signature(loss)
    inputs, params = [], {}
    for param in signature.parameters.values():
        if param.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            if param.default is inspect.Parameter.empty:
                if param.name not in PAIR_INPUTS:
                    raise ValueError(f"loss {loss.__name__!r}: input {param.name!r} is not one of {PAIR_INPUTS}")
                inputs.append(param.name)
        elif param.kind == inspect.Parameter.KEYWORD_ONLY:
            if param.name == "gamma":
                inputs.append("gamma")
            elif param.name not in _FRAMEWORK_KEYWORDS + _LENGTH_KEYWORDS:
                default = None if param.default is inspect.Parameter.empty else param.default
                params[rename.get(param.name, param.name)] = default
    to_loss = {new: old for old, new in rename.items()}

    def fn(**kwargs):
        return loss(**{to_loss.get(key, key): value for key, value in kwargs.items()}, reduction="none")

    fn.__module__ = loss.__module__
    fn.__name__ = fn.__qualname__ = f"{name}_objective"
    fn.__doc__ = loss.__doc__
    data = declaration.pop("data", "preferences")
    if any(name in signature.parameters for name in _LENGTH_KEYWORDS):
        declaration.setdefault("length_convention", "per_token")
    _check_declaration(data, declaration.get("swap_symmetry"), declaration.get("consistent"))
    declaration.setdefault("reference", f"{loss.__module__}.{loss.__name__}")
    obj = _make(name, fn, "pair", data, inputs, params, **declaration)
    if register:
        (registry if registry is not None else DEFAULT_REGISTRY).register(obj)
    return obj


def _check_declaration(data, swap_symmetry, consistent) -> None:
    if data not in DATA_KINDS:
        raise ValueError(f"data must be one of {DATA_KINDS}, got {data!r}")
    if swap_symmetry not in (None, "likelihood", "loss"):
        raise ValueError(f"swap_symmetry must be 'likelihood', 'loss' or None, got {swap_symmetry!r}")
    if consistent not in (None, True, False):
        raise ValueError(f"consistent must be True, False or None, got {consistent!r}")


def _make(name, fn, kind, data, inputs, params, **declaration) -> Objective:
    if kind == "prompt" and data != "prompts":
        raise ValueError(f"objective {name!r} takes the whole policy (logp): use data='prompts'")
    if kind == "pair" and data == "prompts":
        raise ValueError(f"objective {name!r} takes pairs: use data='preferences' or 'pairs'")
    obj = Objective(name=name, fn=fn, kind=kind, data=data, inputs=tuple(inputs), params=params, **declaration)
    if obj.length_convention not in LENGTH_CONVENTIONS:
        raise ValueError(f"length_convention must be one of {LENGTH_CONVENTIONS}, got {obj.length_convention!r}")
    if data == "pairs" and not obj.needs_reward:
        raise ValueError(f"objective {obj.name!r} uses unlabelled pairs, so it must take a reward input")
    return obj


def get_objective(objective: str | Objective) -> Objective:
    """The objective of that name in `DEFAULT_REGISTRY` (or the objective itself)."""
    return DEFAULT_REGISTRY.get(objective)


def list_objectives() -> list[str]:
    """The names in `DEFAULT_REGISTRY`, sorted."""
    return DEFAULT_REGISTRY.names()


__all__ = [*flat_names(__name__), "objective_from_loss"]
