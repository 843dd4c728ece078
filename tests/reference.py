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
