"""Sequence gap: a tiny transformer against the tabular autoregressive policy, offline and on-policy, measured exactly.

Setting (spec §1 over whole sequences, beta = 0):

* a `SequenceWorld` (tokens = the model's vocabulary, sequences of at most L tokens, N of them);
* pi0 is a tiny Llama (built from a config, no download) pretrained by exact forward KL on a random
  per-prefix policy; the world's reference *is* that model's exact table, so DPO's ln pi0 is exact
  and both policies start from pi0 exactly;
* pi* is a random per-prefix policy; mu_t ∝ pi0 · pi*^(−t) per prefix (tilt t = 0: mu = pi0): as t
  grows mu avoids what pi* prefers and its coverage of pi* worsens;
* data: n labelled pairs from mu (counts over the enumerated world); R̂ = the Bradley–Terry fit of
  eq. 9 (tabular, `ridge` pseudo-pairs so that it exists at small n).

Methods, each trained from pi0 on the same data by Adam on its exact expected loss over the
enumerated table (`synthalign.LMPolicy.table`, differentiable: every loss of the toolkit applies to
the transformer unchanged; sampling noise is left out so that what is measured is statistics and
parametrization, not SGD noise):

* PMLE (eq. 4) and DPO (eq. 6) on the labelled pairs;
* distillation (eq. 11) on the pairs of the data (pairs from mu), soft labels from R̂;
* distillation on pairs from the current policy pi_t (Algorithm 1; pi_t held fixed within a step);
* RKL (eq. 15, beta = 0) with R̂ (on-policy).

Two parametrizations run the same code: the transformer and the tabular autoregressive policy
(per-prefix logits, the control: it can represent every policy on the sequences).  Beside them,
"the tabular prediction at the same n": the exact tabular estimator on the same data (Newton or
closed form, `synthalign.fit`; distillation from pi_t and RKL share the minimizer pi_R̂).

Measured: E_x KL(pi* ‖ pi) over ALL N sequences against n (tilt 0); the mass pi puts on sequences
that never occur in the data (`synthalign.mass_outside`); and at the largest n, the gap between the
offline methods (pairs from mu) and the on-policy ones as the tilt grows.

Optimization: full-batch Adam on each exact loss, the step size warmed up linearly and decayed
(cosine by default, `lr_factor`).  The losses are exact expectations, so no score-function
estimator, baseline or sample count enters (those are `synthalign.bridge.make_trainer`'s).  Two
things kept the transformer's RKL from its minimizer (experiments/README.md has the measurements):
prompts are started with EOS, since under the default prompt tokens a rotary-position model cannot
tell the constant strings c, cc, ccc apart (`synthalign.bridge.policy`) and so cannot represent pi*;
and on-policy losses weigh the gradient at a sequence by its own probability (RKL's is
γ pi(a) [ln pi(a)/pi_R̂(a) − KL]), so mass that one large step throws away is never given back:
hence the warm-up, the decay, a smaller peak step than the constant 0.01 that did so, and
`backtrack` (a step that raises the exact loss is undone and the step size halved).

Sizes: `--quick` (CI, CPU: V = 4, L = 3, N = 40, one dataset per point, 80 Adam steps per fit), the
default, and `--full --device cuda` (V = 4, L = 4, N = 121, 5 datasets per point, 800 steps; the run
of `benchmarks/gpu_check.sh`).  Few steps leave the transformer short of its minimizer; the record's
`excess_loss` (trained loss minus the exact tabular fit's) says by how much, for every fit.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time

import numpy as np
import torch

import synthalign as sa
from synthalign._types import ExecutorLike
from synthalign.bridge.models import TabularARPolicy, TransformerPolicy, tiny_causal_lm
from synthalign.experiments._common import (
    CommonArgs,
    OptionError,
    check_integer,
    new_figure,
    one_cpu_thread,
    write_record,
)
from synthalign.experiments._grid import run_grid
from synthalign.experiments._plots import finish_figure, style_axes

__all__ = [
    "NAME",
    "METHODS",
    "OFFLINE",
    "PARAMETRIZATIONS",
    "LABELS",
    "COLORS",
    "SCHEDULES",
    "Args",
    "lr_factor",
    "pretrain_reference",
    "tilted_world",
    "method_loss",
    "train",
    "exact_tabular",
    "support_of",
    "fit_method",
    "run",
    "curves",
    "gap",
    "plot",
    "summary",
]

NAME = "sequence-gap"
METHODS = ("pmle", "dpo", "distillation_mu", "distillation_pit", "rkl")
SCHEDULES = ("cosine", "linear", "constant")
OFFLINE = ("pmle", "dpo", "distillation_mu")
PARAMETRIZATIONS = ("transformer", "tabular_ar")
LABELS = {"pmle": "PMLE (eq. 4)", "dpo": "DPO (eq. 6)", "distillation_mu": "distillation, pairs from mu (eq. 11)",
          "distillation_pit": "distillation, pairs from pi_t (Alg. 1)", "rkl": "RKL (eq. 15)"}  # fmt: skip
COLORS = {"pmle": "tab:green", "dpo": "tab:purple", "distillation_mu": "tab:orange", "distillation_pit": "tab:red",
          "rkl": "tab:blue"}  # fmt: skip
_SIZES = {
    # size: world (V, L, X), model (hidden, layers), log2 n, tilts, replicates, steps, pretraining steps
    "quick": dict(world=(4, 3, 2), model=(32, 2), log2_ns=(6, 9, 12), tilts=(0.0, 2.0), replicates=1, steps=80,
                  pretrain=100),
    "default": dict(world=(3, 4, 2), model=(32, 2), log2_ns=(6, 8, 10, 12, 14), tilts=(0.0, 1.0, 2.0, 3.0),
                    replicates=3, steps=400, pretrain=400),
    "full": dict(world=(4, 4, 3), model=(64, 2), log2_ns=(6, 8, 10, 12, 14, 16), tilts=(0.0, 0.5, 1.0, 2.0, 3.0),
                 replicates=5, steps=800, pretrain=1000),
}  # fmt: skip


@dataclasses.dataclass
class Args(CommonArgs):
    """Options of the sequence-gap experiment (CommonArgs plus these)."""

    gamma: float = 0.5
    """preference tilt of the world (and RKL's entropy coefficient)"""
    logit_scale: float = 1.0
    """scale of pi*'s next-token logits"""
    lr: float = 0.003
    """peak Adam step size of the transformer's fits"""
    pretrain_lr: float = 0.003
    """peak Adam step size of pi0's pretraining (apart from `lr`, so that pi0 and the world stay put when it varies)"""
    tabular_lr: float = 0.1
    """peak Adam step size of the tabular AR policy's fits (its logits are the policy's own scale)"""
    schedule: str = "cosine"
    """step size after the warm-up: 'cosine' or 'linear' decay to 0, or 'constant'"""
    warmup: float = 0.1
    """fraction of each fit's steps over which the step size rises linearly from 0 (0: none)"""
    backtrack: bool = True
    """undo an Adam step that raises the exact loss and halve the step size from then on (not for
    distillation from pi_t, whose loss moves with the policy)"""
    methods: tuple[str, ...] | None = None
    """the methods to train (a subset of METHODS, e.g. rkl,pmle); None: all"""
    ridge: float = 1e-2
    """pseudo-pairs of the Bradley–Terry fit R̂ (keeps it finite at small n)"""
    steps: int | None = None
    """Adam steps of each fit; None: by size (80 quick, 400 default, 800 full)"""
    log2_ns: tuple[int, ...] | None = None
    """the n = 2^k of the curve; None: by size"""
    tilts: tuple[float, ...] | None = None
    """behaviour tilts t (mu ∝ pi0 · pi*^-t), measured at the largest n; None: by size"""
    plot: bool = True
    """write the PNG plot"""

    def __post_init__(self):
        super().__post_init__()
        for name in ("gamma", "logit_scale", "lr", "pretrain_lr", "tabular_lr", "ridge"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise OptionError(name, f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.backtrack, bool):
            raise OptionError("backtrack", f"backtrack must be true or false, got {self.backtrack!r}")
        if self.schedule not in SCHEDULES:
            raise OptionError("schedule", f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        warmup = self.warmup
        if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not 0 <= warmup < 1:
            raise OptionError("warmup", f"warmup must be a fraction in [0, 1), got {warmup!r}")
        if self.methods is not None:
            self.methods = tuple(self.methods)
            unknown = [m for m in self.methods if m not in METHODS]
            if not self.methods or unknown or len(set(self.methods)) != len(self.methods):
                raise OptionError("methods", f"methods must be distinct names among {METHODS}, got {self.methods!r}")
            self.methods = tuple(m for m in METHODS if m in self.methods)  # the table's order
        if self.steps is not None:
            check_integer("steps", self.steps, 1)
        if self.log2_ns is not None:
            self.log2_ns = tuple(self.log2_ns)
            if (
                not self.log2_ns
                or any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 30 for k in self.log2_ns)
                or list(self.log2_ns) != sorted(set(self.log2_ns))
            ):
                raise OptionError("log2_ns", f"log2_ns must be increasing integers in [1, 30], got {self.log2_ns!r}")
        if self.tilts is not None:
            self.tilts = tuple(float(t) for t in self.tilts)
            if not self.tilts or self.tilts[0] != 0.0 or not all(math.isfinite(t) and t >= 0 for t in self.tilts):
                raise OptionError("tilts", f"tilts must be non-negative numbers starting at 0, got {self.tilts!r}")

    @property
    def sizes(self) -> dict:
        """This run size's row of the defaults: world (V, L, X), model (hidden, layers), pretraining steps, ..."""
        return _SIZES[self.size]

    @property
    def ns(self) -> list[int]:
        return [2**k for k in self.sized(self.log2_ns, _SIZES, "log2_ns")]

    @property
    def behavior_tilts(self) -> tuple[float, ...]:
        return self.sized(self.tilts, _SIZES, "tilts")

    @property
    def n_replicates(self) -> int:
        return self.sized(self.replicates, _SIZES, "replicates")

    @property
    def n_steps(self) -> int:
        return self.sized(self.steps, _SIZES, "steps")

    @property
    def method_names(self) -> tuple[str, ...]:
        return self.methods or METHODS


# ----------------------------------------------------------------------------- pi0 and the worlds


def pretrain_reference(world0: sa.SequenceWorld, args: Args) -> torch.nn.Module:
    """pi0: a tiny Llama fitted by exact forward KL to `world0`'s random reference (so pi0 is a transformer)."""
    V, _, X = args.sizes["world"]
    hidden, layers = args.sizes["model"]
    model = tiny_causal_lm(V, hidden, layers, seed=args.seed, device=args.device)
    policy = TransformerPolicy(model, world0.space, X)
    target = world0.as_tabular().reference.logp
    steps = args.sizes["pretrain"]
    optimizer = torch.optim.Adam(model.parameters(), lr=args.pretrain_lr)
    for step in range(steps):
        optimizer.param_groups[0]["lr"] = args.pretrain_lr * lr_factor(step, steps, args.warmup, args.schedule)
        loss = sa.metrics.kl_per_prompt(target, policy.table()).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def tilted_world(world0: sa.SequenceWorld, reference_prefix: torch.Tensor, tilt: float) -> sa.SequenceWorld:
    """pi* of world0, pi0 = the transformer's table, mu_t ∝ pi0 · pi*^(−t) per prefix."""
    behavior = reference_prefix - tilt * world0.target
    return sa.SequenceWorld.from_tensors(
        vocab_size=world0.space.vocab_size, max_length=world0.space.max_length, target=world0.target,
        reference=reference_prefix, behavior=behavior, gamma=world0.gamma, device=world0.device,
    )  # fmt: skip


# ----------------------------------------------------------------------------- losses and training


def method_loss(
    method: str, logp: torch.Tensor, data: sa.PreferenceData, reward: torch.Tensor, tab: sa.World
) -> torch.Tensor:
    """The exact expected loss of `method` for the policy table `logp` [X, N] on one dataset (scalar)."""
    if method in ("pmle", "dpo"):
        return sa.empirical_loss(method, data, logp)[0]
    if method == "distillation_mu":
        return sa.empirical_loss("distillation", data, logp, reward=reward)[0]
    if method == "distillation_pit":
        current = sa.Policy(logp.detach(), tab.prompt_dist)
        return sa.population_loss("distillation", tab, logp, reward=reward, pairs_from=current)
    return sa.population_loss("rkl", tab, logp, reward=reward)


def lr_factor(step: int, steps: int, warmup: float, schedule: str) -> float:
    """The step size of Adam step `step` (0-based) of `steps`, as a fraction of the peak.

    Linear warm-up over the first ⌈warmup · steps⌉ steps (from 1/w to 1), then `schedule`:
    cosine or linear decay towards 0 over the remaining steps, or constant.
    """
    warm = math.ceil(warmup * steps)
    if step < warm:
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    progress = (step - warm) / max(1, steps - warm)
    return 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress


def train(
    policy: TransformerPolicy | TabularARPolicy,
    method: str,
    data: sa.PreferenceData,
    reward: torch.Tensor,
    tab: sa.World,
    args: Args,
    lr: float,
    trace: list | None = None,
) -> torch.Tensor:
    """Adam on the method's loss from the policy's initial parameters; returns the final table (detached).

    With `args.backtrack` (and a loss that is one fixed function of the policy) a step after which
    the exact loss is higher than before it is undone, the step size is halved for the rest of the
    fit and Adam's moments are reset (its momentum may point uphill): on-policy losses weigh each
    sequence's gradient by its own probability, so a step that throws a sequence's mass away is
    never taken back by the gradient (module docstring).  `trace`, when given, receives one entry
    per step: the loss, E_x KL(pi* ‖ pi), the step size and whether the step was undone.
    """
    parameters = list(policy.parameters())
    optimizer = torch.optim.Adam(parameters, lr=lr)
    backtrack = args.backtrack and method != "distillation_pit"
    scale, kept = 1.0, None
    for step in range(args.n_steps):
        table = policy.table()
        loss = method_loss(method, table, data, reward, tab)
        undone = backtrack and kept is not None and loss.item() > kept[0]
        if undone:
            with torch.no_grad():
                for parameter, value in zip(parameters, kept[1], strict=True):
                    parameter.copy_(value)
            optimizer.state.clear()
            scale /= 2
            table = policy.table()
            loss = method_loss(method, table, data, reward, tab)
        if backtrack:
            kept = (loss.item(), [p.detach().clone() for p in parameters])
        optimizer.param_groups[0]["lr"] = lr * scale * lr_factor(step, args.n_steps, args.warmup, args.schedule)
        if trace is not None:
            detached = sa.Policy(table.detach(), tab.prompt_dist)
            trace.append({"loss": loss.item(), "forward_kl": float(sa.forward_kl(tab.target, detached)),
                          "lr": optimizer.param_groups[0]["lr"], "undone": undone})  # fmt: skip
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return policy.table()


def exact_tabular(
    method: str, data: sa.PreferenceData, reward: torch.Tensor, tab: sa.World, ridge: float
) -> torch.Tensor:
    """The exact tabular estimator on one dataset (Newton / closed form), its table [X, N].

    The logistic fits get the same `ridge` pseudo-pairs as R̂: without them the maximizer does not
    exist on separable data (small n) and Newton runs the logits off to infinity.
    """
    if method in ("pmle", "dpo"):
        return sa.fit(method, data, ridge=ridge).policy.logp[0]
    if method == "distillation_mu":
        return sa.fit("distillation", data, reward=reward, ridge=ridge).policy.logp[0]
    return sa.reward_policy(reward, tab.gamma).logp  # pi_R̂: the minimizer of RKL and of distillation from pi_t


def support_of(data: sa.PreferenceData) -> torch.Tensor:
    """The responses that occur in the data at each prompt (as chosen or rejected), boolean [X, N]."""
    counts = data.counts[0]
    return (counts.sum(dim=-1) + counts.sum(dim=-2)) > 0


# ----------------------------------------------------------------------------- experiment


def fit_method(
    reference_model: torch.nn.Module,
    reference_prefix: torch.Tensor,
    world: sa.SequenceWorld,
    data: sa.PreferenceData,
    reward: torch.Tensor,
    method: str,
    args: Args,
) -> dict:
    """One work item: one method on one dataset, exact tabular and trained in both parametrizations.

    Training is deterministic (exact losses, Adam from pi0's parameters), so the item's numbers depend
    only on its dataset and R̂.
    """
    with one_cpu_thread(args.device):
        X = args.sizes["world"][2]
        tab = world.as_tabular()
        support = support_of(data)
        exact = exact_tabular(method, data, reward, tab, args.ridge)
        entry = {"tabular_exact": _measure(exact, tab, support)}
        model = copy.deepcopy(reference_model)
        policies = {
            "transformer": TransformerPolicy(model, world.space, X),
            "tabular_ar": TabularARPolicy(reference_prefix, world.space),
        }
        for name, policy in policies.items():
            lr = args.lr if name == "transformer" else args.tabular_lr
            table = train(policy, method, data, reward, tab, args, lr)
            entry[name] = _measure(table, tab, support)
            with torch.no_grad():
                entry[name]["excess_loss"] = float(
                    method_loss(method, table, data, reward, tab) - method_loss(method, exact, data, reward, tab)
                )
        return entry


def run(args: Args, *, executor: ExecutorLike | None = None) -> dict:
    """Every (tilt, n, replicate, method, parametrization); writes sequence-gap.json and sequence_gap.png.

    Each (tilt, n, replicate, method) is one work item of the sweep store
    (`synthalign.experiments._grid`), both parametrizations at once: finished items are kept in
    `<out>/store/` and reused by a rerun; `executor` runs them in parallel.  Pretraining pi0 and
    fitting R̂ (batched over the replicates) stay outside the items: every item starts from them.
    """
    with one_cpu_thread(args.device):
        return _run(args, executor)


def _run(args: Args, executor=None) -> dict:
    start = time.perf_counter()
    V, L, X = args.sizes["world"]
    world0 = sa.SequenceWorld.random(
        V, L, X, gamma=args.gamma, logit_scale=args.logit_scale, seed=args.seed, device=args.device
    )
    reference_model = pretrain_reference(world0, args)
    with torch.no_grad():
        reference_prefix = TransformerPolicy(reference_model, world0.space, X).prefix_logp()
    ns, tilts, replicates, methods = args.ns, args.behavior_tilts, args.n_replicates, args.method_names
    pretraining_kl = sa.forward_kl(
        world0.as_tabular().reference, sa.Policy(world0.space.sequence_logp(reference_prefix))
    )
    results = {
        "methods": list(methods), "ns": ns, "tilts": list(tilts), "replicates": replicates, "steps": args.n_steps,
        "schedule": {"lr": args.lr, "tabular_lr": args.tabular_lr, "warmup": args.warmup, "decay": args.schedule,
                     "backtrack": args.backtrack},
        "world": {"vocab_size": V, "max_length": L, "n_prompts": X, "n_sequences": world0.n_sequences,
                  "gamma": args.gamma, "pretraining_kl": float(pretraining_kl),
                  "model_parameters": sum(p.numel() for p in reference_model.parameters())},
        "cells": [],
    }  # fmt: skip
    cells, items, labels = [], [], []
    for tilt_index, tilt in enumerate(tilts):
        world = tilted_world(world0, reference_prefix, tilt)
        tab = world.as_tabular()
        coverage = float((tab.target.logp - tab.behavior.logp).exp().max())
        for n in ns if tilt_index == 0 else ns[-1:]:
            all_data = tab.sample_preferences(n, replicates, seed=np.random.SeedSequence([args.seed, tilt_index, n]))
            rewards = sa.fit_reward_model(all_data, ridge=args.ridge).reward
            for r in range(replicates):
                data, reward = all_data[r], rewards[r]
                support = support_of(data)
                cells.append(
                    {
                        "tilt": tilt,
                        "n": n,
                        "replicate": r,
                        "coverage": coverage,
                        "kl_target_behavior": float(sa.forward_kl(tab.target, tab.behavior)),
                        "target_mass_off_support": float(sa.mass_outside(tab.target, support)),
                        "support_fraction": float(support.double().mean()),
                    }
                )
                for method in methods:
                    items.append((reference_model, reference_prefix, world, data, reward, method, args))
                    labels.append({"tilt_index": tilt_index, "n": n, "replicate": r, "method": method})
    # The subset of methods is no part of an item's key: a run of one method reuses a full run's items.
    keyed = dataclasses.replace(args, methods=None)
    entries = iter(run_grid(keyed, NAME, fit_method, items, labels, executor=executor))
    for cell in cells:
        for method in methods:
            cell[method] = next(entries)
        results["cells"].append(cell)
    results["curves"] = curves(results)
    results["gap"] = gap(results)
    results["seconds"] = time.perf_counter() - start
    if args.plot:
        plot(results, args)
    write_record(args, NAME, results)
    return results


def _measure(logp: torch.Tensor, tab: sa.World, support: torch.Tensor) -> dict:
    policy = sa.Policy(logp, tab.prompt_dist)
    return {
        "forward_kl": float(sa.forward_kl(tab.target, policy)),
        "mass_off_support": float(sa.mass_outside(policy, support)),
    }


def _summaries(cells: list[dict], methods: list[str]) -> dict:
    out = {}
    for method in methods:
        out[method] = {}
        for name in (*PARAMETRIZATIONS, "tabular_exact"):
            metrics = ("forward_kl", "mass_off_support") + (("excess_loss",) if name in PARAMETRIZATIONS else ())
            for metric in metrics:
                # not `_common.mean_se`: its torch sums differ in the last bit and it warns at one replicate (--quick)
                values = [c[method][name][metric] for c in cells]
                se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
                out[method][f"{name}_{metric}"] = {"mean": statistics.fmean(values), "se": se}
    return out


def curves(results: dict) -> list[dict]:
    """Mean over replicates of every measure at tilt 0, one entry per n."""
    rows = []
    for n in results["ns"]:
        cells = [c for c in results["cells"] if c["tilt"] == 0.0 and c["n"] == n]
        rows.append({"n": n, "support_fraction": statistics.fmean(c["support_fraction"] for c in cells),
                     **_summaries(cells, results["methods"])})  # fmt: skip
    return rows


def gap(results: dict) -> list[dict]:
    """At the largest n, per tilt: every measure, and offline minus on-policy (RKL) forward KL."""
    n = results["ns"][-1]
    rows = []
    for tilt in results["tilts"]:
        cells = [c for c in results["cells"] if c["tilt"] == tilt and c["n"] == n]
        row = {"tilt": tilt, "coverage": cells[0]["coverage"], "target_mass_off_support": statistics.fmean(
            c["target_mass_off_support"] for c in cells), **_summaries(cells, results["methods"])}  # fmt: skip
        if "rkl" in results["methods"]:
            for name in (*PARAMETRIZATIONS, "tabular_exact"):
                rkl = row["rkl"][f"{name}_forward_kl"]["mean"]
                offline = [m for m in OFFLINE if m in results["methods"]]
                row[f"{name}_gap"] = {m: row[m][f"{name}_forward_kl"]["mean"] - rkl for m in offline}
        rows.append(row)
    return rows


def plot(results: dict, args: Args) -> None:
    """sequence_gap.png: forward KL against n; mass off the data's support against n; KL against mu's tilt."""
    fig, axes = new_figure(1, 3, figsize=(16, 4.4))
    ns = [row["n"] for row in results["curves"]]
    styles = {"transformer": ("-", "o"), "tabular_ar": ("--", "s"), "tabular_exact": (":", "")}
    methods = results["methods"]
    for method in methods:
        for name, (ls, marker) in styles.items():
            kl = [row[method][f"{name}_forward_kl"]["mean"] for row in results["curves"]]
            label = f"{LABELS[method]}" if name == "transformer" else None
            axes[0].plot(ns, kl, ls=ls, marker=marker, ms=4, color=COLORS[method], label=label)
        for name in PARAMETRIZATIONS:
            ls, marker = styles[name]
            mass = [row[method][f"{name}_mass_off_support"]["mean"] for row in results["curves"]]
            axes[1].plot(ns, mass, ls=ls, marker=marker, ms=4, color=COLORS[method])
    target_off = [row["support_fraction"] for row in results["curves"]]
    axes[1].plot(ns, [1 - s for s in target_off], color="gray", ls="-.", label="fraction of sequences unseen")
    kl_label = "E_x KL(pi* || pi) over all sequences"
    style_axes(axes[0], xscale="log", xlabel="n (pairs from mu = pi0)", ylabel=kl_label, title_size=8,
               title="forward KL against n (solid: transformer, dashed: tabular AR, dotted: exact)")  # fmt: skip
    axes[1].set_yscale("symlog", linthresh=1e-3)
    axes[1].set_ylim(bottom=0.0)  # a probability: no negative half
    style_axes(axes[1], xscale="log", yscale=None, xlabel="n", ylabel="E_x pi(sequences absent from the data)",
               title="mass off the data's support (solid: transformer, dashed: tabular AR)", title_size=8)  # fmt: skip
    for method in methods:
        for name in PARAMETRIZATIONS:
            ls, marker = styles[name]
            # Against the tilt t, not against max pi*/mu: that ratio is set by pi0's smallest probabilities and
            # is not monotone in t (the summary table lists it beside each t).
            tilts = [row["tilt"] for row in results["gap"]]
            kl = [row[method][f"{name}_forward_kl"]["mean"] for row in results["gap"]]
            axes[2].plot(tilts, kl, ls=ls, marker=marker, ms=4, color=COLORS[method])
    style_axes(axes[2], xscale=None, xlabel="tilt t of mu ∝ pi0 · pi*^(−t) (larger t: mu avoids what pi* prefers)",
               ylabel=kl_label, title=f"on-policy gap at n = {results['ns'][-1]}", title_size=8,
               legend_size=None)  # fmt: skip
    w = results["world"]
    title = (
        f"Sequence world V={w['vocab_size']}, L={w['max_length']}, X={w['n_prompts']}, N={w['n_sequences']}; "
        f"{results['replicates']} dataset(s) per point, {results['steps']} Adam steps per fit\n"
        f"({_schedule_text(results)})"
    )
    finish_figure(fig, args, "sequence_gap.png", title=title)


def _schedule_text(results: dict) -> str:
    s = results["schedule"]
    return f"peak lr {s['lr']:g} transformer / {s['tabular_lr']:g} tabular AR, {s['warmup']:g} warm-up, {s['decay']}"


def summary(results: dict) -> str:
    """The tables of forward KL by method and n, the mass off support, and the on-policy gap; then the columns."""
    lines = [
        f"Sequence gap: N = {results['world']['n_sequences']} sequences, {results['replicates']} dataset(s) per point, "
        f"{results['steps']} Adam steps per fit ({_schedule_text(results)})",
        f"{'method':<17} {'n':>6} | {'KL tf':>8} {'KL ar':>8} {'KL tab':>8} | {'off tf':>7} {'off ar':>7} "
        f"{'off tab':>7} | {'unseen':>6} | {'exc tf':>7} {'exc ar':>7}",
    ]
    methods = results["methods"]
    for row in results["curves"]:
        for method in methods:
            m = row[method]
            kl = " ".join(f"{m[f'{name}_forward_kl']['mean']:8.4f}" for name in (*PARAMETRIZATIONS, "tabular_exact"))
            off = " ".join(
                f"{m[f'{name}_mass_off_support']['mean']:7.4f}" for name in (*PARAMETRIZATIONS, "tabular_exact")
            )
            excess = " ".join(f"{m[f'{name}_excess_loss']['mean']:7.4f}" for name in PARAMETRIZATIONS)
            lines.append(f"{method:<17} {row['n']:>6} | {kl} | {off} | {1 - row['support_fraction']:6.3f} | {excess}")
    lines.append(f"on-policy gap at n = {results['ns'][-1]}:")
    lines.append(f"{'tilt':>5} {'C':>8} {'pi* off':>7} | " + " ".join(f"{m:>15}" for m in methods))
    for row in results["gap"]:
        kls = " ".join(
            f"{row[m]['transformer_forward_kl']['mean']:7.4f}/{row[m]['tabular_exact_forward_kl']['mean']:7.4f}"
            for m in methods
        )
        lines.append(f"{row['tilt']:>5g} {row['coverage']:8.2f} {row['target_mass_off_support']:7.4f} | {kls}")
    lines += [
        "columns:",
        "  KL tf / KL ar: E_x KL(pi* || pi) over all N sequences of the trained transformer / tabular AR policy",
        "  KL tab: the same for the exact tabular estimator on the same data (Newton or closed form)",
        "  off tf / off ar / off tab: E_x pi(sequences that occur nowhere in the data at x)",
        "  unseen: the fraction of (x, sequence) cells absent from the data",
        "  exc tf / exc ar: the trained policy's loss minus the exact tabular fit's (the optimization error; it can be",
        "    negative at small n, where the exact fit carries the ridge and the trained policies do not)",
        "  C: max_{x,a} pi*(a|x)/mu(a|x), mu's coverage of pi*; pi* off: pi*'s mass on the unseen sequences",
        "  gap rows: transformer/exact-tabular forward KL of each method at the largest n",
        f"{results['seconds']:.1f} s",
    ]
    return "\n".join(lines)
