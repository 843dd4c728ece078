# Differentiable augmentation for GANs trained on few images (Zhao et al. 2020, "DiffAugment"):
# every batch the discriminator sees, real or generated, goes through a random translation and
# a cutout first, and the generator's gradient flows back through them. With 4,000 training
# digits an unaugmented discriminator learns them by heart within a few epochs and stops
# teaching the generator; augmenting both sides alike makes that harder without teaching the
# generator to draw shifted or cut digits (it is never shown the augmented images as targets).
# Parameters are drawn for the whole global batch on every rank (alike, from the same RNG
# state) and each rank takes its rows, so 2 ranks with B/2 rows train the model 1 rank with B does.
from __future__ import annotations

import torch
from torch.nn import functional as F

from ..common.distributed import shard

TRANSLATE_FRACTION = 1 / 8  # at most this share of the side, each way (28 px: ±4 px, rounded up)
CUTOUT_FRACTION = 1 / 2     # the side of the square cut out, as a share of the image's side
BACKGROUND = -1.0           # what translation brings in and cutout leaves: black, in [-1, 1]


def augment(images: torch.Tensor, global_batch: int) -> torch.Tensor:
    """images: this rank's rows (B / ranks, C, H, W) of a global batch of `global_batch` →
    the same rows translated and cut out, differentiably."""
    _, _, height, width = images.shape
    reach = (round(height * TRANSLATE_FRACTION + 0.49), round(width * TRANSLATE_FRACTION + 0.49))
    shifts = shard(torch.stack([torch.randint(-r, r + 1, (global_batch,)) for r in reach], 1))  # (n, 2)
    centres = shard(torch.stack([torch.randint(0, size, (global_batch,)) for size in (height, width)], 1))
    return cutout(translate(images, shifts, reach), centres)


def translate(images: torch.Tensor, shifts: torch.Tensor, reach: tuple[int, int]) -> torch.Tensor:
    """Move image i by shifts[i] = (down, right) pixels, |shift| ≤ reach, filling with BACKGROUND."""
    n, c, height, width = images.shape
    padded = F.pad(images, (reach[1], reach[1], reach[0], reach[0]), value=BACKGROUND)
    rows = torch.arange(height) + reach[0] - shifts[:, :1]  # (n, H): the padded row each output row reads
    cols = torch.arange(width) + reach[1] - shifts[:, 1:]   # (n, W)
    return padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(c).view(1, c, 1, 1),
                  rows.view(n, 1, height, 1), cols.view(n, 1, 1, width)]


def cutout(images: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Set a square of CUTOUT_FRACTION of the side around centres[i] (row, column) to BACKGROUND,
    clipped at the borders."""
    _, _, height, width = images.shape
    half = (int(height * CUTOUT_FRACTION) // 2, int(width * CUTOUT_FRACTION) // 2)
    rows = torch.arange(height).view(1, height) - centres[:, :1]  # (n, H): offset from the centre
    cols = torch.arange(width).view(1, width) - centres[:, 1:]     # (n, W)
    inside_rows, inside_cols = (rows >= -half[0]) & (rows < half[0]), (cols >= -half[1]) & (cols < half[1])
    cut = (inside_rows.unsqueeze(2) & inside_cols.unsqueeze(1)).unsqueeze(1)  # (n, 1, H, W)
    return images.masked_fill(cut, BACKGROUND)
