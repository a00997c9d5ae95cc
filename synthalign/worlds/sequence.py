"""Autoregressive token worlds: a known target over every sequence of at most L tokens.

A response is a token sequence over a vocabulary of V tokens, one of which is EOS.
It ends at its first EOS or after L tokens, so the response set is finite:

    𝒜 = {c₁…c_t EOS : 0 ≤ t < L} ∪ {c₁…c_L},   c_i ∈ the K = V − 1 content tokens,

with |𝒜| = Σ_{t=0}^{L} K^t.  Every policy here (pi*, pi0, mu of spec §1) is a tabular
autoregressive model: next-token logits for each prompt and each *prefix* (a content
sequence of length < L), and π(a|x) = Π_t π(a_t | x, a_<t).

Indexing.  Prefixes and sequences share one numbering, the nodes of the K-ary tree of
depth L read level by level: the node of depth t and base-K rank r (most significant
content token first) has index offset_t + r with offset_t = Σ_{s<t} K^s.  A node of depth
t < L is a prefix, and as a *sequence* it is that prefix followed by EOS; a node of depth
L is the full-length sequence without EOS.  So prefix ids are [0, P) with
P = Σ_{t<L} K^t and sequence ids are [0, N) with N = P + K^L.

`SequenceWorld.as_tabular()` is the enumerated world: a `synthalign.World` over the N
sequences, so every metric, population loss and `fit` apply to it unchanged.  The
prefix structure is kept here for sampling (`synthalign.worlds.autoregressive`) and for
policies parametrized per prefix.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import torch
from torch import Tensor

from synthalign._checks import check_finite_float, check_int, check_positive, seeded_generator
from synthalign._types import ArrayLike, DeviceLike, DTypeLike
from synthalign.worlds.policy import Policy, check_distribution
from synthalign.worlds.tabular import World, _DialedLogits, _given_tensors, _OverPrompts, _prompt_dist_or_uniform

__all__ = ["SequenceSpace", "SequenceWorld"]

# Sequence ids are int64 and the level sums are kept exact in float64.
_MAX_SEQUENCES = 2**40


@dataclasses.dataclass(frozen=True, eq=False)
class SequenceSpace:
    """The finite set of token sequences of at most `max_length` tokens, and its prefix tree.

    Attributes:
      vocab_size: V, number of tokens including EOS (≥ 2).
      max_length: L ≥ 1, the longest response (in tokens, EOS included).
      eos: the id of the end-of-sequence token, in [0, V).
    """

    vocab_size: int
    max_length: int
    eos: int = 0

    def __post_init__(self) -> None:
        # V ≥ 2: EOS and at least one content token.  Numpy integers and integral floats are stored as int.
        for name, minimum in (("vocab_size", 2), ("max_length", 1), ("eos", 0)):
            object.__setattr__(self, name, check_int(getattr(self, name), name, minimum=minimum))
        if self.eos >= self.vocab_size:
            raise ValueError(f"eos must lie in [0, vocab_size = {self.vocab_size}), got {self.eos}")
        if self.n_sequences > _MAX_SEQUENCES:
            raise ValueError(
                f"vocab_size = {self.vocab_size}, max_length = {self.max_length} give {self.n_sequences} sequences; "
                f"at most 2^40 can be enumerated"
            )

    @property
    def n_content(self) -> int:
        """K = V − 1, the number of non-EOS tokens."""
        return self.vocab_size - 1

    @functools.cached_property
    def level_sizes(self) -> tuple[int, ...]:
        """K^t for t = 0..L: the number of tree nodes of depth t."""
        return tuple(self.n_content**t for t in range(self.max_length + 1))

    @functools.cached_property
    def offsets(self) -> tuple[int, ...]:
        """offset_t = Σ_{s<t} K^s for t = 0..L+1 (offset_{L+1} = N)."""
        out = [0]
        for size in self.level_sizes:
            out.append(out[-1] + size)
        return tuple(out)

    @property
    def n_prefixes(self) -> int:
        """P = Σ_{t<L} K^t: the prefixes that still emit a token."""
        return self.offsets[self.max_length]

    @property
    def n_sequences(self) -> int:
        """N = Σ_{t≤L} K^t = |𝒜|."""
        return self.offsets[self.max_length + 1]

    def content_tokens(self, device: DeviceLike = None) -> Tensor:
        """The K non-EOS token ids in rank order, int64 [K]."""
        ids = torch.arange(self.vocab_size, device=device)
        return ids[ids != self.eos]

    def content_rank(self, device: DeviceLike = None) -> Tensor:
        """Inverse of `content_tokens`: rank of each token id, [V] (EOS maps to 0, never used)."""
        rank = torch.zeros(self.vocab_size, dtype=torch.int64, device=device)
        rank[self.content_tokens(device)] = torch.arange(self.n_content, device=device)
        return rank

    # ------------------------------------------------------------------ sequence log-probabilities

    def sequence_logp(self, prefix_logp: Tensor) -> Tensor:
        """ln π(a|x) for every sequence a, [..., X, N], from next-token log-probs [..., X, P, V].

            ln π(c₁…c_t EOS) = Σ_{s<t} ln π(c_{s+1} | c_≤s) + ln π(EOS | c_≤t),
            ln π(c₁…c_L)     = Σ_{s<L} ln π(c_{s+1} | c_≤s).

        One pass per depth (a loop over t ≤ L, each level a batched tensor op); memory
        O(N) per prompt, differentiable in `prefix_logp`.
        """
        self._check_prefix_table(prefix_logp, "prefix_logp")
        content = self.content_tokens(prefix_logp.device)
        # ln π(empty prefix) = 0, shape [..., X, 1]
        node_logp = torch.zeros(prefix_logp.shape[:-2] + (1,), dtype=prefix_logp.dtype, device=prefix_logp.device)
        pieces = []
        for depth in range(self.max_length):
            start, stop = self.offsets[depth], self.offsets[depth + 1]
            level = prefix_logp[..., start:stop, :]  # [..., X, K^t, V]
            pieces.append(node_logp + level[..., self.eos])
            children = node_logp.unsqueeze(-1) + level.index_select(-1, content)  # [..., X, K^t, K]
            node_logp = children.flatten(-2)
        pieces.append(node_logp)
        return torch.cat(pieces, dim=-1)

    def _check_prefix_table(self, table: Tensor, name: str) -> None:
        if table.dim() < 3 or table.shape[-2:] != (self.n_prefixes, self.vocab_size):
            raise ValueError(
                f"{name} must have shape [..., X, P = {self.n_prefixes}, V = {self.vocab_size}], "
                f"got {tuple(table.shape)}"
            )

    # ------------------------------------------------------------------ ids <-> tokens

    def decode(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Tokens [..., L] (padded with EOS after the end) and lengths [...] of sequence ids.

        The length counts the EOS token: c₁…c_t EOS has length t + 1, c₁…c_L has length L.
        """
        ids = _check_ids(ids, self.n_sequences, "ids")
        offsets = torch.tensor(self.offsets, dtype=torch.int64, device=ids.device)
        depth = torch.searchsorted(offsets, ids.contiguous(), right=True) - 1  # node depth t
        rank = ids - offsets[depth]
        K, L = self.n_content, self.max_length
        positions = torch.arange(L, device=ids.device)
        # digit s of a depth-t rank (most significant first) is rank // K^(t-1-s) mod K.
        exponent = (depth.unsqueeze(-1) - 1 - positions).clamp_min(0)
        digits = torch.div(rank.unsqueeze(-1), K**exponent, rounding_mode="floor") % K
        content = self.content_tokens(ids.device)[digits]
        inside = positions < depth.unsqueeze(-1)
        tokens = torch.where(inside, content, torch.full_like(content, self.eos))
        lengths = torch.where(depth < L, depth + 1, depth)
        return tokens, lengths

    def encode(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Sequence ids of token sequences [..., L]; a sequence ends at its first EOS (or at L).

        `lengths`, if given, must agree with the first EOS; it is checked, not used.
        """
        if tokens.dim() < 1 or tokens.shape[-1] != self.max_length:
            raise ValueError(f"tokens must have shape [..., L = {self.max_length}], got {tuple(tokens.shape)}")
        if tokens.dtype not in (torch.int64, torch.int32) or (tokens < 0).any() or (tokens >= self.vocab_size).any():
            raise ValueError(f"tokens must be integer ids in [0, {self.vocab_size})")
        tokens = tokens.to(torch.int64)
        is_eos = tokens == self.eos
        alive = torch.cumprod((~is_eos).to(torch.int64), dim=-1)  # 1 before the first EOS
        depth = alive.sum(dim=-1)
        if lengths is not None:
            expected = torch.where(depth < self.max_length, depth + 1, depth)
            if not torch.equal(lengths.to(torch.int64), expected):
                raise ValueError("lengths do not match the first EOS of tokens")
        K = self.n_content
        digits = self.content_rank(tokens.device)[tokens] * alive
        rank = torch.zeros_like(depth)
        for position in range(self.max_length):
            rank = torch.where(alive[..., position] > 0, rank * K + digits[..., position], rank)
        offsets = torch.tensor(self.offsets, dtype=torch.int64, device=tokens.device)
        return offsets[depth] + rank

    def prefix_ids(self, tokens: Tensor) -> Tensor:
        """Prefix id of a_<t at each position t, [..., L]; positions after the end hold 0 (mask them)."""
        K = self.n_content
        rank_of = self.content_rank(tokens.device)
        alive = torch.ones(tokens.shape[:-1], dtype=torch.bool, device=tokens.device)
        rank = torch.zeros(tokens.shape[:-1], dtype=torch.int64, device=tokens.device)
        out = []
        for position in range(self.max_length):
            out.append(torch.where(alive, self.offsets[position] + rank, torch.zeros_like(rank)))
            token = tokens[..., position]
            alive = alive & (token != self.eos)
            rank = rank * K + rank_of[token]
        return torch.stack(out, dim=-1)

    def token_mask(self, lengths: Tensor) -> Tensor:
        """True at the positions t < length that carry a token of the sequence, [..., L]."""
        return torch.arange(self.max_length, device=lengths.device) < lengths.unsqueeze(-1)

    def enumerate(self, chunk_size: int = 2**18, device: DeviceLike = None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Yields (ids, tokens, lengths) for all N sequences in id order, `chunk_size` at a time."""
        chunk_size = check_int(chunk_size, "chunk_size")
        for start in range(0, self.n_sequences, chunk_size):
            ids = torch.arange(start, min(start + chunk_size, self.n_sequences), device=device)
            tokens, lengths = self.decode(ids)
            yield ids, tokens, lengths

    def __repr__(self) -> str:
        return f"SequenceSpace(V={self.vocab_size}, L={self.max_length}, eos={self.eos}, N={self.n_sequences})"


def _check_ids(ids, n: int, name: str) -> Tensor:
    if not isinstance(ids, Tensor) or ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} must be an integer tensor of sequence ids")
    if ids.numel() and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"{name} must lie in [0, {n})")
    return ids.to(torch.int64)


def _normalize_prefix_logits(logits: Tensor, name: str) -> Tensor:
    if (logits == float("inf")).any():
        raise ValueError(f"{name} contains +inf")
    if not torch.isfinite(logits).any(dim=-1).all():
        raise ValueError(f"{name}: every prefix needs at least one token of finite logit (a next-token distribution)")
    return torch.log_softmax(logits, dim=-1)


@dataclasses.dataclass(frozen=True, eq=False)
class SequenceWorld(_OverPrompts):
    """A world whose responses are token sequences, with pi*, pi0, mu as tabular autoregressive models.

    Attributes:
      space: the `SequenceSpace` (V, L, EOS).
      prompt_dist: D over the X prompts, [X].
      target, reference, behavior: next-token log-probabilities of pi*, pi0, mu, each
        [X, P, V] and normalized over the last dimension (per prefix).
      gamma: the preference tilt of spec §1, > 0; pairs of sequences are labelled by
        P(a ≻ b | x) = σ(γ ln[π*(a|x)/π*(b|x)]) over whole sequences.
    """

    space: SequenceSpace
    prompt_dist: Tensor
    target: Tensor
    reference: Tensor
    behavior: Tensor
    gamma: float

    def __post_init__(self) -> None:
        if not isinstance(self.space, SequenceSpace):
            raise ValueError(f"space must be a SequenceSpace, got {type(self.space).__name__}")
        check_positive(self.gamma, "gamma")
        object.__setattr__(self, "gamma", float(self.gamma))
        if not isinstance(self.prompt_dist, Tensor) or self.prompt_dist.dim() != 1:
            raise ValueError("prompt_dist must be a 1-D tensor of shape [X]")
        check_distribution(self.prompt_dist, "prompt_dist")
        shape = (self.prompt_dist.shape[0], self.space.n_prefixes, self.space.vocab_size)
        for field in ("target", "reference", "behavior"):
            table = getattr(self, field)
            if not isinstance(table, Tensor) or tuple(table.shape) != shape:
                got = tuple(table.shape) if isinstance(table, Tensor) else type(table).__name__
                raise ValueError(f"{field} must be next-token log-probs of shape [X, P, V] = {shape}, got {got}")
            if torch.isnan(table).any() or (table == float("inf")).any():
                raise ValueError(f"{field} contains NaN or +inf")
            total = torch.logsumexp(table, dim=-1)
            if not torch.allclose(total, torch.zeros_like(total), atol=1e-6):
                raise ValueError(f"{field}: each prefix's next-token distribution must be normalized")

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_tensors(
        cls,
        *,
        vocab_size: int,
        max_length: int,
        target: ArrayLike,
        reference: ArrayLike,
        behavior: ArrayLike | None = None,
        prompt_dist: ArrayLike | None = None,
        gamma: float,
        eos: int = 0,
        dtype: torch.dtype = torch.float64,
        device: DeviceLike = None,
    ) -> SequenceWorld:
        """A sequence world from per-prefix next-token logits [X, P, V] (normalized by softmax).

        `behavior` defaults to the reference; `prompt_dist` to uniform.  -inf logits give a
        token probability zero (every prefix needs one finite logit).
        """
        space = SequenceSpace(vocab_size=vocab_size, max_length=max_length, eos=eos)
        tables = {}
        given = _given_tensors(dtype, device, target=target, reference=reference, behavior=behavior)
        for name, tensor in given.items():
            space._check_prefix_table(tensor, name)
            if tensor.dim() != 3:
                raise ValueError(f"{name} must have shape [X, P, V], got {tuple(tensor.shape)}")
            tables[name] = _normalize_prefix_logits(tensor, name)
        tables.setdefault("behavior", tables["reference"])
        prompt_dist = _prompt_dist_or_uniform(prompt_dist, tables["target"].shape[0], dtype, device)
        return cls(space=space, prompt_dist=prompt_dist, gamma=gamma, **tables)

    @classmethod
    def random(
        cls,
        vocab_size: int = 4,
        max_length: int = 5,
        n_prompts: int = 3,
        *,
        gamma: float = 0.5,
        logit_scale: float = 1.0,
        reference_mix: float = 1.0,
        behavior_mix: float | None = None,
        behavior_tilt: float = 0.0,
        eos_bias: float = 0.0,
        eos: int = 0,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        device: DeviceLike = None,
    ) -> SequenceWorld:
        """A random sequence world with dialed distances, per prefix, as `World.random` per prompt.

        Next-token logits of pi* are N(0, logit_scale²) for every (prompt, prefix, token);
        pi0's are (1 − reference_mix)·θ* + reference_mix·ξ (ξ fresh noise), mu's likewise
        with `behavior_mix` (None: mu = pi0) shifted by −behavior_tilt·θ*.  `eos_bias` is
        added to every EOS logit of all three (positive: shorter sequences).  D is uniform.
        """
        dials = _DialedLogits(reference_mix, behavior_mix, logit_scale, behavior_tilt)
        n_prompts = check_int(n_prompts, "n_prompts")
        eos_bias = check_finite_float(eos_bias, "eos_bias")
        space = SequenceSpace(vocab_size=vocab_size, max_length=max_length, eos=eos)
        generator = seeded_generator(seed)
        logits = dials.draw((n_prompts, space.n_prefixes, vocab_size), generator)
        for table in logits.values():
            table[..., eos] += eos_bias
        return cls.from_tensors(
            vocab_size=vocab_size, max_length=max_length, **logits, gamma=gamma, eos=eos, dtype=dtype, device=device
        )

    # ------------------------------------------------------------------ accessors

    @property
    def n_sequences(self) -> int:
        return self.space.n_sequences

    def sequence_policy(self, field: str) -> Policy:
        """The `Policy` over the N enumerated sequences of pi* ("target"), pi0 or mu, [X, N]."""
        if field not in ("target", "reference", "behavior"):
            raise ValueError(f"field must be 'target', 'reference' or 'behavior', got {field!r}")
        return Policy(self.space.sequence_logp(getattr(self, field)), self.prompt_dist)

    def as_tabular(self) -> World:
        """The enumerated world: a `World` over the N sequences with the same D, pi*, pi0, mu, gamma.

        Computed once and cached (the world is immutable).
        """
        return self._tabular

    @functools.cached_property
    def _tabular(self) -> World:
        return World(
            prompt_dist=self.prompt_dist,
            target=self.sequence_policy("target"),
            reference=self.sequence_policy("reference"),
            behavior=self.sequence_policy("behavior"),
            gamma=self.gamma,
        )

    def to(self, device: DeviceLike = None, dtype: DTypeLike = None) -> SequenceWorld:
        def move(t):
            return t.to(device=device, dtype=dtype)

        return SequenceWorld(
            self.space, move(self.prompt_dist), move(self.target), move(self.reference), move(self.behavior), self.gamma
        )

    def __repr__(self) -> str:
        s = self.space
        sizes = f"V={s.vocab_size}, L={s.max_length}, N={s.n_sequences}"
        return f"SequenceWorld(X={self.n_prompts}, {sizes}, gamma={self.gamma})"
