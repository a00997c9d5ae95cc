"""An objective as a function of tabular softmax logits theta [R, X, A], with its exact derivatives.

`LogitObjective.derivatives(theta)` returns the per-(replicate, prompt) value, the gradient
[R, X, A] and the A × A Hessian blocks [R, X, A, A] of the objective (plus the optional
ridge) in the logits; the objective's values come from `synthalign.evaluate`.  Pair
objectives that declare `margin_derivatives` get analytic derivatives; others, and
the prompt terms, get them by automatic differentiation.  The solvers
(`synthalign.estimators.newton`) only consume them.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from synthalign._checks import broadcast_shape
from synthalign.evaluate import EvalContext, cell_inputs, cell_values, per_prompt_loss, prompt_values
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

    def values(self, theta: Tensor) -> Tensor:
        """Per-(replicate, prompt) objective, [..., R, X]."""
        logp = torch.log_softmax(theta, dim=-1)
        value = per_prompt_loss(self.obj, logp, self.pair_weight, self.prompt_weight, self.ctx, self.beta)
        value = value / self.total.unsqueeze(-1)
        if self.ridge > 0:
            centred = theta - theta.mean(dim=-1, keepdim=True)
            value = value + 0.5 * self._ridge_weight(theta) * centred.square().sum(dim=-1)
        return value

    def _ridge_weight(self, theta: Tensor) -> Tensor:
        """ridge / (total weight of the replicate), [R, 1]: the ridge acts on the summed loss."""
        return (self.ridge / self.total).unsqueeze(-1).to(theta.dtype)

    def derivatives(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(values [R, X], gradient [R, X, A], Hessian [R, X, A, A]) in the logits."""
        A = theta.shape[-1]
        theta = theta.detach()
        probs = torch.softmax(theta, dim=-1)
        logp = torch.log_softmax(theta, dim=-1)
        scale = self.total.unsqueeze(-1)
        value = theta.new_zeros(theta.shape[:-1])
        grad = torch.zeros_like(theta)
        hess = theta.new_zeros(*theta.shape, A)

        if self.obj.kind == "pair":
            # Elementwise derivatives of the pair loss in its two log-probability
            # arguments, assembled into the gradient and Hessian in logp, then
            # pushed through logp = theta − logsumexp(theta).
            g_logp, h_logp, pair_value = self._pair_derivatives(logp)
            value = value + pair_value / scale
            g_logp, h_logp = g_logp / scale.unsqueeze(-1), h_logp / scale[..., None, None]
            g_sum = g_logp.sum(dim=-1, keepdim=True)
            grad = grad + g_logp - probs * g_sum
            row = h_logp.sum(dim=-1, keepdim=True)  # H 1
            col = h_logp.sum(dim=-2, keepdim=True)  # 1ᵀ H
            both = row.sum(dim=-2, keepdim=True)
            p_col, p_row = probs.unsqueeze(-1), probs.unsqueeze(-2)
            jhj = h_logp - row * p_row - p_col * col + p_col * both * p_row
            softmax_hess = torch.diag_embed(probs) - probs.unsqueeze(-1) * probs.unsqueeze(-2)
            hess = hess + jhj - g_sum.unsqueeze(-1) * softmax_hess

        if self.obj.kind == "prompt" or self.beta > 0:
            p_value, p_grad, p_hess = self._prompt_derivatives(theta)
            value, grad, hess = value + p_value, grad + p_grad, hess + p_hess

        if self.ridge > 0:
            centred = theta - theta.mean(dim=-1, keepdim=True)
            ridge = self._ridge_weight(theta)
            value = value + 0.5 * ridge * centred.square().sum(dim=-1)
            grad = grad + ridge.unsqueeze(-1) * centred
            eye = torch.eye(A, dtype=theta.dtype, device=theta.device)
            hess = hess + ridge[..., None, None] * (eye - 1.0 / A)
        return value, grad, hess

    def _pair_derivatives(self, logp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(gradient [.., X, A], Hessian [.., X, A, A] in logp, weighted pair loss per prompt [.., X])."""
        weight = self.pair_weight
        if self.obj.margin_derivatives is not None:
            return self._margin_pair_derivatives(logp)
        cell_shape = broadcast_shape(logp.unsqueeze(-1).shape, weight.shape)
        first = logp.unsqueeze(-1).expand(cell_shape).clone().requires_grad_(True)
        second = logp.unsqueeze(-2).expand(cell_shape).clone().requires_grad_(True)
        with torch.enable_grad():
            values = cell_values(self.obj, logp, self.ctx, weight, first=first, second=second)
            weighted = torch.where(weight > 0, weight * values, torch.zeros_like(values))
            d_first, d_second = _grads(weighted.sum(), (first, second), create_graph=True)
            d_ff, d_fs = _grads(d_first.sum(), (first, second), retain_graph=True)
            (d_ss,) = _grads(d_second.sum(), (second,))
        grad = d_first.detach().sum(dim=-1) + d_second.detach().sum(dim=-2)
        hess = torch.diag_embed(d_ff.sum(dim=-1) + d_ss.sum(dim=-2)) + d_fs + d_fs.transpose(-1, -2)
        return grad, hess, weighted.detach().sum(dim=(-1, -2))

    def _margin_pair_derivatives(self, logp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # ℓ(cell i, j) = h(Δ_ij), Δ_ij = l_i − l_j: ∂/∂l_i = h', ∂/∂l_j = −h', and the
        # Hessian block of the cell is h'' [[1, −1], [−1, 1]] (zero on the diagonal cells i = j).
        weight = self.pair_weight
        used = weight > 0
        inputs = cell_inputs(self.obj, logp, self.ctx, weight)
        values = self.obj.fn(**inputs, **self.ctx.params)
        first, second = self.obj.margin_derivatives(**inputs, **self.ctx.params)
        zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
        weighted = torch.where(used, weight * values, zero)
        w_first = torch.where(used, weight * first, zero)
        w_second = torch.where(used, weight * second, zero)
        grad = w_first.sum(dim=-1) - w_first.sum(dim=-2)
        hess = torch.diag_embed(w_second.sum(dim=-1) + w_second.sum(dim=-2)) - w_second - w_second.transpose(-1, -2)
        return grad, hess, weighted.sum(dim=(-1, -2))

    def _prompt_derivatives(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        A = theta.shape[-1]
        theta = theta.clone().requires_grad_(True)
        with torch.enable_grad():
            logp = torch.log_softmax(theta, dim=-1)
            used = self.prompt_weight > 0
            terms = prompt_values(self.obj, logp, self.ctx, self.beta)
            value = torch.where(used, self.prompt_weight * terms, torch.zeros_like(terms))
            value = value / self.total.unsqueeze(-1)
            (grad,) = _grads(value.sum(), (theta,), create_graph=True)
            columns = [_grads(grad[..., a].sum(), (theta,), retain_graph=True)[0] for a in range(A)]
        hess = torch.stack(columns, dim=-1)
        return value.detach(), grad.detach(), hess


def _grads(output: Tensor, inputs, **kwargs):
    if not output.requires_grad:  # the loss is constant (or linear) in these inputs
        return tuple(torch.zeros_like(x) for x in inputs)
    grads = torch.autograd.grad(output, inputs, allow_unused=True, **kwargs)
    return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True))
