"""An objective as a function of tabular softmax logits theta [R, X, A], with its exact derivatives.

`LogitObjective.derivatives(theta)` returns the per-(replicate, prompt) value, the gradient
[R, X, A] and the A × A Hessian blocks [R, X, A, A] of the objective (plus the optional
ridge) in the logits; the objective's values come from `synthalign.evaluate`.  The solvers
(`synthalign.estimators.newton`) only consume them.

Cost and memory.  The pair terms are computed one block of cells at a time
(`synthalign.evaluate.cell_blocks`) and written into the one Hessian tensor in place
(for analytic margin derivatives each block's weighted h'' is written once into its
rows, and the symmetric off-diagonal part is formed at the end one tile pair at a
time); every term that is not elementwise in the cells is a diagonal plus a low-rank
update, applied once as a batched rank-k product.  So a call costs O(R·X·A²) and
holds the Hessian plus O(block) temporaries.  The Hessian's memory is kept by the objective
and used again by a later call once nothing refers to the returned Hessian any more
(`LogitObjective._hessian_buffer`): a Hessian still held is never overwritten.

* Pair objectives that declare `margin_derivatives` get analytic derivatives; since they
  depend on the policy only through log-ratios, their derivatives in logp are those in theta.
  PMLE, the reward model and DPO (−ln σ of a difference of scores) take them over one triangle
  of cells (`synthalign._logistic_pairs.logistic_derivatives`: the cells (a, b) and (b, a) share
  their sigmoids, and the Hessian is written once, a strip and its transpose at a time)
  when the table is large enough for that to pay; the others, one block of cells at a time.
  Other pair objectives get elementwise derivatives by automatic differentiation, one
  block at a time, pushed through logp = theta − logsumexp(theta).
* The prompt terms of the paper's prompt objectives (RKL, RLHF, forward KL) and beta · KL
  are analytic (`_prompt_form`); any other prompt objective is differentiated by autograd,
  its Hessian in one batched backward pass.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from synthalign import _logistic_pairs
from synthalign._logistic_pairs import logistic_derivatives, logistic_form, logistic_values
from synthalign.evaluate import (
    EvalContext,
    _block_inputs,
    _weighted_block_sum,
    cell_block_inputs,
    cell_blocks,
    cells_batch,
    per_prompt_loss,
    prompt_values,
)
from synthalign.metrics import expectation_per_prompt
from synthalign.registry import paper
from synthalign.registry.protocol import Objective

__all__ = ["LogitObjective"]


@dataclasses.dataclass
class LogitObjective:
    """The batched per-(replicate, prompt) objective and its exact derivatives in the logits.

    Attributes:
      obj: the objective; pair_weight [R, X, A, A] (None for a prompt objective),
        prompt_weight [R, X] and total [R]: the data's weights (`synthalign.evaluate.data_weights`);
      ctx: gamma, ln pi0, R̂ and hyper-parameters; beta: weight of KL(pi ‖ pi0);
      ridge: (ridge/2) Σ_a (theta_a − mean theta)² on the summed loss (see `synthalign.fit`).
    """

    obj: Objective
    pair_weight: Tensor | None
    prompt_weight: Tensor
    total: Tensor
    ctx: EvalContext
    beta: float
    ridge: float
    # The logistic kernel's symmetric weights n = w + wᵀ, taken once per weight table (`_logistic_pairs`).
    _pair_cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def values(self, theta: Tensor) -> Tensor:
        """Per-(replicate, prompt) objective, [..., R, X]."""
        logp = torch.log_softmax(theta, dim=-1)
        value = self.per_prompt_loss(logp) / self.total.unsqueeze(-1)
        if self.ridge > 0:
            centred = theta - theta.mean(dim=-1, keepdim=True)
            value = value + 0.5 * self._ridge_weight(theta) * centred.square().sum(dim=-1)
        return value

    def per_prompt_loss(self, logp: Tensor) -> Tensor:
        """`synthalign.evaluate.per_prompt_loss` of the data at `logp` (not normalized, no ridge), [..., R, X].

        PMLE, the reward model, DPO and distillation by `logistic_values` on the form of
        `logistic_form` (with the pair table the derivatives keep), wherever their derivatives
        take the logistic path; the cell-by-cell path otherwise.
        """
        pair = self._logistic_pair_values(logp)
        if pair is None:
            return per_prompt_loss(self.obj, logp, self.pair_weight, self.prompt_weight, self.ctx, self.beta)
        if self.beta > 0:  # the beta·KL prompt term, as `per_prompt_loss` adds it
            values = prompt_values(self.obj, logp, self.ctx, self.beta)
            pair = pair + torch.where(self.prompt_weight > 0, self.prompt_weight * values, torch.zeros_like(values))
        return pair

    def _logistic_pair_values(self, logp: Tensor) -> Tensor | None:
        """Σ_(a, b) w ℓ per (replicate, prompt) by `logistic_values`, or None where that path does not apply.

        It applies where `_logistic_pair_derivatives` does: a pair objective of logistic form
        (`logistic_form`, distillation with its entropy offset), finite scores, weights of the
        cells' own batch (not broadcast over replicates) and at least `_MIN_RESPONSES` responses;
        and not to a `logp` that requires grad.
        """
        weight = self.pair_weight
        if self.obj.kind != "pair" or weight is None or not weight.is_contiguous() or weight.requires_grad:
            return None
        if logp.requires_grad:  # its in-place strips do not record a graph: autograd takes the cell path
            return None
        A = logp.shape[-1]
        batch = torch.Size(cells_batch(logp, self.ctx, weight))
        if A < _logistic_pairs._MIN_RESPONSES or weight.shape[:-3] != batch:
            return None
        form = logistic_form(self.obj, logp, self.ctx, weight, self._pair_cache)
        if form is None:
            return None
        scores, weight, offset = form
        shape = (*batch, logp.shape[-2])
        values = logistic_values(scores.expand(*shape, A).reshape(-1, A), weight.view(-1, A, A), cache=self._pair_cache)
        if values is None:
            return None
        if offset is not None:
            values = values + offset.reshape(-1)
        return values.view(shape)

    def _ridge_weight(self, theta: Tensor) -> Tensor:
        """ridge / (total weight of the replicate), [R, 1]: the ridge acts on the summed loss."""
        return (self.ridge / self.total).unsqueeze(-1).to(theta.dtype)

    def derivatives(self, theta: Tensor, *, upper_only: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """(values [R, X], gradient [R, X, A], Hessian [R, X, A, A]) in the logits.

        With `upper_only` only the Hessian's upper triangle and diagonal are guaranteed (the
        strict lower triangle is unspecified): the logistic pair path (PMLE, the reward model,
        DPO) then skips writing the lower half; every other path writes the whole matrix.
        The Newton solver asks for this, since its Cholesky factorization reads one triangle.

        The Hessian is diag(d) + (pair block terms) − Σ_k u_k v_kᵀ: the pair terms are
        written block by block, `d` and the rank-k factors (u_k, v_k) collected from the
        other terms, and both applied once at the end.

        The Hessian lies in memory the objective reuses: a later call writes into it only once
        every tensor referring to it (views included) is gone, so a caller may keep it freely.
        """
        A = theta.shape[-1]
        theta = theta.detach()
        probs = torch.softmax(theta, dim=-1)
        logp = torch.log_softmax(theta, dim=-1)
        inverse_total = (1.0 / self.total).to(theta.dtype)
        batch = theta.shape[:-2]
        if self.pair_weight is not None:
            batch = torch.Size(cells_batch(logp, self.ctx, self.pair_weight))
        # The analytic pair path writes every entry of the Hessian; any other path adds into zeros.
        analytic = self.obj.kind == "pair" and self.obj.margin_derivatives is not None
        hess = self._hessian_buffer((*batch, *theta.shape[-2:], A), theta)
        if not analytic:
            hess.zero_()
        value = theta.new_zeros(*batch, theta.shape[-2])
        grad = theta.new_zeros(*batch, *theta.shape[-2:])
        diag = torch.zeros_like(grad)
        low_rank: list[tuple[Tensor, Tensor]] = []

        if self.obj.kind == "pair":
            scale = inverse_total.reshape(-1, *[1] * 3) if inverse_total.dim() else inverse_total
            if analytic:
                self._margin_pair_derivatives(logp, scale, value, grad, diag, hess, upper_only)
            else:
                self._autograd_pair_derivatives(logp, probs, scale, value, grad, diag, hess, low_rank)

        if self.obj.kind == "prompt" or self.beta > 0:
            p_value, p_grad, p_diag, p_low_rank, p_hess = self._prompt_derivatives(theta, probs, logp)
            value, grad, diag = value + p_value, grad + p_grad, diag + p_diag
            low_rank.extend(p_low_rank)
            if p_hess is not None:
                hess = hess + p_hess

        if self.ridge > 0:
            centred = theta - theta.mean(dim=-1, keepdim=True)
            ridge = self._ridge_weight(theta)
            value = value + 0.5 * ridge * centred.square().sum(dim=-1)
            grad = grad + ridge.unsqueeze(-1) * centred
            # ridge · (I − 11ᵀ/A)
            diag = diag + ridge.unsqueeze(-1)
            ones = torch.ones_like(theta)
            low_rank.append((ones * (ridge.unsqueeze(-1) / A), ones))

        hess.diagonal(dim1=-2, dim2=-1).add_(diag)
        _subtract_low_rank(hess, low_rank)
        return value, grad, hess

    def _hessian_buffer(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialized Hessian of `shape`: the previous call's, where no tensor still refers to it.

        A fresh [R, X, A, A] tensor costs a page fault per page on its first write (as much as
        several passes over it), so the objective keeps the last Hessian it returned and hands it
        out again once the caller has dropped every reference to it (and every view of it).  A
        Hessian the caller still holds is never overwritten: that call gets a new one.
        """
        cached = getattr(self, "_hessian", None)
        if (
            cached is not None
            and cached.shape == torch.Size(shape)
            and cached.dtype == like.dtype
            and cached.device == like.device
            and _storage_users(cached) <= 1
        ):
            return cached.view(cached.shape)
        self._hessian = None  # drop our reference first, so the old buffer can be freed
        self._hessian = like.new_empty(shape)
        # The caller gets another tensor on the same storage: holding it (or a view of it) counts as a use.
        return self._hessian.view(self._hessian.shape)

    def _margin_pair_derivatives(self, logp, scale, value, grad, diag, hess, upper_only: bool = False) -> None:
        # ℓ(cell i, j) = h(Δ_ij), Δ_ij = l_i − l_j: ∂/∂l_i = h', ∂/∂l_j = −h', and the
        # Hessian block of the cell is h'' [[1, −1], [−1, 1]] (zero on the diagonal cells i = j).
        # ℓ is unchanged by adding a constant to l, so these are also its derivatives in theta.
        # The weighted h'' of each block is written once into its rows of `hess`; the
        # off-diagonal part −(W + Wᵀ) is formed at the end, one tile pair at a time.
        if self._logistic_pair_derivatives(logp, scale, value, grad, diag, hess, upper_only):
            return
        weight = self.pair_weight
        X, A = logp.shape[-2:]
        for group in cell_blocks(tuple(hess.shape[:-3]), X, A):
            for block in group:
                prompts, rows = block.prompts, block.rows
                w = weight[..., prompts, rows, :]
                inputs = _block_inputs(self.obj, logp, self.ctx, w, prompts, rows)
                values = self.obj.fn(**inputs, **self.ctx.params)
                first, second = self.obj.margin_derivatives(**inputs, **self.ctx.params)
                w = w * scale
                w_second = hess[..., prompts, rows, :]
                w_first = w * first
                torch.mul(w, second, out=w_second)
                sums = (w_first.sum(dim=-1), w_first.sum(dim=-2), w_second.sum(dim=-1), w_second.sum(dim=-2))
                if not all(bool(torch.isfinite(t).all()) for t in sums):
                    # A non-finite product: drop the cells of weight zero (their loss may be inf or NaN).
                    used = w > 0
                    w_first = torch.where(used, w_first, 0.0)
                    w_second.copy_(torch.where(used, w_second, 0.0))
                    sums = (w_first.sum(dim=-1), w_first.sum(dim=-2), w_second.sum(dim=-1), w_second.sum(dim=-2))
                value[..., prompts] += _weighted_block_sum(w, values)
                grad[..., prompts, rows] += sums[0]
                grad[..., prompts, :] -= sums[1]
                diag[..., prompts, rows] += sums[2]
                diag[..., prompts, :] += sums[3]
        _negated_symmetric_sum(hess)

    def _logistic_pair_derivatives(self, logp, scale, value, grad, diag, hess, upper_only: bool = False) -> bool:
        """The derivatives of PMLE, the reward model, DPO and distillation over one triangle of cells.

        `logistic_derivatives` on the form of `logistic_form` (distillation on its soft counts,
        plus its entropy offset).  False (nothing written) where that path does not apply:
        another objective, a non-finite score, weights that broadcast over the replicates, or
        a small table.
        """
        weight = self.pair_weight
        if weight.shape[:-3] != hess.shape[:-3] or not weight.is_contiguous() or weight.requires_grad:
            return False
        if hess.shape[-1] < _logistic_pairs._MIN_RESPONSES:  # declined there: no soft table for nothing
            return False
        form = logistic_form(self.obj, logp, self.ctx, weight, self._pair_cache)
        if form is None:
            return False
        scores, weight, offset = form
        A = hess.shape[-1]
        per_prompt = scale[..., 0, 0] if scale.dim() else scale  # [R, 1]: 1 / total weight of the replicate
        rows = torch.broadcast_to(per_prompt, hess.shape[:-2]).reshape(-1).to(logp.dtype)
        flat_hess = hess.view(-1, A, A)
        scores = scores.expand(hess.shape[:-1]).reshape(-1, A)
        result = logistic_derivatives(
            scores,
            weight.view(-1, A, A),
            rows,
            float(self.ctx.gamma),
            flat_hess,
            cache=self._pair_cache,
            upper_only=upper_only,
        )
        if result is None:
            return False
        pair_value, pair_grad, pair_diag = result
        if offset is not None:
            pair_value = pair_value + offset.reshape(-1) * rows
        value += pair_value.view(value.shape)
        grad += pair_grad.view(grad.shape)
        diag += pair_diag.view(diag.shape)
        return True

    def _autograd_pair_derivatives(self, logp, probs, scale, value, grad, diag, hess, low_rank) -> None:
        # Elementwise derivatives of the pair loss in its two log-probability arguments
        # (cells are independent, so one backward pass per block gives them all),
        # assembled into the gradient g and Hessian H in logp, then pushed through
        # logp = theta − logsumexp(theta) (J = I − 1pᵀ):
        #   ∇θ = g − p Σg,   ∇²θ = JᵀHJ − Σg (diag p − ppᵀ),
        # where JᵀHJ = H − r pᵀ − p rᵀ + (1ᵀr) ppᵀ with r = H1 (H is symmetric).
        weight = self.pair_weight
        X, A = logp.shape[-2:]
        row_sum = torch.zeros_like(grad)
        for group in cell_blocks(tuple(hess.shape[:-3]), X, A):
            for block in group:
                prompts, rows = block.prompts, block.rows
                w = weight[..., prompts, rows, :]
                base = logp[..., prompts, :]
                cell_shape = torch.broadcast_shapes(base[..., rows].unsqueeze(-1).shape, w.shape)
                first = base[..., rows].unsqueeze(-1).expand(cell_shape).clone().requires_grad_(True)
                second = base.unsqueeze(-2).expand(cell_shape).clone().requires_grad_(True)
                with torch.enable_grad():
                    inputs = cell_block_inputs(self.obj, logp, self.ctx, weight, block, first=first, second=second)
                    values = self.obj.fn(**inputs, **self.ctx.params)
                    weighted = torch.where(w > 0, (w * scale) * values, 0.0)
                    d_first, d_second = _grads(weighted.sum(), (first, second), create_graph=True)
                    d_ff, d_fs = _grads(d_first.sum(), (first, second), retain_graph=True)
                    (d_ss,) = _grads(d_second.sum(), (second,))
                value[..., prompts] += weighted.detach().sum(dim=(-1, -2))
                grad[..., prompts, rows] += d_first.detach().sum(dim=-1)
                grad[..., prompts, :] += d_second.detach().sum(dim=-2)
                cell_diag_rows, cell_diag_cols = d_ff.sum(dim=-1), d_ss.sum(dim=-2)
                diag[..., prompts, rows] += cell_diag_rows
                diag[..., prompts, :] += cell_diag_cols
                hess[..., prompts, rows, :] += d_fs
                hess[..., prompts, :, rows] += d_fs.transpose(-1, -2)
                row_sum[..., prompts, rows] += cell_diag_rows + d_fs.sum(dim=-1)
                row_sum[..., prompts, :] += cell_diag_cols + d_fs.sum(dim=-2)
        g_sum = grad.sum(dim=-1, keepdim=True)
        grad -= probs * g_sum
        total = row_sum.sum(dim=-1, keepdim=True) + g_sum
        diag -= g_sum * probs
        low_rank.append((row_sum, probs.expand_as(row_sum)))
        low_rank.append((probs.expand_as(row_sum), row_sum - total * probs))

    def _prompt_derivatives(self, theta: Tensor, probs: Tensor, logp: Tensor):
        """(value, gradient, diagonal, rank-k factors, dense Hessian or None) of the weighted prompt terms."""
        used = self.prompt_weight > 0
        per_prompt = torch.where(used, self.prompt_weight * (1.0 / self.total).unsqueeze(-1), 0.0).to(theta.dtype)
        form = _prompt_form(self.obj, self.ctx, logp, self.beta)
        if form is None:
            return self._autograd_prompt_derivatives(theta, per_prompt)
        linear, entropy, cross = form
        value = torch.where(used, prompt_values(self.obj, logp, self.ctx, self.beta), 0.0) * per_prompt
        # F = Σ_a p_a c_a + κ Σ_a p_a l_a − Σ_a t_a l_a, with c = `linear`, κ = `entropy`, t = `cross`:
        #   ∇θ F = u − t + p Σt,  u = p ⊙ (c + κ l − Σ p (c + κ l)),
        #   ∇²θ F = diag(u) − u pᵀ − p uᵀ + (κ + Σt)(diag p − ppᵀ).
        # Where p = 0 the term p_a c_a is 0 (as in `expectation_per_prompt`), whatever c_a is.
        centred = torch.zeros_like(logp) if linear is None else torch.where(probs > 0, linear, 0.0)
        if entropy is not None:
            centred = centred + entropy.unsqueeze(-1) * logp
        u = probs * (centred - expectation_per_prompt(probs, centred).unsqueeze(-1))
        curvature = torch.zeros_like(logp[..., :1]) if entropy is None else entropy.unsqueeze(-1)
        grad = u
        if cross is not None:
            mass = cross.sum(dim=-1, keepdim=True)
            grad = grad - cross + probs * mass
            curvature = curvature + mass
        weight = per_prompt.unsqueeze(-1)
        grad, u = grad * weight, u * weight
        curvature = curvature * weight
        diag = u + curvature * probs
        probs = probs.expand_as(u)
        return value, grad, diag, [(u, probs), (probs, u + curvature * probs)], None

    def _autograd_prompt_derivatives(self, theta: Tensor, per_prompt: Tensor):
        # A prompt objective without an analytic form: gradient by autograd, and all A
        # Hessian columns in one backward pass batched over the unit vectors.
        A = theta.shape[-1]
        theta = theta.clone().requires_grad_(True)
        with torch.enable_grad():
            logp = torch.log_softmax(theta, dim=-1)
            terms = prompt_values(self.obj, logp, self.ctx, self.beta)
            value = torch.where(per_prompt > 0, terms, 0.0) * per_prompt
            (grad,) = _grads(value.sum(), (theta,), create_graph=True)
            if not grad.requires_grad:
                hess = torch.zeros(*grad.shape, A, dtype=theta.dtype, device=theta.device)
            else:
                units = torch.eye(A, dtype=theta.dtype, device=theta.device).reshape(A, *[1] * (grad.dim() - 1), A)
                (columns,) = torch.autograd.grad(
                    grad, theta, grad_outputs=units.expand(A, *grad.shape), is_grads_batched=True, allow_unused=True
                )
                if columns is None:
                    columns = torch.zeros(A, *grad.shape, dtype=theta.dtype, device=theta.device)
                hess = columns.movedim(0, -1)
        zero = torch.zeros_like(grad)
        return value.detach(), grad.detach(), zero, [], hess.detach()


def _prompt_form(obj: Objective, ctx: EvalContext, logp: Tensor, beta: float):
    """(c, κ, t) with prompt terms = Σ_a p_a c_a + κ Σ_a p_a ln p_a − Σ_a t_a ln p_a (+ const), or None.

    Known for the paper's prompt objectives and for beta · KL(pi ‖ pi0) = beta Σ p (ln p − ln pi0);
    None for any other prompt objective (then `_autograd_prompt_derivatives`).
    """
    linear = entropy = cross = None
    if obj.kind == "prompt":
        form = _paper_prompt_forms().get(obj.fn)
        if form is None:
            return None
        linear, entropy, cross = form(ctx)
    if beta > 0:
        prior = -beta * ctx.ref_logp.to(logp.dtype)
        linear = prior if linear is None else linear + prior
        kl = torch.full(logp.shape[:-1], beta, dtype=logp.dtype, device=logp.device)
        entropy = kl if entropy is None else entropy + kl
    return linear, entropy, cross


def _paper_prompt_forms() -> dict:
    """The paper's prompt objectives by loss function: ctx -> (c, κ, t) (see `_prompt_form`)."""

    def rkl(ctx):  # −E_p R̂ − γ H(p) (eq. 15)
        gamma = torch.full(ctx.reward.shape[:-1], float(ctx.gamma), dtype=ctx.reward.dtype, device=ctx.reward.device)
        return -ctx.reward, gamma, None

    def rlhf(ctx):  # −E_p R̂ (eq. 1; beta · KL is added by the framework)
        return -ctx.reward, None, None

    def forward_kl(ctx):  # −Σ_a pi_R(a) ln p(a), pi_R ∝ exp(R̂ / γ)
        return None, None, torch.softmax(ctx.reward / ctx.gamma, dim=-1)

    return {paper._rkl.fn: rkl, paper._rlhf.fn: rlhf, paper._forward_kl.fn: forward_kl}


_TILE = 256
"""Rows and columns of one tile of `_negated_symmetric_sum`."""


def _negated_symmetric_sum(matrix: Tensor) -> None:
    """matrix ← −(matrix + matrixᵀ) in place over the last two dimensions, one pair of tiles at a time."""
    A = matrix.shape[-1]
    for i in range(0, A, _TILE):
        rows = slice(i, min(i + _TILE, A))
        tile = matrix[..., rows, rows]
        tile.copy_((tile + tile.transpose(-1, -2)).neg_())
        for j in range(i + _TILE, A, _TILE):
            cols = slice(j, min(j + _TILE, A))
            upper, lower = matrix[..., rows, cols], matrix[..., cols, rows]
            torch.neg(upper + lower.transpose(-1, -2), out=upper)
            lower.copy_(upper.transpose(-1, -2))


def _storage_users(tensor: Tensor) -> int:
    """How many tensors (views included) share the storage of `tensor`, not counting this query."""
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    if use_count is None:  # a torch without the query: never reuse (a fresh Hessian every call)
        return 2
    return use_count(tensor.untyped_storage()._cdata) - 1


def _subtract_low_rank(hess: Tensor, factors: list[tuple[Tensor, Tensor]]) -> None:
    """hess −= Σ_k u_k v_kᵀ in place, as one batched product (no temporary the size of `hess`)."""
    if not factors:
        return
    A = hess.shape[-1]
    batch = hess.shape[:-2]
    left = torch.stack([u.expand(*batch, A) for u, _ in factors], dim=-1).reshape(-1, A, len(factors))
    right = torch.stack([v.expand(*batch, A) for _, v in factors], dim=-2).reshape(-1, len(factors), A)
    flat = hess.view(-1, A, A)
    flat.baddbmm_(left, right, alpha=-1.0)


def _grads(output: Tensor, inputs, **kwargs):
    if not output.requires_grad:  # the loss is constant (or linear) in these inputs
        return tuple(torch.zeros_like(x) for x in inputs)
    grads = torch.autograd.grad(output, inputs, allow_unused=True, **kwargs)
    return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True))
