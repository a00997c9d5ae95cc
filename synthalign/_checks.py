"""Input validation and weighted reduction shared by every loss and constructor.

Every public function validates its inputs here so that a bad argument raises a
`ValueError` naming the argument, the offending value and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def as_tensor(value, name: str, *, dtype: torch.dtype | None = None, device=None) -> Tensor:
    """Converts `value` to a floating tensor, rejecting NaN."""
    if isinstance(value, Tensor):
        tensor = value
        if dtype is not None or device is not None:
            tensor = tensor.to(dtype=dtype or tensor.dtype, device=device or tensor.device)
    else:
        try:
            tensor = torch.as_tensor(value, dtype=dtype or torch.float64, device=device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name} must be convertible to a tensor, got {type(value).__name__}") from err
    if not tensor.is_floating_point():
        tensor = tensor.to(dtype or torch.float64)
    if torch.isnan(tensor).any():
        raise ValueError(f"{name} contains NaN")
    return tensor


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """Checks that a scalar hyper-parameter is finite and positive (or non-negative)."""
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a real number, got {value!r}") from err
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if allow_zero and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if not allow_zero and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_same_shape(tensors: Sequence[Tensor], names: Sequence[str]) -> None:
    """Checks that tensors broadcast together, naming the pair that does not."""
    if broadcast_shape(*(t.shape for t in tensors)) is None:
        shapes = ", ".join(f"{n}{tuple(t.shape)}" for n, t in zip(names, tensors, strict=True))
        raise ValueError(f"shapes do not broadcast: {shapes}")


def broadcast_shape(*shapes: Sequence[int]) -> tuple[int, ...] | None:
    """The broadcast of `shapes` by numpy's rules, or None if they do not broadcast.

    Plain Python: `torch.broadcast_shapes` imports torch.fx and sympy on first use
    (about a second), which would land on the first loss call.
    """
    ndim = max((len(shape) for shape in shapes), default=0)
    result = []
    for axis in range(-ndim, 0):
        sizes = {shape[axis] for shape in shapes if len(shape) >= -axis} - {1}
        if len(sizes) > 1:
            return None
        result.append(sizes.pop() if sizes else 1)
    return tuple(result)


def check_no_nan(tensors: Sequence[Tensor], names: Sequence[str]) -> None:
    """Rejects NaN in loss inputs (±inf is legitimate: log-probability of a zero-probability response)."""
    for tensor, name in zip(tensors, names, strict=True):
        if torch.isnan(tensor).any():
            raise ValueError(f"{name} contains NaN")


def check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def weighted_reduce(loss: Tensor, weight: Tensor | None, reduction: str) -> Tensor:
    """Reduces an elementwise loss with optional non-negative weights.

    `mean` is the weighted mean sum(w * l) / sum(w): with weight 1 it is the
    average over explicit pairs, with weight = count it is (1/n) sum over a
    dataset held as counts, and with weight = cell probability it is the exact
    population loss.  Cells of zero weight contribute exactly 0 even where the
    loss is infinite (a zero-probability response), never NaN.
    """
    check_reduction(reduction)
    if weight is None:
        weighted = loss
        total = loss.new_tensor(float(loss.numel()))
    else:
        weight = torch.as_tensor(weight).to(loss.dtype)
        check_same_shape((loss, weight), ("loss", "weight"))
        if torch.isnan(weight).any():
            raise ValueError("weight contains NaN")
        if (weight < 0).any():
            raise ValueError("weight must be non-negative")
        weighted = torch.where(weight > 0, weight * loss, torch.zeros_like(loss))
        total = weight.expand_as(weighted).sum() if weighted.dim() else weight.sum()
    if reduction == "none":
        return weighted
    if reduction == "sum":
        return weighted.sum()
    if total <= 0:
        raise ValueError("weight sums to zero: a weighted mean is undefined")
    return weighted.sum() / total


def safe_log_ratio(logp_a: Tensor, logp_b: Tensor) -> Tensor:
    """ln(p_a / p_b) from log-probabilities, defined as 0 when both are -inf.

    Two zero-probability responses are tied: 0^gamma / (0 + 0) is read as 1/2
    (a Decision of synthalign, documented in `preference_probability`).
    """
    diff = logp_a - logp_b
    if not torch.isinf(logp_a).any():  # the common case costs one reduction
        return diff
    both_infinite = torch.isinf(logp_a) & (logp_a == logp_b)
    return torch.where(both_infinite, torch.zeros_like(diff), diff)


def safe_difference(a: Tensor, b: Tensor) -> Tensor:
    """a − b, with two equal infinite scores (two zero-probability responses) read as a tie, 0.

    Only infinite ties are replaced, so the gradient of a finite tie is still (1, −1).
    """
    diff = a - b
    return torch.where(torch.isinf(a) & (a == b), torch.zeros_like(diff), diff)


def double_log_ratio(logp_chosen: Tensor, logp_rejected: Tensor, ref_logp_chosen: Tensor, ref_logp_rejected: Tensor):
    """h⁺ − h⁻ = ln[π(a⁺)π0(a⁻) / (π(a⁻)π0(a⁺))], never NaN for log-probabilities in [−inf, 0].

    Each log-ratio h = ln π/π0 is formed first, with 0/0 (a response neither policy
    can produce) read as 1 (`safe_log_ratio`), then two equal infinite log-ratios
    are read as a tie (`safe_difference`): −inf − (−inf) never reaches the loss.
    """
    h_chosen = safe_log_ratio(logp_chosen, ref_logp_chosen)
    h_rejected = safe_log_ratio(logp_rejected, ref_logp_rejected)
    return safe_difference(h_chosen, h_rejected)
