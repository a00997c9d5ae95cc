"""Input validation and weighted reduction shared by every loss and constructor.

The one validation layer of synthalign: every public entry point checks its inputs
here, so that a bad argument raises a `ValueError` naming the argument, the
offending value (or shape, dtype, device) and what was expected.  A wrong Python
type (None, a string, a dict where a tensor is meant) raises `InputTypeError`,
which is both a `TypeError` and a `ValueError`.

Conventions enforced here:

* tensors of probabilities, log-probabilities and counts are floating: float64,
  or float32 where a function documents it.  float16 and bfloat16 are refused for
  counts (2^11 is their largest exact integer); integer, bool and complex
  tensors are refused where probabilities or counts are meant;
* Python lists and numpy arrays are accepted wherever a tensor is and converted
  to float64 (numpy complex arrays are refused);
* empty tensors, NaN, +inf log-probabilities, negative or unnormalized
  probabilities and log-probabilities whose rows do not sum to 1 are refused;
* tensors that are combined must be on one device (the message names both), and a
  CUDA device on a machine without CUDA is refused in one line.

Checks run once per public call on the inputs (small tensors), never inside a
solver's iterations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
from torch import Tensor

from synthalign._types import DeviceLike

if TYPE_CHECKING:
    from synthalign.worlds.datasets import CellData
    from synthalign.worlds.tabular import World

_T = TypeVar("_T")

_REDUCTIONS = ("mean", "sum", "none")

FLOAT_DTYPES = (torch.float32, torch.float64)
# |logsumexp| of a normalized row of log-probabilities, and |sum − 1| of probabilities.
NORMALIZATION_TOL = 1e-6
# float32 holds every integer up to 2^24 exactly: beyond that, counts and their totals drift.
FLOAT32_MAX_EXACT = 2**24


class InputTypeError(TypeError, ValueError):
    """An argument of the wrong Python type: a TypeError that `except ValueError` also catches."""


def describe(value: object) -> str:
    """A short description of a value for an error message: a tensor's shape and dtype, else its repr."""
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}, device {value.device}"
    if isinstance(value, np.ndarray):
        return f"numpy array of shape {value.shape}, dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_device(device: DeviceLike, name: str = "device") -> torch.device | None:
    """`device` as a torch.device (None stays None); a CUDA device without CUDA is refused in one line."""
    if device is None:
        return None
    try:
        resolved = torch.device(device)
    except (TypeError, RuntimeError, ValueError) as err:
        raise ValueError(f"{name} must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{name}={device!r}: CUDA is not available on this machine (torch.cuda.is_available() is False)"
        )
    return resolved


def check_same_device(tensors: Mapping[str, Tensor | None]) -> None:
    """All tensors on one device; the message names the first two that disagree and both devices."""
    first_name, first = None, None
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        if first is None:
            first_name, first = name, tensor
        elif tensor.device != first.device:
            raise ValueError(
                f"{name} is on {tensor.device} but {first_name} is on {first.device}; "
                "move them to one device (.to(...))"
            )


def as_tensor(
    value: object, name: str, *, dtype: torch.dtype | None = None, device: DeviceLike = None, allow_empty: bool = False
) -> Tensor:
    """Converts `value` (tensor, numpy array, list or number) to a real tensor, rejecting NaN and emptiness.

    Integer tensors are converted to `dtype` (default float64); bool and complex are refused.
    """
    if value is None or isinstance(value, (str, bytes, dict, set)):
        raise InputTypeError(f"{name} must be a tensor, a numpy array or a list of numbers, got {describe(value)}")
    if isinstance(value, Tensor):
        tensor = value
    else:
        if isinstance(value, np.ndarray) and np.iscomplexobj(value):
            raise ValueError(f"{name} must be real, got {describe(value)}")
        try:
            tensor = torch.as_tensor(
                np.asarray(value, dtype=np.float64)
                if not isinstance(value, np.ndarray)
                else value.astype(np.float64, copy=False)
            )
        except (TypeError, ValueError, RuntimeError) as err:
            raise InputTypeError(f"{name} must be convertible to a tensor of numbers, got {describe(value)}") from err
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise ValueError(f"{name} must be a real floating tensor, got dtype {tensor.dtype}")
    if dtype is not None or device is not None or not tensor.is_floating_point():
        device = check_device(device, "device")
        tensor = tensor.to(
            dtype=dtype or (tensor.dtype if tensor.is_floating_point() else torch.float64),
            device=device or tensor.device,
        )
    if not allow_empty and tensor.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)}); expected at least one entry")
    if torch.isnan(tensor).any():
        raise ValueError(f"{name} contains NaN ({int(torch.isnan(tensor).sum())} entries of {tensor.numel()})")
    return tensor


def check_floating(tensor: Tensor, name: str, *, what: str, allowed: Sequence[torch.dtype] = FLOAT_DTYPES) -> Tensor:
    """Refuses a tensor of `what` (probabilities, counts, ...) whose dtype is not one of `allowed`."""
    if not isinstance(tensor, Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor of {what}, got {describe(tensor)}")
    if tensor.dtype not in allowed:
        names = " or ".join(str(d).replace("torch.", "") for d in allowed)
        raise ValueError(f"{name} holds {what} and must be {names}, got dtype {tensor.dtype}")
    return tensor


def check_dims(tensor: Tensor, name: str, dims: Sequence[str], *, batch: bool = False, **sizes: int) -> None:
    """Checks the trailing dimensions of `tensor` against named `dims` (and known `sizes`).

    `batch=True` allows leading dimensions ([..., X, A]).  Sizes must be >= 1.
    """
    shape = tuple(tensor.shape)
    expected = ("..., " if batch else "") + ", ".join(dims)
    if len(shape) < len(dims) or (not batch and len(shape) != len(dims)):
        raise ValueError(f"{name} must have shape [{expected}], got {shape}")
    trailing = shape[len(shape) - len(dims) :]
    for dim, size in zip(dims, trailing, strict=True):
        if size < 1:
            raise ValueError(f"{name} is empty: dimension {dim} has size 0 in shape {shape}")
        if dim in sizes and sizes[dim] is not None and size != sizes[dim]:
            want = ", ".join(f"{d}={sizes[d]}" if d in sizes else d for d in dims)
            raise ValueError(f"{name} must have shape [{expected}] with {want}, got {shape}")


def check_logp(
    value: object, name: str, *, normalized: bool = True, dtypes: Sequence[torch.dtype] = FLOAT_DTYPES
) -> Tensor:
    """Validated log-probabilities [..., X, A]: floating, no NaN or +inf, rows normalized (logsumexp = 0)."""
    tensor = check_floating(
        as_tensor(value, name) if not isinstance(value, Tensor) else value,
        name,
        what="log-probabilities",
        allowed=dtypes,
    )
    check_dims(tensor, name, ("X", "A"), batch=True)
    if torch.isnan(tensor).any():
        raise ValueError(f"{name} contains NaN")
    if (tensor == math.inf).any():
        raise ValueError(f"{name} contains +inf; log-probabilities are at most 0")
    if normalized:
        total = torch.logsumexp(tensor.detach(), dim=-1)
        worst = float(total.abs().max())
        if not worst <= NORMALIZATION_TOL:
            hint = " (these look like probabilities; pass their log)" if bool((tensor >= 0).all()) else ""
            raise ValueError(
                f"{name} must hold log-probabilities with each row normalized (logsumexp over A = 0); "
                f"worst |logsumexp| = {worst:.3g}{hint}"
            )
    return tensor


def check_distribution(probs: Tensor, name: str, tol: float = NORMALIZATION_TOL) -> Tensor:
    """Probabilities along the last dimension: floating, finite, non-negative, summing to 1, not empty."""
    probs = check_floating(probs, name, what="probabilities")
    if probs.dim() == 0 or probs.numel() == 0:
        raise ValueError(
            f"{name} must be a non-empty distribution over its last dimension, got shape {tuple(probs.shape)}"
        )
    if not torch.isfinite(probs).all():
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    if (probs < 0).any():
        raise ValueError(f"{name} must be non-negative; minimum is {probs.min().item():.3g}")
    total = probs.sum(dim=-1)
    if not torch.allclose(total, torch.ones_like(total), atol=tol):
        worst = (total - 1).abs().max().item()
        raise ValueError(f"{name} must sum to 1 over its last dimension; worst |sum - 1| = {worst:.3g}")
    return probs


def check_prompt_dist(prompt_dist: object, name: str = "prompt_dist", *, n_prompts: int | None = None) -> Tensor:
    """D over prompts: a distribution of shape [X] (X = `n_prompts` when given)."""
    prompt_dist = as_tensor(prompt_dist, name) if not isinstance(prompt_dist, Tensor) else prompt_dist
    if n_prompts is not None and prompt_dist.dim() == 1 and prompt_dist.shape[0] != n_prompts:
        raise ValueError(
            f"{name} has {prompt_dist.shape[0]} prompts but the policy has {n_prompts}: "
            f"expected shape [X] with X={n_prompts}"
        )
    check_dims(prompt_dist, name, ("X",), X=n_prompts)
    return check_distribution(prompt_dist, name)


def check_int(value: object, name: str, *, minimum: int = 1) -> int:
    """A Python or numpy integer >= `minimum` (bools and non-integral floats refused)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{name} must be an integer >= {minimum}, got {describe(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_table_shape(n_prompts: object, n_responses: object, *, min_responses: int = 2) -> tuple[int, int]:
    """(X, A) for a constructor that draws a table over prompts and responses: X >= 1, A >= `min_responses`."""
    return check_int(n_prompts, "n_prompts"), check_int(n_responses, "n_responses", minimum=min_responses)


def check_float_dtype(
    dtype: object, name: str = "dtype", *, allowed: Sequence[torch.dtype] = FLOAT_DTYPES
) -> torch.dtype:
    """One of the floating dtypes `allowed` (by default float32 or float64, the dtypes of a world's tensors)."""
    if dtype not in allowed:
        raise ValueError(f"{name} must be {' or '.join(map(str, allowed))}, got {dtype!r}")
    return dtype


def seeded_generator(seed: object, name: str = "seed") -> torch.Generator:
    """A CPU `torch.Generator` seeded with `seed`, an integer >= 0 (`check_int`): what random constructors draw from.

    Drawn on the CPU so that a seed gives the same numbers whatever device the result is moved to.
    """
    return torch.Generator().manual_seed(check_int(seed, name, minimum=0))


def check_seed(seed: object, name: str = "seed") -> int:
    """A seed: a Python or numpy integer >= 0 (bools, floats and None refused)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputTypeError(f"{name} must be a non-negative int, got {describe(seed)}")
    if seed < 0:
        raise ValueError(f"{name} must be a non-negative int, got {seed}")
    return int(seed)


def check_bool(value: object, name: str) -> bool:
    """True or False (numpy bools too); 1, 'yes' and None are refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be True or False, got {describe(value)}")
    return bool(value)


def check_real(value: object, name: str, *, finite: bool = True) -> float:
    """A real number as a float (NaN always refused; ±inf refused with `finite`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
            value = value.item()
        else:
            raise InputTypeError(f"{name} must be a real number, got {describe(value)}")
    value = float(value)
    if math.isnan(value) or (finite and math.isinf(value)):
        raise ValueError(f"{name} must be a {'finite' if finite else 'real'} number, got {value}")
    return value


def check_unit_interval(value: object, name: str) -> float:
    """A real number in the open interval (0, 1) as a float: a failure probability δ, a confidence level."""
    value = check_real(value, name)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie in the open interval (0, 1), got {value}")
    return value


def check_at_least(value: object, name: str, minimum: float, *, finite: bool = True) -> float:
    """A real number >= `minimum` as a float (+inf allowed unless `finite`): a class size, a world constant."""
    value = check_real(value, name, finite=finite)
    if value < minimum:
        qualifier = "a finite number" if finite else "a number (inf allowed)"
        raise ValueError(f"{name} must be {qualifier} >= {minimum:g}, got {value}")
    return value


def check_callable(value: _T, name: str, what: str = "a function") -> _T:
    if not callable(value):
        raise InputTypeError(f"{name} must be {what}, got {describe(value)}")
    return value


def check_array_like(value: object, name: str) -> None:
    """A tensor, numpy array or (nested) sequence of real numbers; refuses other types and non-numbers."""
    if value is None or isinstance(value, (str, bytes, dict, set)):
        raise InputTypeError(f"{name} must be an array of numbers, got {describe(value)}")
    if isinstance(value, Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{name} must hold real numbers, got dtype {value.dtype}")
        return
    try:
        array = np.asarray(value)
        if np.iscomplexobj(array):
            raise ValueError(f"{name} must hold real numbers, got a complex array")
        array.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be an array of real numbers, got {describe(value)}") from err


def check_reward(reward: object, world: World, name: str = "reward") -> None:
    """R̂ for `world`: real, NaN-free, shape [..., X, A], on the world's device (None is allowed)."""
    if reward is None:
        return
    tensor = as_tensor(reward, name)
    check_dims(tensor, name, ("X", "A"), batch=True, X=world.n_prompts, A=world.n_responses)
    check_same_device({name: tensor, "world": world.prompt_dist})


def check_init(init: object, data: CellData) -> None:
    """Initial logits for a fit of `data`: [X, A] or [R, X, A], no NaN or +inf, on the data's device."""
    if init is None:
        return
    world = data.world
    tensor = as_tensor(init, "init")
    if tensor.dim() == 3:
        check_dims(tensor, "init", ("R", "X", "A"), X=world.n_prompts, A=world.n_responses)
        if tensor.shape[0] not in (1, data.replicates):
            raise ValueError(f"init must have R = 1 or {data.replicates} replicates, got shape {tuple(tensor.shape)}")
    else:
        check_dims(tensor, "init", ("X", "A"), X=world.n_prompts, A=world.n_responses)
    if (tensor == math.inf).any():
        raise ValueError("init contains +inf; logits must be finite or -inf")
    check_same_device({"init": tensor, "data": data.counts})


def check_finite_float(value: float, name: str) -> float:
    """`float(value)` for a scalar hyper-parameter, refusing what float() refuses and ±inf or NaN.

    More permissive than `check_real`: whatever float() converts (a one-element tensor, a bool, a
    numeric string) is accepted, as the loss and world hyper-parameters always have been.
    """
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a real number, got {value!r}") from err
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """Checks that a scalar hyper-parameter is finite and positive (or non-negative)."""
    value = check_finite_float(value, name)
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


def double_log_ratio(
    logp_chosen: Tensor, logp_rejected: Tensor, ref_logp_chosen: Tensor, ref_logp_rejected: Tensor
) -> Tensor:
    """h⁺ − h⁻ = ln[π(a⁺)π0(a⁻) / (π(a⁻)π0(a⁺))], never NaN for log-probabilities in [−inf, 0].

    Each log-ratio h = ln π/π0 is formed first, with 0/0 (a response neither policy
    can produce) read as 1 (`safe_log_ratio`), then two equal infinite log-ratios
    are read as a tie (`safe_difference`): −inf − (−inf) never reaches the loss.
    """
    h_chosen = safe_log_ratio(logp_chosen, ref_logp_chosen)
    h_rejected = safe_log_ratio(logp_rejected, ref_logp_rejected)
    return safe_difference(h_chosen, h_rejected)
