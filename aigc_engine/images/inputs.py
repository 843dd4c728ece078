"""Images a user has → what an image model's graph takes: float32 (n, C, H, W) in [-1, 1].

Accepted, for a model of C channels and H×W pixels:
- float (n, C, H, W) in [-1, 1]: the graph's own format (float64 and float16 converted);
- 8-bit pixels (0 black … 255 white) as any integer dtype: (n, H, W, c) — what
  ImageGenerator.sample returns —, (n, H, W) grey, or one image (H, W, c) or (H, W) — what
  read_image, Pillow or imageio give for one file; c is 1 (grey), 2 (grey + alpha),
  3 (RGB) or 4 (RGBA). Colour becomes grey by ITU-R 601 luma (Pillow's "L"), grey becomes
  colour by repetition; alpha composites the image over black (the digits' background).
"""

from __future__ import annotations

import numpy as np

from ..errors import AigcError

_LUMA = np.array([0.299, 0.587, 0.114])


def model_input(images, shape: tuple[int, int, int], what: str = "images") -> np.ndarray:
    """`images` (see the module's head) → float32 (n, C, H, W) in [-1, 1] for shape (C, H, W)."""
    channels, height, width = shape
    try:
        array = np.asarray(images)
    except (ValueError, TypeError):  # ragged nesting
        array = np.asarray(None)
    expected = (f"{what}: expected float (n, {channels}, {height}, {width}) in [-1, 1], or 8-bit pixels "
                f"(n, {height}, {width}[, c]) or one image ({height}, {width}[, c]) with c in 1..4")
    if array.dtype.kind == "f":
        if array.ndim != 4 or array.shape[1:] != (channels, height, width) or array.shape[0] < 1:
            raise AigcError(f"{expected}; got {array.dtype} {array.shape}")
        if not np.isfinite(array).all():
            raise AigcError(f"{what}: float images must be finite and in [-1, 1], got NaN or infinity")
        if array.min() < -1 or array.max() > 1:
            raise AigcError(f"{what}: float images must be in [-1, 1] (pixel / 127.5 − 1), got values in "
                            f"[{array.min():g}, {array.max():g}]")
        return np.ascontiguousarray(array, dtype=np.float32)
    if array.dtype.kind not in "iu":
        raise AigcError(f"{expected}; got {array.dtype} {array.shape}")
    pixels = _with_batch_and_channels(array, height, width)
    if pixels is None:
        raise AigcError(f"{expected}; got {array.dtype} {array.shape}")
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        raise AigcError(f"{what}: 8-bit pixels must lie in 0..255, got values in [{pixels.min()}, {pixels.max()}]")
    values = _to_channels(pixels.astype(np.float64), channels)  # (n, H, W, C) in 0..255
    return np.ascontiguousarray((values / 127.5 - 1.0).transpose(0, 3, 1, 2), dtype=np.float32)


def _with_batch_and_channels(array: np.ndarray, height: int, width: int) -> np.ndarray | None:
    """Integer pixels → (n, H, W, c), or None when the shape is none of the accepted ones."""
    if array.ndim == 2 and array.shape == (height, width):
        return array[None, :, :, None]
    if array.ndim == 3 and array.shape[1:] == (height, width) and array.shape[0] >= 1:
        return array[..., None]
    if array.ndim == 3 and array.shape[:2] == (height, width) and 1 <= array.shape[2] <= 4:
        return array[None]
    if array.ndim == 4 and array.shape[1:3] == (height, width) and 1 <= array.shape[3] <= 4 and array.shape[0] >= 1:
        return array
    return None


def _to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """(n, H, W, c) float64 in 0..255 → (n, H, W, channels): alpha over black, luma or repetition."""
    if pixels.shape[3] in (2, 4):
        pixels = pixels[..., :-1] * (pixels[..., -1:] / 255.0)
    if pixels.shape[3] == channels:
        return pixels
    if channels == 1:
        return (pixels @ _LUMA)[..., None]
    if pixels.shape[3] == 1:
        return np.repeat(pixels, channels, axis=3)
    raise AigcError(f"images: a model of {channels} channels cannot take {pixels.shape[3]}-channel pixels")
