# Training checkpoints: one file, `<checkpoint_dir>/checkpoint.pt`, replaced atomically.
# Contents (a dict saved by torch.save): family, config, model and optimizer state dicts,
# step, dataset, seed, batch_size, lr, losses (running averages by name) and the torch
# RNG state, so a resumed run continues exactly where the saved one stopped.
from __future__ import annotations

import os
from pathlib import Path

import torch

from .fileio import atomic_write

FILENAME = "checkpoint.pt"


def save_checkpoint(state: dict, checkpoint_dir: str | os.PathLike) -> Path:
    """Write `state` to checkpoint_dir/checkpoint.pt via a temp file and os.replace."""
    return atomic_write(Path(checkpoint_dir) / FILENAME, lambda f: torch.save(state, f))


def find_checkpoint(path: str | os.PathLike) -> Path | None:
    """The checkpoint file at `path` (a file, or a folder holding checkpoint.pt), or None."""
    path = Path(path)
    candidate = path / FILENAME if path.is_dir() else path
    return candidate if candidate.is_file() else None


def load_checkpoint(path: str | os.PathLike) -> dict:
    found = find_checkpoint(path)
    if found is None:
        raise FileNotFoundError(
            f"no training checkpoint at {str(path)!r} (expected a file, or a folder holding {FILENAME})"
        )
    return torch.load(found, map_location="cpu", weights_only=True)
