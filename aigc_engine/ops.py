"""The Python face of the native kernels in aigc_engine._C.

Each function documents its shapes and ranges, allocates its output, and hands numpy
buffers to C++ without copying (the extension checks dtype, contiguity and shape and
raises ValueError naming the argument). The GIL is released inside every kernel.
"""

from __future__ import annotations

import math

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
    """A seed is an integer in [0, 2**64 - 1]."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise AigcError(f"{name}: expected an integer in [0, 2**64 - 1], got {seed!r}")
    return int(seed)


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
    """
    t = np.ascontiguousarray(t, dtype=np.float32)
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
