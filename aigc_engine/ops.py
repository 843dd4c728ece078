"""The Python face of the native kernels in aigc_engine._C.

Each function documents its shapes and ranges, allocates its output, and hands numpy
buffers to C++ without copying (the extension checks dtype, contiguity and shape and
raises ValueError naming the argument). The GIL is released inside every kernel.
"""

from __future__ import annotations

import math
import secrets
from typing import NamedTuple

import numpy as np
import scipy_openblas32  # noqa: F401  (loads the OpenBLAS that _C links to)

try:
    from . import _C
except ImportError as error:  # e.g. Python started inside the source folder, which has no _C
    raise ImportError(f"aigc_engine._C, the native extension, is not built beside {__file__}: "
                      "install with `pip install .` and run from outside the source folder") from error
from .errors import AigcError

MAX_SEED = 2**64 - 1
DEVICES = ("cpu", "cuda")


def check_seed(seed: int, name: str = "seed") -> int:
    """A seed is an integer in [0, 2**64 - 1].

    The one seed rule of every front end (Python, `aigc`, HTTP): a request without a seed
    gets `fresh_seed()`; sample i of a request for n texts uses `sample_seed(seed, i)`, and
    image i of a request is latent sample i of the seed itself (see `sample_latent`).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise AigcError(f"{name}: expected an integer in [0, 2**64 - 1], got {seed!r}")
    return int(seed)


def fresh_seed() -> int:
    """A new seed: 64 random bits from the OS, any value of [0, 2**64 - 1]."""
    return secrets.randbits(64)


def sample_seed(seed: int, i: int) -> int:
    """The seed of text sample i of a request seeded `seed`: (seed + i) mod 2**64, so
    2**64 - 1 is as good a seed as any and sample i never depends on n."""
    return (check_seed(seed) + i) % (MAX_SEED + 1)


def check_truncation(truncation: float | None) -> float:
    """None means off (+inf to the kernel); otherwise a finite number > 0."""
    if truncation is None:
        return math.inf
    if isinstance(truncation, bool) or not isinstance(truncation, (int, float, np.floating)):
        raise AigcError(f"truncation: expected a number > 0 or None, got {truncation!r}")
    if not truncation > 0:
        raise AigcError(f"truncation: expected > 0 (or None for off), got {truncation}")
    return float(truncation)


def sample_latent(n: int, dim: int, seed: int, *, first_index: int = 0, truncation: float | None = None,
                  device: str = "cpu", out: np.ndarray | None = None) -> np.ndarray:
    """Standard-normal latents: float32 (n, dim).

    Row r is sample number ``first_index + r`` of ``seed``: a pure function of
    (seed, sample index, element), so sample i is the same whatever n or chunking.
    ``truncation`` > 0 redraws every element with |z| > truncation (the truncation
    trick); None draws from the full normal.
    """
    if out is None:
        out = np.empty((n, dim), dtype=np.float32)
    _C.sample_latent(out, check_seed(seed), check_seed(first_index, "first_index"),
                     check_truncation(truncation), device)
    return out


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation: float32 (len(t), dim) from a and b, float32 (dim,).

    t = 0 gives a, t = 1 gives b; in between the path follows the great circle, which
    keeps the norm typical of a Gaussian latent (a straight line would shrink it).
    Array-likes (lists, float64 arrays) are converted; anything else raises AigcError
    naming the argument.
    """
    def vector(name: str, value) -> np.ndarray:
        try:
            array = np.ascontiguousarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise AigcError(f"{name}: expected a 1-D array of numbers, got {type(value).__name__}") from None
        if array.ndim != 1:
            raise AigcError(f"{name}: expected a 1-D array of numbers, got shape {array.shape}")
        return array
    a, b, t = vector("a", a), vector("b", b), vector("t", t)
    if a.shape != b.shape or a.shape[0] == 0:
        raise AigcError(f"a, b: expected two vectors of the same non-zero length, got {a.shape[0]} and {b.shape[0]}")
    out = np.empty((t.shape[0], a.shape[0]), dtype=np.float32)
    _C.slerp(a, b, t, out)
    return out


def images_to_uint8(images: np.ndarray, *, device: str = "cpu", out: np.ndarray | None = None) -> np.ndarray:
    """Generator output float32 (n, C, H, W) in [-1, 1] → uint8 (n, H, W, C).

    Pixel = clamp(round((x + 1) * 127.5), 0, 255). A non-finite value means the model
    is broken: ValueError, rather than an image with silently wrong pixels.
    """
    if out is None:
        # A wrong rank gets the extension's message, which names `images`.
        n, c, h, w = images.shape if getattr(images, "ndim", 0) == 4 else (0, 0, 0, 0)
        out = np.empty((n, h, w, c), dtype=np.uint8)
    nonfinite = _C.images_to_uint8(images, out, device)
    if nonfinite:
        raise AigcError(f"images: the model produced {nonfinite} non-finite (NaN or inf) pixel values")
    return out


def cuda_available() -> bool:
    """True when this build has CUDA kernels and a CUDA device is visible."""
    return bool(_C.cuda_compiled) and _C.cuda_device_count() > 0


def require_cuda(what: str) -> None:
    """AigcError naming `what` and why it cannot run on CUDA here (the build, or no device)."""
    if not _C.cuda_compiled:
        raise AigcError(f"device='cuda': {what} needs CUDA, and this build of aigc_engine has no CUDA support "
                        "(build it where nvcc is found, or with AIGC_CUDA=ON)")
    if _C.cuda_device_count() == 0:
        raise AigcError(f"device='cuda': {what} needs a CUDA device, and none is visible")


class SampleResult(NamedTuple):
    """What ops.sample returns, one entry per row."""

    tokens: np.ndarray        # int64 (batch,); -1 for a row in errors
    logprobs: np.ndarray      # float32 (batch,) raw log-softmax at the chosen token (NaN: in errors)
    top_ids: np.ndarray       # int64 (batch, n) the n most likely tokens, descending (-1: in errors)
    top_logprobs: np.ndarray  # float32 (batch, n) their raw log-probabilities (NaN: in errors)
    errors: dict[int, str]    # row -> why it was not sampled, e.g. "logits: row 3 has +inf"; empty: none failed


def _per_row(name: str, value, batch: int, dtype) -> np.ndarray:
    """A number (Python or numpy) broadcast to every row; arrays pass through to the
    extension's checks, which refuse any dtype but `dtype`. An integer `dtype` takes only
    integers in its range: 1.5 is refused, not truncated to the seed or top_k 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return value
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if not isinstance(value, (int, np.integer)):
            raise AigcError(f"{name}: expected integers, got {value!r}")
        if not info.min <= int(value) <= info.max:
            raise AigcError(f"{name}: expected integers in [{info.min}, {info.max}], got {value!r}")
    return np.full(batch, value, dtype=dtype)


class Sampler:
    """The batched sampler prepared for a batch of rows (see `sample` for what it computes):
    every per-row parameter is checked and copied once and each row's history counted, then
    each call — one per decode step — checks only the logits, adds each row's sampled token
    to its history as a generated one (the next call's penalties count it) and moves each
    row's step on by one. The arrays it returns are its own, overwritten by the next call.

    ``batch`` rows of ``vocab`` logits; the keyword arguments are `sample`'s (``steps``: the
    first call's, default 0), less the per-step ``logits``; ``logprobs=False`` leaves the
    returned ``logprobs`` NaN and saves the log-sum-exp over each row's raw logits (unless
    ``num_logprobs`` > 0); ``overwrite_logits=True`` hands every call's logits over as
    scratch (they must be writable): with no log-probabilities asked for, bias and
    penalties then edit them in place rather than in copies. ``device="cuda"`` samples on the
    GPU (see `sample`).

    A row that cannot be sampled (NaN or +inf logits, also +inf made by a penalty; every
    token at -inf) fails alone: the call returns the others' tokens, token -1 for it and
    its message in ``errors``, and its history and step stay where they were (its next
    call draws what a fresh sampler at that step would). ``errors`` is the sampler's one
    empty dict when every row sampled: read it, do not fill it.
    """

    def __init__(self, batch: int, vocab: int, *, seeds: np.ndarray, steps: np.ndarray | int = 0,
                 temperature: np.ndarray, top_k: np.ndarray, top_p: np.ndarray, min_p: np.ndarray,
                 repetition_penalty: np.ndarray, presence_penalty: np.ndarray, frequency_penalty: np.ndarray,
                 history: np.ndarray | None = None, history_offsets: np.ndarray | None = None,
                 prompt_lens: np.ndarray | None = None,
                 logit_bias: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, num_logprobs: int = 0,
                 logprobs: bool = True, overwrite_logits: bool = False, device: str = "cpu"):
        if isinstance(num_logprobs, bool) or not isinstance(num_logprobs, (int, np.integer)):
            raise AigcError(f"num_logprobs: expected an integer 0..{_C.max_logprobs}, got {num_logprobs!r}")
        for name, flag in (("logprobs", logprobs), ("overwrite_logits", overwrite_logits)):
            if not isinstance(flag, bool):
                raise AigcError(f"{name}: expected True or False, got {flag!r}")
        bias_ids, bias_values, bias_offsets = None, None, None
        if logit_bias is not None:
            if not isinstance(logit_bias, tuple) or len(logit_bias) != 3:
                raise AigcError("logit_bias: expected (ids int64 (m,), values float32 (m,), offsets int64 (batch + 1,))")
            bias_ids, bias_values, bias_offsets = logit_bias
        self._native = _C.Sampler(
            batch, vocab, _per_row("seeds", seeds, batch, np.uint64), _per_row("steps", steps, batch, np.uint64),
            _per_row("temperature", temperature, batch, np.float32), _per_row("top_k", top_k, batch, np.int32),
            _per_row("top_p", top_p, batch, np.float32), _per_row("min_p", min_p, batch, np.float32),
            _per_row("repetition_penalty", repetition_penalty, batch, np.float32),
            _per_row("presence_penalty", presence_penalty, batch, np.float32),
            _per_row("frequency_penalty", frequency_penalty, batch, np.float32), history, history_offsets,
            prompt_lens, bias_ids, bias_values, bias_offsets, int(num_logprobs), logprobs, overwrite_logits, device)
        self._result = SampleResult(*self._native.outputs)

    def __call__(self, logits: np.ndarray) -> SampleResult:
        """``logits`` as in `sample`."""
        errors = self._native.sample(logits)
        # The common case allocates nothing: the same result, the same empty dict.
        return self._result._replace(errors=errors) if errors else self._result


def sample(logits: np.ndarray, *, seeds: np.ndarray, steps: np.ndarray, temperature: np.ndarray,
           top_k: np.ndarray, top_p: np.ndarray, min_p: np.ndarray, repetition_penalty: np.ndarray,
           presence_penalty: np.ndarray, frequency_penalty: np.ndarray,
           history: np.ndarray | None = None, history_offsets: np.ndarray | None = None,
           prompt_lens: np.ndarray | None = None,
           logit_bias: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
           num_logprobs: int = 0, device: str = "cpu") -> SampleResult:
    """The next token of every row of ``logits``, float32 (batch, vocab) C-contiguous (not modified).

    Per-row parameters, each an array of length batch (a Python number is broadcast):

    - ``seeds``, ``steps`` uint64: the row's draw is one uniform from Philox4x64-10 keyed
      (seed, sampler stream) at counter (step, 0, 0, 0): a row's token depends only on its
      own logits, parameters, seed and step, never on the rest of the batch;
    - ``temperature`` float32 >= 0, 0 = greedy (argmax after bias and penalties, ties to the
      lowest id); ``top_k`` int32 >= 0, 0 = off (> vocab means vocab); ``top_p`` float32 in
      (0, 1], 1 = off (computed over the top_k survivors); ``min_p`` float32 in [0, 1], 0 = off;
    - ``repetition_penalty`` float32 > 0, 1 = off (HF: logit < 0 -> logit * p, else logit / p,
      over every distinct history token); ``presence_penalty`` / ``frequency_penalty`` float32,
      0 = off (OpenAI: logit -= frequency * count + presence, over generated tokens only).

    ``history`` int64 (total,): each row's prompt then generated tokens, rows concatenated,
    ``history_offsets`` int64 (batch + 1,) CSR offsets into it, ``prompt_lens`` int64 (batch,)
    how many of a row's history tokens are prompt (None: none are, all count as generated).
    ``logit_bias``: (ids int64 (m,), values float32 (m,), offsets int64 (batch + 1,)), added
    before the penalties; -inf bans a token.

    Order: bias -> penalties -> greedy, or p = exp((logit - max) / temperature) -> top_k ->
    top_p (the smallest most-probable set with mass >= top_p) -> min_p (drop p < min_p * max p)
    -> inverse CDF of the kept mass, tokens by descending probability (ties: lower id first).
    ``logprobs`` is the log-softmax of the raw logits (before bias, penalties and temperature)
    at the chosen token; ``top_ids`` / ``top_logprobs`` the ``num_logprobs`` (0..20) largest.
    NaN or +inf logits, or a row of all -inf, raise ValueError naming the row (the first
    that failed; `Sampler` returns every row's instead).

    ``device="cuda"`` runs the same sampler on the GPU (a CUDA build with a visible device;
    otherwise ValueError saying which is missing): the same tokens, errors and top ids as
    the CPU build this process would use (AIGC_FORCE_ISA included), whose float arithmetic
    it reproduces; log-probabilities within a few float32 ulp of the CPU's.
    """
    if getattr(logits, "ndim", None) != 2:
        shown = np.asarray(logits)
        raise AigcError(f"logits: expected C-contiguous float32 (batch, vocab), got {shown.dtype} {shown.shape}")
    batch, vocab = logits.shape  # a wrong dtype or layout gets the extension's message
    sampler = Sampler(batch, vocab, seeds=seeds, steps=steps, temperature=temperature, top_k=top_k, top_p=top_p,
                      min_p=min_p, repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                      frequency_penalty=frequency_penalty, history=history, history_offsets=history_offsets,
                      prompt_lens=prompt_lens, logit_bias=logit_bias, num_logprobs=num_logprobs, device=device)
    result = sampler(logits)
    if result.errors:
        raise AigcError(result.errors[min(result.errors)])
    return result


def to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 → bf16 bits (uint16), rounded to nearest even; NaN stays a (quiet) NaN."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def from_bf16(bits: np.ndarray) -> np.ndarray:
    """bf16 bits (uint16) → float32, exactly."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def _scale(scale: float | None) -> float:
    return math.nan if scale is None else float(scale)


def attention_prefill(q: np.ndarray, k: np.ndarray, v: np.ndarray, cu_seqlens: np.ndarray, *,
                      scale: float | None = None, device: str = "cpu", out: np.ndarray | None = None) -> np.ndarray:
    """Causal attention over packed variable-length sequences: float32 (tokens, n_heads, head_dim).

    q float32 (tokens, n_heads, head_dim); k, v (tokens, n_kv_heads, head_dim), float32 or bf16
    bits as uint16 (see to_bf16), n_kv_heads dividing n_heads (grouped-query: head h reads kv
    head h // (n_heads // n_kv_heads)); cu_seqlens int32 (n_seqs + 1,) from 0 to tokens: query
    i of a sequence attends to keys 0..i of the same sequence. scale defaults to
    1 / sqrt(head_dim). Computed in tiles with an online softmax, fp32 accumulation.
    ``device="cuda"`` runs the CUDA kernel on copies of the arrays (the same checks first).
    """
    if out is None:
        out = np.empty(q.shape if getattr(q, "ndim", 0) == 3 else (0, 0, 0), np.float32)
    _C.attention_prefill(q, k, v, cu_seqlens, _scale(scale), out, device)
    return out


def attention_decode(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, block_table: np.ndarray,
                     context_lens: np.ndarray, *, scale: float | None = None, device: str = "cpu",
                     out: np.ndarray | None = None) -> np.ndarray:
    """One query per sequence against a paged KV cache: float32 (batch, n_heads, head_dim).

    q float32 (batch, n_heads, head_dim); k_cache, v_cache (num_blocks, block_size, n_kv_heads,
    head_dim) float32 or bf16 bits (uint16); block_table int32 (batch, max_blocks): token t of
    sequence b is slot t % block_size of block block_table[b, t // block_size]; context_lens
    int32 (batch,), 1 .. max_blocks * block_size, the new token's K/V already in the cache.
    ``device="cuda"`` runs the CUDA kernel (long contexts split across the GPU, then combined)
    on copies of the arrays, the same checks first.
    """
    if out is None:
        out = np.empty(q.shape if getattr(q, "ndim", 0) == 3 else (0, 0, 0), np.float32)
    _C.attention_decode(q, k_cache, v_cache, block_table, context_lens, _scale(scale), out, device)
    return out


# --- the GPT block's kernels: layer norm, GELU, the projections -------------------------

def _float32_array(name: str, value, shape: str) -> np.ndarray:
    """value itself when it is a C-contiguous float32 ndarray; else AigcError naming it."""
    if not isinstance(value, np.ndarray) or value.dtype != np.float32 or not value.flags.c_contiguous:
        got = (f"{'' if value.flags.c_contiguous else 'non-contiguous '}{value.dtype} {value.shape}"
               if isinstance(value, np.ndarray) else type(value).__name__)
        raise AigcError(f"{name}: expected C-contiguous float32 {shape}, got {got}")
    return value


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not value > 0:
        raise AigcError(f"{name}: expected a number > 0, got {value!r}")
    return float(value)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, *, residual: np.ndarray | None = None,
               eps: float = 1e-5, out: np.ndarray | None = None) -> np.ndarray:
    """Layer norm over the last axis, with the GPT block's residual add fused in:
    float32 (rows, dim).

    x float32 (rows, dim), C-contiguous, dim >= 1; weight, bias float32 (dim,); eps > 0
    (GPT-2: 1e-5). y = (h - mean(h)) / sqrt(var(h) + eps) * weight + bias, row by row, with
    h = x, or h = x + residual when ``residual`` float32 (rows, dim) is given: then x is
    updated in place to x + residual (the decoder's residual stream; x must be writable,
    pass a copy to keep it). Sums in float32 (relative error ~dim * 2^-24); any finite
    input gives a finite output, a constant row gives bias.
    ``out`` float32 (rows, dim) to write into, may be x itself; allocated when None.
    """
    x = _float32_array("x", x, "(rows, dim)")
    if x.ndim != 2 or x.shape[1] < 1:
        raise AigcError(f"x: expected C-contiguous float32 (rows, dim) with dim >= 1, got shape {x.shape}")
    eps = _positive("eps", eps)
    if residual is not None:
        residual = _float32_array("residual", residual, str(x.shape))
        if residual.shape != x.shape:
            raise AigcError(f"residual: expected C-contiguous float32 {x.shape}, got float32 {residual.shape}")
        if not x.flags.writeable:
            raise AigcError("x: array is read-only (with a residual, x + residual is written into x)")
    if out is None:
        out = np.empty_like(x)
    else:
        out = _float32_array("out", out, str(x.shape))
        if out.shape != x.shape:
            raise AigcError(f"out: expected C-contiguous float32 {x.shape}, got float32 {out.shape}")
    _C.add_layer_norm(x, residual, weight, bias, out, eps)
    return out


def gelu(x: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """GPT-2's GELU ("gelu_new", the tanh approximation), element-wise: float32, x's shape.

    y = 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))), any shape, any finite
    float32 (y is exactly 0 below about -10 and x above about 10; relative error ~1e-6).
    x float32, C-contiguous; ``out`` float32 of x's shape, C-contiguous, may be x itself
    (in place); allocated when None.
    """
    x = _float32_array("x", x, "(any shape)")
    if out is None:
        out = x.copy()
    else:
        out = _float32_array("out", out, str(x.shape))
        if out.shape != x.shape:
            raise AigcError(f"out: expected C-contiguous float32 {x.shape}, got float32 {out.shape}")
        if out is not x:
            np.copyto(out, x)
    _C.gelu_tanh(out.reshape(-1))
    return out


WEIGHT_DTYPES = ("float32", "bfloat16", "int8")


class Linear:
    """A projection y = x · weight + bias with its weights stored in ``dtype``, packed once.

    weight float32 (k, n), k, n >= 1 (GPT-2's Conv1D layout: in_features × out_features);
    bias float32 (n,) or None; ``dtype``:

    - "float32": exact weights; y within float32 accumulation error (~k * 2^-24 relative);
    - "bfloat16": each weight rounded to bfloat16 (nearest even; 2^-9 relative);
    - "int8": symmetric per output column, the largest |w| of a column mapping to 127;
      ``forward`` then quantises x per row the same way (round(x * 127 / max|x|)) and sums
      the integer products exactly, so y is the same bits on every ISA.

    Whatever the dtype, a row of y depends only on its own row of x (never on m or the
    other rows), unless ``forward(..., blas=True)``.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None = None, dtype: str = "float32"):
        if dtype not in WEIGHT_DTYPES:
            raise AigcError(f"dtype: expected 'float32', 'bfloat16' or 'int8', got {dtype!r}")
        weight = _float32_array("weight", weight, "(k, n)")
        if weight.ndim != 2 or 0 in weight.shape:
            raise AigcError(f"weight: expected C-contiguous float32 (k, n) with k, n >= 1, got shape {weight.shape}")
        self._native = _C.Linear(weight, bias, dtype)

    @property
    def k(self) -> int:
        """Input features (x's columns)."""
        return self._native.k

    @property
    def n(self) -> int:
        """Output features (y's columns)."""
        return self._native.n

    @property
    def dtype(self) -> str:
        """The weights' storage dtype: "float32", "bfloat16" or "int8"."""
        return self._native.dtype

    def forward(self, x: np.ndarray, *, out: np.ndarray | None = None, blas: bool = False) -> np.ndarray:
        """y float32 (m, n) for x float32 (m, k), C-contiguous, m >= 0.

        ``blas=True`` (float32 weights only; ignored for the others) multiplies with
        OpenBLAS: faster for large m, but a row may round differently for a different m.
        ``out`` float32 (m, n) to write into; allocated when None.
        """
        if not isinstance(blas, bool):
            raise AigcError(f"blas: expected True or False, got {blas!r}")
        x = _float32_array("x", x, f"(m, {self.k})")
        if out is None:
            out = np.empty((x.shape[0] if x.ndim == 2 else 0, self.n), np.float32)
        self._native.forward(x, out, blas=blas)
        return out

    __call__ = forward
