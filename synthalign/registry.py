"""The objective protocol: what an objective needs and how it is evaluated on a tabular policy.

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
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from synthalign import objectives as losses
from synthalign._checks import safe_log_ratio
from synthalign.policies import Policy, reward_policy, rkl_policy, rlhf_policy

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

    # --------------------------------------------------------------- evaluation

    def pair_values(
        self,
        logp: Tensor,
        ctx: EvalContext,
        weight: Tensor | None,
        *,
        first: Tensor | None = None,
        second: Tensor | None = None,
        fn: Callable | None = None,
    ) -> Tensor:
        """Elementwise loss on every cell (x, a, b), [..., X, A, A].

        `first`/`second` default to the broadcast views logp[..., :, None] and
        logp[..., None, :]; the solver passes full-cell copies to take
        elementwise derivatives.  Where `weight` is zero, non-finite inputs
        (zero-probability responses) are replaced by 0 before `fn` is called,
        so unused cells give neither inf·0 nor a NaN gradient; callers weight
        the result with `torch.where(weight > 0, ...)`.
        """
        inputs = {}
        first = logp.unsqueeze(-1) if first is None else first
        second = logp.unsqueeze(-2) if second is None else second
        # name -> (the small tensor it is built from, the cell view of it)
        available = {
            "logp_chosen": lambda: (logp, first),
            "logp_rejected": lambda: (logp, second),
            "ref_logp_chosen": lambda: (ctx.ref_logp, ctx.ref_logp.unsqueeze(-1)),
            "ref_logp_rejected": lambda: (ctx.ref_logp, ctx.ref_logp.unsqueeze(-2)),
            "reward_chosen": lambda: (ctx.require_reward(self.name), ctx.require_reward(self.name).unsqueeze(-1)),
            "reward_rejected": lambda: (ctx.require_reward(self.name), ctx.require_reward(self.name).unsqueeze(-2)),
            "target_margin": lambda: (
                ctx.require_reward(self.name),
                _reward_margin(ctx.require_reward(self.name)),
            ),
        }
        used = weight > 0 if weight is not None else None
        for name in self.inputs:
            if name == "gamma":
                inputs[name] = ctx.gamma
                continue
            base, value = available[name]()
            # Unused cells only need masking where an input is not finite (a
            # zero-probability response); the check runs on the [.., X, A] base.
            if used is not None and not torch.isfinite(base).all():
                value, mask = torch.broadcast_tensors(value, used)
                value = torch.where(mask, value, torch.zeros_like(value))
            inputs[name] = value
        return (fn or self.fn)(**inputs, **ctx.params)

    def prompt_values(self, logp: Tensor, ctx: EvalContext) -> Tensor:
        """Per-prompt loss, [..., X]."""
        inputs = {"logp": logp}
        for name in self.inputs:
            if name == "gamma":
                inputs[name] = ctx.gamma
            elif name == "ref_logp":
                inputs[name] = ctx.ref_logp
            elif name == "reward":
                inputs[name] = ctx.require_reward(self.name)
        return self.fn(**inputs, **ctx.params)


@dataclasses.dataclass
class EvalContext:
    """Everything an objective may read besides the policy."""

    gamma: float
    ref_logp: Tensor
    reward: Tensor | None
    params: dict

    def require_reward(self, name: str) -> Tensor:
        if self.reward is None:
            raise ValueError(f"objective {name!r} needs a reward (pass reward=...)")
        return self.reward


def _reward_margin(reward: Tensor) -> Tensor:
    return safe_log_ratio(reward.unsqueeze(-1), reward.unsqueeze(-2))


_REGISTRY: dict[str, Objective] = {}


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
    register: bool = True,
    replace: bool = False,
) -> Callable[[Callable], Objective]:
    """Decorator turning a loss function into an `Objective` (and registering it by name).

    The function's positional parameters must be input names (see module
    docstring); keyword-only parameters other than `gamma` are hyper-parameters
    (a parameter without a default must then be given to `fit`/`population_loss`).
    """
    if data not in DATA_KINDS:
        raise ValueError(f"data must be one of {DATA_KINDS}, got {data!r}")
    if swap_symmetry not in (None, "likelihood", "loss"):
        raise ValueError(f"swap_symmetry must be 'likelihood', 'loss' or None, got {swap_symmetry!r}")
    if consistent not in (None, True, False):
        raise ValueError(f"consistent must be True, False or None, got {consistent!r}")

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
        if kind == "prompt" and data != "prompts":
            raise ValueError(f"objective {fn.__name__!r} takes the whole policy (logp): use data='prompts'")
        if kind == "pair" and data == "prompts":
            raise ValueError(f"objective {fn.__name__!r} takes pairs: use data='preferences' or 'pairs'")
        obj = Objective(
            name=name or fn.__name__,
            fn=fn,
            kind=kind,
            data=data,
            inputs=tuple(inputs),
            params=params,
            closed_form=closed_form,
            reference=reference,
            margin_derivatives=margin_derivatives,
            consistent=consistent,
            expected_minimizer=expected_minimizer,
            swap_symmetry=swap_symmetry,
            fits_reward=fits_reward,
        )
        if data == "pairs" and not obj.needs_reward:
            raise ValueError(f"objective {obj.name!r} uses unlabelled pairs, so it must take a reward input")
        if register:
            if obj.name in _REGISTRY and not replace:
                raise ValueError(f"an objective named {obj.name!r} is already registered (pass replace=True)")
            _REGISTRY[obj.name] = obj
        return obj

    return wrap


def get_objective(objective: str | Objective) -> Objective:
    """The registered objective of that name (or the objective itself)."""
    if isinstance(objective, Objective):
        return objective
    if objective not in _REGISTRY:
        raise ValueError(f"unknown objective {objective!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[objective]


def list_objectives() -> list[str]:
    return sorted(_REGISTRY)


# ------------------------------------------------------------------ built-in objectives


def _logistic_derivatives(margin: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """d/dΔ and d²/dΔ² of −ln σ(m) with m = scale · Δ + const."""
    neg = torch.sigmoid(-margin)
    return -scale * neg, scale * scale * neg * torch.sigmoid(margin)


def _pmle_derivatives(logp_chosen, logp_rejected, *, gamma):
    return _logistic_derivatives(gamma * safe_log_ratio(logp_chosen, logp_rejected), gamma)


@objective(
    "reward_model",
    reference="eq. 9",
    margin_derivatives=_pmle_derivatives,
    consistent=True,
    swap_symmetry="likelihood",
    fits_reward=True,
)
def _reward_model(logp_chosen, logp_rejected, *, gamma):
    # The tabular reward model is parameterized as R = gamma * logits, so its
    # margin R(a+) - R(a-) = gamma * ln[pi_R(a+)/pi_R(a-)]: eq. 9 is PMLE on pi_R.
    return losses.pmle_loss(logp_chosen, logp_rejected, gamma=gamma, reduction="none")


@objective(
    "pmle", reference="eq. 4/5", margin_derivatives=_pmle_derivatives, consistent=True, swap_symmetry="likelihood"
)
def _pmle(logp_chosen, logp_rejected, *, gamma):
    return losses.pmle_loss(logp_chosen, logp_rejected, gamma=gamma, reduction="none")


def _distillation_derivatives(logp_chosen, logp_rejected, target_margin, *, gamma):
    # d/dm KL(Bern(σ(t)) ‖ Bern(σ(m))) = σ(m) − σ(t), d²/dm² = σ(m)σ(−m), m = γΔ.
    margin = gamma * safe_log_ratio(logp_chosen, logp_rejected)
    first = gamma * (torch.sigmoid(margin) - torch.sigmoid(target_margin))
    return first, gamma * gamma * torch.sigmoid(margin) * torch.sigmoid(-margin)


@objective(
    "distillation",
    data="pairs",
    reference="eq. 11/12",
    margin_derivatives=_distillation_derivatives,
    consistent=True,
    swap_symmetry="loss",
)
def _distillation(logp_chosen, logp_rejected, target_margin, *, gamma):
    return losses.distillation_loss(logp_chosen, logp_rejected, target_margin, gamma=gamma, reduction="none")


def _tilted_reference(world, log_tilt: Tensor) -> Policy:
    return Policy(torch.log_softmax(world.reference.logp + log_tilt, dim=-1), world.prompt_dist)


def _dpo_minimizer(reward, world, beta, params) -> Policy:
    """DPO's population minimizer (beta = 0, mu of full support): pi ∝ pi0 · pi*.

    DPO is logistic in gamma (u(a⁺) − u(a⁻)) with u = ln pi − ln pi0 while the labels
    follow σ(gamma ln[pi*(a)/pi*(b)]); matching the margins on every pair gives
    u = ln pi* + c(x).
    """
    return _tilted_reference(world, world.target.logp)


def _ipo_minimizer(reward, world, beta, params) -> Policy:
    """IPO's population minimizer: pi ∝ pi0 · exp((2 P*(a ≻ mu) − 1)/(2 tau)), P*(a ≻ mu) = E_{b~mu} P*(a ≻ b).

    With u = ln pi − ln pi0 and c = 1/(2 tau), setting the derivative in u_a of
    Σ_{a,b} mu(a) mu(b) [P_ab (u_a − u_b − c)² + P_ba (u_b − u_a − c)²] to zero and
    using P_ab + P_ba = 1 gives u_a − E_mu u = c (2 P(a ≻ mu) − 1).
    """
    from synthalign.data import preference_matrix

    win = torch.einsum("xab,xb->xa", preference_matrix(world), world.behavior.probs)
    return _tilted_reference(world, (2.0 * win - 1.0) / (2.0 * params["tau"]))


def _rebel_minimizer(reward, world, beta, params) -> Policy:
    """REBEL's minimizer: pi ∝ pi0 · exp(eta R̂); the squared loss is 0 when h(a, b) = eta (R̂(a) − R̂(b))."""
    return _tilted_reference(world, params["eta"] * reward)


def _dpo_derivatives(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *, gamma):
    h = safe_log_ratio(logp_chosen, logp_rejected) - safe_log_ratio(ref_logp_chosen, ref_logp_rejected)
    return _logistic_derivatives(gamma * h, gamma)


@objective(
    "dpo",
    reference="eq. 6",
    margin_derivatives=_dpo_derivatives,
    consistent=False,
    expected_minimizer=_dpo_minimizer,
    swap_symmetry="likelihood",
)
def _dpo(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *, gamma):
    return losses.dpo_loss(
        logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, gamma=gamma, reduction="none"
    )


def _ipo_derivatives(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *, tau=0.1):
    h = safe_log_ratio(logp_chosen, logp_rejected) - safe_log_ratio(ref_logp_chosen, ref_logp_rejected)
    residual = h - 1.0 / (2.0 * tau)
    return 2.0 * residual, torch.full_like(residual, 2.0)


@objective(
    "ipo",
    reference="Azar et al. 2024, arXiv 2310.12036",
    margin_derivatives=_ipo_derivatives,
    consistent=False,
    expected_minimizer=_ipo_minimizer,
)
def _ipo(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, *, tau=0.1):
    return losses.ipo_loss(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, tau=tau, reduction="none")


def _rebel_derivatives(
    logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, reward_chosen, reward_rejected, *, eta=1.0
):
    h = safe_log_ratio(logp_chosen, logp_rejected) - safe_log_ratio(ref_logp_chosen, ref_logp_rejected)
    residual = h - eta * safe_log_ratio(reward_chosen, reward_rejected)
    return 2.0 * residual, torch.full_like(residual, 2.0)


@objective(
    "rebel",
    reference="eq. 10",
    margin_derivatives=_rebel_derivatives,
    consistent=False,
    expected_minimizer=_rebel_minimizer,
    swap_symmetry="loss",
)
def _rebel(logp_chosen, logp_rejected, ref_logp_chosen, ref_logp_rejected, reward_chosen, reward_rejected, *, eta=1.0):
    return losses.rebel_loss(
        logp_chosen,
        logp_rejected,
        ref_logp_chosen,
        ref_logp_rejected,
        reward_chosen,
        reward_rejected,
        eta=eta,
        reduction="none",
    )


def _rkl_closed_form(reward, world, beta, params):
    return rkl_policy(reward, world.reference, world.gamma, beta)


def _rlhf_closed_form(reward, world, beta, params):
    if beta <= 0:
        raise ValueError("RLHF's optimum needs beta > 0 (at beta = 0 it is the argmax of the reward)")
    return rlhf_policy(reward, world.reference, beta)


@objective("rkl", data="prompts", closed_form=_rkl_closed_form, reference="eq. 15", consistent=True)
def _rkl(logp, reward, *, gamma):
    return losses.rkl_loss(logp, reward, gamma=gamma, reduction="none")


@objective("rlhf", data="prompts", closed_form=_rlhf_closed_form, reference="eq. 1", consistent=False)
def _rlhf(logp, reward):
    return losses.rlhf_loss(logp, reward, beta=0.0, reduction="none")


def _forward_kl_closed_form(reward, world, beta, params):
    if beta != 0:
        raise ValueError("the forward-KL estimator is defined at beta = 0 only")
    return reward_policy(reward, world.gamma)


@objective(
    "forward_kl",
    data="prompts",
    closed_form=_forward_kl_closed_form,
    reference="spec §2, last note",
    consistent=True,
)
def _forward_kl(logp, reward, *, gamma):
    # KL(pi_R ‖ pi) up to a constant: −Σ_a pi_R(a) ln pi(a), with pi_R ∝ exp(R/gamma).
    target = torch.softmax(reward / gamma, dim=-1)
    return -torch.where(target > 0, target * logp, torch.zeros_like(logp)).sum(dim=-1)


__all__ = [
    "EvalContext",
    "Objective",
    "get_objective",
    "list_objectives",
    "objective",
]
