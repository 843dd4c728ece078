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
