"""Plain numpy references for the native kernels, written for clarity, not speed.

The latent reference draws its raw bits from numpy's own Philox4x64-10 bit generator,
an implementation independent of csrc/aigc/rng.h.
"""

import math

import numpy as np

LATENT_STREAM = 0x4C4154454E54  # "LATENT", the key's second word in csrc/aigc/rng.h
MAX_RESAMPLE_ROUNDS = 1024


def philox_block(counter: tuple[int, int, int, int], key: tuple[int, int]) -> np.ndarray:
    """The four 64-bit words Philox4x64-10 gives for one counter and key."""
    value = sum(c << (64 * i) for i, c in enumerate(counter))
    # numpy increments its counter before each block, so start one below.
    generator = np.random.Philox(counter=(value - 1) % (1 << 256), key=np.array(key, dtype=np.uint64))
    return generator.random_raw(4)


def _uniform(word) -> float:
    return (int(word) >> 11) / 2.0**53


def latent_element(seed: int, index: int, j: int, truncation: float = math.inf) -> np.float32:
    lane = j % 4
    for round_ in range(MAX_RESAMPLE_ROUNDS + 1):
        words = philox_block((j // 4, index, round_, 0), (seed, LATENT_STREAM))
        if round_ == MAX_RESAMPLE_ROUNDS:
            return np.float32(truncation * (2.0 * _uniform(words[lane]) - 1.0))
        radius_word, angle_word = (words[0], words[1]) if lane < 2 else (words[2], words[3])
        radius = math.sqrt(-2.0 * math.log(1.0 - _uniform(radius_word)))
        angle = 2.0 * math.pi * _uniform(angle_word)
        z = np.float32(radius * (math.cos(angle) if lane % 2 == 0 else math.sin(angle)))
        if abs(z) <= truncation:
            return z
    raise AssertionError("unreachable")


def latents(seed: int, n: int, dim: int, first_index: int = 0, truncation: float = math.inf) -> np.ndarray:
    return np.array([[latent_element(seed, first_index + i, j, truncation) for j in range(dim)]
                     for i in range(n)], dtype=np.float32)


def images_to_uint8(images: np.ndarray) -> np.ndarray:
    """NCHW float32 in [-1, 1] → NHWC uint8, the float32 arithmetic numpy does."""
    scaled = (images.astype(np.float32) + np.float32(1.0)) * np.float32(127.5)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cosine = np.clip(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64)), -1.0, 1.0)
    omega = math.acos(cosine)
    rows = [(math.sin((1 - s) * omega) * a64 + math.sin(s * omega) * b64) / math.sin(omega) for s in t]
    return np.array(rows, dtype=np.float32)


# --- the sampler (csrc/cpu/sampling.cc) -------------------------------------------------

SAMPLER_STREAM = 0x53414D504C45  # "SAMPLE", kSamplerStream in csrc/aigc/sampling.h


def sampler_uniform(seed: int, step: int) -> float:
    """The row's one uniform: word 0 of Philox at counter (step, 0, 0, 0), key (seed, SAMPLE)."""
    return _uniform(philox_block((step, 0, 0, 0), (seed, SAMPLER_STREAM))[0])


def penalised_logits(row: np.ndarray, *, history=(), prompt_len: int = 0, repetition_penalty=1.0,
                     presence_penalty=0.0, frequency_penalty=0.0, bias=()) -> np.ndarray:
    """One row after logit bias, then repetition, frequency and presence penalties (float32 steps)."""
    x = row.astype(np.float32).copy()
    for token, value in bias:
        x[token] = x[token] + np.float32(value)
    history = [int(t) for t in history]
    generated = history[prompt_len:]
    rep = np.float32(repetition_penalty)
    for token in sorted(set(history)):
        v = x[token]
        if rep != 1:
            v = v * rep if v < 0 else v / rep
        count = generated.count(token)
        if count:
            v = v - np.float32(frequency_penalty) * np.float32(count)
            v = v - np.float32(presence_penalty)
        x[token] = v
    return x


def kept_distribution(logits: np.ndarray, temperature: float, top_k: int, top_p: float, min_p: float):
    """Tokens kept by top_k -> top_p -> min_p in the sampling order, their probabilities
    (float64, renormalised), and the smallest relative gap between a filter's quantity and
    its cut (a case closer than float32 rounding to a cut is ambiguous)."""
    e = logits.astype(np.float32)
    finite = np.flatnonzero(e > -np.inf)
    order = finite[np.lexsort((finite, -e[finite]))]  # descending logit, ties to the lower id
    if 0 < top_k < len(e):
        order = order[:top_k]
    s = (e[order] - e[order].max()) / np.float32(temperature)  # float32, as the kernel
    p = np.exp(s.astype(np.float64))
    gap = np.inf
    keep = len(order)
    if top_p < 1:
        cumulative = np.cumsum(p)
        target = float(np.float32(top_p)) * cumulative[-1]
        keep = min(int(np.flatnonzero(cumulative >= target)[0]) + 1, len(order))
        gap = np.min(np.abs(cumulative - target)) / cumulative[-1]
    if min_p > 0:
        keep = min(keep, int(np.count_nonzero(p >= np.float32(min_p))))
        gap = min(gap, np.min(np.abs(p - float(np.float32(min_p)))))
    return order[:keep], p[:keep] / p[:keep].sum(), gap


def sample_token(logits: np.ndarray, seed: int, step: int, temperature: float, top_k: int = 0,
                 top_p: float = 1.0, min_p: float = 0.0):
    """The token the sampler must pick from already penalised logits, and the relative
    gap to the nearest decision boundary (filters and the draw)."""
    if temperature == 0:
        return int(np.argmax(logits)), np.inf
    ids, probs, gap = kept_distribution(logits, temperature, top_k, top_p, min_p)
    target = sampler_uniform(seed, step)
    cumulative = np.cumsum(probs)
    index = min(int(np.flatnonzero(cumulative > target)[0]) if cumulative[-1] > target else len(ids) - 1,
                len(ids) - 1)
    return int(ids[index]), min(gap, np.min(np.abs(cumulative - target)))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


# --- the GPT block: layer norm, GELU, the projections (csrc/cpu/norm.cc, gelu.cc, linear*.cc)

def layer_norm(h: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """Row by row over the last axis, in float64: (h - mean) / sqrt(var + eps) * weight + bias."""
    h = h.astype(np.float64)
    out = np.empty_like(h)
    for r in range(h.shape[0]):
        mean = math.fsum(h[r]) / h.shape[1]
        var = math.fsum((h[r] - mean) ** 2) / h.shape[1]
        out[r] = (h[r] - mean) / math.sqrt(var + eps) * weight.astype(np.float64) + bias.astype(np.float64)
    return out


def gelu(x: np.ndarray) -> np.ndarray:
    """GPT-2's "gelu_new" in float64: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    x = x.astype(np.float64)
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def bf16_round(w: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 (round to nearest even) -> float64, exactly."""
    bits = w.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


def int8_round(w: np.ndarray) -> np.ndarray:
    """Symmetric per-output-column int8 weights, dequantised: the largest |w| of a column maps to 127."""
    largest = np.abs(w).max(axis=0)
    scale = np.where(largest > 0, largest / np.float32(127), np.float32(1)).astype(np.float32)
    return np.clip(np.rint(w / scale), -127, 127) * scale.astype(np.float64)


def int8_activations(x: np.ndarray) -> np.ndarray:
    """Per-row int8 activations (the int8 layers quantise x too): round(x · 127 / max|x|) · max|x| / 127."""
    largest = np.abs(x).max(axis=1, keepdims=True)
    inverse = np.where(largest > 0, np.float32(127) / np.where(largest > 0, largest, 1), np.float32(0))
    return np.rint(x * inverse.astype(np.float32)) * (largest.astype(np.float64) / 127)


WEIGHT_ROUNDING = {"float32": lambda w: w.astype(np.float64), "bfloat16": bf16_round, "int8": int8_round}
ACTIVATION_ROUNDING = {"float32": lambda x: x.astype(np.float64), "bfloat16": lambda x: x.astype(np.float64),
                       "int8": int8_activations}


def linear(x: np.ndarray, w: np.ndarray, bias, dtype: str) -> np.ndarray:
    """y = x · W + bias in float64, with x and W rounded as a `dtype` layer rounds them."""
    y = ACTIVATION_ROUNDING[dtype](x) @ WEIGHT_ROUNDING[dtype](w)
    return y if bias is None else y + bias.astype(np.float64)


# --- attention (csrc/cpu/attention_prefill.cc, attention_decode.cc) ----------------------

def attention_one(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, dtype=np.float64) -> np.ndarray:
    """One query row q (d,) over keys k (L, d) and values v (L, d): softmax(q·k * scale) · v,
    every step in `dtype` with every sum taken left to right (cumsum's last element), as a
    loop would: float64 is the reference, float32 the same math done naively."""
    q, k, v = q.astype(dtype), k.astype(dtype), v.astype(dtype)
    scores = np.cumsum(k * q, axis=1, dtype=dtype)[:, -1] * dtype(scale)
    p = np.exp(scores - scores.max())
    return np.cumsum(p[:, None] * v, axis=0, dtype=dtype)[-1] / np.cumsum(p, dtype=dtype)[-1]


def attention_prefill(q: np.ndarray, k: np.ndarray, v: np.ndarray, cu_seqlens: np.ndarray,
                      scale: float | None = None, dtype=np.float64) -> np.ndarray:
    """Causal attention over packed sequences: q (tokens, H, d), k, v (tokens, KV, d) float32,
    cu_seqlens (n_seqs + 1,); query i of a sequence sees keys 0..i of it; head h reads kv
    head h // (H // KV). Returns (tokens, H, d) in `dtype`."""
    tokens, n_heads, d = q.shape
    group = n_heads // k.shape[1]
    scale = 1 / math.sqrt(d) if scale is None else scale
    out = np.zeros((tokens, n_heads, d), dtype)
    for s in range(len(cu_seqlens) - 1):
        start, end = int(cu_seqlens[s]), int(cu_seqlens[s + 1])
        for i in range(start, end):
            for h in range(n_heads):
                out[i, h] = attention_one(q[i, h], k[start:i + 1, h // group], v[start:i + 1, h // group], scale, dtype)
    return out


def attention_decode(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, block_table: np.ndarray,
                     context_lens: np.ndarray, scale: float | None = None, dtype=np.float64) -> np.ndarray:
    """One query per sequence over a paged cache: q (batch, H, d), caches (blocks, block_size,
    KV, d); token t of sequence b sits in slot t % block_size of block block_table[b, t //
    block_size]. Sequence b attends to its context_lens[b] tokens. Returns (batch, H, d) in `dtype`."""
    batch, n_heads, d = q.shape
    block_size, n_kv = k_cache.shape[1], k_cache.shape[2]
    group = n_heads // n_kv
    scale = 1 / math.sqrt(d) if scale is None else scale
    out = np.zeros((batch, n_heads, d), dtype)
    for b in range(batch):
        slots = np.arange(int(context_lens[b]))
        blocks = block_table[b, slots // block_size]
        k, v = k_cache[blocks, slots % block_size], v_cache[blocks, slots % block_size]  # (L, KV, d)
        for h in range(n_heads):
            out[b, h] = attention_one(q[b, h], k[:, h // group], v[:, h // group], scale, dtype)
    return out


def naive_error_bound(exact: np.ndarray, naive: np.ndarray, slack: float = 1e-6) -> float:
    """flash-attention's habit: a kernel may be off the float64 reference by at most 3x the
    error of the same math done naively in float32 (plus `slack` for the cases where the
    naive float32 one happens to be nearly exact)."""
    return 3 * float(np.abs(naive.astype(np.float64) - exact).max(initial=0.0)) + slack


def layer_norm_naive(h: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """The same layer norm in float32 with the sums done left to right (cumsum's last element)."""
    h = h.astype(np.float32)
    dim = np.float32(h.shape[1])
    mean = np.cumsum(h, axis=1, dtype=np.float32)[:, -1:] / dim
    centred = h - mean
    var = np.cumsum(centred * centred, axis=1, dtype=np.float32)[:, -1:] / dim
    return centred / np.sqrt(var + np.float32(eps)) * weight + bias


def gelu_naive(x: np.ndarray) -> np.ndarray:
    """The same GELU in float32, numpy's tanh."""
    x = x.astype(np.float32)
    c, a, half, one = (np.float32(v) for v in (math.sqrt(2 / math.pi), 0.044715, 0.5, 1.0))
    return half * x * (one + np.tanh(c * (x + a * x * x * x)))
